/**
 * The Redis qaas relies on must persist (AOF, fsync every second) and never evict: /readyz says when it
 * does not, against redis-servers of our own on spare ports, and the Redis that `qaas serve` starts itself
 * and the one docker-compose.yml runs are configured so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../../src/http/app.js';
import { ensureRedis, redisAnswers } from '../../src/service.js';
import type { Config } from '../../src/config.js';
import { freePort } from '../fixtures/serve.js';
import { cleanup, testConfig } from './helpers.js';

const opened: { app?: FastifyInstance; config?: Config; client?: Redis; redis?: ChildProcess; dir?: string }[] = [];
afterAll(async () => {
  for (const { app, config, client, redis, dir } of opened) {
    await app?.close();
    client?.disconnect();
    if (config) await cleanup(config).catch(() => undefined);
    if (redis && redis.exitCode === null) {
      const exited = new Promise((resolve) => redis.once('exit', resolve));
      redis.kill('SIGKILL');
      await exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  }
});

async function redisServer(args: string[]): Promise<{ port: number; client: Redis }> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'qaas-redis-'));
  const child = spawn('redis-server', [...args, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir], {
    stdio: 'ignore',
  });
  opened.push({ redis: child, dir });
  for (let i = 0; i < 100 && !(await redisAnswers(`redis://127.0.0.1:${port}`)); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const client = new Redis({ port, maxRetriesPerRequest: 1 });
  opened.push({ client });
  return { port, client };
}

async function appOn(port: number): Promise<FastifyInstance> {
  const config = await testConfig({ REDIS_URL: `redis://127.0.0.1:${port}` });
  const app = await buildApp(config, { logger: false });
  opened.push({ app, config });
  return app;
}

async function configOf(client: Redis, names: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const [, value] = (await client.config('GET', name)) as string[];
    out[name] = value;
  }
  return out;
}

describe('/readyz and an evicting Redis', () => {
  it('is not ready while Redis may evict keys, warns while it only could, and says what it read', async () => {
    const { port, client } = await redisServer([
      '--save',
      '',
      '--appendonly',
      'no',
      '--maxmemory',
      '64mb',
      '--maxmemory-policy',
      'allkeys-lru',
    ]);
    const app = await appOn(port);

    const evicting = await app.inject({ url: '/readyz' });
    expect(evicting.statusCode).toBe(503);
    const body = evicting.json();
    expect(body.checks.redis).toBe('ok');
    expect(body.checks.redisEviction).toMatch(/^maxmemory-policy is allkeys-lru with maxmemory 67108864 bytes/);
    expect(body.redis).toEqual({ maxmemoryPolicy: 'allkeys-lru', maxmemoryBytes: 67108864, appendonly: false });
    expect(body.warnings).toEqual([expect.stringMatching(/no AOF \(appendonly no\)/)]);

    await client.config('SET', 'maxmemory', '0');
    const unlimited = await app.inject({ url: '/readyz' });
    expect(unlimited.statusCode).toBe(200);
    expect(unlimited.json().warnings).toEqual([
      expect.stringMatching(/^maxmemory-policy is allkeys-lru: nothing is evicted while maxmemory is 0/),
      expect.stringMatching(/no AOF/),
    ]);

    await client.config('SET', 'maxmemory', '64mb');
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    await client.config('SET', 'appendonly', 'yes');
    const durable = await app.inject({ url: '/readyz' });
    expect(durable.statusCode).toBe(200);
    expect(durable.json()).toEqual({
      status: 'ok',
      checks: { redis: 'ok', redisEviction: 'ok', storage: 'ok' },
      redis: { maxmemoryPolicy: 'noeviction', maxmemoryBytes: 67108864, appendonly: true },
    });
  });
});

describe('the Redis qaas runs itself', () => {
  it('ensureRedis starts one with AOF fsynced every second and noeviction, which /readyz finds ready', async () => {
    const port = await freePort();
    const dataDir = await mkdtemp(join(tmpdir(), 'qaas-own-redis-'));
    const config = await testConfig({ REDIS_URL: `redis://127.0.0.1:${port}`, DATA_DIR: dataDir });
    const child = await ensureRedis(config);
    expect(child).not.toBeNull();
    opened.push({ redis: child!, dir: dataDir });
    const client = new Redis({ port, maxRetriesPerRequest: 1 });
    try {
      expect(await configOf(client, ['appendonly', 'appendfsync', 'maxmemory-policy'])).toEqual({
        appendonly: 'yes',
        appendfsync: 'everysec',
        'maxmemory-policy': 'noeviction',
      });
    } finally {
      client.disconnect();
    }
    const ready = await (await appOn(port)).inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json().warnings).toBeUndefined();
  });

  it("docker-compose.yml's redis command line gives the same settings", async () => {
    const compose = await readFile(new URL('../../docker-compose.yml', import.meta.url), 'utf8');
    const command = JSON.parse(/^\s*command: (\["redis-server".*\])\s*$/m.exec(compose)![1]) as string[];
    const { client } = await redisServer(command.slice(1));
    expect(await configOf(client, ['appendonly', 'appendfsync', 'maxmemory-policy'])).toEqual({
      appendonly: 'yes',
      appendfsync: 'everysec',
      'maxmemory-policy': 'noeviction',
    });
  });
});

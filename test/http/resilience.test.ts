/**
 * Redis going away and coming back (a redis-server of our own on a spare port), readiness, rate limiting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../../src/http/app.js';
import { cleanup, testConfig } from './helpers.js';
import type { Config } from '../../src/config.js';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 50; i++) {
    const probe = new Redis({ port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => undefined);
    const up = await probe.connect().then(
      () => true,
      () => false,
    );
    probe.disconnect();
    if (up) return child;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('redis-server did not start');
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
}

const opened: { app?: FastifyInstance; config?: Config; redis?: ChildProcess }[] = [];
afterAll(async () => {
  for (const { app, config, redis } of opened) {
    await app?.close();
    if (config) await cleanup(config).catch(() => undefined);
    if (redis) await stop(redis);
  }
});

describe('Redis outage', () => {
  it('answers 503 problem+json (fast) while Redis is down and recovers by itself', async () => {
    const port = await freePort();
    let redis = await startRedis(port);
    const config = await testConfig({ REDIS_URL: `redis://127.0.0.1:${port}` });
    const app = await buildApp(config, { logger: false });
    opened.push({ app, config, redis });
    expect((await app.inject({ url: '/v1/jobs' })).statusCode).toBe(200);
    expect((await app.inject({ url: '/readyz' })).json()).toMatchObject({
      status: 'ok',
      checks: { redis: 'ok', redisEviction: 'ok', storage: 'ok' },
    });

    await stop(redis);
    const started = Date.now();
    const down = await app.inject({ url: '/v1/jobs' });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(down.statusCode).toBe(503);
    expect(down.headers['content-type']).toContain('application/problem+json');
    expect(down.json().type).toBe('urn:qaas:problem:service-unavailable');
    expect(down.headers['retry-after']).toBe('2');
    const ready = await app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().checks.redis).toMatch(/^unreachable/);
    expect(ready.json().checks.storage).toBe('ok');
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);

    redis = await startRedis(port);
    opened[opened.length - 1].redis = redis;
    const deadline = Date.now() + 10_000;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await app.inject({ url: '/v1/jobs' })).statusCode;
      if (status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(status).toBe(200);
  });
});

describe('rate limit', () => {
  it('answers 429 with Retry-After per API key, and other keys are unaffected', async () => {
    const config = await testConfig({
      QAAS_API_KEYS: 'a:key-a,b:key-b',
      QAAS_RATE_LIMIT_MAX: '3',
      QAAS_RATE_LIMIT_WINDOW_MS: '60000',
    });
    const app = await buildApp(config, { logger: false });
    opened.push({ app, config });
    const as = (key: string) => app.inject({ url: '/v1/models', headers: { authorization: `Bearer ${key}` } });
    for (let i = 0; i < 3; i++) expect((await as('key-a')).statusCode).toBe(200);
    const limited = await as('key-a');
    expect(limited.statusCode).toBe(429);
    expect(limited.json().type).toBe('urn:qaas:problem:rate-limited');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await as('key-b')).statusCode).toBe(200);
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });
});

/**
 * Process-level wiring: `serve(config)` runs the API plus `config.workers` sandboxed workers; `runWorkers`
 * runs workers only (`qaas worker`). Both start a local `redis-server` when nothing answers on REDIS_URL and
 * one is on PATH, and shut down in order on SIGTERM/SIGINT: stop accepting, close workers (the current job
 * finishes or is released), close queues and Redis.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Config } from './config.js';
import { buildApp } from './http/app.js';
import { JobLifecycle } from './jobs/lifecycle.js';
import {
  closeQueues,
  createQueues,
  workerConnection,
  workerRedis,
  type QuantizePayload,
  type WebhookPayload,
} from './jobs/queue.js';
import { rejectSandboxInitOnExit } from './jobs/sandbox-init.js';
import { ArtifactStore } from './storage/artifacts.js';
import { RecordStore } from './storage/records.js';
import { RedisKeys } from './storage/keys.js';
import { watchFailedJobs } from '../workers/failures.js';
import { webhookProcessor } from '../workers/webhook.js';

export interface Closable {
  close(): Promise<void>;
}

/**
 * The compiled sandboxed processor. Tests run the TypeScript sources, but a BullMQ child process needs
 * JavaScript, so this always points at `dist/workers/` (built by `npm test` and `npm start`).
 */
export function processorFile(name: string): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const root = here.includes(`${'/dist/'}`) ? new URL('../../', import.meta.url) : new URL('../', import.meta.url);
  return fileURLToPath(new URL(`dist/workers/${name}.js`, root));
}

/** Environment for the sandboxed children: the config they must agree on with this process. */
function childEnv(config: Config): NodeJS.ProcessEnv {
  return {
    ...process.env,
    REDIS_URL: config.redisUrl,
    QAAS_REDIS_PREFIX: config.redisPrefix,
    DATA_DIR: config.dataDir,
    QAAS_TF_BACKEND: config.tfBackend,
    LOG_LEVEL: config.logLevel,
  };
}

/** Runs `config.workers` sandboxed quantize processes and the webhook deliverer. close() is idempotent. */
export interface WorkerOptions {
  concurrency?: number;
  /** How long a job's lock lives without renewal; a dead worker's job is taken over after about this long. */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** How often (and after how long) a record whose queue job is gone is ended failed. */
  lostCheckMs?: number;
}

/**
 * How often a job may stall (its worker died or stopped renewing its lock) and still be handed to another
 * worker; the next stall fails it ('job stalled more than allowable limit').
 */
export const maxStalledCount = 2;

export function startWorkers(
  config: Config,
  options: WorkerOptions = {},
): Closable & { quantize: Worker; failuresWatched: Promise<void> } {
  const prefix = new RedisKeys(config.redisPrefix).bull();
  const script = processorFile('quantize');
  if (!existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` first`);
  rejectSandboxInitOnExit();
  const quantize = new Worker<QuantizePayload>('quantize', script, {
    connection: workerConnection(config.redisUrl),
    prefix,
    concurrency: options.concurrency ?? Math.max(1, config.workers),
    useWorkerThreads: false,
    workerForkOptions: { env: childEnv(config) },
    // The parent renews the lock while the child computes; when the whole worker dies the lock lapses and
    // the stalled-job check hands the job to another worker.
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: options.stalledIntervalMs ?? 15_000,
    maxStalledCount,
    // Started once the failure watch listens (below): a restarted worker's first stalled check may fail a job
    // at once, and a `failed` event nobody hears would leave its record to the watch's periodic look.
    autorun: false,
  });
  const redis = workerRedis(config.redisUrl);
  const records = new RecordStore(redis, config.redisPrefix);
  const webhooks = new Worker<WebhookPayload>(
    'webhooks',
    webhookProcessor({
      records,
      redis,
      allow: config.webhooks.allow,
      timeoutMs: config.webhooks.timeoutMs,
    }),
    { connection: workerConnection(config.redisUrl), prefix, concurrency: 4 },
  );
  // A worker's connection errors are retried by ioredis; they are logged, not fatal.
  const log = pino({ level: config.logLevel, base: { pid: process.pid, role: 'worker-supervisor' } });
  for (const worker of [quantize, webhooks])
    worker.on('error', (error) => log.warn({ err: error, queue: worker.name }, 'worker error'));
  const queues = createQueues(redis, config.redisPrefix);
  const failures = watchFailedJobs({
    connection: workerConnection(config.redisUrl),
    prefix,
    queues,
    lifecycle: new JobLifecycle(records, redis, config.redisPrefix),
    records,
    artifacts: new ArtifactStore(config.dataDir),
    log,
    lostCheckMs: options.lostCheckMs,
  });
  let closing: Promise<void> | null = null;
  const run = () => {
    if (closing) return;
    quantize.run().catch((error: unknown) => log.error({ err: error }, 'the quantize worker stopped'));
  };
  // A watch that cannot subscribe (Redis away at start) must not keep the worker from taking jobs.
  failures.ready.then(run, (error: unknown) => {
    log.warn({ err: error }, 'failed-jobs watch: not ready; the worker starts without it');
    run();
  });
  return {
    quantize,
    failuresWatched: failures.ready,
    close() {
      closing ??= (async () => {
        await Promise.allSettled([quantize.close(), webhooks.close()]);
        await Promise.allSettled([failures.close(), closeQueues(queues)]);
        redis.disconnect();
      })();
      return closing;
    },
  };
}

/** True when a Redis answers PING on `url` within a second. */
export async function redisAnswers(url: string): Promise<boolean> {
  const probe = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
  });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();
    return true;
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

export class RedisUnavailableError extends Error {
  override readonly name = 'RedisUnavailableError';
}

/**
 * Makes sure Redis answers on REDIS_URL: when nothing does and `redis-server` is on PATH, starts it as a
 * child (AOF fsynced every second, no eviction, data under DATA_DIR/redis). Returns the child to stop on
 * exit, or null.
 */
export async function ensureRedis(config: Config): Promise<ChildProcess | null> {
  if (await redisAnswers(config.redisUrl)) return null;
  const url = new URL(config.redisUrl);
  const local = ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(url.hostname);
  const onPath = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!local || !onPath) {
    throw new RedisUnavailableError(
      `nothing answers on ${config.redisUrl}: install Redis (e.g. \`apt-get install redis-server\` or \`brew install redis\`) or set REDIS_URL`,
    );
  }
  const dir = join(config.dataDir, 'redis');
  await mkdir(dir, { recursive: true });
  const child = spawn(
    'redis-server',
    [
      '--port',
      url.port || '6379',
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'everysec',
      '--maxmemory-policy',
      'noeviction',
      '--save',
      '',
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(config.redisUrl)) return child;
    if (child.exitCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGTERM');
  throw new RedisUnavailableError(`redis-server did not start on ${config.redisUrl}; see its log under ${dir}`);
}

/** `qaas serve`: API + embedded workers until SIGTERM/SIGINT. Resolves with a close() for programmatic use. */
export async function serve(config: Config): Promise<Closable & { url: string }> {
  const redisChild = await ensureRedisOrExit(config);
  const app = await buildApp(config);
  const workers = config.workers > 0 ? startWorkers(config) : null;
  const url = await app.listen({ port: config.port, host: config.host });
  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      app.log.info('shutting down');
      await app.close().catch((error) => app.log.error({ err: error }, 'closing the API failed'));
      await workers?.close();
      if (redisChild && redisChild.exitCode === null) {
        redisChild.kill('SIGTERM');
        await new Promise((resolve) => redisChild.once('exit', resolve));
      }
    })();
    return closing;
  };
  onSignals(close);
  return { url, close };
}

/** `qaas worker`: workers only, on the same Redis and DATA_DIR as the API, until SIGTERM/SIGINT. */
export async function runWorkers(config: Config): Promise<Closable> {
  const redisChild = await ensureRedisOrExit(config);
  const workers = startWorkers(config);
  const close = async () => {
    await workers.close();
    if (redisChild && redisChild.exitCode === null) redisChild.kill('SIGTERM');
  };
  onSignals(close);
  return { close };
}

async function ensureRedisOrExit(config: Config): Promise<ChildProcess | null> {
  try {
    return await ensureRedis(config);
  } catch (error) {
    if (!(error instanceof RedisUnavailableError)) throw error;
    process.stderr.write(`qaas: ${error.message}\n`);
    process.exit(1);
  }
}

function onSignals(close: () => Promise<void>): void {
  const handler = (signal: NodeJS.Signals) => {
    process.stderr.write(`${signal}: closing\n`);
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
}

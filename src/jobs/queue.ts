/**
 * The one registry of BullMQ queues: queue name → job name → payload type, so `enqueue('quantize', 'ptq',
 * payload)` cannot be called with the wrong payload. Retry policy is plain data here. Payloads carry only
 * ids — specs and secrets stay in their records, never in Redis job data.
 */
import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { RedisKeys } from '../storage/keys.js';

export interface QuantizePayload {
  tenant: string;
  jobId: string;
}

export interface WebhookPayload {
  tenant: string;
  jobId: string;
}

export interface QueueRegistry {
  quantize: { ptq: QuantizePayload };
  webhooks: { deliver: WebhookPayload };
}

export type QueueName = keyof QueueRegistry;

export const jobOptions: { [Q in QueueName]: JobsOptions } = {
  quantize: {
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
    removeOnComplete: { age: 7 * 24 * 3600 },
    removeOnFail: false,
  },
  webhooks: {
    attempts: 8,
    backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: { age: 24 * 3600 },
    removeOnFail: false,
  },
};

/** Progress a worker reports with `job.updateProgress` and the API relays as SSE. */
export interface JobProgressEvent {
  stage: string;
  progress: number;
  message: string;
}

/**
 * The API's connection: commands fail at once while Redis is away (a 503, never a hang) and ioredis keeps
 * reconnecting in the background so the service recovers by itself. `autoPipelining` sends the commands
 * issued in one event-loop turn as one write (one syscall instead of one per command, which dominated job
 * submission under load); only for connections BullMQ does not use, whose scripts break under it.
 */
export function apiRedis(url: string, { autoPipelining = false }: { autoPipelining?: boolean } = {}): Redis {
  return new Redis(url, {
    enableAutoPipelining: autoPipelining,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
}

/** Workers and blocking readers wait for Redis instead of failing (BullMQ requires this). */
export function workerConnection(url: string): ConnectionOptions {
  return { ...redisOptionsFromUrl(url), maxRetriesPerRequest: null } satisfies RedisOptions;
}

export function workerRedis(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null });
}

function redisOptionsFromUrl(url: string): RedisOptions {
  const parsed = new URL(url);
  return {
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 6379),
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    db: parsed.pathname.length > 1 ? Number(parsed.pathname.slice(1)) : 0,
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

export type Queues = { [Q in QueueName]: Queue };

export function createQueues(connection: Redis, prefix: string): Queues {
  const bull = new RedisKeys(prefix).bull();
  return {
    quantize: new Queue('quantize', { connection, prefix: bull }),
    webhooks: new Queue('webhooks', { connection, prefix: bull }),
  };
}

export function enqueue<Q extends QueueName, N extends keyof QueueRegistry[Q] & string>(
  queues: Queues,
  queue: Q,
  name: N,
  payload: QueueRegistry[Q][N],
  options: JobsOptions = {},
): Promise<unknown> {
  return queues[queue].add(name, payload, { ...jobOptions[queue], ...options });
}

export async function closeQueues(queues: Queues): Promise<void> {
  await Promise.allSettled(Object.values(queues).map((queue) => queue.close()));
}

/** The webhooks-queue job that delivers a job's end: one per job, so a retried end is delivered once. */
export function webhookJobId(jobId: string): string {
  return `webhook-${jobId}`;
}

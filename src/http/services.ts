/**
 * The shared services every route uses, as one named plugin: the API's fail-fast Redis connections (an
 * auto-pipelined one for commands, a plain one for BullMQ), the Redis key layout, the record, blob and
 * artifact stores, the job lifecycle, the BullMQ queues and one QueueEvents reader (for SSE and metrics). Closed in onClose, in reverse order of opening.
 */
import { QueueEvents } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { JobLifecycle } from '../jobs/lifecycle.js';
import { apiRedis, closeQueues, createQueues, workerConnection, type Queues } from '../jobs/queue.js';
import { ArtifactStore } from '../storage/artifacts.js';
import { BlobStore } from '../storage/blobs.js';
import type { RedisKeys } from '../storage/keys.js';
import { RecordStore } from '../storage/records.js';

export interface Services {
  config: Config;
  redis: Redis;
  keys: RedisKeys;
  records: RecordStore;
  blobs: BlobStore;
  artifacts: ArtifactStore;
  lifecycle: JobLifecycle;
  queues: Queues;
  /** Created on first use: only SSE and metrics need a blocking reader. */
  queueEvents(): QueueEvents;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

async function waitForReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    }
    redis.once('ready', done);
  });
}

export const servicesPlugin = fp(
  async (app: FastifyInstance, { config }: { config: Config }) => {
    // Records, idempotency keys and flags go over an auto-pipelined connection; BullMQ gets its own plain one.
    const redis = apiRedis(config.redisUrl, { autoPipelining: true });
    const queueRedis = apiRedis(config.redisUrl);
    // ioredis reports every failed reconnect; one warning per outage is enough.
    let down = false;
    redis.on('error', (error) => {
      if (!down) app.log.warn({ err: error }, 'redis unavailable');
      down = true;
    });
    redis.on('ready', () => {
      if (down) app.log.info('redis reachable again');
      down = false;
    });
    queueRedis.on('error', () => undefined);
    const queues = createQueues(queueRedis, config.redisPrefix);
    for (const queue of Object.values(queues)) queue.on('error', () => undefined);
    let events: QueueEvents | null = null;
    const records = new RecordStore(redis, config.redisPrefix);
    app.decorate('services', {
      config,
      redis,
      keys: records.keys,
      records,
      blobs: new BlobStore(config.dataDir),
      artifacts: new ArtifactStore(config.dataDir),
      lifecycle: new JobLifecycle(records, redis, config.redisPrefix),
      queues,
      queueEvents() {
        if (!events) {
          events = new QueueEvents('quantize', {
            connection: workerConnection(config.redisUrl),
            prefix: records.keys.bull(),
          });
          events.on('error', () => undefined);
          events.setMaxListeners(0);
        }
        return events;
      },
    } satisfies Services);
    // With the offline queue off, commands sent before the first connect would fail; give it a moment.
    app.addHook('onReady', () =>
      Promise.all([waitForReady(redis, 3000), waitForReady(queueRedis, 3000)]).then(() => undefined),
    );
    app.addHook('onClose', async () => {
      const opened = events as QueueEvents | null;
      if (opened) await opened.close().catch(() => undefined);
      await closeQueues(queues);
      queueRedis.disconnect();
      redis.disconnect();
    });
  },
  { name: 'qaas-services' },
);

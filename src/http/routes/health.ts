/**
 * Liveness, readiness (Redis answers and will not evict keys, DATA_DIR writable) and the Prometheus scrape
 * endpoint. A Redis that may evict keys (a maxmemory limit with any policy but noeviction) can drop job
 * records and queued jobs without a word, so it makes the instance not ready: BullMQ requires noeviction,
 * and readiness is what keeps an instance that would lose accepted work out of rotation. What is only a
 * risk (no AOF; a wrong policy while maxmemory is 0, so nothing is evicted yet) is a warning.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { selectBackend } from '../../model/backend.js';
import { packageVersion } from '../../version.js';

const Health = Type.Object({
  status: Type.String(),
  version: Type.Optional(Type.String()),
  backend: Type.Optional(Type.String()),
  checks: Type.Optional(Type.Record(Type.String(), Type.String())),
  warnings: Type.Optional(Type.Array(Type.String())),
  redis: Type.Optional(
    Type.Object({
      maxmemoryPolicy: Type.String(),
      maxmemoryBytes: Type.Integer(),
      appendonly: Type.Boolean(),
    }),
  ),
});

interface RedisDurability {
  maxmemoryPolicy: string;
  maxmemoryBytes: number;
  appendonly: boolean;
}

/** From INFO (which managed Redis services allow where they refuse CONFIG GET). */
async function redisDurability(redis: Redis): Promise<RedisDurability> {
  const fields = infoFields(`${await redis.info('memory')}\n${await redis.info('persistence')}`);
  return {
    maxmemoryPolicy: fields.get('maxmemory_policy') ?? 'unknown',
    maxmemoryBytes: Number(fields.get('maxmemory') ?? 0),
    appendonly: fields.get('aof_enabled') === '1',
  };
}

/** `field:value` lines of an INFO reply. */
function infoFields(info: string): Map<string, string> {
  return new Map(
    info
      .split(/\r?\n/)
      .filter((line) => line.includes(':') && !line.startsWith('#'))
      .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]),
  );
}

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const { redis, config, blobs } = app.services;

  // Workers run the same backend choice with the same config on the same image, so the API's answer is theirs.
  const backend = await selectBackend(config.tfBackend);
  app.get('/healthz', { schema: { summary: 'Liveness', response: { 200: Health } } }, async () => ({
    status: 'ok',
    version: packageVersion,
    backend,
  }));

  app.get(
    '/readyz',
    { schema: { summary: 'Readiness', response: { 200: Health, 503: Health } } },
    async (_request, reply) => {
      const checks: Record<string, string> = {};
      const warnings: string[] = [];
      let durability: RedisDurability | undefined;
      try {
        await redis.ping();
        checks.redis = 'ok';
        durability = await redisDurability(redis).catch((error: Error) => {
          warnings.push(`could not read Redis INFO to check eviction and persistence: ${error.message}`);
          return undefined;
        });
      } catch (error) {
        checks.redis = `unreachable: ${(error as Error).message}`;
      }
      if (durability) {
        const { maxmemoryPolicy: policy, maxmemoryBytes: limit } = durability;
        checks.redisEviction =
          policy === 'noeviction' || limit === 0
            ? 'ok'
            : `maxmemory-policy is ${policy} with maxmemory ${limit} bytes: Redis may evict job records and queued jobs; set maxmemory-policy noeviction`;
        if (policy !== 'noeviction' && limit === 0) {
          warnings.push(
            `maxmemory-policy is ${policy}: nothing is evicted while maxmemory is 0 (no limit), but set noeviction before setting a limit`,
          );
        }
        if (!durability.appendonly) {
          warnings.push(
            'Redis keeps no AOF (appendonly no): a Redis restart loses every record, idempotency key and queued job; run it with appendonly yes, appendfsync everysec',
          );
        }
      }
      try {
        await blobs.probeWritable();
        checks.storage = 'ok';
      } catch (error) {
        checks.storage = `not writable: ${(error as Error).message}`;
      }
      const ok = Object.values(checks).every((v) => v === 'ok');
      return reply.code(ok ? 200 : 503).send({
        status: ok ? 'ok' : 'unavailable',
        checks,
        ...(warnings.length > 0 ? { warnings } : {}),
        ...(durability ? { redis: durability } : {}),
      });
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: true } }, async (_request, reply) => {
    const body = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(body);
  });
}

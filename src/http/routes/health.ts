/** Liveness, readiness (Redis answers, DATA_DIR writable) and the Prometheus scrape endpoint. */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { selectBackend } from '../../model/backend.js';
import { packageVersion } from '../../version.js';

const Health = Type.Object({
  status: Type.String(),
  version: Type.Optional(Type.String()),
  backend: Type.Optional(Type.String()),
  checks: Type.Optional(Type.Record(Type.String(), Type.String())),
});

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
      try {
        await redis.ping();
        checks.redis = 'ok';
      } catch (error) {
        checks.redis = `unreachable: ${(error as Error).message}`;
      }
      try {
        await blobs.probeWritable();
        checks.storage = 'ok';
      } catch (error) {
        checks.storage = `not writable: ${(error as Error).message}`;
      }
      const ok = Object.values(checks).every((v) => v === 'ok');
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', checks });
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: true } }, async (_request, reply) => {
    const body = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(body);
  });
}

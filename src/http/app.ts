/**
 * `buildApp(config)`: the whole HTTP composition on one screen, in a fixed order — error handling, shared
 * services, auth, rate limit, multipart limits, API docs, metrics, routes, the dashboard. It never listens:
 * `serve` does, tests use `app.inject()`. Closing the app closes everything it opened.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import cors from '@fastify/cors';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyServerOptions, type RouteOptions } from 'fastify';
import { parse as parseYaml } from 'yaml';
import type { Config } from '../config.js';
import { authPlugin } from './auth.js';
import { dashboardApiRoutes } from './dashboard/api.js';
import { dashboardStatic } from './dashboard/static.js';
import { registerErrorHandling } from './errors.js';
import { metricsPlugin } from './metrics.js';
import { datasetRoutes } from './routes/datasets.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { servicesPlugin } from './services.js';
import { maxFieldBytes } from './upload.js';

export interface AppDeps {
  /** Fastify's logger option; tests pass false. */
  logger?: FastifyServerOptions['logger'];
  /** Sees every route as it is registered (the OpenAPI parity test lists them this way). */
  onRoute?: (route: RouteOptions) => void;
}

/** openapi.yaml sits at the project root, two levels above both src/http and dist/src/http. */
export function openApiPath(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const root = here.includes('/dist/') ? new URL('../../../', import.meta.url) : new URL('../../', import.meta.url);
  return fileURLToPath(new URL('openapi.yaml', root));
}

export async function buildApp(config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger ?? {
      level: config.logLevel,
      redact: ['req.headers.authorization', 'req.headers["x-api-key"]'],
    },
    genReqId: (request) => {
      const given = request.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : crypto.randomUUID();
    },
    bodyLimit: 10 * 1024 * 1024,
    // Slow clients (slowloris) hold a connection only this long: headers, whole request, silence, keep-alive.
    requestTimeout: config.timeouts.requestMs,
    connectionTimeout: config.timeouts.idleMs,
    keepAliveTimeout: config.timeouts.keepAliveMs,
    http: {
      headersTimeout: Math.min(config.timeouts.headersMs, config.timeouts.requestMs),
      // Node checks the header and request deadlines on this beat (30 s by default, longer than the deadlines).
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(config.timeouts.headersMs / 4))),
    },
    ajv: { customOptions: { coerceTypes: true, useDefaults: true, removeAdditional: false } },
  });
  if (deps.onRoute) app.addHook('onRoute', deps.onRoute);
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  registerErrorHandling(app);
  await app.register(servicesPlugin, { config });
  await app.register(authPlugin, { config });
  // Dashboards served from other origins call the API from the browser; without configured origins, none may.
  if (config.corsOrigins.length > 0) {
    await app.register(cors, {
      origin: config.corsOrigins.includes('*') ? '*' : config.corsOrigins,
      methods: ['GET', 'POST', 'PATCH', 'DELETE'],
      allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'x-request-id'],
      exposedHeaders: [
        'location',
        'x-request-id',
        'retry-after',
        'idempotent-replayed',
        'x-ratelimit-limit',
        'x-ratelimit-remaining',
        'x-ratelimit-reset',
      ],
      maxAge: 600,
    });
  }
  await app.register(rateLimit, {
    max: config.rateLimit.max,
    timeWindow: config.rateLimit.timeWindowMs,
    keyGenerator: (request) => request.tenant || request.ip,
    allowList: (request) => !request.url.startsWith('/v1/'),
  });
  await app.register(multipart, {
    limits: {
      fileSize: config.upload.maxFileBytes,
      files: config.upload.maxFiles,
      fields: 20,
      fieldSize: maxFieldBytes,
      parts: config.upload.maxFiles + 20,
    },
    throwFileSizeLimit: true,
  });
  const specification = parseYaml(await readFile(openApiPath(), 'utf8')) as Record<string, unknown>;
  await app.register(swagger, { mode: 'static', specification: { document: specification as never } });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(metricsPlugin);

  await app.register(healthRoutes);
  await app.register(modelRoutes);
  await app.register(datasetRoutes);
  await app.register(jobRoutes);
  await app.register(dashboardApiRoutes);
  await app.register(dashboardStatic);
  return app;
}

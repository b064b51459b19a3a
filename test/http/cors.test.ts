/**
 * CORS for dashboards on other origins: only the configured origins get Access-Control-Allow-Origin, a
 * preflight names what a submission sends (Authorization, Idempotency-Key), and the headers a client reads
 * (Location, Retry-After, …) are exposed. Without QAAS_CORS_ORIGINS no response carries CORS headers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { cleanup, testConfig } from './helpers.js';

const dashboard = 'https://dash.example.com';
let config: Config;
let app: FastifyInstance;
let plain: FastifyInstance;

beforeAll(async () => {
  config = await testConfig({ QAAS_CORS_ORIGINS: `${dashboard}, http://127.0.0.1:3000` });
  app = await buildApp(config, { logger: false });
  plain = await buildApp({ ...config, corsOrigins: [] }, { logger: false });
});

afterAll(async () => {
  await app?.close();
  await plain?.close();
  await cleanup(config);
});

describe('CORS', () => {
  it('answers a preflight from a configured origin with what a submission needs', async () => {
    const res = await app.inject({
      method: 'OPTIONS',
      url: '/v1/jobs',
      headers: {
        origin: dashboard,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,idempotency-key,content-type',
      },
    });
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe(dashboard);
    expect(String(res.headers['access-control-allow-methods']).split(', ')).toEqual(['GET', 'POST', 'PATCH', 'DELETE']);
    expect(String(res.headers['access-control-allow-headers'])).toContain('idempotency-key');
    expect(res.headers['access-control-max-age']).toBe('600');
  });

  it('exposes the headers clients read, to configured origins only', async () => {
    const allowed = await app.inject({ url: '/v1/jobs', headers: { origin: dashboard } });
    expect(allowed.statusCode).toBe(200);
    expect(allowed.headers['access-control-allow-origin']).toBe(dashboard);
    expect(String(allowed.headers['access-control-expose-headers'])).toContain('retry-after');
    const other = await app.inject({ url: '/v1/jobs', headers: { origin: 'https://evil.example.com' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const unconfigured = await plain.inject({ url: '/v1/jobs', headers: { origin: dashboard } });
    expect(unconfigured.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('refuses an origin that is not scheme://host[:port]', () => {
    expect(() => loadConfig({ QAAS_CORS_ORIGINS: 'dash.example.com' })).toThrow(ConfigError);
    expect(loadConfig({ QAAS_CORS_ORIGINS: '*' }).corsOrigins).toEqual(['*']);
  });
});

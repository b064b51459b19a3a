/**
 * openapi.yaml is the contract: every route the app registers is in it and every path in it is a route.
 * Swagger UI's own asset routes under /docs are the UI, not the API, and are left out on both sides.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { parse } from 'yaml';
import type { Config } from '../../src/config.js';
import { buildApp, openApiPath } from '../../src/http/app.js';
import { problemCatalogue } from '../../src/http/errors.js';
import { cleanup, testConfig } from './helpers.js';

let config: Config;
let app: FastifyInstance;
const routes = new Set<string>();

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, {
    logger: false,
    onRoute(route) {
      if (route.url.startsWith('/docs/') || route.url === '/docs/') return;
      const methods = (Array.isArray(route.method) ? route.method : [route.method]).filter((m) => m !== 'HEAD');
      for (const method of methods) routes.add(`${method} ${toOpenApi(route.url)}`);
    },
  });
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

/** `/v1/jobs/:id/artifacts/*` → `/v1/jobs/{id}/artifacts/{path}` */
function toOpenApi(url: string): string {
  return url.replace(/:(\w+)/g, '{$1}').replace(/\*$/, '{path}');
}

describe('openapi.yaml', () => {
  it('lists exactly the routes the app serves, method by method', async () => {
    const spec = parse(await readFile(openApiPath(), 'utf8')) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
    };
    expect(spec.openapi).toBe('3.1.0');
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of ['get', 'post', 'put', 'patch', 'delete'])
        if (item[method]) documented.add(`${method.toUpperCase()} ${path}`);
    }
    expect(routes.size).toBeGreaterThan(15);
    expect([...routes].sort()).toEqual([...documented].sort());
  });

  it('is served as Swagger UI at /docs', async () => {
    const ui = await app.inject({ url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.headers['content-type']).toContain('text/html');
    const served = await app.inject({ url: '/docs/json' });
    expect(served.json().paths['/v1/jobs/{id}/events']).toBeDefined();
    // Relative, so "Try it out" calls whichever host and port the page was loaded from.
    expect(served.json().servers).toEqual([{ url: '/' }]);
  });

  it('uses only problem types from the catalogue', async () => {
    const text = await readFile(openApiPath(), 'utf8');
    for (const match of text.matchAll(/urn:qaas:problem:([a-z-]+)/g))
      expect(Object.keys(problemCatalogue)).toContain(match[1]);
  });
});

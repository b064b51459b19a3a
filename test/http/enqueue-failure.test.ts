/** A job whose record was stored but which could not be queued ends failed, never "queued" forever. */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { cleanup, filesAsParts, multipart, testConfig, tinyModel } from './helpers.js';

let config: Config;
let app: FastifyInstance;
let modelId: string;

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
  const body = multipart(filesAsParts(await tinyModel()));
  modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...body })).json().id;
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

describe('POST /v1/jobs when the queue refuses the job', () => {
  it('answers 5xx problem+json and marks the stored record failed', async () => {
    // The queue's own connection goes away; the records' connection stays up.
    (await app.services.queues.quantize.client).disconnect();
    const res = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'affine' } } });
    expect(res.statusCode).toBeGreaterThanOrEqual(500);
    expect(res.headers['content-type']).toContain('application/problem+json');
    const jobs = (await app.inject({ url: '/v1/jobs' })).json().items as {
      status: string;
      error: { message: string };
    }[];
    expect(jobs).toHaveLength(1);
    expect(jobs[0].status).toBe('failed');
    expect(jobs[0].error.message).toBe('the job could not be queued');
  });
});

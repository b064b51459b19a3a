/**
 * A worker process SIGKILLed mid-job (with its sandbox, as when a container dies): once its lock lapses
 * another worker takes the job over and it completes exactly once, with complete artifacts.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig } from '../http/helpers.js';
import { workerProcess, type WorkerProcess } from '../fixtures/worker-process.js';

let config: Config;
let app: FastifyInstance;
let rescuer: Closable | undefined;
let doomed: WorkerProcess | undefined;

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
});

afterAll(async () => {
  await doomed?.kill();
  await rescuer?.close();
  await app?.close();
  await cleanup(config);
});

async function jobOf(id: string) {
  return (await app.inject({ url: `/v1/jobs/${id}` })).json();
}

describe('a worker killed mid-job', () => {
  it('leaves the job to the next worker, which finishes it once', async () => {
    const body = multipart(filesAsParts(await denseModel([256, 256, 256, 256, 256, 256])));
    const modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...body })).json().id;
    const id = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'kmeans', bits: 8 } } })
    ).json().id;

    doomed = await workerProcess(config, { lockDurationMs: 2000, stalledIntervalMs: 1000 });
    let deadline = Date.now() + 30_000;
    while ((await jobOf(id)).status !== 'running' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await jobOf(id)).status).toBe('running');
    await doomed.kill();

    rescuer = startWorkers(config, { concurrency: 1, lockDurationMs: 2000, stalledIntervalMs: 1000 });
    deadline = Date.now() + 60_000;
    let job = await jobOf(id);
    while (job.status !== 'succeeded' && job.status !== 'failed' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      job = await jobOf(id);
    }
    expect(job.status).toBe('succeeded');
    const queued = (await app.services.queues.quantize.getJob(id))!;
    expect(await queued.isCompleted()).toBe(true);
    // One attempt counted: a stall is not a failure. Completed once: the record went terminal once.
    expect(queued.attemptsMade).toBeLessThanOrEqual(1);
    const artifactsParent = join(config.dataDir, 'artifacts', 'local');
    expect(await readdir(artifactsParent)).toEqual([id]);
    expect((await app.inject({ url: `/v1/jobs/${id}/report` })).statusCode).toBe(200);
    const counts = await app.services.records.countByStatus('jobs');
    expect(counts).toEqual({ queued: 0, running: 0, succeeded: 1 });
  });
});

/**
 * A job whose workers keep dying under it: each worker process running it is SIGKILLed (with its sandbox,
 * as when a container dies) and a new one started, until the job has stalled once more than BullMQ's
 * maxStalledCount allows. The record ends failed as worker-lost, once (one failed event, one webhook, one
 * run time), with no artifacts, and the restarted worker still takes the next job.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { QueueEvents } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { workerConnection } from '../../src/jobs/queue.js';
import { maxStalledCount } from '../../src/service.js';
import { artifactDir } from '../../src/storage/artifacts.js';
import type { JobRecord } from '../../src/storage/types.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig } from '../http/helpers.js';
import { workerProcess, type WorkerProcess } from '../fixtures/worker-process.js';

// A dead worker's job is taken over once its lock lapses (2 s) and a stalled check (every 1 s) sees it. A
// restarted worker may fail the job before its failure watch listens; the look for unended records (every
// 1 s) ends it then.
const timings = { concurrency: 1, lockDurationMs: 2000, stalledIntervalMs: 1000, lostCheckMs: 1000 };

let config: Config;
let app: FastifyInstance;
let events: QueueEvents;
let hooks: Server;
let hookUrl: string;
const workers: WorkerProcess[] = [];
const deliveries: { event: string; jobId: string }[] = [];
const queueEvents: { event: 'failed' | 'stalled'; jobId: string }[] = [];

beforeAll(async () => {
  config = await testConfig({ QAAS_WEBHOOK_ALLOW: '127.0.0.1' });
  app = await buildApp(config, { logger: false });
  hooks = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      const payload = JSON.parse(body);
      deliveries.push({ event: payload.event, jobId: payload.job.id });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => hooks.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hook`;
  events = new QueueEvents('quantize', {
    connection: workerConnection(config.redisUrl),
    prefix: app.services.keys.bull(),
  });
  events.on('failed', ({ jobId }) => queueEvents.push({ event: 'failed', jobId }));
  events.on('stalled', ({ jobId }) => queueEvents.push({ event: 'stalled', jobId }));
  await events.waitUntilReady();
});

afterAll(async () => {
  for (const worker of workers) await worker.kill();
  await events?.close();
  hooks?.close();
  await app?.close();
  await cleanup(config);
});

async function startWorker(): Promise<WorkerProcess> {
  const worker = await workerProcess(config, timings, { QAAS_WEBHOOK_ALLOW: '127.0.0.1' });
  workers.push(worker);
  return worker;
}

async function upload(widths: number[]): Promise<string> {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/models',
    ...multipart(filesAsParts(await denseModel(widths))),
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().id;
}

async function submit(modelId: string, method: object): Promise<string> {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/jobs',
    payload: { modelId, method, webhook: { url: hookUrl } },
  });
  expect(res.statusCode, res.body).toBe(202);
  return res.json().id;
}

function record(id: string): Promise<JobRecord> {
  return app.services.records.get('jobs', 'local', id) as Promise<JobRecord>;
}

/** How many times a sandbox started the job: each start logs "loading model" first. */
async function starts(id: string): Promise<number> {
  return (await app.services.lifecycle.log(id)).filter((line) => line.message.startsWith('loading model')).length;
}

/** Polls `check` until it holds; fails with `what` (and the workers' logs) after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms\n${workers.map((w) => w.output()).join('\n---\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function isEnded(job: JobRecord): boolean {
  return ['succeeded', 'failed', 'cancelled'].includes(job.status);
}

function durationCount(metrics: string, status: string): number {
  const line = metrics
    .split('\n')
    .find((l) => /^qaas_job_duration_seconds_count\{/.test(l) && l.includes(`status="${status}"`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('a job whose workers die under it more often than maxStalledCount allows', () => {
  it('ends failed as worker-lost once, leaves no artifacts, and the restarted worker takes the next job', async () => {
    // Product quantization of 330k weights runs for seconds (4.4 s uninterrupted here, tfjs load included),
    // so every worker is killed while it runs the job, within a poll (50 ms) of its start.
    const doomedModel = await upload([256, 256, 256, 256, 256, 256]);
    const nextModel = await upload([4, 3, 2]);
    const id = await submit(doomedModel, { name: 'pq' });
    const queue = app.services.queues.quantize;
    const started = Date.now();
    const killedAt: number[] = [];

    // BullMQ hands a stalled job on maxStalledCount times and fails it at the stall after: as many kills as
    // runs, one more than it hands on.
    for (let run = 1; run <= maxStalledCount + 1; run++) {
      const worker = await startWorker();
      await until(`run ${run} of the job started`, async () => (await starts(id)) === run);
      const job = (await queue.getJob(id))!;
      expect(await job.getState()).toBe('active');
      expect(job.stalledCounter).toBe(run - 1);
      expect((await record(id)).status).toBe('running');
      await worker.kill();
      killedAt.push(Date.now() - started);
    }

    await startWorker();
    await until('the job ended', async () => isEnded(await record(id)));
    const endedMs = Date.now() - started;
    const job = await record(id);
    expect(job.status).toBe('failed');
    expect(job.stage).toBe('failed');
    expect(job.error).toEqual({
      type: 'worker-lost',
      message: `the workers running this job stopped renewing its lock ${maxStalledCount + 1} times (job stalled more than allowable limit)`,
    });
    // Stalls are not failed attempts: every run was attempt 1, and BullMQ failed it in its first.
    expect(job.attempts).toBe(1);
    expect(job.finishedAt).not.toBeNull();
    const queued = (await queue.getJob(id))!;
    expect(await queued.getState()).toBe('failed');
    expect(queued.failedReason).toBe('job stalled more than allowable limit');
    expect(queued.stalledCounter).toBe(maxStalledCount + 1);
    expect(queued.attemptsMade).toBe(1);
    // The worker that failed it did not run it again.
    expect(await starts(id)).toBe(maxStalledCount + 1);

    expect(job.artifacts).toEqual([]);
    expect(existsSync(artifactDir(config.dataDir, 'local', id))).toBe(false);
    const artifact = await app.inject({ url: `/v1/jobs/${id}/artifacts/report.json` });
    expect(artifact.statusCode).toBe(409);
    expect(artifact.json().detail).toBe(`job ${id} is failed; artifacts exist once it succeeded`);

    const next = await submit(nextModel, { name: 'affine', bits: 8 });
    await until('the next job ended', async () => isEnded(await record(next)));
    const nextJob = await record(next);
    expect(nextJob.status).toBe('succeeded');
    expect(nextJob.attempts).toBe(1);
    // Each killed run was streaming pq into a temp tree; the next run's start removed the one before, and
    // ending the job the last.
    expect(await readdir(join(config.dataDir, 'artifacts', 'local'))).toEqual([next]);

    // Webhooks are delivered in the order the jobs ended, so once the next job's has come, a second one for
    // the failed job would have come too.
    await until('the next job was delivered', () => deliveries.some((d) => d.jobId === next));
    expect(deliveries).toEqual([
      { event: 'job.failed', jobId: id },
      { event: 'job.succeeded', jobId: next },
    ]);
    expect(queueEvents.filter((e) => e.jobId === id)).toEqual([
      ...Array.from({ length: maxStalledCount + 1 }, () => ({ event: 'stalled', jobId: id })),
      { event: 'failed', jobId: id },
    ]);
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(durationCount(metrics, 'failed')).toBe(1);
    expect(durationCount(metrics, 'succeeded')).toBe(1);
    expect(await app.services.records.countByStatus('jobs')).toEqual({
      queued: 0,
      running: 0,
      failed: 1,
      succeeded: 1,
    });
    console.log(
      `workers killed at ${killedAt.join(', ')} ms; record failed at ${endedMs} ms: ${job.error!.message}; ` +
        `next job succeeded at ${Date.now() - started} ms`,
    );
  });
});

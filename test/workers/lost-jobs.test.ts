/**
 * Jobs that leave the queue without a `failed` event (removed, drained, lost with BullMQ's keys), or whose
 * event no watch heard: the failure watch ends their records failed, once, and leaves jobs the queue still
 * holds alone.
 */
import { UnrecoverableError, Worker } from 'bullmq';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerConnection } from '../../src/jobs/queue.js';
import type { JobRecord } from '../../src/storage/types.js';
import { abandonedJobError, lostJobError, watchFailedJobs, type FailureWatch } from '../../workers/failures.js';
import { alice } from '../http/helpers.js';
import { useTwoTenantApp } from '../http/suite.js';

const suite = useTwoTenantApp();
let watch: FailureWatch;
const lostCheckMs = 400;

async function startWatch(): Promise<FailureWatch> {
  const { services } = suite.app;
  const started = watchFailedJobs({
    connection: workerConnection(suite.config.redisUrl),
    prefix: services.keys.bull(),
    queues: services.queues,
    lifecycle: services.lifecycle,
    records: services.records,
    artifacts: services.artifacts,
    log: pino({ level: 'silent' }),
    lostCheckMs,
  });
  await started.ready;
  return started;
}

beforeAll(async () => {
  watch = await startWatch();
});
afterAll(() => watch?.close());

async function submit(): Promise<string> {
  const res = await suite.app.inject({
    method: 'POST',
    url: '/v1/jobs',
    headers: alice,
    payload: { modelId: suite.modelId, method: { name: 'affine', bits: 8 } },
  });
  expect(res.statusCode, res.body).toBe(202);
  return res.json().id;
}

async function record(id: string): Promise<JobRecord> {
  return (await suite.app.services.records.get('jobs', 'alice', id))!;
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20 * lostCheckMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${20 * lostCheckMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('a job the queue failed while no watch listened', () => {
  it('ends failed on the next look, as the failed event would have ended it', async () => {
    // As in a worker that fails a job at start (its first stalled check finds it stalled once too often)
    // before its watch has subscribed: the failed event is gone by the time anyone listens.
    await watch.close();
    const id = await submit();
    const reason = 'job stalled more than allowable limit';
    const failing = new Worker(
      'quantize',
      async () => {
        throw new UnrecoverableError(reason);
      },
      { connection: workerConnection(suite.config.redisUrl), prefix: suite.app.services.keys.bull() },
    );
    const queue = suite.app.services.queues.quantize;
    await until('the queue failed the job', async () => (await queue.getJobState(id)) === 'failed');
    await failing.close();
    expect((await record(id)).status).toBe('queued');

    watch = await startWatch();
    await until('the record ended', async () => (await record(id)).status !== 'queued');
    const ended = await record(id);
    expect(ended.status).toBe('failed');
    expect(ended.error).toEqual(abandonedJobError({ attemptsMade: 1, stalledCounter: 0, failedReason: reason }));
    expect((await suite.app.services.records.countByStatus('jobs')).failed).toBe(1);

    // Ended, so it can be deleted: the next test counts only its own jobs.
    const del = await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${id}`, headers: alice });
    expect(del.statusCode).toBe(204);
  });
});

describe('a queued job removed from the queue', () => {
  it('ends failed as worker-lost; a job still in the queue stays queued', async () => {
    const removed = await submit();
    const kept = await submit();
    const queue = suite.app.services.queues.quantize;
    expect(await queue.remove(removed)).toBe(1);

    const deadline = Date.now() + 20 * lostCheckMs;
    while ((await record(removed)).status !== 'failed' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const ended = await record(removed);
    expect(ended.status).toBe('failed');
    expect(ended.error).toEqual(lostJobError);
    expect((await record(kept)).status).toBe('queued');

    const counts = await suite.app.services.records.countByStatus('jobs');
    expect(counts.failed).toBe(1);
    expect(counts.queued).toBe(1);

    // The model's unfinished-jobs guard let go of the ended job only: deleting the model still waits for `kept`.
    const del = await suite.app.inject({ method: 'DELETE', url: `/v1/models/${suite.modelId}`, headers: alice });
    expect(del.statusCode).toBe(409);
  });
});

describe('what the record says of a job BullMQ failed for good', () => {
  it("names each of BullMQ's own reasons (the strings its scripts and sandbox write)", () => {
    const stalled = { attemptsMade: 1, stalledCounter: 3, failedReason: 'job stalled more than allowable limit' };
    expect(abandonedJobError(stalled)).toEqual({
      type: 'worker-lost',
      message: 'the workers running this job stopped renewing its lock 3 times (job stalled more than allowable limit)',
    });
    const killed = { attemptsMade: 1, stalledCounter: 0, failedReason: 'Unexpected exit code: null signal: SIGKILL' };
    expect(abandonedJobError(killed)).toEqual({
      type: 'worker-crashed',
      message:
        'the worker process running this job died in every attempt (1 attempt; last: Unexpected exit code: null signal: SIGKILL)',
    });
    expect(
      abandonedJobError({ attemptsMade: 2, stalledCounter: 0, failedReason: 'Missing lock for job 7. moveToFinished' }),
    ).toEqual({
      type: 'internal',
      message: 'the queue failed this job after 2 attempts: Missing lock for job 7. moveToFinished',
    });
  });
});

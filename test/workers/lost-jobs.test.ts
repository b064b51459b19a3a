/**
 * Jobs that leave the queue without a `failed` event (removed, drained, lost with BullMQ's keys): the failure
 * watch ends their records failed, once, and leaves jobs the queue still holds alone.
 */
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

beforeAll(async () => {
  const { services } = suite.app;
  watch = watchFailedJobs({
    connection: workerConnection(suite.config.redisUrl),
    prefix: services.keys.bull(),
    queues: services.queues,
    lifecycle: services.lifecycle,
    records: services.records,
    log: pino({ level: 'silent' }),
    lostCheckMs,
  });
  await watch.ready;
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
    expect(abandonedJobError(3, 'job stalled more than allowable limit')).toEqual({
      type: 'worker-lost',
      message:
        'the workers running this job stopped renewing its lock too often (3 attempts; job stalled more than allowable limit)',
    });
    expect(abandonedJobError(1, 'Unexpected exit code: null signal: SIGKILL').type).toBe('worker-crashed');
    expect(abandonedJobError(2, 'Missing lock for job 7. moveToFinished')).toEqual({
      type: 'internal',
      message: 'the queue failed this job after 2 attempts: Missing lock for job 7. moveToFinished',
    });
  });
});

/**
 * `priority` in the job spec orders the BullMQ queue: 0 (the default) first in submission order, then larger
 * numbers in increasing order. Read the way a worker takes jobs (Worker.getNextJob), and out of range → 400.
 */
import { Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { workerConnection } from '../../src/jobs/queue.js';
import { alice } from './helpers.js';
import { useTwoTenantApp } from './suite.js';
import { expectMatchesSpec } from './spec-validator.js';

const suite = useTwoTenantApp();

async function submit(priority?: number): Promise<{ id: string; spec: { priority: number } }> {
  const spec = { modelId: suite.modelId, method: { name: 'affine' }, ...(priority === undefined ? {} : { priority }) };
  const res = await suite.app.inject({ method: 'POST', url: '/v1/jobs', payload: spec, headers: alice });
  expect(res.statusCode).toBe(202);
  return res.json();
}

describe('job priority', () => {
  it('orders the queue: default 0 first, in submission order, then by increasing priority', async () => {
    const batch = await submit(10);
    const first = await submit();
    const urgentBatch = await submit(2);
    const second = await submit(0);
    const laterBatch = await submit(10);
    expect(first.spec.priority).toBe(0);
    expect(batch.spec.priority).toBe(10);

    const worker = new Worker('quantize', null, {
      connection: workerConnection(suite.config.redisUrl),
      prefix: `${suite.config.redisPrefix}:bull`,
      autorun: false,
    });
    try {
      const taken: string[] = [];
      for (let i = 0; i < 5; i++) {
        const job = await worker.getNextJob('priority-test', { block: false });
        if (!job) break;
        taken.push(job.id!);
      }
      expect(taken).toEqual([first.id, second.id, urgentBatch.id, batch.id, laterBatch.id]);
    } finally {
      await worker.close(true);
    }
  });

  it('answers 400 naming the field for a priority out of range', async () => {
    const payload = { modelId: suite.modelId, method: { name: 'affine' }, priority: 2 ** 21 };
    const res = await suite.app.inject({ method: 'POST', url: '/v1/jobs', payload, headers: alice });
    expect(res.statusCode).toBe(400);
    expectMatchesSpec('POST', '/v1/jobs', res);
    expect(JSON.stringify(res.json())).toContain('/priority');
  });

  it('takes a cancelled prioritized job off the queue', async () => {
    const job = await submit(7);
    const { quantize } = suite.app.services.queues;
    expect(await quantize.getJobState(job.id)).toBe('prioritized');
    expect(
      (await suite.app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: alice })).statusCode,
    ).toBe(200);
    expect(await quantize.getJob(job.id)).toBeUndefined();
  });
});

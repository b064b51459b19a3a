/**
 * The job-duration histogram: the write that ends a job records its run time once, in Redis, and /metrics
 * renders it as a Prometheus histogram (cumulative buckets, sum, count) whichever replica is scraped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { newId } from '../../src/storage/records.js';
import type { JobRecord, ModelRecord } from '../../src/storage/types.js';
import { buildApp } from '../../src/http/app.js';
import { cleanup, testConfig } from '../http/helpers.js';

let config: Config;
let apps: FastifyInstance[];

beforeAll(async () => {
  config = await testConfig();
  apps = [await buildApp(config, { logger: false }), await buildApp(config, { logger: false })];
  await Promise.all(apps.map((app) => app.ready()));
});

afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()));
  await cleanup(config);
});

function job(modelId: string, startedSecondsAgo: number): JobRecord {
  const now = Date.now();
  return {
    id: newId('jobs'),
    tenant: 'local',
    status: 'running',
    stage: 'load',
    progress: 0,
    kind: 'ptq',
    modelId,
    method: 'kmeans',
    spec: {},
    webhookUrl: null,
    attempts: 1,
    createdAt: new Date(now - startedSecondsAgo * 1000).toISOString(),
    startedAt: new Date(now - startedSecondsAgo * 1000).toISOString(),
    finishedAt: null,
    error: null,
    summary: null,
    artifacts: [],
  };
}

describe('qaas_job_duration_seconds', () => {
  it('counts each ended job once, in the bucket of its run time, on every replica', async () => {
    const { records, redis } = apps[0].services;
    const lifecycle = new JobLifecycle(records, redis, config.redisPrefix);
    const model: ModelRecord = {
      id: newId('models'),
      tenant: 'local',
      format: 'layers-model',
      params: 1,
      bytes: 4,
      sha256: 'ab',
      tensors: [],
      files: [],
      createdAt: new Date().toISOString(),
    };
    await records.create('models', model);
    const [quick, slow, cancelled] = [job(model.id, 3), job(model.id, 45), job(model.id, 1.2)];
    for (const record of [quick, slow, cancelled]) expect(await lifecycle.create(record)).toBe(true);
    await lifecycle.succeed('local', quick.id, {} as never, []);
    await lifecycle.succeed('local', slow.id, {} as never, []);
    await lifecycle.cancel('local', cancelled.id);
    // A second end of an ended job changes nothing, so it is not counted again.
    await lifecycle.fail('local', quick.id, { message: 'late' });

    for (const app of apps) {
      const text = (await app.inject({ url: '/metrics' })).body;
      const line = (labels: string) =>
        Number(text.match(new RegExp(`^qaas_job_duration_seconds_${labels} (\\S+)$`, 'm'))?.[1]);
      expect(line('bucket\\{le="2",method="kmeans",status="succeeded"\\}')).toBe(0);
      expect(line('bucket\\{le="5",method="kmeans",status="succeeded"\\}')).toBe(1);
      expect(line('bucket\\{le="30",method="kmeans",status="succeeded"\\}')).toBe(1);
      expect(line('bucket\\{le="60",method="kmeans",status="succeeded"\\}')).toBe(2);
      expect(line('bucket\\{le="\\+Inf",method="kmeans",status="succeeded"\\}')).toBe(2);
      expect(line('count\\{method="kmeans",status="succeeded"\\}')).toBe(2);
      expect(line('sum\\{method="kmeans",status="succeeded"\\}')).toBeCloseTo(48, 0);
      // Started 1.2 s before it was cancelled: the 2 s bucket, with 0.8 s to spare for a loaded machine.
      expect(line('bucket\\{le="1",method="kmeans",status="cancelled"\\}')).toBe(0);
      expect(line('bucket\\{le="2",method="kmeans",status="cancelled"\\}')).toBe(1);
      expect(line('count\\{method="kmeans",status="cancelled"\\}')).toBe(1);
      expect(text).not.toContain('status="failed"');
    }
  });
});

/**
 * Jobs with data through a real sandboxed worker: a PTQ job that evaluates on an uploaded dataset and
 * simulates 8-bit activations, and a QAT job, both reporting metrics by stage in the job summary; analyze and
 * auto jobs. Each finished job's report is validated against openapi.yaml's Report, the richest ones there are.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { createRng } from '../../src/quant/rng.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig } from '../http/helpers.js';
import { expectMatchesSpec } from '../http/spec-validator.js';

let config: Config;
let app: FastifyInstance;
let workers: Closable;
let modelId: string;
let datasetId: string;

/** Three classes told apart by which of the first three features is largest. */
function classificationRows(samples: number): { x: number[][]; y: number[] } {
  const rng = createRng(11);
  const x: number[][] = [];
  const y: number[] = [];
  for (let i = 0; i < samples; i++) {
    const row = [rng.next(), rng.next(), rng.next(), rng.next()];
    x.push(row);
    y.push(row.slice(0, 3).indexOf(Math.max(...row.slice(0, 3))));
  }
  return { x, y };
}

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
  workers = startWorkers(config, { concurrency: 1 });
  const model = multipart(filesAsParts(await denseModel([4, 16, 3])));
  modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...model })).json().id;
  const dataset = multipart([{ field: 'file', filename: 'data.json', data: JSON.stringify(classificationRows(96)) }]);
  const created = await app.inject({ method: 'POST', url: '/v1/datasets', ...dataset });
  expect(created.statusCode).toBe(201);
  datasetId = created.json().id;
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  await cleanup(config);
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a job record as JSON, read field by field
async function runToEnd(spec: Record<string, unknown>): Promise<Record<string, any>> {
  const submitted = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, ...spec } });
  expect(submitted.statusCode, submitted.body).toBe(202);
  const id = submitted.json().id;
  const deadline = Date.now() + 90_000;
  for (;;) {
    const job = (await app.inject({ url: `/v1/jobs/${id}` })).json();
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('jobs with datasets', () => {
  it('reports float, ptq and integer metrics measured on the uploaded evaluation set', async () => {
    const job = await runToEnd({
      method: { name: 'affine', bits: 8 },
      data: { evaluation: datasetId, calibration: datasetId },
      activations: { bits: 8 },
    });
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const { float, ptq, integer } = job.summary.metrics;
    expect(float.samples).toBe(96);
    expect(ptq.samples).toBe(96);
    expect(ptq.agreement).toBeGreaterThanOrEqual(0.9);
    expect(integer.agreement).toBeGreaterThanOrEqual(0.8);
    const reportResponse = await app.inject({ url: `/v1/jobs/${job.id}/report` });
    expectMatchesSpec('GET', `/v1/jobs/${job.id}/report`, reportResponse);
    const report = reportResponse.json();
    expect(report.model.metrics.ptq.accuracy).toBe(ptq.accuracy);
    expect(report.activations.map((a: { layer: string }) => a.layer)).toEqual(['dense_1', 'dense_2']);
  });

  it('trains a QAT job, reports its history and removes its checkpoint once done', async () => {
    const job = await runToEnd({
      kind: 'qat',
      method: { name: 'ternary' },
      data: { training: datasetId, evaluation: datasetId },
      qat: { epochs: 2, batchSize: 16, learningRate: 1e-2 },
    });
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const reportResponse = await app.inject({ url: `/v1/jobs/${job.id}/report` });
    expectMatchesSpec('GET', `/v1/jobs/${job.id}/report`, reportResponse);
    const report = reportResponse.json();
    expect(report.kind).toBe('qat');
    expect(report.training.history).toHaveLength(2);
    expect(job.summary.metrics.qat.samples).toBe(96);
    expect(existsSync(join(config.dataDir, 'checkpoints', 'local', `${job.id}.v8`))).toBe(false);
  });

  it('runs analyze and auto jobs: a sensitivity table, then a chosen config within the drop budget', async () => {
    const analyze = await runToEnd({
      kind: 'analyze',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: datasetId },
    });
    expect(analyze.status, JSON.stringify(analyze.error)).toBe('succeeded');
    const analyzedResponse = await app.inject({ url: `/v1/jobs/${analyze.id}/report` });
    expectMatchesSpec('GET', `/v1/jobs/${analyze.id}/report`, analyzedResponse);
    const analyzed = analyzedResponse.json();
    // 2 kernels × 6 default candidate configs, most sensitive first.
    expect(analyzed.sensitivity).toHaveLength(12);
    const drops = analyzed.sensitivity.map((row: { drop: number }) => row.drop);
    expect(drops).toEqual([...drops].sort((a, b) => b - a));

    const auto = await runToEnd({
      kind: 'auto',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: datasetId },
      target: { metric: 'accuracy', maxDrop: 0.02 },
      search: { maxTrials: 6 },
    });
    expect(auto.status, JSON.stringify(auto.error)).toBe('succeeded');
    const reportResponse = await app.inject({ url: `/v1/jobs/${auto.id}/report` });
    expectMatchesSpec('GET', `/v1/jobs/${auto.id}/report`, reportResponse);
    const report = reportResponse.json();
    const chosen = report.frontier.filter((entry: { chosen: boolean }) => entry.chosen);
    expect(chosen).toHaveLength(1);
    expect(report.frontier.length).toBeLessThanOrEqual(6);
    // Within budget where it was searched and on the held-out half, so on the whole evaluation set too.
    expect(chosen[0].drop).toBeLessThanOrEqual(0.02);
    expect(chosen[0].heldOut.drop).toBeLessThanOrEqual(0.02);
    expect(report.model.metrics.float.accuracy - report.model.metrics.ptq.accuracy).toBeLessThanOrEqual(0.02);
    expect(report.chosenSpec.kind).toBe('ptq');
  });
});

/**
 * Which engine a job runs on in the worker: a plain PTQ job on the streaming engine (src/pipeline/stream.ts),
 * BatchNorm folding included, its artifacts the in-memory pipeline's byte for byte; a job the streaming path
 * refuses by its spec (product quantization) on the in-memory one. Neither leaves linked model directories or
 * temp trees behind.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import { createRng } from '../../src/quant/rng.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { artifactDir } from '../../src/storage/artifacts.js';
import { listTree } from '../../src/storage/tree.js';
import { saveLayersModel, setSeededWeights } from '../fixtures/models.js';
import { npyOf } from '../model/dataset/npy-fixture.js';
import { cleanup, filesAsParts, multipart, testConfig } from '../http/helpers.js';

let config: Config;
let app: FastifyInstance;
let workers: Closable;

beforeAll(async () => {
  await tf.setBackend('cpu');
  config = await testConfig();
  app = await buildApp(config, { logger: false });
  workers = startWorkers(config, { concurrency: 1 });
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  await cleanup(config);
});

/** Three Dense layers with seeded weights, saved in 1 KiB shards so tensors span shards. */
async function denseShardedModel(): Promise<FileSet> {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [8], units: 32, activation: 'relu', name: 'd1' }),
      tf.layers.dense({ units: 16, activation: 'relu', name: 'd2' }),
      tf.layers.dense({ units: 3, name: 'd3' }),
    ],
  });
  try {
    setSeededWeights(model, 5, (next) => (next() - 0.5) * 0.4);
    return await saveLayersModel(model, 1024);
  } finally {
    model.dispose();
  }
}

/** Conv2D + BatchNorm, then a Conv2D with ReLU + BatchNorm (not foldable), in 512-byte shards. */
async function convBatchNormModel(): Promise<FileSet> {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [5, 5, 3], filters: 6, kernelSize: 3, useBias: false, name: 'conv' }),
      tf.layers.batchNormalization({ name: 'bn' }),
      tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'relu', name: 'conv_relu' }),
      tf.layers.batchNormalization({ name: 'bn_after_relu' }),
      tf.layers.flatten({ name: 'flatten' }),
      tf.layers.dense({ units: 3, name: 'dense' }),
    ],
  });
  try {
    setSeededWeights(model, 6, (next) => 0.5 + next());
    return await saveLayersModel(model, 512);
  } finally {
    model.dispose();
  }
}

async function upload(files: FileSet): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(filesAsParts(files)) });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().id;
}

async function runToEnd(spec: Record<string, unknown>) {
  const submitted = await app.inject({ method: 'POST', url: '/v1/jobs', payload: spec });
  expect(submitted.statusCode, submitted.body).toBe(202);
  const id: string = submitted.json().id;
  for (let i = 0; i < 600; i++) {
    const job = (await app.inject({ url: `/v1/jobs/${id}` })).json();
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`job ${id} did not end`);
}

async function storedArtifacts(id: string): Promise<FileSet> {
  const dir = artifactDir(config.dataDir, 'local', id);
  const files: FileSet = new Map();
  for (const path of await listTree(dir)) files.set(path, new Uint8Array(await readFile(join(dir, path))));
  return files;
}

function reportOf(files: FileSet): { model: { backend: string }; [key: string]: unknown } {
  return JSON.parse(new TextDecoder().decode(files.get('report.json')));
}

/** The report with what differs between the engines by design (timings, the tfjs backend) taken out. */
function comparable(report: { model: { backend: string }; [key: string]: unknown }) {
  return { ...report, timings: 'differs', model: { ...report.model, backend: 'differs' } };
}

/** Runs a `method` job on `source` through the service; checks it streamed, as runJob would have written it. */
async function expectStreamedAsInMemory(
  source: FileSet,
  method: Record<string, unknown> = { name: 'affine', bits: 8 },
): Promise<Record<string, unknown>> {
  const modelId = await upload(source);
  const job = await runToEnd({ modelId, method });
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  expect(job.summary.backend).toBe('none');

  const stored = await storedArtifacts(job.id);
  expect([...stored.keys()]).toEqual(job.artifacts);
  const expected = await runJob(readModel(source), parseJobSpec({ modelId, method }), {}, { backend: 'cpu' });
  expect([...stored.keys()]).toEqual([...expected.files.keys()].sort());
  for (const [path, bytes] of expected.files) {
    if (path === 'report.json') continue;
    expect(Buffer.compare(Buffer.from(stored.get(path)!), Buffer.from(bytes)), path).toBe(0);
  }
  expect(comparable(reportOf(stored))).toEqual(comparable(reportOf(expected.files)));
  expect(reportOf(stored).model.backend).toBe('none');
  await expectNoLeftovers();
  return reportOf(stored);
}

async function expectNoLeftovers(): Promise<void> {
  expect(await readdir(join(config.dataDir, 'tmp')).catch(() => [])).toEqual([]);
  const jobDirs = await readdir(join(config.dataDir, 'artifacts', 'local'));
  expect(jobDirs.filter((name) => name.startsWith('.'))).toEqual([]);
}

describe('the worker picks the engine', () => {
  it('streams a plain PTQ job, storing what the in-memory pipeline makes, byte for byte', async () => {
    await expectStreamedAsInMemory(await denseShardedModel());
  });

  it('streams a job on a model whose BatchNorms fold, storing what the in-memory pipeline makes', async () => {
    const report = await expectStreamedAsInMemory(await convBatchNormModel());
    // ptq.equalize (the default): the BN kept as the conv kernel's per-channel scale; the one after a ReLU kept.
    expect(report.batchNorm).toMatchObject({
      folded: [],
      skipped: [{ layer: 'bn_after_relu' }],
      scaled: [{ layer: 'conv', batchNorm: 'bn' }],
    });
  });

  it('streams pq, whose per-block or shared codebooks follow from the shapes', async () => {
    const report = await expectStreamedAsInMemory(await denseShardedModel(), { name: 'pq', bits: 4 });
    // d2's [32, 16] kernel: 8 per-block codebooks of 16 × 4 floats would cost 33 bits/weight; it shares one.
    expect(report.warnings).toContainEqual(
      expect.stringMatching(/^d2\/kernel: pq per-block codebooks would cost 33\.0/),
    );
  });

  it('runs a job that evaluates on data in memory', async () => {
    const modelId = await upload(await denseShardedModel());
    const rng = createRng(8);
    const x = npyOf(
      '<f4',
      [6, 8],
      Array.from({ length: 48 }, () => rng.next() - 0.5),
    );
    const dataset = await app.inject({
      method: 'POST',
      url: '/v1/datasets',
      ...multipart([{ field: 'x', filename: 'x.npy', data: x }]),
    });
    expect(dataset.statusCode, dataset.body).toBe(201);
    const job = await runToEnd({
      modelId,
      method: { name: 'affine', bits: 8 },
      data: { evaluation: dataset.json().id },
    });
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    // streamingBlocker refused the spec (data.evaluation): the tfjs pipeline ran it.
    expect(job.summary.backend).toBe('cpu');
    await expectNoLeftovers();
  });
});

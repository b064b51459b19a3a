/**
 * Multi-input models through the API and a sandboxed worker: a dataset of one array per input (named .npy
 * parts, an .npz of named arrays, JSON x as an object) is stored with its inputs, checked against the
 * model's inputs at submission, and a job calibrates and evaluates the two-input fixture with it — the
 * float accuracy it reports is the one stock tfjs gives on the same arrays.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import type { FileSet } from '../../src/model/types.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { buildTwoInputModel, loadStockLayers, TWO_INPUTS } from '../fixtures/models.js';
import { cleanup, filesAsParts, multipart, testConfig, zipOf } from '../http/helpers.js';
import { expectMatchesSpec } from '../http/spec-validator.js';
import { elements, npy } from '../model/dataset/npy-fixture.js';

const samples = 40;
let config: Config;
let app: FastifyInstance;
let workers: Closable;
let source: FileSet;
let modelId: string;

/** Seeded values for one input, samples × width, and class labels that follow a sum of them. */
const features = Array.from({ length: samples * TWO_INPUTS.features }, (_, i) => Math.sin(i * 1.3));
const context = Array.from({ length: samples * TWO_INPUTS.context }, (_, i) => Math.cos(i * 0.7));
const labels = Array.from({ length: samples }, (_, i) => (features[i * 3] + context[i * 2] > 0 ? 1 : 0));
const npyOf = (values: number[], width: number) => npy('<f4', [samples, width], elements('<f4', values));
const labelsNpy = npy('<i4', [samples], elements('<i4', labels));

async function waitFor(jobId: string) {
  for (;;) {
    const job = (await app.inject({ url: `/v1/jobs/${jobId}` })).json();
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function upload(parts: Parameters<typeof multipart>[0]) {
  return app.inject({ method: 'POST', url: '/v1/datasets', ...multipart(parts) });
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  config = await testConfig();
  app = await buildApp(config, { logger: false });
  workers = startWorkers(config, { concurrency: 1 });
  source = await buildTwoInputModel();
  const model = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(filesAsParts(source)) });
  expect(model.statusCode).toBe(201);
  expect(model.json().inputs.map((i: { name: string }) => i.name)).toEqual(['features', 'context']);
  modelId = model.json().id;
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  await cleanup(config);
});

describe('datasets of one array per model input', () => {
  it('are stored from named .npy parts, an .npz of named arrays, or JSON x as an object', async () => {
    const parts = await upload([
      { field: 'features', filename: 'features.npy', data: npyOf(features, 3) },
      { field: 'context', filename: 'context.npy', data: npyOf(context, 2) },
      { field: 'y', filename: 'y.npy', data: labelsNpy },
    ]);
    expect(parts.statusCode).toBe(201);
    expectMatchesSpec('POST', '/v1/datasets', parts);
    const record = parts.json();
    expect(record.x).toBeNull();
    expect(record.samples).toBe(samples);
    expect(record.inputs.map((a: { name: string; shape: number[] }) => [a.name, a.shape])).toEqual([
      ['features', [samples, 3]],
      ['context', [samples, 2]],
    ]);
    expect(record.y.shape).toEqual([samples]);

    const npz = await zipOf([
      ['features.npy', npyOf(features, 3)],
      ['context.npy', npyOf(context, 2)],
      ['y.npy', labelsNpy],
    ]);
    const fromNpz = (await upload([{ filename: 'data.npz', data: npz }])).json();
    expect(fromNpz.inputs.map((a: { name: string }) => a.name)).toEqual(['features', 'context']);
    expect(fromNpz.y.shape).toEqual([samples]);

    const rows = (values: number[], width: number) =>
      Array.from({ length: 2 }, (_, i) => values.slice(i * width, (i + 1) * width));
    const json = JSON.stringify({ x: { features: rows(features, 3), context: rows(context, 2) }, y: [0, 1] });
    const fromJson = (await upload([{ filename: 'data.json', data: Buffer.from(json) }])).json();
    expect(fromJson.inputs.map((a: { name: string; shape: number[] }) => [a.name, a.shape])).toEqual([
      ['features', [2, 3]],
      ['context', [2, 2]],
    ]);

    const uneven = await upload([
      { field: 'features', filename: 'features.npy', data: npyOf(features, 3) },
      { field: 'context', filename: 'context.npy', data: npy('<f4', [3, 2], elements('<f4', [1, 2, 3, 4, 5, 6])) },
    ]);
    expect(uneven.statusCode).toBe(422);
    expect(uneven.json().detail).toBe(`input features has ${samples} samples but context has 3`);
  });

  it('are checked against the model’s inputs when a job is submitted', async () => {
    const onlyFeatures = (await upload([{ field: 'features', filename: 'f.npy', data: npyOf(features, 3) }])).json();
    const missing = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'affine' }, data: { evaluation: onlyFeatures.id } },
    });
    expect(missing.statusCode).toBe(422);
    expect(missing.json().detail).toBe(
      `data.evaluation (${onlyFeatures.id}): dataset inputs 'features' must be the model's inputs 'features', 'context': 'context' missing`,
    );
    const single = (await upload([{ field: 'x', filename: 'x.npy', data: npyOf(features, 3) }])).json();
    const oneX = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'affine' }, data: { calibration: single.id } },
    });
    expect(oneX.statusCode).toBe(422);
    expect(oneX.json().detail).toContain("the model has 2 inputs ('features', 'context'): send one array per input");
    const swapped = (
      await upload([
        { field: 'features', filename: 'a.npy', data: npyOf(context, 2) },
        { field: 'context', filename: 'b.npy', data: npyOf(features, 3) },
      ])
    ).json();
    const wrongShape = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'affine' }, data: { calibration: swapped.id } },
    });
    expect(wrongShape.statusCode).toBe(422);
    expect(wrongShape.json().detail).toContain(
      "dataset input 'features' samples are [2] but input 'features' expects [3]",
    );
  });

  it('calibrate and evaluate a two-input model in a job, each array feeding its input', async () => {
    const dataset = (
      await upload([
        // Part order differs from the model's input order: names, not positions, decide what feeds what.
        { field: 'context', filename: 'context.npy', data: npyOf(context, 2) },
        { field: 'y', filename: 'y.npy', data: labelsNpy },
        { field: 'features', filename: 'features.npy', data: npyOf(features, 3) },
      ])
    ).json();
    const submitted = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: {
        modelId,
        method: { name: 'affine', bits: 8 },
        activations: { bits: 8 },
        data: { calibration: dataset.id, evaluation: dataset.id },
      },
    });
    expect(submitted.statusCode).toBe(202);
    const job = await waitFor(submitted.json().id);
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    const report = (await app.inject({ url: `/v1/jobs/${job.id}/report` })).json();

    const stock = await loadStockLayers(source);
    const inputs = [tf.tensor2d(features, [samples, 3]), tf.tensor2d(context, [samples, 2])];
    const predicted = stock.predict(inputs) as tf.Tensor;
    const classes = Array.from(predicted.argMax(-1).dataSync());
    tf.dispose([...inputs, predicted, stock]);
    const accuracy = classes.filter((c, i) => c === labels[i]).length / samples;

    const { float, ptq, integer } = report.model.metrics;
    expect(float.samples).toBe(samples);
    expect(float.accuracy).toBeCloseTo(accuracy, 10);
    // Fed the other way round (or one input twice) the model would not be shape-compatible at all; fed
    // right, 8-bit weights and activations keep most predictions of a 2-layer net.
    expect(ptq.agreement).toBeGreaterThanOrEqual(0.9);
    expect(integer.agreement).toBeGreaterThanOrEqual(0.8);
    // Ranges calibrated on both inputs' data: after the concatenation and the hidden layer (not the output).
    expect(report.activations.map((a: { layer: string }) => a.layer)).toEqual(['joined', 'hidden']);
    console.log(`two-input job: float accuracy ${float.accuracy} (stock tfjs ${accuracy}), ptq ${ptq.accuracy}`);
  });
});

/**
 * QAT's validation rows (qat.validationSplit; src/pipeline/runtime.ts validationRows, heldOutTensorBatches,
 * shuffledTensorBatches) on a dataset saved sorted by class, as people save them (4 classes × 250 rows,
 * class 0 first), written to real files in every format a training set comes in: the held-out rows are a
 * seeded sample of the whole file, so every class is in them at about its share (the file's tail would be
 * class 3 alone), exactly round(0.2 × 1000) = 200 of them, read in file order, the same every epoch; the
 * training rows are all the others. Each row's x holds its own index and its class, so the batches say
 * which rows they are.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import { DatasetError, openDataset, parseJsonDataset, type Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import { runJob } from '../../src/pipeline/run.js';
import { heldOutTensorBatches, shuffledTensorBatches, validationRows } from '../../src/pipeline/runtime.js';
import type { Batch } from '../../src/quant/evaluate.js';
import { saveLayersModel } from '../fixtures/models.js';
import { zipOf } from '../http/helpers.js';
import { npyOf } from '../model/dataset/npy-fixture.js';

const CLASSES = 4;
const PER_CLASS = 250;
const SAMPLES = CLASSES * PER_CLASS;
const SPLIT = 0.2;
const HELD = Math.round(SAMPLES * SPLIT);
const BATCH = 32;
const SEED = 7;
const spec = parseJobSpec({ kind: 'qat', method: { name: 'affine' }, data: { training: 't' } });
const index = Array.from({ length: SAMPLES }, (_, i) => i);
const classOf = (row: number) => Math.floor(row / PER_CLASS);
const xValues = index.flatMap((i) => [i, classOf(i)]);
const yValues = index.map(classOf);

/** Each format, and the model input that reads it (a named input is fed by its own array). */
const formats = ['npy', 'npy (named input)', 'json', 'npz', 'npz (named input)'] as const;
type Format = (typeof formats)[number];
const feedOf = (format: Format) => [{ name: format.includes('named') ? 'pixels' : 'x', dtype: 'float32' as const }];

let dir: string;
const datasets = {} as Record<Format, Dataset>;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-validation-'));
  const x = npyOf('<f4', [SAMPLES, 2], xValues);
  const y = npyOf('<i4', [SAMPLES], yValues);
  await writeFile(join(dir, 'x.npy'), x);
  await writeFile(join(dir, 'y.npy'), y);
  const zip = async (name: string, xEntry: string) =>
    writeFile(
      join(dir, name),
      await zipOf([
        [xEntry, x],
        ['y.npy', y],
      ]),
    );
  await zip('d.npz', 'x.npy');
  await zip('named.npz', 'pixels.npy');
  datasets.npy = await openDataset({ x: join(dir, 'x.npy'), y: join(dir, 'y.npy') });
  datasets['npy (named input)'] = await openDataset({
    inputs: [{ name: 'pixels', path: join(dir, 'x.npy') }],
    y: join(dir, 'y.npy'),
  });
  datasets.json = await parseJsonDataset(JSON.stringify({ x: index.map((i) => [i, classOf(i)]), y: yValues }));
  datasets.npz = await openDataset({ npz: join(dir, 'd.npz') });
  datasets['npz (named input)'] = await openDataset({ npz: join(dir, 'named.npz') });
});

afterAll(async () => {
  await Promise.all(Object.values(datasets).map((d) => d.close()));
  await rm(dir, { recursive: true, force: true });
});

/** The rows a batch stream feeds, in order, checking that each batch's x and y belong to one row. */
async function rowsOf(batches: AsyncIterable<Batch>): Promise<number[]> {
  const rows: number[] = [];
  const before = tf.memory().numTensors;
  for await (const batch of batches) {
    const x = batch.x as tf.Tensor;
    expect(x.shape[0]).toBeLessThanOrEqual(BATCH);
    const values = Array.from(x.dataSync());
    const labels = Array.from(batch.y!.dataSync());
    for (let k = 0; k < x.shape[0]; k++) {
      const row = values[2 * k];
      expect(values[2 * k + 1]).toBe(classOf(row));
      expect(labels[k]).toBe(classOf(row));
      rows.push(row);
    }
  }
  expect(tf.memory().numTensors).toBe(before);
  return rows;
}

const perClass = (rows: number[]) => {
  const counts = new Array<number>(CLASSES).fill(0);
  for (const row of rows) counts[classOf(row)]++;
  return counts;
};

const maskOf = (rows: number[]) => {
  const mask = new Uint8Array(SAMPLES);
  for (const row of rows) mask[row] = 1;
  return mask;
};

describe('validationRows', () => {
  it('holds out exactly round(split · samples) rows, at least one, one left to train on', () => {
    const count = (mask: Uint8Array) => mask.reduce((sum, v) => sum + v, 0);
    expect(count(validationRows(SAMPLES, SPLIT, SEED))).toBe(200);
    expect(count(validationRows(1001, 0.1, SEED))).toBe(100);
    expect(count(validationRows(7, 0.5, SEED))).toBe(4);
    expect(count(validationRows(3, 0.1, SEED))).toBe(1);
    expect(count(validationRows(2, 0.5, SEED))).toBe(1);
    expect(() => validationRows(1, 0.5, SEED)).toThrow(DatasetError);
  });

  it('the same seed holds out the same rows; another seed, other rows', () => {
    const a = validationRows(SAMPLES, SPLIT, SEED);
    expect(validationRows(SAMPLES, SPLIT, SEED)).toEqual(a);
    const b = validationRows(SAMPLES, SPLIT, SEED + 1);
    // Two independent samples of 200 of 1000 rows share 40 in expectation (sd ≈ 5.7).
    const shared = a.reduce((sum, v, i) => sum + (v & b[i]), 0);
    console.log(`validationRows: seeds ${SEED} and ${SEED + 1} share ${shared} of ${HELD} rows`);
    expect(shared).toBeGreaterThan(20);
    expect(shared).toBeLessThan(60);
  });
});

describe.each(formats)('QAT validation rows of a class-sorted %s dataset', (format) => {
  it('are a seeded sample of every class, read in file order; the training rows are all the others', async () => {
    const dataset = datasets[format];
    expect(dataset.rowsAt !== undefined).toBe(!format.startsWith('npz'));
    const feed = feedOf(format);
    const heldOut = validationRows(SAMPLES, SPLIT, SEED);
    const validation = await rowsOf(heldOutTensorBatches(dataset, BATCH, spec, feed, heldOut));

    expect(validation).toHaveLength(HELD);
    expect(validation.every((row, k) => k === 0 || row > validation[k - 1])).toBe(true);
    expect(maskOf(validation)).toEqual(heldOut);
    // Each class holds 50 of them in expectation (hypergeometric, sd ≈ 5.5); the file's last 200 rows
    // would be [0, 0, 0, 200].
    const counts = perClass(validation);
    console.log(`${format}: validation rows per class ${counts.join(', ')}`);
    for (const count of counts) {
      expect(count).toBeGreaterThanOrEqual(35);
      expect(count).toBeLessThanOrEqual(65);
    }
    // Every epoch reads the same validation rows in the same order.
    expect(await rowsOf(heldOutTensorBatches(dataset, BATCH, spec, feed, heldOut))).toEqual(validation);

    for (const epoch of [0, 1]) {
      const training = await rowsOf(shuffledTensorBatches(dataset, BATCH, spec, feed, heldOut, SEED, epoch));
      expect(training).toHaveLength(SAMPLES - HELD);
      expect(new Set(training).size).toBe(SAMPLES - HELD);
      expect(training.filter((row) => heldOut[row] === 1)).toEqual([]);
      expect(new Set([...training, ...validation]).size).toBe(SAMPLES);
      expect(perClass(training)).toEqual(counts.map((count) => PER_CLASS - count));
    }
  });
});

it('a kind qat job validates on the sampled rows: a model that always answers class 0 scores their share of class 0', async () => {
  // Dense 2 → 4 whose kernel is ~1e-6 and whose bias favours class 0 by 4: it answers 0 for every row, and
  // a learning rate of 1e-9 keeps it so, so the epoch's accuracies count class-0 rows. On the file's tail
  // (class 3 alone) valMetric would be 0.
  const dense = tf.sequential({
    layers: [tf.layers.dense({ units: CLASSES, inputShape: [2], activation: 'softmax' })],
  });
  const kernel = Float32Array.from({ length: 2 * CLASSES }, (_, k) => ((k % 5) - 2) * 1e-6);
  dense.setWeights([tf.tensor2d(kernel, [2, CLASSES]), tf.tensor1d([4, 0, 0, 0])]);
  const model = readModel(await saveLayersModel(dense));
  dense.dispose();
  const qatSpec = parseJobSpec({
    kind: 'qat',
    method: { name: 'affine', bits: 8 },
    data: { training: 't' },
    qat: { epochs: 2, batchSize: 50, learningRate: 1e-9, validationSplit: SPLIT },
  });
  const seed = 'seed' in qatSpec.method ? qatSpec.method.seed : 0;
  const heldOutZeros = perClass(index.filter((row) => validationRows(SAMPLES, SPLIT, seed)[row] === 1))[0];
  for (const format of ['npy', 'npz'] as const) {
    const { report } = await runJob(model, qatSpec, { training: datasets[format] }, { backend: 'wasm' });
    const history = report.training!.history;
    console.log(
      `job (${format}): ${heldOutZeros} of ${HELD} validation rows are class 0; valMetric ${history.map((h) => h.valMetric).join(', ')}`,
    );
    for (const epoch of history) {
      expect(epoch.metricName).toBe('accuracy');
      expect(epoch.batches).toBe((SAMPLES - HELD) / 50);
      expect(epoch.valMetric).toBeCloseTo(heldOutZeros / HELD, 6);
      expect(epoch.metric).toBeCloseTo((PER_CLASS - heldOutZeros) / (SAMPLES - HELD), 6);
    }
  }
});

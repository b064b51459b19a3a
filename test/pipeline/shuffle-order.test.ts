/**
 * The order QAT reads a dataset's training rows in (src/pipeline/runtime.ts shuffledTensorBatches, the
 * permutation src/quant/qat/train.ts epochOrder): seeded, each training row exactly once per epoch, a new
 * order every epoch, and never a validation row (validationRows: a seeded sample of the whole file). Each
 * row's x holds its own index, so the batches say which rows they are. test/pipeline/validation-split.test.ts
 * checks the split itself on class-sorted files.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { openDataset, parseJsonDataset, type Dataset } from '../../src/model/dataset/index.js';
import {
  shuffleBufferSamples,
  shuffledTensorBatches,
  SHUFFLE_BUFFER_BATCHES,
  validationRows,
} from '../../src/pipeline/runtime.js';
import { epochOrder } from '../../src/quant/qat/train.js';
import { zipOf } from '../http/helpers.js';
import { npyOf } from '../model/dataset/npy-fixture.js';

const SAMPLES = 1000;
const BATCH = 32;
// 100 validation rows spread over the file; the other 900 are the training rows, ascending.
const heldOut = validationRows(SAMPLES, 0.1, 3);
const trainingRows = Array.from({ length: SAMPLES }, (_, i) => i).filter((i) => heldOut[i] === 0);
const TRAINING = trainingRows.length;
const spec = parseJobSpec({ kind: 'qat', method: { name: 'affine' }, data: { training: 't' } });
const feed = [{ name: 'x', dtype: 'float32' as const }];
const index = Array.from({ length: SAMPLES }, (_, i) => i);
// Two features per row (index and SAMPLES − index) and y = index mod 10: the gather must keep a row's values together.
const xValues = index.flatMap((i) => [i, SAMPLES - i]);
const yValues = index.map((i) => i % 10);

let dir: string;
const datasets: Record<string, Dataset> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-shuffle-'));
  const x = npyOf('<f4', [SAMPLES, 2], xValues);
  const y = npyOf('<i4', [SAMPLES], yValues);
  await writeFile(join(dir, 'x.npy'), x);
  await writeFile(join(dir, 'y.npy'), y);
  await writeFile(
    join(dir, 'd.npz'),
    await zipOf([
      ['x.npy', x],
      ['y.npy', y],
    ]),
  );
  datasets.npy = await openDataset({ x: join(dir, 'x.npy'), y: join(dir, 'y.npy') });
  datasets.npz = await openDataset({ npz: join(dir, 'd.npz') });
  datasets.json = await parseJsonDataset(JSON.stringify({ x: index.map((i) => [i, SAMPLES - i]), y: yValues }));
});

afterAll(async () => {
  await Promise.all(Object.values(datasets).map((d) => d.close()));
  await rm(dir, { recursive: true, force: true });
});

/** The rows epoch `epoch` feeds, in order, checking that each batch's x and y belong together. */
async function epochRows(dataset: Dataset, seed: number, epoch: number): Promise<number[]> {
  const rows: number[] = [];
  const before = tf.memory().numTensors;
  for await (const batch of shuffledTensorBatches(dataset, BATCH, spec, feed, heldOut, seed, epoch)) {
    const x = batch.x as tf.Tensor;
    expect(x.shape[0]).toBeLessThanOrEqual(BATCH);
    const values = Array.from(x.dataSync());
    const labels = Array.from(batch.y!.dataSync());
    expect(batch.y!.dtype).toBe('int32');
    for (let k = 0; k < x.shape[0]; k++) {
      const row = values[2 * k];
      expect(values[2 * k + 1]).toBe(SAMPLES - row);
      expect(labels[k]).toBe(row % 10);
      rows.push(row);
    }
  }
  expect(tf.memory().numTensors).toBe(before);
  return rows;
}

function isPermutationOf(rows: number[], of: number[]): boolean {
  const sorted = [...rows].sort((a, b) => a - b);
  return sorted.length === of.length && sorted.every((row, i) => row === of[i]);
}

/** Positions at which two orders differ. */
function differences(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let count = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) count++;
  return count;
}

describe('epochOrder', () => {
  it('is a seeded permutation of [0, n), its own for every epoch', () => {
    const first = epochOrder(TRAINING, 7, 0);
    expect(isPermutationOf(Array.from(first), index.slice(0, TRAINING))).toBe(true);
    expect(Array.from(epochOrder(TRAINING, 7, 0))).toEqual(Array.from(first));
    // A random permutation fixes ~1 point; these share almost none with each other.
    expect(differences(first, epochOrder(TRAINING, 7, 1))).toBeGreaterThan(TRAINING * 0.95);
    expect(differences(first, epochOrder(TRAINING, 8, 0))).toBeGreaterThan(TRAINING * 0.95);
    expect(differences(first, index.slice(0, TRAINING))).toBeGreaterThan(TRAINING * 0.95);
  });
});

describe.each(['npy', 'json', 'npz'])('shuffledTensorBatches over a .%s dataset', (format) => {
  it('feeds every training row once per epoch, in a seeded order of its own, never a validation row', async () => {
    const dataset = datasets[format];
    expect(dataset.rowsAt !== undefined).toBe(format !== 'npz');
    const epochs = [await epochRows(dataset, 7, 0), await epochRows(dataset, 7, 1), await epochRows(dataset, 7, 2)];
    expect(TRAINING).toBe(900);
    for (const rows of epochs) {
      expect(isPermutationOf(rows, trainingRows)).toBe(true);
      expect(rows.filter((row) => heldOut[row] === 1)).toEqual([]);
    }
    expect(await epochRows(dataset, 7, 1)).toEqual(epochs[1]);
    expect(differences(epochs[0], epochs[1])).toBeGreaterThan(TRAINING * 0.9);
    expect(differences(epochs[1], epochs[2])).toBeGreaterThan(TRAINING * 0.9);
    expect(differences(epochs[0], await epochRows(dataset, 8, 0))).toBeGreaterThan(TRAINING * 0.9);
    // Well mixed: the first batch is not a run of neighbouring rows (file order would be rows 0..31).
    expect(Math.max(...epochs[0].slice(0, BATCH)) - Math.min(...epochs[0].slice(0, BATCH))).toBeGreaterThan(
      format === 'npz' ? BATCH * 2 : TRAINING / 2,
    );
    // Where rows are read at any index, the order is epochOrder's permutation of the training rows.
    if (format !== 'npz') expect(epochs[0]).toEqual(Array.from(epochOrder(TRAINING, 7, 0), (k) => trainingRows[k]));
  });
});

it('the shuffle buffer holds SHUFFLE_BUFFER_BATCHES batches: a row leaves it at most that many rows early', async () => {
  // A streamed training row is read at its rank among the training rows (validation rows are passed over),
  // so it cannot come out before position rank − capacity.
  const rows = await epochRows(datasets.npz, 7, 0);
  const capacity = shuffleBufferSamples(datasets.npz, BATCH);
  expect(capacity).toBe(SHUFFLE_BUFFER_BATCHES * BATCH);
  const rank = new Map(trainingRows.map((row, k) => [row, k]));
  rows.forEach((row, position) => expect(position).toBeGreaterThanOrEqual(rank.get(row)! - capacity));
});

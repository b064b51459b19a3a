/**
 * QAT from a dataset trains the same whether or not the dataset is sorted by class: kind `qat` reads the
 * training rows in a seeded order of each epoch's own (src/pipeline/runtime.ts shuffledTensorBatches), so
 * the class-sorted copy of the training set (as people save it: the per-class arrays concatenated) reaches
 * the accuracy of the unsorted one within 2 points.
 *
 * The task: the small CNN trained for 4 epochs on 1600 samples of the generated 10-class task (float
 * 78.4% on 1000 others), then 4-bit per-channel affine QAT, 3 epochs, on the same 1600 as .npy. Measured
 * (wasm): unsorted 83.6%, sorted 83.8%. Fed in file order, as before the fix, the sorted copy reached 77.9%
 * (below the float model: each epoch ends on runs of single classes and SGD forgets the others) against
 * 82.7% unsorted; with learning rate 1e-2 it was 65.6% against 83.0%. Two orders of the same rows differ
 * by up to ~2 points here (the 1e-2 run, shuffled: 82.4% and 84.6%), hence the lower learning rate.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import { saveLayersModel } from '../fixtures/models.js';
import {
  makeClassificationTask,
  sliceTask,
  taskDataset,
  trainSmallCnn,
  type ClassificationTask,
} from '../fixtures/tasks.js';

const task = makeClassificationTask({ seed: 5, samples: 2600 });
const train = sliceTask(task, 0, 1600);

/** The task's samples reordered by label (stable): every class one contiguous run, class 0 first. */
function sortedByLabel(part: ClassificationTask): ClassificationTask {
  const pixels = part.inputShape.reduce((a, b) => a * b, 1);
  const order = Array.from(part.y, (_, i) => i).sort((a, b) => part.y[a] - part.y[b] || a - b);
  const x = new Float32Array(part.x.length);
  order.forEach((from, to) => x.set(part.x.subarray(from * pixels, (from + 1) * pixels), to * pixels));
  return { ...part, x, y: Int32Array.from(order, (from) => part.y[from]) };
}

let dir: string;
let model: LoadedModel;
let unsorted: Dataset;
let sorted: Dataset;
let evaluation: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-qat-shuffle-'));
  const trained = await trainSmallCnn(train, { seed: 3, epochs: 4 });
  model = readModel(await saveLayersModel(trained));
  trained.dispose();
  unsorted = await taskDataset(dir, 'unsorted', train);
  sorted = await taskDataset(dir, 'sorted', sortedByLabel(train));
  evaluation = await taskDataset(dir, 'evaluation', sliceTask(task, 1600, 2600));
}, 600_000);

afterAll(async () => {
  await Promise.all([unsorted, sorted, evaluation].map((d) => d?.close()));
  await rm(dir, { recursive: true, force: true });
});

describe('kind qat on a class-sorted dataset', () => {
  it('reaches the accuracy of the same data unsorted, within 2 points', async () => {
    const spec = parseJobSpec({
      kind: 'qat',
      method: { name: 'affine', bits: 4, granularity: 'per-channel' },
      data: { training: 't', evaluation: 'e' },
      qat: { epochs: 3, batchSize: 32, learningRate: 5e-3, learningRateDecay: 0.5 },
    });
    let floatAccuracy = 0;
    const accuracyOn = async (training: Dataset) => {
      const { report } = await runJob(model, spec, { training, evaluation }, { backend: 'wasm' });
      floatAccuracy = report.model.metrics.float!.accuracy!;
      return report.model.metrics.qat!.accuracy!;
    };
    const unsortedAccuracy = await accuracyOn(unsorted);
    const sortedAccuracy = await accuracyOn(sorted);
    const points = (value: number) => `${(100 * value).toFixed(1)}%`;
    console.log(
      `float ${points(floatAccuracy)}; 4-bit QAT, 3 epochs: unsorted ${points(unsortedAccuracy)}, sorted by class ${points(sortedAccuracy)}`,
    );
    // QAT keeps training the under-trained float model: both beat it.
    expect(unsortedAccuracy).toBeGreaterThan(floatAccuracy);
    expect(sortedAccuracy).toBeGreaterThan(floatAccuracy);
    expect(Math.abs(sortedAccuracy - unsortedAccuracy)).toBeLessThanOrEqual(0.02);
  }, 600_000);
});

/**
 * Issue 4's "tests that must hold" for post-training quantization, on the shipped artifact: a small CNN is
 * trained here on the generated 10-class task, BatchNorm is folded, runPtq quantizes it, and the `model/`
 * the job would ship is loaded with stock tf.loadLayersModel and evaluated on held-out samples.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import { foldBatchNorm } from '../../src/model/fold-batchnorm.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import { writeModel } from '../../src/model/write.js';
import { runPtq } from '../../src/pipeline/ptq.js';
import {
  calibrateActivations,
  withFakeQuantActivations,
  type ActivationCalibration,
} from '../../src/quant/activations.js';
import { evaluate } from '../../src/quant/evaluate.js';
import { loadStockLayers, saveLayersModel } from '../fixtures/models.js';
import {
  makeClassificationTask,
  sliceTask,
  toBatches,
  trainSmallCnn,
  type ClassificationTask,
} from '../fixtures/tasks.js';

const task = makeClassificationTask({ seed: 1, samples: 3500 });
const train = sliceTask(task, 0, 2000);
const calibration = sliceTask(task, 2000, 2500);
const heldOut = sliceTask(task, 2500, 3500);

let trained: tf.LayersModel;
let folded: LoadedModel;
let floatAccuracy: number;
const started = performance.now();

function subtree(files: FileSet, prefix: string): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith(prefix)).map(([path, bytes]) => [path.slice(prefix.length), bytes]),
  );
}

async function accuracy(model: tf.LayersModel, data: ClassificationTask = heldOut): Promise<number> {
  const metrics = await evaluate(model, toBatches(data, 250), { metrics: ['accuracy'] });
  return metrics.accuracy!;
}

/** runPtq on the folded model, and the artifact's `model/` loaded with stock tfjs. */
async function quantized(method: Record<string, unknown>): Promise<tf.LayersModel> {
  const { files } = await runPtq(folded, parseJobSpec({ method }), { backend: tf.getBackend() });
  return loadStockLayers(subtree(files, 'model/'));
}

function report(label: string, value: number): void {
  const drop = floatAccuracy - value;
  console.log(`${label}: accuracy ${(100 * value).toFixed(1)}% (drop ${(100 * drop).toFixed(1)} points)`);
}

beforeAll(async () => {
  await selectBackend('wasm');
  const trainStarted = performance.now();
  trained = await trainSmallCnn(train, { seed: 3, epochs: 4 });
  console.log(`trained the small CNN on 2000 samples in ${Math.round(performance.now() - trainStarted)} ms`);
  const result = foldBatchNorm(readModel(await saveLayersModel(trained)));
  expect(result.folded).toEqual(['bn1']);
  folded = result.model;
  floatAccuracy = await accuracy(trained);
});

afterAll(() => {
  trained.dispose();
  console.log(`ptq-accuracy total ${Math.round(performance.now() - started)} ms`);
});

describe('PTQ accuracy on a trained CNN (issue 4)', () => {
  it('trains to at least 90% held-out accuracy, and folding BatchNorm keeps it', async () => {
    console.log(`float: accuracy ${(100 * floatAccuracy).toFixed(1)}%`);
    expect(floatAccuracy).toBeGreaterThanOrEqual(0.9);
    const foldedModel = await loadStockLayers(writeModel(folded, new Map()));
    const metrics = await evaluate(foldedModel, toBatches(heldOut, 250), { reference: trained });
    console.log(
      `BatchNorm folded: agreement ${(100 * metrics.agreement!).toFixed(1)}%, SQNR ${metrics.sqnrDb?.toFixed(1)} dB`,
    );
    expect(metrics.agreement).toBe(1);
    expect(metrics.sqnrDb).toBeGreaterThan(80);
    foldedModel.dispose();
  });

  it('binary PTQ of every kernel loses at least 20 points', async () => {
    const model = await quantized({ name: 'binary' });
    const value = await accuracy(model);
    report('binary PTQ (all kernels)', value);
    expect(floatAccuracy - value).toBeGreaterThanOrEqual(0.2);
    model.dispose();
  });

  it('affine 4-bit per-channel PTQ stays within 3 points', async () => {
    const model = await quantized({ name: 'affine', bits: 4, granularity: 'per-channel' });
    const value = await accuracy(model);
    report('affine 4-bit per-channel PTQ', value);
    expect(floatAccuracy - value).toBeLessThanOrEqual(0.03);
    model.dispose();
  });

  it('W8A8 (affine 8-bit weights, 8-bit activations calibrated on a calibration split) stays within 2 points', async () => {
    const model = await quantized({ name: 'affine', bits: 8 });
    const calibrations: ActivationCalibration[] = ['minmax', 'percentile', 'mse', 'kl'];
    for (const method of calibrations) {
      const calibrateStarted = performance.now();
      const ranges = await calibrateActivations(model, toBatches(calibration, 250), {
        bits: 8,
        calibration: method,
        percentile: 99.99,
      });
      const calibrateMs = Math.round(performance.now() - calibrateStarted);
      expect(ranges.map((r) => r.layer)).toEqual(['conv1', 'relu1', 'pool1', 'depthwise', 'pointwise', 'pool2']);
      const simulated = await withFakeQuantActivations(model, ranges);
      const value = await accuracy(simulated);
      report(`W8A8 (${method} activation ranges, calibrated in ${calibrateMs} ms)`, value);
      expect(floatAccuracy - value).toBeLessThanOrEqual(0.02);
      simulated.dispose();
    }
    model.dispose();
  });
});

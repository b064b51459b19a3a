import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../../src/model/backend.js';
import { heldOutMask } from '../../../src/quant/held-out.js';
import { binary } from '../../../src/quant/methods/binary.js';
import { parseMethodParams, type MethodParams } from '../../../src/quant/methods/index.js';
import { qatPlan } from '../../../src/quant/qat/plan.js';
import { clipRange, steMask } from '../../../src/quant/qat/ste.js';
import {
  createQatStep,
  trainQuantizationAware,
  type QatCheckpoint,
  type QatPlan,
} from '../../../src/quant/qat/train.js';
import { createRng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';
import { buildLayersModel, LAYERS_QUANTIZABLE, layersInput, loadStockLayers } from '../../fixtures/models.js';
import { classifier, weightMap } from './classifier.js';

const BINARY = parseMethodParams({ name: 'binary' });

/** Dense 2 → 2, no bias, linear, kernel [[0.5, −0.1], [0.2, −0.4]]: binary per tensor gives α = 0.3. */
function tinyDense(): tf.LayersModel {
  const model = tf.sequential({
    layers: [tf.layers.dense({ inputShape: [2], units: 2, useBias: false, name: 'dense' })],
  });
  model.setWeights([
    tf.tensor2d([
      [0.5, -0.1],
      [0.2, -0.4],
    ]),
  ]);
  return model;
}

function kernelValues(model: tf.LayersModel, name: string): number[] {
  const weight = model.weights.find((w) => w.originalName === name);
  if (weight === undefined) throw new Error(`no weight ${name}`);
  return Array.from(weight.read().dataSync());
}

const classifierPlan = (): QatPlan =>
  new Map([
    ['hidden/kernel', { params: BINARY }],
    ['out/kernel', { params: parseMethodParams({ name: 'affine', bits: 2, granularity: 'per-channel' }) }],
  ]);

beforeAll(async () => {
  await selectBackend('cpu');
});

describe('STE clip ranges', () => {
  it('affine: the grid ends widened by half a step (symmetric grids start at code 1)', () => {
    const quantized = {
      encoding: {
        kind: 'affine',
        bits: 2,
        channels: 1,
        scales: new Float32Array([0.5]),
        mins: new Float32Array([-0.5]),
      },
    } as unknown as QuantizedTensor;
    const asymmetric = clipRange(quantized)!;
    expect([asymmetric.lo[0], asymmetric.hi[0]]).toEqual([-0.75, 1.25]);
    expect(Array.from(steMask(new Float32Array([-0.8, -0.75, 1.25, 1.3]), asymmetric)!)).toEqual([0, 1, 1, 0]);
    expect(clipRange(quantized, true)!.lo[0]).toBe(-0.25);
    expect(steMask(new Float32Array([-0.75, 1.25]), asymmetric)).toBeUndefined();
  });

  it('binary per channel: |w| ≤ α of the channel', () => {
    const weights = new Float32Array([0.5, -2, -0.1, 1]);
    const params = parseMethodParams({ name: 'binary', granularity: 'per-channel' }) as Parameters<
      typeof binary.quantize
    >[2];
    const range = clipRange(binary.quantize(weights, [2, 2], params, createRng(0)))!;
    expect(Array.from(range.hi, (v) => Math.fround(v))).toEqual([Math.fround(0.3), 1.5]);
    expect(Array.from(steMask(weights, range)!)).toEqual([0, 0, 1, 1]);
  });
});

describe('trainQuantizationAware: one step on a 2×2 Dense, by hand', () => {
  // x = [1, 2], y = [0, 0], Q(W) = [[0.3, −0.3], [0.3, −0.3]]: prediction [0.9, −0.9], mse loss 0.81,
  // ∂L/∂Ŵ = x_i·prediction_j = [[0.9, −0.9], [1.8, −1.8]]; sgd η = 0.1 without momentum.
  const run = async (ste: 'identity' | 'clipped') => {
    const model = tinyDense();
    const x = tf.tensor2d([[1, 2]]);
    const y = tf.tensor2d([[0, 0]]);
    const losses: number[] = [];
    await trainQuantizationAware(
      model,
      { x, y },
      {
        plan: new Map([['dense/kernel', { params: BINARY }]]),
        epochs: 1,
        batchSize: 1,
        optimizer: 'sgd',
        momentum: 0,
        learningRate: 0.1,
        loss: 'mse',
        ste,
        onBatch: (m) => void losses.push(m.loss),
      },
    );
    const kernel = kernelValues(model, 'dense/kernel');
    tf.dispose([x, y]);
    model.dispose();
    return { kernel, losses };
  };

  it('identity: the gradient at Q(W) updates the float shadow weights', async () => {
    const { kernel, losses } = await run('identity');
    expect(losses[0]).toBeCloseTo(0.81, 6);
    // W − 0.1·g: float values, not ±α: the variables hold the shadow weights after the step.
    const expected = [0.41, -0.01, 0.02, -0.22];
    kernel.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
  });

  it('clipped: zero gradient where |w| > α = 0.3 (w = 0.5 and w = −0.4 stay)', async () => {
    const { kernel } = await run('clipped');
    const expected = [0.5, -0.01, 0.02, -0.4];
    kernel.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
  });
});

describe('QAT on every layer type', () => {
  it('identity STE: the update equals a float step taken at Q(W) (Embedding, Conv2D, BN, depthwise, separable, LSTM, Dense)', async () => {
    const files = await buildLayersModel();
    const qat = await loadStockLayers(files);
    const reference = await loadStockLayers(files);
    const params: MethodParams = parseMethodParams({ name: 'binary', granularity: 'per-channel' });
    const plan = qatPlan(
      LAYERS_QUANTIZABLE.map((name) => ({
        name,
        role: name.split('/').pop()!,
        params,
        shape: qat.weights.find((w) => w.originalName === name)!.shape as number[],
      })),
    );
    const x = layersInput(8);
    const y = tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32');
    const before = weightMap(qat);
    // The reference model computes at Q(W) and takes a plain float step there.
    const quantizedBefore = new Map<string, Float32Array>();
    for (const weight of reference.weights) {
      const entry = plan.get(weight.originalName);
      if (entry === undefined) continue;
      const values = weight.read().dataSync() as Float32Array;
      const q = binary.quantize(
        values,
        entry.shape!,
        params as Parameters<typeof binary.quantize>[2],
        createRng(0),
      ).dequantized;
      quantizedBefore.set(weight.originalName, q);
      const t = tf.tensor(q, weight.shape as number[]);
      (weight.read() as tf.Variable).assign(t);
      t.dispose();
    }
    const options = { optimizer: 'sgd' as const, momentum: 0, learningRate: 0.05 };
    const qatStep = createQatStep(qat, { ...options, plan });
    const floatStep = createQatStep(reference, { ...options, plan: new Map() });
    const qatMetrics = qatStep.step(x, y);
    const floatMetrics = floatStep.step(x, y);
    qatStep.dispose();
    floatStep.dispose();
    expect(qatMetrics.loss).toBeCloseTo(floatMetrics.loss, 5);

    const after = weightMap(qat);
    const referenceAfter = weightMap(reference);
    for (const [name, values] of after) {
      const start = quantizedBefore.get(name) ?? before.get(name)!;
      const qatDelta = values.map((v, i) => v - before.get(name)![i]);
      const floatDelta = referenceAfter.get(name)!.map((v, i) => v - start[i]);
      const scale = Math.max(1e-3, ...floatDelta.map(Math.abs));
      const worst = Math.max(...qatDelta.map((d, i) => Math.abs(d - floatDelta[i])));
      expect(worst / scale, name).toBeLessThan(1e-4);
      if (plan.has(name)) {
        // Shadow weights, not ±α: far more distinct values than the per-channel codebook has.
        expect(new Set(values).size, name).toBeGreaterThan(2 * (entryChannels(plan, name) + 1));
      }
    }
    tf.dispose([x, y]);
    qat.dispose();
    reference.dispose();
  });
});

function entryChannels(plan: QatPlan, name: string): number {
  const shape = plan.get(name)!.shape!;
  return shape[shape.length - 1];
}

describe('the training loop', () => {
  it('resumes from an epoch checkpoint: epoch n+1 on, ending exactly where an unbroken run ends', async () => {
    const common = { plan: classifierPlan(), batchSize: 8, learningRate: 0.01, validationSplit: 0.25, seed: 3 };

    const whole = classifier(5);
    const checkpoints: QatCheckpoint[] = [];
    const unbroken = await trainQuantizationAware(
      whole.model,
      { x: whole.x, y: whole.y },
      {
        ...common,
        epochs: 3,
        onCheckpoint: (c) => void checkpoints.push(c),
      },
    );
    expect(checkpoints.map((c) => c.epoch)).toEqual([1, 2, 3]);
    expect(unbroken.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    expect(unbroken.history[0].valMetric).toBeGreaterThanOrEqual(0);

    // A fresh model (other initial weights) resumed after epoch 1.
    const fresh = classifier(99);
    const resumedEpochs: number[] = [];
    const resumed = await trainQuantizationAware(
      fresh.model,
      { x: whole.x, y: whole.y },
      {
        ...common,
        epochs: 3,
        resumeFrom: checkpoints[0],
        onEpoch: (m) => void resumedEpochs.push(m.epoch),
      },
    );
    expect(resumedEpochs).toEqual([2, 3]);
    expect(resumed.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    expect(resumed.history[2].loss).toBe(unbroken.history[2].loss);
    const expected = weightMap(whole.model);
    for (const [name, values] of weightMap(fresh.model))
      expect(Array.from(values), name).toEqual(Array.from(expected.get(name)!));

    tf.dispose([whole.x, whole.y, fresh.x, fresh.y]);
    whole.model.dispose();
    fresh.model.dispose();
  });

  it('cancel stops between batches and leaves the shadow weights in the model', async () => {
    const { model, x, y } = classifier(7);
    const controller = new AbortController();
    let batches = 0;
    const run = trainQuantizationAware(
      model,
      { x, y },
      {
        plan: classifierPlan(),
        epochs: 5,
        batchSize: 4,
        signal: controller.signal,
        onBatch: () => {
          batches++;
          if (batches === 2) controller.abort();
        },
      },
    );
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(batches).toBe(2);
    expect(new Set(kernelValues(model, 'hidden/kernel')).size).toBeGreaterThan(2);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('early stop ends training after the epoch it accepts', async () => {
    const { model, x, y } = classifier(11);
    const result = await trainQuantizationAware(
      model,
      { x, y },
      {
        plan: classifierPlan(),
        epochs: 10,
        batchSize: 10,
        earlyStop: (m) => m.epoch === 2,
      },
    );
    expect(result.stoppedEarly).toBe(true);
    expect(result.history).toHaveLength(2);
    expect(result.checkpoint.epoch).toBe(2);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('validationSplit holds out a seeded sample of all samples, not the last ones: class-sorted data validates on every class', async () => {
    // 4 classes × 50 samples, class 0 first. Dense 2 → 4 with a ~1e-6 kernel and a bias favouring class 0
    // answers 0 for every sample, and a learning rate of 1e-9 keeps it so: the accuracies count class-0
    // samples. Held out from the tail (class 3 alone), valMetric would be 0.
    const classes = 4;
    const perClass = 50;
    const samples = classes * perClass;
    const model = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [2], units: classes, activation: 'softmax', name: 'dense' })],
    });
    model.setWeights([
      tf.tensor2d(
        Float32Array.from({ length: 2 * classes }, (_, k) => ((k % 5) - 2) * 1e-6),
        [2, classes],
      ),
      tf.tensor1d([4, 0, 0, 0]),
    ]);
    const labels = Int32Array.from({ length: samples }, (_, i) => Math.floor(i / perClass));
    const x = tf.tensor2d(
      Float32Array.from({ length: 2 * samples }, (_, k) => (k % 2 === 0 ? k / 2 : labels[(k - 1) / 2])),
      [samples, 2],
    );
    const y = tf.tensor1d(labels, 'int32');
    const plan: QatPlan = new Map([['dense/kernel', { params: parseMethodParams({ name: 'affine', bits: 8 }) }]]);
    const shares: number[] = [];
    for (const seed of [3, 4]) {
      const held = heldOutMask(samples, 0.25, seed);
      const heldZeros = labels.reduce((sum, label, i) => sum + (held[i] === 1 && label === 0 ? 1 : 0), 0);
      const heldPerClass = [0, 1, 2, 3].map((c) => labels.filter((label, i) => label === c && held[i] === 1).length);
      console.log(`seed ${seed}: held out per class ${heldPerClass.join(', ')}`);
      expect(heldPerClass.reduce((a, b) => a + b, 0)).toBe(50);
      for (const count of heldPerClass) {
        expect(count).toBeGreaterThanOrEqual(5);
        expect(count).toBeLessThanOrEqual(25);
      }
      const { history } = await trainQuantizationAware(
        model,
        { x, y },
        { plan, epochs: 2, batchSize: 16, learningRate: 1e-9, validationSplit: 0.25, seed },
      );
      for (const epoch of history) {
        expect(epoch.batches).toBe(Math.ceil(150 / 16));
        expect(epoch.valMetric).toBeCloseTo(heldZeros / 50, 6);
        expect(epoch.metric).toBeCloseTo((perClass - heldZeros) / 150, 6);
      }
      shares.push(history[0].valMetric!);
    }
    // Another seed, other held-out samples: here another share of class 0.
    expect(shares[0]).not.toBe(shares[1]);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('leaks no tensors: finished, cancelled, momentum sgd, clipped STE, validation, batch sources', async () => {
    const { model, x, y } = classifier(13);
    const start = tf.memory().numTensors;
    await trainQuantizationAware(
      model,
      { x, y },
      {
        plan: classifierPlan(),
        epochs: 2,
        batchSize: 8,
        validationSplit: 0.2,
        ste: 'clipped',
        onCheckpoint: () => undefined,
      },
    );
    expect(tf.memory().numTensors).toBe(start);
    await trainQuantizationAware(
      model,
      { x, y },
      {
        plan: classifierPlan(),
        epochs: 2,
        optimizer: 'sgd',
        learningRateDecay: 0.5,
        validationData: { x, y },
      },
    );
    expect(tf.memory().numTensors).toBe(start);
    const controller = new AbortController();
    await expect(
      trainQuantizationAware(
        model,
        { x, y },
        {
          plan: classifierPlan(),
          epochs: 2,
          batchSize: 8,
          signal: controller.signal,
          onBatch: () => controller.abort(),
        },
      ),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(tf.memory().numTensors).toBe(start);
    // A stream of batches the caller owns: the trainer neither keeps nor disposes them.
    const batches = [0, 20].map((at) => ({ x: x.slice(at, 20), y: y.slice(at, 20) }));
    const owned = tf.memory().numTensors;
    await trainQuantizationAware(model, batches, { plan: classifierPlan(), epochs: 2 });
    expect(tf.memory().numTensors).toBe(owned);
    tf.dispose(batches.flatMap((b) => [b.x, b.y]));
    expect(tf.memory().numTensors).toBe(start);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('rejects a plan naming a weight the model does not have', async () => {
    const { model, x, y } = classifier(17);
    await expect(
      trainQuantizationAware(model, { x, y }, { plan: new Map([['nope/kernel', { params: BINARY }]]), epochs: 1 }),
    ).rejects.toThrow(/nope\/kernel/);
    tf.dispose([x, y]);
    model.dispose();
  });
});

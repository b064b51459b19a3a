import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { FakeQuant } from '../../src/quant/fake-quant-layer.js';
import {
  ActivationObserver,
  activationLayers,
  affineRange,
  calibrateActivations,
  entropyThreshold,
  rangeFromObserver,
  withFakeQuantActivations,
  type ActivationRange,
} from '../../src/quant/activations.js';
import type { Batch } from '../../src/quant/evaluate.js';

/** A functional model: relu(x·I) → Dense(identity) → Add(with the relu) → Dropout → Dense(softmax). */
function residualModel(width: number): tf.LayersModel {
  const input = tf.input({ shape: [width], name: 'features' });
  const identity = () => tf.initializers.identity({});
  const hidden = tf.layers
    .dense({ units: width, activation: 'relu', kernelInitializer: identity(), name: 'hidden' })
    .apply(input);
  const linear = tf.layers.dense({ units: width, kernelInitializer: identity(), name: 'linear' }).apply(hidden);
  const sum = tf.layers.add({ name: 'sum' }).apply([hidden, linear] as tf.SymbolicTensor[]);
  const dropped = tf.layers.dropout({ rate: 0.5, name: 'dropout' }).apply(sum);
  const output = tf.layers
    .dense({ units: 3, activation: 'softmax', name: 'probabilities' })
    .apply(dropped) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output });
}

function* batchesOf(rows: number[][], size: number): Generator<Batch> {
  for (let start = 0; start < rows.length; start += size) {
    const x = tf.tensor2d(rows.slice(start, start + size));
    try {
      yield { x };
    } finally {
      x.dispose();
    }
  }
}

beforeAll(async () => {
  await tf.setBackend('wasm');
});

describe('affineRange', () => {
  it('widens the range to hold 0 and puts it on the affine grid', () => {
    // s = (3 − (−1))/255, z = round(1/s) = round(63.75) = 64.
    expect(affineRange(-1, 3, 8)).toEqual({ min: -1, max: 3, scale: 4 / 255, zeroPoint: 64 });
    // [2, 5] → [0, 5]: s = 5/15, z = 0.
    expect(affineRange(2, 5, 4)).toEqual({ min: 0, max: 5, scale: 1 / 3, zeroPoint: 0 });
    expect(affineRange(-6, -2, 4)).toEqual({ min: -6, max: 0, scale: 0.4, zeroPoint: 15 });
    expect(affineRange(0, 0, 8)).toEqual({ min: 0, max: 0, scale: 1, zeroPoint: 0 });
  });
});

describe('ActivationObserver', () => {
  it('keeps min/max and moves its histogram to a wider range without losing mass', () => {
    const observer = new ActivationObserver();
    observer.observe(Float32Array.from({ length: 1000 }, (_, i) => i / 1000));
    observer.observe([-1, 3]);
    expect([observer.min, observer.max, observer.total, observer.zeros]).toEqual([-1, 3, 1002, 1]);
    expect(observer.counts.reduce((a, b) => a + b, 0)).toBe(1002);
    // After widening to [−1, 3], the 1000 values of [0, 1) lie in the bins of [0, 1): 512 of 2048.
    const inUnit = observer.counts.slice(512, 1024).reduce((a, b) => a + b, 0);
    expect(inUnit).toBe(1000);
    expect(observer.counts[0]).toBe(1);
    expect(observer.counts[2047]).toBe(1);
  });

  it('calibrates minmax, percentile and kl ranges of a ReLU-like output with rare spikes', () => {
    // 10 000 values uniform on [0, 1) and 10 outliers at 50.
    const values = new Float32Array(10_010);
    for (let i = 0; i < 10_000; i++) values[i] = i / 10_000;
    values.fill(50, 10_000);
    const observer = new ActivationObserver();
    observer.observe(values);
    const range = (calibration: ActivationRange['calibration'], bits: number, percentile?: number) =>
      rangeFromObserver('layer', observer, { bits, calibration, percentile });

    expect(range('minmax', 8)).toEqual({
      layer: 'layer',
      bits: 8,
      calibration: 'minmax',
      min: 0,
      max: 50,
      scale: 50 / 255,
      zeroPoint: 0,
    });
    // The 99th percentile of 10 010 values is inside the uniform part: 0.99·10 010/10 000 ≈ 0.991.
    const percentile = range('percentile', 8, 99);
    expect(percentile.min).toBe(0);
    expect(percentile.max).toBeCloseTo(0.991, 1);
    // KL keeps the bulk and drops the spike: with 16 levels the threshold can go down to 16.5 bins of
    // 50/2048, and the bulk ends at 1.
    const kl = range('kl', 4);
    expect(kl.min).toBe(0);
    expect(kl.max).toBeGreaterThan(0.99);
    expect(kl.max).toBeLessThan(1.2);
  });

  it('finds the MSE-optimal clip of a Laplace distribution (Banner et al. 2019, ACIQ: 5.03·b at 4 bits)', () => {
    // 100 000 Laplace(0, b = 1) quantiles: max ≈ ln(100 000) ≈ 11.5, so r = α/max ≈ 0.44 is in the search.
    const n = 100_000;
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = (i + 0.5) / n - 0.5;
      values[i] = -Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
    }
    const observer = new ActivationObserver();
    observer.observe(values);
    const mse = rangeFromObserver('layer', observer, { bits: 4, calibration: 'mse' });
    expect(mse.max).toBeGreaterThan(4.6);
    expect(mse.max).toBeLessThan(5.5);
    expect(mse.min).toBeCloseTo(-mse.max, 6);
  });

  it('keeps a uniform histogram whole and cuts an isolated outlier off a Gaussian one (entropy threshold)', () => {
    // Uniform: every candidate's Q matches P only when nothing is clipped, at i = 2048: T = 2048.5·width.
    expect(entropyThreshold(new Float64Array(2048).fill(10), 0.01, 128)).toBeCloseTo(20.485, 9);
    // Half-normal counts (σ = 200 bins, non-empty up to bin ~1051) and one count at bin 2040.
    const counts = Float64Array.from({ length: 2048 }, (_, b) => Math.round(1e6 * Math.exp(-((b / 200) ** 2) / 2)));
    counts[2040] = 1;
    const threshold = entropyThreshold(counts, 0.01, 128);
    expect(threshold).toBeGreaterThan(3);
    expect(threshold).toBeLessThan(10.6);
  });
});

describe('calibrateActivations and withFakeQuantActivations', () => {
  it('picks the layers an integer runtime quantizes', () => {
    const model = residualModel(4);
    expect(activationLayers(model).map((layer) => layer.name)).toEqual(['hidden', 'linear', 'sum']);
    model.dispose();
  });

  it('collects minmax ranges per layer output, streamed, with no tensor left behind', async () => {
    const model = residualModel(4);
    const rows = [
      [1, -2, 0.5, 3],
      [-1, 2, 4, 0],
      [0.25, 0, -3, 1],
    ];
    const before = tf.memory().numTensors;
    const ranges = await calibrateActivations(model, batchesOf(rows, 2), { bits: 8, calibration: 'minmax' });
    expect(tf.memory().numTensors).toBe(before);
    // hidden = relu(x) ∈ [0, 4]; linear = hidden; sum = 2·hidden ∈ [0, 8].
    expect(ranges).toEqual([
      { layer: 'hidden', bits: 8, calibration: 'minmax', min: 0, max: 4, scale: 4 / 255, zeroPoint: 0 },
      { layer: 'linear', bits: 8, calibration: 'minmax', min: 0, max: 4, scale: 4 / 255, zeroPoint: 0 },
      { layer: 'sum', bits: 8, calibration: 'minmax', min: 0, max: 8, scale: 8 / 255, zeroPoint: 0 },
    ]);
    model.dispose();
  });

  it('fake-quantises each named output with q = clamp(round(x/s) + z), x̂ = s(q − z)', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [4], units: 4, useBias: false, kernelInitializer: 'identity', name: 'linear' }),
      ],
    });
    // s = 0.1, z = 10, 4 bits (q ∈ [0, 15]): the grid is [−1.0, 0.5] in steps of 0.1.
    const range: ActivationRange = {
      layer: 'linear',
      bits: 4,
      calibration: 'minmax',
      min: -1,
      max: 0.5,
      scale: 0.1,
      zeroPoint: 10,
    };
    const simulated = await withFakeQuantActivations(model, [range]);
    expect(simulated.layers.map((layer) => layer.getClassName())).toEqual(['Dense', 'FakeQuant']);
    const x = tf.tensor2d([[0.26, -2, 1, -0.04]]);
    const y = simulated.predict(x) as tf.Tensor;
    // 0.26 → round(2.6) + 10 = 13 → 0.3; −2 → −20 + 10 → clamp 0 → −1.0; 1 → 20 → clamp 15 → 0.5; −0.04 → 0.
    const values = Array.from(await y.data());
    [0.3, -1, 0.5, 0].forEach((expected, i) => expect(values[i]).toBeCloseTo(expected, 6));
    tf.dispose([x, y]);
    simulated.dispose();
    model.dispose();
  });

  it('rewires a functional model so consumers and outputs read the fake-quantised tensors, weights copied', async () => {
    const model = residualModel(4);
    const ranges = await calibrateActivations(model, batchesOf([[1, 2.2, 3, 4]], 1), {
      bits: 2,
      calibration: 'minmax',
    });
    const simulated = await withFakeQuantActivations(model, ranges);
    expect(simulated.layers.map((layer) => layer.name)).toEqual([
      'features',
      'hidden',
      'hidden_fake_quant',
      'linear',
      'linear_fake_quant',
      'sum',
      'sum_fake_quant',
      'dropout',
      'probabilities',
    ]);
    expect(simulated.getLayer('sum_fake_quant')).toBeInstanceOf(FakeQuant);
    const [kernel] = simulated.getLayer('probabilities').getWeights();
    const [original] = model.getLayer('probabilities').getWeights();
    expect(Array.from(await kernel.data())).toEqual(Array.from(await original.data()));
    // 2 bits over [0, 4]: s = 4/3. hidden = [1, 2.2, 3, 4] → q [1, 2, 2, 3] → [4/3, 8/3, 8/3, 4]; linear
    // sees grid values and keeps them; sum = their double, on the sum's grid (s = 8/3): exact.
    const probe = tf.model({
      inputs: simulated.inputs,
      outputs: simulated.getLayer('sum_fake_quant').output as tf.SymbolicTensor,
    });
    const x = tf.tensor2d([[1, 2.2, 3, 4]]);
    const sum = probe.predict(x) as tf.Tensor;
    const values = Array.from(await sum.data());
    [8 / 3, 16 / 3, 16 / 3, 8].forEach((expected, i) => expect(values[i]).toBeCloseTo(expected, 5));
    tf.dispose([x, sum]);
    simulated.dispose();
    model.dispose();
  });

  it('rejects a range for a layer the model does not have', async () => {
    const model = residualModel(2);
    const range: ActivationRange = {
      layer: 'nope',
      bits: 8,
      calibration: 'minmax',
      min: 0,
      max: 1,
      scale: 1 / 255,
      zeroPoint: 0,
    };
    await expect(withFakeQuantActivations(model, [range])).rejects.toThrow(/nope/);
    model.dispose();
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { Value } from '@sinclair/typebox/value';
import { beforeAll, describe, expect, it } from 'vitest';
import { AffineParams, affine, affineGrid, selectKth } from '../../../src/quant/methods/affine.js';
import { createRng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';
import { expectConsistent, expectSameValues, randomTensor } from './uniform-checks.js';

const W = new Float32Array([0.5, -1, 0.25, -0.75]);

function params(overrides: Partial<AffineParams> = {}): AffineParams {
  return Value.Default(AffineParams, { name: 'affine', ...overrides }) as AffineParams;
}

function run(weights: Float32Array, shape: number[], overrides: Partial<AffineParams> = {}, seed = 0): QuantizedTensor {
  return affine.quantize(weights, shape, params(overrides), createRng(seed));
}

function scalesOf(result: QuantizedTensor): Float32Array {
  if (result.encoding.kind !== 'affine') throw new Error('expected an affine encoding');
  return result.encoding.scales;
}

function squaredError(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  return sum;
}

describe('affine params', () => {
  it('fills defaults and rejects what is out of range', () => {
    expect(params()).toEqual({
      name: 'affine',
      bits: 8,
      symmetric: false,
      granularity: 'per-tensor',
      rounding: 'nearest',
      range: 'minmax',
      percentile: 99.99,
      seed: 0,
    });
    expect(Value.Check(AffineParams, params({ bits: 16 }))).toBe(true);
    expect(Value.Check(AffineParams, { ...params(), bits: 17 })).toBe(false);
    expect(Value.Check(AffineParams, { ...params(), bits: 1 })).toBe(false);
    expect(Value.Check(AffineParams, { ...params(), percentile: 50 })).toBe(false);
    expect(Value.Check(AffineParams, { ...params(), range: 'kl' })).toBe(false);
    expect(Value.Check(AffineParams, { ...params(), extra: 1 })).toBe(false);
  });
});

describe('affine on hand-worked examples', () => {
  it('asymmetric 2-bit: s = 1.5/3 = 0.5, z = round(1/0.5) = 2', () => {
    const result = run(W, [4], { bits: 2 });
    // q = round(w/s) + z, round half up: 0.5→3, −1→0, 0.25 (w/s = 0.5)→3, −0.75 (w/s = −1.5)→1.
    expect(Array.from(result.codes)).toEqual([3, 0, 3, 1]);
    expect(Array.from(result.dequantized)).toEqual([0.5, -1, 0.5, -0.5]);
    expect(result.encoding).toEqual({
      kind: 'affine',
      bits: 2,
      channels: 1,
      scales: new Float32Array([0.5]),
      mins: new Float32Array([-1]),
    });
    expect(result.tfjsEncoding).toEqual({ dtype: 'uint8', min: -1, scale: 0.5 });
    expect(result.bitsPerWeight).toBe(2 + 64 / 4);
  });

  it('symmetric 3-bit: s = max|w|/3, codes q + 4', () => {
    const result = run(new Float32Array([0.6, -1, 0.2, -0.45]), [4], { bits: 3, symmetric: true });
    const s = Math.fround(1 / 3);
    // w/s = 1.8, −3, 0.6, −1.35 → q = 2, −3, 1, −1
    expect(Array.from(result.codes)).toEqual([6, 1, 5, 3]);
    expect(Array.from(result.dequantized)).toEqual([2, -3, 1, -1].map((q) => Math.fround(q * s)));
    expect(scalesOf(result)[0]).toBe(s);
    expect(result.tfjsEncoding).toEqual({ dtype: 'uint8', min: Math.fround(-4 * s), scale: s });
  });

  it('8-bit asymmetric with an awkward zero point keeps zero exact and the error within s/2', () => {
    const weights = new Float32Array([-0.2, 0, 0.8, 0.3, 0.123, -0.05]);
    const result = run(weights, [6]);
    const s = scalesOf(result)[0];
    expect(s).toBeGreaterThanOrEqual(Math.fround(1 / 255));
    expect(s / (1 / 255) - 1).toBeLessThan(2 ** -16);
    expect(result.dequantized[1]).toBe(0);
    for (let i = 0; i < weights.length; i++)
      expect(Math.abs(weights[i] - result.dequantized[i])).toBeLessThanOrEqual(s / 2 + 1e-9);
    expectConsistent(result, [6]);
  });

  it('uses 16-bit codes and a uint16 manifest above 8 bits', () => {
    const result = run(W, [2, 2], { bits: 12 });
    expect(result.codes).toBeInstanceOf(Uint16Array);
    expect(result.tfjsEncoding?.dtype).toBe('uint16');
    expect(Math.max(...result.codes)).toBe(4095);
    expectConsistent(result, [2, 2]);
  });

  it('does not divide by zero on constant and all-zero tensors', () => {
    for (const symmetric of [false, true]) {
      const zeros = run(new Float32Array(6), [2, 3], { symmetric, granularity: 'per-channel' });
      expect(Array.from(zeros.dequantized)).toEqual([0, 0, 0, 0, 0, 0]);
      expectConsistent(zeros, [2, 3]);
      for (const value of [3, -3]) {
        const constant = run(new Float32Array(5).fill(value), [5], { symmetric });
        const s = scalesOf(constant)[0];
        expect(Number.isFinite(s) && s > 0).toBe(true);
        for (const v of constant.dequantized) expect(Math.abs(v - value)).toBeLessThanOrEqual(s / 2);
        expectConsistent(constant, [5]);
      }
    }
  });

  it('rejects a shape that does not match the values', () => {
    expect(() => run(W, [3])).toThrow(/4 values for shape \[3\]/);
  });
});

describe('affine ranges', () => {
  it('percentile clips at the nearest-rank percentile of |w| (symmetric) or of both tails', () => {
    const ramp = Float32Array.from({ length: 1000 }, (_, i) => i + 1);
    // 99th percentile of 1..1000: the 990th smallest value.
    expect(scalesOf(run(ramp, [1000], { symmetric: true, range: 'percentile', percentile: 99 }))[0]).toBe(
      Math.fround(990 / 127),
    );
    const centred = Float32Array.from({ length: 1000 }, (_, i) => i - 500);
    const result = run(centred, [1000], { range: 'percentile', percentile: 99 });
    // Upper: the 990th smallest = 489; lower: the 11th smallest = −490.
    const s = scalesOf(result)[0];
    expect(s).toBeGreaterThanOrEqual(Math.fround(979 / 255));
    expect(s / (979 / 255) - 1).toBeLessThan(2 ** -15);
    expect(Math.max(...result.dequantized)).toBeLessThanOrEqual(489 + s / 2);
    expect(Math.min(...result.dequantized)).toBeGreaterThanOrEqual(-490 - s / 2);
    expectConsistent(result, [1000]);
  });

  it('percentile 100 is minmax', () => {
    const weights = randomTensor(createRng(4), 300);
    const p100 = run(weights, [30, 10], { range: 'percentile', percentile: 100, granularity: 'per-channel' });
    const minmax = run(weights, [30, 10], { granularity: 'per-channel' });
    expect(p100.encoding).toEqual(minmax.encoding);
  });

  it('selectKth agrees with sorting, duplicates included', () => {
    const rng = createRng(5);
    for (let trial = 0; trial < 20; trial++) {
      const values = Float32Array.from({ length: 1 + rng.int(200) }, () => rng.int(30) - 10);
      const sorted = Float32Array.from(values).sort();
      const k = rng.int(values.length);
      expect(selectKth(values, k)).toBe(sorted[k]);
    }
  });

  it('mse never does worse than minmax when the sample is the whole tensor, and clips outliers', () => {
    const rng = createRng(6);
    for (const symmetric of [false, true]) {
      const weights = randomTensor(rng, 4000);
      weights[123] = 12; // one outlier stretches the minmax range
      const minmax = run(weights, [4000], { bits: 4, symmetric });
      const mse = run(weights, [4000], { bits: 4, symmetric, range: 'mse' });
      expect(scalesOf(mse)[0]).toBeLessThan(scalesOf(minmax)[0] / 2);
      // Clipping the outlier itself costs about (12 − clip)², so the total cannot drop much further.
      expect(squaredError(weights, mse.dequantized)).toBeLessThan(squaredError(weights, minmax.dequantized) / 2);
      expectConsistent(mse, [4000]);
      const random = randomTensor(rng, 500);
      expect(
        squaredError(random, run(random, [500], { bits: 3, symmetric, range: 'mse' }).dequantized),
      ).toBeLessThanOrEqual(squaredError(random, run(random, [500], { bits: 3, symmetric }).dequantized));
    }
  });

  it('mse on a subsample (per channel) is seeded and still beats minmax on heavy tails', () => {
    const rng = createRng(8);
    const shape = [2048, 256];
    const weights = randomTensor(rng, 2048 * 256);
    for (let c = 0; c < 256; c++) weights[rng.int(2048) * 256 + c] = 8 * (rng.next() < 0.5 ? -1 : 1);
    const mse = run(weights, shape, { bits: 4, granularity: 'per-channel', range: 'mse' }, 11);
    const again = run(weights, shape, { bits: 4, granularity: 'per-channel', range: 'mse' }, 11);
    expect(again.encoding).toEqual(mse.encoding);
    const minmax = run(weights, shape, { bits: 4, granularity: 'per-channel' });
    expect(squaredError(weights, mse.dequantized)).toBeLessThan(squaredError(weights, minmax.dequantized) * 0.75);
    expectConsistent(mse, shape);
  });
});

describe('affine properties on random tensors', () => {
  const rng = createRng(1);
  const cases = [
    { shape: [64, 16], bits: 8 },
    { shape: [3, 3, 4, 8], bits: 4 },
    { shape: [257], bits: 2 },
    { shape: [40, 7], bits: 16 },
    { shape: [31, 5], bits: 11 },
  ];
  for (const { shape, bits } of cases) {
    for (const symmetric of [false, true]) {
      for (const granularity of ['per-tensor', 'per-channel'] as const) {
        it(`${bits} bits, ${symmetric ? 'symmetric' : 'asymmetric'}, ${granularity}, shape [${shape}]`, () => {
          const size = shape.reduce((a, b) => a * b, 1);
          const weights = randomTensor(rng, size, 10 ** (rng.next() * 4 - 2));
          const result = run(weights, shape, { bits, symmetric, granularity });
          expectConsistent(result, shape);
          const channels = granularity === 'per-channel' ? shape[shape.length - 1] : 1;
          const scales = scalesOf(result);
          expect(scales.length).toBe(channels);
          expect(result.bitsPerWeight).toBeCloseTo(bits + (64 * channels) / size, 12);
          expect(result.tfjsEncoding === undefined).toBe(channels > 1);
          for (let i = 0; i < size; i++) {
            const s = scales[i % channels];
            const error = Math.abs(weights[i] - result.dequantized[i]);
            if (error > s / 2 + Math.abs(result.dequantized[i]) * 2 ** -24) {
              expect({ i, error }).toEqual({ i, error: s / 2 });
            }
            if (weights[i] === 0) expect(result.dequantized[i]).toBe(0);
          }
        });
      }
    }
  }

  it('zero decodes to exactly 0 at every width', () => {
    for (let bits = 2; bits <= 16; bits++) {
      for (const symmetric of [false, true]) {
        for (let trial = 0; trial < 20; trial++) {
          const lo = -rng.next() * 10 ** (rng.next() * 6 - 3);
          const hi = rng.next() * 10 ** (rng.next() * 6 - 3);
          const grid = affineGrid(lo, hi, bits, symmetric);
          expect(Math.fround(grid.zeroPoint * grid.scale + grid.min)).toBe(0);
          expect(grid.scale * (grid.maxCode - grid.zeroPoint)).toBeGreaterThanOrEqual(
            symmetric ? hi * (1 - 2 ** -23) : hi - grid.scale / 2,
          );
        }
      }
    }
  });

  it('per-channel quantizes each column of the last axis like a tensor of its own', () => {
    const shape = [6, 2, 3];
    const weights = randomTensor(rng, 36);
    for (let i = 0; i < 36; i++) weights[i] *= [1, 10, 100][i % 3];
    for (const symmetric of [false, true]) {
      const result = run(weights, shape, { bits: 5, symmetric, granularity: 'per-channel' });
      for (let c = 0; c < 3; c++) {
        const column = weights.filter((_, i) => i % 3 === c);
        const alone = run(column, [12], { bits: 5, symmetric });
        expect(scalesOf(result)[c]).toBe(scalesOf(alone)[0]);
        expectSameValues(
          result.dequantized.filter((_, i) => i % 3 === c),
          alone.dequantized,
        );
      }
    }
  });
});

describe('affine stochastic rounding', () => {
  it('is unbiased: the mean of stochastic codes of a value between levels is the value', () => {
    // Range [0, 1] at 2 bits: s = 1/3, and 0.3 lies 0.9 of the way from level 0 to level 1.
    const weights = new Float32Array(20001).fill(0.3);
    weights[0] = 1;
    const result = run(weights, [20001], { bits: 2, rounding: 'stochastic' }, 9);
    const step = Math.fround(1 / 3);
    let sum = 0;
    let offGrid = 0;
    for (let i = 1; i < weights.length; i++) {
      if (result.dequantized[i] !== 0 && result.dequantized[i] !== step) offGrid++;
      sum += result.dequantized[i];
    }
    expect(offGrid).toBe(0);
    expect(Math.abs(sum / 20000 - 0.3)).toBeLessThan(0.005);
    expectConsistent(result, [20001]);
  });

  it('is unbiased per channel over many seeds, stays within one step, and is reproducible', () => {
    // Symmetric, so each channel's grid reaches ±max|w| and nothing is clipped. (An asymmetric grid's
    // rounded zero point can leave up to s/2 of the range outside the grid, where rounding clips.)
    const weights = new Float32Array([0.7, -2, 0.05, 3, -0.7, 1.3, -0.04, -3]);
    const shape = [2, 4];
    const sums = new Float64Array(8);
    const runs = 3000;
    for (let seed = 0; seed < runs; seed++) {
      const result = run(
        weights,
        shape,
        { bits: 3, symmetric: true, granularity: 'per-channel', rounding: 'stochastic', seed },
        seed,
      );
      const scales = scalesOf(result);
      for (let i = 0; i < 8; i++) {
        expect(Math.abs(result.dequantized[i] - weights[i])).toBeLessThan(scales[i % 4] * (1 + 1e-6));
        sums[i] += result.dequantized[i];
      }
    }
    for (let i = 0; i < 8; i++) expect(Math.abs(sums[i] / runs - weights[i])).toBeLessThan(0.02);
    const first = run(weights, shape, { rounding: 'stochastic', bits: 3 }, 42);
    expect(run(weights, shape, { rounding: 'stochastic', bits: 3 }, 42).codes).toEqual(first.codes);
    const big = randomTensor(createRng(2), 1000);
    expect(run(big, [1000], { rounding: 'stochastic', bits: 3 }, 1).codes).not.toEqual(
      run(big, [1000], { rounding: 'stochastic', bits: 3 }, 2).codes,
    );
  });
});

describe('affine through tfjs manifest decoding', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('tf.io.decodeWeights of uint8 and uint16 codes gives exactly the dequantized values', () => {
    const rng = createRng(10);
    for (const bits of [8, 16, 5]) {
      const weights = randomTensor(rng, 3000, 0.37);
      const result = run(weights, [3000], { bits });
      const tfjs = result.tfjsEncoding;
      if (!tfjs || tfjs.dtype === 'float16') throw new Error('expected a uint manifest encoding');
      const decoded = tf.io.decodeWeights(result.codes.slice().buffer, [
        {
          name: 'w',
          shape: [3000],
          dtype: 'float32',
          quantization: { dtype: tfjs.dtype, min: tfjs.min, scale: tfjs.scale },
        },
      ]);
      expectSameValues(decoded.w.dataSync(), result.dequantized);
      decoded.w.dispose();
    }
  });
});

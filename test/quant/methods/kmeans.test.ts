import { describe, expect, it } from 'vitest';
import { kmeans, type KmeansParams } from '../../../src/quant/methods/kmeans.js';
import { decodeTensor } from '../../../src/quant/packed/decode-tensor.js';
import { createRng } from '../../../src/quant/rng.js';
import { normalValues } from './uniform-checks.js';

const inits = ['linear', 'density', 'kmeans++'] as const;

function params(overrides: Partial<KmeansParams> = {}): KmeansParams {
  return { name: 'kmeans', bits: 4, init: 'linear', maxIterations: 50, seed: 0, ...overrides };
}

function run(weights: Float32Array, overrides: Partial<KmeansParams> = {}, shape = [weights.length]) {
  const p = params(overrides);
  return kmeans.quantize(weights, shape, p, createRng(p.seed));
}

function sumSquaredError(a: Float32Array, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  return sum;
}

/** Σ min_j (w − c_j)²: the objective of a codebook with nearest assignment. */
function objective(weights: Float32Array, centroids: number[]): number {
  let sum = 0;
  for (const w of weights) {
    let best = Infinity;
    for (const c of centroids) best = Math.min(best, (w - c) ** 2);
    sum += best;
  }
  return sum;
}

/** Index of the first element where a and b differ (Object.is), or -1; cheaper than toEqual on big arrays. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

describe('kmeans', () => {
  it.each(inits)('splits [0, 0.1, 0.9, 1] into {0, 0.1} and {0.9, 1} with 1 bit (init %s)', (init) => {
    const weights = new Float32Array([0, 0.1, 0.9, 1]);
    const result = run(weights, { bits: 1, init });
    expect(Array.from(result.codes)).toEqual([0, 0, 1, 1]);
    expect(result.encoding).toEqual({
      kind: 'codebook',
      bits: 1,
      channels: 1,
      codebook: new Float32Array([(0 + weights[1]) / 2, (weights[2] + 1) / 2]),
    });
    expect(result.encoding.kind === 'codebook' && result.encoding.codebook[0]).toBeCloseTo(0.05, 7);
    expect(result.encoding.kind === 'codebook' && result.encoding.codebook[1]).toBeCloseTo(0.95, 7);
    expect(result.bitsPerWeight).toBe(1 + (32 * 2) / 4);
  });

  // 400 weights take the exact path (sorted values), 80 000 the histogram path.
  it.each([
    [400, 'linear'],
    [400, 'density'],
    [400, 'kmeans++'],
    [80_000, 'linear'],
    [80_000, 'density'],
    [80_000, 'kmeans++'],
  ] as const)('finds the exact means of 4 separated clusters (%i weights, init %s)', (size, init) => {
    const centers = [-3, -1, 2, 5];
    const rng = createRng(7);
    const weights = new Float32Array(size);
    for (let i = 0; i < size; i++) weights[i] = centers[i % 4] + (rng.next() - 0.5) * 0.2;
    const sums = [0, 0, 0, 0];
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < size; i++) {
      sums[i % 4] += weights[i];
      counts[i % 4]++;
    }
    const result = run(weights, { bits: 2, init, seed: 3 });
    const codebook = result.encoding.kind === 'codebook' ? result.encoding.codebook : new Float32Array();
    expect(Array.from(codebook)).toEqual(sums.map((s, j) => Math.fround(s / counts[j])));
    expect(
      firstDifference(
        result.codes,
        Uint8Array.from({ length: size }, (_, i) => i % 4),
      ),
    ).toBe(-1);
  });

  it('keeps every value when there are fewer distinct values than centroids, padding with the last', () => {
    const weights = new Float32Array([2, 1, 3, 1, 2]);
    const result = run(weights, { bits: 3 });
    expect(result.encoding.kind === 'codebook' && Array.from(result.encoding.codebook)).toEqual([
      1, 2, 3, 3, 3, 3, 3, 3,
    ]);
    expect(Array.from(result.codes)).toEqual([1, 0, 2, 0, 1]);
    expect(result.dequantized).toEqual(weights);
  });

  it('handles a constant tensor and an empty one', () => {
    const constant = run(new Float32Array(100_000).fill(-0.25), { bits: 2 });
    expect(constant.dequantized.every((v) => v === -0.25)).toBe(true);
    expect(Array.from(constant.encoding.kind === 'codebook' ? constant.encoding.codebook : [])).toEqual([
      -0.25, -0.25, -0.25, -0.25,
    ]);
    const empty = run(new Float32Array(0), { bits: 2 }, [0, 3]);
    expect(empty.codes.length).toBe(0);
    expect(empty.dequantized.length).toBe(0);
  });

  it('rejects NaN or infinite weights and a size that does not match the shape', () => {
    expect(() => run(new Float32Array([0, NaN, 1]))).toThrow(/finite/);
    expect(() => run(new Float32Array([0, Infinity, 1]))).toThrow(/finite/);
    expect(() => run(new Float32Array([0, 1, 2]), {}, [2, 2])).toThrow(/shape/);
  });

  it.each([
    [3000, 1],
    [3000, 4],
    [3000, 8],
    [80_000, 3],
    [80_000, 8],
  ])('on %i normal weights with %i bits: decodes bit-exactly, codes < 2^bits, Lloyd lowers the error', (size, bits) => {
    const weights = normalValues(size, size + bits);
    const shape = [size / 100, 100];
    let min = Infinity;
    let max = -Infinity;
    for (const w of weights) {
      min = Math.min(min, w);
      max = Math.max(max, w);
    }
    const levels = 2 ** bits;
    const linear = Array.from({ length: levels }, (_, j) => min + ((max - min) * j) / (levels - 1));
    const linearInitError = objective(weights, linear);
    for (const init of inits) {
      const result = run(weights, { bits, init }, shape);
      expect(firstDifference(result.dequantized, decodeTensor(result.encoding, result.codes, shape))).toBe(-1);
      expect(result.codes).toBeInstanceOf(Uint8Array);
      expect(result.codes.every((code) => code < levels)).toBe(true);
      expect(result.bitsPerWeight).toBeCloseTo(bits + (32 * levels) / size, 12);
      const error = sumSquaredError(weights, result.dequantized);
      const oneStep = run(weights, { bits, init, maxIterations: 1 }, shape);
      expect(error).toBeLessThanOrEqual(sumSquaredError(weights, oneStep.dequantized));
      // Density init crowds the centre and starves the tails (Han et al. prefer linear for that reason).
      if (init !== 'density') expect(error).toBeLessThanOrEqual(linearInitError);
    }
  });

  it('on the histogram path ends at (nearly) a fixed point of exact Lloyd', () => {
    const weights = normalValues(80_000, 11);
    const result = run(weights, { bits: 4, maxIterations: 2000 });
    const codebook = result.encoding.kind === 'codebook' ? result.encoding.codebook : new Float32Array();
    const sums = new Float64Array(16);
    const counts = new Float64Array(16);
    for (const w of weights) {
      let best = 0;
      for (let j = 1; j < 16; j++) if (Math.abs(w - codebook[j]) < Math.abs(w - codebook[best])) best = j;
      sums[best] += w;
      counts[best]++;
    }
    for (let j = 0; j < 16; j++) expect(Math.abs(sums[j] / counts[j] - codebook[j])).toBeLessThan(2e-3);
    // Sorted codebook: 1-D k-means clusters are intervals.
    for (let j = 1; j < 16; j++) expect(codebook[j]).toBeGreaterThan(codebook[j - 1]);
  });

  it('is reproducible with the same seed', () => {
    const weights = normalValues(5000, 5);
    const a = run(weights, { bits: 5, init: 'kmeans++', seed: 42 });
    const b = run(weights, { bits: 5, init: 'kmeans++', seed: 42 });
    expect(b.codes).toEqual(a.codes);
    expect(b.encoding).toEqual(a.encoding);
  });

  it('has a params schema with a default on every field', () => {
    for (const schema of Object.values(kmeans.params.properties)) expect(schema).toHaveProperty('default');
    expect(kmeans.params.additionalProperties).toBe(false);
  });
});

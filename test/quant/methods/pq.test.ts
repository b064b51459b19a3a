import { describe, expect, it } from 'vitest';
import { pq, type PqParams } from '../../../src/quant/methods/pq.js';
import { decodeTensor } from '../../../src/quant/packed/decode-tensor.js';
import { createRng } from '../../../src/quant/rng.js';
import { normalValues } from './uniform-checks.js';

function params(overrides: Partial<PqParams> = {}): PqParams {
  return {
    name: 'pq',
    bits: 8,
    subvectorLength: 4,
    maxIterations: 25,
    codebooks: 'per-block',
    trainingSample: 65536,
    seed: 0,
    ...overrides,
  };
}

function run(weights: Float32Array, shape: number[], overrides: Partial<PqParams> = {}) {
  const p = params(overrides);
  return pq.quantize(weights, shape, p, createRng(p.seed));
}

function codebookOf(result: ReturnType<typeof run>): Float32Array {
  if (result.encoding.kind !== 'pq') throw new Error('expected a pq encoding');
  return result.encoding.codebook;
}

function sumSquaredError(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] - b[i]) ** 2;
  return sum;
}

describe('pq', () => {
  it('lays out a [4, 2] kernel with d = 2 as 2 sub-spaces whose sub-vectors are the columns', () => {
    // rows: [1, 2], [3, 4], [5, 6], [7, 8]; block 0 = rows 0–1, block 1 = rows 2–3.
    const weights = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const result = run(weights, [4, 2], { bits: 1, subvectorLength: 2 });
    expect(result.encoding).toEqual({
      kind: 'pq',
      bits: 1,
      subvectorLength: 2,
      subspaces: 2,
      // [subspace][centroid][d]: (1,3) (2,4) | (5,7) (6,8)
      codebook: new Float32Array([1, 3, 2, 4, 5, 7, 6, 8]),
    });
    expect(Array.from(result.codes)).toEqual([0, 1, 0, 1]);
    expect(result.dequantized).toEqual(weights);
    // 4 codes · 1 bit + 8 floats · 32 bits over 8 weights.
    expect(result.bitsPerWeight).toBe((4 * 1 + 8 * 32) / 8);
  });

  it('clusters the columns of a [2, 4] kernel into two pairs with their exact means', () => {
    // columns (sub-vectors): (0, 0), (0, 0.2), (1, 1), (1, 1.2)
    const weights = new Float32Array([0, 0, 1, 1, 0, 0.2, 1, 1.2]);
    for (let seed = 0; seed < 8; seed++) {
      const result = run(weights, [2, 4], { bits: 1, subvectorLength: 2, seed });
      const codes = Array.from(result.codes);
      expect(codes[0]).toBe(codes[1]);
      expect(codes[2]).toBe(codes[3]);
      expect(codes[0]).not.toBe(codes[2]);
      const codebook = codebookOf(result);
      const low = Array.from(codebook.subarray(codes[0] * 2, codes[0] * 2 + 2));
      const high = Array.from(codebook.subarray(codes[2] * 2, codes[2] * 2 + 2));
      expect(low).toEqual([0, Math.fround(weights[5] / 2)]);
      expect(high).toEqual([1, Math.fround((1 + weights[7]) / 2)]);
    }
  });

  it('ignores the missing rows of a short last block', () => {
    // [5, 3] with d = 2: blocks of rows {0,1}, {2,3}, {4}.
    const weights = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100, 101, 300]);
    const result = run(weights, [5, 3], { bits: 1, subvectorLength: 2 });
    expect(result.encoding.kind === 'pq' && result.encoding.subspaces).toBe(3);
    const codebook = codebookOf(result);
    expect(codebook.length).toBe(3 * 2 * 2);
    // Last block: scalars 100, 101, 300 → centroids {100.5} and {300}; the unused second row stays 0.
    const last = codebook.subarray(8);
    const codes = Array.from(result.codes.subarray(6));
    expect(codes[0]).toBe(codes[1]);
    expect(Array.from(last.subarray(codes[0] * 2, codes[0] * 2 + 2))).toEqual([100.5, 0]);
    expect(Array.from(last.subarray(codes[2] * 2, codes[2] * 2 + 2))).toEqual([300, 0]);
    expect(Array.from(result.dequantized.subarray(12))).toEqual([100.5, 100.5, 300]);
    expect(result.dequantized).toEqual(decodeTensor(result.encoding, result.codes, [5, 3]));
  });

  it('reconstructs exactly when each sub-space has at most 2^bits distinct sub-vectors', () => {
    const rows = 6;
    const columns = 64;
    const rng = createRng(9);
    const weights = new Float32Array(rows * columns);
    for (let block = 0; block < 2; block++) {
      const patterns = Array.from({ length: 4 }, () => [rng.next(), rng.next(), rng.next()]);
      for (let c = 0; c < columns; c++) {
        const pattern = patterns[rng.int(4)];
        for (let o = 0; o < 3; o++) weights[(block * 3 + o) * columns + c] = pattern[o];
      }
    }
    for (const seed of [0, 1, 2]) {
      const result = run(weights, [rows, columns], { bits: 2, subvectorLength: 3, seed });
      expect(result.dequantized).toEqual(weights);
    }
  });

  it('treats a rank-1 tensor as one column: every sub-vector is its own centroid', () => {
    const weights = normalValues(10, 3);
    const result = run(weights, [10], { bits: 2, subvectorLength: 4 });
    expect(result.dequantized).toEqual(weights);
    expect(result.encoding.kind === 'pq' && result.encoding.subspaces).toBe(3);
    expect(Array.from(result.codes)).toEqual([0, 0, 0]);
    expect(result.bitsPerWeight).toBe((3 * 2 + 3 * 4 * 4 * 32) / 10);
  });

  it.each([
    [64, 96, 4, 3],
    [40, 300, 6, 4],
    [33, 200, 10, 2],
  ])(
    'on a normal [%i, %i] tensor with %i bits, d = %i: decodes bit-exactly, Lloyd lowers the error',
    (rows, columns, bits, d) => {
      const weights = normalValues(rows * columns, rows + columns);
      const shape = [rows, columns];
      const result = run(weights, shape, { bits, subvectorLength: d });
      expect(result.dequantized).toEqual(decodeTensor(result.encoding, result.codes, shape));
      expect(result.codes).toBeInstanceOf(bits <= 8 ? Uint8Array : Uint16Array);
      expect(result.codes.every((code) => code < 2 ** bits)).toBe(true);
      const subspaces = Math.ceil(rows / d);
      expect(result.codes.length).toBe(subspaces * columns);
      expect(result.bitsPerWeight).toBe(
        (subspaces * columns * bits + subspaces * 2 ** bits * d * 32) / (rows * columns),
      );
      const error = sumSquaredError(weights, result.dequantized);
      if (columns <= 2 ** bits) expect(error).toBe(0);
      else {
        const oneStep = run(weights, shape, { bits, subvectorLength: d, maxIterations: 1 });
        expect(error).toBeLessThan(sumSquaredError(weights, oneStep.dequantized));
      }
    },
  );

  it('assigns every sub-vector to its nearest centroid once converged', () => {
    const rows = 16;
    const columns = 120;
    const weights = normalValues(rows * columns, 4);
    const result = run(weights, [rows, columns], { bits: 4, subvectorLength: 4, maxIterations: 500 });
    const codebook = codebookOf(result);
    for (let block = 0; block < 4; block++) {
      for (let c = 0; c < columns; c++) {
        const distances = Array.from({ length: 16 }, (_, k) => {
          let sum = 0;
          for (let o = 0; o < 4; o++)
            sum += (weights[(block * 4 + o) * columns + c] - codebook[(block * 16 + k) * 4 + o]) ** 2;
          return sum;
        });
        expect(distances[result.codes[block * columns + c]]).toBeLessThanOrEqual(Math.min(...distances) + 1e-9);
      }
    }
  });

  it('is reproducible with the same seed', () => {
    const weights = normalValues(32 * 80, 8);
    const a = run(weights, [32, 80], { bits: 5, seed: 17 });
    const b = run(weights, [32, 80], { bits: 5, seed: 17 });
    expect(b.codes).toEqual(a.codes);
    expect(b.encoding).toEqual(a.encoding);
  });

  it('rejects non-finite weights or a wrong size, and has a default on every params field', () => {
    expect(() => run(new Float32Array([0, NaN, 1, 2]), [2, 2])).toThrow(/finite/);
    expect(() => run(new Float32Array([0, 1, 2]), [2, 2])).toThrow(/shape/);
    for (const schema of Object.values(pq.params.properties)) expect(schema).toHaveProperty('default');
    expect(pq.params.additionalProperties).toBe(false);
  });
});

describe('pq with a shared codebook', () => {
  it('clusters the sub-vectors of all blocks of a [4, 2] kernel into one codebook', () => {
    // Sub-vectors (d = 2): block 0 → (1,3), (2,4); block 1 → (5,7), (6,8). Two centroids: (1.5,3.5), (5.5,7.5).
    const weights = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]);
    for (let seed = 0; seed < 8; seed++) {
      const result = run(weights, [4, 2], { bits: 1, subvectorLength: 2, codebooks: 'shared', seed });
      const codes = Array.from(result.codes);
      const low = codes[0];
      expect(codes).toEqual([low, low, 1 - low, 1 - low]);
      const codebook = codebookOf(result);
      expect(result.encoding).toMatchObject({ kind: 'pq', bits: 1, subvectorLength: 2, subspaces: 1 });
      expect(Array.from(codebook.subarray(low * 2, low * 2 + 2))).toEqual([1.5, 3.5]);
      expect(Array.from(codebook.subarray((1 - low) * 2, (1 - low) * 2 + 2))).toEqual([5.5, 7.5]);
      expect(Array.from(result.dequantized)).toEqual([1.5, 1.5, 3.5, 3.5, 5.5, 5.5, 7.5, 7.5]);
      // 4 codes · 1 bit + 4 floats · 32 bits over 8 weights.
      expect(result.bitsPerWeight).toBe((4 * 1 + 4 * 32) / 8);
    }
  });

  it('trains on full sub-vectors and assigns a short last block by the rows it has', () => {
    // [5, 3], d = 2: full sub-vectors (1,4) (2,5) (3,6) | (7,10) (8,11) (9,12) → centroids (2,5), (8,11);
    // the last row's scalars 100, 101, 300 are all nearest to 8 in the first coordinate.
    const weights = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100, 101, 300]);
    const result = run(weights, [5, 3], { bits: 1, subvectorLength: 2, codebooks: 'shared' });
    const codebook = codebookOf(result);
    expect(codebook.length).toBe(2 * 2);
    const high = result.codes[3];
    expect(Array.from(codebook.subarray(high * 2, high * 2 + 2))).toEqual([8, 11]);
    expect(Array.from(codebook.subarray((1 - high) * 2, (1 - high) * 2 + 2))).toEqual([2, 5]);
    expect(Array.from(result.codes)).toEqual([1 - high, 1 - high, 1 - high, high, high, high, high, high, high]);
    expect(Array.from(result.dequantized)).toEqual([2, 2, 2, 5, 5, 5, 8, 8, 8, 11, 11, 11, 8, 8, 8]);
    expect(result.dequantized).toEqual(decodeTensor(result.encoding, result.codes, [5, 3]));
  });

  it('decodes bit-exactly and gives every sub-vector its nearest centroid, also when training on a subsample', () => {
    const rows = 30;
    const columns = 100;
    const weights = normalValues(rows * columns, 21);
    for (const trainingSample of [256, 65536]) {
      const result = run(weights, [rows, columns], {
        bits: 5,
        subvectorLength: 4,
        codebooks: 'shared',
        trainingSample,
      });
      expect(result.dequantized).toEqual(decodeTensor(result.encoding, result.codes, [rows, columns]));
      expect(result.codes.length).toBe(8 * columns);
      const codebook = codebookOf(result);
      expect(codebook.length).toBe(32 * 4);
      for (let block = 0; block < 8; block++) {
        const dim = Math.min(4, rows - block * 4);
        for (let c = 0; c < columns; c++) {
          const distances = Array.from({ length: 32 }, (_, k) => {
            let sum = 0;
            for (let o = 0; o < dim; o++) sum += (weights[(block * 4 + o) * columns + c] - codebook[k * 4 + o]) ** 2;
            return sum;
          });
          expect(distances[result.codes[block * columns + c]]).toBe(Math.min(...distances));
        }
      }
    }
  });

  it('costs < 2.5 bits per weight on a [1024, 1024] kernel at 8 bits, d = 4 (per-block: 10)', () => {
    const weights = normalValues(1024 * 1024, 5);
    const result = run(weights, [1024, 1024], {
      bits: 8,
      subvectorLength: 4,
      codebooks: 'shared',
      maxIterations: 3,
      trainingSample: 4096,
    });
    // 256·1024 codes · 8 bits + 256 · 4 floats · 32 bits over 2^20 weights.
    expect(result.bitsPerWeight).toBe((256 * 1024 * 8 + 256 * 4 * 32) / 2 ** 20);
    expect(result.bitsPerWeight).toBeLessThan(2.5);
    expect((256 * 1024 * 8 + 256 * 256 * 4 * 32) / 2 ** 20).toBe(10);
  });

  it('is reproducible with the same seed and samples differently with another', () => {
    const weights = normalValues(64 * 80, 8);
    const shared = { bits: 4, codebooks: 'shared', trainingSample: 512 } as const;
    const a = run(weights, [64, 80], { ...shared, seed: 17 });
    const b = run(weights, [64, 80], { ...shared, seed: 17 });
    const c = run(weights, [64, 80], { ...shared, seed: 18 });
    expect(b.codes).toEqual(a.codes);
    expect(b.encoding).toEqual(a.encoding);
    expect(codebookOf(c)).not.toEqual(codebookOf(a));
  });

  it('equals per-block when there is only one block', () => {
    const weights = normalValues(3 * 50, 2);
    const perBlock = run(weights, [3, 50], { bits: 3, subvectorLength: 4 });
    const shared = run(weights, [3, 50], { bits: 3, subvectorLength: 4, codebooks: 'shared' });
    expect(shared.encoding).toEqual(perBlock.encoding);
    expect(shared.codes).toEqual(perBlock.codes);
  });
});

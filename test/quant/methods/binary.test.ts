import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { BinaryParams, binary } from '../../../src/quant/methods/binary.js';
import { createRng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';
import { expectConsistent, randomTensor } from './uniform-checks.js';

const W = new Float32Array([0.5, -1, 0.25, -0.75]);

function run(weights: Float32Array, shape: number[], overrides: Partial<BinaryParams> = {}, seed = 0): QuantizedTensor {
  const params = Value.Default(BinaryParams, { name: 'binary', ...overrides }) as BinaryParams;
  return binary.quantize(weights, shape, params, createRng(seed));
}

function codebookOf(result: QuantizedTensor): Float32Array {
  if (result.encoding.kind !== 'codebook') throw new Error('expected a codebook encoding');
  return result.encoding.codebook;
}

describe('binary', () => {
  it('fills defaults and rejects unknown fields', () => {
    expect(Value.Default(BinaryParams, { name: 'binary' })).toEqual({
      name: 'binary',
      granularity: 'per-tensor',
      stochastic: false,
      seed: 0,
    });
    expect(
      Value.Check(BinaryParams, { name: 'binary', granularity: 'per-tensor', stochastic: false, seed: 0, bits: 1 }),
    ).toBe(false);
  });

  it('per tensor: α = ‖W‖₁/n = 2.5/4 = 0.625', () => {
    const result = run(W, [4]);
    expect(Array.from(result.codes)).toEqual([1, 0, 1, 0]);
    expect(Array.from(result.dequantized)).toEqual([0.625, -0.625, 0.625, -0.625]);
    expect(result.encoding).toEqual({
      kind: 'codebook',
      bits: 1,
      channels: 1,
      codebook: new Float32Array([-0.625, 0.625]),
    });
    expect(result.tfjsEncoding).toEqual({ dtype: 'uint8', min: -0.625, scale: 1.25 });
    expect(result.bitsPerWeight).toBe(1 + 64 / 4);
  });

  it('per channel uses the last axis: columns [0.5, 0.25] → α 0.375, [−1, −0.75] → α 0.875', () => {
    const result = run(W, [2, 2], { granularity: 'per-channel' });
    expect(Array.from(result.dequantized)).toEqual([0.375, -0.875, 0.375, -0.875]);
    expect(Array.from(codebookOf(result))).toEqual([-0.375, 0.375, -0.875, 0.875]);
    expect(result.tfjsEncoding).toBeUndefined();
    expect(result.bitsPerWeight).toBe(1 + (64 * 2) / 4);
  });

  it('maps sign(0) to +1 and an all-zero tensor to zeros', () => {
    const result = run(new Float32Array([0, -0, -2, 2]), [4]);
    expect(Array.from(result.codes)).toEqual([1, 1, 0, 1]);
    const zeros = run(new Float32Array(4), [2, 2], { granularity: 'per-channel', stochastic: true });
    expect(Array.from(zeros.dequantized)).toEqual([0, 0, 0, 0]);
    expectConsistent(zeros, [2, 2]);
  });

  it('α minimises ‖W − αB‖² and decodes exactly on random tensors', () => {
    const rng = createRng(13);
    for (const [shape, granularity] of [
      [[300], 'per-tensor'],
      [[30, 10], 'per-tensor'],
      [[3, 3, 4, 6], 'per-channel'],
    ] as const) {
      const size = shape.reduce((a, b) => a * b, 1);
      const weights = randomTensor(rng, size, 0.1);
      const result = run(weights, [...shape], { granularity });
      expectConsistent(result, shape);
      const codebook = codebookOf(result);
      const channels = codebook.length / 2;
      expect(channels).toBe(granularity === 'per-channel' ? shape[shape.length - 1] : 1);
      for (let c = 0; c < channels; c++) {
        const alpha = codebook[2 * c + 1];
        const loss = (a: number): number => {
          let sum = 0;
          for (let i = c; i < size; i += channels) sum += (weights[i] - (weights[i] >= 0 ? a : -a)) ** 2;
          return sum;
        };
        expect(loss(alpha)).toBeLessThan(loss(alpha * 1.01));
        expect(loss(alpha)).toBeLessThan(loss(alpha * 0.99));
      }
    }
  });

  it('stochastic (BinaryConnect) is unbiased inside [−α, α], saturates outside, and is reproducible', () => {
    // α = (0.3 + 0.6 + 1.5 + 1.2)/4 = 0.9
    const weights = new Float32Array([0.3, -0.6, 1.5, -1.2]);
    const sums = new Float64Array(4);
    const runs = 4000;
    for (let seed = 0; seed < runs; seed++) {
      const result = run(weights, [4], { stochastic: true, seed }, seed);
      for (let i = 0; i < 4; i++) sums[i] += result.dequantized[i];
    }
    const alpha = Math.fround(0.9);
    expect(Math.abs(sums[0] / runs - 0.3)).toBeLessThan(0.05);
    expect(Math.abs(sums[1] / runs + 0.6)).toBeLessThan(0.05);
    expect(sums[2] / runs).toBeCloseTo(alpha, 6);
    expect(sums[3] / runs).toBeCloseTo(-alpha, 6);
    const big = randomTensor(createRng(14), 2000);
    const first = run(big, [2000], { stochastic: true }, 5);
    expect(run(big, [2000], { stochastic: true }, 5).codes).toEqual(first.codes);
    expect(run(big, [2000], { stochastic: true }, 6).codes).not.toEqual(first.codes);
    expectConsistent(first, [2000]);
  });
});

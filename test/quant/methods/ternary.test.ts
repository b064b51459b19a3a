import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { TernaryParams, ternary } from '../../../src/quant/methods/ternary.js';
import { createRng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';
import { expectConsistent, randomTensor } from './uniform-checks.js';

const W = new Float32Array([0.5, -1, 0.25, -0.75]);

function run(weights: Float32Array, shape: number[], overrides: Partial<TernaryParams> = {}): QuantizedTensor {
  const params = Value.Default(TernaryParams, { name: 'ternary', ...overrides }) as TernaryParams;
  return ternary.quantize(weights, shape, params, createRng(0));
}

describe('ternary (TWN)', () => {
  it('fills defaults', () => {
    expect(Value.Default(TernaryParams, { name: 'ternary' })).toEqual({
      name: 'ternary',
      granularity: 'per-tensor',
      thresholdFactor: 0.7,
      seed: 0,
    });
    expect(
      Value.Check(TernaryParams, {
        ...(Value.Default(TernaryParams, { name: 'ternary' }) as object),
        thresholdFactor: -1,
      }),
    ).toBe(false);
  });

  it('per tensor: Δ = 0.7·0.625 = 0.4375, α = mean(0.5, 1, 0.75) = 0.75', () => {
    const result = run(W, [4]);
    expect(Array.from(result.codes)).toEqual([2, 0, 1, 0]);
    expect(Array.from(result.dequantized)).toEqual([0.75, -0.75, 0, -0.75]);
    expect(result.encoding).toEqual({
      kind: 'codebook',
      bits: 2,
      channels: 1,
      codebook: new Float32Array([-0.75, 0, 0.75, 0]),
    });
    expect(result.tfjsEncoding).toEqual({ dtype: 'uint8', min: -0.75, scale: 0.75 });
    expect(result.bitsPerWeight).toBe(2 + 128 / 4);
    expectConsistent(result, [4]);
  });

  it('per channel uses the last axis: Δ 0.2625 → α 0.5; Δ 0.6125 → α 0.875', () => {
    const result = run(W, [2, 2], { granularity: 'per-channel' });
    expect(Array.from(result.codes)).toEqual([2, 0, 1, 0]);
    expect(Array.from(result.dequantized)).toEqual([0.5, -0.875, 0, -0.875]);
    expect(result.tfjsEncoding).toBeUndefined();
    expectConsistent(result, [2, 2]);
  });

  it('thresholdFactor 0 keeps every nonzero weight; an all-zero tensor stays zero', () => {
    expect(Array.from(run(W, [4], { thresholdFactor: 0 }).dequantized)).toEqual([0.625, -0.625, 0.625, -0.625]);
    const zeros = run(new Float32Array(6), [3, 2], { granularity: 'per-channel' });
    expect(Array.from(zeros.codes)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(Array.from(zeros.dequantized)).toEqual([0, 0, 0, 0, 0, 0]);
    expectConsistent(zeros, [3, 2]);
  });

  it('follows Δ and α on random tensors, per tensor and per channel', () => {
    const rng = createRng(15);
    for (const [shape, granularity] of [
      [[500], 'per-tensor'],
      [[5, 5, 3, 8], 'per-channel'],
    ] as const) {
      const size = shape.reduce((a, b) => a * b, 1);
      const weights = randomTensor(rng, size, 0.05);
      const result = run(weights, [...shape], { granularity });
      expectConsistent(result, shape);
      const channels = granularity === 'per-channel' ? shape[shape.length - 1] : 1;
      for (let c = 0; c < channels; c++) {
        const column = weights.filter((_, i) => i % channels === c);
        const delta = 0.7 * Math.fround(column.reduce((s, w) => s + Math.abs(w), 0) / column.length);
        const kept = column.filter((w) => Math.abs(w) > delta);
        const alpha = Math.fround(kept.reduce((s, w) => s + Math.abs(w), 0) / kept.length);
        for (let i = c; i < size; i += channels) {
          const w = weights[i];
          expect(result.dequantized[i]).toBe(w > delta ? alpha : w < -delta ? -alpha : 0);
        }
      }
    }
  });
});

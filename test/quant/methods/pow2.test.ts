import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { Pow2Params, largestExponent, pow2 } from '../../../src/quant/methods/pow2.js';
import { createRng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';
import { expectConsistent, randomTensor } from './uniform-checks.js';

function run(weights: Float32Array, shape: number[], overrides: Partial<Pow2Params> = {}, seed = 0): QuantizedTensor {
  const params = Value.Default(Pow2Params, { name: 'pow2', ...overrides }) as Pow2Params;
  return pow2.quantize(weights, shape, params, createRng(seed));
}

function codebookOf(result: QuantizedTensor): Float32Array {
  if (result.encoding.kind !== 'codebook') throw new Error('expected a codebook encoding');
  return result.encoding.codebook;
}

describe('pow2 (INQ)', () => {
  it('fills defaults and bounds bits to 2..8', () => {
    const defaults = Value.Default(Pow2Params, { name: 'pow2' });
    expect(defaults).toEqual({ name: 'pow2', bits: 4, rounding: 'nearest', seed: 0 });
    expect(Value.Check(Pow2Params, { ...(defaults as object), bits: 9 })).toBe(false);
  });

  it('n1 = floor(log2(4·max|W|/3)): max in [0.75, 1.5) gives 0', () => {
    expect(largestExponent(0.75)).toBe(0);
    expect(largestExponent(0.7499)).toBe(-1);
    expect(largestExponent(1.4999)).toBe(0);
    expect(largestExponent(1.5)).toBe(1);
    expect(largestExponent(0)).toBe(0);
  });

  it('3 bits on W = [0.5, −1, 0.25, −0.75]: levels {0, ±1/4, ±1/2, ±1}, the tie 0.75 goes up', () => {
    const result = run(new Float32Array([0.5, -1, 0.25, -0.75]), [4], { bits: 3 });
    expect(Array.from(codebookOf(result))).toEqual([-1, -0.5, -0.25, 0, 0.25, 0.5, 1, 0]);
    expect(Array.from(result.codes)).toEqual([5, 0, 4, 0]);
    expect(Array.from(result.dequantized)).toEqual([0.5, -1, 0.25, -1]);
    expect(result.tfjsEncoding).toBeUndefined();
    expect(result.bitsPerWeight).toBe(3 + (32 * 8) / 4);
  });

  it('applies the zero and tie rules at the edges', () => {
    // max 1.4 → n1 = floor(log2 1.87) = 0; 3 bits → levels 1/4, 1/2, 1; zero below 1/8.
    const weights = new Float32Array([1.4, 0.124, 0.125, 0.37, -0.374, 0, -0.1, 0.375, -0.0625]);
    const result = run(weights, [9], { bits: 3 });
    expect(Array.from(result.dequantized)).toEqual([1, 0, 0.25, 0.25, -0.25, 0, 0, 0.5, 0]);
    expect(Object.is(result.dequantized[6], 0)).toBe(true);
    expectConsistent(result, [9]);
  });

  it('2 bits keeps only ±2^n1 and zero', () => {
    const result = run(new Float32Array([0.9, -0.3, 0.2, -0.6]), [2, 2], { bits: 2 });
    // max 0.9 → n1 = floor(log2 1.2) = 0: 0.9 → 1, −0.3 → 0 (below 1/2), −0.6 → −1.
    expect(Array.from(result.dequantized)).toEqual([1, 0, 0, -1]);
    expect(Array.from(codebookOf(result))).toEqual([-1, 0, 1, 0]);
  });

  it('picks the nearest level in linear distance on random tensors, at every width', () => {
    const rng = createRng(16);
    for (let bits = 2; bits <= 8; bits++) {
      const weights = randomTensor(rng, 600, 10 ** (rng.next() * 4 - 2));
      const shape = [20, 30];
      const result = run(weights, shape, { bits });
      expectConsistent(result, shape);
      const codebook = codebookOf(result);
      expect(codebook.length).toBe(2 ** bits);
      let maxAbs = 0;
      for (const w of weights) maxAbs = Math.max(maxAbs, Math.abs(w));
      const n1 = largestExponent(maxAbs);
      const used = codebook.subarray(0, 2 ** bits - 1);
      const powers = 2 ** (bits - 1) - 1;
      const positive = Array.from({ length: powers }, (_, m) => Math.fround(2 ** (n1 - powers + 1 + m)));
      expect(Array.from(used)).toEqual([...positive.map((v) => -v).reverse(), 0, ...positive]);
      let notNearest = 0;
      for (let i = 0; i < weights.length; i++) {
        const error = Math.abs(weights[i] - result.dequantized[i]);
        for (const level of used) if (error > Math.abs(weights[i] - level)) notNearest++;
      }
      expect(notNearest).toBe(0);
    }
  });

  it('stochastic rounding is unbiased between neighbours and below the smallest power, and reproducible', () => {
    // max 1 → n1 = 0; 4 bits: powers 2^-6 .. 1. 0.3 sits between 1/4 and 1/2 (P(up) = 0.2);
    // −0.005 sits between 0 and −2^-6 (P = 0.32).
    const weights = new Float32Array(20001);
    weights[0] = 1;
    for (let i = 1; i <= 10000; i++) weights[i] = 0.3;
    for (let i = 10001; i <= 20000; i++) weights[i] = -0.005;
    const result = run(weights, [20001], { rounding: 'stochastic' }, 17);
    let sumMid = 0;
    let sumSmall = 0;
    for (let i = 1; i <= 10000; i++) sumMid += result.dequantized[i];
    for (let i = 10001; i <= 20000; i++) sumSmall += result.dequantized[i];
    expect(new Set(result.dequantized.subarray(1, 10001))).toEqual(new Set([0.25, 0.5]));
    expect(new Set(result.dequantized.subarray(10001))).toEqual(new Set([0, -(2 ** -6)]));
    expect(Math.abs(sumMid / 10000 - 0.3)).toBeLessThan(0.005);
    expect(Math.abs(sumSmall / 10000 + 0.005)).toBeLessThan(0.0005);
    expectConsistent(result, [20001]);
    const again = run(weights, [20001], { rounding: 'stochastic' }, 17);
    expect(again.codes).toEqual(result.codes);
    expect(run(weights, [20001], { rounding: 'stochastic' }, 18).codes).not.toEqual(result.codes);
  });

  it('handles an all-zero tensor', () => {
    const result = run(new Float32Array(4), [4]);
    expect(Array.from(result.dequantized)).toEqual([0, 0, 0, 0]);
    expectConsistent(result, [4]);
  });
});

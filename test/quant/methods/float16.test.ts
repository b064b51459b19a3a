import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from '../../../src/quant/float16.js';
import { Float16Params, float16 } from '../../../src/quant/methods/float16.js';
import { createRng } from '../../../src/quant/rng.js';
import { expectConsistent, randomTensor } from './uniform-checks.js';

describe('float16 method', () => {
  it('has a params schema with only the name', () => {
    expect(Value.Default(Float16Params, {})).toEqual({ name: 'float16' });
    expect(Value.Check(Float16Params, { name: 'float16', bits: 8 })).toBe(false);
  });

  it('stores half bit patterns and decodes them exactly', () => {
    const weights = new Float32Array([1 / 3, -2.5, 0, 70000, 2 ** -25, 1e-8]);
    const result = float16.quantize(weights, [2, 3], { name: 'float16' }, createRng(0));
    expect(Array.from(result.codes)).toEqual([0x3555, 0xc100, 0, 0x7bff, 0, 0]);
    expect(Array.from(result.dequantized)).toEqual([0.333251953125, -2.5, 0, 65504, 0, 0]);
    expect(result.codes).toBeInstanceOf(Uint16Array);
    expect(result.encoding).toEqual({ kind: 'float16' });
    expect(result.tfjsEncoding).toEqual({ dtype: 'float16' });
    expect(result.bitsPerWeight).toBe(16);
  });

  it('keeps relative error ≤ 2^-11 in the normal range on random tensors', () => {
    const rng = createRng(12);
    const shape = [50, 20];
    const weights = randomTensor(rng, 1000, 3);
    const result = float16.quantize(weights, shape, { name: 'float16' }, rng);
    expectConsistent(result, shape);
    for (let i = 0; i < weights.length; i++) {
      expect(result.dequantized[i]).toBe(halfToFloat(floatToHalf(weights[i])));
      if (Math.abs(weights[i]) >= 2 ** -14) {
        expect(Math.abs(result.dequantized[i] - weights[i])).toBeLessThanOrEqual(Math.abs(weights[i]) * 2 ** -11);
      }
    }
  });
});

/** Checks shared by the uniform/deterministic method tests: the exactness promises of src/quant/types.ts. */
import { expect } from 'vitest';
import { decodeTensor } from '../../../src/quant/packed/decode-tensor.js';
import { createRng, type Rng } from '../../../src/quant/rng.js';
import type { QuantizedTensor } from '../../../src/quant/types.js';

/** Roughly Gaussian values (sum of uniforms) times `scale`, with a few exact zeros. */
export function randomTensor(rng: Rng, size: number, scale = 1): Float32Array {
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = (rng.next() + rng.next() + rng.next() - 1.5) * scale;
  for (let i = 0; i < size; i += 17) values[i] = 0;
  return values;
}

/** Element-wise bit equality, reporting the first mismatch instead of two huge arrays. */
/** `size` standard normal values from a seeded Rng. */
export function normalValues(size: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: size }, () => rng.normal());
}

export function expectSameValues(actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) expect({ i, value: actual[i] }).toEqual({ i, value: expected[i] });
  }
}

/** dequantized is decodeTensor(encoding, codes), codes fit their width, and the tfjs manifest form agrees. */
export function expectConsistent(result: QuantizedTensor, shape: readonly number[]): void {
  expectSameValues(result.dequantized, decodeTensor(result.encoding, result.codes, shape));
  const bits = result.encoding.kind === 'float16' ? 16 : result.encoding.bits;
  let maxCode = 0;
  for (const code of result.codes) maxCode = Math.max(maxCode, code);
  expect(maxCode).toBeLessThan(2 ** bits);
  const tfjs = result.tfjsEncoding;
  if (tfjs && tfjs.dtype !== 'float16') {
    expect(2 ** (tfjs.dtype === 'uint8' ? 8 : 16)).toBeGreaterThan(maxCode);
    const viaTfjs = Float32Array.from(result.codes, (code) => Math.fround(code * tfjs.scale + tfjs.min));
    expectSameValues(viaTfjs, result.dequantized);
  }
}

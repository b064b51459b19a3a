import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeFloat16, floatToHalf, halfToFloat } from '../../src/quant/float16.js';
import { createRng } from '../../src/quant/rng.js';

const isNaNPattern = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

function allNonNaNPatterns(): Uint16Array {
  const patterns: number[] = [];
  for (let h = 0; h < 65536; h++) if (!isNaNPattern(h)) patterns.push(h);
  return Uint16Array.from(patterns);
}

describe('floatToHalf', () => {
  it('round-trips every non-NaN half pattern through halfToFloat', () => {
    for (const h of allNonNaNPatterns()) {
      if (floatToHalf(halfToFloat(h)) !== h) expect(floatToHalf(halfToFloat(h))).toBe(h);
    }
  });

  it('rounds hand-worked cases to nearest, ties to even', () => {
    expect(floatToHalf(1 / 3)).toBe(0x3555);
    expect(halfToFloat(0x3555)).toBe(0.333251953125);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie between 0x3c00 and 0x3c01: even wins
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 0x3c01 and 0x3c02
    expect(floatToHalf(2049)).toBe(0x6800); // spacing 2 at 2048: tie down to 2048
    expect(floatToHalf(2051)).toBe(0x6802); // tie up to 2052
    expect(floatToHalf(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c01); // a float64 just above the tie is rounded once
    expect(floatToHalf(-2.5)).toBe(0xc100);
  });

  it('handles subnormals, zero signs and the normal boundary', () => {
    expect(floatToHalf(2 ** -24)).toBe(0x0001);
    expect(floatToHalf(2 ** -25)).toBe(0x0000); // tie between 0 and 2^-24: even is 0
    expect(floatToHalf(1.5 * 2 ** -25)).toBe(0x0001);
    expect(floatToHalf(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 ulps
    expect(floatToHalf(2 ** -14 - 2 ** -25)).toBe(0x0400); // tie at the top subnormal rounds into the smallest normal
    expect(floatToHalf(1023 * 2 ** -24)).toBe(0x03ff);
    expect(floatToHalf(-(2 ** -30))).toBe(0x8000);
    expect(floatToHalf(-0)).toBe(0x8000);
    expect(floatToHalf(0)).toBe(0x0000);
  });

  it('saturates finite overflow at ±65504 and keeps Infinity and NaN', () => {
    expect(floatToHalf(65504)).toBe(0x7bff);
    expect(floatToHalf(65519)).toBe(0x7bff);
    expect(floatToHalf(65520)).toBe(0x7bff); // IEEE would give Infinity here
    expect(floatToHalf(-1e30)).toBe(0xfbff);
    expect(floatToHalf(Infinity)).toBe(0x7c00);
    expect(floatToHalf(-Infinity)).toBe(0xfc00);
    expect(Number.isNaN(halfToFloat(floatToHalf(NaN)))).toBe(true);
  });
});

describe('encodeFloat16', () => {
  it('agrees with floatToHalf on every half, every tie point and its float32 neighbours', () => {
    const values: number[] = [];
    for (const h of allNonNaNPatterns()) {
      const value = halfToFloat(h);
      values.push(value);
      const next = halfToFloat(h + 1);
      if ((h & 0x7fff) < 0x7bff) {
        const tie = (value + next) / 2;
        const tie32 = new Float32Array([tie]);
        const bits = new Uint32Array(tie32.buffer);
        values.push(tie);
        bits[0] += 1;
        values.push(tie32[0]);
        bits[0] -= 2;
        values.push(tie32[0]);
      }
    }
    values.push(65519, 65520, 1e30, -1e30, Infinity, -Infinity, 1e-40, -1e-45, 2 ** -25, 2 ** -26);
    const rng = createRng(7);
    const random = new Uint32Array(100_000);
    for (let i = 0; i < random.length; i++) random[i] = Math.floor(rng.next() * 2 ** 32);
    const input = new Float32Array(values.length + random.length);
    input.set(values);
    new Uint32Array(input.buffer, values.length * 4).set(random);
    const encoded = encodeFloat16(input);
    for (let i = 0; i < input.length; i++) {
      const expected = floatToHalf(input[i]);
      if (Number.isNaN(input[i])) expect(isNaNPattern(encoded[i])).toBe(true);
      else if (encoded[i] !== expected) expect([input[i], encoded[i]]).toEqual([input[i], expected]);
    }
  });

  it('works on a Float32Array view at an offset', () => {
    const backing = new Float32Array([9, 1 / 3, -2.5, 70000]);
    expect(Array.from(encodeFloat16(backing.subarray(1)))).toEqual([0x3555, 0xc100, 0x7bff]);
  });
});

describe('tfjs float16 manifest decoding', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('decodes our bit patterns to the same values as halfToFloat', () => {
    const patterns = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) patterns[h] = h;
    const rng = createRng(3);
    const floats = new Float32Array(4096);
    for (let i = 0; i < floats.length; i++) floats[i] = (rng.next() - 0.5) * 2 ** (rng.int(40) - 25);
    const encoded = encodeFloat16(floats);
    const all = new Uint16Array(patterns.length + encoded.length);
    all.set(patterns);
    all.set(encoded, patterns.length);
    const decoded = tf.io.decodeWeights(all.buffer, [
      { name: 'w', shape: [all.length], dtype: 'float32', quantization: { dtype: 'float16' } },
    ]);
    const values = decoded.w.dataSync();
    decoded.w.dispose();
    for (let i = 0; i < all.length; i++) {
      const ours = halfToFloat(all[i]);
      if (!Object.is(values[i], ours)) expect([all[i], values[i]]).toEqual([all[i], ours]);
    }
  });
});

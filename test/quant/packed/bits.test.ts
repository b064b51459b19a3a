import { describe, expect, it } from 'vitest';
import { packBits, packedByteLength, unpackBits } from '../../../src/quant/packed/bits.js';
import { createRng } from '../../../src/quant/rng.js';

function randomCodes(count: number, bits: number, seed: number): Uint32Array {
  const rng = createRng(seed);
  const codes = new Uint32Array(count);
  for (let i = 0; i < count; i++) codes[i] = rng.int(2 ** bits);
  // The extremes, where a lost or misplaced top bit shows.
  if (count > 2) {
    codes[0] = 2 ** bits - 1;
    codes[count - 1] = 2 ** bits - 1;
  }
  return codes;
}

describe('packBits / unpackBits', () => {
  it('lays codes out LSB-first in a little-endian bit stream (hand-worked bytes)', () => {
    // 2-bit codes 1, 2, 3: 0b01 | 0b10 << 2 | 0b11 << 4 = 1 + 8 + 48.
    expect([...packBits([1, 2, 3], 2)]).toEqual([57]);
    // 9-bit 0x1ff then 1: bits 0..8 set, bit 9 set → 0xff, 0b11, and a third byte for bits 16..17.
    expect([...packBits([0x1ff, 1], 9)]).toEqual([0xff, 0x03, 0x00]);
    // 3-bit codes 5, 6, 7: 0b101 | 0b110 << 3 | 0b111 << 6 = 5 + 48 + 448 = 501 = 0x1f5.
    expect([...packBits([5, 6, 7], 3)]).toEqual([0xf5, 0x01]);
    // 16-bit codes are little-endian uint16.
    expect([...packBits([0x1234, 0xabcd], 16)]).toEqual([0x34, 0x12, 0xcd, 0xab]);
  });

  it('round-trips random codes of every width 1..16 at odd counts, crossing 32-bit words', () => {
    for (let bits = 1; bits <= 16; bits++) {
      for (const count of [0, 1, 3, 7, 31, 33, 1001]) {
        const codes = randomCodes(count, bits, bits * 1000 + count);
        const bytes = packBits(codes, bits);
        expect(bytes.length).toBe(Math.ceil((count * bits) / 8));
        const back = unpackBits(bytes, bits, count);
        expect(back).toBeInstanceOf(bits <= 8 ? Uint8Array : Uint16Array);
        expect([...back]).toEqual([...codes]);
      }
    }
  });

  it('leaves the unused high bits of the last byte zero', () => {
    for (let bits = 1; bits <= 16; bits++) {
      const count = 5;
      const bytes = packBits(new Array(count).fill(2 ** bits - 1), bits);
      const used = (count * bits) % 8;
      if (used !== 0) expect(bytes[bytes.length - 1]).toBe((1 << used) - 1);
    }
  });

  it('reads from an unaligned view inside a larger buffer', () => {
    const codes = randomCodes(77, 5, 3);
    const packed = packBits(codes, 5);
    const host = new Uint8Array(packed.length + 3);
    host.set(packed, 1);
    expect([...unpackBits(host.subarray(1), 5, 77)]).toEqual([...codes]);
  });

  it('copies out of a pooled Node Buffer, whose slice() is a view of the whole pool', () => {
    for (const bits of [5, 8, 16]) {
      const codes = randomCodes(9, bits, bits);
      const pooled = Buffer.from(packBits(codes, bits));
      expect(pooled.byteOffset > 0 || pooled.buffer.byteLength > pooled.length).toBe(true);
      expect([...unpackBits(pooled, bits, 9)]).toEqual([...codes]);
    }
  });

  it('rejects codes that do not fit, bad widths and short input', () => {
    expect(() => packBits([4], 2)).toThrow(/code 4 at index 0 does not fit in 2 bits/);
    expect(() => packBits([-1], 8)).toThrow(RangeError);
    expect(() => packBits([1.5], 8)).toThrow(RangeError);
    expect(() => packBits([1], 17)).toThrow(/1\.\.16/);
    expect(() => unpackBits(new Uint8Array(2), 3, 6)).toThrow(/need 3 bytes/);
  });

  it('packs and unpacks 4M 4-bit codes', () => {
    const count = 1 << 22;
    const codes = new Uint8Array(count);
    for (let i = 0; i < count; i++) codes[i] = Math.imul(i, 2654435761) >>> 28;
    const bytes = packBits(codes, 4);
    expect(bytes.length).toBe(packedByteLength(count, 4));
    const back = unpackBits(bytes, 4, count);
    expect(back.length).toBe(count);
    for (let i = 0; i < count; i += 4099) expect(back[i]).toBe(codes[i]);
  });
});

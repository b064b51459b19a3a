/**
 * Bit packing of 1–16-bit unsigned codes into a byte stream, the code section of the packed artifact
 * (docs/packed-format.md). No imports on purpose: it ships inside the dependency-free decoder.
 *
 * Bit order: LSB-first, little-endian. Code i occupies stream bits [i·bits, (i+1)·bits), least significant
 * bit first, and stream bit k is bit (k mod 8) of byte ⌊k/8⌋. So the bytes are the little-endian encoding of
 * the integer Σ code_i · 2^(i·bits), cut to ⌈count·bits/8⌉ bytes; unused high bits of the last byte are 0.
 *
 * Both directions work on 32-bit words (a code crosses at most one word boundary since bits ≤ 16), and
 * read/write those words through Uint32Array, so they assume a little-endian host, as TF.js itself does.
 */

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
    throw new RangeError(`bit width must be an integer in 1..16, got ${bits}`);
  }
}

function copyOf(bytes: Uint8Array, byteLength: number): Uint8Array {
  const copy = new Uint8Array(byteLength);
  copy.set(bytes.subarray(0, byteLength));
  return copy;
}

/** Bytes that `count` codes of `bits` bits take in the stream. */
export function packedByteLength(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

/** Packs codes (each an integer in [0, 2^bits)) LSB-first into ⌈count·bits/8⌉ bytes. */
export function packBits(codes: ArrayLike<number>, bits: number): Uint8Array {
  checkBits(bits);
  const count = codes.length;
  const byteLength = packedByteLength(count, bits);
  const mask = (1 << bits) - 1;
  const words = new Uint32Array(Math.ceil(byteLength / 4));
  let word = 0;
  let filled = 0;
  let w = 0;
  for (let i = 0; i < count; i++) {
    const code = codes[i];
    // Rejects negatives, fractions, NaN and codes wider than `bits` in one comparison.
    if ((code & mask) !== code) {
      throw new RangeError(`code ${code} at index ${i} does not fit in ${bits} bits`);
    }
    word |= code << filled;
    filled += bits;
    if (filled >= 32) {
      words[w++] = word;
      filled -= 32;
      // The code's top `filled` bits did not fit in the word just written.
      word = filled === 0 ? 0 : code >>> (bits - filled);
    }
  }
  if (filled > 0) words[w] = word;
  return new Uint8Array(words.buffer, 0, byteLength);
}

/**
 * Reads `count` codes of `bits` bits back from a stream written by packBits. Returns the narrowest array
 * that holds them: Uint8Array up to 8 bits, Uint16Array up to 16.
 */
export function unpackBits(bytes: Uint8Array, bits: number, count: number): Uint32Array | Uint16Array | Uint8Array {
  checkBits(bits);
  const byteLength = packedByteLength(count, bits);
  if (bytes.length < byteLength) {
    throw new RangeError(`${count} codes of ${bits} bits need ${byteLength} bytes, got ${bytes.length}`);
  }
  // Copies with set(), not slice(): a Node Buffer's slice() is a view into a shared pool.
  if (bits === 8) return copyOf(bytes, byteLength);
  if (bits === 16) return new Uint16Array(copyOf(bytes, byteLength).buffer);

  // An aligned copy with one spare word, so the loop may read the word after the last without a bounds test.
  const words = new Uint32Array(Math.ceil(byteLength / 4) + 1);
  new Uint8Array(words.buffer).set(bytes.subarray(0, byteLength));
  const out = bits <= 8 ? new Uint8Array(count) : new Uint16Array(count);
  const mask = (1 << bits) - 1;
  let w = 0;
  let word = words[0];
  let consumed = 0;
  for (let i = 0; i < count; i++) {
    let code = word >>> consumed;
    consumed += bits;
    if (consumed >= 32) {
      word = words[++w];
      consumed -= 32;
      if (consumed > 0) code |= word << (bits - consumed);
    }
    out[i] = code & mask;
  }
  return out;
}

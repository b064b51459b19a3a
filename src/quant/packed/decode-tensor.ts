/**
 * Codes + side information → float32 values, for every encoding kind. This file has no imports on purpose:
 * it is compiled into the dependency-free decoder that ships beside every packed artifact (browser and
 * Node), and the engine decodes with the same code, so the packed form and `model/` cannot disagree.
 */

export type DecodableEncoding =
  | { kind: 'affine'; bits: number; channels: number; scales: ArrayLike<number>; mins: ArrayLike<number> }
  | { kind: 'codebook'; bits: number; channels: number; codebook: ArrayLike<number> }
  | { kind: 'float16' }
  | { kind: 'pq'; bits: number; subvectorLength: number; subspaces: number; codebook: ArrayLike<number> };

// Built on first use: 65536 entries cost 8–30 ms at start-up, which every worker thread would pay for nothing.
let halfTable: Float32Array | undefined;

function buildHalfTable(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) table[h] = mantissa ? NaN : sign * Infinity;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return table;
}

/** IEEE 754 binary16 bit pattern → its exact float32 value. */
export function halfToFloat(bits: number): number {
  halfTable ??= buildHalfTable();
  return halfTable[bits & 0xffff];
}

/** Expands `codes` of a tensor with `shape` into float32 values. */
export function decodeTensor(
  encoding: DecodableEncoding,
  codes: ArrayLike<number>,
  shape: readonly number[],
): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(size);
  switch (encoding.kind) {
    case 'affine': {
      const { channels, scales, mins } = encoding;
      for (let i = 0; i < size; i++) {
        const c = channels === 1 ? 0 : i % channels;
        out[i] = codes[i] * scales[c] + mins[c];
      }
      return out;
    }
    case 'codebook': {
      const { channels, codebook } = encoding;
      const levels = 2 ** encoding.bits;
      for (let i = 0; i < size; i++) {
        const c = channels === 1 ? 0 : i % channels;
        out[i] = codebook[c * levels + codes[i]];
      }
      return out;
    }
    case 'float16': {
      halfTable ??= buildHalfTable();
      const table = halfTable;
      for (let i = 0; i < size; i++) out[i] = table[codes[i]];
      return out;
    }
    case 'pq': {
      const d = encoding.subvectorLength;
      const levels = 2 ** encoding.bits;
      const columns = shape.length > 1 ? shape[shape.length - 1] : 1;
      const rows = size / columns;
      for (let r = 0; r < rows; r++) {
        const block = Math.floor(r / d);
        const offset = r - block * d;
        // subspaces = 1 with several blocks: one codebook shared by every block.
        const subspace = encoding.subspaces === 1 ? 0 : block;
        for (let c = 0; c < columns; c++) {
          const code = codes[block * columns + c];
          out[r * columns + c] = encoding.codebook[(subspace * levels + code) * d + offset];
        }
      }
      return out;
    }
  }
}

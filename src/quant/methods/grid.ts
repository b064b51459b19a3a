/**
 * The affine grid and the shape facts every method shares, free of schema code so that the streaming export's
 * worker threads load only the math (src/quant/export-affine.ts).
 */

/** One channel's grid: value = code·scale + min with min = −scale·zeroPoint; codes in [minCode, maxCode]. */
export interface AffineGrid {
  scale: number;
  zeroPoint: number;
  min: number;
  minCode: number;
  maxCode: number;
}

function exponentOf(x: number): number {
  let exponent = Math.floor(Math.log2(x));
  if (2 ** exponent > x) exponent--;
  else if (2 ** (exponent + 1) <= x) exponent++;
  return exponent;
}

function bitLength(n: number): number {
  return n === 0 ? 0 : exponentOf(n) + 1;
}

function roundUpToSignificantBits(x: number, bits: number): number {
  const unit = 2 ** (exponentOf(x) - bits + 1);
  return Math.ceil(x / unit) * unit;
}

/** The float32 grid for the range [lo, hi] (lo ≤ 0 ≤ hi, finite); a zero-width range gets scale 1. */
export function affineGrid(lo: number, hi: number, bits: number, symmetric: boolean): AffineGrid {
  const maxCode = 2 ** bits - 1;
  if (symmetric) {
    const zeroPoint = 2 ** (bits - 1);
    let scale = Math.fround(Math.max(-lo, hi) / (zeroPoint - 1));
    if (!(scale > 0)) scale = 1;
    return { scale, zeroPoint, min: Math.fround(-scale * zeroPoint), minCode: 1, maxCode };
  }
  let scale = Math.fround((hi - lo) / maxCode);
  if (!(scale > 0)) scale = 1;
  let zeroPoint = Math.min(maxCode, Math.round(-lo / scale));
  if (Math.fround(scale * zeroPoint) !== scale * zeroPoint) {
    // Rounding scale up only lowers zeroPoint, so its bit length bounds the product's significant bits.
    scale = roundUpToSignificantBits(scale, 24 - bitLength(zeroPoint));
    zeroPoint = Math.min(maxCode, Math.round(-lo / scale));
  }
  return { scale, zeroPoint, min: Math.fround(-scale * zeroPoint), minCode: 0, maxCode };
}

/** Number of channels side information is kept for: 1 per tensor, else the size of the last axis. */
export function channelCount(shape: readonly number[], granularity: 'per-tensor' | 'per-channel'): number {
  return granularity === 'per-channel' && shape.length > 0 ? shape[shape.length - 1] : 1;
}

/**
 * The shape a method sees for a weight. Per-channel side information runs over the last axis; a depthwise
 * kernel [h, w, in, multiplier] has in × multiplier output channels, so its last two axes are merged (the
 * data is the same row-major array). pq splits columns into sub-vectors and keeps the stored shape, which
 * its decoder reads.
 */
export function quantizationShape(shape: readonly number[], role: string, method: string): number[] {
  if (role !== 'depthwise_kernel' || shape.length < 2 || method === 'pq') return [...shape];
  return [...shape.slice(0, -2), shape[shape.length - 2] * shape[shape.length - 1]];
}

/** The smallest unsigned code array that holds `bits`-bit codes. */
export function codeArray(size: number, bits: number): Uint8Array | Uint16Array | Uint32Array {
  if (bits <= 8) return new Uint8Array(size);
  if (bits <= 16) return new Uint16Array(size);
  return new Uint32Array(size);
}

/**
 * One weight tensor, from its float values to everything the artifacts hold of it: the bytes `model/` stores
 * (and how its manifest entry describes them), the bit-packed codes and side information of `packed/`, and
 * the report's error measures. The streaming PTQ (src/pipeline/stream.ts) calls it once per tensor, on the
 * main thread or in a worker thread; the results are the in-memory pipeline's (src/pipeline/ptq.ts) bit for
 * bit, which the byte-identity test checks.
 *
 * Affine with minmax ranges and nearest rounding — the converter's own scheme, and the common case — is
 * fused: one pass finds the ranges, one pass writes the codes and accumulates the error sums, with no float
 * copy of the dequantized tensor when one grid covers it. Every other method quantizes through its own
 * module, then one pass measures the error and decides float16 storage together.
 *
 * Outputs are views into `ExportScratch` buffers that the next call reuses.
 */
import { encodeFloat16, halfOfFloat32Bits, halfToFloat } from './float16.js';
import { affineGrid, type AffineParams } from './methods/affine.js';
import { channelCount } from './methods/common.js';
import { getMethod, type MethodParams } from './methods/index.js';
import { errorFromSums, type ErrorSums, type TensorError } from './metrics.js';
import { packBits } from './packed/bits.js';
import { createRng } from './rng.js';
import type { Codes, Encoding, QuantizedTensor } from './types.js';

export type StoredAs = 'uint8' | 'uint16' | 'float16' | 'float32';

/** A stock TF.js manifest entry's `quantization` (absent: float32 values). */
export type StoredQuantization = { dtype: 'uint8' | 'uint16'; min: number; scale: number } | { dtype: 'float16' };

/** What packed/weights.bin needs of a tensor before it is quantized, so every offset is known in advance. */
export interface ExportLayout {
  /** Code width. */
  bits: number;
  /** float32 side information values (scales and mins, or codebook entries). */
  sideFloats: number;
  /** The method's packed bits per weight; above 32 the tensor is left in float32. */
  bitsPerWeight: number;
}

/**
 * The layout of the methods that quantize each tensor on its own with a size fixed by the shape (all but pq,
 * whose codebook count can change after quantizing); undefined for the others. `shape` is the shape the
 * method sees (quantizationShape).
 */
export function exportLayout(params: MethodParams, shape: readonly number[]): ExportLayout | undefined {
  const size = shape.reduce((a, b) => a * b, 1);
  switch (params.name) {
    case 'affine': {
      const channels = channelCount(shape, params.granularity);
      const bitsPerWeight = size > 0 ? params.bits + (64 * channels) / size : params.bits;
      return { bits: params.bits, sideFloats: 2 * channels, bitsPerWeight };
    }
    case 'binary': {
      const channels = channelCount(shape, params.granularity);
      return { bits: 1, sideFloats: 2 * channels, bitsPerWeight: size > 0 ? 1 + (64 * channels) / size : 1 };
    }
    case 'ternary': {
      const channels = channelCount(shape, params.granularity);
      return { bits: 2, sideFloats: 4 * channels, bitsPerWeight: size > 0 ? 2 + (32 * 4 * channels) / size : 2 };
    }
    case 'pow2':
      return {
        bits: params.bits,
        sideFloats: 2 ** params.bits,
        bitsPerWeight: size > 0 ? params.bits + (32 * 2 ** params.bits) / size : params.bits,
      };
    case 'kmeans':
      return {
        bits: params.bits,
        sideFloats: 2 ** params.bits,
        bitsPerWeight: size > 0 ? params.bits + (32 * 2 ** params.bits) / size : 0,
      };
    case 'float16':
      return { bits: 16, sideFloats: 0, bitsPerWeight: 16 };
    default:
      return undefined;
  }
}

export interface ExportedTensor {
  encoding: Encoding;
  bitsPerWeight: number;
  storedAs: StoredAs;
  quantization?: StoredQuantization;
  /** The tensor's bytes in `model/`'s shards. */
  stored: Uint8Array;
  /** The codes bit-packed at the encoding's width (packed/weights.bin's code section). */
  packedCodes: Uint8Array;
  codeCount: number;
  error: TensorError;
}

/** A weight value is NaN or ±Infinity; the caller names it (src/model's checkFinite). */
export class NonFiniteValues extends RangeError {
  override name = 'NonFiniteValues';
}

/** Growable buffers, one per use, reused from tensor to tensor (one scratch per thread). */
export class ExportScratch {
  private readonly buffers = new Map<string, ArrayBuffer>();

  buffer(use: string, bytes: number): ArrayBuffer {
    let buffer = this.buffers.get(use);
    if (buffer === undefined || buffer.byteLength < bytes) {
      // Some headroom, so tensors of slowly growing size do not reallocate each time.
      buffer = new ArrayBuffer(Math.max(bytes, Math.ceil((buffer?.byteLength ?? 0) * 1.25)));
      this.buffers.set(use, buffer);
    }
    return buffer;
  }

  codes(count: number, bits: number): Uint8Array | Uint16Array {
    return bits <= 8
      ? new Uint8Array(this.buffer('codes', count), 0, count)
      : new Uint16Array(this.buffer('codes', 2 * count), 0, count);
  }

  floats(use: string, count: number): Float32Array {
    return new Float32Array(this.buffer(use, 4 * count), 0, count);
  }

  halves(count: number): Uint16Array {
    return new Uint16Array(this.buffer('halves', 2 * count), 0, count);
  }
}

function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * Quantizes one tensor with `params` (already a PTQ method's, overrides merged). `shape` is the method's view
 * (quantizationShape), `seed` the tensor's (tensorSeed). Throws NonFiniteValues for a NaN or ±Infinity.
 */
export function exportTensor(
  values: Float32Array,
  shape: readonly number[],
  params: MethodParams,
  seed: number,
  scratch: ExportScratch,
): ExportedTensor {
  if (params.name === 'affine' && params.range === 'minmax' && params.rounding === 'nearest') {
    return exportAffineMinMax(values, shape, params, scratch);
  }
  return exportWithMethod(values, shape, params, seed);
}

/** The packed code bytes: at 8 and 16 bits the little-endian codes are their own packing. */
function packedCodes(codes: Codes, bits: number): Uint8Array {
  if ((bits === 8 && codes instanceof Uint8Array) || (bits === 16 && codes instanceof Uint16Array))
    return bytesOf(codes);
  return packBits(codes, bits);
}

function exportAffineMinMax(
  values: Float32Array,
  shape: readonly number[],
  params: AffineParams,
  scratch: ExportScratch,
): ExportedTensor {
  const { bits, symmetric } = params;
  const size = values.length;
  const channels = channelCount(shape, params.granularity);
  const lo = new Float64Array(channels);
  const hi = new Float64Array(channels);
  if (channels === 1) {
    let low = 0;
    let high = 0;
    for (let i = 0; i < size; i++) {
      const w = values[i];
      if (w < low) low = w;
      else if (w > high) high = w;
    }
    lo[0] = low;
    hi[0] = high;
  } else {
    for (let base = 0; base < size; base += channels) {
      for (let c = 0; c < channels; c++) {
        const w = values[base + c];
        if (w < lo[c]) lo[c] = w;
        else if (w > hi[c]) hi[c] = w;
      }
    }
  }
  for (let c = 0; c < channels; c++) {
    if (!Number.isFinite(lo[c]) || !Number.isFinite(hi[c])) throw new NonFiniteValues('non-finite weight');
  }
  const grids = Array.from({ length: channels }, (_, c) => affineGrid(lo[c], hi[c], bits, symmetric));
  const scales = Float32Array.from(grids, (g) => g.scale);
  const mins = Float32Array.from(grids, (g) => g.min);
  const { minCode, maxCode } = grids[0] ?? { minCode: 0, maxCode: 2 ** bits - 1 };
  const codes = scratch.codes(size, bits);
  const encoding: Encoding = { kind: 'affine', bits, channels, scales, mins };
  const bitsPerWeight = size > 0 ? bits + (64 * channels) / size : bits;

  if (channels === 1) {
    // One grid: tfjs stores the codes themselves, and ŵ never needs to exist as an array.
    const inverse = 1 / grids[0].scale;
    const offset = grids[0].zeroPoint + 0.5;
    const s = grids[0].scale;
    const m = grids[0].min;
    let errorEnergy = 0;
    let signalEnergy = 0;
    let reconstructedEnergy = 0;
    let dot = 0;
    let maxAbsError = 0;
    for (let i = 0; i < size; i++) {
      const w = values[i];
      let t = w * inverse + offset;
      if (t < minCode) t = minCode;
      else if (t > maxCode) t = maxCode;
      const code = t | 0;
      codes[i] = code;
      const q = Math.fround(code * s + m);
      const e = w - q;
      errorEnergy += e * e;
      signalEnergy += w * w;
      reconstructedEnergy += q * q;
      dot += w * q;
      // Branch-free: a data-dependent sign test mispredicts half the time and costs 5× the whole loop.
      maxAbsError = Math.max(maxAbsError, Math.abs(e));
    }
    // A NaN passes the range scan unseen but poisons the signal energy.
    if (!Number.isFinite(signalEnergy)) throw new NonFiniteValues('non-finite weight');
    return {
      encoding,
      bitsPerWeight,
      storedAs: bits <= 8 ? 'uint8' : 'uint16',
      quantization: { dtype: bits <= 8 ? 'uint8' : 'uint16', min: mins[0], scale: scales[0] },
      stored: bytesOf(codes),
      packedCodes: packedCodes(codes, bits),
      codeCount: size,
      error: errorFromSums({ errorEnergy, signalEnergy, reconstructedEnergy, dot, maxAbsError }, size),
    };
  }

  // One grid per channel: stock TF.js cannot store the codes, so model/ gets ŵ as float16 when that adds at
  // most 1% to the squared error, else as float32; both candidates are measured in the same pass.
  const inverse = new Float64Array(channels);
  const offset = new Float64Array(channels);
  const scale = new Float64Array(channels);
  const min = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    inverse[c] = 1 / grids[c].scale;
    offset[c] = grids[c].zeroPoint + 0.5;
    scale[c] = grids[c].scale;
    min[c] = grids[c].min;
  }
  const dequantized = scratch.floats('dequantized', size);
  const dequantizedBits = new Uint32Array(dequantized.buffer, 0, size);
  const halves = scratch.halves(size);
  const full = newSums();
  const half = newSums();
  for (let base = 0; base < size; base += channels) {
    for (let c = 0; c < channels; c++) {
      const i = base + c;
      const w = values[i];
      let t = w * inverse[c] + offset[c];
      if (t < minCode) t = minCode;
      else if (t > maxCode) t = maxCode;
      const code = t | 0;
      codes[i] = code;
      dequantized[i] = code * scale[c] + min[c];
      const q = dequantized[i];
      const halfBits = halfOfFloat32Bits(dequantizedBits[i]);
      halves[i] = halfBits;
      const h = halfToFloat(halfBits);
      full.signalEnergy += w * w;
      accumulate(full, w, q);
      accumulate(half, w, h);
    }
  }
  if (!Number.isFinite(full.signalEnergy)) throw new NonFiniteValues('non-finite weight');
  half.signalEnergy = full.signalEnergy;
  return {
    encoding,
    bitsPerWeight,
    ...storedFloats(dequantized, halves, full, half, size),
    packedCodes: packedCodes(codes, bits),
    codeCount: size,
  };
}

function newSums(): ErrorSums {
  return { errorEnergy: 0, signalEnergy: 0, reconstructedEnergy: 0, dot: 0, maxAbsError: 0 };
}

/** Adds one (w, ŵ) pair to the sums but the signal energy, which both candidates share. */
function accumulate(sums: ErrorSums, w: number, q: number): void {
  const e = w - q;
  sums.errorEnergy += e * e;
  sums.reconstructedEnergy += q * q;
  sums.dot += w * q;
  sums.maxAbsError = Math.max(sums.maxAbsError, Math.abs(e));
}

/**
 * float16 when its rounding adds at most 1% to the method's squared error (then the report measures the
 * halves), else float32 values. (An all-exact float16 is within that 1%, so the writer's exact-halves rule
 * never picks anything else.)
 */
function storedFloats(
  dequantized: Float32Array,
  halves: Uint16Array,
  full: ErrorSums,
  half: ErrorSums,
  size: number,
): Pick<ExportedTensor, 'storedAs' | 'quantization' | 'stored' | 'error'> {
  if (half.errorEnergy <= full.errorEnergy * 1.01) {
    return {
      storedAs: 'float16',
      quantization: { dtype: 'float16' },
      stored: bytesOf(halves),
      error: errorFromSums(half, size),
    };
  }
  return { storedAs: 'float32', stored: bytesOf(dequantized), error: errorFromSums(full, size) };
}

function exportWithMethod(
  values: Float32Array,
  shape: readonly number[],
  params: MethodParams,
  seed: number,
): ExportedTensor {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new NonFiniteValues('non-finite weight');
  }
  const result: QuantizedTensor = getMethod(params.name).quantize(values, shape, params, createRng(seed));
  const { encoding, codes, dequantized, tfjsEncoding, bitsPerWeight } = result;
  const bits = encoding.kind === 'float16' ? 16 : encoding.bits;
  const size = values.length;
  const base = { encoding, bitsPerWeight, packedCodes: packedCodes(codes, bits), codeCount: codes.length };
  if (tfjsEncoding === undefined) {
    const halves = encodeFloat16(dequantized);
    const full = newSums();
    const half = newSums();
    for (let i = 0; i < size; i++) {
      const w = values[i];
      full.signalEnergy += w * w;
      accumulate(full, w, dequantized[i]);
      accumulate(half, w, halfToFloat(halves[i]));
    }
    half.signalEnergy = full.signalEnergy;
    return { ...base, ...storedFloats(dequantized, halves, full, half, size) };
  }
  const sums = newSums();
  for (let i = 0; i < size; i++) {
    sums.signalEnergy += values[i] * values[i];
    accumulate(sums, values[i], dequantized[i]);
  }
  const error = errorFromSums(sums, size);
  if (tfjsEncoding.dtype === 'float16') {
    return { ...base, storedAs: 'float16', quantization: { dtype: 'float16' }, stored: bytesOf(codes), error };
  }
  const { dtype, min, scale } = tfjsEncoding;
  const stored =
    dtype === 'uint8'
      ? codes instanceof Uint8Array
        ? codes
        : Uint8Array.from(codes)
      : codes instanceof Uint16Array
        ? codes
        : Uint16Array.from(codes);
  return { ...base, storedAs: dtype, quantization: { dtype, min, scale }, stored: bytesOf(stored), error };
}

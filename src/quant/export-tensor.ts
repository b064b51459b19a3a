/**
 * One weight tensor, from its float values to everything the artifacts hold of it: the bytes `model/` stores
 * (and how its manifest entry describes them), the bit-packed codes and side information of `packed/`, and
 * the report's error measures. The streaming PTQ (src/pipeline/stream.ts) calls it once per tensor, on the
 * main thread or in a worker thread; the results are the in-memory pipeline's (src/pipeline/ptq.ts) bit for
 * bit, which the byte-identity test checks.
 *
 * Affine with minmax ranges and nearest rounding is fused (export-affine.ts). Every other method quantizes
 * through its own module, then one pass measures the error and decides float16 storage together.
 *
 * Outputs are views into `ExportScratch` buffers that the next call reuses.
 */
import {
  accumulate,
  bytesOf,
  exportAffineMinMax,
  isFusedAffine,
  newSums,
  NonFiniteValues,
  packedCodes,
  storedFloats,
  type ExportedTensor,
  type ExportScratch,
} from './export-affine.js';
import { encodeFloat16, halfToFloat } from './float16.js';
import { channelCount } from './methods/grid.js';
import { getMethod, type MethodParams } from './methods/index.js';
import { pqLayout } from './methods/pq.js';
import { errorFromSums } from './metrics.js';
import { createRng } from './rng.js';
import type { QuantizedTensor } from './types.js';

export {
  ExportScratch,
  NonFiniteValues,
  type ExportedTensor,
  type StoredAs,
  type StoredQuantization,
} from './export-affine.js';

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
 * A tensor's packed layout under `params`, which follows from its shape for every method. `shape` is the
 * shape the method sees (quantizationShape); pq's params are the ones pqCodebooksFor chose for it.
 */
export function exportLayout(params: MethodParams, shape: readonly number[]): ExportLayout {
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
    case 'pq': {
      const { codebookFloats, bitsPerWeight } = pqLayout(params, shape);
      return { bits: params.bits, sideFloats: codebookFloats, bitsPerWeight };
    }
  }
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
  if (isFusedAffine(params)) return exportAffineMinMax(values, shape, params, scratch);
  return exportWithMethod(values, shape, params, seed);
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

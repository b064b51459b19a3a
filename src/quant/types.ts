/**
 * The shapes every quantization method shares. A method maps one float32 tensor to integer codes plus the
 * side information (scales, codebooks) that turns the codes back into values; `dequantized` is exactly what
 * that decoding yields, so the stock-loadable model, the packed form and the report all agree bit for bit.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { Rng } from './rng.js';

export type Codes = Uint8Array | Uint16Array | Uint32Array;

/**
 * How codes become values. `channels` is 1 for per-tensor side information, otherwise the size of the last
 * axis of the shape the method was given: element i of the row-major tensor belongs to channel
 * i % channels (tfjs kernels keep the output channel last; a depthwise kernel's in × multiplier output
 * channels are its last two axes, which the caller merges into one).
 */
export type Encoding =
  /** value = fround(code * scales[c] + mins[c]), evaluated in float64 like tfjs's own dequantization. */
  | { kind: 'affine'; bits: number; channels: number; scales: Float32Array; mins: Float32Array }
  /** value = codebook[c * 2^bits + code]. */
  | { kind: 'codebook'; bits: number; channels: number; codebook: Float32Array }
  /** codes are IEEE 754 half-precision bit patterns. */
  | { kind: 'float16' }
  /**
   * Product quantization. The tensor is viewed as [R, C] (C = last axis). Sub-vector (j, c) holds rows
   * j*d .. min(R, (j+1)*d) - 1 of column c; block j is sub-space j with its own codebook of 2^bits
   * centroids of length d, laid out [subspaces][2^bits][d]. codes are ordered [j][c]. subspaces = 1 with
   * ⌈R/d⌉ > 1 blocks means one codebook shared by every block.
   */
  | { kind: 'pq'; bits: number; subvectorLength: number; subspaces: number; codebook: Float32Array };

/** How the stock TF.js manifest can store the tensor exactly (docs/report.md); absent → plain float values. */
export type TfjsEncoding = { dtype: 'uint8' | 'uint16'; min: number; scale: number } | { dtype: 'float16' };

export interface QuantizedTensor {
  /** The values the quantized model computes with: decode(codes, encoding), bit-exact. */
  dequantized: Float32Array;
  /** One code per weight (pq: one per sub-vector), each < 2^encoding.bits. */
  codes: Codes;
  encoding: Encoding;
  /** Storage cost per weight in the packed form, side information (scales, codebooks) included. */
  bitsPerWeight: number;
  /** Set when `codes` can be written into model.json's manifest as is (codes ARE the stored integers). */
  tfjsEncoding?: TfjsEncoding;
}

/** One method = a params schema + a pure quantize function (docs/methods.md). */
export interface QuantMethod<S extends TSchema = TSchema> {
  name: string;
  /** One line for `--help` and error messages. */
  summary: string;
  params: S;
  quantize(weights: Float32Array, shape: readonly number[], params: Static<S>, rng: Rng): QuantizedTensor;
}

/** What evaluation measures (src/quant/evaluate.ts); jobs record it per stage. */
export type MetricName = 'accuracy' | 'top5' | 'mse' | 'mae' | 'agreement' | 'sqnrDb';

export interface Metrics {
  accuracy?: number;
  top5?: number;
  mse?: number;
  mae?: number;
  agreement?: number;
  sqnrDb?: number | null;
  samples: number;
}

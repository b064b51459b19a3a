/**
 * Uniform affine quantization (Guo 2018 §3.1; the scheme of Jacob et al. 2018, "Quantization and Training of
 * Neural Networks for Efficient Integer-Arithmetic-Only Inference").
 *
 *   asymmetric: s = (max − min)/(2^b − 1), z = round(−min/s), q = clamp(round(w/s) + z, 0, 2^b − 1), ŵ = s(q − z)
 *   symmetric:  s = max|w|/(2^(b−1) − 1), ŵ = s·clamp(round(w/s), −(2^(b−1) − 1), 2^(b−1) − 1)
 *
 * Symmetric codes are stored as q + 2^(b−1) (so in [1, 2^b − 1]): with a power-of-two zero point, s·z is
 * exact in float32 and zero decodes to exactly 0. The range [min, max] always contains 0 and comes from
 * `minmax`, a `percentile` of the values (|w| when symmetric), or `mse`: the clipping α·[min, max] minimising
 * ‖w − ŵ‖² over α ∈ {1, 0.99, …, 0.11}, searched on a seeded row subsample so big tensors stay cheap.
 *
 * The asymmetric grid [−s·z, s·(2^b − 1 − z)] is the range shifted by the rounding of z (under s/2), so values
 * in that outer half step clip to the end code: their error stays ≤ s/2, and stochastic rounding (q = floor(w/s
 * + u) + z, u ~ U[0,1)) is unbiased everywhere inside the grid.
 *
 * Decoding is value = fround(code·scale + min) in float64, exactly how tfjs dequantizes a uint8/uint16
 * manifest entry, with scale and min float32 and min = −scale·z. When scale·z is not exact in float32 the
 * asymmetric scale is rounded up to 24 − bitlength(z) significant bits (a relative step increase below
 * 2^−(24−b)), which again makes zero decode to exactly 0.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { Granularity, Rounding, channelCount, codeArray, seedField } from './common.js';
import { affineGrid, type AffineGrid } from './grid.js';

export { affineGrid, type AffineGrid } from './grid.js';

export const AffineParams = Type.Object(
  {
    name: Type.Literal('affine', { default: 'affine' }),
    bits: Type.Integer({ minimum: 2, maximum: 16, default: 8, description: 'code width; 2^bits levels' }),
    symmetric: Type.Boolean({ default: false, description: 'zero point fixed at the middle: s = max|w|/(2^(b−1)−1)' }),
    granularity: Granularity,
    rounding: Rounding,
    range: Type.Union([Type.Literal('minmax'), Type.Literal('percentile'), Type.Literal('mse')], {
      default: 'minmax',
      description: 'how the clipping range is chosen: extremes, a percentile, or the range minimising ‖w − ŵ‖²',
    }),
    percentile: Type.Number({
      exclusiveMinimum: 50,
      maximum: 100,
      default: 99.99,
      description: 'range "percentile": clip at this percentile (of |w| when symmetric, both tails otherwise)',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type AffineParams = Static<typeof AffineParams>;

/** Candidate clipping factors of range "mse", widest first so ties keep the wider range. */
const MSE_CLIP_FACTORS = Array.from({ length: 90 }, (_, k) => 1 - k / 100);
/** Rows sampled for the mse search: at least this many per channel ... */
const MSE_MIN_SAMPLES_PER_CHANNEL = 256;
/** ... and about this many values over all channels. */
const MSE_SAMPLE_BUDGET = 1 << 18;

/** Per-channel [lo, hi] of the values, widened to contain 0. Element i belongs to channel i % channels. */
function minMaxRanges(weights: Float32Array, channels: number): { lo: Float64Array; hi: Float64Array } {
  const lo = new Float64Array(channels);
  const hi = new Float64Array(channels);
  if (channels === 1) {
    let low = 0;
    let high = 0;
    for (let i = 0; i < weights.length; i++) {
      const w = weights[i];
      if (w < low) low = w;
      else if (w > high) high = w;
    }
    lo[0] = low;
    hi[0] = high;
  } else {
    for (let base = 0; base < weights.length; base += channels) {
      for (let c = 0; c < channels; c++) {
        const w = weights[base + c];
        if (w < lo[c]) lo[c] = w;
        else if (w > hi[c]) hi[c] = w;
      }
    }
  }
  for (let c = 0; c < channels; c++) {
    if (!Number.isFinite(lo[c]) || !Number.isFinite(hi[c])) throw new Error('affine: weights must be finite');
  }
  return { lo, hi };
}

/** The k-th smallest (0-based) of `values`, which it partially reorders (Hoare quickselect). */
export function selectKth(values: Float32Array, k: number): number {
  let left = 0;
  let right = values.length - 1;
  while (right > left) {
    const middle = (left + right) >>> 1;
    const a = values[left];
    const b = values[middle];
    const c = values[right];
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
    let i = left;
    let j = right;
    while (i <= j) {
      while (values[i] < pivot) i++;
      while (values[j] > pivot) j--;
      if (i <= j) {
        const swap = values[i];
        values[i] = values[j];
        values[j] = swap;
        i++;
        j--;
      }
    }
    if (k <= j) right = j;
    else if (k >= i) left = i;
    else return values[k];
  }
  return values[k];
}

/**
 * Percentile clipping per channel: the smallest value with at least p% of the channel at or below it (and its
 * mirror image for the lower tail), of |w| when symmetric.
 */
function percentileRanges(
  weights: Float32Array,
  channels: number,
  percentile: number,
  symmetric: boolean,
): { lo: Float64Array; hi: Float64Array } {
  const rows = channels === 0 ? 0 : weights.length / channels;
  const lo = new Float64Array(channels);
  const hi = new Float64Array(channels);
  if (rows === 0) return { lo, hi };
  const upperIndex = Math.min(rows - 1, Math.max(0, Math.ceil((percentile / 100) * rows) - 1));
  const lowerIndex = rows - 1 - upperIndex;
  const column = new Float32Array(rows);
  for (let c = 0; c < channels; c++) {
    for (let r = 0; r < rows; r++) {
      const w = weights[r * channels + c];
      column[r] = symmetric ? Math.abs(w) : w;
    }
    const upper = selectKth(column, upperIndex);
    if (symmetric) {
      lo[c] = -upper;
      hi[c] = upper;
    } else {
      lo[c] = Math.min(0, selectKth(column, lowerIndex));
      hi[c] = Math.max(0, upper);
    }
    if (!Number.isFinite(lo[c]) || !Number.isFinite(hi[c])) throw new Error('affine: weights must be finite');
  }
  return { lo, hi };
}

/** Σ (w − ŵ)² of `values` on `grid`, rounding to nearest exactly as the quantizer does. */
function squaredError(values: Float32Array, start: number, end: number, grid: AffineGrid): number {
  const inverse = 1 / grid.scale;
  const offset = grid.zeroPoint + 0.5;
  const { scale, min, minCode, maxCode } = grid;
  let sum = 0;
  for (let i = start; i < end; i++) {
    const w = values[i];
    let t = w * inverse + offset;
    if (t < minCode) t = minCode;
    else if (t > maxCode) t = maxCode;
    const error = w - Math.fround((t | 0) * scale + min);
    sum += error * error;
  }
  return sum;
}

/** Range "mse": per channel, the factor α scaling the min/max range that minimises ‖w − ŵ‖² on a row sample. */
function mseRanges(
  weights: Float32Array,
  channels: number,
  bits: number,
  symmetric: boolean,
  rng: Rng,
): { lo: Float64Array; hi: Float64Array } {
  const { lo, hi } = minMaxRanges(weights, channels);
  const rows = channels === 0 ? 0 : weights.length / channels;
  const perChannel = Math.min(rows, Math.max(MSE_MIN_SAMPLES_PER_CHANNEL, Math.floor(MSE_SAMPLE_BUDGET / channels)));
  const sampledRows = new Int32Array(perChannel);
  for (let j = 0; j < perChannel; j++) sampledRows[j] = perChannel === rows ? j : rng.int(rows);
  // Channel-major so each candidate's error is one contiguous scan.
  const sample = new Float32Array(perChannel * channels);
  for (let j = 0; j < perChannel; j++) {
    const base = sampledRows[j] * channels;
    for (let c = 0; c < channels; c++) sample[c * perChannel + j] = weights[base + c];
  }
  for (let c = 0; c < channels; c++) {
    let bestFactor = 1;
    let bestError = Infinity;
    for (const factor of MSE_CLIP_FACTORS) {
      const grid = affineGrid(factor * lo[c], factor * hi[c], bits, symmetric);
      const error = squaredError(sample, c * perChannel, (c + 1) * perChannel, grid);
      if (error < bestError) {
        bestError = error;
        bestFactor = factor;
      }
    }
    lo[c] *= bestFactor;
    hi[c] *= bestFactor;
  }
  return { lo, hi };
}

/**
 * The hot pass: codes and dequantized values for every weight, iterating rows × channels so no element pays
 * a modulo. Rounding to nearest is floor(w·(1/s) + z + 0.5) on a value clamped to [minCode, maxCode] (so it is
 * non-negative and `| 0` floors it); stochastic rounding adds u ~ U[0,1) instead of 0.5.
 */
function quantizeChannels(
  weights: Float32Array,
  channels: number,
  grids: AffineGrid[],
  codes: Uint8Array | Uint16Array | Uint32Array,
  dequantized: Float32Array,
  rng: Rng | null,
): void {
  const { minCode, maxCode } = grids[0];
  const inverse = new Float64Array(channels);
  const offset = new Float64Array(channels);
  const scale = new Float64Array(channels);
  const min = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    inverse[c] = 1 / grids[c].scale;
    offset[c] = grids[c].zeroPoint + (rng ? 0 : 0.5);
    scale[c] = grids[c].scale;
    min[c] = grids[c].min;
  }
  if (rng) {
    for (let base = 0; base < weights.length; base += channels) {
      for (let c = 0; c < channels; c++) {
        const i = base + c;
        let t = weights[i] * inverse[c] + offset[c] + rng.next();
        if (t < minCode) t = minCode;
        else if (t > maxCode) t = maxCode;
        const code = t | 0;
        codes[i] = code;
        dequantized[i] = code * scale[c] + min[c];
      }
    }
  } else if (channels === 1) {
    const inv = inverse[0];
    const off = offset[0];
    const s = scale[0];
    const m = min[0];
    for (let i = 0; i < weights.length; i++) {
      let t = weights[i] * inv + off;
      if (t < minCode) t = minCode;
      else if (t > maxCode) t = maxCode;
      const code = t | 0;
      codes[i] = code;
      dequantized[i] = code * s + m;
    }
  } else {
    for (let base = 0; base < weights.length; base += channels) {
      for (let c = 0; c < channels; c++) {
        const i = base + c;
        let t = weights[i] * inverse[c] + offset[c];
        if (t < minCode) t = minCode;
        else if (t > maxCode) t = maxCode;
        const code = t | 0;
        codes[i] = code;
        dequantized[i] = code * scale[c] + min[c];
      }
    }
  }
}

export const affine: QuantMethod<typeof AffineParams> = {
  name: 'affine',
  summary: 'uniform affine (scale + zero point), 2–16 bits, symmetric or asymmetric, per tensor or per channel',
  params: AffineParams,
  quantize(weights: Float32Array, shape: readonly number[], params: AffineParams, rng: Rng): QuantizedTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (weights.length !== size) throw new Error(`affine: ${weights.length} values for shape [${shape.join(', ')}]`);
    const { bits, symmetric } = params;
    const channels = channelCount(shape, params.granularity);
    const { lo, hi } =
      params.range === 'percentile'
        ? percentileRanges(weights, channels, params.percentile, symmetric)
        : params.range === 'mse'
          ? mseRanges(weights, channels, bits, symmetric, rng)
          : minMaxRanges(weights, channels);
    const grids = Array.from({ length: channels }, (_, c) => affineGrid(lo[c], hi[c], bits, symmetric));
    const scales = Float32Array.from(grids, (g) => g.scale);
    const mins = Float32Array.from(grids, (g) => g.min);
    const codes = codeArray(size, bits);
    const dequantized = new Float32Array(size);
    if (channels > 0) {
      quantizeChannels(weights, channels, grids, codes, dequantized, params.rounding === 'stochastic' ? rng : null);
    }
    const result: QuantizedTensor = {
      dequantized,
      codes,
      encoding: { kind: 'affine', bits, channels, scales, mins },
      bitsPerWeight: size > 0 ? bits + (64 * channels) / size : bits,
    };
    if (channels === 1) result.tfjsEncoding = { dtype: bits <= 8 ? 'uint8' : 'uint16', min: mins[0], scale: scales[0] };
    return result;
  },
};

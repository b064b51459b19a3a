/**
 * The straight-through estimator's clip ranges (Bengio et al. 2013; BinaryConnect, Courbariaux et al. 2015).
 * Q(w) is flat almost everywhere, so the backward pass uses the gradient at Q(w) as the gradient at w
 * ("identity"), or that gradient times 1[lo ≤ w ≤ hi] ("clipped"): zero where the quantizer saturates, so a
 * shadow weight that no longer changes its quantized value stops drifting away.
 *
 * The interval [lo, hi] of each channel, read from the method's own encoding (so it is the range of the
 * quantizer that ran, whatever its range choice):
 * - affine: the grid's end levels widened by half a step, [min + s·minCode − s/2, min + s·maxCode + s/2]:
 *   exactly the weights that rounding (not clipping) maps, so the gradient is zero where the grid saturates
 *   (only ranges narrower than the weights, i.e. percentile or mse, ever clip);
 * - codebook methods (binary, ternary, pow2, kmeans): [smallest level, largest level]. For binary that is
 *   |w| ≤ α, BinaryConnect's |w| ≤ 1 with the hard tanh scaled by α, the same scaling as the binary module's
 *   stochastic hard sigmoid; for ternary |w| ≤ α, for pow2 |w| ≤ 2^n1;
 * - float16 and pq: no clipping (float16 saturates only past 65504; a pq codeword has no per-weight range).
 */
import type { QuantizedTensor } from '../types.js';

export type SteMode = 'identity' | 'clipped';

export interface ClipRange {
  /** Channel of element i is i % channels (the encoding's convention). */
  channels: number;
  lo: Float64Array;
  hi: Float64Array;
}

/**
 * The clip interval of each channel of `quantized`, or undefined when the method has none. `symmetric`
 * is the affine params' flag: symmetric grids leave code 0 unused.
 */
export function clipRange(quantized: QuantizedTensor, symmetric = false): ClipRange | undefined {
  const { encoding } = quantized;
  if (encoding.kind === 'affine') {
    const { channels, scales, mins, bits } = encoding;
    const minCode = symmetric ? 1 : 0;
    const maxCode = 2 ** bits - 1;
    const lo = new Float64Array(channels);
    const hi = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      const scale = scales[c];
      lo[c] = mins[c] + scale * minCode - scale / 2;
      hi[c] = mins[c] + scale * maxCode + scale / 2;
    }
    return { channels, lo, hi };
  }
  if (encoding.kind === 'codebook') {
    const { channels, codebook } = encoding;
    const levels = 2 ** encoding.bits;
    const lo = new Float64Array(channels).fill(Infinity);
    const hi = new Float64Array(channels).fill(-Infinity);
    for (let c = 0; c < channels; c++) {
      for (let k = c * levels; k < (c + 1) * levels; k++) {
        lo[c] = Math.min(lo[c], codebook[k]);
        hi[c] = Math.max(hi[c], codebook[k]);
      }
    }
    return { channels, lo, hi };
  }
  return undefined;
}

/**
 * 1 where the weight lies inside its channel's clip interval, 0 outside; undefined when every weight is
 * inside (the gradient then passes unchanged and needs no multiply).
 */
export function steMask(weights: Float32Array, range: ClipRange | undefined): Float32Array | undefined {
  if (range === undefined) return undefined;
  const { channels, lo, hi } = range;
  let mask: Float32Array | undefined;
  for (let base = 0; base < weights.length; base += channels) {
    for (let c = 0; c < channels; c++) {
      const w = weights[base + c];
      if (w >= lo[c] && w <= hi[c]) continue;
      if (mask === undefined) mask = new Float32Array(weights.length).fill(1);
      mask[base + c] = 0;
    }
  }
  return mask;
}

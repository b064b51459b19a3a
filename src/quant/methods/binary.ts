/**
 * Binarization with a scaling factor (XNOR-Net, Rastegari et al. 2016): B = sign(W) with sign(0) = +1 and
 * α = ‖W‖₁/n, the minimiser of J(B, α) = ‖W − αB‖², per tensor or per output channel (the last axis).
 * Stochastic binarization follows BinaryConnect (Courbariaux et al. 2015) with the hard sigmoid scaled by α:
 * P(+1) = clip((w/α + 1)/2, 0, 1), so E[ŵ] = w for |w| ≤ α.
 *
 * Codes 0 → −α, 1 → +α. α is rounded to float32 first, so the tfjs manifest form {0,1} with min = −α,
 * scale = 2α decodes (code·2α − α, in float64) to exactly ±α.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { Granularity, channelCount, seedField } from './common.js';

export const BinaryParams = Type.Object(
  {
    name: Type.Literal('binary', { default: 'binary' }),
    granularity: Granularity,
    stochastic: Type.Boolean({
      default: false,
      description: 'BinaryConnect: +α with probability clip((w/α+1)/2, 0, 1)',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type BinaryParams = Static<typeof BinaryParams>;

/** Mean |w| per channel (element i in channel i % channels), as float32. */
export function meanAbsolute(weights: Float32Array, channels: number): Float32Array {
  const sums = new Float64Array(channels);
  for (let base = 0; base < weights.length; base += channels) {
    for (let c = 0; c < channels; c++) sums[c] += Math.abs(weights[base + c]);
  }
  const rows = channels === 0 ? 0 : weights.length / channels;
  return Float32Array.from(sums, (sum) => (rows > 0 ? sum / rows : 0));
}

export const binary: QuantMethod<typeof BinaryParams> = {
  name: 'binary',
  summary: 'XNOR-Net binarization ±α with α = mean |w| (BinaryConnect sampling when stochastic), 1 bit',
  params: BinaryParams,
  quantize(weights: Float32Array, shape: readonly number[], params: BinaryParams, rng: Rng): QuantizedTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (weights.length !== size) throw new Error(`binary: ${weights.length} values for shape [${shape.join(', ')}]`);
    const channels = channelCount(shape, params.granularity);
    const alphas = meanAbsolute(weights, channels);
    const codebook = new Float32Array(2 * channels);
    for (let c = 0; c < channels; c++) {
      codebook[2 * c] = -alphas[c];
      codebook[2 * c + 1] = alphas[c];
    }
    const codes = new Uint8Array(size);
    const dequantized = new Float32Array(size);
    for (let base = 0; base < size; base += channels) {
      for (let c = 0; c < channels; c++) {
        const i = base + c;
        const w = weights[i];
        const alpha = alphas[c];
        let code: number;
        if (!params.stochastic) code = w >= 0 ? 1 : 0;
        else if (alpha === 0) code = 1;
        else code = rng.next() < (w / alpha + 1) / 2 ? 1 : 0;
        codes[i] = code;
        dequantized[i] = code === 1 ? alpha : -alpha;
      }
    }
    const result: QuantizedTensor = {
      dequantized,
      codes,
      encoding: { kind: 'codebook', bits: 1, channels, codebook },
      // The packed form stores the codebook (−α, +α) of each channel as two float32.
      bitsPerWeight: size > 0 ? 1 + (64 * channels) / size : 1,
    };
    if (channels === 1) result.tfjsEncoding = { dtype: 'uint8', min: -alphas[0], scale: 2 * alphas[0] };
    return result;
  },
};

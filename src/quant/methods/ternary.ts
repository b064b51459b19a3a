/**
 * Ternary Weight Networks (Li & Liu 2016): Δ = t·mean|W| with t = 0.7 by default (TWN's approximation of the
 * optimal threshold for Gaussian/uniform weights), ŵ = α·sign(w)·[|w| > Δ], and α = mean of |w| over
 * {|w| > Δ} (0 when that set is empty), the α minimising ‖W − ŵ‖² for that support. Per tensor or per output
 * channel (the last axis).
 *
 * Codes 0 → −α, 1 → 0, 2 → +α. α is float32, so the tfjs manifest form {0,1,2} with min = −α, scale = α
 * decodes (code·α − α, in float64) to exactly −α, 0, +α.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { meanAbsolute } from './binary.js';
import { Granularity, channelCount, seedField } from './common.js';

export const TernaryParams = Type.Object(
  {
    name: Type.Literal('ternary', { default: 'ternary' }),
    granularity: Granularity,
    thresholdFactor: Type.Number({
      minimum: 0,
      maximum: 3,
      default: 0.7,
      description: 'Δ = thresholdFactor · mean|W|; weights with |w| ≤ Δ become 0',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type TernaryParams = Static<typeof TernaryParams>;

/** Codebook entries per channel: 2^2, of which codes 0, 1, 2 are used. */
const LEVELS = 4;

export const ternary: QuantMethod<typeof TernaryParams> = {
  name: 'ternary',
  summary: 'TWN ternary {−α, 0, +α} with Δ = 0.7·mean|W|, 2 bits',
  params: TernaryParams,
  quantize(weights: Float32Array, shape: readonly number[], params: TernaryParams): QuantizedTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (weights.length !== size) throw new Error(`ternary: ${weights.length} values for shape [${shape.join(', ')}]`);
    const channels = channelCount(shape, params.granularity);
    const thresholds = Float64Array.from(meanAbsolute(weights, channels), (mean) => params.thresholdFactor * mean);
    const keptSums = new Float64Array(channels);
    const keptCounts = new Float64Array(channels);
    const codes = new Uint8Array(size);
    for (let base = 0; base < size; base += channels) {
      for (let c = 0; c < channels; c++) {
        const w = weights[base + c];
        const delta = thresholds[c];
        if (w > delta) {
          codes[base + c] = 2;
          keptSums[c] += w;
          keptCounts[c]++;
        } else if (w < -delta) {
          keptSums[c] -= w;
          keptCounts[c]++;
        } else {
          codes[base + c] = 1;
        }
      }
    }
    const codebook = new Float32Array(LEVELS * channels);
    for (let c = 0; c < channels; c++) {
      const alpha = Math.fround(keptCounts[c] > 0 ? keptSums[c] / keptCounts[c] : 0);
      codebook[LEVELS * c] = -alpha;
      codebook[LEVELS * c + 2] = alpha;
    }
    const dequantized = new Float32Array(size);
    for (let base = 0; base < size; base += channels) {
      for (let c = 0; c < channels; c++) dequantized[base + c] = codebook[LEVELS * c + codes[base + c]];
    }
    const result: QuantizedTensor = {
      dequantized,
      codes,
      encoding: { kind: 'codebook', bits: 2, channels, codebook },
      // The packed form stores each channel's 4-entry codebook as float32.
      bitsPerWeight: size > 0 ? 2 + (32 * LEVELS * channels) / size : 2,
    };
    if (channels === 1) result.tfjsEncoding = { dtype: 'uint8', min: -codebook[2], scale: codebook[2] };
    return result;
  },
};

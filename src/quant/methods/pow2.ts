/**
 * Logarithmic (power-of-two) quantization as in INQ (Zhou et al. 2017, "Incremental Network Quantization"):
 * levels P = {0} ∪ {±2^k : n2 ≤ k ≤ n1}, n1 = floor(log2(4·max|W|/3)), n2 = n1 − (2^(b−1) − 1) + 1, so b bits
 * hold zero and the 2^(b−1) − 1 largest powers on each side. One codebook per tensor.
 *
 * Rounding rule (INQ's): ŵ is the level nearest to w in linear distance, i.e. between neighbours β' < β of
 * {0, 2^n2, …, 2^n1}, |w| maps to β when (β' + β)/2 ≤ |w|. That is sign(w)·2^round(log2|w|) with the
 * rounding point of each octave at 1.5·2^k (INQ's) rather than the geometric √2·2^k, which minimises
 * |w − ŵ| and is what makes max|W| < 1.5·2^n1 land on 2^n1. Exactly:
 *   - ties (|w| = 1.5·2^k) go to the larger magnitude;
 *   - |w| < 2^(n2−1) → 0, and |w| = 2^(n2−1) → 2^n2 (a tie between 0 and the smallest power);
 *   - |w| ≥ 2^n1 → 2^n1; zero results are +0 whatever the sign of w.
 * Stochastic rounding picks one of the two neighbouring levels β' ≤ |w| < β with P(β) = (|w| − β')/(β − β'),
 * so E[ŵ] = w for |w| ≤ 2^n1 (magnitudes in (2^n1, max|W|] clip to 2^n1).
 *
 * Codes index a sorted codebook: 2^(b−1) − 1 is zero, ±(m + 1) from it is ±2^(n2+m); the last code is unused.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { Rounding, seedField } from './common.js';

export const Pow2Params = Type.Object(
  {
    name: Type.Literal('pow2', { default: 'pow2' }),
    bits: Type.Integer({
      minimum: 2,
      maximum: 8,
      default: 4,
      description: 'zero and 2^(bits−1) − 1 powers of two per sign',
    }),
    rounding: Rounding,
    ...seedField,
  },
  { additionalProperties: false },
);
export type Pow2Params = Static<typeof Pow2Params>;

function exponentOf(x: number): number {
  let exponent = Math.floor(Math.log2(x));
  if (2 ** exponent > x) exponent--;
  else if (2 ** (exponent + 1) <= x) exponent++;
  return exponent;
}

/** INQ's largest exponent for a tensor whose largest magnitude is `maxAbs`; capped so 2^n1 is a finite float32. */
export function largestExponent(maxAbs: number): number {
  return maxAbs > 0 ? Math.min(127, exponentOf((4 * maxAbs) / 3)) : 0;
}

export const pow2: QuantMethod<typeof Pow2Params> = {
  name: 'pow2',
  summary: 'logarithmic (INQ): zero or ±2^k, the 2^(bits−1) − 1 largest powers below 4·max|w|/3',
  params: Pow2Params,
  quantize(weights: Float32Array, shape: readonly number[], params: Pow2Params, rng: Rng): QuantizedTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (weights.length !== size) throw new Error(`pow2: ${weights.length} values for shape [${shape.join(', ')}]`);
    const { bits } = params;
    const powers = 2 ** (bits - 1) - 1;
    const zeroCode = powers;
    let maxAbs = 0;
    for (let i = 0; i < size; i++) maxAbs = Math.max(maxAbs, Math.abs(weights[i]));
    if (!Number.isFinite(maxAbs)) throw new Error('pow2: weights must be finite');
    const n1 = largestExponent(maxAbs);
    const n2 = n1 - powers + 1;
    // levels[m] = 2^(n2+m) for m in 0..powers-1, in float64 so comparisons are exact even where float32 flushes.
    const levels = Float64Array.from({ length: powers }, (_, m) => 2 ** (n2 + m));
    const codebook = new Float32Array(2 ** bits);
    for (let m = 0; m < powers; m++) {
      codebook[zeroCode + 1 + m] = levels[m];
      codebook[zeroCode - 1 - m] = -levels[m];
    }
    const smallest = levels[0];
    const largest = levels[powers - 1];
    const stochastic = params.rounding === 'stochastic';
    const words = new Uint32Array(weights.buffer, weights.byteOffset, size);
    const codes = new Uint8Array(size);
    const dequantized = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      const w = weights[i];
      const magnitude = Math.abs(w);
      // Index of the chosen power (m), or −1 for zero.
      let m: number;
      if (magnitude >= largest) {
        m = powers - 1;
      } else if (magnitude < smallest) {
        const up = stochastic ? rng.next() < magnitude / smallest : magnitude >= smallest / 2;
        m = up ? 0 : -1;
      } else {
        const biased = (words[i] >>> 23) & 0xff;
        const k = (biased > 0 ? biased - 127 : exponentOf(magnitude)) - n2;
        const lower = levels[k];
        const up = stochastic ? rng.next() < (magnitude - lower) / lower : magnitude >= 1.5 * lower;
        m = up ? k + 1 : k;
      }
      const code = m < 0 ? zeroCode : w < 0 ? zeroCode - 1 - m : zeroCode + 1 + m;
      codes[i] = code;
      dequantized[i] = codebook[code];
    }
    return {
      dequantized,
      codes,
      encoding: { kind: 'codebook', bits, channels: 1, codebook },
      // The packed form stores the 2^bits-entry codebook as float32.
      bitsPerWeight: size > 0 ? bits + (32 * 2 ** bits) / size : bits,
    };
  },
};

/** Error measures between a float tensor and its quantized reconstruction, in one fused pass. */

export interface TensorError {
  /** mean((w − ŵ)²) */
  mse: number;
  /**
   * 10·log10(Σw² / Σ(w − ŵ)²), at most EXACT_SQNR_DB: an exact reconstruction is as good as float32 itself
   * (infinite SQNR has no JSON form, and a null would read as "not measured").
   */
  sqnrDb: number;
  maxAbsError: number;
  /** ⟨w, ŵ⟩ / (‖w‖·‖ŵ‖); 1 when both are zero. */
  cosine: number;
}

/** The SQNR of float32 rounding: noise energy 2^-48 of the signal's (half an ulp at 24 bits, squared). */
export const EXACT_SQNR_DB = 10 * Math.log10(2 ** 48);

export function tensorError(original: Float32Array, reconstructed: Float32Array): TensorError {
  if (original.length !== reconstructed.length) {
    throw new RangeError(`length mismatch: ${original.length} vs ${reconstructed.length}`);
  }
  let errorEnergy = 0;
  let signalEnergy = 0;
  let reconstructedEnergy = 0;
  let dot = 0;
  let maxAbsError = 0;
  for (let i = 0; i < original.length; i++) {
    const w = original[i];
    const q = reconstructed[i];
    const e = w - q;
    errorEnergy += e * e;
    signalEnergy += w * w;
    reconstructedEnergy += q * q;
    dot += w * q;
    const a = e < 0 ? -e : e;
    if (a > maxAbsError) maxAbsError = a;
  }
  const n = original.length || 1;
  const norms = Math.sqrt(signalEnergy) * Math.sqrt(reconstructedEnergy);
  return {
    mse: errorEnergy / n,
    sqnrDb: errorEnergy <= signalEnergy * 2 ** -48 ? EXACT_SQNR_DB : 10 * Math.log10(signalEnergy / errorEnergy),
    maxAbsError,
    cosine: norms === 0 ? (signalEnergy === reconstructedEnergy ? 1 : 0) : dot / norms,
  };
}

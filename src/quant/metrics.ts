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

/** The running sums of one fused pass over (w, ŵ) pairs, in index order; `errorFromSums` finishes them. */
export interface ErrorSums {
  errorEnergy: number;
  signalEnergy: number;
  reconstructedEnergy: number;
  dot: number;
  maxAbsError: number;
}

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
    // Branch-free: a data-dependent sign test mispredicts half the time and costs 5× the whole loop.
    maxAbsError = Math.max(maxAbsError, Math.abs(e));
  }
  return errorFromSums({ errorEnergy, signalEnergy, reconstructedEnergy, dot, maxAbsError }, original.length);
}

/**
 * The measures from sums accumulated in index order exactly as tensorError does, so a pass that also
 * quantizes (src/quant/export-tensor.ts) reports the same numbers bit for bit.
 */
export function errorFromSums(sums: ErrorSums, count: number): TensorError {
  const { errorEnergy, signalEnergy, reconstructedEnergy, dot, maxAbsError } = sums;
  const n = count || 1;
  const norms = Math.sqrt(signalEnergy) * Math.sqrt(reconstructedEnergy);
  return {
    mse: errorEnergy / n,
    sqnrDb: errorEnergy <= signalEnergy * 2 ** -48 ? EXACT_SQNR_DB : 10 * Math.log10(signalEnergy / errorEnergy),
    maxAbsError,
    cosine: norms === 0 ? (signalEnergy === reconstructedEnergy ? 1 : 0) : dot / norms,
  };
}

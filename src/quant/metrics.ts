/** Error measures between a float tensor and its quantized reconstruction, in one fused pass. */

export interface TensorError {
  /** mean((w − ŵ)²) */
  mse: number;
  /** 10·log10(Σw² / Σ(w − ŵ)²); null when the reconstruction is exact (infinite SQNR has no JSON form). */
  sqnrDb: number | null;
  maxAbsError: number;
  /** ⟨w, ŵ⟩ / (‖w‖·‖ŵ‖); 1 when both are zero. */
  cosine: number;
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
    const a = e < 0 ? -e : e;
    if (a > maxAbsError) maxAbsError = a;
  }
  const n = original.length || 1;
  const norms = Math.sqrt(signalEnergy) * Math.sqrt(reconstructedEnergy);
  return {
    mse: errorEnergy / n,
    sqnrDb: errorEnergy === 0 ? null : 10 * Math.log10(signalEnergy / errorEnergy),
    maxAbsError,
    cosine: norms === 0 ? (signalEnergy === reconstructedEnergy ? 1 : 0) : dot / norms,
  };
}

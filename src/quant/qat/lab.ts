/**
 * Loss-aware binarization (Hou, Yao & Kwok 2017, "Loss-aware Binarization of Deep Networks"): the binary
 * weights are the proximal Newton step of the loss with a diagonal Hessian approximation D = diag(d), and
 * Adam's second moment supplies it: d = √v̂ + ε (v̂ bias-corrected, ε Adam's). Its closed form, per layer
 * (or per output channel), is
 *
 *   α = ‖d ⊙ w‖₁ / ‖d‖₁,   b = sign(w),   ŵ = α·b
 *
 * i.e. α is the curvature-weighted mean |w|: weights the loss is sensitive to count more. Before the first
 * update (no v̂ yet) α is XNOR-Net's mean |w|. The float weights are then updated by Adam from the gradient
 * at ŵ, as BinaryConnect-style QAT does, so only α differs from binary QAT. That gradient is never clipped
 * (whatever `ste` says): a zero gradient where |w| > α would drive v, hence d, of exactly the largest weights
 * to 0, take them out of α, shrink α, clip more weights, and collapse α (measured: 13% accuracy vs 84%).
 *
 * Export: the binary codebook encoding (codes 0 → −α, 1 → +α) with the last step's α; per tensor it is
 * also TF.js's uint8 {min: −α, scale: 2α} form, as the binary PTQ module writes it.
 */
import { channelCount } from '../methods/common.js';
import type { QuantizedTensor } from '../types.js';
import {
  codebookTensor,
  type ForwardWeights,
  type KernelSetup,
  type KernelTrainer,
  type StepContext,
} from './kernel.js';
import type { LabParams } from './methods.js';

/** Adam's ε, which d adds to √v̂. */
export const LAB_EPSILON = 1e-7;

/** α_c = Σ_c d·|w| / Σ_c d over the weights of channel c (element i in channel i % channels), as float32. */
export function labScales(weights: Float32Array, d: ArrayLike<number> | undefined, channels: number): Float32Array {
  const weighted = new Float64Array(channels);
  const total = new Float64Array(channels);
  for (let base = 0; base < weights.length; base += channels) {
    for (let c = 0; c < channels; c++) {
      const di = d === undefined ? 1 : d[base + c];
      weighted[c] += di * Math.abs(weights[base + c]);
      total[c] += di;
    }
  }
  return Float32Array.from(weighted, (sum, c) => (total[c] > 0 ? sum / total[c] : 0));
}

/** sign(w)·α_c with sign(0) = +1, as the binary module encodes it. */
export function binaryTensor(weights: Float32Array, alphas: Float32Array): QuantizedTensor {
  const channels = alphas.length;
  const codebook = new Float32Array(2 * channels);
  for (let c = 0; c < channels; c++) {
    codebook[2 * c] = -alphas[c];
    codebook[2 * c + 1] = alphas[c];
  }
  const codes = Uint8Array.from(weights, (w) => (w >= 0 ? 1 : 0));
  const result = codebookTensor(codes, codebook, 1, channels);
  if (channels === 1) result.tfjsEncoding = { dtype: 'uint8', min: -alphas[0], scale: 2 * alphas[0] };
  return result;
}

export class LabKernel implements KernelTrainer {
  readonly exportsOwnTensor = true;
  private readonly channels: number;

  constructor(params: LabParams, setup: KernelSetup) {
    this.channels = channelCount(setup.shape, params.granularity);
  }

  forward(shadow: Float32Array, context: StepContext): ForwardWeights {
    return { weights: this.result(shadow, context).dequantized };
  }

  result(shadow: Float32Array, context: StepContext): QuantizedTensor {
    const secondMoment = context.secondMoment();
    const d =
      secondMoment === undefined ? undefined : Float64Array.from(secondMoment, (v) => Math.sqrt(v) + LAB_EPSILON);
    return binaryTensor(shadow, labScales(shadow, d, this.channels));
  }
}

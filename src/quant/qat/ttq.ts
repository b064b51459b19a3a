/**
 * Trained ternary quantization (Zhu, Han, Mao & Dally 2017, "Trained Ternary Quantization"). Per layer (or
 * per output channel) a threshold Δ = t·max|w| on the float weights and two learned scales Wp, Wn > 0:
 *
 *   ŵ = +Wp where w > Δ,   0 where |w| ≤ Δ,   −Wn where w < −Δ
 *
 * With g = ∂L/∂ŵ, the scales train by their own gradients (the chain rule through ŵ):
 *   ∂L/∂Wp = Σ_{i ∈ Ip} g_i,   ∂L/∂Wn = −Σ_{i ∈ In} g_i      (Ip = {w > Δ}, In = {w < −Δ})
 * (the paper writes the second without the sign, its ŵ being −Wn), with Adam at the run's learning rate,
 * and the float weights by the scaled straight-through gradient
 *   ∂L/∂w = Wp·g on Ip,   g on {|w| ≤ Δ},   Wn·g on In.
 * Wp and Wn start at the least-squares values for the first support (the mean |w| over Ip and over In;
 * mean |w| of the channel when a side is empty) and are kept ≥ 0.
 *
 * Export: the ternary codebook encoding (codes 0 → −Wn, 1 → 0, 2 → +Wp, as the ternary module lays it out).
 */
import { channelCount } from '../methods/common.js';
import type { QuantizedTensor } from '../types.js';
import {
  codebookTensor,
  ScalarAdam,
  type ForwardWeights,
  type KernelSetup,
  type KernelState,
  type KernelTrainer,
  type StepContext,
} from './kernel.js';
import type { TtqParams } from './methods.js';

/** Δ_c = t·max|w| over channel c. */
export function ttqThresholds(weights: Float32Array, channels: number, thresholdFactor: number): Float64Array {
  const thresholds = new Float64Array(channels);
  for (let i = 0; i < weights.length; i++) {
    const c = i % channels;
    thresholds[c] = Math.max(thresholds[c], Math.abs(weights[i]));
  }
  return thresholds.map((max) => thresholdFactor * max);
}

/** Codes per weight: 0 (w < −Δ), 1 (|w| ≤ Δ), 2 (w > Δ). */
export function ttqCodes(weights: Float32Array, thresholds: Float64Array): Uint8Array {
  const channels = thresholds.length;
  return Uint8Array.from(weights, (w, i) => {
    const delta = thresholds[i % channels];
    return w > delta ? 2 : w < -delta ? 0 : 1;
  });
}

/** [∂L/∂Wp, ∂L/∂Wn] per channel, laid out [Wp_0, Wn_0, Wp_1, Wn_1, ...], from g = ∂L/∂ŵ. */
export function ttqScaleGradients(gradient: Float32Array, codes: Uint8Array, channels: number): Float64Array {
  const scaleGradients = new Float64Array(2 * channels);
  for (let i = 0; i < gradient.length; i++) {
    const c = i % channels;
    if (codes[i] === 2) scaleGradients[2 * c] += gradient[i];
    else if (codes[i] === 0) scaleGradients[2 * c + 1] -= gradient[i];
  }
  return scaleGradients;
}

export class TtqKernel implements KernelTrainer {
  readonly exportsOwnTensor = true;
  private readonly channels: number;
  private readonly thresholdFactor: number;
  /** [Wp_0, Wn_0, Wp_1, Wn_1, ...]; empty until the first forward. */
  private scales = new Float64Array(0);
  private readonly optimizer: ScalarAdam;
  private codes: Uint8Array = new Uint8Array(0);

  constructor(params: TtqParams, setup: KernelSetup) {
    this.channels = channelCount(setup.shape, params.granularity);
    this.thresholdFactor = params.thresholdFactor;
    this.optimizer = new ScalarAdam(2 * this.channels);
  }

  private initScales(shadow: Float32Array, codes: Uint8Array): void {
    const channels = this.channels;
    const sums = new Float64Array(2 * channels);
    const counts = new Float64Array(2 * channels);
    const meanAbs = new Float64Array(channels);
    for (let i = 0; i < shadow.length; i++) {
      const c = i % channels;
      meanAbs[c] += Math.abs(shadow[i]) / (shadow.length / channels);
      const side = codes[i] === 2 ? 0 : codes[i] === 0 ? 1 : -1;
      if (side < 0) continue;
      sums[2 * c + side] += Math.abs(shadow[i]);
      counts[2 * c + side]++;
    }
    this.scales = sums.map((sum, k) => (counts[k] > 0 ? sum / counts[k] : meanAbs[k >> 1]));
  }

  /** The current scales as float32 [Wp_0, Wn_0, ...]. */
  get learnedScales(): Float32Array {
    return Float32Array.from(this.scales);
  }

  forward(shadow: Float32Array): ForwardWeights {
    return { weights: this.result(shadow).dequantized };
  }

  backward(gradient: Float32Array, shadow: Float32Array, context: StepContext): Float32Array {
    const channels = this.channels;
    const codes = this.codes;
    const scaleGradients = ttqScaleGradients(gradient, codes, channels);
    const scales = this.scales;
    for (let i = 0; i < gradient.length; i++) {
      const c = i % channels;
      if (codes[i] === 2) gradient[i] *= scales[2 * c];
      else if (codes[i] === 0) gradient[i] *= scales[2 * c + 1];
    }
    this.optimizer.apply(scales, scaleGradients, context.learningRate);
    for (let k = 0; k < scales.length; k++) scales[k] = Math.max(0, scales[k]);
    return gradient;
  }

  result(shadow: Float32Array): QuantizedTensor {
    const codes = ttqCodes(shadow, ttqThresholds(shadow, this.channels, this.thresholdFactor));
    if (this.scales.length === 0) this.initScales(shadow, codes);
    this.codes = codes;
    const codebook = new Float32Array(4 * this.channels);
    for (let c = 0; c < this.channels; c++) {
      codebook[4 * c] = -this.scales[2 * c + 1];
      codebook[4 * c + 2] = this.scales[2 * c];
    }
    return codebookTensor(codes, codebook, 2, this.channels);
  }

  getState(): KernelState {
    const { m, v, t } = this.optimizer.getState();
    return { scales: Float64Array.from(this.scales), m, v, t };
  }

  setState(state: KernelState): void {
    this.scales = Float64Array.from(state.scales);
    this.optimizer.setState(state);
  }
}

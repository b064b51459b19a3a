/**
 * Data-free weight equalization and bias correction: Nagel, van Baalen, Blankevoort & Welling 2019,
 * "Data-Free Quantization Through Weight Equalization and Bias Correction".
 *
 * Cross-layer equalization (§4.1). Two layers y = f(W₂ f(W₁x + b₁) + b₂) with f positively homogeneous
 * (ReLU, identity: f(sx) = s·f(x) for s > 0) compute the same function after
 *   W₁' = S⁻¹W₁,  b₁' = S⁻¹b₁,  W₂' = W₂S,   S = diag(s),   s_i = √(r₁_i · r₂_i) / r₂_i,
 * where r₁_i is the range (max |w|) of output channel i of W₁ and r₂_i that of input channel i of W₂; both
 * ranges become √(r₁_i r₂_i), which maximises Σ_i (r₁_i/R₁)(r₂_i/R₂), the precision one per-tensor grid keeps
 * for every channel. ReLU6 is not positively homogeneous (min(6, sx) ≠ s·min(6, x)): the paper replaces it
 * by ReLU; this module is never asked to scale across it.
 *
 * Scale into a BatchNorm (the paper's folding step, kept unfolded). A BatchNormalization after a linear
 * layer is one per-channel affine map z ↦ f_c z + (β_c − f_c μ_c), f_c = γ_c/√(σ²_c + ε); folding it gives the
 * kernel W_c f_c, whose channel ranges differ as much as the γ do. Instead the layer keeps the kernel
 * W_c f_c / a_c, all of whose channels have range R = max_c r_c (a_c = r_c / R, r_c the folded range), and
 * the BatchNorm becomes the pure scale γ' = a_c, β' = b_c f_c + β_c − f_c μ_c, μ' = 0, σ'² = 1 − ε. That is
 * the issue's γ' = γ·s, μ' = μ/s with the rest of the normalisation moved into the kernel and β. a_c is
 * rounded to float16 (so γ' ships as 2 bytes, exactly) and kept ≥ 2⁻¹⁴, half precision's smallest normal.
 *
 * Bias absorption (§4.1.1): with BatchNorm statistics the pre-activation of channel i is ~N(β_i, γ_i²); for
 * ReLU, c_i = max(0, β_i − 3γ_i) is almost surely below it, so b₁' = b₁ − c and b₂' = b₂ + W₂c leave the
 * function unchanged while shrinking the activation range.
 *
 * Bias correction (§4.2). A quantized layer computes W̃x = Wx + εx with ε = W̃ − W, so its output is shifted
 * by E[εx] = ε E[x]; b' = b − ε E[x] removes it. E[x] is either measured (empirical) or, for x = ReLU(z)
 * with z ~ N(μ, σ²) from the previous BatchNorm, the clipped normal mean
 *   E[ReLU(z)] = σ φ(μ/σ) + μ Φ(μ/σ),
 * and for ReLU6 the same with the mass above 6 clipped (doubly clipped normal mean, below).
 */
import { floatToHalf } from './float16.js';
import { halfToFloat } from './packed/decode-tensor.js';

/** How a kernel's row-major values map to input and output channels. */
export interface KernelLayout {
  /** [..., in, out] for Dense/Conv; [h, w, in, multiplier] for depthwise. */
  shape: readonly number[];
  depthwise: boolean;
}

/** Output channels: the last axis, or a depthwise kernel's in × multiplier. */
export function outputChannels(layout: KernelLayout): number {
  const { shape } = layout;
  if (shape.length === 0) return 1;
  return layout.depthwise ? shape[shape.length - 2] * shape[shape.length - 1] : shape[shape.length - 1];
}

/** Input channels: the second last axis (a depthwise kernel's `in`). */
export function inputChannels(layout: KernelLayout): number {
  return layout.shape.length < 2 ? 1 : layout.shape[layout.shape.length - 2];
}

/** The input channel element `index` of the kernel reads. */
function inputChannelOf(index: number, layout: KernelLayout): number {
  const { shape } = layout;
  const inner = shape[shape.length - 1];
  return Math.floor(index / inner) % shape[shape.length - 2];
}

/** max |w| of every output channel (channel = index % outputChannels). */
export function outputRanges(values: Float32Array, layout: KernelLayout): Float64Array {
  const channels = outputChannels(layout);
  const ranges = new Float64Array(channels);
  for (let i = 0; i < values.length; i++) {
    const c = i % channels;
    const a = Math.abs(values[i]);
    if (a > ranges[c]) ranges[c] = a;
  }
  return ranges;
}

/** max |w| of every input channel. */
export function inputRanges(values: Float32Array, layout: KernelLayout): Float64Array {
  const ranges = new Float64Array(inputChannels(layout));
  for (let i = 0; i < values.length; i++) {
    const c = inputChannelOf(i, layout);
    const a = Math.abs(values[i]);
    if (a > ranges[c]) ranges[c] = a;
  }
  return ranges;
}

/** s_i = √(r₁_i r₂_i) / r₂_i; 1 where a channel is all zeros on either side (nothing to balance). */
export function equalizationScales(r1: ArrayLike<number>, r2: ArrayLike<number>): Float64Array {
  if (r1.length !== r2.length) throw new RangeError(`equalize: ${r1.length} output vs ${r2.length} input channels`);
  const scales = new Float64Array(r1.length);
  for (let i = 0; i < r1.length; i++) {
    scales[i] = r1[i] > 0 && r2[i] > 0 ? Math.sqrt(r1[i] * r2[i]) / r2[i] : 1;
  }
  return scales;
}

/** W₁' = S⁻¹W₁ over output channels (b₁' the same with a one-axis layout). */
export function divideOutputChannels(values: Float32Array, layout: KernelLayout, scales: Float64Array): Float32Array {
  const channels = outputChannels(layout);
  if (channels !== scales.length) throw new RangeError(`equalize: ${scales.length} scales for ${channels} channels`);
  return values.map((v, i) => v / scales[i % channels]);
}

/** W₂' = W₂S over input channels. */
export function multiplyInputChannels(values: Float32Array, layout: KernelLayout, scales: Float64Array): Float32Array {
  if (inputChannels(layout) !== scales.length) {
    throw new RangeError(`equalize: ${scales.length} scales for ${inputChannels(layout)} input channels`);
  }
  return values.map((v, i) => v * scales[inputChannelOf(i, layout)]);
}

export interface BatchNormParams {
  gamma?: Float32Array;
  beta?: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
  epsilon: number;
}

/** f_c = γ_c / √(σ²_c + ε): what folding the BatchNorm multiplies output channel c of the kernel by. */
export function foldFactors(bn: BatchNormParams): Float64Array {
  const factors = new Float64Array(bn.mean.length);
  for (let c = 0; c < factors.length; c++) {
    factors[c] = (bn.gamma ? bn.gamma[c] : 1) / Math.sqrt(bn.variance[c] + bn.epsilon);
  }
  return factors;
}

/** W_c f_c in place: the kernel folded. In place because a streamed kernel is folded in its read buffer. */
export function foldIntoKernel(values: Float32Array, factors: Float64Array): void {
  const channels = factors.length;
  for (let i = 0; i < values.length; i++) values[i] *= factors[i % channels];
}

/** β' = b_c f_c + β_c − f_c μ_c: the kept BatchNorm's offset once the layer's bias `bias` moved into it. */
export function scaledBatchNormBeta(bias: Float32Array, bn: BatchNormParams, factors: Float64Array): Float32Array {
  const channels = factors.length;
  if (bn.mean.length !== channels || bias.length !== channels) {
    throw new RangeError(`equalize: BatchNorm of ${bn.mean.length} channels after a kernel of ${channels}`);
  }
  const beta = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    beta[c] = bias[c] * factors[c] + (bn.beta ? bn.beta[c] : 0) - factors[c] * bn.mean[c];
  }
  return beta;
}

/**
 * The folded kernel W_c f_c, in place, to W_c f_c / a_c, every output channel at the range of the largest;
 * returns γ' = a_c (float16-exact). `ranges` are the folded kernel's (outputRanges).
 */
export function shareOneRange(folded: Float32Array, layout: KernelLayout, ranges: Float64Array): Float32Array {
  const channels = outputChannels(layout);
  const largest = ranges.reduce((a, b) => Math.max(a, b), 0);
  const gamma = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    const ratio = largest > 0 && ranges[c] > 0 ? Math.max(ranges[c] / largest, 2 ** -14) : 1;
    gamma[c] = halfToFloat(floatToHalf(ratio));
  }
  for (let i = 0; i < folded.length; i++) folded[i] /= gamma[i % channels];
  return gamma;
}

/** c_i = max(0, β_i − 3|γ_i|): the part of a ReLU input's bias that is almost surely passed through. */
export function absorbableBias(beta: ArrayLike<number>, gamma: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: beta.length }, (_, i) => Math.max(0, beta[i] - 3 * Math.abs(gamma[i])));
}

/** Standard normal density φ. */
function phi(x: number): number {
  return Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
}

/** Standard normal CDF Φ, Abramowitz & Stegun 7.1.26 on erf (|error| < 1.5e-7). */
function bigPhi(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

/**
 * E[clip(z, 0, upper)] for z ~ N(μ, σ²): σ(φ(a) − φ(b)) + μ(Φ(b) − Φ(a)) + upper(1 − Φ(b)), a = −μ/σ,
 * b = (upper − μ)/σ; upper = ∞ gives the ReLU case σφ(μ/σ) + μΦ(μ/σ).
 */
export function clippedNormalMean(mean: number, std: number, upper = Infinity): number {
  if (std <= 0) return Math.min(Math.max(mean, 0), upper);
  const a = -mean / std;
  const b = (upper - mean) / std;
  const above = upper === Infinity ? 0 : upper * (1 - bigPhi(b));
  const phiB = upper === Infinity ? 0 : phi(b);
  const cdfB = upper === Infinity ? 1 : bigPhi(b);
  return std * (phi(a) - phiB) + mean * (cdfB - bigPhi(a)) + above;
}

/**
 * ε·E[x] per output channel: Σ over every element of ε = quantized − original reading input channel i,
 * times E[x_i]. For a convolution this assumes E[x] is the same at every spatial position (padding ignored).
 */
export function expectedOutputShift(
  original: Float32Array,
  quantized: Float32Array,
  layout: KernelLayout,
  inputMean: ArrayLike<number>,
): Float64Array {
  const channels = outputChannels(layout);
  if (inputMean.length !== inputChannels(layout)) {
    throw new RangeError(`bias correction: ${inputMean.length} input means for ${inputChannels(layout)} channels`);
  }
  const shift = new Float64Array(channels);
  for (let i = 0; i < original.length; i++) {
    shift[i % channels] += (quantized[i] - original[i]) * inputMean[inputChannelOf(i, layout)];
  }
  return shift;
}

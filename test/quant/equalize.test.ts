import { describe, expect, it } from 'vitest';
import {
  absorbableBias,
  clippedNormalMean,
  divideOutputChannels,
  equalizationScales,
  expectedOutputShift,
  inputRanges,
  multiplyInputChannels,
  foldFactors,
  foldIntoKernel,
  outputRanges,
  scaledBatchNormBeta,
  shareOneRange,
} from '../../src/quant/equalize.js';

const dense = (shape: number[]) => ({ shape, depthwise: false });

/** relu(x W1) W2 for a [1, in] row x and row-major Dense kernels. */
function twoLayers(x: number[], w1: Float32Array, out1: number, w2: Float32Array, out2: number): number[] {
  const hidden = Array.from({ length: out1 }, (_, j) =>
    Math.max(
      0,
      x.reduce((s, v, i) => s + v * w1[i * out1 + j], 0),
    ),
  );
  return Array.from({ length: out2 }, (_, k) => hidden.reduce((s, v, j) => s + v * w2[j * out2 + k], 0));
}

describe('cross-layer equalization (Nagel et al. 2019 §4.1)', () => {
  // W1 [2 in, 2 out]: output channel ranges 4 and 1. W2 [2 in, 3 out]: input channel ranges 1 and 4.
  const w1 = new Float32Array([4, 1, -2, 0.5]);
  const w2 = new Float32Array([1, -0.5, 0.25, 4, 2, -1]);

  it('s_i = √(r1_i r2_i)/r2_i balances both ranges to √(r1_i r2_i) and keeps the function across ReLU', () => {
    const r1 = outputRanges(w1, dense([2, 2]));
    const r2 = inputRanges(w2, dense([2, 3]));
    expect(Array.from(r1)).toEqual([4, 1]);
    expect(Array.from(r2)).toEqual([1, 4]);
    const s = equalizationScales(r1, r2);
    expect(Array.from(s)).toEqual([2, 0.5]);
    const w1e = divideOutputChannels(w1, dense([2, 2]), s);
    const w2e = multiplyInputChannels(w2, dense([2, 3]), s);
    expect(Array.from(w1e)).toEqual([2, 2, -1, 1]);
    expect(Array.from(w2e)).toEqual([2, -1, 0.5, 2, 1, -0.5]);
    expect(Array.from(outputRanges(w1e, dense([2, 2])))).toEqual([2, 2]);
    expect(Array.from(inputRanges(w2e, dense([2, 3])))).toEqual([2, 2]);
    // x = [1, 1]: relu([2, 1.5]) · W2 = [8, 2, -1], and relu([1, 3]) · W2' gives the same.
    expect(twoLayers([1, 1], w1, 2, w2, 3)).toEqual([8, 2, -1]);
    expect(twoLayers([1, 1], w1e, 2, w2e, 3)).toEqual([8, 2, -1]);
  });

  it('leaves an all-zero channel alone and reads depthwise input channels from axis 2', () => {
    expect(Array.from(equalizationScales([0, 9], [3, 1]))).toEqual([1, 3]);
    // [1, 1, 2 in, 2 multiplier]: elements (in, m) = (0,0) (0,1) (1,0) (1,1).
    const depthwise = { shape: [1, 1, 2, 2], depthwise: true };
    expect(Array.from(inputRanges(new Float32Array([1, -3, 0.5, 2]), depthwise))).toEqual([3, 2]);
    expect(Array.from(outputRanges(new Float32Array([1, -3, 0.5, 2]), depthwise))).toEqual([1, 3, 0.5, 2]);
  });
});

describe('scale into a kept BatchNorm', () => {
  it('γ′ = a_c (float16), β′ = b·f + β − f·μ, kernel·f/a_c: same outputs, equal channel ranges', () => {
    const kernel = new Float32Array([0.5, 2]);
    const bias = new Float32Array([0.1, -0.2]);
    const bn = {
      gamma: new Float32Array([2, 0.01]),
      beta: new Float32Array([0.3, 0.4]),
      mean: new Float32Array([1, -1]),
      variance: new Float32Array([3, 0]),
      epsilon: 1,
    };
    const factors = foldFactors(bn);
    const folded = Float32Array.from(kernel);
    foldIntoKernel(folded, factors);
    const gamma = shareOneRange(folded, dense([1, 2]), outputRanges(folded, dense([1, 2])));
    const scaled = { factors, gamma, beta: scaledBatchNormBeta(bias, bn, factors), kernel: folded };
    // f = γ/√(σ²+ε) = [1, 0.01]; folded kernel [0.5, 0.02]: a = [1, half(0.04) = 0.040008544921875].
    expect(scaled.factors[0]).toBe(1);
    expect(scaled.factors[1]).toBeCloseTo(0.01, 9);
    expect(Array.from(scaled.gamma)).toEqual([1, 0.040008544921875]);
    expect(scaled.beta[0]).toBeCloseTo(-0.6, 6);
    expect(scaled.beta[1]).toBeCloseTo(0.408, 6);
    expect(scaled.kernel[0]).toBe(0.5);
    expect(scaled.kernel[1]).toBeCloseTo(0.4998932, 6);
    // x = 3: BN(3·kernel + bias) = [0.9, 0.468], and a·(3·kernel′) + β′ the same.
    const expected = [0.9, 0.468];
    for (let c = 0; c < 2; c++) {
      const before =
        (bn.gamma[c] * (3 * kernel[c] + bias[c] - bn.mean[c])) / Math.sqrt(bn.variance[c] + 1) + bn.beta[c];
      expect(before).toBeCloseTo(expected[c], 6);
      expect(scaled.gamma[c] * 3 * scaled.kernel[c] + scaled.beta[c]).toBeCloseTo(expected[c], 6);
    }
  });
});

describe('bias absorption and bias correction (§4.1.1, §4.2)', () => {
  it('c = max(0, β − 3γ)', () => {
    expect(Array.from(absorbableBias([5, 1], [1, -1]))).toEqual([2, 0]);
  });

  it('E[ReLU(z)] = σφ(μ/σ) + μΦ(μ/σ), and ReLU6 clips the mass above 6', () => {
    expect(clippedNormalMean(0, 1)).toBeCloseTo(1 / Math.sqrt(2 * Math.PI), 6);
    expect(clippedNormalMean(2, 0)).toBe(2);
    // z ~ N(6, 1) clipped to [0, 6]: 6 − E[(6 − z)⁺] = 6 − φ(0).
    expect(clippedNormalMean(6, 1, 6)).toBeCloseTo(6 - 1 / Math.sqrt(2 * Math.PI), 6);
  });

  it('ε·E[x] sums the weight error of each input channel times its mean', () => {
    const original = new Float32Array([1, 2, 3, 4]);
    const quantized = new Float32Array([1.5, 2, 3, 3]);
    expect(Array.from(expectedOutputShift(original, quantized, dense([2, 2]), [2, 10]))).toEqual([1, -10]);
  });
});

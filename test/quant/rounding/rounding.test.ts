import { describe, expect, it } from 'vitest';
import {
  adaround,
  annealedBeta,
  rectifiedSigmoid,
  type AdaroundOptions,
} from '../../../src/quant/rounding/adaround.js';
import { gptq, inverseCholeskyUpper } from '../../../src/quant/rounding/gptq.js';
import { InputStatistics, outputError } from '../../../src/quant/rounding/gram.js';
import type { ColumnGrid } from '../../../src/quant/rounding/grid.js';

/** 3-bit asymmetric grid with scale 1 and zero point 4: codes 0..7 decode to the integers −4..3. */
function integerGrid(columns: number): ColumnGrid {
  return {
    scales: new Float64Array(columns).fill(1),
    mins: new Float64Array(columns).fill(-4),
    minCode: 0,
    maxCode: 7,
  };
}

const adaroundOptions: AdaroundOptions = {
  iterations: 500,
  learningRate: 0.05,
  regularization: 0.1,
  betaStart: 20,
  betaEnd: 2,
  warmup: 0.2,
};

describe('layer input statistics (G = XᵀX / n)', () => {
  it('averages x xᵀ over the rows of a dense input', () => {
    const statistics = new InputStatistics({ kind: 'dense', inputs: 2 }, { maxPositions: 16, seed: 0 });
    // Rows [1, 2] and [3, 0]: Σ x xᵀ = [[1, 2], [2, 4]] + [[9, 0], [0, 0]] = [[10, 2], [2, 4]]; n = 2.
    statistics.observe(new Float32Array([1, 2, 3, 0]), [2, 2]);
    expect(statistics.count).toBe(2);
    expect(Array.from(statistics.covariance())).toEqual([5, 1, 1, 2]);
  });

  it('takes im2col patches of a convolution in the kernel’s [row, column, channel] order', () => {
    const geometry = {
      kind: 'conv2d' as const,
      kernelHeight: 2,
      kernelWidth: 1,
      channels: 1,
      strides: [1, 1] as [number, number],
      dilations: [1, 1] as [number, number],
      padding: 'valid' as const,
    };
    const statistics = new InputStatistics(geometry, { maxPositions: 16, seed: 0 });
    // A 3×1 image [1, 2, 3] and a 2×1 kernel (valid): patches [1, 2] and [2, 3].
    // Σ = [[1, 2], [2, 4]] + [[4, 6], [6, 9]] = [[5, 8], [8, 13]]; n = 2.
    statistics.observe(new Float32Array([1, 2, 3]), [1, 3, 1, 1]);
    expect(statistics.count).toBe(2);
    expect(Array.from(statistics.covariance())).toEqual([2.5, 4, 4, 6.5]);
  });

  it('keeps one matrix per input channel of a depthwise convolution, zero padding included', () => {
    const statistics = new InputStatistics(
      {
        kind: 'depthwise',
        kernelHeight: 1,
        kernelWidth: 2,
        channels: 2,
        strides: [1, 1],
        dilations: [1, 1],
        padding: 'same',
      },
      { maxPositions: 16, seed: 0 },
    );
    // A 1×2 image, channels (1, 10) and (2, 20). `same` with a 1×2 kernel pads one column on the right:
    // channel 0 patches [1, 2], [2, 0]; channel 1 patches [10, 20], [20, 0].
    statistics.observe(new Float32Array([1, 10, 2, 20]), [1, 1, 2, 2]);
    expect(statistics.groups).toBe(2);
    expect(Array.from(statistics.covariance(0))).toEqual([2.5, 1, 1, 2]);
    expect(Array.from(statistics.covariance(1))).toEqual([250, 100, 100, 200]);
  });

  it('measures the output error Σ_c Δ_cᵀ G Δ_c', () => {
    // One column, Δ = [1, −1], G = [[5, 1], [1, 2]]: 5 − 1 − 1 + 2 = 5.
    expect(outputError([0, 0], [1, -1], 1, [0], new Float64Array([5, 1, 1, 2]))).toBe(5);
  });
});

describe('GPTQ (Frantar et al. 2022)', () => {
  /*
   * The hand-worked example. H⁻¹ is chosen with an easy upper Cholesky factor
   *   U = [[1, 0.5, 0.25], [0, 1, 0.5], [0, 0, 1]],   H⁻¹ = UᵀU = [[1, .5, .25], [.5, 1.25, .625], [.25, .625, 1.3125]],
   * so H = U⁻¹U⁻ᵀ with U⁻¹ = [[1, −.5, 0], [0, 1, −.5], [0, 0, 1]]: H = [[1.25, −.5, 0], [−.5, 1.25, −.5], [0, −.5, 1]].
   * The kernel has 3 inputs (rows, the paper's columns) and 2 outputs a, b; the grid is the integers −4..3
   * (code = value + 4). No dampening, no act-order. U_qq = 1, so δ = w_q − quant(w_q) and w_j −= δ·U_qj.
   *
   *   input 0: w = [0.6, 2.4] → q = [1, 2], δ = [−0.4, 0.4]
   *            input 1 −= δ·0.5  → [1.2 + 0.2, −0.7 − 0.2] = [1.4, −0.9]
   *            input 2 −= δ·0.25 → [−0.2 + 0.1, 1.6 − 0.1] = [−0.1, 1.5]
   *   input 1: w = [1.4, −0.9] → q = [1, −1], δ = [0.4, 0.1]
   *            input 2 −= δ·0.5  → [−0.1 − 0.2, 1.5 − 0.05] = [−0.3, 1.45]
   *   input 2: w = [−0.3, 1.45] → q = [0, 1]
   *
   * Result [[1, 2], [1, −1], [0, 1]]; nearest rounding would give 2 for input 2 of output b (1.6).
   */
  const weights = [0.6, 2.4, 1.2, -0.7, -0.2, 1.6];
  const hessian = new Float64Array([1.25, -0.5, 0, -0.5, 1.25, -0.5, 0, -0.5, 1]);

  it('factors H⁻¹ as UᵀU with U upper triangular', () => {
    const u = inverseCholeskyUpper(hessian, 3)!;
    const expected = [1, 0.5, 0.25, 0, 1, 0.5, 0, 0, 1];
    for (let i = 0; i < 9; i++) expect(u[i]).toBeCloseTo(expected[i], 12);
  });

  it.each([1, 2, 3])('quantizes inputs in order with the error fed forward (block size %i)', (blockSize) => {
    const codes = gptq(weights, 3, 2, hessian, integerGrid(2), { percdamp: 0, actOrder: false, blockSize });
    expect(Array.from(codes, (code) => code - 4)).toEqual([1, 2, 1, -1, 0, 1]);
  });

  it('lowers the output error below nearest rounding’s on the example', () => {
    const codes = gptq(weights, 3, 2, hessian, integerGrid(2), { percdamp: 0, actOrder: false, blockSize: 3 });
    const g = hessian.map((h) => h / 2);
    const gptqError = outputError(
      weights,
      Array.from(codes, (c) => c - 4),
      2,
      [0, 1],
      g,
    );
    const nearestError = outputError(weights, [1, 2, 1, -1, 0, 2], 2, [0, 1], g);
    expect(gptqError).toBeLessThan(nearestError);
  });

  it('with act-order quantizes the input of largest H_qq first', () => {
    // H = [[1, .5], [.5, 4]], weights [0.35, 0.4]. With act-order input 1 goes first: in that order
    // H⁻¹ = [[1, −.5], [−.5, 4]] / 3.75, U_00 = √(1/3.75) = 0.5164, U_01 = (−.5/3.75)/U_00 = −0.2582.
    // Input 1: q = 0, δ = 0.4/0.5164 = 0.7746; input 0: 0.35 + 0.7746·0.2582 = 0.55 → 1.
    // In the given order: H⁻¹ = [[4, −.5], [−.5, 1]] / 3.75, U_00 = 1.0328, U_01 = −0.1291; input 0: q = 0,
    // δ = 0.3389; input 1: 0.4 + 0.3389·0.1291 = 0.444 → 0.
    const h = new Float64Array([1, 0.5, 0.5, 4]);
    const run = (actOrder: boolean) =>
      Array.from(gptq([0.35, 0.4], 2, 1, h, integerGrid(1), { percdamp: 0, actOrder, blockSize: 1 }), (c) => c - 4);
    expect(run(true)).toEqual([1, 0]);
    expect(run(false)).toEqual([0, 0]);
  });
});

describe('AdaRound (Nagel et al. 2020)', () => {
  it('uses the rectified sigmoid with ζ = 1.1, γ = −0.1', () => {
    expect(rectifiedSigmoid(0)).toBeCloseTo(0.5, 12);
    // σ(2) = 0.880797…; 0.880797·1.2 − 0.1 = 0.956957
    expect(rectifiedSigmoid(2)).toBeCloseTo(0.956957, 5);
    expect(rectifiedSigmoid(10)).toBe(1);
    expect(rectifiedSigmoid(-10)).toBe(0);
  });

  it('anneals β from 20 to 2 after the warm-up', () => {
    const options = { ...adaroundOptions, iterations: 100, warmup: 0.2 };
    expect(annealedBeta(0, options)).toBe(20);
    expect(annealedBeta(20, options)).toBe(20);
    // Halfway through the 80 annealed iterations: 2 + 18 · 0.5 = 11.
    expect(annealedBeta(60, options)).toBe(11);
    expect(annealedBeta(100, options)).toBe(2);
  });

  it('rounds one of two strongly correlated inputs up', () => {
    // G = [[1, .9], [.9, 1]], weights [0.45, 0.35]. Nearest rounds both down: Δ = (−.45, −.35), error
    // .2025 + .1225 + 2·.9·.1575 = 0.608. Rounding the first up: Δ = (.55, −.35), .3025 + .1225 − .3465 = 0.0785.
    const g = new Float64Array([1, 0.9, 0.9, 1]);
    const codes = adaround([0.45, 0.35], 2, 1, g, integerGrid(1), adaroundOptions);
    expect(Array.from(codes, (c) => c - 4)).toEqual([1, 0]);
  });

  it('never reconstructs worse than nearest rounding', () => {
    const g = new Float64Array([2, 0.3, 0.3, 1]);
    const weights = [0.2, -1.3, 2.7, 0.45];
    const codes = adaround(weights, 2, 2, g, integerGrid(2), adaroundOptions);
    const learned = outputError(
      weights,
      Array.from(codes, (c) => c - 4),
      2,
      [0, 1],
      g,
    );
    const nearest = outputError(weights, [0, -1, 3, 0], 2, [0, 1], g);
    expect(learned).toBeLessThanOrEqual(nearest);
  });
});

/**
 * AdaRound (Nagel, Amjad, van Baalen, Louizos, Blankevoort 2020, "Up or Down? Adaptive Rounding for
 * Post-Training Quantization"). Each weight w with grid position x = (w − min)/s rounds to ⌊x⌋ or ⌊x⌋ + 1;
 * the choice is learned by relaxing it to a continuous h(V) ∈ [0, 1] per weight,
 *
 *   ŵ = s·(⌊x⌋ + h(V)) + min,    h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1),   ζ = 1.1, γ = −0.1 (rectified sigmoid),
 *
 * and minimising the layer's output reconstruction error plus a regulariser that drives every h to 0 or 1:
 *
 *   L(V) = Σ_c Δ_cᵀ G Δ_c / E₀ + λ · (1/N) Σ (1 − |2h(V) − 1|^β),   Δ = Ŵ − W,  G = XᵀX/n (./gram.ts),
 *
 * with β annealed linearly from βstart = 20 to βend = 2 after a warm-up share of the iterations in which the
 * regulariser is off (the paper's schedule). The reconstruction term is the layer's pre-activation output
 * MSE; it is divided by E₀, nearest rounding's value of it, and the regulariser is averaged over the N
 * learnable weights, so λ means the same for every layer size and data scale. Because the error is a
 * quadratic form in G, every iteration is an exact full-batch step over all calibration rows (the paper's
 * mini-batches approximate the same sum). Adam updates V. V starts where h(V) = x − ⌊x⌋ (the float weight).
 * At the end h ≥ ½ rounds up. Weights whose ⌊x⌋ falls outside the codes are clamped and not learned. If the
 * learned rounding reconstructs worse than nearest rounding (a bad λ or too few iterations), nearest is kept.
 */
import { quadraticError } from './gram.js';
import { codeValue, nearestCode, type ColumnGrid } from './grid.js';

export interface AdaroundOptions {
  iterations: number;
  learningRate: number;
  /** λ of the rounding regulariser. */
  regularization: number;
  betaStart: number;
  betaEnd: number;
  /** Share of the iterations before the regulariser starts. */
  warmup: number;
}

export const ZETA = 1.1;
export const GAMMA = -0.1;

/** h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1). */
export function rectifiedSigmoid(v: number): number {
  const h = (1 / (1 + Math.exp(-v))) * (ZETA - GAMMA) + GAMMA;
  return h < 0 ? 0 : h > 1 ? 1 : h;
}

/** The regulariser's annealed exponent at iteration t of `options.iterations`. */
export function annealedBeta(t: number, options: AdaroundOptions): number {
  const start = options.warmup * options.iterations;
  const progress = Math.min(1, Math.max(0, (t - start) / Math.max(1, options.iterations - start)));
  return options.betaEnd + (options.betaStart - options.betaEnd) * (1 - progress);
}

/**
 * AdaRound codes of the kernel `weights` [rows, cols] (row-major) with input covariance `g` [rows, rows] on
 * `grid`, one per weight in the kernel's layout.
 */
export function adaround(
  weights: ArrayLike<number>,
  rows: number,
  cols: number,
  g: Float64Array,
  grid: ColumnGrid,
  options: AdaroundOptions,
): Int32Array {
  const size = rows * cols;
  const floor = new Int32Array(size);
  const learnable = new Uint8Array(size);
  const v = new Float64Array(size);
  const nearest = new Int32Array(size);
  const delta = new Float64Array(size);
  const product = new Float64Array(size);
  let learned = 0;
  for (let i = 0; i < size; i++) {
    const c = i % cols;
    const w = weights[i];
    const x = (w - grid.mins[c]) / grid.scales[c];
    nearest[i] = nearestCode(w, c, grid);
    const base = Math.floor(x);
    if (base < grid.minCode || base >= grid.maxCode) {
      floor[i] = base < grid.minCode ? grid.minCode : grid.maxCode;
      continue;
    }
    floor[i] = base;
    learnable[i] = 1;
    learned++;
    const rest = Math.min(1 - 1e-6, Math.max(1e-6, x - base));
    const sigmoid = (rest - GAMMA) / (ZETA - GAMMA);
    v[i] = Math.log(sigmoid / (1 - sigmoid));
  }
  const errorOf = (codes: Int32Array): number => {
    for (let i = 0; i < size; i++) delta[i] = codeValue(codes[i], i % cols, grid) - weights[i];
    return quadraticError(g, delta, rows, cols, product);
  };
  const nearestError = errorOf(nearest);
  if (learned === 0 || !(nearestError > 0)) return nearest;

  const m = new Float64Array(size);
  const s = new Float64Array(size);
  const beta1 = 0.9;
  const beta2 = 0.999;
  const h = new Float64Array(size);
  for (let t = 0; t < options.iterations; t++) {
    for (let i = 0; i < size; i++) {
      const c = i % cols;
      h[i] = learnable[i] ? rectifiedSigmoid(v[i]) : 0;
      delta[i] = grid.scales[c] * (floor[i] + h[i]) + grid.mins[c] - weights[i];
    }
    quadraticError(g, delta, rows, cols, product);
    const regularized = t >= options.warmup * options.iterations;
    const beta = annealedBeta(t, options);
    const step = t + 1;
    const correction1 = 1 - beta1 ** step;
    const correction2 = 1 - beta2 ** step;
    for (let i = 0; i < size; i++) {
      if (!learnable[i]) continue;
      const sigmoid = 1 / (1 + Math.exp(-v[i]));
      const unclipped = sigmoid * (ZETA - GAMMA) + GAMMA;
      if (unclipped <= 0 || unclipped >= 1) {
        // The clip has no gradient; Adam's moments decay as if the gradient were 0.
        m[i] *= beta1;
        s[i] *= beta2;
        continue;
      }
      let gradH = (2 * grid.scales[i % cols] * product[i]) / nearestError;
      if (regularized) {
        const centred = 2 * h[i] - 1;
        const magnitude = Math.abs(centred);
        gradH -= (options.regularization / learned) * beta * magnitude ** (beta - 1) * Math.sign(centred) * 2;
      }
      const grad = gradH * sigmoid * (1 - sigmoid) * (ZETA - GAMMA);
      m[i] = beta1 * m[i] + (1 - beta1) * grad;
      s[i] = beta2 * s[i] + (1 - beta2) * grad * grad;
      v[i] -= (options.learningRate * (m[i] / correction1)) / (Math.sqrt(s[i] / correction2) + 1e-8);
    }
  }
  const codes = new Int32Array(size);
  for (let i = 0; i < size; i++) codes[i] = learnable[i] && rectifiedSigmoid(v[i]) >= 0.5 ? floor[i] + 1 : floor[i];
  return errorOf(codes) <= nearestError ? codes : nearest;
}

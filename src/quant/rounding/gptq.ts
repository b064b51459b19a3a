/**
 * GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers"; the Optimal Brain Quantization lineage of Frantar & Alistarh 2022).
 *
 * For a layer y = Wᵀx with kernel W [inputs, outputs] (tfjs layout: the paper's columns are our rows), the
 * squared output error over calibration inputs has Hessian H = 2XᵀX/n, the same for every output column.
 * Inputs are quantized one at a time; after quantizing input row q the error is spread over the rows not yet
 * quantized so the output moves as little as possible (OBS update):
 *
 *   δ = (w_q − quant(w_q)) / [H⁻¹]_qq,      w_j ← w_j − δ · [H⁻¹]_qj   for every later row j,
 *
 * with H⁻¹ of the rows still free. Taking U, the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), row q of U holds
 * exactly those entries for every step at once ([H⁻¹_F]_qj / √[H⁻¹_F]_qq), so the update is
 * δ = (w_q − quant(w_q)) / U_qq, w_j ← w_j − δ·U_qj. Options as in the paper:
 * - dampening: H + λI with λ = percdamp · mean(diag H), for a well-conditioned inverse;
 * - act-order: rows in order of decreasing diag(H) (the inputs with the most energy first);
 * - block size B: updates inside a block of B rows are applied at once to the rest of the matrix (lazy batch
 *   updates), which changes the order of the arithmetic, not the result.
 * Rows whose input was always 0 (diag H = 0) get H_qq = 1: their weight never mattered, nothing is spread.
 * Each weight lands on its column's grid (./grid.ts), so the output is an ordinary affine tensor.
 */
import { nearestCode, codeValue, type ColumnGrid } from './grid.js';

const TILE = 16;

export interface GptqOptions {
  /** λ = percdamp · mean(diag H). */
  percdamp: number;
  actOrder: boolean;
  blockSize: number;
}

/** In-place lower Cholesky factor of the symmetric positive definite `a` (n × n); false when it is not. */
export function cholesky(a: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    let diagonal = a[j * n + j];
    for (let k = 0; k < j; k++) diagonal -= a[j * n + k] * a[j * n + k];
    if (!(diagonal > 0)) return false;
    const root = Math.sqrt(diagonal);
    a[j * n + j] = root;
    for (let i = j + 1; i < n; i++) {
      let sum = a[i * n + j];
      const rowI = i * n;
      const rowJ = j * n;
      for (let k = 0; k < j; k++) sum -= a[rowI + k] * a[rowJ + k];
      a[rowI + j] = sum / root;
    }
    for (let k = j + 1; k < n; k++) a[j * n + k] = 0;
  }
  return true;
}

/**
 * The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), or undefined when H is not positive definite. With J the
 * order reversal, factor JHJ = L̃L̃ᵀ: then H = RRᵀ with R = JL̃J upper, H⁻¹ = R⁻ᵀR⁻¹, and by uniqueness of the
 * Cholesky factor U = R⁻¹ = J L̃⁻¹ J — one factorization and one triangular inverse, no explicit H⁻¹.
 */
export function inverseCholeskyUpper(h: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
  if (!cholesky(l, n)) return undefined;
  // M = L̃⁻¹ (lower), row i = (e_i − Σ_{k<i} L̃_ik · row k) / L̃_ii: contiguous row updates.
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const rowI = i * n;
    m[rowI + i] = 1;
    for (let k = 0; k < i; k++) {
      const factor = l[rowI + k];
      if (factor === 0) continue;
      const rowK = k * n;
      for (let c = 0; c <= k; c++) m[rowI + c] -= factor * m[rowK + c];
    }
    const pivot = l[rowI + i];
    for (let c = 0; c <= i; c++) m[rowI + c] /= pivot;
  }
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
  return u;
}

/**
 * GPTQ codes of the kernel `weights` [rows, cols] (row-major) with Hessian `hessian` [rows, rows] on `grid`.
 * Returns one code per weight, in the kernel's layout.
 */
export function gptq(
  weights: ArrayLike<number>,
  rows: number,
  cols: number,
  hessian: Float64Array,
  grid: ColumnGrid,
  options: GptqOptions,
): Int32Array {
  const order = Array.from({ length: rows }, (_, i) => i);
  const diagonal = Float64Array.from(order, (i) => hessian[i * rows + i]);
  if (options.actOrder) order.sort((a, b) => diagonal[b] - diagonal[a] || a - b);
  // H and W in the quantization order.
  const h = new Float64Array(rows * rows);
  const w = new Float64Array(rows * cols);
  let trace = 0;
  for (let i = 0; i < rows; i++) {
    const source = order[i];
    for (let j = 0; j < rows; j++) h[i * rows + j] = hessian[source * rows + order[j]];
    for (let c = 0; c < cols; c++) w[i * cols + c] = weights[source * cols + c];
    // A Gram matrix with a zero diagonal entry has that whole row and column zero.
    if (h[i * rows + i] === 0) h[i * rows + i] = 1;
    trace += h[i * rows + i];
  }
  let damp = options.percdamp * (rows > 0 ? trace / rows : 0);
  let u: Float64Array | undefined;
  // A Hessian that is singular in float64 even after dampening gets more of it, as the reference code advises.
  for (let attempt = 0; attempt < 8 && u === undefined; attempt++) {
    const damped = Float64Array.from(h);
    for (let i = 0; i < rows; i++) damped[i * rows + i] += damp;
    u = inverseCholeskyUpper(damped, rows);
    damp = damp > 0 ? damp * 10 : 1e-8 * Math.max(1, trace / Math.max(1, rows));
  }
  if (u === undefined) throw new Error('GPTQ: the layer-input Hessian is not positive definite even when dampened');

  const codes = new Int32Array(rows * cols);
  const blockSize = Math.max(1, options.blockSize);
  const errors = new Float64Array(blockSize * cols);
  for (let start = 0; start < rows; start += blockSize) {
    const end = Math.min(rows, start + blockSize);
    for (let q = start; q < end; q++) {
      const pivot = u[q * rows + q];
      const error = errors.subarray((q - start) * cols, (q - start + 1) * cols);
      for (let c = 0; c < cols; c++) {
        const value = w[q * cols + c];
        const code = nearestCode(value, c, grid);
        codes[order[q] * cols + c] = code;
        error[c] = (value - codeValue(code, c, grid)) / pivot;
      }
      for (let j = q + 1; j < end; j++) {
        const factor = u[q * rows + j];
        if (factor === 0) continue;
        const row = j * cols;
        for (let c = 0; c < cols; c++) w[row + c] -= error[c] * factor;
      }
    }
    // The block's errors reach the rows after it in one pass, TILE rows at a time so each error row is
    // read once per tile rather than once per row.
    for (let j0 = end; j0 < rows; j0 += TILE) {
      const j1 = Math.min(rows, j0 + TILE);
      for (let q = start; q < end; q++) {
        const error = errors.subarray((q - start) * cols, (q - start + 1) * cols);
        for (let j = j0; j < j1; j++) {
          const factor = u[q * rows + j];
          if (factor === 0) continue;
          const row = j * cols;
          for (let c = 0; c < cols; c++) w[row + c] -= error[c] * factor;
        }
      }
    }
  }
  return codes;
}

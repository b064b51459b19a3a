/**
 * Learned rounding of one kernel on the affine method's grid: `nearest` is the method itself; `gptq`
 * (./gptq.ts) and `adaround` (./adaround.ts) choose each weight's code from the layer's input statistics
 * (./gram.ts). The grid (scales, zero points) is the affine method's, so the result is an affine tensor that
 * the writer, the packer and the report treat exactly like nearest rounding's. Both errors are reported as
 * the layer's mean squared pre-activation output error on the calibration inputs.
 */
import { affine, type AffineParams } from '../methods/affine.js';
import { codeArray } from '../methods/common.js';
import { createRng } from '../rng.js';
import type { QuantizedTensor } from '../types.js';
import { adaround, type AdaroundOptions } from './adaround.js';
import { gptq, type GptqOptions } from './gptq.js';
import { outputError, type InputStatistics } from './gram.js';
import { codeValue, columnGrid, gridColumns } from './grid.js';

export type RoundingAlgorithm = 'nearest' | 'gptq' | 'adaround';

export interface RoundingOptions {
  gptq: GptqOptions;
  adaround: AdaroundOptions;
  seed: number;
}

export interface RoundedKernel {
  tensor: QuantizedTensor;
  /** Mean squared output error per output element with nearest rounding ... */
  outputMseBefore: number;
  /** ... and with the algorithm's rounding. */
  outputMseAfter: number;
}

/**
 * Rounds `weights` (shape as quantizationShape gives it: output channels last, a depthwise kernel's in ×
 * multiplier merged) with `algorithm`, on the grid affine.quantize chooses for `params`.
 */
export function roundKernel(
  algorithm: RoundingAlgorithm,
  weights: Float32Array,
  shape: readonly number[],
  params: AffineParams,
  statistics: InputStatistics,
  options: RoundingOptions,
): RoundedKernel {
  const nearest = affine.quantize(weights, shape, params, createRng(options.seed));
  const cols = shape[shape.length - 1];
  const rows = weights.length / cols;
  if (rows !== statistics.size) {
    throw new Error(`kernel has ${rows} inputs per output, the layer's input statistics ${statistics.size}`);
  }
  const grid = columnGrid(nearest.encoding, cols, params.symmetric);
  const perGroup = cols / statistics.groups;
  const codes = Int32Array.from(nearest.codes);
  const groups = Array.from({ length: statistics.groups }, (_, group) => ({
    columns: Array.from({ length: perGroup }, (_, k) => group * perGroup + k),
    g: statistics.covariance(group),
  }));
  let before = 0;
  let after = 0;
  for (const { columns, g } of groups) {
    const sub = new Float64Array(rows * perGroup);
    for (let r = 0; r < rows; r++)
      for (let k = 0; k < perGroup; k++) sub[r * perGroup + k] = weights[r * cols + columns[k]];
    const subGrid = gridColumns(grid, columns);
    let subCodes: Int32Array | undefined;
    if (algorithm === 'gptq') {
      subCodes = gptq(
        sub,
        rows,
        perGroup,
        g.map((value) => 2 * value),
        subGrid,
        options.gptq,
      );
    } else if (algorithm === 'adaround') {
      subCodes = adaround(sub, rows, perGroup, g, subGrid, options.adaround);
    }
    if (subCodes) {
      for (let r = 0; r < rows; r++)
        for (let k = 0; k < perGroup; k++) codes[r * cols + columns[k]] = subCodes[r * perGroup + k];
    }
    before += outputError(weights, nearest.dequantized, cols, columns, g);
  }
  const dequantized = new Float32Array(weights.length);
  for (let i = 0; i < weights.length; i++) dequantized[i] = codeValue(codes[i], i % cols, grid);
  for (const { columns, g } of groups) after += outputError(weights, dequantized, cols, columns, g);
  const stored = codeArray(weights.length, params.bits);
  stored.set(codes);
  const tensor: QuantizedTensor = { ...nearest, codes: stored, dequantized };
  return { tensor, outputMseBefore: before / cols, outputMseAfter: after / cols };
}

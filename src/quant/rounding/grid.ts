/**
 * The affine grid a learned rounding puts values on: per output column c the grid of the affine method
 * (docs/methods.md), value = fround(code·scale_c + min_c), code ∈ [minCode, maxCode]. GPTQ and AdaRound only
 * choose which code each weight gets; scales and zero points are the method's own, so the result has the
 * affine encoding and is written to `model/` and `packed/` exactly as nearest rounding is.
 */
import type { Encoding } from '../types.js';

export interface ColumnGrid {
  scales: Float64Array;
  mins: Float64Array;
  minCode: number;
  maxCode: number;
}

/** The grid of an affine encoding over `columns` output columns (per-tensor: one scale for all). */
export function columnGrid(encoding: Encoding, columns: number, symmetric: boolean): ColumnGrid {
  if (encoding.kind !== 'affine') throw new Error(`a learned rounding needs an affine grid, not ${encoding.kind}`);
  const scales = new Float64Array(columns);
  const mins = new Float64Array(columns);
  for (let c = 0; c < columns; c++) {
    const source = encoding.channels === 1 ? 0 : c;
    scales[c] = encoding.scales[source];
    mins[c] = encoding.mins[source];
  }
  return { scales, mins, minCode: symmetric ? 1 : 0, maxCode: 2 ** encoding.bits - 1 };
}

/** The grid restricted to some columns, in the order given. */
export function gridColumns(grid: ColumnGrid, columns: readonly number[]): ColumnGrid {
  return {
    scales: Float64Array.from(columns, (c) => grid.scales[c]),
    mins: Float64Array.from(columns, (c) => grid.mins[c]),
    minCode: grid.minCode,
    maxCode: grid.maxCode,
  };
}

/** The nearest code to w in column c (ties away from −∞, as the affine method rounds). */
export function nearestCode(w: number, c: number, grid: ColumnGrid): number {
  const code = Math.floor((w - grid.mins[c]) / grid.scales[c] + 0.5);
  return code < grid.minCode ? grid.minCode : code > grid.maxCode ? grid.maxCode : code;
}

/** The value code decodes to in column c, exactly as decodeTensor computes it. */
export function codeValue(code: number, c: number, grid: ColumnGrid): number {
  return Math.fround(code * grid.scales[c] + grid.mins[c]);
}

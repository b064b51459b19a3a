/**
 * Held-out verification for `auto` (docs/methods.md, `analyze` and `auto`): which evaluation samples the
 * search never sees, and how sure a drop measured on them is. QAT's `validationSplit` rows are chosen by the
 * same split (src/pipeline/runtime.ts validationRows).
 *
 * The split is a seeded uniform choice of exactly round(fraction · n) samples (partial Fisher–Yates), so the
 * same seed splits the same dataset the same way on every worker, and a dataset sorted by class is still
 * split evenly in expectation.
 *
 * The interval is paired: the float and the quantized model are scored on the same samples, so the drop's
 * uncertainty is that of the per-sample differences, far smaller than that of either accuracy alone when
 * the two models mostly agree.
 * - accuracy, top5, agreement (0/1 per sample): the Agresti–Min interval for matched proportions (Agresti &
 *   Min 2005, "Simple improved confidence intervals for comparing matched proportions"): ½ added to each
 *   cell of the 2×2 float-right × quantized-right table, then the Wald interval of the difference. Unlike
 *   plain Wald it does not shrink to a point when no sample changed.
 * - mse, mae: the mean per-sample difference ± z standard errors (sample standard deviation / √n).
 * A relative drop divides both ends by |float value|, the float value taken as exact.
 */
import { createRng } from './rng.js';
import { higherIsBetter, type MetricGoal } from './search.js';

/** z of a two-sided 95% normal interval. */
export const Z95 = 1.959963984540054;

/**
 * 1 for the samples held out, 0 for the ones searched: exactly round(fraction · samples) held out, at
 * least one of each.
 */
export function heldOutMask(samples: number, fraction: number, seed: number): Uint8Array {
  if (samples < 2) throw new RangeError(`${samples} samples cannot be split into a search part and a held-out part`);
  const heldOut = Math.min(samples - 1, Math.max(1, Math.round(fraction * samples)));
  const order = Int32Array.from({ length: samples }, (_, i) => i);
  const rng = createRng(seed);
  const mask = new Uint8Array(samples);
  for (let i = 0; i < heldOut; i++) {
    const j = i + rng.int(samples - i);
    [order[i], order[j]] = [order[j], order[i]];
    mask[order[i]] = 1;
  }
  return mask;
}

/** The indices of `mask`'s entries equal to `keep`, ascending. */
export function maskedRows(mask: Uint8Array, keep: 0 | 1): Int32Array {
  let count = 0;
  for (const v of mask) if (v === keep) count++;
  const rows = new Int32Array(count);
  let at = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] === keep) rows[at++] = i;
  return rows;
}

export interface DropInterval {
  /** The measured drop: float metric − quantized metric (or the reverse for errors), as dropOf gives it. */
  drop: number;
  /** The 95% interval's ends. */
  low: number;
  high: number;
  /** Samples the two models were compared on. */
  samples: number;
}

/**
 * The drop of `quantized` against `float`, per-sample scores of the goal's metric on the same samples (see
 * the module comment for the interval).
 */
export function pairedDropInterval(
  goal: MetricGoal,
  float: ArrayLike<number>,
  quantized: ArrayLike<number>,
): DropInterval {
  const n = float.length;
  if (n === 0 || quantized.length !== n) throw new RangeError(`paired scores of ${n} and ${quantized.length} samples`);
  const sign = higherIsBetter(goal.metric) ? 1 : -1;
  let sum = 0;
  let sumSquares = 0;
  let lost = 0;
  let gained = 0;
  let floatSum = 0;
  for (let i = 0; i < n; i++) {
    const d = sign * (float[i] - quantized[i]);
    sum += d;
    sumSquares += d * d;
    if (d > 0) lost++;
    else if (d < 0) gained++;
    floatSum += float[i];
  }
  const drop = sum / n;
  let low: number;
  let high: number;
  if (goal.metric === 'mse' || goal.metric === 'mae') {
    const variance = n > 1 ? Math.max(0, (sumSquares - n * drop * drop) / (n - 1)) : 0;
    const half = Z95 * Math.sqrt(variance / n);
    [low, high] = [drop - half, drop + half];
  } else {
    const b = lost + 0.5;
    const c = gained + 0.5;
    const m = n + 2;
    const centre = (b - c) / m;
    const half = (Z95 * Math.sqrt(Math.max(0, b + c - ((b - c) * (b - c)) / m))) / m;
    [low, high] = [Math.max(-1, centre - half), Math.min(1, centre + half)];
  }
  if (!goal.relative) return { drop, low, high, samples: n };
  const baseline = Math.abs(floatSum / n);
  // A zero baseline makes every non-zero relative drop infinite, as dropOf has it.
  const relative = (v: number): number => (v === 0 ? 0 : v / baseline);
  return { drop: relative(drop), low: relative(low), high: relative(high), samples: n };
}

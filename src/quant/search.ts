/**
 * The `auto` search (docs/methods.md, `analyze` and `auto`): per-tensor configs chosen from the sensitivity table, each
 * candidate verified by the caller's `measure` (the real export and evaluation), backing off where the
 * measured drop breaks the budget.
 *
 * Every tensor starts in float. A move turns one tensor into a smaller config; moves are taken greedily by
 * estimated drop added per byte saved (sensitivity drops, clamped at 0, assumed additive across tensors),
 * which is the classic greedy for the fractional knapsack. With `maxDrop` (minimise bytes):
 *   1. from the last verified state, take the longest greedy prefix of moves whose estimated drop (the
 *      state's measured drop + the moves' added drops) stays within maxDrop;
 *   2. verify it; if the measured drop is within budget it becomes the state, else halve the prefix and
 *      try again; a single move that fails is banned (with every smaller, no less sensitive config of that
 *      tensor), and the search goes on with the others;
 *   3. stop when no move fits the estimate (while no trial is feasible, the next move is verified alone
 *      anyway: an unreachable target still gets a frontier), or at maxTrials, or when the time budget is spent.
 * With only `maxBytes` (maximise the metric) a greedy prefix can overshoot the budget by a whole move, so
 * each candidate is instead the exact answer to the multiple-choice knapsack over the sensitivity table:
 * every tensor takes one option (float or a config), minimising Σ estimated drop with Σ bytes ≤ the room
 * (maxBytes less the fixed part), by dynamic programming over bytes in at most KNAPSACK_BUCKETS buckets.
 * Each candidate is verified; when its measured size overshoots, the room shrinks below its estimated bytes
 * by the overshoot and the knapsack is solved again, until it returns an assignment already measured.
 *
 * A measurement may carry a held-out drop besides the drop the search steers by (auto: the drop on
 * verification data the sensitivity table and the prefix estimates never saw). A trial then keeps maxDrop
 * only when both drops do: only such a trial becomes the state to go on from, is feasible, and can be the
 * best. Where nothing is feasible, the closest trial is the one whose larger drop is least.
 *
 * Packed size = Σ tensor bytes + a fixed part (unquantized tensors, manifest), the latter learnt from each
 * measured trial. Pure: no tfjs, no files; `measure` does the work.
 */
import { InputError } from '../errors.js';

export type GoalMetric = 'accuracy' | 'top5' | 'agreement' | 'mse' | 'mae';

export interface MetricGoal {
  metric: GoalMetric;
  /** Drops are fractions of the float metric instead of differences. */
  relative: boolean;
}

export function higherIsBetter(metric: GoalMetric): boolean {
  return metric !== 'mse' && metric !== 'mae';
}

/** How much worse `value` is than `baseline` (negative when better); relative to |baseline| when asked. */
export function dropOf(goal: MetricGoal, baseline: number, value: number): number {
  const drop = higherIsBetter(goal.metric) ? baseline - value : value - baseline;
  if (!goal.relative) return drop;
  if (baseline === 0) return drop === 0 ? 0 : drop > 0 ? Infinity : -Infinity;
  return drop / Math.abs(baseline);
}

/** The config a tensor keeps when it is not quantized (the chosen spec lists it in layers.skip). */
export const FLOAT = 'float';

export interface TensorOption {
  config: string;
  /** Estimated drop with this tensor alone in this config. */
  drop: number;
  /** Packed bytes of the tensor in this config. */
  bytes: number;
}

export interface SearchTensor {
  name: string;
  /** Bytes of the tensor left in float32. */
  floatBytes: number;
  options: TensorOption[];
}

/** Tensor name → config label (or FLOAT). */
export type Assignment = Record<string, string>;

export interface Measurement {
  /** Packed bytes of the whole model. */
  bytes: number;
  /** The drop on the data the search steers by. */
  drop: number;
  /** The drop on held-out data, when there is some: the trial meets maxDrop only if this does too. */
  heldOutDrop?: number;
}

/** The drop a trial is judged by: the larger of its measured drops. */
export function worstDrop(m: Measurement): number {
  return m.heldOutDrop === undefined ? m.drop : Math.max(m.drop, m.heldOutDrop);
}

export interface Trial extends Measurement {
  trial: number;
  assignment: Assignment;
  estimatedBytes: number;
  estimatedDrop: number;
  /** Meets every limit of the budget. */
  feasible: boolean;
}

export interface SearchBudget {
  maxDrop?: number;
  maxBytes?: number;
}

export interface SearchOptions {
  tensors: SearchTensor[];
  budget: SearchBudget;
  maxTrials: number;
  /** True once no new trial may start (time budget); the first trial always runs. */
  outOfTime?: () => boolean;
  measure: (assignment: Assignment, trial: number) => Promise<Measurement>;
  /** After every trial, with the best so far. */
  onTrial?: (trial: Trial, best: Trial) => void | Promise<void>;
}

export interface SearchResult {
  trials: Trial[];
  best: Trial;
  /** Whether `best` meets the budget. */
  targetMet: boolean;
  stoppedBy: 'converged' | 'maxTrials' | 'time';
}

/** Buckets the knapsack's byte axis is cut into: bounds its time and memory at tensors × options × this. */
export const KNAPSACK_BUCKETS = 4096;

interface Move {
  name: string;
  to: TensorOption;
  addedDrop: number;
  savedBytes: number;
}

export async function searchConfigs(options: SearchOptions): Promise<SearchResult> {
  const { tensors, budget } = options;
  if (budget.maxDrop === undefined && budget.maxBytes === undefined)
    throw new Error('the search needs maxDrop or maxBytes');
  if (tensors.length === 0)
    throw new InputError('invalid-model', 'there is no quantizable tensor to search configs for');
  const optionsOf = new Map(
    tensors.map((t) => [
      t.name,
      [{ config: FLOAT, drop: 0, bytes: t.floatBytes }, ...t.options.filter((o) => o.config !== FLOAT)],
    ]),
  );
  const option = (name: string, config: string): TensorOption => optionsOf.get(name)!.find((o) => o.config === config)!;
  const tensorBytes = (assignment: Assignment): number =>
    tensors.reduce((sum, t) => sum + option(t.name, assignment[t.name]).bytes, 0);
  const feasible = (m: Measurement): boolean =>
    (budget.maxDrop === undefined || worstDrop(m) <= budget.maxDrop) &&
    (budget.maxBytes === undefined || m.bytes <= budget.maxBytes);

  const banned = new Set<string>();
  const trials: Trial[] = [];
  let fixedBytes = 0;
  let stoppedBy: SearchResult['stoppedBy'] = 'converged';

  /** The greedy sequence of moves from `start`, each chosen by least added drop per byte saved. */
  const greedyPath = (start: Assignment): Move[] => {
    const state = { ...start };
    const path: Move[] = [];
    for (;;) {
      let best: Move | undefined;
      for (const t of tensors) {
        const from = option(t.name, state[t.name]);
        for (const to of optionsOf.get(t.name)!) {
          if (to.bytes >= from.bytes || banned.has(`${t.name}\u0000${to.config}`)) continue;
          const move = {
            name: t.name,
            to,
            addedDrop: Math.max(0, to.drop) - Math.max(0, from.drop),
            savedBytes: from.bytes - to.bytes,
          };
          const ratio = move.addedDrop / move.savedBytes;
          const bestRatio = best ? best.addedDrop / best.savedBytes : Infinity;
          if (!best || ratio < bestRatio || (ratio === bestRatio && move.savedBytes > best.savedBytes)) best = move;
        }
      }
      if (!best) return path;
      path.push(best);
      state[best.name] = best.to.config;
    }
  };
  const apply = (start: Assignment, moves: Move[]): Assignment => {
    const next = { ...start };
    for (const move of moves) next[move.name] = move.to.config;
    return next;
  };
  const ban = (move: Move): void => {
    for (const o of optionsOf.get(move.name)!) {
      if (o.config === FLOAT) continue;
      if (o === move.to || (o.bytes <= move.to.bytes && o.drop >= move.to.drop))
        banned.add(`${move.name}\u0000${o.config}`);
    }
  };
  const bestOf = (): Trial => {
    const byBytes = (a: Trial, b: Trial) => a.bytes - b.bytes || worstDrop(a) - worstDrop(b);
    const byDrop = (a: Trial, b: Trial) => worstDrop(a) - worstDrop(b) || a.bytes - b.bytes;
    const first = (pool: Trial[], order: (a: Trial, b: Trial) => number) => [...pool].sort(order)[0];
    // Minimise bytes under maxDrop; maximise the metric under maxBytes alone.
    const ok = trials.filter((t) => t.feasible);
    if (ok.length > 0) return first(ok, budget.maxDrop !== undefined ? byBytes : byDrop);
    // Nothing feasible: the closest. Under maxDrop (with a maxBytes nothing met) the smallest trial within
    // maxDrop, else the least drop; under maxBytes alone the smallest.
    if (budget.maxDrop === undefined) return first(trials, byBytes);
    const withinDrop = trials.filter((t) => worstDrop(t) <= budget.maxDrop!);
    return withinDrop.length > 0 ? first(withinDrop, byBytes) : first(trials, byDrop);
  };
  const canStart = (): boolean => {
    if (trials.length >= options.maxTrials) {
      stoppedBy = 'maxTrials';
      return false;
    }
    if (trials.length > 0 && options.outOfTime?.()) {
      stoppedBy = 'time';
      return false;
    }
    return true;
  };
  const measuredBefore = new Map<string, Trial>();
  const keyOf = (assignment: Assignment): string => JSON.stringify(tensors.map((t) => assignment[t.name]));
  /** A trial, or the earlier one of the same assignment (backing off can lead back to it), which costs nothing. */
  const run = async (assignment: Assignment, estimatedDrop: number): Promise<Trial> => {
    const key = keyOf(assignment);
    const earlier = measuredBefore.get(key);
    if (earlier) return earlier;
    const estimatedBytes = tensorBytes(assignment) + fixedBytes;
    const measured = await options.measure(assignment, trials.length + 1);
    fixedBytes = measured.bytes - tensorBytes(assignment);
    const trial: Trial = {
      trial: trials.length + 1,
      assignment,
      estimatedBytes,
      estimatedDrop,
      ...measured,
      feasible: feasible(measured),
    };
    trials.push(trial);
    measuredBefore.set(key, trial);
    await options.onTrial?.(trial, bestOf());
    return trial;
  };

  const estimatedDropOf = (assignment: Assignment): number =>
    tensors.reduce((sum, t) => sum + Math.max(0, option(t.name, assignment[t.name]).drop), 0);
  /**
   * The multiple-choice knapsack: one option per tensor, least Σ estimated drop with Σ bytes ≤ room; equal
   * drops go to the larger model, whose near-zero estimates hide the smaller real drops. Option bytes round
   * up to whole buckets, so the answer never exceeds room. Undefined when not even the smallest fits.
   */
  const knapsack = (room: number): Assignment | undefined => {
    if (room < 0) return undefined;
    const unit = Math.max(1, Math.ceil(room / KNAPSACK_BUCKETS));
    const capacity = Math.floor(room / unit);
    // Over the tensors so far, for each c: the least drop within c buckets and the bytes of that choice.
    let drop = new Float64Array(capacity + 1);
    let bytes = new Float64Array(capacity + 1);
    const picks = tensors.map((t) => {
      const pick = new Int32Array(capacity + 1).fill(-1);
      const nextDrop = new Float64Array(capacity + 1).fill(Infinity);
      const nextBytes = new Float64Array(capacity + 1);
      optionsOf.get(t.name)!.forEach((o, k) => {
        const cost = Math.ceil(o.bytes / unit);
        const optionDrop = Math.max(0, o.drop);
        for (let c = cost; c <= capacity; c++) {
          const candidateDrop = drop[c - cost] + optionDrop;
          const candidateBytes = bytes[c - cost] + o.bytes;
          if (candidateDrop === Infinity) continue;
          if (candidateDrop < nextDrop[c] || (candidateDrop === nextDrop[c] && candidateBytes > nextBytes[c])) {
            nextDrop[c] = candidateDrop;
            nextBytes[c] = candidateBytes;
            pick[c] = k;
          }
        }
      });
      drop = nextDrop;
      bytes = nextBytes;
      return pick;
    });
    if (drop[capacity] === Infinity) return undefined;
    const configs: string[] = [];
    let c = capacity;
    for (let i = tensors.length - 1; i >= 0; i--) {
      const chosen = optionsOf.get(tensors[i].name)![picks[i][c]];
      configs[i] = chosen.config;
      c -= Math.ceil(chosen.bytes / unit);
    }
    return Object.fromEntries(tensors.map((t, i) => [t.name, configs[i]]));
  };

  const start: Assignment = Object.fromEntries(tensors.map((t) => [t.name, FLOAT]));
  if (budget.maxDrop !== undefined) {
    const maxDrop = budget.maxDrop;
    let state = start;
    let stateDrop = 0;
    let stepLimit = Infinity;
    while (canStart()) {
      const path = greedyPath(state);
      let steps = 0;
      let estimate = stateDrop;
      while (steps < path.length && steps < stepLimit && estimate + path[steps].addedDrop <= maxDrop)
        estimate += path[steps++].addedDrop;
      // Nothing is estimated to fit: while no trial is feasible, verify the next move alone anyway, so a
      // target out of reach still leaves measured trials to return the closest of.
      if (steps === 0 && !trials.some((t) => t.feasible) && path.length > 0) estimate += path[steps++].addedDrop;
      if (steps === 0) {
        stoppedBy = 'converged';
        break;
      }
      const trial = await run(apply(state, path.slice(0, steps)), estimate);
      // Moves only shrink the model, so a state over maxBytes but within maxDrop is still a place to go on from.
      if (worstDrop(trial) <= maxDrop) {
        state = trial.assignment;
        stateDrop = trial.drop;
        stepLimit = Infinity;
      } else if (steps > 1) {
        stepLimit = Math.floor(steps / 2);
      } else {
        ban(path[0]);
        stepLimit = Infinity;
      }
    }
  } else {
    const maxBytes = budget.maxBytes!;
    const smallest: Assignment = Object.fromEntries(
      tensors.map((t) => [
        t.name,
        optionsOf.get(t.name)!.reduce((a, b) => (b.bytes < a.bytes || (b.bytes === a.bytes && b.drop < a.drop) ? b : a))
          .config,
      ]),
    );
    // Every assignment measured too large lies above the ceiling, so none is proposed twice.
    let ceiling = Infinity;
    for (;;) {
      // Nothing fits the estimate: the smallest model is the closest to the budget.
      const assignment = knapsack(Math.min(maxBytes - fixedBytes, ceiling)) ?? smallest;
      if (measuredBefore.has(keyOf(assignment)) || !canStart()) break;
      const trial = await run(assignment, estimatedDropOf(assignment));
      if (trial.bytes > maxBytes) ceiling = Math.min(ceiling, tensorBytes(assignment) - (trial.bytes - maxBytes));
    }
  }
  const best = bestOf();
  return { trials, best, targetMet: best.feasible, stoppedBy };
}

/**
 * Per-tensor sensitivity (docs/methods.md, `analyze` and `auto`): quantize one weight tensor at a
 * time with each candidate config, leave every other weight in float, and measure how far the model's metric
 * drops on an evaluation set. The table it returns (tensor × config → drop, packed bytes, output SQNR) is what
 * the search (search.ts) picks per-tensor configs from.
 *
 * Work reused across the tensors × configs evaluations:
 * - the evaluation subset is materialised once as tensors (cacheBatches) instead of re-read per evaluation;
 * - the float model's outputs on it are computed once (cachedReference), so agreement and SQNR against the
 *   float model cost no second forward pass;
 * - each tensor is quantized once per config, and only the model's forward pass is repeated.
 * A forward pass from the perturbed layer onwards (activations cached up to it) would save more on deep
 * models; tfjs offers no general way to cut a functional layers model or a graph model there, so it is not
 * done.
 *
 * How a tensor gets into the model is the caller's `withWeight` (layersWeightSwap assigns a layers model's
 * variable in place and restores it; graph models are rebuilt by the pipeline). No file paths, no HTTP.
 */
import * as tf from '@tensorflow/tfjs';
import type { MethodParams } from './methods/index.js';
import { batchRows, evaluate, predict, type Batch, type EvaluableModel, type ModelInput } from './evaluate.js';
import type { MetricName, Metrics } from './types.js';
import { dropOf, type MetricGoal } from './search.js';
import type { QuantizedTensor } from './types.js';

/** The default candidates of issue 5: affine 8/4/2-bit per-channel, ternary, binary, kmeans 4-bit. */
export const DEFAULT_CANDIDATES: Record<string, unknown>[] = [
  { name: 'affine', bits: 8, granularity: 'per-channel' },
  { name: 'affine', bits: 4, granularity: 'per-channel' },
  { name: 'affine', bits: 2, granularity: 'per-channel' },
  { name: 'ternary', granularity: 'per-channel' },
  { name: 'binary', granularity: 'per-channel' },
  { name: 'kmeans', bits: 4 },
];

export interface Candidate {
  /** Short, unique, flat (`affine4pc`, `binarypc`, `kmeans4`, `affine2pc+gptq`): the table's `config` column. */
  label: string;
  params: MethodParams;
  /** Affine params whose codes a learned rounding chooses (the same grid, so the same bytes). */
  rounding?: 'gptq' | 'adaround';
}

/** A short name for a config; the most telling params only, so two candidates may need a `#n` suffix. */
export function configLabel(params: MethodParams): string {
  const pc = 'granularity' in params && params.granularity === 'per-channel' ? 'pc' : '';
  switch (params.name) {
    case 'affine':
      return `affine${params.bits}${pc}${params.symmetric ? 's' : ''}${params.range === 'minmax' ? '' : `-${params.range}`}`;
    case 'binary':
    case 'ternary':
      return `${params.name}${pc}`;
    case 'kmeans':
    case 'pow2':
      return `${params.name}${params.bits}`;
    case 'pq':
      return `pq${params.bits}d${params.subvectorLength}`;
    default:
      return params.name;
  }
}

/** Labels candidates, numbering the ones whose labels collide. */
export function labelCandidates(params: MethodParams[]): Candidate[] {
  const seen = new Map<string, number>();
  return params.map((p) => {
    const base = configLabel(p);
    const count = (seen.get(base) ?? 0) + 1;
    seen.set(base, count);
    return { label: count === 1 ? base : `${base}#${count}`, params: p };
  });
}

/** Bits up to which an affine candidate also enters with learned rounding: above, nearest is already close. */
export const LEARNED_ROUNDING_MAX_BITS = 4;

/**
 * The candidates, and after them each affine one of at most LEARNED_ROUNDING_MAX_BITS bits with nearest
 * rounding again with `algorithm` (`affine2pc+gptq`): the search then picks the rounding per tensor too.
 */
export function withLearnedRounding(candidates: Candidate[], algorithm: 'gptq' | 'adaround'): Candidate[] {
  const learned = candidates
    .filter(
      (c) =>
        c.rounding === undefined &&
        c.params.name === 'affine' &&
        c.params.bits <= LEARNED_ROUNDING_MAX_BITS &&
        c.params.rounding === 'nearest',
    )
    .map((c) => ({ label: `${c.label}+${algorithm}`, params: c.params, rounding: algorithm }));
  return [...candidates, ...learned];
}

/** One row of the sensitivity table; flat so the dashboard can show it as is. */
export interface SensitivityRow {
  name: string;
  config: string;
  /** Drop of the metric vs the unperturbed model, in the goal's units (relative when the goal is). */
  drop: number;
  /** The metric's value with this tensor quantized. */
  metric: number;
  /** Packed bytes of this tensor alone (codes + side information). */
  bytes: number;
  /** Output SQNR vs the float model; absent when the outputs are identical. */
  sqnrDb?: number;
}

export interface SensitivityTensor {
  name: string;
  /** Element count, for the progress messages. */
  size: number;
}

/** Puts `values` into the model in place of weight `name` while `run` runs, then restores the float values. */
export type WithWeight = <T>(
  name: string,
  values: Float32Array,
  run: (model: EvaluableModel) => Promise<T>,
) => Promise<T>;

export interface SensitivityOptions {
  /** The float model (the one `withWeight` perturbs), for the baseline and the cached reference outputs. */
  model: EvaluableModel;
  tensors: SensitivityTensor[];
  candidates: Candidate[];
  /** The tensor in the candidate's config; undefined when the config does not apply to it (no row then). */
  quantize: (name: string, candidate: Candidate) => QuantizedTensor | undefined;
  withWeight: WithWeight;
  /** The evaluation subset, kept in memory for every evaluation (see cacheBatches). */
  batches: Batch[];
  goal: MetricGoal;
  onProgress?: (done: number, total: number, message: string) => void | Promise<void>;
  signal?: AbortSignal;
}

export interface SensitivityResult {
  /** Most sensitive first: by drop, then by lower SQNR. */
  rows: SensitivityRow[];
  /** The unperturbed model's metrics on the same subset. */
  baseline: Metrics;
}

export async function analyzeSensitivity(options: SensitivityOptions): Promise<SensitivityResult> {
  const { model, tensors, candidates, goal } = options;
  const metrics: MetricName[] = [goal.metric, 'sqnrDb'];
  const reference = await cachedReference(model, options.batches);
  try {
    const baseline = await evaluate(model, options.batches, {
      reference: reference.model,
      metrics,
      signal: options.signal,
    });
    const baselineValue = metricValue(baseline, goal.metric);
    const rows: SensitivityRow[] = [];
    const total = tensors.length * candidates.length;
    for (const [t, tensor] of tensors.entries()) {
      await options.onProgress?.(t * candidates.length, total, `tensor ${t + 1} of ${tensors.length}: ${tensor.name}`);
      for (const candidate of candidates) {
        const quantized = options.quantize(tensor.name, candidate);
        if (!quantized) continue;
        const measured = await options.withWeight(tensor.name, quantized.dequantized, (perturbed) =>
          evaluate(perturbed, options.batches, { reference: reference.model, metrics, signal: options.signal }),
        );
        const value = metricValue(measured, goal.metric);
        rows.push({
          name: tensor.name,
          config: candidate.label,
          drop: dropOf(goal, baselineValue, value),
          metric: value,
          bytes: Math.ceil((quantized.bitsPerWeight * tensor.size) / 8),
          ...(typeof measured.sqnrDb === 'number' ? { sqnrDb: measured.sqnrDb } : {}),
        });
      }
    }
    await options.onProgress?.(total, total, 'sensitivity measured');
    rows.sort((a, b) => b.drop - a.drop || (a.sqnrDb ?? Infinity) - (b.sqnrDb ?? Infinity));
    return { rows, baseline };
  } finally {
    reference.dispose();
  }
}

export function metricValue(metrics: Metrics, name: MetricGoal['metric']): number {
  const value = metrics[name];
  if (typeof value !== 'number') throw new Error(`metric ${name} was not measured`);
  return value;
}

/**
 * Materialises up to `limit` samples of a batch stream as owned tensors (clones: the stream disposes its
 * own), so repeated evaluations don't re-read and re-decode the dataset. The caller disposes them.
 */
export async function cacheBatches(source: AsyncIterable<Batch> | Iterable<Batch>, limit: number): Promise<Batch[]> {
  const cached: Batch[] = [];
  let samples = 0;
  for await (const batch of source) {
    if (samples >= limit) break;
    const take = Math.min(batchRows(batch.x), limit - samples);
    const slice = (t: tf.Tensor): tf.Tensor => (take === t.shape[0] ? t.clone() : tf.tidy(() => t.slice(0, take)));
    const x = Array.isArray(batch.x) ? batch.x.map(slice) : slice(batch.x);
    cached.push(batch.y ? { x, y: slice(batch.y) } : { x });
    samples += take;
  }
  return cached;
}

export function disposeBatches(batches: Batch[]): void {
  for (const batch of batches) {
    tf.dispose(batch.x);
    batch.y?.dispose();
  }
}

/**
 * The float model's outputs on the cached batches, computed once and served by input tensor to evaluate()
 * as its reference model (evaluate disposes what `predict` returns, so each call hands out a clone).
 */
async function cachedReference(
  model: EvaluableModel,
  batches: Batch[],
): Promise<{ model: EvaluableModel; dispose(): void }> {
  const outputs = new Map<ModelInput, tf.Tensor>();
  for (const batch of batches) outputs.set(batch.x, predict(model, batch.x));
  const reference = {
    predict(x: ModelInput): tf.Tensor {
      const output = outputs.get(x);
      return output ? output.clone() : predict(model, x);
    },
  };
  return {
    model: reference as unknown as EvaluableModel,
    dispose: () => outputs.forEach((t) => t.dispose()),
  };
}

/**
 * withWeight for a layers model: the variable whose original name is `name` is assigned the values, and the
 * float values are written back afterwards, even when `run` throws.
 */
export function layersWeightSwap(model: tf.LayersModel): WithWeight {
  const variables = new Map(model.weights.map((w) => [w.originalName, w]));
  return async (name, values, run) => {
    const variable = variables.get(name);
    if (!variable) throw new Error(`weight ${name} is not a variable of the model`);
    const original = variable.read().clone();
    const replacement = tf.tensor(values, variable.read().shape, 'float32');
    try {
      variable.write(replacement);
      return await run(model);
    } finally {
      variable.write(original);
      original.dispose();
      replacement.dispose();
    }
  };
}

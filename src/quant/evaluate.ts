/**
 * Evaluation of a model on a stream of batches (docs/report.md `model.metrics`):
 *
 * - `accuracy`: top-1, labels as integers ([b] or [b, 1]) or one-hot ([b, classes]);
 * - `top5`: the label is among the 5 largest outputs (among all of them when there are fewer than 6);
 * - `mse`, `mae`: mean over every output element of (ŷ − y)² and |ŷ − y|, y of the output's shape;
 * - `agreement`: the share of samples whose top-1 class equals the reference model's (no labels needed);
 * - `sqnrDb`: 10·log10(Σ r² / Σ (ŷ − r)²) over every output element, r the reference's output; null when the
 *   outputs are identical (infinite SQNR has no JSON form).
 *
 * Only sums and counts are carried from batch to batch, so an evaluation set larger than memory streams
 * through. Every tensor made here is disposed; the batches belong to whoever made them (a generator that
 * makes them disposes each one when it is resumed).
 */
import * as tf from '@tensorflow/tfjs';
import { InputError } from '../errors.js';
import type { MetricName, Metrics } from './types.js';

export type EvaluableModel = tf.LayersModel | tf.GraphModel;

/** A batch's model input: one tensor, or one per input of a multi-input model in the model's input order. */
export type ModelInput = tf.Tensor | tf.Tensor[];

export interface Batch {
  x: ModelInput;
  y?: tf.Tensor;
}

/** The number of samples in a batch's input. */
export function batchRows(x: ModelInput): number {
  return (Array.isArray(x) ? x[0] : x).shape[0];
}

export type BatchSource = AsyncIterable<Batch> | Iterable<Batch>;

export interface EvaluateOptions {
  /** The float model the quantized one stands for: enables `agreement` and `sqnrDb`. */
  reference?: EvaluableModel;
  /**
   * The metrics to compute. Default: with labels, accuracy and top5 when they are class labels (integer or
   * one-hot), mse and mae otherwise; with a reference, agreement (classifiers only) and sqnrDb.
   */
  metrics?: MetricName[];
  /** Checked between batches. */
  signal?: AbortSignal;
  /**
   * Each sample's own value of one metric, appended in sample order (accuracy, top5, agreement: 0 or 1;
   * mse, mae: the mean over the sample's output elements): what a paired comparison of two models needs.
   * The metric is measured whether or not `metrics` names it.
   */
  perSample?: { metric: Exclude<MetricName, 'sqnrDb'>; scores: number[] };
}

/** The model's (first) output for a batch. */
export function predict(model: EvaluableModel, x: ModelInput): tf.Tensor {
  const output = model.predict(x) as tf.Tensor | tf.Tensor[] | tf.NamedTensorMap;
  if (output instanceof tf.Tensor) return output;
  const outputs = Array.isArray(output) ? output : Object.values(output);
  if (outputs.length === 0) throw new Error('the model produced no output');
  for (const extra of outputs.slice(1)) extra.dispose();
  return outputs[0];
}

type LabelKind = 'integer' | 'one-hot' | 'regression';

/** How y relates to the output: class ids, one-hot rows, or regression targets of the output's shape. */
function labelKind(y: tf.Tensor, output: tf.Tensor, oneHotRow: () => boolean): LabelKind {
  const classes = output.shape[output.shape.length - 1];
  const sameShape = y.shape.length === output.shape.length && y.shape.every((d, i) => d === output.shape[i]);
  if (sameShape) return classes > 1 && oneHotRow() ? 'one-hot' : 'regression';
  const integerShape = y.size === output.shape[0] && output.rank === 2 && classes > 1;
  if (integerShape) return 'integer';
  throw new InputError(
    'invalid-dataset',
    `labels of shape [${y.shape.join(', ')}] fit neither class ids nor the output shape [${output.shape.join(', ')}]`,
  );
}

function isOneHot(values: ArrayLike<number>, classes: number): boolean {
  for (let row = 0; row < values.length; row += classes) {
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      const v = values[row + c];
      if (v !== 0 && v !== 1) return false;
      sum += v;
    }
    if (sum !== 1) return false;
  }
  return true;
}

function defaultMetrics(
  hasLabels: boolean,
  kind: LabelKind | undefined,
  hasReference: boolean,
  classes: number,
): MetricName[] {
  const metrics: MetricName[] = [];
  if (hasLabels) metrics.push(...(kind === 'regression' ? (['mse', 'mae'] as const) : (['accuracy', 'top5'] as const)));
  if (hasReference) {
    if (classes > 1) metrics.push('agreement');
    metrics.push('sqnrDb');
  }
  return metrics;
}

/** Index of the largest of `values[offset .. offset + n)`; the first one on ties, as tf.argMax. */
function argMax(values: Float32Array, offset: number, n: number): number {
  let best = 0;
  for (let c = 1; c < n; c++) if (values[offset + c] > values[offset + best]) best = c;
  return best;
}

/** The class a one-hot row names (the position of its 1). */
function oneHotClass(labels: ArrayLike<number>, offset: number, classes: number): number {
  for (let c = 0; c < classes; c++) if (labels[offset + c] === 1) return c;
  return -1;
}

/** Whether class `label` is among the k largest of the row (ties counted against it). */
function inTopK(values: Float32Array, offset: number, n: number, label: number, k: number): boolean {
  const target = values[offset + label];
  let larger = 0;
  for (let c = 0; c < n; c++) if (values[offset + c] > target) larger++;
  return larger < k;
}

class Sums {
  samples = 0;
  correct = 0;
  top5 = 0;
  squaredError = 0;
  absoluteError = 0;
  elements = 0;
  agree = 0;
  signalEnergy = 0;
  noiseEnergy = 0;
}

/** Evaluates `model` on every batch of `batches`; see the module comment for the metrics. */
export async function evaluate(
  model: EvaluableModel,
  batches: BatchSource,
  options: EvaluateOptions = {},
): Promise<Metrics> {
  const sums = new Sums();
  let metrics: Set<MetricName> | undefined;
  let kind: LabelKind | undefined;
  for await (const batch of batches) {
    options.signal?.throwIfAborted();
    const output = predict(model, batch.x);
    const reference = options.reference ? predict(options.reference, batch.x) : undefined;
    try {
      const outputValues = (await output.data()) as Float32Array;
      const classes = output.shape[output.shape.length - 1];
      const labels = batch.y ? await batch.y.data() : undefined;
      if (batch.y && labels && kind === undefined) kind = labelKind(batch.y, output, () => isOneHot(labels, classes));
      if (metrics === undefined) {
        metrics = new Set([
          ...(options.metrics ?? defaultMetrics(labels !== undefined, kind, reference !== undefined, classes)),
          ...(options.perSample ? [options.perSample.metric] : []),
        ]);
        checkRequested(metrics, labels !== undefined, kind, reference !== undefined);
      }
      const referenceValues = reference ? ((await reference.data()) as Float32Array) : undefined;
      accumulate(sums, metrics, output.shape, outputValues, labels, kind, referenceValues, options.perSample);
    } finally {
      output.dispose();
      reference?.dispose();
    }
  }
  return summarize(sums, metrics ?? new Set(options.metrics ?? []));
}

function checkRequested(
  metrics: Set<MetricName>,
  hasLabels: boolean,
  kind: LabelKind | undefined,
  hasReference: boolean,
): void {
  for (const metric of metrics) {
    const needsReference = metric === 'agreement' || metric === 'sqnrDb';
    if (needsReference && !hasReference) throw new Error(`metric ${metric} needs a reference model`);
    if (!needsReference && !hasLabels)
      throw new InputError('invalid-dataset', `metric ${metric} needs labels (y) in every batch`);
    if ((metric === 'accuracy' || metric === 'top5') && kind === 'regression') {
      throw new InputError(
        'invalid-dataset',
        `metric ${metric} needs class labels (integer or one-hot), not regression targets`,
      );
    }
    if ((metric === 'mse' || metric === 'mae') && kind === 'integer') {
      throw new InputError('invalid-dataset', `metric ${metric} needs targets of the output's shape, not class ids`);
    }
  }
}

function accumulate(
  sums: Sums,
  metrics: Set<MetricName>,
  shape: number[],
  output: Float32Array,
  labels: ArrayLike<number> | undefined,
  kind: LabelKind | undefined,
  reference: Float32Array | undefined,
  perSample: EvaluateOptions['perSample'],
): void {
  const samples = shape[0];
  const classes = shape[shape.length - 1];
  const rowLength = output.length / samples;
  sums.samples += samples;
  const scores = perSample?.scores;
  if (labels && (metrics.has('accuracy') || metrics.has('top5'))) {
    for (let n = 0; n < samples; n++) {
      const offset = n * classes;
      const label = kind === 'one-hot' ? oneHotClass(labels, offset, classes) : Number(labels[n]);
      const correct = argMax(output, offset, classes) === label;
      const inTop5 = inTopK(output, offset, classes, label, 5);
      if (correct) sums.correct++;
      if (inTop5) sums.top5++;
      if (perSample?.metric === 'accuracy') scores!.push(correct ? 1 : 0);
      if (perSample?.metric === 'top5') scores!.push(inTop5 ? 1 : 0);
    }
  }
  if (labels && (metrics.has('mse') || metrics.has('mae'))) {
    const squared = perSample?.metric === 'mse';
    let sampleError = 0;
    for (let i = 0; i < output.length; i++) {
      const e = output[i] - Number(labels[i]);
      sums.squaredError += e * e;
      sums.absoluteError += e < 0 ? -e : e;
      if (scores && (squared || perSample!.metric === 'mae')) {
        sampleError += squared ? e * e : Math.abs(e);
        if ((i + 1) % rowLength === 0) {
          scores.push(sampleError / rowLength);
          sampleError = 0;
        }
      }
    }
    sums.elements += output.length;
  }
  if (reference) {
    for (let n = 0; n < samples && metrics.has('agreement'); n++) {
      const agrees = argMax(output, n * rowLength, rowLength) === argMax(reference, n * rowLength, rowLength);
      if (agrees) sums.agree++;
      if (perSample?.metric === 'agreement') scores!.push(agrees ? 1 : 0);
    }
    for (let i = 0; i < output.length; i++) {
      const e = output[i] - reference[i];
      sums.noiseEnergy += e * e;
      sums.signalEnergy += reference[i] * reference[i];
    }
  }
}

function summarize(sums: Sums, metrics: Set<MetricName>): Metrics {
  const result: Metrics = { samples: sums.samples };
  const perSample = (count: number): number => (sums.samples === 0 ? 0 : count / sums.samples);
  const perElement = (total: number): number => (sums.elements === 0 ? 0 : total / sums.elements);
  if (metrics.has('accuracy')) result.accuracy = perSample(sums.correct);
  if (metrics.has('top5')) result.top5 = perSample(sums.top5);
  if (metrics.has('mse')) result.mse = perElement(sums.squaredError);
  if (metrics.has('mae')) result.mae = perElement(sums.absoluteError);
  if (metrics.has('agreement')) result.agreement = perSample(sums.agree);
  if (metrics.has('sqnrDb')) {
    result.sqnrDb = sums.noiseEnergy === 0 ? null : 10 * Math.log10(sums.signalEnergy / sums.noiseEnergy);
  }
  return result;
}

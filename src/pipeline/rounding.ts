/**
 * `ptq.algorithm` gptq / adaround over a whole model: layer by layer, in manifest order, each affine kernel's
 * inputs are collected from calibration data run through the model as quantized so far (so a layer corrects
 * the error of the layers before it, as the GPTQ paper runs), its statistics (../quant/rounding/gram.ts)
 * feed the algorithm, and the rounded kernel replaces the float one before the next layer's inputs are
 * taken. The result is a set of finished affine tensors for runPtq's `precomputed`, on the grid nearest
 * rounding would use, and a per-layer report of time and output error before (nearest) and after.
 *
 * Cancelling is checked between layers; with `onCheckpoint` the finished layers are saved after each one,
 * and `resumeFrom` continues after them (a retried job does not round its first layers again).
 */
import * as tf from '@tensorflow/tfjs';
import picomatch from 'picomatch';
import type { JobSpec } from '../jobs/spec.js';
import { graphKernelSite, layersKernelSite, type KernelSite } from '../model/layer-geometry.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import type { LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import type { Batch } from '../quant/evaluate.js';
import type { AffineParams } from '../quant/methods/affine.js';
import { quantizationShape } from '../quant/methods/common.js';
import { InputStatistics } from '../quant/rounding/gram.js';
import { roundKernel, type RoundingAlgorithm } from '../quant/rounding/index.js';
import type { QuantizedTensor } from '../quant/types.js';
import { planTensors, tensorSeed, type PlannedTensor } from './ptq.js';

export interface RoundedLayer {
  name: string;
  layerType: string;
  algorithm: RoundingAlgorithm;
  /** Rows of layer input observed (samples × sampled positions). */
  rows: number;
  timeMs: number;
  /** Mean squared pre-activation output error on the calibration inputs: nearest rounding ... */
  outputMseBefore: number;
  /** ... and the algorithm's. */
  outputMseAfter: number;
}

export interface RoundingReport {
  algorithm: RoundingAlgorithm;
  samples: number;
  layers: RoundedLayer[];
  /** Tensors the algorithm did not round (they keep their method's own rounding), and why. */
  nearest: { name: string; reason: string }[];
}

export interface RoundingCheckpoint {
  kind: 'rounding';
  done: { layer: RoundedLayer; tensor: Omit<QuantizedTensor, 'dequantized'> & { dequantized: Float32Array } }[];
}

export interface RoundingOptions {
  signal?: AbortSignal;
  /** Calibration batches, at most `spec.ptq.samples` samples; iterated once per layer. */
  batches: () => AsyncIterable<Batch>;
  onLayer?: (done: number, total: number, name: string) => void | Promise<void>;
  resumeFrom?: RoundingCheckpoint;
  onCheckpoint?: (checkpoint: RoundingCheckpoint) => void | Promise<void>;
}

/** The values of `model` with some weights replaced (the layers rounded so far). */
function withValues(model: LoadedModel, replaced: Map<string, Float32Array>): LoadedModel {
  return {
    ...model,
    weights: model.weights.map((w) => {
      const values = replaced.get(w.name);
      return values === undefined ? w : { ...w, values, sourceQuantization: undefined };
    }),
  };
}

/** Feeds the layer input of every calibration batch to `statistics`. */
async function observeInputs(
  runnable: RunnableModel,
  site: Exclude<KernelSite, { reason: string }>,
  batches: AsyncIterable<Batch>,
  statistics: InputStatistics,
): Promise<void> {
  let probe: tf.LayersModel | undefined;
  if ('layer' in site) {
    const layers = runnable as tf.LayersModel;
    probe = tf.model({ inputs: layers.inputs, outputs: layers.getLayer(site.layer).input as tf.SymbolicTensor });
  }
  const graph = runnable instanceof tf.GraphModel ? runnable : undefined;
  // A kernel that reads the model's own input sees the batch as it is.
  const modelInput = graph !== undefined && 'node' in site ? graph.inputs.findIndex((i) => i.name === site.node) : -1;
  for await (const batch of batches) {
    if (modelInput >= 0) {
      const x = Array.isArray(batch.x) ? batch.x[modelInput] : batch.x;
      statistics.observe((await x.data()) as Float32Array, x.shape);
      continue;
    }
    const input = probe
      ? (probe.predict(batch.x) as tf.Tensor)
      : (graph!.execute(batch.x, (site as { node: string }).node) as tf.Tensor);
    try {
      statistics.observe((await input.data()) as Float32Array, input.shape);
    } finally {
      input.dispose();
    }
  }
}

/**
 * The kernels roundLayers rounds for `spec`, in its order (affine ones named by ptq.layers, every affine one
 * without it), and the others with the reason they keep their method's own rounding.
 */
export function roundingTargets(
  model: LoadedModel,
  spec: JobSpec,
): { targets: PlannedTensor[]; nearest: RoundingReport['nearest'] } {
  const named = spec.ptq.layers?.map((glob) => picomatch(glob));
  const nearest: RoundingReport['nearest'] = [];
  const targets = planTensors(model, spec).selected.filter((t) => {
    if (t.params.name !== 'affine') {
      nearest.push({ name: t.name, reason: `method ${t.params.name} has no affine grid` });
      return false;
    }
    if (named && !named.some((match) => match(t.name))) {
      nearest.push({ name: t.name, reason: 'not named by ptq.layers' });
      return false;
    }
    return true;
  });
  return { targets, nearest };
}

export async function roundLayers(
  model: LoadedModel,
  spec: JobSpec,
  options: RoundingOptions,
): Promise<{ precomputed: Map<string, QuantizedTensor>; report: RoundingReport }> {
  const algorithm = spec.ptq.algorithm;
  const weights = new Map(model.weights.map((w) => [w.name, w]));
  const precomputed = new Map<string, QuantizedTensor>();
  const replaced = new Map<string, Float32Array>();
  const layers: RoundedLayer[] = [];
  const done: RoundingCheckpoint['done'] = [];
  for (const entry of options.resumeFrom?.done ?? []) {
    done.push(entry);
    layers.push(entry.layer);
    precomputed.set(entry.layer.name, entry.tensor);
    replaced.set(entry.layer.name, entry.tensor.dequantized);
  }
  const planned = roundingTargets(model, spec);
  const nearest = planned.nearest;
  const targets = planned.targets.filter((t) => !precomputed.has(t.name));

  for (const [index, target] of targets.entries()) {
    options.signal?.throwIfAborted();
    await options.onLayer?.(index, targets.length, target.name);
    const started = performance.now();
    const weight = weights.get(target.name)!;
    const runnable = await loadRunnable(writeModel(withValues(model, replaced), new Map()));
    try {
      const site =
        runnable instanceof tf.LayersModel
          ? layersKernelSite(runnable, target.name, weight.shape)
          : graphKernelSite(model, target.name, weight.shape);
      if ('reason' in site) {
        nearest.push({ name: target.name, reason: site.reason });
        continue;
      }
      const seed = tensorSeed((target.params as AffineParams).seed, target.name);
      const statistics = new InputStatistics(site.geometry, { maxPositions: spec.ptq.maxPositions, seed });
      await observeInputs(runnable, site, options.batches(), statistics);
      if (statistics.count === 0) {
        nearest.push({ name: target.name, reason: 'no calibration rows reached the layer' });
        continue;
      }
      const shape = quantizationShape(weight.shape, target.role, 'affine');
      const rounded = roundKernel(
        algorithm,
        weight.values as Float32Array,
        shape,
        target.params as AffineParams,
        statistics,
        {
          gptq: spec.ptq.gptq,
          adaround: spec.ptq.adaround,
          seed,
        },
      );
      const layer: RoundedLayer = {
        name: target.name,
        layerType: target.layerType,
        algorithm,
        rows: statistics.count,
        timeMs: Math.round((performance.now() - started) * 10) / 10,
        outputMseBefore: rounded.outputMseBefore,
        outputMseAfter: rounded.outputMseAfter,
      };
      layers.push(layer);
      precomputed.set(target.name, rounded.tensor);
      replaced.set(target.name, rounded.tensor.dequantized);
      done.push({ layer, tensor: rounded.tensor });
      await options.onCheckpoint?.({ kind: 'rounding', done: [...done] });
    } finally {
      runnable.dispose();
    }
    // Yield so a cancel flag or a lock renewal can be seen between layers.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await options.onLayer?.(targets.length, targets.length, '');
  return { precomputed, report: { algorithm, samples: spec.ptq.samples, layers, nearest } };
}

/**
 * Each named kernel rounded with `algorithm` for each of its params, alone: its inputs are those of the
 * float model (every other weight in float), as the sensitivity table measures every config. A kernel whose
 * inputs cannot be observed, or that no calibration row reaches, is left out of the result.
 */
export async function roundEachAlone(
  model: LoadedModel,
  spec: JobSpec,
  algorithm: Exclude<RoundingAlgorithm, 'nearest'>,
  kernels: { name: string; role: string; params: AffineParams[] }[],
  options: Pick<RoundingOptions, 'signal' | 'batches'>,
): Promise<Map<string, QuantizedTensor[]>> {
  const weights = new Map(model.weights.map((w) => [w.name, w]));
  const rounded = new Map<string, QuantizedTensor[]>();
  const runnable = await loadRunnable(writeModel(model, new Map()));
  try {
    for (const kernel of kernels) {
      options.signal?.throwIfAborted();
      const weight = weights.get(kernel.name)!;
      const site =
        runnable instanceof tf.LayersModel
          ? layersKernelSite(runnable, kernel.name, weight.shape)
          : graphKernelSite(model, kernel.name, weight.shape);
      if ('reason' in site) continue;
      const seed = tensorSeed(kernel.params[0]?.seed ?? 0, kernel.name);
      const statistics = new InputStatistics(site.geometry, { maxPositions: spec.ptq.maxPositions, seed });
      await observeInputs(runnable, site, options.batches(), statistics);
      if (statistics.count === 0) continue;
      const shape = quantizationShape(weight.shape, kernel.role, 'affine');
      rounded.set(
        kernel.name,
        kernel.params.map(
          (params) =>
            roundKernel(algorithm, weight.values as Float32Array, shape, params, statistics, {
              gptq: spec.ptq.gptq,
              adaround: spec.ptq.adaround,
              seed: tensorSeed(params.seed, kernel.name),
            }).tensor,
        ),
      );
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    runnable.dispose();
  }
  return rounded;
}

/**
 * Activation quantization, simulated (docs/methods.md, Activations): calibrate a range for each
 * layer output over a calibration set, then fake-quantise those outputs so evaluation reports what a
 * W{b}A{b} integer target would score.
 *
 * Which outputs: those of Dense, convolution (Conv1D/2D/3D, transposed, DepthwiseConv2D, SeparableConv1D/2D),
 * activation (Activation, ReLU, LeakyReLU, PReLU, ELU, ThresholdedReLU), BatchNormalization, pooling and
 * merge (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) layers — the tensors an integer
 * runtime stores between ops. Not the model's inputs, not a softmax (its probabilities are what the user
 * reads), not reshaping layers (Flatten, Reshape, Dropout: they pass values through), not a layer called
 * more than once (one range per tensor), and not the layers of a nested model.
 *
 * Ranges, on the affine grid of docs/methods.md (s = (max − min)/(2^b − 1), z = round(−min/s)) after the range
 * is widened to hold 0 (so zero padding and ReLU's zeros are exact):
 * - minmax: the observed min and max;
 * - percentile: the (100 − p)th and pth percentiles;
 * - mse: the clip [r·min, r·max], r ∈ (0.3, 1], minimising the expected squared error on the histogram
 *   (s²/12 inside the range, the distance to the edge outside);
 * - kl: TensorRT's entropy calibration (Migacz 2017, "8-bit Inference with TensorRT"): on the histogram of
 *   |x| (of x itself when x ≥ 0), the threshold T whose clipped distribution P and its n-level
 *   quantization Q have the least KL(P‖Q), n = 2^b for non-negative outputs, 2^(b−1) per side otherwise;
 *   range [max(min, −T), min(max, T)]. Exact zeros are left out of the histogram searched: every grid
 *   holds 0 exactly, and ReLU's spike there otherwise pulls T far below the bulk of the values.
 *
 * Calibration streams: per layer only a running min/max and a fixed 2048-bin histogram are kept. The
 * histogram spans the range seen so far; when a batch goes beyond it, the counts are moved to the wider
 * range (each old bin to the new bin holding its centre).
 */
import * as tf from '@tensorflow/tfjs';
import { FakeQuant } from './fake-quant-layer.js';
import type { BatchSource } from './evaluate.js';

export type ActivationCalibration = 'minmax' | 'percentile' | 'mse' | 'kl';

export interface ActivationOptions {
  bits: number;
  calibration: ActivationCalibration;
  /** For `percentile`: the upper percentile kept, e.g. 99.99 (the lower one is 100 − p). */
  percentile?: number;
  signal?: AbortSignal;
}

export interface ActivationRange {
  layer: string;
  bits: number;
  calibration: ActivationCalibration;
  /** The calibrated range (0 included); the grid is s·(q − z), q ∈ [0, 2^bits − 1]. */
  min: number;
  max: number;
  scale: number;
  zeroPoint: number;
}

export const DEFAULT_PERCENTILE = 99.99;
const HISTOGRAM_BINS = 2048;

const QUANTIZED_CLASSES: ReadonlySet<string> = new Set([
  'Dense',
  'Conv1D',
  'Conv2D',
  'Conv3D',
  'Conv2DTranspose',
  'Conv3DTranspose',
  'DepthwiseConv2D',
  'SeparableConv1D',
  'SeparableConv2D',
  'Activation',
  'ReLU',
  'LeakyReLU',
  'PReLU',
  'ELU',
  'ThresholdedReLU',
  'BatchNormalization',
  'MaxPooling1D',
  'MaxPooling2D',
  'MaxPooling3D',
  'AveragePooling1D',
  'AveragePooling2D',
  'AveragePooling3D',
  'GlobalAveragePooling1D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling1D',
  'GlobalMaxPooling2D',
  'Add',
  'Subtract',
  'Multiply',
  'Average',
  'Maximum',
  'Minimum',
  'Concatenate',
]);

/** The layers whose outputs are calibrated and fake-quantised (see the module comment). */
export function activationLayers(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.filter((layer) => {
    if (!QUANTIZED_CLASSES.has(layer.getClassName())) return false;
    if (layer.inboundNodes.length !== 1 || Array.isArray(layer.output)) return false;
    const activation = (layer.getConfig() as { activation?: unknown }).activation;
    return activation !== 'softmax';
  });
}

/** Running min/max and a fixed-bin histogram over [low, high], widened as new data needs. */
export class ActivationObserver {
  min = Infinity;
  max = -Infinity;
  low = 0;
  high = 0;
  readonly counts = new Float64Array(HISTOGRAM_BINS);
  total = 0;
  /** Values exactly 0 (ReLU's), which every grid holding 0 represents without error. */
  zeros = 0;

  observe(values: ArrayLike<number>): void {
    let batchMin = Infinity;
    let batchMax = -Infinity;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v < batchMin) batchMin = v;
      if (v > batchMax) batchMax = v;
    }
    if (!Number.isFinite(batchMin) || !Number.isFinite(batchMax)) {
      if (values.length === 0) return;
      throw new RangeError('activation values are not finite');
    }
    if (this.total === 0) {
      this.low = batchMin;
      this.high = batchMax > batchMin ? batchMax : batchMin + 1e-6;
    } else if (batchMin < this.low || batchMax > this.high) {
      this.widen(Math.min(batchMin, this.low), Math.max(batchMax, this.high));
    }
    this.min = Math.min(this.min, batchMin);
    this.max = Math.max(this.max, batchMax);
    const width = (this.high - this.low) / HISTOGRAM_BINS;
    for (let i = 0; i < values.length; i++) {
      if (values[i] === 0) this.zeros++;
      this.counts[this.bin(values[i], width)]++;
    }
    this.total += values.length;
  }

  binWidth(): number {
    return (this.high - this.low) / HISTOGRAM_BINS;
  }

  binCentre(bin: number): number {
    return this.low + (bin + 0.5) * this.binWidth();
  }

  private bin(value: number, width: number): number {
    const bin = Math.floor((value - this.low) / width);
    return bin < 0 ? 0 : bin >= HISTOGRAM_BINS ? HISTOGRAM_BINS - 1 : bin;
  }

  private widen(low: number, high: number): void {
    const old = Float64Array.from(this.counts);
    const oldLow = this.low;
    const oldWidth = this.binWidth();
    this.low = low;
    this.high = high;
    this.counts.fill(0);
    const width = this.binWidth();
    for (let b = 0; b < HISTOGRAM_BINS; b++) {
      if (old[b] !== 0) this.counts[this.bin(oldLow + (b + 0.5) * oldWidth, width)] += old[b];
    }
  }
}

/** The affine grid of `bits` bits over [low, high] widened to hold 0. */
export function affineRange(
  low: number,
  high: number,
  bits: number,
): { min: number; max: number; scale: number; zeroPoint: number } {
  const min = Math.min(low, 0);
  const max = Math.max(high, 0);
  const levels = 2 ** bits - 1;
  if (max === min) return { min, max, scale: 1, zeroPoint: 0 };
  const scale = (max - min) / levels;
  // (0 − min), not −min: a zero point of −0 would print and compare as a different number.
  const zeroPoint = Math.min(levels, Math.max(0, Math.round((0 - min) / scale)));
  return { min, max, scale, zeroPoint };
}

/** The value below which `fraction` of the histogram's mass lies, interpolated within its bin. */
function quantile(observer: ActivationObserver, fraction: number): number {
  const target = fraction * observer.total;
  let cumulative = 0;
  for (let b = 0; b < HISTOGRAM_BINS; b++) {
    const next = cumulative + observer.counts[b];
    if (next >= target && observer.counts[b] > 0) {
      const within = (target - cumulative) / observer.counts[b];
      return observer.low + (b + within) * observer.binWidth();
    }
    cumulative = next;
  }
  return observer.high;
}

function percentileClip(observer: ActivationObserver, percentile: number): [number, number] {
  const upper = Math.min(observer.max, quantile(observer, percentile / 100));
  const lower = Math.max(observer.min, quantile(observer, 1 - percentile / 100));
  return [lower, upper];
}

/** Expected squared error of the grid over [low, high] on the histogram (see the module comment). */
function expectedError(observer: ActivationObserver, low: number, high: number, bits: number): number {
  const { min, max, scale } = affineRange(low, high, bits);
  const rounding = (scale * scale) / 12;
  let error = 0;
  for (let b = 0; b < HISTOGRAM_BINS; b++) {
    const count = observer.counts[b];
    if (count === 0) continue;
    const x = observer.binCentre(b);
    const clipped = x < min ? min - x : x > max ? x - max : 0;
    error += count * (clipped === 0 ? rounding : clipped * clipped);
  }
  return error;
}

function mseClip(observer: ActivationObserver, bits: number): [number, number] {
  let best: [number, number] = [observer.min, observer.max];
  let bestError = expectedError(observer, observer.min, observer.max, bits);
  for (let step = 1; step < 100; step++) {
    const ratio = 1 - 0.007 * step;
    const error = expectedError(observer, observer.min * ratio, observer.max * ratio, bits);
    if (error < bestError) {
      bestError = error;
      best = [observer.min * ratio, observer.max * ratio];
    }
  }
  return best;
}

/** KL(P‖Q) of two unnormalised distributions; a bin where P has mass and Q none costs as if Q were tiny. */
function klDivergence(p: Float64Array, q: Float64Array, length: number): number {
  let pSum = 0;
  let qSum = 0;
  for (let i = 0; i < length; i++) {
    pSum += p[i];
    qSum += q[i];
  }
  let divergence = 0;
  for (let i = 0; i < length; i++) {
    if (p[i] === 0) continue;
    const pi = p[i] / pSum;
    const qi = q[i] === 0 ? 1e-10 : q[i] / qSum;
    divergence += pi * Math.log(pi / qi);
  }
  return divergence;
}

/**
 * TensorRT's entropy threshold on a histogram of magnitudes (`counts` over [0, binWidth·counts.length)):
 * for each candidate i ≥ levels, P = counts[0, i) with the outliers added to its last bin; Q = counts[0, i)
 * merged into `levels` groups, each group's mass spread evenly over the bins where P is not empty (as the
 * MXNet/TensorRT reference implementation does).
 */
export function entropyThreshold(counts: Float64Array, binWidth: number, levels: number): number {
  const bins = counts.length;
  if (levels >= bins) return bins * binWidth;
  const reference = new Float64Array(bins);
  const candidate = new Float64Array(bins);
  let outliers = 0;
  for (let b = levels; b < bins; b++) outliers += counts[b];
  let bestBins = bins;
  let bestDivergence = Infinity;
  for (let i = levels; i <= bins; i++) {
    reference.set(counts.subarray(0, i));
    reference[i - 1] += outliers;
    if (i < bins) outliers -= counts[i];
    const merged = i / levels;
    for (let level = 0; level < levels; level++) {
      const start = Math.floor(level * merged);
      const stop = level === levels - 1 ? i : Math.floor((level + 1) * merged);
      let mass = 0;
      let nonEmpty = 0;
      for (let b = start; b < stop; b++) {
        mass += counts[b];
        if (reference[b] !== 0) nonEmpty++;
      }
      for (let b = start; b < stop; b++) candidate[b] = reference[b] !== 0 ? mass / nonEmpty : 0;
    }
    const divergence = klDivergence(reference, candidate, i);
    if (divergence < bestDivergence) {
      bestDivergence = divergence;
      bestBins = i;
    }
  }
  return (bestBins + 0.5) * binWidth;
}

function klClip(observer: ActivationObserver, bits: number): [number, number] {
  const nonNegative = observer.min >= 0;
  const extent = Math.max(Math.abs(observer.min), Math.abs(observer.max));
  if (extent === 0) return [0, 0];
  const magnitudes = new Float64Array(HISTOGRAM_BINS);
  const width = extent / HISTOGRAM_BINS;
  for (let b = 0; b < HISTOGRAM_BINS; b++) {
    const count = observer.counts[b];
    if (count === 0) continue;
    magnitudes[Math.min(HISTOGRAM_BINS - 1, Math.floor(Math.abs(observer.binCentre(b)) / width))] += count;
  }
  // Exact zeros cost nothing on any grid; left in, ReLU's spike at 0 dominates P and drives T far too low.
  magnitudes[0] = Math.max(0, magnitudes[0] - observer.zeros);
  const threshold = entropyThreshold(magnitudes, width, nonNegative ? 2 ** bits : 2 ** (bits - 1));
  return [Math.max(observer.min, -threshold), Math.min(observer.max, threshold)];
}

/** The calibrated range of one observed layer output. */
export function rangeFromObserver(
  layer: string,
  observer: ActivationObserver,
  options: ActivationOptions,
): ActivationRange {
  const { bits, calibration } = options;
  let clip: [number, number];
  if (observer.total === 0) clip = [0, 0];
  else if (calibration === 'minmax') clip = [observer.min, observer.max];
  else if (calibration === 'percentile') clip = percentileClip(observer, options.percentile ?? DEFAULT_PERCENTILE);
  else if (calibration === 'mse') clip = mseClip(observer, bits);
  else clip = klClip(observer, bits);
  return { layer, bits, calibration, ...affineRange(clip[0], clip[1], bits) };
}

function checkOptions(options: ActivationOptions): void {
  if (!Number.isInteger(options.bits) || options.bits < 2 || options.bits > 16) {
    throw new RangeError(`activation bits must be an integer in 2..16, got ${options.bits}`);
  }
  const p = options.percentile ?? DEFAULT_PERCENTILE;
  if (!(p > 50 && p <= 100)) throw new RangeError(`percentile must be in (50, 100], got ${p}`);
}

/** Ranges for every output of activationLayers(model), observed over `batches` (their x only). */
export async function calibrateActivations(
  model: tf.LayersModel,
  batches: BatchSource,
  options: ActivationOptions,
): Promise<ActivationRange[]> {
  checkOptions(options);
  const layers = activationLayers(model);
  if (layers.length === 0) return [];
  // A model over the same layers (no weight copies) whose outputs are the tensors to observe.
  const probe = tf.model({ inputs: model.inputs, outputs: layers.map((layer) => layer.output as tf.SymbolicTensor) });
  const observers = layers.map(() => new ActivationObserver());
  for await (const batch of batches) {
    options.signal?.throwIfAborted();
    const outputs = probe.predict(batch.x) as tf.Tensor | tf.Tensor[];
    const list = Array.isArray(outputs) ? outputs : [outputs];
    try {
      for (let i = 0; i < list.length; i++) observers[i].observe(await list[i].data());
    } finally {
      for (const output of list) output.dispose();
    }
  }
  return layers.map((layer, i) => rangeFromObserver(layer.name, observers[i], options));
}

type Json = Record<string, unknown>;
type TensorRef = [string, number, number, ...unknown[]];

function isTensorRef(value: unknown): value is TensorRef {
  return Array.isArray(value) && typeof value[0] === 'string' && typeof value[1] === 'number';
}

/**
 * A copy of `model` (same weights, copied) with a FakeQuant layer after each layer `ranges` names: every
 * consumer of that layer's output, and the model's outputs, read the fake-quantised tensor instead.
 */
export async function withFakeQuantActivations(
  model: tf.LayersModel,
  ranges: ActivationRange[],
): Promise<tf.LayersModel> {
  const topology = model.toJSON(null, false) as Json;
  const config = topology.config as Json;
  const layers = config.layers as Json[];
  const sequential = topology.class_name === 'Sequential';
  const names = new Set(layers.map((layer) => String((layer.config as Json).name)));
  for (const range of ranges) {
    const index = layers.findIndex((layer) => (layer.config as Json).name === range.layer);
    if (index < 0) throw new Error(`activation range names layer ${range.layer}, which the model does not have`);
    const layer = layers[index];
    if (!sequential && (layer.inbound_nodes as unknown[]).length !== 1) {
      throw new Error(
        `layer ${range.layer} is called more than once: one activation range cannot stand for all its outputs`,
      );
    }
    let name = `${range.layer}_fake_quant`;
    for (let n = 1; names.has(name); n++) name = `${range.layer}_fake_quant_${n}`;
    names.add(name);
    // Keys in Python style: tfjs turns them back into the layer's camelCase args on loading.
    const fakeQuant: Json = {
      class_name: FakeQuant.className,
      config: { name, trainable: false, scale: range.scale, zero_point: range.zeroPoint, bits: range.bits },
    };
    if (!sequential) {
      const source = (ref: TensorRef): TensorRef => (ref[0] === range.layer ? [name, 0, 0, ...ref.slice(3)] : ref);
      for (const other of layers) {
        other.inbound_nodes = (other.inbound_nodes as TensorRef[][]).map((node) => node.map(source));
      }
      config.output_layers = (config.output_layers as unknown[]).map((ref) => (isTensorRef(ref) ? source(ref) : ref));
      fakeQuant.name = name;
      fakeQuant.inbound_nodes = [[[range.layer, 0, 0, {}]]];
    }
    layers.splice(index + 1, 0, fakeQuant);
  }
  const simulated = await tf.models.modelFromJSON({ modelTopology: topology as tf.serialization.ConfigDict });
  for (const layer of model.layers) {
    if (layer.weights.length > 0) simulated.getLayer(layer.name).setWeights(layer.getWeights());
  }
  return simulated;
}

/**
 * Quantization-aware training (docs/methods.md, Quantization-aware training), BinaryConnect-style (Courbariaux et al. 2015):
 * the model's variables keep float "shadow" weights W; each step
 *   1. puts Q(W) into the planned kernels' variables, Q being the very method module PTQ runs (so the weights
 *      trained against are exactly the ones PTQ of the final shadow weights writes),
 *   2. computes the loss and its gradient g = ∂L/∂Ŵ at Ŵ = Q(W) (tf.variableGrads),
 *   3. puts W back and updates it with the straight-through estimator's gradient: g itself ("identity"), or
 *      g·1[lo ≤ w ≤ hi] ("clipped", the quantizer's range per method: see ./ste.ts).
 * Nothing is rewritten in the model's graph, so every layer type trains (Dense, Conv2D, DepthwiseConv2D,
 * SeparableConv2D, Embedding, ...); quantizing is one dataSync and one typed-array pass per kernel per step.
 * BatchNormalization statistics are updated in the forward pass at Q(W), i.e. for the quantized network.
 *
 * Training methods (lab, admm, inq, ttq; ./methods.ts) plug in per kernel through the KernelTrainer contract
 * of ./kernel.ts: their own Ŵ (LAB's curvature-weighted α, TTQ's learned scales, INQ's frozen powers of two,
 * ADMM's float W with the penalty gradient), epoch schedules and learned state, all in plain typed arrays;
 * the plain PTQ methods run as the STE kernel above. `regularizer` adds a term to the loss (PACT's penalty).
 *
 * After training the variables hold the float shadow weights; exporting them through PTQ with the same plan
 * writes exactly Q(W_final) for a PTQ method. A training method's final tensor (learned scales included) is
 * in the result's `quantized`, for the export to write as given. Cancellation is checked between batches, progress is reported per batch and per
 * epoch, and each epoch ends with a checkpoint (weights, optimizer slots, history) to resume from.
 */
import * as tf from '@tensorflow/tfjs';
import type { MethodParams } from '../methods/index.js';
import { heldOutMask, maskedRows } from '../held-out.js';
import { createRng, type Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { InputError } from '../../errors.js';
import type { KernelState, KernelTrainer, StepContext } from './kernel.js';
import { createKernelTrainer } from './trainers.js';
import type { TrainingMethodParams } from './methods.js';
import { ShadowOptimizer, type OptimizerName, type OptimizerState } from './optimizer.js';
import type { SteMode } from './ste.js';

/** How one weight (named as in model.json: the variable's originalName) is quantized. */
export interface QatPlanEntry {
  /** The PTQ method (a training method's export quantizer when `training` is set). */
  params: MethodParams;
  /** A training method (lab, admm, inq, ttq) the kernel trains with instead of the STE over `params`. */
  training?: TrainingMethodParams;
  /** Defaults to getMethod(params.name). */
  method?: QuantMethod;
  /** The shape the method sees (PTQ's: a depthwise kernel's last two axes merged); defaults to the weight's. */
  shape?: readonly number[];
}

export type QatPlan = Map<string, QatPlanEntry>;

/** One weight of a TrainableModel: its model.json name and the variable that holds it. */
export interface TrainableWeight {
  readonly originalName: string;
  readonly dtype: string;
  readonly shape: readonly (number | null)[];
  read(): tf.Tensor;
}

/**
 * What QAT needs of a model. A tf.LayersModel is one; a graph model gets one from
 * model/trainable-graph.ts. `outputIsSoftmax` tells a model that is not a LayersModel whether its output
 * already is a softmax (a LayersModel's last layer says so itself).
 */
export interface TrainableModel {
  readonly outputs: readonly unknown[];
  readonly weights: readonly TrainableWeight[];
  readonly trainableWeights: readonly TrainableWeight[];
  readonly outputIsSoftmax?: boolean;
  apply(x: tf.Tensor, kwargs: { training: boolean }): unknown;
}

export interface Batch {
  x: tf.Tensor;
  y: tf.Tensor;
}

/**
 * Batches iterated once per epoch. The source owns its tensors (it may dispose a batch once the next one is
 * asked for) and decides order and batch size.
 */
export type BatchSource = Iterable<Batch> | AsyncIterable<Batch>;

/** Epoch `epoch`'s (0-based) batches: a source that orders each epoch itself (a shuffled dataset). */
export type EpochBatches = (epoch: number) => BatchSource;

/** Whole tensors (shuffled, batched and split by the trainer), a batch source (the same every epoch) or one per epoch. */
export type TrainingData = Batch | BatchSource | EpochBatches;

/**
 * `crossentropy` (on probabilities when the model ends in softmax, else on logits; y as integer labels or
 * one-hot, metric top-1 accuracy) or `mse` (metric mean absolute error). `auto`: crossentropy when the model
 * ends in softmax or y holds int32 labels, mse otherwise.
 */
export type LossName = 'auto' | 'crossentropy' | 'mse';

export interface QatStepOptions {
  plan: QatPlan;
  /** Default adam. */
  optimizer?: OptimizerName;
  /** Default 1e-3. */
  learningRate?: number;
  /** sgd's momentum μ; default 0.9. */
  momentum?: number;
  /** Default identity. */
  ste?: SteMode;
  /** Default auto. */
  loss?: LossName;
  /** Seeds shuffling and stochastic quantizers; default 0. */
  seed?: number;
  /** Added to the loss inside the gradient tape (e.g. PACT's L2 penalty on its clipping levels). */
  regularizer?: () => tf.Scalar;
}

export interface BatchMetrics {
  /** 1-based. */
  epoch: number;
  /** 1-based within the epoch. */
  batch: number;
  /** Known when the trainer batches whole tensors itself. */
  batches?: number;
  loss: number;
  metric: number;
  metricName: MetricName;
}

export interface EpochMetrics {
  /** 1-based. */
  epoch: number;
  /** Sample-weighted means over the epoch's training batches (at Q(W), in training mode). */
  loss: number;
  metric: number;
  metricName: MetricName;
  /** On the validation data, at Q(W), in inference mode. */
  valLoss?: number;
  valMetric?: number;
  learningRate: number;
  batches: number;
  ms: number;
}

export type MetricName = 'accuracy' | 'mae';

/** Plain data (JSON-able apart from the typed arrays; node:v8 keeps those): enough to resume after epoch `epoch`. */
export interface QatCheckpoint {
  /** Epochs completed. */
  epoch: number;
  /** Every float32 weight of the model (the shadow weights and BN statistics), by originalName. */
  weights: { name: string; shape: number[]; values: Float32Array }[];
  optimizer: OptimizerState;
  history: EpochMetrics[];
  /** Each kernel's method state besides its weights (learned scales, frozen sets, ADMM's G and λ). */
  kernels?: { name: string; state: KernelState }[];
}

export interface QatOptions extends QatStepOptions {
  epochs: number;
  /** Tensor data only; default 32. */
  batchSize?: number;
  /** Inverse-time decay per epoch: epoch e (0-based) trains with learningRate / (1 + decay·e). Default 0. */
  learningRateDecay?: number;
  /**
   * Tensor data only: this fraction of the samples is held out (exactly round(fraction · n), at least one, one
   * left to train on), drawn from all of them by `seed` (heldOutMask) rather than Keras's last rows, so data
   * sorted by class is validated on every class. They are read in their order, the same every epoch.
   */
  validationSplit?: number;
  validationData?: Batch | BatchSource;
  /** Checked before every batch: an aborted run throws an AbortError, the variables holding shadow weights. */
  signal?: AbortSignal;
  onBatch?: (metrics: BatchMetrics) => void | Promise<void>;
  onEpoch?: (metrics: EpochMetrics) => void | Promise<void>;
  /** Called after every epoch with the state to resume from. */
  onCheckpoint?: (checkpoint: QatCheckpoint) => void | Promise<void>;
  /** Called after every epoch (after onEpoch); true ends training. */
  earlyStop?: (metrics: EpochMetrics) => boolean;
  /** Resume after checkpoint.epoch epochs: weights, optimizer state and history are restored. */
  resumeFrom?: QatCheckpoint;
}

export interface QatResult {
  history: EpochMetrics[];
  /** The state after the last epoch run. */
  checkpoint: QatCheckpoint;
  stoppedEarly: boolean;
  /**
   * The final tensors of the kernels a training method exported itself (lab, admm, inq, ttq: not PTQ of the
   * shadow weights), by weight name: what the export must write as given.
   */
  quantized: Map<string, QuantizedTensor>;
}

export interface StepMetrics {
  loss: number;
  metric: number;
}

/** One QAT step at a time, for callers that drive their own loop (and for the benchmark). */
export interface QatStep {
  step(x: tf.Tensor, y: tf.Tensor): StepMetrics;
  dispose(): void;
}

interface Kernel {
  name: string;
  variable: tf.Variable;
  /** Its position among the trainable variables (the optimizer's order). */
  index: number;
  trainer: KernelTrainer;
  seed: number;
}

interface ResolvedLoss {
  metricName: MetricName;
  loss(y: tf.Tensor, prediction: tf.Tensor): tf.Scalar;
  metric(y: tf.Tensor, prediction: tf.Tensor): tf.Scalar;
}

/** A 32-bit hash of (seed, name): each kernel's stochastic choices are its own. */
function kernelSeed(seed: number, name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return (hash ^ seed) >>> 0;
}

function mixSeed(seed: number, counter: number): number {
  let z = (seed + Math.imul(counter + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function endsInSoftmax(model: TrainableModel): boolean {
  if (!(model instanceof tf.LayersModel)) return model.outputIsSoftmax ?? false;
  const last = model.layers[model.layers.length - 1];
  return (last.getConfig() as { activation?: unknown }).activation === 'softmax';
}

/** Integer labels (rank 1, or a trailing axis of 1 when the model has several outputs) → one-hot float. */
function targetsFor(y: tf.Tensor, prediction: tf.Tensor): tf.Tensor {
  const classes = prediction.shape[prediction.rank - 1];
  const isLabels =
    y.rank === prediction.rank - 1 || (y.rank === prediction.rank && y.shape[y.rank - 1] === 1 && classes > 1);
  if (!isLabels) return y.dtype === 'float32' ? y : tf.cast(y, 'float32');
  return tf.oneHot(tf.cast(tf.reshape(y, [-1]), 'int32'), classes).toFloat();
}

function resolveLoss(name: LossName, model: TrainableModel, y: tf.Tensor): ResolvedLoss {
  const softmaxOutput = endsInSoftmax(model);
  const kind = name !== 'auto' ? name : softmaxOutput || y.dtype === 'int32' ? 'crossentropy' : 'mse';
  if (kind === 'mse') {
    return {
      metricName: 'mae',
      loss: (target, prediction) => tf.losses.meanSquaredError(tf.cast(target, 'float32'), prediction) as tf.Scalar,
      metric: (target, prediction) => tf.mean(tf.abs(tf.sub(tf.cast(target, 'float32'), prediction))) as tf.Scalar,
    };
  }
  const epsilon = 1e-7;
  return {
    metricName: 'accuracy',
    loss: (target, prediction) => {
      const oneHot = targetsFor(target, prediction);
      if (!softmaxOutput) return tf.losses.softmaxCrossEntropy(oneHot, prediction) as tf.Scalar;
      const logProbabilities = tf.log(tf.clipByValue(prediction, epsilon, 1 - epsilon));
      return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, logProbabilities), -1))) as tf.Scalar;
    },
    metric: (target, prediction) => {
      const oneHot = targetsFor(target, prediction);
      return tf.mean(tf.cast(tf.equal(tf.argMax(prediction, -1), tf.argMax(oneHot, -1)), 'float32')) as tf.Scalar;
    },
  };
}

class QatSession implements QatStep {
  readonly optimizer: ShadowOptimizer;
  private readonly kernels: Kernel[];
  private readonly trainableVariables: tf.Variable[];
  private readonly ste: SteMode;
  private resolved: ResolvedLoss | undefined;

  constructor(
    private readonly model: TrainableModel,
    private readonly options: QatStepOptions,
  ) {
    if (model.outputs.length !== 1)
      throw new InputError('invalid-model', `QAT trains single-output models; this one has ${model.outputs.length}`);
    this.ste = options.ste ?? 'identity';
    const byName = new Map(model.weights.map((w) => [w.originalName, w]));
    const trainable = model.trainableWeights;
    this.trainableVariables = trainable.map((w) => w.read() as tf.Variable);
    this.kernels = [...options.plan].map(([name, entry]) => {
      const weight = byName.get(name);
      if (weight === undefined) throw new Error(`QAT plan names "${name}", which is not a weight of the model`);
      if (weight.dtype !== 'float32') throw new Error(`QAT plan names "${name}", a ${weight.dtype} weight`);
      const shape = entry.shape ?? (weight.shape as number[]);
      const size = weight.shape.reduce((a: number, b) => a * (b ?? 1), 1);
      if (shape.reduce((a, b) => a * b, 1) !== size) {
        throw new Error(
          `QAT plan shape [${shape.join(', ')}] does not fit "${name}" of shape [${weight.shape.join(', ')}]`,
        );
      }
      const seedOf = entry.training ?? entry.params;
      const seed = 'seed' in seedOf ? seedOf.seed : 0;
      const variable = weight.read() as tf.Variable;
      return {
        name,
        variable,
        index: this.trainableVariables.indexOf(variable),
        trainer: createKernelTrainer(entry.params, entry.training, { shape, ste: this.ste }, entry.method),
        seed: kernelSeed(mixSeed(seed, options.seed ?? 0), name),
      };
    });
    this.optimizer = new ShadowOptimizer(
      {
        name: options.optimizer ?? 'adam',
        learningRate: options.learningRate ?? 1e-3,
        momentum: options.momentum ?? 0.9,
      },
      this.trainableVariables,
      trainable.map((w) => w.originalName),
    );
  }

  get metricName(): MetricName | undefined {
    return this.resolved?.metricName;
  }

  private lossFor(y: tf.Tensor): ResolvedLoss {
    this.resolved ??= resolveLoss(this.options.loss ?? 'auto', this.model, y);
    return this.resolved;
  }

  /** The trainer's view of the run for `kernel` now: the step's seeded draws, Adam's moment on demand. */
  private context(kernel: Kernel): StepContext {
    const step = this.optimizer.step;
    return {
      step,
      learningRate: this.optimizer.learningRate,
      rng: createRng(mixSeed(kernel.seed, step)),
      secondMoment: () => (kernel.index < 0 ? undefined : this.optimizer.secondMoment(kernel.index)),
    };
  }

  /**
   * Puts Ŵ (the trainer's forward weights, or its inference weights) into every planned kernel and returns
   * the shadow tensors, the shadow values and the gradient masks.
   */
  private quantizeKernels(mode: 'train' | 'inference'): {
    shadows: tf.Tensor[];
    values: Float32Array[];
    masks: (Float32Array | undefined)[];
  } {
    const shadows: tf.Tensor[] = [];
    const values: Float32Array[] = [];
    const masks: (Float32Array | undefined)[] = [];
    try {
      for (const kernel of this.kernels) {
        const shadow = kernel.variable.dataSync() as Float32Array;
        const context = this.context(kernel);
        let weights: Float32Array;
        if (mode === 'train') {
          const forward = kernel.trainer.forward(shadow, context);
          weights = forward.weights;
          masks.push(forward.gradientMask);
        } else {
          weights = kernel.trainer.inference?.(shadow, context) ?? kernel.trainer.forward(shadow, context).weights;
        }
        values.push(shadow);
        shadows.push(tf.clone(kernel.variable));
        this.assign(kernel, weights);
      }
    } catch (error) {
      this.restoreKernels(shadows);
      throw error;
    }
    return { shadows, values, masks };
  }

  private assign(kernel: Kernel, values: Float32Array): void {
    const tensor = tf.tensor(values, kernel.variable.shape, 'float32');
    kernel.variable.assign(tensor);
    tensor.dispose();
  }

  private restoreKernels(shadows: tf.Tensor[]): void {
    shadows.forEach((shadow, i) => {
      this.kernels[i].variable.assign(shadow);
      shadow.dispose();
    });
  }

  step(x: tf.Tensor, y: tf.Tensor): StepMetrics {
    const { loss, metric } = this.lossFor(y);
    const { shadows, values, masks } = this.quantizeKernels('train');
    let prediction: tf.Tensor | undefined;
    let computed: { value: tf.Scalar; grads: tf.NamedTensorMap };
    try {
      computed = tf.variableGrads(() => {
        const output = this.model.apply(x, { training: true }) as tf.Tensor;
        prediction = tf.keep(output);
        const value = loss(y, output);
        return this.options.regularizer ? tf.add(value, this.options.regularizer()) : value;
      }, this.trainableVariables);
    } catch (error) {
      prediction?.dispose();
      throw error;
    } finally {
      this.restoreKernels(shadows);
    }
    const { value, grads } = computed;
    const replaced = new Map<tf.Variable, () => tf.Tensor>();
    this.kernels.forEach((kernel, i) => {
      const gradient = grads[kernel.variable.name];
      if (gradient === undefined) return;
      const { backward } = kernel.trainer;
      const mask = masks[i];
      if (backward !== undefined) {
        replaced.set(kernel.variable, () => {
          const g = Float32Array.from(gradient.dataSync() as Float32Array);
          if (mask !== undefined) for (let j = 0; j < g.length; j++) g[j] *= mask[j];
          return tf.tensor(
            backward.call(kernel.trainer, g, values[i], this.context(kernel)),
            gradient.shape,
            'float32',
          );
        });
      } else if (mask !== undefined) {
        replaced.set(kernel.variable, () =>
          tf.tidy(() => tf.mul(gradient, tf.tensor(mask, gradient.shape, 'float32'))),
        );
      }
    });
    const gradients = this.trainableVariables.map((variable) => {
      const gradient = grads[variable.name];
      const replace = replaced.get(variable);
      return gradient === undefined || replace === undefined ? gradient : replace();
    });
    const metricTensor = tf.tidy(() => metric(y, prediction!));
    try {
      this.optimizer.apply(gradients);
      for (const kernel of this.kernels) {
        kernel.trainer.afterStep?.(kernel.variable.dataSync() as Float32Array, this.context(kernel));
      }
      return { loss: value.dataSync()[0], metric: metricTensor.dataSync()[0] };
    } finally {
      const originals = new Set(Object.values(grads));
      tf.dispose([value, metricTensor, prediction!, ...originals]);
      tf.dispose(gradients.filter((g): g is tf.Tensor => g !== undefined && !originals.has(g)));
    }
  }

  /** Epoch `epoch` (0-based) of `epochs` begins: the trainers' schedules (INQ's partition). */
  beginEpoch(epoch: number, epochs: number): void {
    for (const kernel of this.kernels) {
      const updated = kernel.trainer.beginEpoch?.(
        epoch,
        epochs,
        kernel.variable.dataSync() as Float32Array,
        this.context(kernel),
      );
      if (updated) this.assign(kernel, updated);
    }
  }

  /** Epoch `epoch` (0-based) ended (ADMM's G- and λ-steps, its ρ schedule). */
  endEpoch(epoch: number): void {
    for (const kernel of this.kernels)
      kernel.trainer.endEpoch?.(epoch, kernel.variable.dataSync() as Float32Array, this.context(kernel));
  }

  /** Training is over: the trainers' last schedule step, then the tensors the training methods export. */
  finish(): Map<string, QuantizedTensor> {
    const quantized = new Map<string, QuantizedTensor>();
    for (const kernel of this.kernels) {
      const updated = kernel.trainer.finish?.(kernel.variable.dataSync() as Float32Array, this.context(kernel));
      if (updated) this.assign(kernel, updated);
      if (kernel.trainer.exportsOwnTensor) {
        quantized.set(
          kernel.name,
          kernel.trainer.result(kernel.variable.dataSync() as Float32Array, this.context(kernel)),
        );
      }
    }
    return quantized;
  }

  /** Runs `body` with Q(W) in the kernels (inference at the quantized weights), then puts W back. */
  async withQuantizedWeights<T>(body: () => Promise<T>): Promise<T> {
    const { shadows } = this.quantizeKernels('inference');
    try {
      return await body();
    } finally {
      this.restoreKernels(shadows);
    }
  }

  /** Loss and metric of one batch in inference mode, with whatever the variables hold. */
  evaluate(x: tf.Tensor, y: tf.Tensor): StepMetrics {
    const { loss, metric } = this.lossFor(y);
    const [lossValue, metricValue] = tf.tidy(() => {
      const prediction = this.model.apply(x, { training: false }) as tf.Tensor;
      return [loss(y, prediction), metric(y, prediction)];
    });
    try {
      return { loss: lossValue.dataSync()[0], metric: metricValue.dataSync()[0] };
    } finally {
      tf.dispose([lossValue, metricValue]);
    }
  }

  checkpoint(epoch: number, history: EpochMetrics[]): QatCheckpoint {
    const weights = this.model.weights
      .filter((w) => w.dtype === 'float32')
      .map((w) => ({
        name: w.originalName,
        shape: w.shape as number[],
        values: Float32Array.from(w.read().dataSync() as Float32Array),
      }));
    const kernels = this.kernels.flatMap((kernel) => {
      const state = kernel.trainer.getState?.();
      return state === undefined ? [] : [{ name: kernel.name, state }];
    });
    return { epoch, weights, optimizer: this.optimizer.getState(), history: structuredClone(history), kernels };
  }

  restore(checkpoint: QatCheckpoint): void {
    const byName = new Map(this.model.weights.map((w) => [w.originalName, w]));
    for (const saved of checkpoint.weights) {
      const weight = byName.get(saved.name);
      if (weight === undefined || weight.shape.reduce((a: number, b) => a * (b ?? 1), 1) !== saved.values.length) {
        throw new Error(`checkpoint weight "${saved.name}" does not fit the model`);
      }
      const value = tf.tensor(saved.values, weight.shape as number[], 'float32');
      (weight.read() as tf.Variable).assign(value);
      value.dispose();
    }
    this.optimizer.setState(checkpoint.optimizer);
    const states = new Map((checkpoint.kernels ?? []).map((k) => [k.name, k.state]));
    for (const kernel of this.kernels) {
      const state = states.get(kernel.name);
      if (state !== undefined) kernel.trainer.setState?.(state);
    }
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}

/** A QAT step bound to a model: the loop of trainQuantizationAware without data handling or callbacks. */
export function createQatStep(model: TrainableModel, options: QatStepOptions): QatStep {
  return new QatSession(model, options);
}

function isBatch(data: TrainingData): data is Batch {
  if (typeof data === 'function') return false;
  return (data as Batch).x instanceof tf.Tensor && (data as Batch).y instanceof tf.Tensor;
}

/** Batches of whole tensors over `indices`; each batch is disposed when the next one is asked for. */
function* gatheredBatches(data: Batch, indices: Int32Array, batchSize: number): Generator<Batch> {
  for (let start = 0; start < indices.length; start += batchSize) {
    const batch = tf.tidy(() => {
      const rows = tf.tensor1d(indices.subarray(start, start + batchSize), 'int32');
      return { x: tf.gather(data.x, rows), y: tf.gather(data.y, rows) };
    });
    try {
      yield batch;
    } finally {
      tf.dispose([batch.x, batch.y]);
    }
  }
}

/** The draws of epoch `epoch` (0-based) of a run seeded `seed`, its own for every epoch. */
export function epochRng(seed: number, epoch: number): Rng {
  return createRng(mixSeed(seed, epoch));
}

/**
 * The order epoch `epoch` (0-based) visits training samples [0, count) in: a Fisher–Yates permutation drawn
 * from (seed, epoch), so every epoch has its own order and a resumed run replays the one it would have had.
 */
export function epochOrder(count: number, seed: number, epoch: number): Int32Array {
  const order = Int32Array.from({ length: count }, (_, i) => i);
  const rng = epochRng(seed, epoch);
  for (let i = count - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * Epoch `epoch`'s order of the samples of [0, samples) that `heldOut` leaves to train on (its 0 entries;
 * all of them without it): epochOrder over those samples, as their indices.
 */
export function trainingOrder(
  samples: number,
  heldOut: Uint8Array | undefined,
  seed: number,
  epoch: number,
): Int32Array {
  if (heldOut === undefined) return epochOrder(samples, seed, epoch);
  const rows = maskedRows(heldOut, 0);
  const order = epochOrder(rows.length, seed, epoch);
  for (let k = 0; k < order.length; k++) order[k] = rows[order[k]];
  return order;
}

interface EpochData {
  train(epoch: number): BatchSource;
  validation?: BatchSource;
  batchesPerEpoch?: number;
}

function prepareData(data: TrainingData, options: QatOptions): EpochData {
  const batchSize = options.batchSize ?? 32;
  const split = options.validationSplit ?? 0;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  if (!(split >= 0 && split < 1)) throw new RangeError(`validationSplit must be in [0, 1), got ${split}`);
  let validation: BatchSource | undefined;
  if (options.validationData !== undefined) {
    const held = options.validationData;
    validation = isBatch(held)
      ? {
          [Symbol.iterator]: () =>
            gatheredBatches(
              held,
              Int32Array.from({ length: held.x.shape[0] }, (_, i) => i),
              batchSize,
            ),
        }
      : held;
  }
  if (!isBatch(data)) {
    if (split > 0) throw new RangeError('validationSplit needs tensor data; pass validationData with a batch source');
    return { train: typeof data === 'function' ? data : () => data, validation };
  }
  const samples = data.x.shape[0];
  if (data.y.shape[0] !== samples) throw new RangeError(`x has ${samples} samples, y has ${data.y.shape[0]}`);
  const seed = options.seed ?? 0;
  if (split > 0 && samples < 2)
    throw new RangeError(
      `validationSplit ${split} needs 2 samples, one to train on and one to validate on, not ${samples}`,
    );
  const heldOut = split > 0 ? heldOutMask(samples, split, seed) : undefined;
  const trainCount = samples - (heldOut?.reduce((sum, v) => sum + v, 0) ?? 0);
  if (heldOut && validation === undefined) {
    const heldIndices = maskedRows(heldOut, 1);
    validation = { [Symbol.iterator]: () => gatheredBatches(data, heldIndices, batchSize) };
  }
  return {
    train: (epoch) => ({
      [Symbol.iterator]: () => gatheredBatches(data, trainingOrder(samples, heldOut, seed, epoch), batchSize),
    }),
    validation,
    batchesPerEpoch: Math.ceil(trainCount / batchSize),
  };
}

/**
 * Trains `model` in place (see the module comment) and returns the per-epoch history and the final
 * checkpoint. tf.memory().numTensors is the same before and after, whether it returns or throws.
 */
export async function trainQuantizationAware(
  model: TrainableModel,
  data: TrainingData,
  options: QatOptions,
): Promise<QatResult> {
  const { epochs, signal } = options;
  const learningRate = options.learningRate ?? 1e-3;
  const decay = options.learningRateDecay ?? 0;
  if (!Number.isInteger(epochs) || epochs < 0)
    throw new RangeError(`epochs must be a non-negative integer, got ${epochs}`);
  if (!(learningRate > 0)) throw new RangeError(`learningRate must be positive, got ${learningRate}`);
  if (!(decay >= 0)) throw new RangeError(`learningRateDecay must be ≥ 0, got ${decay}`);
  const epochData = prepareData(data, options);
  const session = new QatSession(model, options);
  try {
    let history: EpochMetrics[] = [];
    let epoch = 0;
    if (options.resumeFrom !== undefined) {
      session.restore(options.resumeFrom);
      history = structuredClone(options.resumeFrom.history);
      epoch = options.resumeFrom.epoch;
    }
    let stoppedEarly = false;
    for (; epoch < epochs; epoch++) {
      signal?.throwIfAborted();
      const started = performance.now();
      session.optimizer.learningRate = learningRate / (1 + decay * epoch);
      session.beginEpoch(epoch, epochs);
      let lossSum = 0;
      let metricSum = 0;
      let samples = 0;
      let batch = 0;
      for await (const { x, y } of epochData.train(epoch)) {
        signal?.throwIfAborted();
        const { loss, metric } = session.step(x, y);
        const size = x.shape[0];
        lossSum += loss * size;
        metricSum += metric * size;
        samples += size;
        batch++;
        await options.onBatch?.({
          epoch: epoch + 1,
          batch,
          batches: epochData.batchesPerEpoch,
          loss,
          metric,
          metricName: session.metricName!,
        });
      }
      if (batch === 0) throw new RangeError('the training data yielded no batches');
      session.endEpoch(epoch);
      const metrics: EpochMetrics = {
        epoch: epoch + 1,
        loss: lossSum / samples,
        metric: metricSum / samples,
        metricName: session.metricName!,
        learningRate: session.optimizer.learningRate,
        batches: batch,
        ms: 0,
      };
      if (epochData.validation !== undefined) {
        const source = epochData.validation;
        const validation = await session.withQuantizedWeights(async () => {
          let valLoss = 0;
          let valMetric = 0;
          let count = 0;
          for await (const held of source) {
            signal?.throwIfAborted();
            const result = session.evaluate(held.x, held.y);
            const size = held.x.shape[0];
            valLoss += result.loss * size;
            valMetric += result.metric * size;
            count += size;
          }
          return count > 0 ? { valLoss: valLoss / count, valMetric: valMetric / count } : {};
        });
        Object.assign(metrics, validation);
      }
      metrics.ms = Math.round(performance.now() - started);
      history.push(metrics);
      await options.onEpoch?.(metrics);
      if (options.onCheckpoint) await options.onCheckpoint(session.checkpoint(epoch + 1, history));
      if (options.earlyStop?.(metrics)) {
        stoppedEarly = true;
        epoch++;
        break;
      }
    }
    const quantized = session.finish();
    return { history, checkpoint: session.checkpoint(epoch, history), stoppedEarly, quantized };
  } finally {
    session.dispose();
  }
}

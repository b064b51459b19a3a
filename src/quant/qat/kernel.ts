/**
 * How one kernel trains under QAT: the contract between the training loop (./train.ts), which owns tensors,
 * batches and the optimizer, and a method's per-kernel algorithm, which works on the kernel's values as
 * plain Float32Arrays (one dataSync per kernel per step, as the loop already did for PTQ methods).
 *
 * Per step the loop asks `forward` for the weights Ŵ the forward and backward pass run with, computes
 * g = ∂L/∂Ŵ, and updates the float shadow weights W with `backward(g)` (or g times forward's gradient mask).
 * Schedules hang on `beginEpoch`, `endEpoch`, `afterStep`; `finish` ends training and `result` is the
 * tensor the job exports. State that is not the shadow weights (learned scales, masks, ADMM's G and λ)
 * round-trips through `getState`/`setState` for checkpoints.
 *
 * `SteKernel` is the BinaryConnect-style trainer of every PTQ method (Ŵ = Q(W), straight-through gradient);
 * ./trainers.ts picks it or a training method's own (lab, admm, inq, ttq), which implement this contract.
 */
import type { MethodParams } from '../methods/index.js';
import type { Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { clipRange, steMask, type SteMode } from './ste.js';

export interface StepContext {
  /** Optimizer updates applied so far. */
  step: number;
  /** The optimizer's current learning rate (a method's own parameters train with it). */
  learningRate: number;
  /** Seeded per kernel and step: a stochastic quantizer's draws. */
  rng: Rng;
  /** Adam's bias-corrected second moment v̂ of the kernel's shadow weights; undefined under sgd or before step 1. */
  secondMoment(): Float32Array | undefined;
}

export interface ForwardWeights {
  weights: Float32Array;
  /** Multiplies g before the optimizer sees it (the clipped STE, INQ's frozen part); absent = all ones. */
  gradientMask?: Float32Array;
}

/**
 * Typed arrays only (v8-serialized as they are). Float64 values (learned scales, Adam moments, ρ) are kept as
 * Float64Arrays: rounded to float32 they would resume onto a different trajectory than an unbroken run.
 */
export type KernelState = Record<string, Float32Array | Float64Array>;

export interface KernelTrainer {
  /** Ŵ for this step's forward and backward pass. */
  forward(shadow: Float32Array, context: StepContext): ForwardWeights;
  /**
   * When present, the gradient for the shadow weights from g = ∂L/∂Ŵ (it may write into g); it also updates
   * the method's own parameters. Otherwise g (times the forward mask) is used as is.
   */
  backward?(gradient: Float32Array, shadow: Float32Array, context: StepContext): Float32Array;
  /** The weights inference (validation) runs with; defaults to forward's. */
  inference?(shadow: Float32Array, context: StepContext): Float32Array;
  /** Before epoch `epoch` (0-based) of `epochs`. Returned values replace the shadow weights. */
  beginEpoch?(epoch: number, epochs: number, shadow: Float32Array, context: StepContext): Float32Array | void;
  /** After the last batch of epoch `epoch` (0-based). */
  endEpoch?(epoch: number, shadow: Float32Array, context: StepContext): void;
  /** After every optimizer update. */
  afterStep?(shadow: Float32Array, context: StepContext): void;
  /** Training is over (all epochs, early stop): the last schedule step. Returned values replace the shadow weights. */
  finish?(shadow: Float32Array, context: StepContext): Float32Array | void;
  /** The tensor to export; exact for a training method, what PTQ of W gives for SteKernel. */
  result(shadow: Float32Array, context: StepContext): QuantizedTensor;
  /** True when `result` is not PTQ of the shadow weights, so the export must take it as given. */
  readonly exportsOwnTensor: boolean;
  getState?(): KernelState;
  setState?(state: KernelState): void;
}

/** Ŵ = Q(W) with the PTQ method itself; the straight-through gradient, clipped to the quantizer's range if asked. */
export class SteKernel implements KernelTrainer {
  readonly exportsOwnTensor = false;

  constructor(
    private readonly method: QuantMethod,
    private readonly params: MethodParams,
    private readonly shape: readonly number[],
    private readonly ste: SteMode,
  ) {}

  forward(shadow: Float32Array, context: StepContext): ForwardWeights {
    const quantized = this.result(shadow, context);
    const symmetric = 'symmetric' in this.params && this.params.symmetric;
    const gradientMask = this.ste === 'clipped' ? steMask(shadow, clipRange(quantized, symmetric)) : undefined;
    return { weights: quantized.dequantized, gradientMask };
  }

  result(shadow: Float32Array, context: StepContext): QuantizedTensor {
    return this.method.quantize(shadow, this.shape, this.params, context.rng);
  }
}

export interface KernelSetup {
  /** The shape the method sees (PTQ's quantizationShape). */
  shape: readonly number[];
  ste: SteMode;
}

/**
 * Adam over a handful of scalars (a method's own parameters, e.g. TTQ's scales), in float64, with the same
 * update as the shadow optimizer: m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g², x ← x − η·m̂/(√v̂ + ε).
 */
export class ScalarAdam {
  private m: Float64Array;
  private v: Float64Array;
  private t = 0;

  constructor(
    size: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly epsilon = 1e-7,
  ) {
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
  }

  /** Updates `values` in place. */
  apply(values: Float64Array, gradients: ArrayLike<number>, learningRate: number): void {
    this.t++;
    const c1 = 1 - this.beta1 ** this.t;
    const c2 = 1 - this.beta2 ** this.t;
    for (let i = 0; i < values.length; i++) {
      const g = gradients[i];
      this.m[i] = this.beta1 * this.m[i] + (1 - this.beta1) * g;
      this.v[i] = this.beta2 * this.v[i] + (1 - this.beta2) * g * g;
      values[i] -= (learningRate * (this.m[i] / c1)) / (Math.sqrt(this.v[i] / c2) + this.epsilon);
    }
  }

  getState(): KernelState {
    return { m: Float64Array.from(this.m), v: Float64Array.from(this.v), t: Float64Array.of(this.t) };
  }

  setState(state: KernelState): void {
    this.m = Float64Array.from(state.m);
    this.v = Float64Array.from(state.v);
    this.t = state.t[0];
  }
}

/**
 * A codebook-encoded tensor: value i = codebook[c·2^bits + codes[i]], c = i % channels, with the packed
 * cost of the codes plus each channel's codebook as float32 (as the PTQ codebook methods count it).
 */
export function codebookTensor(
  codes: Uint8Array,
  codebook: Float32Array,
  bits: number,
  channels: number,
): QuantizedTensor {
  const levels = 2 ** bits;
  const size = codes.length;
  const dequantized = new Float32Array(size);
  for (let i = 0; i < size; i++) dequantized[i] = codebook[(channels === 1 ? 0 : i % channels) * levels + codes[i]];
  return {
    dequantized,
    codes,
    encoding: { kind: 'codebook', bits, channels, codebook },
    bitsPerWeight: size > 0 ? bits + (32 * levels * channels) / size : bits,
  };
}

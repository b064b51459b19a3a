/**
 * ADMM quantization (Leng, Dou, Li, Zhu & Jin 2018, "Extremely Low Bit Neural Network: Squeeze the Last
 * Bit Out with ADMM"). Training is split into the float weights W and a quantized copy G tied by W = G,
 * solved with the scaled-dual augmented Lagrangian L(W, G, λ) = f(W) + ρ/2‖W − G + λ‖²:
 *
 *   W-step: the optimizer's update on f(W) + ρ/2‖W − G + λ‖², i.e. the gradient g + ρ(W − G + λ), with the
 *           forward pass at the float W (no STE);
 *   G-step: G = Proj(W + λ), the projection onto the quantizer's set = the PTQ method module itself
 *           (binary, ternary, pow2 or affine, with their params: per-channel scales are re-fitted each time);
 *   λ-step: λ ← λ + W − G.
 *
 * G starts as Proj(W) with λ = 0. The G- and λ-steps run every `interval` optimizer steps, or at the end of
 * every epoch when interval is 0; ρ ← ρ·rhoGrowth after every epoch (a growing penalty pulls W onto G),
 * with λ ← λ/rhoGrowth so the unscaled multiplier ρλ carries over. A stochastic projection draws from a seed
 * taken from the step's rng and checkpointed with W + λ, so a restored G is the same draw, not a new one.
 * Validation runs at G, and the export is the last G (projected once more when training ends between two
 * G-steps), in the projection's own encoding.
 */
import { getMethod, type MethodParams } from '../methods/index.js';
import { createRng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import type { ForwardWeights, KernelSetup, KernelState, KernelTrainer, StepContext } from './kernel.js';
import { projectionParams, type AdmmParams } from './methods.js';

/** The W-step's gradient in place: g + ρ(W − G + λ). */
export function admmGradient(
  gradient: Float32Array,
  w: Float32Array,
  g: Float32Array,
  lambda: Float32Array,
  rho: number,
): Float32Array {
  for (let i = 0; i < gradient.length; i++) gradient[i] += rho * (w[i] - g[i] + lambda[i]);
  return gradient;
}

export class AdmmKernel implements KernelTrainer {
  readonly exportsOwnTensor = true;
  private readonly projection: MethodParams;
  private readonly method: QuantMethod;
  private readonly shape: readonly number[];
  private readonly interval: number;
  private readonly rhoGrowth: number;
  rho: number;
  private g: QuantizedTensor | undefined;
  private lambda = new Float32Array(0);
  /** W + λ of the last G-step and the seed of its draws: G is rebuilt from them after a restore. */
  private projected: Float32Array | undefined;
  private projectionSeed = 0;
  /** Optimizer steps since the last G-step. */
  private stepsSinceProjection = 0;

  constructor(params: AdmmParams, setup: KernelSetup) {
    this.projection = projectionParams(params);
    this.method = getMethod(this.projection.name);
    this.shape = setup.shape;
    this.interval = params.interval;
    this.rho = params.rho;
    this.rhoGrowth = params.rhoGrowth;
  }

  /** G and λ after the last G- and λ-steps (initialised from W on first use). */
  state(shadow: Float32Array, context: StepContext): { g: QuantizedTensor; lambda: Float32Array } {
    if (this.g === undefined) {
      if (this.projected === undefined) {
        this.projected = Float32Array.from(shadow);
        this.projectionSeed = context.rng.int(2 ** 32);
      }
      this.g = this.method.quantize(this.projected, this.shape, this.projection, createRng(this.projectionSeed));
      if (this.lambda.length !== shadow.length) this.lambda = new Float32Array(shadow.length);
    }
    return { g: this.g, lambda: this.lambda };
  }

  /** G = Proj(W + λ), then λ ← λ + W − G. */
  project(shadow: Float32Array, context: StepContext): void {
    const { lambda } = this.state(shadow, context);
    const target = Float32Array.from(shadow, (w, i) => w + lambda[i]);
    const seed = context.rng.int(2 ** 32);
    const g = this.method.quantize(target, this.shape, this.projection, createRng(seed));
    this.projected = target;
    this.projectionSeed = seed;
    const dequantized = g.dequantized;
    for (let i = 0; i < lambda.length; i++) lambda[i] += shadow[i] - dequantized[i];
    this.g = g;
    this.stepsSinceProjection = 0;
  }

  forward(shadow: Float32Array, context: StepContext): ForwardWeights {
    this.state(shadow, context);
    return { weights: shadow };
  }

  backward(gradient: Float32Array, shadow: Float32Array, context: StepContext): Float32Array {
    const { g, lambda } = this.state(shadow, context);
    return admmGradient(gradient, shadow, g.dequantized, lambda, this.rho);
  }

  afterStep(shadow: Float32Array, context: StepContext): void {
    this.stepsSinceProjection++;
    if (this.interval > 0 && this.stepsSinceProjection >= this.interval) this.project(shadow, context);
  }

  endEpoch(_epoch: number, shadow: Float32Array, context: StepContext): void {
    if (this.interval === 0) this.project(shadow, context);
    this.rho *= this.rhoGrowth;
    // λ is the scaled dual y/ρ: the same multiplier y under the new ρ is λ/growth (Boyd et al. 2011, §3.4.1).
    for (let i = 0; i < this.lambda.length; i++) this.lambda[i] /= this.rhoGrowth;
  }

  inference(shadow: Float32Array, context: StepContext): Float32Array {
    return this.state(shadow, context).g.dequantized;
  }

  finish(shadow: Float32Array, context: StepContext): void {
    if (this.g === undefined || this.stepsSinceProjection > 0) this.project(shadow, context);
  }

  result(shadow: Float32Array, context: StepContext): QuantizedTensor {
    return this.state(shadow, context).g;
  }

  getState(): KernelState {
    if (this.projected === undefined) return {};
    return {
      projected: Float32Array.from(this.projected),
      lambda: Float32Array.from(this.lambda),
      projectionSeed: Float64Array.of(this.projectionSeed),
      rho: Float64Array.of(this.rho),
      stepsSinceProjection: Float32Array.of(this.stepsSinceProjection),
    };
  }

  setState(state: KernelState): void {
    if (state.projected === undefined) return;
    this.projected = Float32Array.from(state.projected);
    this.lambda = Float32Array.from(state.lambda);
    this.projectionSeed = state.projectionSeed?.[0] ?? 0;
    this.rho = state.rho[0];
    this.stepsSinceProjection = state.stepsSinceProjection[0];
    // Rebuilt on first use, with the same draws.
    this.g = undefined;
  }
}

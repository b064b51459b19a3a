/**
 * Incremental network quantization (Zhou, Yao, Guo, Xu & Chen 2017, "Incremental Network Quantization:
 * Towards Lossless CNNs with Low-Precision Weights"). Each kernel's levels are fixed once, from the weights
 * training starts with, by the pow2 module (../methods/pow2.ts): P = {0} ∪ {±2^k : n2 ≤ k ≤ n1},
 * n1 = floor(log2(4·max|W|/3)). Then, for the cumulative fractions σ1 < σ2 < … < 1 (default 50%, 75%,
 * 87.5%, 100%):
 *
 *   1. weight partition: of the weights still float, the largest by magnitude (ties: lower index first) are
 *      moved to the frozen set until it holds round(σk·n) weights;
 *   2. group-wise quantization: each newly frozen w becomes its nearest level in P (INQ's rule, the pow2
 *      module's: between neighbours β' < β, |w| goes to β when |w| ≥ (β' + β)/2; above 2^n1 to 2^n1);
 *   3. re-training: the forward pass uses the frozen values and the float ones as they are (no STE: the
 *      float part is real), and the gradient is masked to the float part.
 *
 * The epochs are split evenly over the steps before the last (step k starts at epoch floor(k·E/(S − 1)));
 * the last step (σ = 1) runs when training ends, so everything is frozen and the export is pow2 codes with
 * the kernel's codebook. Frozen weights keep their values through Adam's momentum (the forward pass reads
 * them from the frozen set, not from the drifting shadow copy).
 */
import { pow2 } from '../methods/pow2.js';
import type { QuantizedTensor } from '../types.js';
import {
  codebookTensor,
  type ForwardWeights,
  type KernelSetup,
  type KernelState,
  type KernelTrainer,
  type StepContext,
} from './kernel.js';
import type { InqParams } from './methods.js';

/**
 * Indices of the float weights to freeze so that `target` weights are frozen in all: the largest |w| among
 * those not yet frozen (frozen[i] = 1), ties by index.
 */
export function inqPartition(weights: Float32Array, frozen: Uint8Array, target: number): Int32Array {
  let frozenCount = 0;
  for (let i = 0; i < frozen.length; i++) frozenCount += frozen[i];
  const wanted = Math.max(0, Math.min(target, weights.length) - frozenCount);
  const candidates: number[] = [];
  for (let i = 0; i < weights.length; i++) if (frozen[i] === 0) candidates.push(i);
  candidates.sort((a, b) => Math.abs(weights[b]) - Math.abs(weights[a]) || a - b);
  return Int32Array.from(candidates.slice(0, wanted));
}

/** The code of the level of a pow2 codebook (codes ascending by value) nearest to w, by INQ's rule. */
export function nearestPow2Code(w: number, codebook: Float32Array, bits: number): number {
  const zeroCode = 2 ** (bits - 1) - 1;
  const magnitude = Math.abs(w);
  let chosen = 0;
  let previous = 0;
  for (let m = 1; m <= zeroCode; m++) {
    const level = codebook[zeroCode + m];
    if (magnitude >= (previous + level) / 2) chosen = m;
    previous = level;
  }
  if (chosen === 0) return zeroCode;
  return w < 0 ? zeroCode - chosen : zeroCode + chosen;
}

/** The step index in effect during epoch `epoch` of `epochs` (the last step is left for the end). */
export function inqStepAt(epoch: number, epochs: number, steps: number): number {
  if (steps <= 1) return 0;
  return Math.min(steps - 2, Math.floor((epoch * (steps - 1)) / Math.max(1, epochs)));
}

export class InqKernel implements KernelTrainer {
  readonly exportsOwnTensor = true;
  private readonly bits: number;
  private readonly steps: number[];
  private readonly shape: readonly number[];
  private readonly seed: number;
  private codebook: Float32Array | undefined;
  private frozen = new Uint8Array(0);
  private codes = new Uint8Array(0);

  constructor(params: InqParams, setup: KernelSetup) {
    this.bits = params.bits;
    this.steps = params.steps;
    this.shape = setup.shape;
    this.seed = params.seed;
  }

  /** Frozen weights so far. */
  get frozenCount(): number {
    return this.frozen.reduce((a, b) => a + b, 0);
  }

  private freeze(shadow: Float32Array, fraction: number, context: StepContext): Float32Array {
    if (this.codebook === undefined) {
      const params = { name: 'pow2' as const, bits: this.bits, rounding: 'nearest' as const, seed: this.seed };
      const { encoding } = pow2.quantize(shadow, this.shape, params, context.rng);
      if (encoding.kind !== 'codebook') throw new Error('inq: pow2 returned a non-codebook encoding');
      this.codebook = encoding.codebook;
      this.frozen = new Uint8Array(shadow.length);
      this.codes = new Uint8Array(shadow.length);
    }
    const codebook = this.codebook!;
    const updated = Float32Array.from(shadow);
    for (const i of inqPartition(shadow, this.frozen, Math.round(fraction * shadow.length))) {
      this.frozen[i] = 1;
      this.codes[i] = nearestPow2Code(shadow[i], codebook, this.bits);
      updated[i] = codebook[this.codes[i]];
    }
    return updated;
  }

  beginEpoch(epoch: number, epochs: number, shadow: Float32Array, context: StepContext): Float32Array {
    return this.freeze(shadow, this.steps[inqStepAt(epoch, epochs, this.steps.length)], context);
  }

  forward(shadow: Float32Array): ForwardWeights {
    const weights = Float32Array.from(shadow);
    const gradientMask = new Float32Array(shadow.length);
    for (let i = 0; i < shadow.length; i++) {
      if (this.frozen[i] === 1) weights[i] = this.codebook![this.codes[i]];
      else gradientMask[i] = 1;
    }
    return { weights, gradientMask };
  }

  finish(shadow: Float32Array, context: StepContext): Float32Array {
    return this.freeze(shadow, 1, context);
  }

  result(shadow: Float32Array): QuantizedTensor {
    if (this.frozenCount < shadow.length)
      throw new Error('inq: the kernel is not fully quantized until training finishes');
    return codebookTensor(Uint8Array.from(this.codes), Float32Array.from(this.codebook!), this.bits, 1);
  }

  getState(): KernelState {
    if (this.codebook === undefined) return {};
    return {
      codebook: Float32Array.from(this.codebook),
      frozen: Float32Array.from(this.frozen),
      codes: Float32Array.from(this.codes),
    };
  }

  setState(state: KernelState): void {
    if (state.codebook === undefined) return;
    this.codebook = Float32Array.from(state.codebook);
    this.frozen = Uint8Array.from(state.frozen);
    this.codes = Uint8Array.from(state.codes);
  }
}

/**
 * The optimizers QAT updates its float shadow weights with: Adam (Kingma & Ba 2015) and SGD with momentum
 * (heavy ball), written out so that the learning rate can change between epochs, the state can be saved to
 * and restored from plain Float32Arrays (a checkpoint survives a worker restart), and disposing frees every
 * tensor (tfjs's MomentumOptimizer keeps a learning-rate scalar its dispose() never frees).
 *
 *   adam:     m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²,  w ← w − η·(m/(1 − β1^t)) / (√(v/(1 − β2^t)) + ε)
 *   momentum: u ← μ·u + g,  w ← w − η·u
 *
 * Same update formulas as tfjs's own AdamOptimizer and MomentumOptimizer.
 */
import * as tf from '@tensorflow/tfjs';

export type OptimizerName = 'adam' | 'sgd';

export interface OptimizerConfig {
  name: OptimizerName;
  learningRate: number;
  /** sgd only. */
  momentum: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

/** Slot values per variable, in the order the variables were given; plain data for a checkpoint. */
export interface OptimizerState {
  name: OptimizerName;
  /** Updates applied so far (Adam's t). */
  step: number;
  slots: { variable: string; slot: string; values: Float32Array }[];
}

export class ShadowOptimizer {
  learningRate: number;
  /** Updates applied so far. */
  step = 0;
  private readonly slots: tf.Variable[][];
  private readonly slotNames: string[];
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly epsilon: number;

  /** `names` identify the variables in saved state (stable names, e.g. weight names, not tfjs's unique ids). */
  constructor(
    readonly config: OptimizerConfig,
    private readonly variables: tf.Variable[],
    private readonly names: string[],
  ) {
    this.learningRate = config.learningRate;
    this.beta1 = config.beta1 ?? 0.9;
    this.beta2 = config.beta2 ?? 0.999;
    this.epsilon = config.epsilon ?? 1e-7;
    this.slotNames = config.name === 'adam' ? ['m', 'v'] : ['momentum'];
    this.slots = variables.map((variable) =>
      this.slotNames.map(() => tf.tidy(() => tf.zerosLike(variable).variable(false))),
    );
  }

  /** One update; gradients[i] belongs to variables[i], undefined leaves that variable and its slots as they are. */
  apply(gradients: (tf.Tensor | undefined)[]): void {
    this.step++;
    const t = this.step;
    const lr = this.learningRate;
    tf.tidy(() => {
      gradients.forEach((gradient, i) => {
        if (gradient === undefined) return;
        const variable = this.variables[i];
        if (this.config.name === 'adam') {
          const [m, v] = this.slots[i];
          const newM = tf.add(tf.mul(m, this.beta1), tf.mul(gradient, 1 - this.beta1));
          const newV = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(gradient), 1 - this.beta2));
          m.assign(newM);
          v.assign(newV);
          const mHat = tf.div(newM, 1 - this.beta1 ** t);
          const vHat = tf.div(newV, 1 - this.beta2 ** t);
          variable.assign(tf.sub(variable, tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), this.epsilon)), lr)));
        } else {
          const [velocity] = this.slots[i];
          const newVelocity = tf.add(tf.mul(velocity, this.config.momentum), gradient);
          velocity.assign(newVelocity);
          variable.assign(tf.sub(variable, tf.mul(newVelocity, lr)));
        }
      });
    });
  }

  /**
   * Adam's bias-corrected second moment v̂ = v/(1 − β2^t) of variables[index] (LAB's curvature); undefined
   * under sgd or before the first update.
   */
  secondMoment(index: number): Float32Array | undefined {
    if (this.config.name !== 'adam' || this.step === 0) return undefined;
    const correction = 1 - this.beta2 ** this.step;
    return Float32Array.from(this.slots[index][1].dataSync() as Float32Array, (v) => v / correction);
  }

  getState(): OptimizerState {
    const slots = this.slots.flatMap((variableSlots, i) =>
      variableSlots.map((slot, s) => ({
        variable: this.names[i],
        slot: this.slotNames[s],
        values: Float32Array.from(slot.dataSync() as Float32Array),
      })),
    );
    return { name: this.config.name, step: this.step, slots };
  }

  /** Restores a state saved by getState() of an optimizer of the same kind over the same variables. */
  setState(state: OptimizerState): void {
    if (state.name !== this.config.name) {
      throw new Error(`optimizer state is for ${state.name}, this optimizer is ${this.config.name}`);
    }
    const byKey = new Map(state.slots.map((s) => [`${s.variable}\u0000${s.slot}`, s.values]));
    this.slots.forEach((variableSlots, i) =>
      variableSlots.forEach((slot, s) => {
        const values = byKey.get(`${this.names[i]}\u0000${this.slotNames[s]}`);
        if (values === undefined || values.length !== slot.size) {
          throw new Error(`optimizer state has no ${this.slotNames[s]} slot of size ${slot.size} for ${this.names[i]}`);
        }
        const restored = tf.tensor(values, slot.shape, 'float32');
        slot.assign(restored);
        restored.dispose();
      }),
    );
    this.step = state.step;
  }

  dispose(): void {
    for (const variableSlots of this.slots) for (const slot of variableSlots) slot.dispose();
  }
}

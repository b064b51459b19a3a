/**
 * PACT, parameterized clipping activation (Choi, Wang, Venkataramani, Chuang, Srinivasan & Gopalakrishnan
 * 2018, "PACT: Parameterized Clipping Activation for Quantized Neural Networks"), as a tf.layers layer with
 * one trainable weight α, inserted after an activation during QAT (./activation-layers.ts):
 *
 *   y = clip(x, 0, α),   ŷ = round(y · n/α) · α/n,   n = 2^k − 1
 *   ∂ŷ/∂x = 1 for 0 ≤ x < α (else 0),   ∂ŷ/∂α = 1 for x ≥ α (else 0)     (straight through the rounding)
 *
 * so α grows when clipping costs loss and shrinks otherwise; the L2 penalty λ·α² (pactPenalty, added to the
 * loss) keeps it from growing without bound, as in the paper. Backward gradients can also be quantized
 * DoReFa's way (./dorefa.ts) with `gradientBits` < 32.
 */
import * as tf from '@tensorflow/tfjs';
import { FLOAT_GRADIENT_BITS, quantizeGradient } from './dorefa.js';

export interface PactArgs {
  bits: number;
  /** α before training; default 6 (ReLU6's bound). */
  alpha?: number;
  gradientBits?: number;
  seed?: number;
  name?: string;
}

/** ŷ of the module comment for a given α tensor (values only). */
export function pactGrid(x: tf.Tensor, alpha: tf.Tensor, bits: number): tf.Tensor {
  const levels = 2 ** bits - 1;
  return tf.tidy(() => {
    const step = tf.div(alpha, levels);
    return tf.mul(tf.round(tf.div(tf.minimum(tf.relu(x), alpha), step)), step);
  });
}

export class PactActivation extends tf.layers.Layer {
  static className = 'PactActivation';
  readonly bits: number;
  readonly initialAlpha: number;
  readonly gradientBits: number;
  readonly seed: number;
  private alphaWeight: tf.LayerVariable | undefined;
  private draws = 0;

  constructor(args: PactArgs) {
    super({ name: args.name, trainable: true });
    if (!Number.isInteger(args.bits) || args.bits < 1 || args.bits > 16)
      throw new RangeError(`PACT bits must be 1..16, got ${args.bits}`);
    this.bits = args.bits;
    this.initialAlpha = args.alpha ?? 6;
    if (!(this.initialAlpha > 0)) throw new RangeError(`PACT alpha must be > 0, got ${this.initialAlpha}`);
    this.gradientBits = args.gradientBits ?? FLOAT_GRADIENT_BITS;
    this.seed = args.seed ?? 0;
  }

  override build(): void {
    this.alphaWeight = this.addWeight(
      'alpha',
      [],
      'float32',
      tf.initializers.constant({ value: this.initialAlpha }),
      undefined,
      true,
    );
    this.built = true;
  }

  /** The clipping level's variable (trainable). */
  get alpha(): tf.Variable {
    if (this.alphaWeight === undefined) throw new Error(`PACT layer ${this.name} is not built`);
    return this.alphaWeight.read() as tf.Variable;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const clip = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [input, alpha, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
      save([input, alpha]);
      return {
        value: pactGrid(input, alpha, this.bits),
        gradFunc: (gradient: tf.Tensor, saved: tf.Tensor[]) => {
          const [kept, level] = saved;
          const [dx, dAlpha] = pactGradients(gradient, kept, level);
          if (this.gradientBits >= FLOAT_GRADIENT_BITS) return [dx, dAlpha];
          const quantized = quantizeGradient(dx, this.gradientBits, (this.seed + 0x9e3779b9 * ++this.draws) >>> 0);
          dx.dispose();
          return [quantized, dAlpha];
        },
      };
    });
    return clip(x, this.alpha);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      bits: this.bits,
      alpha: this.initialAlpha,
      gradientBits: this.gradientBits,
      seed: this.seed,
    };
  }
}

/** [∂L/∂x, ∂L/∂α] from dy = ∂L/∂ŷ (module comment). */
export function pactGradients(dy: tf.Tensor, x: tf.Tensor, alpha: tf.Tensor): [tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const clipped = tf.cast(tf.greaterEqual(x, alpha), 'float32');
    const passed = tf.mul(tf.cast(tf.greaterEqual(x, 0), 'float32'), tf.sub(1, clipped));
    return [tf.mul(dy, passed), tf.reshape(tf.sum(tf.mul(dy, clipped)), alpha.shape)];
  });
}

/** λ·Σ α² over the layers: PACT's L2 penalty, to be added to the loss. */
export function pactPenalty(layers: readonly PactActivation[], decay: number): tf.Scalar {
  return tf.tidy(() => tf.mul(decay, tf.addN(layers.map((layer) => tf.square(layer.alpha)))) as tf.Scalar);
}

tf.serialization.registerClass(PactActivation);

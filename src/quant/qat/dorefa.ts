/**
 * DoReFa-Net activation and gradient quantization (Zhou, Wu, Ni, Zhou, Wen & Zou 2016, "DoReFa-Net:
 * Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients"), as a tf.layers layer
 * inserted after an activation during QAT (./activation-layers.ts).
 *
 * Forward, k-bit activations on [0, 1], with n = 2^k − 1:
 *   x̂ = round(n · clip(x, 0, 1)) / n
 * backward, the straight-through estimator of the clip: ∂x̂/∂x = 1 for 0 ≤ x ≤ 1, 0 outside.
 *
 * Optional k-bit stochastic gradient quantization of the gradient dr flowing back through the layer
 * (the paper's eq. 12), with the max taken per sample (over every axis but the batch axis):
 *   f(dr) = 2·max|dr| · [ round(n·(dr / (2·max|dr|) + 1/2) + σ) / n − 1/2 ],   σ ~ U(−1/2, 1/2)
 * i.e. stochastic rounding of dr onto a uniform k-bit grid over [−max|dr|, max|dr|]: unbiased, E[f(dr)] = dr.
 * (The paper writes the noise as N(k) = σ/n inside the quantizer; the same thing.) The draws are seeded by
 * the layer's seed and a counter, so a run is reproducible. `gradientBits` 32 leaves gradients in float.
 */
import * as tf from '@tensorflow/tfjs';

/** Gradients at this width or more are left in float32. */
export const FLOAT_GRADIENT_BITS = 32;

/** round(n·clip(x, 0, 1))/n, n = 2^bits − 1 (values only; no gradient). */
export function dorefaGrid(x: tf.Tensor, bits: number): tf.Tensor {
  const levels = 2 ** bits - 1;
  return tf.tidy(() => tf.div(tf.round(tf.mul(tf.clipByValue(x, 0, 1), levels)), levels));
}

/** DoReFa's stochastic k-bit quantization of a gradient (module comment), seeded. */
export function quantizeGradient(dy: tf.Tensor, bits: number, seed: number): tf.Tensor {
  const levels = 2 ** bits - 1;
  return tf.tidy(() => {
    const axes = Array.from({ length: dy.rank - 1 }, (_, i) => i + 1);
    const maxAbs = axes.length > 0 ? tf.max(tf.abs(dy), axes, true) : tf.abs(dy);
    const range = tf.maximum(tf.mul(maxAbs, 2), 1e-30);
    const unit = tf.add(tf.div(dy, range), 0.5);
    const noise = tf.randomUniform(dy.shape, -0.5, 0.5, 'float32', seed);
    // Only a ±1/2 draw at an end level could step past the grid; the clip keeps it on k bits.
    const codes = tf.clipByValue(tf.round(tf.add(tf.mul(unit, levels), noise)), 0, levels);
    return tf.mul(range, tf.sub(tf.div(codes, levels), 0.5));
  });
}

export interface DoReFaArgs {
  bits: number;
  /** 2..31 quantizes the backward gradient; 32 (default) leaves it float. */
  gradientBits?: number;
  seed?: number;
  name?: string;
}

export class DoReFaActivation extends tf.layers.Layer {
  static className = 'DoReFaActivation';
  readonly bits: number;
  readonly gradientBits: number;
  readonly seed: number;
  /** Backward passes so far: each draws fresh noise. */
  private draws = 0;

  constructor(args: DoReFaArgs) {
    super({ name: args.name, trainable: false });
    if (!Number.isInteger(args.bits) || args.bits < 1 || args.bits > 16)
      throw new RangeError(`DoReFa bits must be 1..16, got ${args.bits}`);
    this.bits = args.bits;
    this.gradientBits = args.gradientBits ?? FLOAT_GRADIENT_BITS;
    this.seed = args.seed ?? 0;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const quantize = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
      save([input]);
      return {
        value: dorefaGrid(input, this.bits),
        gradFunc: (gradient: tf.Tensor, saved: tf.Tensor[]) => {
          const [kept] = saved;
          const inside = tf.tidy(() =>
            tf.mul(gradient, tf.cast(tf.logicalAnd(tf.greaterEqual(kept, 0), tf.lessEqual(kept, 1)), 'float32')),
          );
          if (this.gradientBits >= FLOAT_GRADIENT_BITS) return inside;
          const quantized = quantizeGradient(inside, this.gradientBits, (this.seed + 0x9e3779b9 * ++this.draws) >>> 0);
          inside.dispose();
          return quantized;
        },
      };
    });
    return quantize(x);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), bits: this.bits, gradientBits: this.gradientBits, seed: this.seed };
  }
}

tf.serialization.registerClass(DoReFaActivation);

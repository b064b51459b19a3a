/**
 * FakeQuant: a tf.layers layer that simulates an integer tensor (docs/methods.md, Activations). With the
 * affine grid of `bits` bits, scale s and zero point z:
 *
 *   q = clamp(round(x / s) + z, 0, 2^bits − 1),   x̂ = s · (q − z)
 *
 * (tf.round rounds halves to even, as integer runtimes that round to nearest-even do). It has no weights;
 * inserted after a layer it makes the rest of the model see what an integer runtime would compute. It is
 * registered with tf.serialization under its class name, so a topology naming it loads with
 * tf.models.modelFromJSON. Inference only: round has no useful gradient (QAT uses its own STE ops).
 */
import * as tf from '@tensorflow/tfjs';

export interface FakeQuantArgs {
  scale: number;
  zeroPoint: number;
  bits: number;
  name?: string;
}

export class FakeQuant extends tf.layers.Layer {
  static className = 'FakeQuant';
  readonly scale: number;
  readonly zeroPoint: number;
  readonly bits: number;

  constructor(args: FakeQuantArgs) {
    super({ name: args.name, trainable: false });
    if (!(args.scale > 0) || !Number.isFinite(args.scale))
      throw new RangeError(`FakeQuant scale must be > 0, got ${args.scale}`);
    if (!Number.isInteger(args.bits) || args.bits < 2 || args.bits > 16) {
      throw new RangeError(`FakeQuant bits must be an integer in 2..16, got ${args.bits}`);
    }
    this.scale = args.scale;
    this.zeroPoint = args.zeroPoint;
    this.bits = args.bits;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const q = tf.clipByValue(tf.add(tf.round(tf.div(x, this.scale)), this.zeroPoint), 0, 2 ** this.bits - 1);
      return tf.mul(tf.sub(q, this.zeroPoint), this.scale);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), scale: this.scale, zeroPoint: this.zeroPoint, bits: this.bits };
  }
}

tf.serialization.registerClass(FakeQuant);

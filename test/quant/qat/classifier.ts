/** A small seeded Dense classifier and its data, shared by the QAT loop and resume tests. */
import * as tf from '@tensorflow/tfjs';
import { createRng } from '../../../src/quant/rng.js';

/** Dense 6 → 8 → 3 on 40 seeded samples whose class follows from the first two features. */
export function classifier(seed: number): { model: tf.LayersModel; x: tf.Tensor; y: tf.Tensor } {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [6],
        units: 8,
        activation: 'relu',
        name: 'hidden',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
      }),
      tf.layers.dense({
        units: 3,
        activation: 'softmax',
        name: 'out',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
      }),
    ],
  });
  const rng = createRng(seed);
  const xs = Float32Array.from({ length: 40 * 6 }, () => rng.next() * 2 - 1);
  const ys = Int32Array.from({ length: 40 }, (_, i) => (xs[i * 6] > 0 ? 1 : 0) + (xs[i * 6 + 1] > 0.5 ? 1 : 0));
  return { model, x: tf.tensor2d(xs, [40, 6]), y: tf.tensor1d(ys, 'int32') };
}

/** Every variable's current values by its model.json name. */
export function weightMap(model: tf.LayersModel): Map<string, Float32Array> {
  return new Map(model.weights.map((w) => [w.originalName, Float32Array.from(w.read().dataSync())]));
}

/**
 * A classifier with one deliberately sensitive layer, for the sensitivity and auto-search tests: the
 * generated 12×12 image task of test/fixtures/tasks.ts (6 classes) through Flatten → Dense 128 (relu,
 * `wide1`) → Dense 1 (`bottleneck`, linear) → Dense 128 (relu, `wide2`) → Dense 6 (softmax, `logits`).
 * Every class must be told apart by one number, so an error in the bottleneck's 128 weights moves samples
 * across class boundaries, while the wide layers' errors average out over their many units. `wide2` has
 * fan-in 1, so any per-channel method represents it exactly. The bottleneck is also the smallest tensor:
 * a good search keeps it precise and squeezes the others.
 */
import * as tf from '@tensorflow/tfjs';
import { makeClassificationTask, sliceTask, type ClassificationTask } from '../fixtures/tasks.js';

export { taskDataset } from '../fixtures/tasks.js';

export const BOTTLENECK = 'bottleneck/kernel';

export function buildBottleneckMlp(
  inputShape: number[],
  classes: number,
  seed: number,
  units = { wide: 128, bottleneck: 1 },
): tf.LayersModel {
  const glorot = (offset: number) => tf.initializers.glorotUniform({ seed: seed + offset });
  const input = tf.input({ shape: inputShape, name: 'image' });
  const layers = [
    tf.layers.flatten({ name: 'flatten' }),
    tf.layers.dense({ units: units.wide, activation: 'relu', kernelInitializer: glorot(1), name: 'wide1' }),
    tf.layers.dense({ units: units.bottleneck, kernelInitializer: glorot(2), name: 'bottleneck' }),
    tf.layers.dense({ units: units.wide, activation: 'relu', kernelInitializer: glorot(3), name: 'wide2' }),
    tf.layers.dense({ units: classes, activation: 'softmax', kernelInitializer: glorot(4), name: 'logits' }),
  ];
  let output: tf.SymbolicTensor = input;
  for (const layer of layers) output = layer.apply(output) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: 'bottleneck_mlp' });
}

export interface BottleneckTask {
  model: tf.LayersModel;
  train: ClassificationTask;
  evaluation: ClassificationTask;
}

/** The task (seeded), its first `trainSamples` rows trained on for `epochs`, the next `evalSamples` held out. */
export async function trainBottleneckMlp(options: {
  seed: number;
  trainSamples: number;
  evalSamples: number;
  epochs: number;
  units?: { wide: number; bottleneck: number };
  noise?: number;
}): Promise<BottleneckTask> {
  const task = makeClassificationTask({
    seed: options.seed,
    samples: options.trainSamples + options.evalSamples,
    classes: 6,
    noise: options.noise ?? 0.15,
  });
  const train = sliceTask(task, 0, options.trainSamples);
  const evaluation = sliceTask(task, options.trainSamples, options.trainSamples + options.evalSamples);
  const model = buildBottleneckMlp(task.inputShape, task.classes, options.seed, options.units);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'sparseCategoricalCrossentropy' });
  const x = tf.tensor(train.x, [options.trainSamples, ...task.inputShape], 'float32');
  const y = tf.tensor1d(Float32Array.from(train.y), 'float32');
  try {
    await model.fit(x, y, { epochs: options.epochs, batchSize: 32, shuffle: false, verbose: 0 });
  } finally {
    x.dispose();
    y.dispose();
  }
  return { model, train, evaluation };
}

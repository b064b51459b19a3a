/**
 * The tfjs side of the job flows: a runnable tfjs model from a LoadedModel or from an artifact's `model/`
 * files (each pushed onto `owned`, which the flow disposes), and a dataset's rows as tensor batches.
 */
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../jobs/spec.js';
import type { Dataset } from '../model/dataset/index.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import type { LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import type { FileSet } from '../quant/model.js';
import type { Batch } from '../quant/evaluate.js';

export async function loadTfModel(model: LoadedModel, owned: RunnableModel[]): Promise<RunnableModel> {
  const runnable = await loadRunnable(writeModel(model, new Map()));
  owned.push(runnable);
  return runnable;
}

/** The stock TF.js model of an artifact tree: its files under model/. */
export function artifactModelFiles(files: FileSet): FileSet {
  const modelFiles: FileSet = new Map();
  for (const [path, bytes] of files) if (path.startsWith('model/')) modelFiles.set(path.slice('model/'.length), bytes);
  return modelFiles;
}

export async function loadArtifact(files: FileSet, owned: RunnableModel[]): Promise<RunnableModel> {
  const runnable = await loadRunnable(artifactModelFiles(files));
  owned.push(runnable);
  return runnable;
}

export function inputDtypeOf(model: RunnableModel): 'float32' | 'int32' {
  const dtype = model.inputs[0]?.dtype;
  return dtype === 'int32' ? 'int32' : 'float32';
}

/**
 * Dataset rows as tensors, one batch at a time: each batch is disposed when the next is asked for (or the
 * loop ends), so a consumer that keeps no references holds one batch in memory.
 */
export async function* tensorBatches(
  dataset: Dataset,
  batchSize: number,
  spec: JobSpec,
  xDtype: 'float32' | 'int32',
  range: { start?: number; end?: number },
): AsyncGenerator<Batch> {
  for await (const batch of dataset.batches(batchSize, { preprocess: spec.preprocess, xDtype, ...range })) {
    const x = tf.tensor(batch.x, [batch.count, ...dataset.x.sampleShape], xDtype);
    const labels = dataset.y;
    const y =
      batch.y && labels
        ? labels.labels === 'index'
          ? tf.tensor1d(batch.y, 'int32')
          : tf.tensor(batch.y, [batch.count, ...labels.sampleShape], 'float32')
        : undefined;
    try {
      yield y ? { x, y } : { x };
    } finally {
      x.dispose();
      y?.dispose();
    }
  }
}

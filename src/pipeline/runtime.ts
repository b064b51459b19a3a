/**
 * The tfjs side of the job flows: a runnable tfjs model from a LoadedModel or from an artifact's `model/`
 * files (each pushed onto `owned`, which the flow disposes), and a dataset's rows as tensor batches.
 */
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../jobs/spec.js';
import { DatasetError, type Dataset } from '../model/dataset/index.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import { sameInput } from '../model/signature.js';
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

/** One input of a model, in the order its predict takes inputs. */
export interface ModelInputInfo {
  name: string;
  dtype: 'float32' | 'int32';
}

export function inputsOf(model: RunnableModel): ModelInputInfo[] {
  const names = model instanceof tf.LayersModel ? model.inputNames : model.inputs.map((input) => input.name);
  return model.inputs.map((input, i) => ({ name: names[i], dtype: input.dtype === 'int32' ? 'int32' : 'float32' }));
}

/**
 * Which of a dataset's named arrays feeds each of the model's inputs, in the model's order (null: the
 * dataset's one x feeds the model's only input).
 */
function inputOrder(dataset: Dataset, feed: ModelInputInfo[]): number[] | null {
  const named = dataset.inputs;
  if (!named) {
    if (feed.length > 1) {
      throw new DatasetError(
        `the model has ${feed.length} inputs (${feed.map((i) => i.name).join(', ')}); the dataset gives one x: send one array per input, named by it`,
      );
    }
    return null;
  }
  if (named.length !== feed.length) {
    throw new DatasetError(
      `the dataset has ${named.length} inputs (${named.map((a) => a.name).join(', ')}) for a model of ${feed.length} (${feed.map((i) => i.name).join(', ')})`,
    );
  }
  return feed.map((input) => {
    const at = named.findIndex((array) => sameInput(array.name, input.name));
    if (at < 0) {
      throw new DatasetError(
        `the dataset has no array for input '${input.name}' (it has ${named.map((a) => a.name).join(', ')})`,
      );
    }
    return at;
  });
}

/**
 * Dataset rows as tensors, one batch at a time: each batch is disposed when the next is asked for (or the
 * loop ends), so a consumer that keeps no references holds one batch in memory.
 */
export async function* tensorBatches(
  dataset: Dataset,
  batchSize: number,
  spec: JobSpec,
  feed: ModelInputInfo[],
  range: { start?: number; end?: number },
): AsyncGenerator<Batch> {
  const order = inputOrder(dataset, feed);
  const named = dataset.inputs;
  const xDtype = feed[0]?.dtype ?? 'float32';
  const inputDtypes = order && named ? Object.fromEntries(order.map((at, k) => [named[at].name, feed[k].dtype])) : {};
  const options = { preprocess: spec.preprocess, xDtype, inputDtypes, ...range };
  for await (const batch of dataset.batches(batchSize, options)) {
    const tensors =
      order && named && batch.inputs
        ? order.map((at, k) => tf.tensor(batch.inputs![at], [batch.count, ...named[at].sampleShape], feed[k].dtype))
        : [tf.tensor(batch.x, [batch.count, ...dataset.x.sampleShape], xDtype)];
    const x = tensors.length === 1 ? tensors[0] : tensors;
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
      tf.dispose(tensors);
      y?.dispose();
    }
  }
}

/**
 * The rows of a batch stream whose `mask` entry (by position in the whole stream) equals `keep`, as batches
 * of their own, each disposed when the next is asked for; batches with no such row are passed over.
 */
export async function* selectRows(source: AsyncIterable<Batch>, mask: Uint8Array, keep: 0 | 1): AsyncGenerator<Batch> {
  let offset = 0;
  for await (const batch of source) {
    const rows = (Array.isArray(batch.x) ? batch.x[0] : batch.x).shape[0];
    const picked: number[] = [];
    for (let i = 0; i < rows; i++) if (mask[offset + i] === keep) picked.push(i);
    offset += rows;
    if (picked.length === 0) continue;
    const selected = tf.tidy(() => {
      const indices = tf.tensor1d(picked, 'int32');
      const take = (t: tf.Tensor) => tf.gather(t, indices);
      return {
        x: Array.isArray(batch.x) ? batch.x.map(take) : take(batch.x),
        ...(batch.y ? { y: take(batch.y) } : {}),
      };
    });
    try {
      yield selected;
    } finally {
      tf.dispose(selected.x);
      selected.y?.dispose();
    }
  }
}

/**
 * The tfjs side of the job flows: a runnable tfjs model from a LoadedModel or from an artifact's `model/`
 * files (each pushed onto `owned`, which the flow disposes), and a dataset's rows as tensor batches: in file
 * order, or as QAT reads them (its validation rows, and each epoch's order of the training rows).
 */
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../jobs/spec.js';
import { DatasetError, type BatchOptions, type Dataset, type DatasetBatch } from '../model/dataset/index.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import { sameInput } from '../model/signature.js';
import type { LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import type { FileSet } from '../quant/model.js';
import type { Batch } from '../quant/evaluate.js';
import { heldOutMask, maskedRows } from '../quant/held-out.js';
import { epochRng, trainingOrder } from '../quant/qat/train.js';
import type { Rng } from '../quant/rng.js';

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

/** The tensors of one dataset batch, as the model's inputs take them. */
function batchTensors(dataset: Dataset, batch: DatasetBatch, feed: ModelInputInfo[], order: number[] | null): Batch {
  const named = dataset.inputs;
  const xDtype = feed[0]?.dtype ?? 'float32';
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
  return y ? { x, y } : { x };
}

function batchOptions(dataset: Dataset, spec: JobSpec, feed: ModelInputInfo[], order: number[] | null): BatchOptions {
  const named = dataset.inputs;
  const xDtype = feed[0]?.dtype ?? 'float32';
  const inputDtypes = order && named ? Object.fromEntries(order.map((at, k) => [named[at].name, feed[k].dtype])) : {};
  return { preprocess: spec.preprocess, xDtype, inputDtypes };
}

/** Yields each dataset batch as tensors, disposed when the next is asked for (or the loop ends). */
async function* asTensors(
  batches: AsyncIterable<DatasetBatch>,
  dataset: Dataset,
  feed: ModelInputInfo[],
  order: number[] | null,
): AsyncGenerator<Batch> {
  for await (const batch of batches) {
    const tensors = batchTensors(dataset, batch, feed, order);
    try {
      yield tensors;
    } finally {
      tf.dispose(tensors.x);
      tensors.y?.dispose();
    }
  }
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
  const options = { ...batchOptions(dataset, spec, feed, order), ...range };
  yield* asTensors(dataset.batches(batchSize, options), dataset, feed, order);
}

/**
 * What a shuffle buffer holds, for a dataset that cannot be read at any row (.npz): this many batches, or
 * as many samples as SHUFFLE_BUFFER_BYTES holds if fewer (large images), and never less than one batch.
 * A run of one class shorter than the buffer still reaches the trainer mixed with what it held before.
 */
export const SHUFFLE_BUFFER_BATCHES = 64;
export const SHUFFLE_BUFFER_BYTES = 64 * 1024 * 1024;

/** Samples the shuffle buffer holds for `dataset`'s rows in batches of `batchSize` (see SHUFFLE_BUFFER_BATCHES). */
export function shuffleBufferSamples(dataset: Dataset, batchSize: number): number {
  const values = [...(dataset.inputs ?? [dataset.x]), ...(dataset.y ? [dataset.y] : [])]
    .map((array) => array.sampleShape.reduce((a, b) => a * b, 1))
    .reduce((a, b) => a + b, 0);
  const fits = Math.floor(SHUFFLE_BUFFER_BYTES / (4 * values));
  return Math.max(batchSize, Math.min(batchSize * SHUFFLE_BUFFER_BATCHES, fits));
}

/**
 * The rows `qat.validationSplit` holds out of a training set of `samples` rows (1 = held out): exactly
 * round(split · samples) of them, at least one, chosen uniformly from the whole file by `seed`
 * (heldOutMask, as auto's verification split), so the same seed holds out the same rows.
 */
export function validationRows(samples: number, split: number, seed: number): Uint8Array {
  if (samples < 2) {
    throw new DatasetError(
      `qat.validationSplit ${split} needs at least 2 training samples, one to train on and one to validate on; the dataset has ${samples}`,
    );
  }
  return heldOutMask(samples, split, seed);
}

/**
 * The training rows — every row but those `heldOut` marks (1 = a validation row, see validationRows) — in
 * an order of epoch `epoch`'s own, drawn from `seed` (the trainer's, so a resumed job replays it). A dataset
 * readable at any row (.npy, JSON) gives a uniform permutation of them (epochOrder), each batch one gather
 * of its rows; one that only streams (.npz) is read from its start, the held-out rows passed over, through
 * a shuffle buffer (shuffleBufferSamples; as tf.data's shuffle: each sample leaves it at random and the
 * next one read takes its place). Either way one batch (or the buffer) is in memory at a time.
 */
export async function* shuffledTensorBatches(
  dataset: Dataset,
  batchSize: number,
  spec: JobSpec,
  feed: ModelInputInfo[],
  heldOut: Uint8Array | undefined,
  seed: number,
  epoch: number,
): AsyncGenerator<Batch> {
  const order = inputOrder(dataset, feed);
  const options = batchOptions(dataset, spec, feed, order);
  const rows = dataset.rowsAt
    ? gatheredRows(
        dataset.rowsAt.bind(dataset),
        trainingOrder(dataset.samples, heldOut, seed, epoch),
        batchSize,
        options,
      )
    : bufferShuffled(
        samplesWhere(dataset.batches(batchSize, options), heldOut, 0),
        dataset.inputs !== undefined,
        batchSize,
        shuffleBufferSamples(dataset, batchSize),
        epochRng(seed, epoch),
      );
  yield* asTensors(rows, dataset, feed, order);
}

/**
 * The rows `heldOut` marks (1), in file order, the same every time: gathered where the dataset reads at
 * any row (.npy, JSON), picked out of one pass over the file where it only streams (.npz). Batches of
 * `batchSize` rows, the last one smaller.
 */
export async function* heldOutTensorBatches(
  dataset: Dataset,
  batchSize: number,
  spec: JobSpec,
  feed: ModelInputInfo[],
  heldOut: Uint8Array,
): AsyncGenerator<Batch> {
  const order = inputOrder(dataset, feed);
  const options = batchOptions(dataset, spec, feed, order);
  const rows = dataset.rowsAt
    ? gatheredRows(dataset.rowsAt.bind(dataset), maskedRows(heldOut, 1), batchSize, options)
    : rebatched(samplesWhere(dataset.batches(batchSize, options), heldOut, 1), dataset.inputs !== undefined, batchSize);
  yield* asTensors(rows, dataset, feed, order);
}

async function* gatheredRows(
  rowsAt: NonNullable<Dataset['rowsAt']>,
  order: Int32Array,
  batchSize: number,
  options: BatchOptions,
): AsyncGenerator<DatasetBatch> {
  for (let start = 0; start < order.length; start += batchSize)
    yield await rowsAt(order.subarray(start, start + batchSize), options);
}

/** One sample of a dataset batch: its row of each input and of y. */
interface Sample {
  inputs: (Float32Array | Int32Array)[];
  y?: Float32Array | Int32Array;
}

/**
 * The samples of a batch stream whose `mask` entry (by row of the whole stream) equals `keep`; every sample
 * without a mask. Copies, not views: a view would keep its whole batch alive until the last of its rows went.
 */
async function* samplesWhere(
  batches: AsyncIterable<DatasetBatch>,
  mask: Uint8Array | undefined,
  keep: 0 | 1,
): AsyncGenerator<Sample> {
  let first = 0;
  for await (const batch of batches) {
    const arrays = batch.inputs ?? [batch.x];
    const row = (values: Float32Array | Int32Array, i: number) => {
      const size = values.length / batch.count;
      return values.slice(i * size, (i + 1) * size);
    };
    for (let i = 0; i < batch.count; i++) {
      if (mask !== undefined && mask[first + i] !== keep) continue;
      yield { inputs: arrays.map((values) => row(values, i)), ...(batch.y ? { y: row(batch.y, i) } : {}) };
    }
    first += batch.count;
  }
}

function concatRows(rows: (Float32Array | Int32Array)[]): Float32Array | Int32Array {
  const size = rows[0].length;
  const out = rows[0] instanceof Int32Array ? new Int32Array(rows.length * size) : new Float32Array(rows.length * size);
  rows.forEach((row, i) => out.set(row, i * size));
  return out;
}

function batchOf(samples: Sample[], named: boolean): DatasetBatch {
  const inputs = samples[0].inputs.map((_, k) => concatRows(samples.map((s) => s.inputs[k])));
  const y = samples[0].y ? concatRows(samples.map((s) => s.y!)) : undefined;
  return { x: inputs[0], count: samples.length, ...(named ? { inputs } : {}), ...(y ? { y } : {}) };
}

/** `samples` in batches of `batchSize`, in their order; `named`: the dataset's batches carry `inputs`. */
async function* rebatched(
  samples: AsyncIterable<Sample>,
  named: boolean,
  batchSize: number,
): AsyncGenerator<DatasetBatch> {
  let out: Sample[] = [];
  for await (const sample of samples) {
    out.push(sample);
    if (out.length === batchSize) {
      yield batchOf(out, named);
      out = [];
    }
  }
  if (out.length > 0) yield batchOf(out, named);
}

async function* bufferShuffled(
  samples: AsyncIterable<Sample>,
  named: boolean,
  batchSize: number,
  capacity: number,
  rng: Rng,
): AsyncGenerator<DatasetBatch> {
  const buffer: Sample[] = [];
  let out: Sample[] = [];
  const take = (): Sample => {
    const at = rng.int(buffer.length);
    const sample = buffer[at];
    buffer[at] = buffer[buffer.length - 1];
    buffer.pop();
    return sample;
  };
  for await (const sample of samples) {
    buffer.push(sample);
    if (buffer.length > capacity) out.push(take());
    if (out.length === batchSize) {
      yield batchOf(out, named);
      out = [];
    }
  }
  while (buffer.length > 0) {
    out.push(take());
    if (out.length === batchSize || buffer.length === 0) {
      yield batchOf(out, named);
      out = [];
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

/**
 * Datasets the engine streams in batches: `x` (model inputs) and optional `y` (labels or targets), from a
 * pair of `.npy` files, one `.npz`, or a small JSON `{x, y}` of nested arrays. A model with several inputs
 * is fed by a dataset of named inputs instead of one x: one array per input, named by it (`.npz` keys or
 * upload part names), as ONNX Runtime's calibration readers and Qualcomm AI Hub's `{input_name: [arrays]}`
 * take them.
 *
 * Nothing but JSON is loaded whole: a `.npy` batch is one positional read of exactly its rows, an `.npz`
 * entry is streamed (see npz.ts), and element types are converted per batch — big endian swapped,
 * float64/int64 narrowed — so an evaluation set larger than memory is fine. Opening a dataset reads the
 * headers and one pass over `y` (to tell class indices from one-hot rows from regression targets).
 *
 * Batches hold `x` as float32 with `preprocess` applied (x·scale + offset, e.g. scale 1/255 for raw uint8
 * pixels), or as int32 when the model's input is (token ids); `y` as int32 class indices or float32.
 */
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import {
  NpyError,
  decodeNpyValues,
  nestedShape,
  readFully,
  readNpyHeader,
  sampleSize,
  type NpyDtype,
  type NpyHeader,
  type NumericArray,
} from './npy.js';
import { NpzFile, type NpzArray } from './npz.js';

import { DatasetError } from './errors.js';

export { DatasetError };
export { NpyError } from './npy.js';

/** What a dataset is read from (CLI: file paths; service: blob paths, see openStoredDataset). */
export type DatasetFiles =
  | { x: string; y?: string }
  | { inputs: { name: string; path: string }[]; y?: string }
  | { npz: string }
  | { json: string };

/**
 * `index`: one integer class id ≥ 0 per sample (y of shape [n] or [n, 1]); `onehot`: rows of k ≥ 2
 * zeros with a single 1; `values`: anything else (regression targets, soft labels).
 */
export type LabelKind = 'index' | 'onehot' | 'values';

export interface Preprocess {
  scale: number;
  offset: number;
}

export interface BatchOptions {
  /** Applied to float x only: x · scale + offset. */
  preprocess?: Preprocess;
  /** First sample (inclusive; default 0). */
  start?: number;
  /** Last sample (exclusive; default `samples`). */
  end?: number;
  /** `int32` for models whose input is int (token ids); values must then be integers in int32 range. */
  xDtype?: 'float32' | 'int32';
  /** The same per named input (see Dataset.inputs); an input not named here takes `xDtype`. */
  inputDtypes?: Record<string, 'float32' | 'int32'>;
}

export interface DatasetBatch {
  /** `count` samples of `x.sampleShape`, row-major. */
  x: Float32Array | Int32Array;
  /** With named inputs: each input's `count` samples, in `Dataset.inputs` order (`x` is the first). */
  inputs?: (Float32Array | Int32Array)[];
  /** Int32Array of `count` class ids for `index` labels, Float32Array of `count` rows of `y.sampleShape` else. */
  y?: Float32Array | Int32Array;
  count: number;
}

export interface DatasetArray {
  dtype: string;
  sampleShape: number[];
}

export interface Dataset {
  samples: number;
  /** `dtype` is the stored element type (`uint8`, `float64`, ...), not the batch's. With named inputs: the first. */
  x: DatasetArray;
  /** One array per model input, by the input's name; absent when `x` feeds the model's only input. */
  inputs?: (DatasetArray & { name: string })[];
  y?: { dtype: string; sampleShape: number[]; labels: LabelKind };
  batches(batchSize: number, options?: BatchOptions): AsyncIterable<DatasetBatch>;
  /**
   * The samples at `indices` (any order, repeats allowed), in that order, as one batch; `start`/`end` of
   * the options are ignored. Present when every array of the dataset can be read at any row: `.npy` files
   * (one positional read per run of consecutive rows) and JSON; absent for `.npz`, whose deflated entries
   * only stream from their start.
   */
  rowsAt?(indices: Int32Array, options?: BatchOptions): Promise<DatasetBatch>;
  close(): Promise<void>;
}

/** JSON datasets are parsed whole (a nested array costs ~10× its file size in memory): above this, use .npy. */
export const JSON_DATASET_MAX_BYTES = 32 * 1024 * 1024;

/** One array of a dataset: its element type and shape, and its rows a slice at a time. */
interface ArraySource {
  dtype: NpyDtype;
  shape: number[];
  /** Rows [start, end) in slices of at most `rows` rows, each as the stored element type. */
  slices(start: number, end: number, rows: number): AsyncGenerator<NumericArray>;
  /** The rows at `indices`, in that order, when the array can be read at any row. */
  rowsAt?(indices: Int32Array): Promise<NumericArray>;
}

function npyFileSource(handle: FileHandle, header: NpyHeader): ArraySource {
  const rowBytes = sampleSize(header.shape) * header.itemBytes;
  return {
    dtype: header.dtype,
    shape: header.shape,
    async *slices(start, end, rows) {
      for (let at = start; at < end; at += rows) {
        const bytes = new Uint8Array(Math.min(rows, end - at) * rowBytes);
        await readFully(handle, bytes, header.dataOffset + at * rowBytes);
        yield decodeNpyValues(bytes, header);
      }
    },
    async rowsAt(indices) {
      const bytes = new Uint8Array(indices.length * rowBytes);
      const reads: Promise<void>[] = [];
      // Rows that follow each other in the file are one read: an unshuffled order costs what slices costs.
      for (let first = 0; first < indices.length;) {
        let last = first + 1;
        while (last < indices.length && indices[last] === indices[last - 1] + 1) last++;
        const run = bytes.subarray(first * rowBytes, last * rowBytes);
        reads.push(readFully(handle, run, header.dataOffset + indices[first] * rowBytes));
        first = last;
      }
      await Promise.all(reads);
      return decodeNpyValues(bytes, header);
    },
  };
}

function npzSource(npz: NpzFile, array: NpzArray): ArraySource {
  const { header } = array;
  const rowBytes = sampleSize(header.shape) * header.itemBytes;
  return {
    dtype: header.dtype,
    shape: header.shape,
    async *slices(start, end, rows) {
      if (start >= end) return;
      const reader = await npz.dataReader(array, start * rowBytes);
      try {
        for (let at = start; at < end; at += rows) {
          yield decodeNpyValues(await reader.read(Math.min(rows, end - at) * rowBytes), header);
        }
      } finally {
        await reader.close();
      }
    },
  };
}

function memorySource(values: Float64Array, shape: number[]): ArraySource {
  const rowSize = sampleSize(shape);
  return {
    dtype: 'float64',
    shape,
    async *slices(start, end, rows) {
      for (let at = start; at < end; at += rows)
        yield values.subarray(at * rowSize, Math.min(end, at + rows) * rowSize);
    },
    async rowsAt(indices) {
      const out = new Float64Array(indices.length * rowSize);
      indices.forEach((row, k) => out.set(values.subarray(row * rowSize, (row + 1) * rowSize), k * rowSize));
      return out;
    },
  };
}

function toNumber(value: number | bigint): number {
  return typeof value === 'bigint' ? Number(value) : value;
}

/** One pass over y: the label kind of its values (see LabelKind). */
async function detectLabels(y: ArraySource): Promise<LabelKind> {
  const sampleShape = y.shape.slice(1);
  const scalar = sampleShape.length === 0 || (sampleShape.length === 1 && sampleShape[0] === 1);
  const width = sampleSize(y.shape);
  if (!scalar && (sampleShape.length !== 1 || width < 2)) return 'values';
  let index = scalar;
  let onehot = !scalar;
  for await (const values of y.slices(0, y.shape[0], Math.max(1, Math.floor(65536 / width)))) {
    if (index) {
      for (let i = 0; i < values.length; i++) {
        const v = toNumber(values[i]);
        if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
          index = false;
          break;
        }
      }
    }
    if (onehot) {
      for (let row = 0; row < values.length && onehot; row += width) {
        let ones = 0;
        for (let k = 0; k < width; k++) {
          const v = toNumber(values[row + k]);
          if (v === 1) ones++;
          else if (v !== 0) ones = 2;
        }
        onehot = ones === 1;
      }
    }
    if (!index && !onehot) return 'values';
  }
  return index ? 'index' : onehot ? 'onehot' : 'values';
}

/** Converts a slice to float32 (then x·scale + offset unless identity). */
function toFloat32(values: NumericArray, preprocess?: Preprocess): Float32Array {
  const out = new Float32Array(values.length);
  if (values instanceof BigInt64Array || values instanceof BigUint64Array) {
    for (let i = 0; i < values.length; i++) out[i] = Number(values[i]);
  } else {
    out.set(values);
  }
  if (preprocess && (preprocess.scale !== 1 || preprocess.offset !== 0)) {
    const { scale, offset } = preprocess;
    for (let i = 0; i < out.length; i++) out[i] = out[i] * scale + offset;
  }
  return out;
}

/** Converts a slice to int32, refusing values an int32 cannot hold exactly; `sampleOf` numbers the slice's rows. */
function toInt32(values: NumericArray, rowSize: number, sampleOf: (row: number) => number, what: string): Int32Array {
  if (values instanceof Int32Array) return values.slice();
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = toNumber(values[i]);
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
      throw new DatasetError(`${what} of sample ${sampleOf(Math.floor(i / rowSize))} is ${v}, not an int32`);
    }
    out[i] = v;
  }
  return out;
}

/** The arrays a dataset feeds its model: one unnamed x, or one named array per input. */
type InputSources = { name: string | null; source: ArraySource }[];

class StreamedDataset implements Dataset {
  readonly samples: number;
  readonly x: Dataset['x'];
  readonly inputs?: Dataset['inputs'];
  readonly y?: Dataset['y'];
  readonly rowsAt?: Dataset['rowsAt'];
  private closed: Promise<void> | undefined;

  constructor(
    private readonly sources: InputSources,
    private readonly ySource: ArraySource | undefined,
    labels: LabelKind | undefined,
    private readonly release: () => Promise<void>,
  ) {
    const describe = (source: ArraySource) => ({ dtype: source.dtype, sampleShape: source.shape.slice(1) });
    this.samples = sources[0].source.shape[0];
    this.x = describe(sources[0].source);
    if (sources[0].name !== null)
      this.inputs = sources.map(({ name, source }) => ({ name: name!, ...describe(source) }));
    if (ySource && labels) this.y = { dtype: ySource.dtype, sampleShape: ySource.shape.slice(1), labels };
    const arrays = [...sources.map(({ source }) => source), ...(ySource ? [ySource] : [])];
    if (arrays.every((source) => source.rowsAt !== undefined))
      this.rowsAt = (indices, options) => this.gather(indices, options);
  }

  /** Element types per input for `options`, refusing preprocess on int inputs. */
  private inputTypes(options: BatchOptions): ('float32' | 'int32' | undefined)[] {
    const { preprocess } = options;
    const dtypes = this.sources.map(({ name }) => (name !== null && options.inputDtypes?.[name]) || options.xDtype);
    if (dtypes.includes('int32') && preprocess && (preprocess.scale !== 1 || preprocess.offset !== 0)) {
      throw new DatasetError('preprocess (scale, offset) applies to float inputs; this model takes int32 inputs');
    }
    return dtypes;
  }

  /** One batch from each source's values and y's, in the types `dtypes` and the label kind ask for. */
  private toBatch(
    values: NumericArray[],
    yValues: NumericArray | undefined,
    count: number,
    dtypes: ('float32' | 'int32' | undefined)[],
    options: BatchOptions,
    sampleOf: (row: number) => number,
  ): DatasetBatch {
    const rowSizes = this.sources.map(({ source }) => sampleSize(source.shape));
    const inputs = values.map((value, i) => {
      const what = this.sources[i].name ?? 'x';
      return dtypes[i] === 'int32' ? toInt32(value, rowSizes[i], sampleOf, what) : toFloat32(value, options.preprocess);
    });
    const batch: DatasetBatch = { x: inputs[0], count, ...(this.inputs ? { inputs } : {}) };
    if (yValues !== undefined)
      batch.y = this.y?.labels === 'index' ? toInt32(yValues, 1, sampleOf, 'y') : toFloat32(yValues);
    return batch;
  }

  async *batches(batchSize: number, options: BatchOptions = {}): AsyncGenerator<DatasetBatch> {
    const start = options.start ?? 0;
    const end = options.end ?? this.samples;
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new DatasetError(`batch size ${batchSize} is not a positive integer`);
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > this.samples || start > end) {
      throw new DatasetError(`sample range [${start}, ${end}) is outside [0, ${this.samples})`);
    }
    const dtypes = this.inputTypes(options);
    const rowSize = sampleSize(this.sources[0].source.shape);
    const slices = this.sources.map(({ source }) => source.slices(start, end, batchSize));
    const ySlices = this.ySource?.slices(start, end, batchSize);
    try {
      for (let at = start; at < end; at += batchSize) {
        const nexts = await Promise.all(slices.map((s) => s.next()));
        if (nexts[0].done) break;
        const values = nexts.map((next, i) => {
          if (next.done) throw new DatasetError(`${this.sources[i].name ?? 'x'} ended before ${this.sources[0].name}`);
          return next.value;
        });
        let yValues: NumericArray | undefined;
        if (ySlices) {
          const yNext = await ySlices.next();
          if (yNext.done) throw new DatasetError('y ended before x');
          yValues = yNext.value;
        }
        const first = at;
        yield this.toBatch(values, yValues, values[0].length / rowSize, dtypes, options, (row) => first + row);
      }
    } finally {
      await Promise.all(slices.map((s) => s.return(undefined)));
      await ySlices?.return(undefined);
    }
  }

  private async gather(indices: Int32Array, options: BatchOptions = {}): Promise<DatasetBatch> {
    for (const row of indices) {
      if (!Number.isInteger(row) || row < 0 || row >= this.samples)
        throw new DatasetError(`sample ${row} is outside [0, ${this.samples})`);
    }
    const dtypes = this.inputTypes(options);
    const [values, yValues] = await Promise.all([
      Promise.all(this.sources.map(({ source }) => source.rowsAt!(indices))),
      this.ySource?.rowsAt!(indices),
    ]);
    return this.toBatch(values, yValues, indices.length, dtypes, options, (row) => indices[row]);
  }

  /** Idempotent: one dataset may serve several roles of a job, and each role's owner may close it. */
  close(): Promise<void> {
    this.closed ??= this.release();
    return this.closed;
  }
}

/** Shape checks every dataset passes (also run by the upload route on headers alone). */
export function checkDatasetShapes(x: number[], y?: number[]): void {
  if (x.length === 0) throw new DatasetError('x is a scalar, not an array of samples');
  if (x[0] === 0) throw new DatasetError('x has no samples');
  if (x.slice(1).includes(0)) throw new DatasetError(`x samples of shape [${x.slice(1).join(', ')}] are empty`);
  if (!y) return;
  if (y.length === 0) throw new DatasetError('y is a scalar, not an array of labels');
  if (y.slice(1).includes(0)) throw new DatasetError(`y samples of shape [${y.slice(1).join(', ')}] are empty`);
  if (y[0] !== x[0]) throw new DatasetError(`x has ${x[0]} samples but y has ${y[0]}`);
}

/** The checks of checkDatasetShapes for a dataset of named inputs: each one's, and one sample count for all. */
export function checkInputShapes(inputs: { name: string; shape: number[] }[], y?: number[]): void {
  if (inputs.length === 0) throw new DatasetError('the dataset holds no inputs');
  const names = new Set<string>();
  for (const { name, shape } of inputs) {
    if (names.has(name)) throw new DatasetError(`input ${name} is given twice`);
    names.add(name);
    try {
      checkDatasetShapes(shape, y);
    } catch (error) {
      if (error instanceof DatasetError) throw new DatasetError(`input ${name}: ${error.message.replace(/^x /, '')}`);
      throw error;
    }
    if (shape[0] !== inputs[0].shape[0]) {
      throw new DatasetError(`input ${inputs[0].name} has ${inputs[0].shape[0]} samples but ${name} has ${shape[0]}`);
    }
  }
}

async function make(
  x: ArraySource | InputSources,
  y: ArraySource | undefined,
  release: () => Promise<void>,
): Promise<Dataset> {
  try {
    const sources = Array.isArray(x) ? x : [{ name: null, source: x }];
    if (Array.isArray(x))
      checkInputShapes(
        x.map(({ name, source }) => ({ name: name!, shape: source.shape })),
        y?.shape,
      );
    else checkDatasetShapes(x.shape, y?.shape);
    const labels = y ? await detectLabels(y) : undefined;
    return new StreamedDataset(sources, y, labels, release);
  } catch (error) {
    await release();
    throw error;
  }
}

/** Prefixes a parse error with the file it came from. */
function named<T>(what: string, work: Promise<T>): Promise<T> {
  return work.catch((error: unknown) => {
    if (error instanceof NpyError || error instanceof DatasetError) throw new DatasetError(`${what}: ${error.message}`);
    throw error;
  });
}

async function openNpy(path: string, what: string): Promise<{ handle: FileHandle; source: ArraySource }> {
  const handle = await open(path, 'r');
  try {
    const header = await named(what, readNpyHeader(handle));
    return { handle, source: npyFileSource(handle, header) };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Flattens a rectangular nested array (shape from nestedShape) into float64 values. */
function flatten(value: unknown, size: number): Float64Array {
  const out = new Float64Array(size);
  let at = 0;
  const walk = (v: unknown): void => {
    if (typeof v === 'number') out[at++] = v;
    else for (const item of v as unknown[]) walk(item);
  };
  walk(value);
  return out;
}

/**
 * A dataset from a JSON document `{x, y?}` of nested arrays, x being one array or an object of them by
 * input name (see JSON_DATASET_MAX_BYTES).
 */
export async function parseJsonDataset(text: string, what = 'JSON dataset'): Promise<Dataset> {
  let body: { x?: unknown; y?: unknown };
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new DatasetError(`${what} is not JSON: ${(error as Error).message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new DatasetError(`${what} must be an object {x, y}`);
  const source = (value: unknown, label: string): ArraySource => {
    try {
      const shape = nestedShape(value, `/${label}`);
      return memorySource(
        flatten(
          value,
          shape.reduce((a, b) => a * b, 1),
        ),
        shape,
      );
    } catch (error) {
      if (error instanceof NpyError) throw new DatasetError(`${what}: ${error.message}`);
      throw error;
    }
  };
  // `x` as an object: one nested array per named model input.
  const x =
    body.x !== null && typeof body.x === 'object' && !Array.isArray(body.x)
      ? Object.entries(body.x).map(([name, value]) => ({ name, source: source(value, `x/${name}`) }))
      : source(body.x, 'x');
  const y = body.y === undefined || body.y === null ? undefined : source(body.y, 'y');
  return make(x, y, async () => undefined);
}

/** Opens a dataset for streaming: headers are read and checked, y is scanned once for its label kind. */
export async function openDataset(files: DatasetFiles): Promise<Dataset> {
  if ('json' in files) {
    const size = (await stat(files.json)).size;
    if (size > JSON_DATASET_MAX_BYTES) {
      throw new DatasetError(
        `JSON dataset is ${size} bytes; JSON datasets are parsed whole and capped at ${JSON_DATASET_MAX_BYTES} bytes — send .npy or .npz instead`,
      );
    }
    return parseJsonDataset(await readFile(files.json, 'utf8'));
  }
  if ('npz' in files) {
    const npz = await named('npz', NpzFile.open(files.npz));
    const x = npz.inputs
      ? npz.inputs.map((array) => ({ name: array.entry.replace(/\.npy$/, ''), source: npzSource(npz, array) }))
      : npzSource(npz, npz.x);
    return make(x, npz.y ? npzSource(npz, npz.y) : undefined, async () => npz.close());
  }
  if ('inputs' in files) {
    const opened: Awaited<ReturnType<typeof openNpy>>[] = [];
    const closeAll = async () => {
      await Promise.all(opened.map((file) => file.handle.close()));
    };
    try {
      for (const { name, path } of files.inputs) opened.push(await openNpy(path, name));
      const y = files.y === undefined ? undefined : await openNpy(files.y, 'y');
      if (y) opened.push(y);
      const sources = files.inputs.map(({ name }, i) => ({ name, source: opened[i].source }));
      return make(sources, y?.source, closeAll);
    } catch (error) {
      await closeAll();
      throw error;
    }
  }
  const x = await openNpy(files.x, 'x');
  let y: Awaited<ReturnType<typeof openNpy>> | undefined;
  try {
    y = files.y === undefined ? undefined : await openNpy(files.y, 'y');
  } catch (error) {
    await x.handle.close();
    throw error;
  }
  return make(x.source, y?.source, async () => {
    await Promise.all([x.handle.close(), y?.handle.close()]);
  });
}

/**
 * A CLI dataset reference → files: `data.npz`, `data.json`, `x.npy`, or `x.npy,y.npy` (x and labels).
 */
export function datasetFiles(ref: string): DatasetFiles {
  const lower = ref.toLowerCase();
  if (lower.endsWith('.npz')) return { npz: ref };
  if (lower.endsWith('.json')) return { json: ref };
  const [x, y, ...rest] = ref.split(',');
  if (rest.length > 0 || !x.toLowerCase().endsWith('.npy') || (y !== undefined && !y.toLowerCase().endsWith('.npy'))) {
    throw new DatasetError(`dataset "${ref}": give a .npz, a .json {x, y}, x.npy, or x.npy,y.npy`);
  }
  return y === undefined ? { x } : { x, y };
}

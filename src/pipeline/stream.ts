/**
 * Streaming PTQ: a `ptq` job on a model directory in memory bounded by its largest tensor, whatever the
 * model's size. Weights are read from the shards one at a time in manifest order, quantized by
 * exportTensor (src/quant/export-tensor.ts: the codes, the stored form and the error measures in one or two
 * passes), and written at once: their `model/` bytes appended to the shards, their side information and
 * codes to packed/weights.bin at offsets laid out before the first tensor (every supported method's sizes
 * follow from the shape). model.json, packed/manifest.json and report.json are written last. The gzip
 * figures meter the bytes as they pass (gzip-size.ts). No tfjs is loaded.
 *
 * The artifacts are the in-memory pipeline's (run.ts → quantize.ts → ptq.ts) byte for byte; report.json
 * differs only in `timings` (what was timed differs; `readMs` is streaming's own) and `model.backend`
 * (`none`: no tfjs backend ran). test/pipeline/stream.test.ts checks it. A job the streaming path cannot
 * run exactly — another kind, datasets, simulated activations, learned rounding — is refused with
 * NotStreamable before anything is written; `streamingBlocker` says so from the spec alone, and callers fall
 * back to runJob.
 *
 * BatchNorm folding (foldBatchNorm, and its keepScale under ptq.equalize) is planned first from the small
 * tensors, read out of order before the rest (src/model/fold-batchnorm.ts: the BNs' weights and the biases
 * before them); then each kernel is folded in its read buffer as it streams by, before it is quantized, and
 * the folded model's manifest order, topology and report fields are the in-memory fold's. Refused: a kept
 * BatchNorm whose γ comes before its layer's kernel in the manifest (γ' is known only from the kernel), and
 * a non-finite value among the small tensors (the in-memory path reports it as readModel does).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { equalizes, type JobSpec } from '../jobs/spec.js';
import {
  applyKernelFold,
  foldInputNames,
  planBatchNormFold,
  scalingsOf,
  type FoldedWeight,
  type FoldPlan,
  type KernelScale,
} from '../model/fold-batchnorm.js';
import { decodeValues, checkFinite, type WeightSlot } from '../model/manifest.js';
import { openModelDirectory, WeightReader, type ModelDirectory, type ModelSource } from '../model/stream-read.js';
import { PositionalFile, ShardWriter } from '../model/stream-write.js';
import type { ModelOutline, Weight } from '../model/types.js';
import { DEFAULT_SHARD_SIZE_BYTES, encodeWeight, stockModelJson, type ManifestEntry } from '../model/write.js';
import { exportLayout, NonFiniteValues, type ExportLayout, type ExportedTensor } from '../quant/export-tensor.js';
import { quantizationShape } from '../quant/methods/common.js';
import { pqCodebooksFor } from '../quant/methods/pq.js';
import { PACKED_FORMAT, PACKED_VERSION } from '../quant/packed/decoder.js';
import { PACKED_DECODER_FILES, packedEncodingOf } from '../quant/packed/encoder.js';
import { packedByteLength } from '../quant/packed/bits.js';
import type { PackedManifest, PackedWeight } from '../quant/packed/manifest.js';
import type { Encoding } from '../quant/types.js';
import { packageVersion } from '../version.js';
import { inlineExporter, workerExporter } from './export-pool.js';
import { GZIP_BLOCK_BYTES, GzipMeter, gzipStride } from './gzip-size.js';
import {
  planTensors,
  readDecoderFile,
  storedBytesOf,
  tensorSeed,
  type ModelReport,
  type PlannedTensor,
  type TensorReport,
} from './ptq.js';
import type { JobProgress, JobReport } from './types.js';

/** The job needs the in-memory pipeline; thrown before anything is written. */
export class NotStreamable extends Error {
  override name = 'NotStreamable';
}

/** Below this many weights to quantize, worker threads cost more to start than they save. */
export const WORKER_MIN_WEIGHTS = 4 * 1024 * 1024;
/** A tensor kept as it is this large is written before the next one is read. */
const HELD_BYTES_LIMIT = 16 * 1024 * 1024;

export interface StreamOptions {
  /**
   * Worker threads that quantize (0: the main thread). Default: one per core when at least
   * WORKER_MIN_WEIGHTS weights are quantized, else 0.
   */
  threads?: number;
  onProgress?: (progress: JobProgress) => void | Promise<void>;
  /** Checked between tensors: an aborted run throws an AbortError and leaves no output directory. */
  signal?: AbortSignal;
}

/** Why `spec` needs the in-memory pipeline, from the spec alone; undefined when streaming may run it. */
export function streamingBlocker(spec: JobSpec): string | undefined {
  if (spec.kind !== 'ptq') return `kind "${spec.kind}" needs the whole model`;
  if (spec.ptq.algorithm !== 'nearest') return `ptq.algorithm "${spec.ptq.algorithm}" runs on calibration data`;
  if (spec.activations) return 'activations are simulated on the whole model';
  const datasets = Object.entries(spec.data).filter(([, ref]) => ref !== undefined);
  if (datasets.length > 0) return `data.${datasets[0][0]} is evaluated on the whole model`;
  return undefined;
}

type Outline = Omit<Weight, 'values'>;

function outlineOf(output: FoldedWeight): Outline {
  if (output.kind !== 'computed') return output.weight;
  const { values: _values, ...outline } = output.weight;
  return outline;
}

/**
 * The BatchNorm fold the in-memory pipeline does under `spec` (quantize.ts), planned from the small tensors
 * it reads; undefined when there is none to do. Throws NotStreamable for what only memory folds exactly.
 */
async function planFold(model: ModelDirectory, spec: JobSpec): Promise<FoldPlan | undefined> {
  if (!(spec.foldBatchNorm ?? true) || model.format !== 'layers-model') return undefined;
  const names = foldInputNames(model);
  const values = new Map<string, Weight['values']>();
  const reader = new WeightReader(model);
  try {
    for (const { weight, slot } of model.slots) {
      if (!names.has(weight.name)) continue;
      const read = valuesOf(slot, await reader.read(slot, new Uint8Array(slot.byteLength)));
      if (read instanceof Float32Array && !read.every(Number.isFinite)) {
        throw new NotStreamable(`${weight.name} is not finite: readModel reports which weight is first`);
      }
      values.set(weight.name, read);
    }
  } finally {
    await reader.close();
  }
  const fold = planBatchNormFold(model, values, { keepScale: equalizes(spec) });
  const read = new Set<string>();
  for (const { weight } of model.slots) {
    read.add(weight.name);
    for (const output of fold.outputs.get(weight.name)!) {
      if (output.kind === 'gamma' && !read.has(output.kernel)) {
        throw new NotStreamable(
          `${output.weight.name} comes before ${output.kernel} in the manifest: it is derived from it`,
        );
      }
    }
  }
  return fold;
}

interface TensorWork {
  target: PlannedTensor;
  shape: number[];
  layout: ExportLayout;
  /** Said at the tensor's turn, as the in-memory pipeline says it (pq's shared codebook instead of per-block). */
  warning?: string;
}

/**
 * Quantizes the model in `model` (a directory, or a DiskFileSet: manifest path → file on disk) under `spec`
 * into `outDir` (which must not exist yet; it holds model/, packed/ and report.json when this resolves, and
 * nothing is left of it when this throws). Returns the report as written.
 */
export async function streamQuantize(
  modelSource: ModelSource,
  spec: JobSpec,
  outDir: string,
  options: StreamOptions = {},
): Promise<JobReport> {
  const started = performance.now();
  const blocker = streamingBlocker(spec);
  if (blocker !== undefined) throw new NotStreamable(blocker);
  const model = await openModelDirectory(modelSource);
  const fold = await planFold(model, spec);
  // The model as it is quantized: folded, in the folded model's manifest order.
  const quantized: ModelOutline = fold
    ? {
        format: model.format,
        modelJson: fold.modelJson,
        weights: model.weights.flatMap((w) => fold.outputs.get(w.name)!.map(outlineOf)),
      }
    : model;

  const plan = planTensors(quantized, spec);
  const work = new Map<string, TensorWork>();
  const byName = new Map(quantized.weights.map((w) => [w.name, w]));
  for (const selected of plan.selected) {
    const weight = byName.get(selected.name)!;
    const shape = quantizationShape(weight.shape, selected.role, selected.params.name);
    let target = selected;
    let warning: string | undefined;
    if (selected.params.name === 'pq') {
      const choice = pqCodebooksFor(weight, selected.params, shape);
      target = { ...selected, params: choice.params };
      warning = choice.warning;
    }
    const layout = exportLayout(target.params, shape);
    work.set(target.name, { target, shape, layout, warning });
  }

  await mkdir(path.dirname(outDir), { recursive: true });
  await mkdir(outDir);
  try {
    return await writeArtifacts(model, { quantized, fold }, spec, plan, work, outDir, options, started);
  } catch (error) {
    await rm(outDir, { recursive: true, force: true });
    throw error;
  }
}

function count(weight: { shape: readonly number[] }): number {
  return weight.shape.reduce((a, b) => a * b, 1);
}

/** Bytes of a weight's decoded values (what packed/ stores raw and gzipBytesBefore measures). */
function decodedBytes(weight: Omit<Weight, 'values'>): number {
  return count(weight) * (weight.dtype === 'bool' ? 1 : 4);
}

function isInflating(work: TensorWork | undefined): boolean {
  return work !== undefined && work.layout.bitsPerWeight > 32;
}

/** The weight's values over `bytes`: viewed when stored plain, decoded (a fresh array) when quantized. */
function valuesOf(slot: WeightSlot, bytes: Uint8Array): Weight['values'] {
  const { spec } = slot;
  if (spec.quantization !== undefined) return decodeValues(spec, bytes.slice());
  const elements = count(spec);
  if (spec.dtype === 'float32') return new Float32Array(bytes.buffer, bytes.byteOffset, elements);
  if (spec.dtype === 'int32') return new Int32Array(bytes.buffer, bytes.byteOffset, elements);
  return bytes;
}

function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function sideInfo(encoding: Encoding): Float32Array[] {
  if (encoding.kind === 'affine') return [encoding.scales, encoding.mins];
  if (encoding.kind === 'codebook' || encoding.kind === 'pq') return [encoding.codebook];
  return [];
}

function sideChannels(encoding: Encoding): number {
  if (encoding.kind === 'affine' || encoding.kind === 'codebook') return encoding.channels;
  return encoding.kind === 'pq' ? encoding.subspaces : 1;
}

function checkLayout(name: string, layout: ExportLayout, exported: ExportedTensor): void {
  const sideFloats = sideInfo(exported.encoding).reduce((sum, side) => sum + side.length, 0);
  const bits = exported.encoding.kind === 'float16' ? 16 : exported.encoding.bits;
  if (sideFloats !== layout.sideFloats || bits !== layout.bits || exported.bitsPerWeight !== layout.bitsPerWeight) {
    throw new Error(`streaming PTQ: ${name} came out with a packed layout other than the one laid out for it`);
  }
}

async function writeArtifacts(
  model: ModelDirectory,
  { quantized, fold }: { quantized: ModelOutline; fold: FoldPlan | undefined },
  spec: JobSpec,
  plan: ReturnType<typeof planTensors>,
  work: Map<string, TensorWork>,
  outDir: string,
  options: StreamOptions,
  started: number,
): Promise<JobReport> {
  const timings = { readMs: 0, quantizeMs: 0, writeMs: 0, packMs: 0 };
  const clock = async <T>(key: keyof typeof timings, step: () => Promise<T> | T): Promise<T> => {
    const at = performance.now();
    try {
      return await step();
    } finally {
      timings[key] += performance.now() - at;
    }
  };

  // packed/weights.bin: the 4-byte section (side information, raw float32/int32) first, then the byte one.
  let wordBytes = 0;
  for (const weight of quantized.weights) {
    const planned = work.get(weight.name);
    if (planned && !isInflating(planned)) wordBytes += 4 * planned.layout.sideFloats;
    else if (weight.dtype !== 'bool') wordBytes += decodedBytes(weight);
  }
  let wordAt = 0;
  let byteAt = wordBytes;

  await mkdir(path.join(outDir, 'model'));
  await mkdir(path.join(outDir, 'packed'));
  const shards = new ShardWriter(path.join(outDir, 'model'), spec.output.shardSizeBytes ?? DEFAULT_SHARD_SIZE_BYTES);
  const packed = await PositionalFile.create(path.join(outDir, 'packed', 'weights.bin'));
  const reader = new WeightReader(model);
  const gzipEvery = gzipStride(model.weights.reduce((sum, w) => sum + decodedBytes(w), 0));
  const gzipBefore = new GzipMeter(gzipEvery);
  const gzipAfter = new GzipMeter(gzipEvery);

  const entries: ManifestEntry[] = [];
  const packedWeights: PackedWeight[] = [];
  const tensors: TensorReport[] = [];
  const warnings: string[] = [];
  // A method's view of a tensor (quantizationShape) has the tensor's element count.
  const totalWork = [...work.values()].reduce((sum, { shape }) => sum + count({ shape }), 0);
  const uploaded = new Map(model.weights.map((w) => [w.name, w]));
  /** keepScale: γ' and the range ratios of each kernel folded so far. */
  const scales = new Map<string, KernelScale>();
  /** What the folded model holds in a source weight's place: itself, its folded form, nothing, or more. */
  const outputs = (source: Outline): FoldedWeight[] =>
    fold?.outputs.get(source.name) ?? [{ kind: 'source', weight: source }];
  let done = 0;

  // A tensor's writes (its model/ bytes, side information and codes) run at once; offsets are taken in
  // model order when each write is started, so the layout does not depend on which write ends first.
  const putWords = (values: Float32Array | Int32Array, writes: Promise<void>[]): number => {
    const offset = wordAt;
    writes.push(clock('packMs', () => packed.writeAt(bytesOf(values), offset)));
    wordAt += values.byteLength;
    return offset;
  };
  const putBytes = (bytes: Uint8Array, writes: Promise<void>[]): number => {
    const offset = byteAt;
    writes.push(clock('packMs', () => packed.writeAt(bytes, offset)));
    byteAt += bytes.byteLength;
    return offset;
  };
  const storeInModel = (bytes: Uint8Array, writes: Promise<void>[]): void => {
    writes.push(
      clock('writeMs', () => shards.write(bytes)),
      gzipAfter.add(bytes),
    );
  };

  const writeTensor = async (
    weight: Outline,
    base: { name: string; shape: number[]; dtype: Weight['dtype'] },
    target: PlannedTensor,
    layout: ExportLayout,
    exported: ExportedTensor,
  ): Promise<void> => {
    const { encoding } = exported;
    entries.push({
      ...base,
      ...(exported.quantization === undefined
        ? {}
        : {
            quantization:
              exported.quantization.dtype === 'float16'
                ? exported.quantization
                : { ...exported.quantization, original_dtype: 'float32' as const },
          }),
    });
    const writes: Promise<void>[] = [];
    storeInModel(exported.stored, writes);
    const packedEncoding = packedEncodingOf(encoding, (values) => putWords(values, writes));
    if (exported.packedCodes.byteLength !== packedByteLength(exported.codeCount, layout.bits)) {
      throw new Error(`streaming PTQ: ${weight.name} packed to an unexpected length`);
    }
    packedWeights.push({
      ...base,
      dtype: 'float32',
      encoding: packedEncoding,
      codesOffset: putBytes(exported.packedCodes, writes),
      codesBytes: exported.packedCodes.byteLength,
      count: exported.codeCount,
    });
    tensors.push({
      name: weight.name,
      shape: weight.shape,
      role: target.role,
      layerType: target.layerType,
      method: target.params.name,
      bits: 'bits' in encoding ? encoding.bits : 16,
      bitsPerWeight: exported.bitsPerWeight,
      channels: sideChannels(encoding),
      storedAs: exported.storedAs,
      bytesBefore: storedBytesOf(uploaded.get(weight.name) ?? weight, count(weight)),
      bytesAfter: Math.ceil((exported.bitsPerWeight * count(weight)) / 8),
      ...(weight.channelScaleIn !== undefined ? { channelScaleIn: weight.channelScaleIn } : {}),
      ...exported.error,
    });
    await Promise.all(writes);
  };

  const threads =
    options.threads ?? (totalWork >= WORKER_MIN_WEIGHTS ? Math.min(availableParallelism(), plan.selected.length) : 0);
  const exporter = threads > 0 ? workerExporter(threads) : inlineExporter();
  // Tensors are read and handed out in manifest order, and written in that order by one chain of steps
  // while the next tensors are being quantized. The first failure in model order is the one reported.
  let failure: { error: unknown } | undefined;
  let chain = Promise.resolve();
  const inOrder = (step: () => Promise<void>, release?: () => void): void => {
    chain = chain.then(async () => {
      try {
        if (failure === undefined) await step();
      } catch (error) {
        failure = { error };
      } finally {
        release?.();
      }
    });
  };

  /** A weight written as it is (folded or not): held until its turn, then written in model order. */
  const keep = async (weight: Outline, values: Weight['values'], sourceError?: unknown): Promise<void> => {
    const planned = work.get(weight.name);
    if (planned !== undefined && !isInflating(planned)) {
      throw new Error(`streaming PTQ: ${weight.name} is to be quantized but was read as kept`);
    }
    const base = { name: weight.name, shape: [...weight.shape], dtype: weight.dtype };
    inOrder(async () => {
      if (sourceError !== undefined) throw sourceError;
      if (values instanceof Float32Array) checkFinite(weight.name, values);
      if (planned !== undefined) {
        const { params } = planned.target;
        if (planned.warning !== undefined) warnings.push(planned.warning);
        warnings.push(
          `${weight.name}: ${params.name} costs ${planned.layout.bitsPerWeight.toFixed(1)} bits/weight on [${weight.shape.join(', ')}], ` +
            'more than float32; it was left in float32',
        );
        plan.skipped.push({ name: weight.name, reason: `${params.name} would inflate it beyond float32` });
        done += values.length;
      }
      const [entry, stored] = encodeWeight({ ...weight, values }, undefined);
      entries.push(entry);
      const writes: Promise<void>[] = [];
      storeInModel(stored, writes);
      const offset = values instanceof Uint8Array ? putBytes(values, writes) : putWords(values, writes);
      packedWeights.push({ ...base, offset, byteLength: values.byteLength });
      await Promise.all(writes);
    });
    // Bounds what waits in memory for its turn.
    if (values.byteLength >= HELD_BYTES_LIMIT) await chain;
  };

  /**
   * Folds a source kernel in place over its values as read (already metered). A non-finite source value is
   * readModel's error, so it is found before the fold changes the value it names, and thrown in model order.
   */
  const foldKernel = (output: FoldedWeight & { kind: 'kernel' }, values: Float32Array): unknown => {
    let sourceError: unknown;
    try {
      checkFinite(output.weight.name, values);
    } catch (error) {
      sourceError = error;
    }
    const scale = applyKernelFold(output.fold, values);
    if (scale) scales.set(output.weight.name, scale);
    return sourceError;
  };

  /** A weight in the folded model's manifest, from its source weight's values as read. */
  const keepOutput = async (output: FoldedWeight, read: Weight['values']): Promise<void> => {
    if (output.kind === 'source') return keep(output.weight, read);
    if (output.kind === 'kernel') return keep(output.weight, read, foldKernel(output, read as Float32Array));
    if (output.kind === 'computed') return keep(outlineOf(output), output.weight.values);
    return keep(output.weight, scales.get(output.kernel)!.gamma);
  };

  try {
    for (const { weight: source, slot } of model.slots) {
      if (failure !== undefined) break;
      options.signal?.throwIfAborted();
      const [first, ...added] = outputs(source);
      const planned = first === undefined ? undefined : work.get(first.weight.name);

      if (planned === undefined || isInflating(planned)) {
        // Read into their own buffer; the ones kept are held until their turn to be written.
        const values = valuesOf(slot, await clock('readMs', () => reader.read(slot, new Uint8Array(slot.byteLength))));
        await gzipBefore.add(bytesOf(values));
        // Folded away or rewritten, it was still read as any weight: a non-finite value is the model's error.
        if (
          values instanceof Float32Array &&
          (first === undefined || first.kind === 'computed' || first.kind === 'gamma')
        ) {
          inOrder(async () => checkFinite(source.name, values));
        }
        for (const output of first === undefined ? [] : [first, ...added]) await keepOutput(output, values);
        continue;
      }

      const weight = first!.weight;
      const { target, shape, layout } = planned;
      await options.onProgress?.({
        stage: 'quantize',
        progress: Math.round((900 * done) / (totalWork || 1)) / 10,
        message: `quantizing ${weight.name} (${target.params.name})`,
      });
      const exportSlot = await exporter.acquire();
      const floats = valuesOf(
        slot,
        await clock('readMs', () => reader.read(slot, exportSlot.input(slot.byteLength))),
      ) as Float32Array;
      await gzipBefore.add(bytesOf(floats));
      const sourceError = first!.kind === 'kernel' ? foldKernel(first!, floats) : undefined;
      const base = { name: weight.name, shape: [...weight.shape], dtype: weight.dtype };
      const seed = tensorSeed('seed' in target.params ? target.params.seed : 0, weight.name);
      const result = exportSlot.run(floats, shape, target.params, seed);
      // Awaited in its turn below; this only keeps an early rejection from counting as unhandled.
      result.catch(() => undefined);
      inOrder(
        async () => {
          if (sourceError !== undefined) throw sourceError;
          if (planned.warning !== undefined) warnings.push(planned.warning);
          let exported: ExportedTensor;
          try {
            const quantized = await result;
            exported = quantized.exported;
            // Time on the quantizing threads, added up: with worker threads it can exceed the wall time.
            timings.quantizeMs += quantized.ms;
          } catch (error) {
            if (error instanceof NonFiniteValues) checkFinite(weight.name, floats);
            throw error;
          }
          checkLayout(weight.name, layout, exported);
          await writeTensor(weight, base, target, layout, exported);
          done += floats.length;
        },
        () => exportSlot.release(),
      );
      for (const output of added) await keepOutput(output, floats);
    }
    await chain;
    if (failure !== undefined) throw failure.error;

    options.signal?.throwIfAborted();
    const paths = await clock('writeMs', () => shards.finish());
    await writeFile(path.join(outDir, 'model', 'model.json'), stockModelJson(quantized, paths, entries));
  } catch (error) {
    await chain;
    await shards.abort();
    throw error;
  } finally {
    await exporter.close();
    await reader.close();
    await packed.close();
  }

  const reportStarted = performance.now();
  await options.onProgress?.({ stage: 'report', progress: 97, message: 'measuring sizes' });
  const manifest: PackedManifest = {
    format: PACKED_FORMAT,
    version: PACKED_VERSION,
    modelFormat: model.format,
    modelJson: quantized.modelJson,
    weightsBytes: byteAt,
    weights: packedWeights,
  };
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
  await writeFile(path.join(outDir, 'packed', 'manifest.json'), manifestBytes);
  for (const name of PACKED_DECODER_FILES) {
    await writeFile(path.join(outDir, 'packed', name), await readDecoderFile(name));
  }
  await writeFile(path.join(outDir, 'packed', 'package.json'), '{ "type": "module" }\n');

  const bytesBefore = model.weights.reduce((sum, w) => sum + storedBytesOf(w, count(w)), 0);
  const bytesAfter = shards.bytesWritten;
  const packedBytes = byteAt + manifestBytes.byteLength;
  const quantizedParams = tensors.reduce((sum, t) => sum + count(t), 0);
  const params = quantized.weights.reduce((sum, w) => sum + count(w), 0);
  const gzipBytesBefore = await gzipBefore.size();
  const gzipBytesAfter = await gzipAfter.size();
  const modelReport: ModelReport = {
    format: model.format,
    params,
    quantizedParams,
    bytesBefore,
    bytesAfter,
    packedBytes,
    gzipBytesBefore,
    gzipBytesAfter,
    ...(gzipEvery > 1 ? { gzipSample: { blockBytes: GZIP_BLOCK_BYTES, every: gzipEvery } } : {}),
    compressionRatio: bytesBefore / packedBytes,
    stockCompressionRatio: bytesBefore / bytesAfter,
    bitsPerWeight:
      quantizedParams === 0 ? 32 : tensors.reduce((sum, t) => sum + t.bitsPerWeight * count(t), 0) / quantizedParams,
    backend: 'none',
  };
  if (bytesAfter >= bytesBefore) {
    warnings.push(`model/ holds ${bytesAfter} weight bytes, not fewer than the ${bytesBefore} uploaded`);
  }
  if (packedBytes > 4 * params) {
    warnings.push(`packed/ is ${packedBytes} bytes, more than the ${4 * params} of the weights in float32`);
  }
  const round = (ms: number) => Math.round(ms * 10) / 10;
  const totalMs = round(performance.now() - started);
  const scaled = fold ? scalingsOf(fold, scales) : [];
  const batchNorm = { folded: fold?.folded ?? [], skipped: fold?.skipped ?? [], scaled };
  // The in-memory flow's report for the same job (quantize.ts around ptq.ts), field for field and in order.
  const report: JobReport = {
    version: 1,
    generatedBy: `qaas ${packageVersion}`,
    kind: spec.kind,
    spec,
    model: { ...modelReport, metrics: {} },
    tensors,
    skipped: plan.skipped,
    equalization: scaled,
    warnings: [...batchNorm.skipped.map((s) => `BatchNorm ${s.layer} was not folded: ${s.reason}`), ...warnings],
    timings: {
      quantizeMs: round(timings.quantizeMs),
      writeMs: round(timings.writeMs),
      packMs: round(timings.packMs),
      reportMs: round(performance.now() - reportStarted),
      totalMs,
      readMs: round(timings.readMs),
    },
    ...((spec.foldBatchNorm ?? true) ? { batchNorm } : {}),
  };
  await writeFile(path.join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await options.onProgress?.({ stage: 'report', progress: 100, message: 'report written' });
  return report;
}

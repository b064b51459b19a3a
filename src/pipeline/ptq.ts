/**
 * Post-training quantization of a whole model: pick the weights the spec asks for, run each through its
 * method, and produce the artifacts of docs/report.md (stock-loadable `model/`, bit-packed `packed/`) as an
 * in-memory file set, and the report (run.ts writes it as `report.json`). The CLI writes the files to a
 * directory, the worker to storage.
 *
 * Memory: the source model is one float copy; per tensor only codes and side information are kept after its
 * error is measured, and the writer re-derives values from them one tensor at a time, so no second float
 * copy of the whole model exists.
 */
import { readFile } from 'node:fs/promises';
import picomatch from 'picomatch';
import type { JobSpec } from '../jobs/spec.js';
import { mergeOverride } from '../jobs/spec.js';
import { PACKED_DECODER_FILES, packModel } from '../quant/packed/encoder.js';
import { decodeTensor } from '../quant/packed/decode-tensor.js';
import { tensorError, type TensorError } from '../quant/metrics.js';
import { quantizationShape } from '../quant/methods/common.js';
import { getMethod, type MethodParams } from '../quant/methods/index.js';
import { pqCodebooksFor } from '../quant/methods/pq.js';
import {
  exportParams,
  isTrainingParams,
  parseAnyMethodParams,
  type TrainingMethodParams,
} from '../quant/qat/methods.js';
import { createRng } from '../quant/rng.js';
import type { QuantizedTensor, TfjsEncoding } from '../quant/types.js';
import type { BatchNormScaling } from '../model/fold-batchnorm.js';
import { quantizableWeights } from '../model/select.js';
import type { FileSet, LoadedModel, ModelOutline, Weight } from '../model/types.js';
import { writeModel, type WeightReplacement } from '../model/write.js';
import { encodeFloat16, halfToFloat } from '../quant/float16.js';
import { packageVersion } from '../version.js';
import { GZIP_BLOCK_BYTES, GzipMeter, gzipStride } from './gzip-size.js';

export interface PipelineProgress {
  stage: 'quantize' | 'write' | 'pack' | 'report';
  /** 0–100 over the whole run. */
  progress: number;
  message: string;
}

export interface PipelineOptions {
  /** The tfjs backend in use, for the report. */
  backend: string;
  onProgress?: (progress: PipelineProgress) => void | Promise<void>;
  /** Checked between tensors: an aborted run throws an AbortError and produces nothing. */
  signal?: AbortSignal;
  /**
   * Tensors a training method already quantized with its own learned scales (QatResult.quantized), by
   * weight name: written as given instead of being quantized again.
   */
  precomputed?: Map<string, QuantizedTensor>;
  /** The model as uploaded, when `model` is a rewrite of it (BatchNorm folded): `bytesBefore` counts its bytes. */
  source?: LoadedModel;
  /** The layer/BatchNorm pairs ptq.equalize rewrote, for the report. */
  equalized?: readonly BatchNormScaling[];
}

export interface TensorReport extends TensorError {
  name: string;
  shape: number[];
  role: string;
  layerType: string;
  method: string;
  bits: number;
  bitsPerWeight: number;
  /**
   * Sets of side information (scale and offset, or codebook): 1 per tensor, else one per output channel
   * (a depthwise kernel's in × multiplier), or pq's number of codebooks.
   */
  channels: number;
  /** What `model/` stores the tensor as. */
  storedAs: 'uint8' | 'uint16' | 'float16' | 'float32';
  /** Bytes of the tensor as uploaded (its manifest dtype: 1 for uint8, 2 for uint16/float16, else 4). */
  bytesBefore: number;
  /** Bytes of the tensor in the packed form (codes + side information). */
  bytesAfter: number;
  /** The BatchNorm that holds this kernel's per-channel scale (ptq.equalize), when one does. */
  channelScaleIn?: string;
}

export interface ModelReport {
  format: string;
  params: number;
  quantizedParams: number;
  /** Weight bytes of the model as uploaded (its shards). */
  bytesBefore: number;
  /** Weight bytes of the stock-loadable `model/`. */
  bytesAfter: number;
  /** Bytes of `packed/weights.bin` + `packed/manifest.json`. */
  packedBytes: number;
  gzipBytesBefore: number;
  gzipBytesAfter: number;
  /** Set when the gzip sizes are estimated: every `every`-th block of `blockBytes` compressed, scaled up. */
  gzipSample?: { blockBytes: number; every: number };
  /** bytesBefore ÷ packedBytes. */
  compressionRatio: number;
  /** bytesBefore ÷ bytesAfter: what a stock TF.js deployment saves. */
  stockCompressionRatio: number;
  /** Packed bits per quantized weight, side information included. */
  bitsPerWeight: number;
  backend: string;
}

export interface PtqReport {
  version: 1;
  generatedBy: string;
  kind: 'ptq';
  spec: JobSpec;
  model: ModelReport;
  tensors: TensorReport[];
  skipped: { name: string; reason: string }[];
  /** Kernels whose per-channel scale moved into the BatchNorm after them (ptq.equalize), per layer pair. */
  equalization: BatchNormScaling[];
  /**
   * What a user should know before deploying: model/ not smaller than the upload, packed larger than float32,
   * settings that would inflate a tensor (and what was done instead), a stage skipped.
   */
  warnings: string[];
  timings: { quantizeMs: number; writeMs: number; packMs: number; reportMs: number; totalMs: number };
}

export interface PtqResult {
  files: FileSet;
  report: PtqReport;
}

export async function runPtq(model: LoadedModel, spec: JobSpec, options: PipelineOptions): Promise<PtqResult> {
  const started = performance.now();
  const progress = async (stage: PipelineProgress['stage'], percent: number, message: string): Promise<void> => {
    await options.onProgress?.({ stage, progress: Math.round(percent * 10) / 10, message });
  };

  const plan = planTensors(model, spec);
  const weightsByName = new Map(model.weights.map((w) => [w.name, w]));
  const source = options.source ?? model;
  const uploaded = new Map(source.weights.map((w) => [w.name, w]));
  const totalWork = plan.selected.reduce((sum, t) => sum + weightsByName.get(t.name)!.values.length, 0) || 1;
  const quantized = new Map<string, QuantizedTensor>();
  const halfStoredNames = new Set<string>();
  const tensors: TensorReport[] = [];
  const warnings: string[] = [];
  let done = 0;

  for (const target of plan.selected) {
    options.signal?.throwIfAborted();
    const weight = weightsByName.get(target.name)!;
    const values = weight.values as Float32Array;
    await progress('quantize', (90 * done) / totalWork, `quantizing ${weight.name} (${target.params.name})`);
    const shape = quantizationShape(weight.shape, target.role, target.params.name);
    const seed = tensorSeed('seed' in target.params ? target.params.seed : 0, weight.name);
    const given = options.precomputed?.get(weight.name);
    if (given !== undefined && given.codes.length !== values.length) {
      throw new Error(`precomputed ${weight.name} has ${given.codes.length} codes for ${values.length} weights`);
    }
    let { params } = target;
    if (given === undefined && params.name === 'pq') {
      const choice = pqCodebooksFor(weight, params, shape);
      params = choice.params;
      if (choice.warning !== undefined) warnings.push(choice.warning);
    }
    const result = given ?? getMethod(params.name).quantize(values, shape, params, createRng(seed));
    if (result.bitsPerWeight > 32) {
      warnings.push(
        `${weight.name}: ${params.name} costs ${result.bitsPerWeight.toFixed(1)} bits/weight on [${weight.shape.join(', ')}], ` +
          'more than float32; it was left in float32',
      );
      plan.skipped.push({ name: weight.name, reason: `${params.name} would inflate it beyond float32` });
      done += values.length;
      continue;
    }
    // model/ keeps the method's exact values when stock TF.js can (uint8/uint16 grid, exact float16), else
    // float16 when its rounding adds at most 1% to the method's own squared error, else float32.
    const halfStored = result.tfjsEncoding === undefined && halfIsFaithful(values, result.dequantized);
    const stored = halfStored ? roundToHalf(result.dequantized) : result.dequantized;
    tensors.push({
      name: weight.name,
      shape: weight.shape,
      role: target.role,
      layerType: target.layerType,
      method: given !== undefined && target.training ? target.training.name : target.params.name,
      bits: 'bits' in result.encoding ? result.encoding.bits : 16,
      bitsPerWeight: result.bitsPerWeight,
      channels: sideChannels(result.encoding),
      storedAs: 'float32',
      bytesBefore: storedBytes(uploaded.get(weight.name) ?? weight),
      bytesAfter: Math.ceil((result.bitsPerWeight * values.length) / 8),
      ...(weight.channelScaleIn !== undefined ? { channelScaleIn: weight.channelScaleIn } : {}),
      ...tensorError(values, stored),
    });
    quantized.set(weight.name, withoutValues(result, shape));
    if (halfStored) halfStoredNames.add(weight.name);
    done += values.length;
    // Yield so a cancel flag or a lock renewal can be seen between tensors.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const quantizeMs = performance.now() - started;

  options.signal?.throwIfAborted();
  await progress('write', 90, 'writing the stock TF.js model');
  const writeStarted = performance.now();
  const stockValues = new Map<string, WeightReplacement>(
    [...quantized].map(([name, tensor]) => [name, halfStoredNames.has(name) ? asHalves(tensor) : tensor]),
  );
  const modelFiles = writeModel(model, stockValues, { shardSizeBytes: spec.output.shardSizeBytes });
  const storedAs = manifestDtypes(modelFiles.get('model.json')!);
  for (const tensor of tensors) tensor.storedAs = storedAs.get(tensor.name) ?? 'float32';
  const writeMs = performance.now() - writeStarted;

  options.signal?.throwIfAborted();
  await progress('pack', 94, 'bit-packing codes');
  const packStarted = performance.now();
  const packedFiles = packModel(
    { format: model.format, modelJson: model.modelJson, weights: model.weights },
    quantized,
  );
  for (const name of PACKED_DECODER_FILES) packedFiles.set(`packed/${name}`, await readDecoderFile(name));
  // Node treats the .js files as ES modules only under a package.json that says so; browsers ignore it.
  packedFiles.set('packed/package.json', new TextEncoder().encode('{ "type": "module" }\n'));
  const packMs = performance.now() - packStarted;

  await progress('report', 97, 'measuring sizes');
  const reportStarted = performance.now();
  const files: FileSet = new Map();
  for (const [path, bytes] of modelFiles) files.set(`model/${path}`, bytes);
  for (const [path, bytes] of packedFiles) files.set(path, bytes);

  const shardBytes = [...modelFiles].filter(([path]) => path.endsWith('.bin')).map(([, bytes]) => bytes);
  const bytesBefore = source.weights.reduce((sum, w) => sum + storedBytes(w), 0);
  const bytesAfter = shardBytes.reduce((sum, b) => sum + b.byteLength, 0);
  const packedBytes =
    packedFiles.get('packed/weights.bin')!.byteLength + packedFiles.get('packed/manifest.json')!.byteLength;
  const quantizedParams = tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
  const gzipEvery = gzipStride(source.weights.reduce((sum, w) => sum + w.values.byteLength, 0));
  const params = model.weights.reduce((sum, w) => sum + w.values.length, 0);
  const modelReport: ModelReport = {
    format: model.format,
    params,
    quantizedParams,
    bytesBefore,
    bytesAfter,
    packedBytes,
    gzipBytesBefore: await gzipSize(source.weights.map(storedView), gzipEvery),
    gzipBytesAfter: await gzipSize(shardBytes, gzipEvery),
    ...(gzipEvery > 1 ? { gzipSample: { blockBytes: GZIP_BLOCK_BYTES, every: gzipEvery } } : {}),
    compressionRatio: bytesBefore / packedBytes,
    stockCompressionRatio: bytesBefore / bytesAfter,
    bitsPerWeight:
      quantizedParams === 0
        ? 32
        : tensors.reduce((sum, t) => sum + t.bitsPerWeight * t.shape.reduce((a, b) => a * b, 1), 0) / quantizedParams,
    backend: options.backend,
  };
  if (bytesAfter >= bytesBefore) {
    warnings.push(`model/ holds ${bytesAfter} weight bytes, not fewer than the ${bytesBefore} uploaded`);
  }
  const float32Bytes = 4 * params;
  if (packedBytes > float32Bytes) {
    warnings.push(`packed/ is ${packedBytes} bytes, more than the ${float32Bytes} of the weights in float32`);
  }
  const reportMs = performance.now() - reportStarted;
  const report: PtqReport = {
    version: 1,
    generatedBy: `qaas ${packageVersion}`,
    kind: 'ptq',
    spec,
    model: modelReport,
    tensors,
    skipped: plan.skipped,
    equalization: options.equalized ? [...options.equalized] : [],
    warnings,
    timings: {
      quantizeMs: round(quantizeMs),
      writeMs: round(writeMs),
      packMs: round(packMs),
      reportMs: round(reportMs),
      totalMs: round(performance.now() - started),
    },
  };
  await progress('report', 100, `${tensors.length} tensors quantized, ${packedBytes} bytes packed`);
  return { files, report };
}

export interface PlannedTensor {
  name: string;
  role: string;
  layerType: string;
  /** The PTQ params (a training method's export quantizer). */
  params: MethodParams;
  /** Set when the tensor trains with a training method (kind qat): its params. */
  training?: TrainingMethodParams;
}

/**
 * Which weights get which method: the quantizable ones (kernels, embeddings, graph MatMul/Conv constants),
 * minus `layers.skip`, with the first matching `layers.overrides` glob merged over `method`. A kernel whose
 * per-channel scale lives in the BatchNorm after it (Weight.channelScaleIn) is quantized per-tensor by
 * per-channel affine: its channels share one max |w|, so a symmetric grid is the same for each, and at 8 bits
 * or more one asymmetric grid keeps per-channel precision to within its rounding (the MobileNetV2-shaped test:
 * cosine ≥ 0.999) while stock TF.js stores it as uint8/uint16 instead of float16 values. Below 8 bits an
 * asymmetric grid per channel fits each channel's own [min, max] measurably better, so it stays.
 */
export function planTensors(
  model: ModelOutline,
  spec: JobSpec,
): { selected: PlannedTensor[]; skipped: { name: string; reason: string }[] } {
  const skip = spec.layers.skip.map((glob) => ({ glob, match: picomatch(glob) }));
  const overrides = Object.entries(spec.layers.overrides).map(([glob, override]) => ({
    glob,
    match: picomatch(glob),
    params: parseAnyMethodParams(mergeOverride(spec.method, override), `/layers/overrides/${glob}`),
  }));
  const selected: PlannedTensor[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const equalized = new Set(model.weights.filter((w) => w.channelScaleIn !== undefined).map((w) => w.name));
  for (const candidate of quantizableWeights(model)) {
    const skippedBy = skip.find((s) => s.match(candidate.name));
    if (skippedBy) {
      skipped.push({ name: candidate.name, reason: `layers.skip "${skippedBy.glob}"` });
      continue;
    }
    const override = overrides.find((o) => o.match(candidate.name));
    const params = override ? override.params : spec.method;
    const exported = exportParams(params);
    const oneGrid =
      equalized.has(candidate.name) &&
      !isTrainingParams(params) &&
      'granularity' in exported &&
      exported.granularity === 'per-channel' &&
      exported.name === 'affine' &&
      (exported.symmetric || exported.bits >= 8);
    selected.push({
      ...candidate,
      params: oneGrid ? { ...exported, granularity: 'per-tensor' } : exported,
      ...(isTrainingParams(params) ? { training: params } : {}),
    });
  }
  return { selected, skipped };
}

/**
 * Drops the float copy: the writer decodes values again from codes when it needs them, one tensor at a
 * time (decodeTensor is bit-exact with the method's own dequantized values).
 */
function withoutValues(result: QuantizedTensor, shape: readonly number[]): QuantizedTensor {
  const { codes, encoding, bitsPerWeight, tfjsEncoding } = result;
  return {
    codes,
    encoding,
    bitsPerWeight,
    tfjsEncoding,
    get dequantized() {
      return decodeTensor(encoding, codes, shape);
    },
  };
}

function sideChannels(encoding: QuantizedTensor['encoding']): number {
  if (encoding.kind === 'affine' || encoding.kind === 'codebook') return encoding.channels;
  return encoding.kind === 'pq' ? encoding.subspaces : 1;
}

/** Whether float16 storage of `dequantized` adds at most 1% to the method's squared error vs `original`. */
function halfIsFaithful(original: Float32Array, dequantized: Float32Array): boolean {
  const halves = roundToHalf(dequantized);
  let methodError = 0;
  let halfError = 0;
  for (let i = 0; i < original.length; i++) {
    methodError += (original[i] - dequantized[i]) ** 2;
    halfError += (original[i] - halves[i]) ** 2;
  }
  return halfError <= methodError * 1.01;
}

function roundToHalf(values: Float32Array): Float32Array {
  return Float32Array.from(encodeFloat16(values), halfToFloat);
}

/** The writer's view of a tensor stored as float16: half patterns, decoded from the codes when read. */
function asHalves(tensor: QuantizedTensor): WeightReplacement {
  return {
    get dequantized() {
      return roundToHalf(tensor.dequantized);
    },
    get codes() {
      return encodeFloat16(tensor.dequantized);
    },
    tfjsEncoding: { dtype: 'float16' },
  };
}

/** A per-tensor seed, so a tensor's random choices don't depend on which other tensors the job includes. */
export function tensorSeed(seed: number, name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return (hash ^ seed) >>> 0;
}

function storedBytes(weight: Weight): number {
  return storedBytesOf(weight, weight.values.length);
}

/** Bytes of `count` values of a weight as uploaded: by its manifest dtype, 1 for uint8/bool, 2 for uint16/float16. */
export function storedBytesOf(weight: Omit<Weight, 'values'>, count: number): number {
  const perValue: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };
  const bytes = weight.sourceQuantization ? perValue[weight.sourceQuantization.dtype] : weight.dtype === 'bool' ? 1 : 4;
  return count * bytes;
}

/**
 * The source weight's values as bytes. For a source that was itself manifest-quantized these are its
 * dequantized float32 values, so gzipBytesBefore then measures the float model it stands for.
 */
function storedView(weight: Weight): Uint8Array {
  return new Uint8Array(weight.values.buffer, weight.values.byteOffset, weight.values.byteLength);
}

function manifestDtypes(modelJsonBytes: Uint8Array): Map<string, TensorReport['storedAs']> {
  const modelJson = JSON.parse(new TextDecoder().decode(modelJsonBytes)) as {
    weightsManifest: { weights: { name: string; dtype: string; quantization?: TfjsEncoding }[] }[];
  };
  const dtypes = new Map<string, TensorReport['storedAs']>();
  for (const group of modelJson.weightsManifest) {
    for (const entry of group.weights) {
      dtypes.set(entry.name, entry.quantization?.dtype ?? 'float32');
    }
  }
  return dtypes;
}

async function gzipSize(chunks: Uint8Array[], every: number): Promise<number> {
  const meter = new GzipMeter(every);
  for (const chunk of chunks) await meter.add(chunk);
  return meter.size();
}

/**
 * The decoder ships as compiled JavaScript. From dist/ it sits beside this module's output; when this
 * module runs from source (tests), the compiled copy under dist/ is used.
 */
export async function readDecoderFile(name: string): Promise<Uint8Array> {
  const candidates = [
    new URL(`../quant/packed/${name}`, import.meta.url),
    new URL(`../../dist/src/quant/packed/${name}`, import.meta.url),
  ];
  for (const url of candidates) {
    try {
      // The source map the compiler points at is not shipped.
      const source = (await readFile(url, 'utf8')).replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
      return new TextEncoder().encode(source);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new Error(`packed decoder file ${name} not found: run \`npm run build\` first`);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

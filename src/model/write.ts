/**
 * Writes a LoadedModel the way the tfjs converter does: model.json plus one weight group cut into
 * `group1-shard{i}of{n}.bin` shards (4 MiB by default; a weight may span a boundary), weights in their
 * original order. Replaced weights are stored in the smallest form stock tfjs reads back bit-exactly:
 * uint8/uint16 codes with a per-tensor {min, scale} (tfjs computes v·scale + min), float16, or float32.
 * Per-channel min/scale arrays and int8 are never written: stock tfjs turns the first into NaN and
 * rejects the second.
 */
import { encodeFloat16, halfToFloat } from '../quant/float16.js';
import type { Codes, TfjsEncoding } from '../quant/types.js';
import { packageVersion } from '../version.js';
import type { FileSet, LoadedModel, Weight } from './types.js';

export const DEFAULT_SHARD_SIZE_BYTES = 4 * 1024 * 1024;

export interface WeightReplacement {
  dequantized: Float32Array;
  codes?: Codes;
  tfjsEncoding?: TfjsEncoding;
}

export interface WriteOptions {
  shardSizeBytes?: number;
}

export interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: Weight['dtype'];
  quantization?:
    { dtype: 'uint8' | 'uint16'; min: number; scale: number; original_dtype: 'float32' } | { dtype: 'float16' };
}

function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** The uint8/uint16 codes tfjs will expand to exactly `dequantized`; throws if they would not. */
function gridCodes(
  name: string,
  replacement: WeightReplacement,
  encoding: { dtype: 'uint8' | 'uint16'; min: number; scale: number },
): Uint8Array | Uint16Array {
  const { codes, dequantized } = replacement;
  if (codes === undefined || codes.length !== dequantized.length) {
    throw new Error(`weight ${name}: a ${encoding.dtype} tfjsEncoding needs one code per value`);
  }
  const stored = encoding.dtype === 'uint8' ? new Uint8Array(codes.length) : new Uint16Array(codes.length);
  const limit = encoding.dtype === 'uint8' ? 0xff : 0xffff;
  const { min, scale } = encoding;
  const check = new Float32Array(1);
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    check[0] = code * scale + min;
    if (code > limit || check[0] !== dequantized[i]) {
      throw new Error(
        `weight ${name}: code ${code} at index ${i} does not decode to the dequantized value ${dequantized[i]}`,
      );
    }
    stored[i] = code;
  }
  return stored;
}

function halfCodes(name: string, replacement: WeightReplacement): Uint16Array {
  const { codes, dequantized } = replacement;
  if (codes === undefined || codes.length !== dequantized.length) {
    throw new Error(`weight ${name}: a float16 tfjsEncoding needs one code per value`);
  }
  const stored = new Uint16Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] > 0xffff || halfToFloat(codes[i]) !== dequantized[i]) {
      throw new Error(`weight ${name}: half ${codes[i]} at index ${i} is not the dequantized value ${dequantized[i]}`);
    }
    stored[i] = codes[i];
  }
  return stored;
}

/** round((v − min) / scale) for each value: the codes values decoded from a uint8/uint16 grid came from. */
function gridCodesOf(values: Float32Array, min: number, scale: number): Uint32Array {
  const codes = new Uint32Array(values.length);
  for (let i = 0; i < values.length; i++) codes[i] = Math.max(0, Math.round((values[i] - min) / scale));
  return codes;
}

function onGrid(
  values: Float32Array,
  codes: Uint32Array,
  encoding: { dtype: 'uint8' | 'uint16'; min: number; scale: number },
): boolean {
  const limit = encoding.dtype === 'uint8' ? 0xff : 0xffff;
  const check = new Float32Array(1);
  for (let i = 0; i < codes.length; i++) {
    check[0] = codes[i] * encoding.scale + encoding.min;
    if (codes[i] > limit || check[0] !== values[i]) return false;
  }
  return true;
}

/** Half patterns of `values` when every value is exactly a half, else undefined. */
function exactHalves(values: Float32Array): Uint16Array | undefined {
  const halves = encodeFloat16(values);
  for (let i = 0; i < values.length; i++) {
    if (halfToFloat(halves[i]) !== values[i]) return undefined;
  }
  return halves;
}

function floatEntry(entry: ManifestEntry, values: Float32Array): [ManifestEntry, Uint8Array] {
  const halves = exactHalves(values);
  if (halves === undefined) return [entry, bytesOf(values)];
  return [{ ...entry, quantization: { dtype: 'float16' } }, bytesOf(halves)];
}

/** A weight's manifest entry and shard bytes, `given` replacing its values when set. */
export function encodeWeight(weight: Weight, given: WeightReplacement | undefined): [ManifestEntry, Uint8Array] {
  // Read `dequantized` once: a caller may derive it on access (the PTQ pipeline decodes it from codes).
  const replacement = given && { ...given, dequantized: given.dequantized };
  const entry: ManifestEntry = { name: weight.name, shape: weight.shape, dtype: weight.dtype };
  if (replacement === undefined) {
    // A weight left as it arrived goes back in the same encoding: float16 as float16, and uint8/uint16
    // with the same min and scale, whose codes its values (decoded from them) give back exactly.
    const source = weight.sourceQuantization;
    if (weight.values instanceof Float32Array && source?.dtype === 'float16') return floatEntry(entry, weight.values);
    if (
      weight.values instanceof Float32Array &&
      source &&
      source.dtype !== 'float16' &&
      source.min !== undefined &&
      source.scale
    ) {
      const codes = gridCodesOf(weight.values, source.min, source.scale);
      const encoding = { dtype: source.dtype, min: source.min, scale: source.scale };
      // Values changed since they were read (trained, say) are off the grid: they go out as floats.
      if (!onGrid(weight.values, codes, encoding)) return floatEntry(entry, weight.values);
      const stored = gridCodes(weight.name, { dequantized: weight.values, codes }, encoding);
      return [{ ...entry, quantization: { ...encoding, original_dtype: 'float32' as const } }, bytesOf(stored)];
    }
    return [entry, bytesOf(weight.values)];
  }
  if (weight.dtype !== 'float32')
    throw new Error(`weight ${weight.name}: only float32 weights can be replaced, not ${weight.dtype}`);
  if (replacement.dequantized.length !== weight.values.length) {
    throw new Error(
      `weight ${weight.name}: replacement has ${replacement.dequantized.length} values, the weight ${weight.values.length}`,
    );
  }
  const encoding = replacement.tfjsEncoding;
  if (encoding === undefined) return floatEntry(entry, replacement.dequantized);
  if (encoding.dtype === 'float16') {
    return [{ ...entry, quantization: { dtype: 'float16' } }, bytesOf(halfCodes(weight.name, replacement))];
  }
  const stored = gridCodes(weight.name, replacement, encoding);
  const quantization = {
    dtype: encoding.dtype,
    min: encoding.min,
    scale: encoding.scale,
    original_dtype: 'float32' as const,
  };
  return [{ ...entry, quantization }, bytesOf(stored)];
}

/**
 * model.json + shards for `model` with `replacements` (weight name → quantized values) applied. Every
 * replaced value reads back from the files bit-exactly as `dequantized`.
 */
export function writeModel(
  model: LoadedModel,
  replacements: Map<string, WeightReplacement>,
  options: WriteOptions = {},
): FileSet {
  const shardSize = options.shardSizeBytes ?? DEFAULT_SHARD_SIZE_BYTES;
  if (!Number.isSafeInteger(shardSize) || shardSize <= 0) {
    throw new RangeError(`shardSizeBytes must be a positive integer, got ${shardSize}`);
  }
  const names = new Set(model.weights.map((w) => w.name));
  for (const name of replacements.keys()) {
    if (!names.has(name)) throw new Error(`replacement for ${name}, which is not a weight of the model`);
  }

  const entries: ManifestEntry[] = [];
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (const weight of model.weights) {
    const [entry, bytes] = encodeWeight(weight, replacements.get(weight.name));
    entries.push(entry);
    chunks.push(bytes);
    total += bytes.byteLength;
  }

  const shardCount = Math.ceil(total / shardSize);
  const paths = shardPaths(shardCount);
  const shards = paths.map((_, i) => new Uint8Array(Math.min(shardSize, total - i * shardSize)));
  let offset = 0;
  for (const chunk of chunks) {
    let written = 0;
    while (written < chunk.byteLength) {
      const shard = Math.floor(offset / shardSize);
      const at = offset - shard * shardSize;
      const take = Math.min(chunk.byteLength - written, shardSize - at);
      shards[shard].set(chunk.subarray(written, written + take), at);
      written += take;
      offset += take;
    }
  }

  const files: FileSet = new Map([['model.json', stockModelJson(model, paths, entries)]]);
  paths.forEach((shardPath, i) => files.set(shardPath, shards[i]));
  return files;
}

/** model.json of the written model: one weight group over `paths`, the source's other fields kept. */
export function stockModelJson(
  model: Pick<LoadedModel, 'format' | 'modelJson'>,
  paths: string[],
  entries: ManifestEntry[],
): Uint8Array {
  const stamp = `qaas ${packageVersion}`;
  const { generatedBy } = model.modelJson;
  const modelJson: Record<string, unknown> = {
    format: model.format,
    generatedBy: typeof generatedBy === 'string' ? generatedBy : stamp,
    convertedBy: stamp,
  };
  for (const [key, value] of Object.entries(model.modelJson)) {
    if (!(key in modelJson) && key !== 'weightsManifest') modelJson[key] = value;
  }
  modelJson.weightsManifest = [{ paths, weights: entries }];
  return new TextEncoder().encode(JSON.stringify(modelJson));
}

/** The converter's shard file names for `count` shards. */
export function shardPaths(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `group1-shard${i + 1}of${count}.bin`);
}

/**
 * The decoder that ships beside every packed artifact: reads `manifest.json` + `weights.bin`
 * (docs/packed-format.md) and expands them into TF.js ModelArtifacts in memory, every float weight as
 * float32, for `tf.loadLayersModel(tf.io.fromMemory(artifacts))` or `tf.loadGraphModel(...)`.
 *
 * A plain ES module for browsers and Node: no npm imports and no Node APIs, only its siblings bits.js and
 * decode-tensor.js (the same decodeTensor the engine computes `dequantized` with, so the decoded weights
 * equal the engine's bit for bit).
 */
import { unpackBits } from './bits.js';
import { decodeTensor, type DecodableEncoding } from './decode-tensor.js';
import type { PackedEncoding, PackedManifest, PackedQuantizedWeight, PackedWeight } from './manifest.js';

export const PACKED_FORMAT = 'qaas-packed';
export const PACKED_VERSION = 1;

/** A tfjs WeightsManifestEntry without quantization: the bytes in weightData are plain. */
export interface DecodedWeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32' | 'bool';
}

/** Structurally a tfjs `io.ModelArtifacts`; fields of model.json other than these are passed through. */
export interface PackedModelArtifacts {
  modelTopology: object;
  format: string;
  generatedBy?: string;
  convertedBy?: string | null;
  weightSpecs: DecodedWeightSpec[];
  /** Every weight in manifest order: float32/int32 as 4 bytes each, bool as 1 byte each. */
  weightData: ArrayBuffer;
  [field: string]: unknown;
}

/** The subset of `fetch` that loadPacked uses, so any fetch-like function can be passed in. */
export type FetchLike = (url: string) => Promise<{
  ok: boolean;
  status: number;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

function fail(why: string): never {
  throw new Error(`packed: ${why}`);
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `length` float32 values at `offset`: a view when aligned, else a copy (a Uint8Array may start anywhere). */
function floatsAt(bytes: Uint8Array, offset: number, length: number, name: string): Float32Array {
  if (offset % 4 !== 0 || offset < 0 || offset + length * 4 > bytes.length) {
    fail(`weight "${name}": ${length} float32 at byte ${offset} fall outside weights.bin or are unaligned`);
  }
  const start = bytes.byteOffset + offset;
  if (start % 4 === 0) return new Float32Array(bytes.buffer, start, length);
  const copy = new Float32Array(length);
  new Uint8Array(copy.buffer).set(bytes.subarray(offset, offset + length * 4));
  return copy;
}

/** Side information of a packed encoding read from weights.bin, in decodeTensor's shape. */
function decodableEncoding(encoding: PackedEncoding, bytes: Uint8Array, name: string): DecodableEncoding {
  switch (encoding.kind) {
    case 'affine':
      return {
        kind: 'affine',
        bits: encoding.bits,
        channels: encoding.channels,
        scales: floatsAt(bytes, encoding.scalesOffset, encoding.channels, name),
        mins: floatsAt(bytes, encoding.minsOffset, encoding.channels, name),
      };
    case 'codebook':
      return {
        kind: 'codebook',
        bits: encoding.bits,
        channels: encoding.channels,
        codebook: floatsAt(bytes, encoding.codebookOffset, encoding.channels * 2 ** encoding.bits, name),
      };
    case 'float16':
      return { kind: 'float16' };
    case 'pq': {
      const length = encoding.subspaces * 2 ** encoding.bits * encoding.subvectorLength;
      return {
        kind: 'pq',
        bits: encoding.bits,
        subvectorLength: encoding.subvectorLength,
        subspaces: encoding.subspaces,
        codebook: floatsAt(bytes, encoding.codebookOffset, length, name),
      };
    }
    default:
      return fail(`weight "${name}": unknown encoding kind "${(encoding as { kind: unknown }).kind}"`);
  }
}

/** ⌈R / d⌉ blocks × C columns of the [R, C] view (C = 1 for rank ≤ 1), whether codebooks are shared or not. */
function pqCodeCount(shape: readonly number[], subvectorLength: number): number {
  const columns = shape.length > 1 ? shape[shape.length - 1] : 1;
  return columns === 0 ? 0 : Math.ceil(sizeOf(shape) / columns / subvectorLength) * columns;
}

function decodeQuantized(weight: PackedQuantizedWeight, bytes: Uint8Array): Float32Array {
  const { name, shape, encoding, codesOffset, codesBytes, count } = weight;
  const expected = encoding.kind === 'pq' ? pqCodeCount(shape, encoding.subvectorLength) : sizeOf(shape);
  if (count !== expected) fail(`weight "${name}": ${count} codes, expected ${expected}`);
  if (codesOffset < 0 || codesOffset + codesBytes > bytes.length) {
    fail(`weight "${name}": codes at bytes ${codesOffset}..${codesOffset + codesBytes} fall outside weights.bin`);
  }
  const codes = unpackBits(bytes.subarray(codesOffset, codesOffset + codesBytes), encoding.bits, count);
  return decodeTensor(decodableEncoding(encoding, bytes, name), codes, shape);
}

function isQuantized(weight: PackedWeight): weight is PackedQuantizedWeight {
  return 'encoding' in weight;
}

/**
 * Expands a parsed manifest.json and the bytes of weights.bin into ModelArtifacts. Throws an Error naming
 * the weight when the manifest and the bytes disagree.
 */
export function decodePacked(manifest: object, weights: ArrayBuffer | Uint8Array): PackedModelArtifacts {
  const m = manifest as PackedManifest;
  if (m.format !== PACKED_FORMAT || m.version !== PACKED_VERSION) {
    fail(`manifest is not ${PACKED_FORMAT} version ${PACKED_VERSION} (format ${m.format}, version ${m.version})`);
  }
  if (!Array.isArray(m.weights) || typeof m.modelJson !== 'object' || m.modelJson === null) {
    fail('manifest lacks weights or modelJson');
  }
  // A plain Uint8Array view even when given a Node Buffer, whose slice() would not copy.
  const bytes =
    weights instanceof Uint8Array
      ? new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength)
      : new Uint8Array(weights);
  if (bytes.length !== m.weightsBytes) fail(`weights.bin has ${bytes.length} bytes, manifest says ${m.weightsBytes}`);

  let total = 0;
  for (const weight of m.weights) total += sizeOf(weight.shape) * (weight.dtype === 'bool' ? 1 : 4);
  const out = new Uint8Array(total);
  let at = 0;
  const weightSpecs: DecodedWeightSpec[] = [];
  for (const weight of m.weights) {
    const { name, shape, dtype } = weight;
    weightSpecs.push({ name, shape: [...shape], dtype });
    const byteLength = sizeOf(shape) * (dtype === 'bool' ? 1 : 4);
    if (isQuantized(weight)) {
      const values = decodeQuantized(weight, bytes);
      out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), at);
    } else {
      if (weight.byteLength !== byteLength || weight.offset < 0 || weight.offset + byteLength > bytes.length) {
        fail(
          `weight "${name}": raw ${dtype} [${shape}] needs ${byteLength} bytes at ${weight.offset} inside weights.bin`,
        );
      }
      out.set(bytes.subarray(weight.offset, weight.offset + byteLength), at);
    }
    at += byteLength;
  }

  const { modelTopology, ...rest } = m.modelJson;
  if (typeof modelTopology !== 'object' || modelTopology === null) fail('modelJson has no modelTopology');
  return { ...rest, modelTopology, format: m.modelFormat, weightSpecs, weightData: out.buffer };
}

/**
 * Fetches `manifest.json` and `weights.bin` from `baseUrl` (a directory URL; a trailing slash is added when
 * missing) and decodes them.
 */
export async function loadPacked(baseUrl: string, fetchImpl: FetchLike = fetch): Promise<PackedModelArtifacts> {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const get = async (file: string): Promise<ArrayBuffer> => {
    const response = await fetchImpl(base + file);
    if (!response.ok) fail(`GET ${base + file} answered ${response.status}`);
    return response.arrayBuffer();
  };
  const [manifestBytes, weightsBytes] = await Promise.all([get('manifest.json'), get('weights.bin')]);
  return decodePacked(JSON.parse(new TextDecoder().decode(manifestBytes)) as object, weightsBytes);
}

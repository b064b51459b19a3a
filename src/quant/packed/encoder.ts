/**
 * Writes the `packed/` artifact (docs/report.md): every quantized tensor's codes bit-packed at its encoding's
 * width plus its scales/codebooks as float32, the other tensors raw, and a manifest that says where each
 * lives. The byte layout is docs/packed-format.md; decoder.ts reads it back.
 *
 * weights.bin is two sections with no padding between or inside them: first every 4-byte item in weight
 * order (side information float32, raw float32/int32 tensors), then every byte-granular item in weight
 * order (bit-packed codes, raw bool tensors). So every float32 starts 4-byte aligned, each tensor's codes
 * start on a byte, and the file length is exactly Σ side info + Σ raw bytes + Σ ⌈count·bits/8⌉.
 */
import type { FileSet, ModelFormat, Weight } from '../model.js';
import type { Encoding, QuantizedTensor } from '../types.js';
import { packBits, packedByteLength } from './bits.js';
import { PACKED_FORMAT, PACKED_VERSION } from './decoder.js';
import type { PackedEncoding, PackedManifest, PackedWeight } from './manifest.js';

/** The compiled decoder modules (dist/src/quant/packed/) to copy beside manifest.json and weights.bin. */
export const PACKED_DECODER_FILES = ['decoder.js', 'decode-tensor.js', 'bits.js'] as const;

export const PACKED_MANIFEST_PATH = 'packed/manifest.json';
export const PACKED_WEIGHTS_PATH = 'packed/weights.bin';

export interface PackInput {
  format: ModelFormat;
  /** model.json without `weightsManifest`; a `weightsManifest` present anyway is dropped. */
  modelJson: Record<string, unknown>;
  weights: Weight[];
}

function asBytes(values: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function bitsOf(encoding: Encoding): number {
  return encoding.kind === 'float16' ? 16 : encoding.bits;
}

function sideInfoOf(encoding: Encoding): Float32Array[] {
  switch (encoding.kind) {
    case 'affine':
      return [encoding.scales, encoding.mins];
    case 'codebook':
    case 'pq':
      return [encoding.codebook];
    case 'float16':
      return [];
  }
}

/** Checks that codes and side information have the lengths the decode formulas index, naming the weight. */
function checkQuantized(weight: Weight, tensor: QuantizedTensor): void {
  const fail = (why: string): never => {
    throw new Error(`packed: weight "${weight.name}": ${why}`);
  };
  if (weight.dtype !== 'float32') fail(`only float32 weights can be quantized, not ${weight.dtype}`);
  const { encoding } = tensor;
  const bits = bitsOf(encoding);
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) fail(`bit width ${bits} is outside 1..16`);
  const size = weight.shape.reduce((a, b) => a * b, 1);
  const columns = weight.shape.length > 0 ? weight.shape[weight.shape.length - 1] : 1;
  const levels = 2 ** bits;
  let codeCount = size;
  switch (encoding.kind) {
    case 'affine':
    case 'codebook': {
      const { channels } = encoding;
      if (!isTrailingAxesProduct(weight.shape, channels)) {
        fail(`channels ${channels} is neither 1 nor the product of the last axes of [${weight.shape}]`);
      }
      const expected = encoding.kind === 'affine' ? channels : channels * levels;
      for (const side of sideInfoOf(encoding)) {
        if (side.length !== expected)
          fail(`${encoding.kind} side information has ${side.length} values, expected ${expected}`);
      }
      break;
    }
    case 'pq': {
      const { subvectorLength, subspaces } = encoding;
      // pq views rank ≤ 1 as one column (decodeTensor).
      const pqColumns = weight.shape.length > 1 ? columns : 1;
      const rows = pqColumns === 0 ? 0 : size / pqColumns;
      const blocks = Math.ceil(rows / subvectorLength);
      if (subspaces !== blocks && subspaces !== 1) {
        fail(`pq subspaces ${subspaces} is neither 1 (shared) nor ⌈${rows} rows / ${subvectorLength}⌉`);
      }
      const expected = subspaces * levels * subvectorLength;
      if (encoding.codebook.length !== expected)
        fail(`pq codebook has ${encoding.codebook.length} values, expected ${expected}`);
      codeCount = blocks * pqColumns;
      break;
    }
    case 'float16':
      break;
  }
  if (tensor.codes.length !== codeCount) fail(`${tensor.codes.length} codes, expected ${codeCount}`);
}

/**
 * Builds `packed/manifest.json` and `packed/weights.bin` for a model whose tensors in `quantized` (keyed by
 * weight name) are replaced by their codes; all other weights are stored raw.
 */
export function packModel(input: PackInput, quantized: Map<string, QuantizedTensor>): FileSet {
  const byName = new Set(input.weights.map((w) => w.name));
  for (const name of quantized.keys()) {
    if (!byName.has(name)) throw new Error(`packed: quantized tensor "${name}" is not a weight of the model`);
  }

  // First pass: sizes of both sections, so offsets are known before anything is written.
  let wordBytes = 0;
  let byteBytes = 0;
  for (const weight of input.weights) {
    const size = weight.shape.reduce((a, b) => a * b, 1);
    if (weight.values.length !== size) {
      throw new Error(`packed: weight "${weight.name}" has ${weight.values.length} values for shape [${weight.shape}]`);
    }
    const tensor = quantized.get(weight.name);
    if (tensor) {
      checkQuantized(weight, tensor);
      for (const side of sideInfoOf(tensor.encoding)) wordBytes += side.length * 4;
      byteBytes += packedByteLength(tensor.codes.length, bitsOf(tensor.encoding));
    } else if (weight.values instanceof Uint8Array) {
      byteBytes += weight.values.byteLength;
    } else {
      wordBytes += weight.values.byteLength;
    }
  }

  const bin = new Uint8Array(wordBytes + byteBytes);
  let wordAt = 0;
  let byteAt = wordBytes;
  // Offsets stay multiples of 4 in the word section because every item there is a multiple of 4 bytes.
  const putWords = (values: Float32Array | Int32Array): number => {
    const offset = wordAt;
    bin.set(asBytes(values), offset);
    wordAt += values.byteLength;
    return offset;
  };
  const putBytes = (bytes: Uint8Array): number => {
    const offset = byteAt;
    bin.set(bytes, offset);
    byteAt += bytes.byteLength;
    return offset;
  };

  const entries: PackedWeight[] = input.weights.map((weight) => {
    const base = { name: weight.name, shape: [...weight.shape], dtype: weight.dtype };
    const tensor = quantized.get(weight.name);
    if (!tensor) {
      const { values } = weight;
      const offset = values instanceof Uint8Array ? putBytes(values) : putWords(values);
      return { ...base, offset, byteLength: values.byteLength };
    }
    const packedEncoding = packedEncodingOf(tensor.encoding, putWords);
    const codes = packBits(tensor.codes, packedEncoding.bits);
    return {
      ...base,
      dtype: 'float32',
      encoding: packedEncoding,
      codesOffset: putBytes(codes),
      codesBytes: codes.byteLength,
      count: tensor.codes.length,
    };
  });

  const modelJson = { ...input.modelJson };
  delete modelJson.weightsManifest;
  const manifest: PackedManifest = {
    format: PACKED_FORMAT,
    version: PACKED_VERSION,
    modelFormat: input.format,
    modelJson,
    weightsBytes: bin.byteLength,
    weights: entries,
  };
  return new Map([
    [PACKED_MANIFEST_PATH, new TextEncoder().encode(JSON.stringify(manifest))],
    [PACKED_WEIGHTS_PATH, bin],
  ]);
}

/**
 * Channels run over the last axis, or over the last axes taken together: a depthwise kernel
 * [h, w, in, multiplier] has in × multiplier output channels, contiguous in row-major order.
 */
function isTrailingAxesProduct(shape: readonly number[], channels: number): boolean {
  let product = 1;
  for (let axis = shape.length - 1; axis >= 0 && product < channels; axis--) product *= shape[axis];
  return channels === 1 || product === channels;
}

/**
 * A tensor's encoding as the packed manifest records it: its side information (scales and minimums, or a
 * codebook) laid out by `putWords`, which returns each array's offset in the word section.
 */
export function packedEncodingOf(encoding: Encoding, putWords: (values: Float32Array) => number): PackedEncoding {
  switch (encoding.kind) {
    case 'affine':
      return {
        kind: 'affine',
        bits: encoding.bits,
        channels: encoding.channels,
        scalesOffset: putWords(encoding.scales),
        minsOffset: putWords(encoding.mins),
      };
    case 'codebook':
      return {
        kind: 'codebook',
        bits: encoding.bits,
        channels: encoding.channels,
        codebookOffset: putWords(encoding.codebook),
      };
    case 'float16':
      return { kind: 'float16', bits: 16 };
    case 'pq':
      return {
        kind: 'pq',
        bits: encoding.bits,
        subvectorLength: encoding.subvectorLength,
        subspaces: encoding.subspaces,
        codebookOffset: putWords(encoding.codebook),
      };
  }
}

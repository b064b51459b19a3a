/**
 * NumPy `.npy` arrays (format versions 1–3): magic `\x93NUMPY`, version, header length (2 bytes in v1, 4 in
 * v2/v3), then a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (n, d), }` padded
 * with spaces, then the data. The header is parsed from a prefix of the file plus the file's total size, so
 * a dataset is validated without reading its data; data is decoded a slice at a time (`decodeNpyValues`).
 *
 * Supported: bool, int8–int64, uint8–uint64, float16/32/64, little (`<`) or big (`>`) endian, `|` for
 * one-byte types; C order only (Fortran order would put a sample's values far apart in the file).
 */
import { DatasetError } from './errors.js';
import { open, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { halfToFloat } from '../../quant/packed/decode-tensor.js';

export type NpyDtype =
  | 'bool'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'float16'
  | 'float32'
  | 'float64';

/** Type code + item size (the descr without its byte-order character) → dtype. */
const dtypeOfCode: Record<string, NpyDtype> = {
  b1: 'bool',
  i1: 'int8',
  i2: 'int16',
  i4: 'int32',
  i8: 'int64',
  u1: 'uint8',
  u2: 'uint16',
  u4: 'uint32',
  u8: 'uint64',
  f2: 'float16',
  f4: 'float32',
  f8: 'float64',
};

export const npyDescrs = Object.keys(dtypeOfCode).flatMap((code) =>
  code.endsWith('1') ? [`|${code}`, `<${code}`, `>${code}`] : [`<${code}`, `>${code}`],
);

/** Decoded values of one slice, in the array's own element type (float16 already widened to float32). */
export type NumericArray =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array;

export interface NpyHeader {
  /** As written in the file, e.g. `<f4`, `>i8`, `|u1`. */
  descr: string;
  dtype: NpyDtype;
  littleEndian: boolean;
  itemBytes: number;
  shape: number[];
  /** Byte offset of the first element. */
  dataOffset: number;
}

export class NpyError extends DatasetError {
  override name = 'NpyError';
}

const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
/** numpy itself refuses headers over 10 000 bytes unless told otherwise; this leaves room and stops abuse. */
const maxHeaderBytes = 1 << 20;
const hostLittleEndian = endianness() === 'LE';

/**
 * Bytes from the start of the file to the first element, read from the first 12 bytes (10 for v1):
 * how long a prefix `parseNpyHeader` needs.
 */
export function npyHeaderLength(prefix: Uint8Array): number {
  if (prefix.length < 10 || magic.some((b, i) => prefix[i] !== b)) throw new NpyError('not a .npy file (bad magic)');
  const major = prefix[6];
  if (major < 1 || major > 3) throw new NpyError(`unsupported .npy version ${major}`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  if (major === 1) return 10 + view.getUint16(8, true);
  if (prefix.length < 12) throw new NpyError('.npy header is truncated');
  const length = view.getUint32(8, true);
  if (length > maxHeaderBytes)
    throw new NpyError(`.npy header of ${length} bytes is over the ${maxHeaderBytes}-byte limit`);
  return 12 + length;
}

/**
 * Parses the header from `prefix` (at least `npyHeaderLength(prefix)` bytes of the file) and checks that
 * `fileSize` (default: the prefix is the whole file) holds exactly the data the shape needs.
 */
export function parseNpyHeader(prefix: Uint8Array, fileSize = prefix.length): NpyHeader {
  const dataOffset = npyHeaderLength(prefix);
  if (dataOffset > prefix.length) throw new NpyError('.npy header is truncated');
  const start = prefix[6] === 1 ? 10 : 12;
  const header = new TextDecoder(prefix[6] === 3 ? 'utf-8' : 'latin1').decode(prefix.subarray(start, dataOffset));
  if (/['"]descr['"]\s*:\s*\[/.test(header)) throw new NpyError('structured (record) .npy dtypes are not supported');
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]+)['"]/.exec(header)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyError('.npy header lacks descr, fortran_order or shape');
  }
  const dtype = npyDescrs.includes(descr) ? dtypeOfCode[descr.slice(1)] : undefined;
  if (dtype === undefined)
    throw new NpyError(
      `unsupported .npy dtype ${descr}; allowed: ${Object.keys(dtypeOfCode).join(', ')} after a byte order < or > (| for one-byte types)`,
    );
  if (fortran === 'True') {
    throw new NpyError('Fortran-ordered .npy arrays are not supported; save in C order (np.ascontiguousarray(a))');
  }
  const shape = shapeText
    .split(',')
    .map((s) => s.trim().replace(/L$/, ''))
    .filter((s) => s.length > 0)
    .map(Number);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new NpyError(`bad .npy shape (${shapeText})`);
  const itemBytes = Number(descr.slice(2));
  const expected = shape.reduce((a, b) => a * b, 1) * itemBytes;
  if (!Number.isSafeInteger(expected)) throw new NpyError(`.npy shape (${shape.join(', ')}) is too large`);
  if (fileSize - dataOffset !== expected) {
    throw new NpyError(
      `.npy data holds ${fileSize - dataOffset} bytes, shape (${shape.join(', ')}) of ${descr} needs ${expected}`,
    );
  }
  return { descr, dtype, littleEndian: descr[0] !== '>', itemBytes, shape, dataOffset };
}

/** Reads exactly `bytes.length` bytes at `position` (FileHandle.read may return fewer). */
export async function readFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesRead } = await handle.read(bytes, done, bytes.length - done, position + done);
    if (bytesRead === 0) throw new NpyError(`file ends at byte ${position + done}, ${bytes.length - done} bytes short`);
    done += bytesRead;
  }
}

/** The header of a .npy file on disk, reading only its first bytes. */
export async function readNpyHeader(file: string | FileHandle): Promise<NpyHeader> {
  const handle = typeof file === 'string' ? await open(file, 'r') : file;
  try {
    const size = (await handle.stat()).size;
    let prefix = new Uint8Array(Math.min(size, 4096));
    await readFully(handle, prefix, 0);
    const needed = npyHeaderLength(prefix);
    if (needed > prefix.length && needed <= size) {
      prefix = new Uint8Array(needed);
      await readFully(handle, prefix, 0);
    }
    return parseNpyHeader(prefix, size);
  } finally {
    if (typeof file === 'string') await handle.close();
  }
}

/** Elements per sample: the product of every dimension after the first (1 for a vector of scalars). */
export function sampleSize(shape: number[]): number {
  return shape.slice(1).reduce((a, b) => a * b, 1);
}

/** Reverses the byte order of every `itemBytes`-wide element in place. */
function swapBytes(bytes: Uint8Array, itemBytes: number): void {
  const half = itemBytes >> 1;
  for (let at = 0; at < bytes.length; at += itemBytes) {
    for (let i = 0, j = at + itemBytes - 1; i < half; i++, j--) {
      const k = at + i;
      const t = bytes[k];
      bytes[k] = bytes[j];
      bytes[j] = t;
    }
  }
}

/**
 * The elements of `bytes` (whole elements of `header`'s dtype) as a typed array of that dtype. Big-endian
 * data is byte-swapped in place, so `bytes` must be a scratch buffer the caller does not reuse.
 */
export function decodeNpyValues(
  bytes: Uint8Array,
  header: Pick<NpyHeader, 'dtype' | 'littleEndian' | 'itemBytes'>,
): NumericArray {
  const { itemBytes } = header;
  if (bytes.length % itemBytes !== 0)
    throw new NpyError(`${bytes.length} bytes are not whole ${header.dtype} elements`);
  if (itemBytes > 1 && header.littleEndian !== hostLittleEndian) swapBytes(bytes, itemBytes);
  // Typed views need an aligned offset; fresh buffers are, slices of stream chunks may not be.
  const aligned = bytes.byteOffset % itemBytes === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset } = aligned;
  const n = bytes.length / itemBytes;
  switch (header.dtype) {
    case 'bool':
    case 'uint8':
      return new Uint8Array(buffer, byteOffset, n);
    case 'int8':
      return new Int8Array(buffer, byteOffset, n);
    case 'int16':
      return new Int16Array(buffer, byteOffset, n);
    case 'uint16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'int32':
      return new Int32Array(buffer, byteOffset, n);
    case 'uint32':
      return new Uint32Array(buffer, byteOffset, n);
    case 'int64':
      return new BigInt64Array(buffer, byteOffset, n);
    case 'uint64':
      return new BigUint64Array(buffer, byteOffset, n);
    case 'float16': {
      const halves = new Uint16Array(buffer, byteOffset, n);
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) values[i] = halfToFloat(halves[i]);
      return values;
    }
    case 'float32':
      return new Float32Array(buffer, byteOffset, n);
    case 'float64':
      return new Float64Array(buffer, byteOffset, n);
  }
}

/** Shape of a rectangular nested array of finite numbers; throws naming the first irregular path. */
export function nestedShape(value: unknown, path = ''): number[] {
  return shapeOf(value, path, 0);
}

/** NumPy's own bound on dimensions; it also keeps the recursion of shapeOf shallow. */
const MAX_DIMENSIONS = 32;

function shapeOf(value: unknown, path: string, depth: number): number[] {
  if (depth > MAX_DIMENSIONS) {
    throw new NpyError(
      `${path || '/'}: arrays nested deeper than ${MAX_DIMENSIONS} levels (at most ${MAX_DIMENSIONS} dimensions)`,
    );
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new NpyError(`${path || '/'}: ${value} is not a finite number`);
    return [];
  }
  if (!Array.isArray(value) || value.length === 0)
    throw new NpyError(`${path || '/'}: expected a non-empty array or a number`);
  const first = shapeOf(value[0], `${path}/0`, depth + 1);
  for (let i = 1; i < value.length; i++) {
    const shape = shapeOf(value[i], `${path}/${i}`, depth + 1);
    if (shape.length !== first.length || shape.some((d, k) => d !== first[k])) {
      throw new NpyError(
        `${path}/${i}: shape [${shape.join(', ')}] differs from [${first.join(', ')}] of its siblings`,
      );
    }
  }
  return [value.length, ...first];
}

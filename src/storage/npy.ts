/**
 * NumPy `.npy` headers (format versions 1–3): magic `\x93NUMPY`, version, header length (2 bytes in v1,
 * 4 in v2/v3), then a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (n, d), }`.
 * Only what datasets need: little-endian or byte-order-free numeric dtypes in C order, and the data length
 * checked against the shape.
 */

export const npyItemBytes: Record<string, number> = {
  '<f4': 4, '<f8': 8, '<f2': 2, '<i1': 1, '|i1': 1, '<u1': 1, '|u1': 1, '<i2': 2, '<u2': 2, '<i4': 4,
  '<u4': 4, '<i8': 8, '<u8': 8, '|b1': 1,
};

export interface NpyHeader {
  dtype: string;
  shape: number[];
  dataOffset: number;
}

export class NpyError extends Error {
  override readonly name = 'NpyError';
}

export function parseNpyHeader(bytes: Uint8Array): NpyHeader {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new NpyError('not a .npy file (bad magic)');
  const major = bytes[6];
  if (major < 1 || major > 3) throw new NpyError(`unsupported .npy version ${major}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (start + headerLength > bytes.length) throw new NpyError('.npy header is truncated');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyError('.npy header lacks descr, fortran_order or shape');
  }
  if (!(descr in npyItemBytes)) {
    throw new NpyError(`unsupported .npy dtype ${descr}; allowed: ${Object.keys(npyItemBytes).join(', ')}`);
  }
  if (fortran === 'True') throw new NpyError('Fortran-ordered .npy arrays are not supported; save with C order');
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new NpyError(`bad .npy shape (${shapeText})`);
  const dataOffset = start + headerLength;
  const expected = shape.reduce((a, b) => a * b, 1) * npyItemBytes[descr];
  if (bytes.length - dataOffset !== expected) {
    throw new NpyError(`.npy data holds ${bytes.length - dataOffset} bytes, shape (${shape.join(', ')}) of ${descr} needs ${expected}`);
  }
  return { dtype: descr, shape, dataOffset };
}

/** Shape of a rectangular nested array of finite numbers; throws naming the first irregular path. */
export function nestedShape(value: unknown, path = ''): number[] {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new NpyError(`${path || '/'}: ${value} is not a finite number`);
    return [];
  }
  if (!Array.isArray(value) || value.length === 0) throw new NpyError(`${path || '/'}: expected a non-empty array or a number`);
  const first = nestedShape(value[0], `${path}/0`);
  for (let i = 1; i < value.length; i++) {
    const shape = nestedShape(value[i], `${path}/${i}`);
    if (shape.length !== first.length || shape.some((d, k) => d !== first[k])) {
      throw new NpyError(`${path}/${i}: shape [${shape.join(', ')}] differs from [${first.join(', ')}] of its siblings`);
    }
  }
  return [value.length, ...first];
}

/** Writes .npy files (and their element bytes) for tests, as numpy would. */
import { floatToHalf } from '../../../src/quant/float16.js';

export interface NpyOptions {
  version?: 1 | 2 | 3;
  fortran?: boolean;
}

/** A .npy file: header padded with spaces so the data starts on a 64-byte boundary. */
export function npy(descr: string, shape: number[], data: Uint8Array, options: NpyOptions = {}): Uint8Array {
  const version = options.version ?? 1;
  const lengthBytes = version === 1 ? 2 : 4;
  const dict = `{'descr': '${descr}', 'fortran_order': ${options.fortran ? 'True' : 'False'}, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const unpadded = 8 + lengthBytes + dict.length + 1;
  const header = dict + ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const prefix = 8 + lengthBytes;
  const out = new Uint8Array(prefix + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), prefix);
  out.set(data, prefix + header.length);
  return out;
}

/** `values` as the elements of `descr` (byte order from its first character). */
export function elements(descr: string, values: readonly (number | bigint)[]): Uint8Array {
  const size = Number(descr.slice(2));
  const little = descr[0] !== '>';
  const view = new DataView(new ArrayBuffer(values.length * size));
  values.forEach((value, i) => {
    const at = i * size;
    const n = Number(value);
    switch (descr.slice(1)) {
      case 'b1':
      case 'u1':
        return view.setUint8(at, n);
      case 'i1':
        return view.setInt8(at, n);
      case 'i2':
        return view.setInt16(at, n, little);
      case 'u2':
        return view.setUint16(at, n, little);
      case 'i4':
        return view.setInt32(at, n, little);
      case 'u4':
        return view.setUint32(at, n, little);
      case 'i8':
        return view.setBigInt64(at, BigInt(value), little);
      case 'u8':
        return view.setBigUint64(at, BigInt(value), little);
      case 'f2':
        return view.setUint16(at, floatToHalf(n), little);
      case 'f4':
        return view.setFloat32(at, n, little);
      case 'f8':
        return view.setFloat64(at, n, little);
      default:
        throw new Error(`no encoder for ${descr}`);
    }
  });
  return new Uint8Array(view.buffer);
}

/** A .npy file holding `values` as `descr`. */
export function npyOf(
  descr: string,
  shape: number[],
  values: readonly (number | bigint)[],
  options: NpyOptions = {},
): Uint8Array {
  return npy(descr, shape, elements(descr, values), options);
}

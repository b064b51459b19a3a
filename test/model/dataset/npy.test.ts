import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeNpyValues,
  nestedShape,
  npyHeaderLength,
  parseNpyHeader,
  readNpyHeader,
} from '../../../src/model/dataset/npy.js';
import { npy, npyOf } from './npy-fixture.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-npy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Values every dtype can hold exactly, with its extremes. */
const cases: [string, number[]][] = [
  ['b1', [0, 1, 1, 0]],
  ['i1', [-128, -1, 0, 127]],
  ['u1', [0, 1, 200, 255]],
  ['i2', [-32768, -300, 7, 32767]],
  ['u2', [0, 1, 40000, 65535]],
  ['i4', [-2147483648, -5, 70000, 2147483647]],
  ['u4', [0, 3, 3000000000, 4294967295]],
  ['i8', [-(2 ** 53) + 1, -9, 12, 2 ** 40]],
  ['u8', [0, 9, 2 ** 33, 2 ** 53 - 1]],
  ['f2', [-2, 0.5, 1024, 65504]],
  ['f4', [-1.5, 0.1, 3.4028234663852886e38, 1e-30]],
  ['f8', [-1.5, 0.1, 1e300, 5e-324]],
];

describe('parseNpyHeader', () => {
  it('reads descr, dtype, byte order, shape and data offset', () => {
    const file = npy('<f4', [2, 3], new Uint8Array(24));
    expect(parseNpyHeader(file)).toEqual({
      descr: '<f4',
      dtype: 'float32',
      littleEndian: true,
      itemBytes: 4,
      shape: [2, 3],
      dataOffset: 128,
    });
    expect(parseNpyHeader(npy('>i8', [5], new Uint8Array(40)))).toMatchObject({
      dtype: 'int64',
      littleEndian: false,
      shape: [5],
    });
    expect(parseNpyHeader(npy('|u1', [], new Uint8Array(1))).shape).toEqual([]);
  });

  it('parses from a prefix of the file plus its size, in versions 1, 2 and 3', () => {
    for (const version of [1, 2, 3] as const) {
      const file = npy('<f8', [1000, 3], new Uint8Array(24000), { version });
      const needed = npyHeaderLength(file.subarray(0, 12));
      expect(needed % 64).toBe(0);
      const header = parseNpyHeader(file.subarray(0, needed), file.length);
      expect(header).toMatchObject({ dtype: 'float64', shape: [1000, 3], dataOffset: needed });
      expect(() => parseNpyHeader(file.subarray(0, needed - 1), file.length)).toThrow('header is truncated');
    }
  });

  it('rejects data that does not match the shape, unknown dtypes, Fortran order and bad magic', () => {
    expect(() => parseNpyHeader(npy('<f4', [2, 3], new Uint8Array(20)))).toThrow(
      'holds 20 bytes, shape (2, 3) of <f4 needs 24',
    );
    expect(() => parseNpyHeader(npy('<c8', [1], new Uint8Array(8)))).toThrow(
      'unsupported .npy dtype <c8; allowed: b1, i1, i2, i4, i8, u1',
    );
    expect(() => parseNpyHeader(npy('|f4', [1], new Uint8Array(4)))).toThrow('unsupported .npy dtype |f4');
    expect(() => parseNpyHeader(npy('<f4', [2, 2], new Uint8Array(16), { fortran: true }))).toThrow(
      'Fortran-ordered .npy arrays are not supported; save in C order',
    );
    expect(() => parseNpyHeader(new Uint8Array(20))).toThrow('bad magic');
    const future = npy('<f4', [1], new Uint8Array(4));
    future[6] = 4;
    expect(() => parseNpyHeader(future)).toThrow('unsupported .npy version 4');
  });
});

describe('decodeNpyValues', () => {
  for (const [code, values] of cases) {
    for (const order of code.endsWith('1') ? ['|', '<', '>'] : ['<', '>']) {
      it(`round-trips ${order}${code}`, () => {
        const descr = `${order}${code}`;
        const file = npyOf(descr, [2, 2], values);
        const header = parseNpyHeader(file);
        const decoded = decodeNpyValues(file.slice(header.dataOffset), header);
        const expected = code === 'f4' ? values.map(Math.fround) : values;
        expect(Array.from(decoded as ArrayLike<number | bigint>, Number)).toEqual(expected);
      });
    }
  }

  it('copies a slice that is not aligned to its element size', () => {
    const bytes = new Uint8Array(9);
    new DataView(bytes.buffer).setFloat64(1, -2.25, true);
    const values = decodeNpyValues(bytes.subarray(1), { dtype: 'float64', littleEndian: true, itemBytes: 8 });
    expect(values).toEqual(new Float64Array([-2.25]));
  });
});

describe('readNpyHeader', () => {
  it('reads only the header of a large file on disk', async () => {
    // A sparse 1 GiB file: only the header's bytes exist on disk.
    const path = join(dir, 'large.npy');
    const header = npy('<f4', [262144, 1024], new Uint8Array(0));
    await writeFile(path, header);
    const handle = await open(path, 'r+');
    await handle.truncate(header.length + 262144 * 1024 * 4);
    await handle.close();
    const started = performance.now();
    expect(await readNpyHeader(path)).toMatchObject({ dtype: 'float32', shape: [262144, 1024], dataOffset: 128 });
    expect(performance.now() - started).toBeLessThan(200);
  });

  it('reads headers longer than its first read', async () => {
    const path = join(dir, 'long-header.npy');
    const long = npy('<i4', [1], new Uint8Array(4), { version: 2 });
    // Pad the dict with spaces to 8 KiB, as a writer with extra metadata might.
    const text = new TextDecoder('latin1').decode(long.subarray(12, long.length - 4));
    const padded = `${text.trimEnd()}${' '.repeat(8192 - 12 - text.trimEnd().length - 1)}\n`;
    const file = new Uint8Array(8192 + 4);
    file.set(long.subarray(0, 8));
    new DataView(file.buffer).setUint32(8, padded.length, true);
    file.set(new TextEncoder().encode(padded), 12);
    file.set([7, 0, 0, 0], 8192);
    await writeFile(path, file);
    expect(await readNpyHeader(path)).toMatchObject({ dtype: 'int32', shape: [1], dataOffset: 8192 });
  });
});

describe('nestedShape', () => {
  it('measures rectangular arrays and names the first ragged path', () => {
    expect(
      nestedShape([
        [1, 2],
        [3, 4],
        [5, 6],
      ]),
    ).toEqual([3, 2]);
    expect(() => nestedShape([[1, 2], [3]], '/x')).toThrow('/x/1: shape [1] differs from [2]');
    expect(() => nestedShape([[1, Number.NaN]], '/x')).toThrow('/x/0/1');
  });
});

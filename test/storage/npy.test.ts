import { describe, expect, it } from 'vitest';
import { nestedShape, parseNpyHeader } from '../../src/storage/npy.js';
import { npy } from './npy-fixture.js';

describe('parseNpyHeader', () => {
  it('reads dtype, shape and data offset', () => {
    const file = npy('<f4', [2, 3], new Uint8Array(24));
    expect(parseNpyHeader(file)).toEqual({ dtype: '<f4', shape: [2, 3], dataOffset: 128 });
    expect(parseNpyHeader(npy('<i8', [5], new Uint8Array(40))).shape).toEqual([5]);
  });

  it('rejects data that does not match the shape, unknown dtypes and Fortran order', () => {
    expect(() => parseNpyHeader(npy('<f4', [2, 3], new Uint8Array(20)))).toThrow('needs 24');
    expect(() => parseNpyHeader(npy('<c8', [1], new Uint8Array(8)))).toThrow('allowed: <f4');
    const fortran = npy('<f4', [1], new Uint8Array(4));
    const text = new TextDecoder().decode(fortran).replace('False', 'True ');
    expect(() => parseNpyHeader(new TextEncoder().encode(text).slice(0, fortran.length))).toThrow();
    expect(() => parseNpyHeader(new Uint8Array(20))).toThrow('bad magic');
  });
});

describe('nestedShape', () => {
  it('measures rectangular arrays and names the first ragged path', () => {
    expect(nestedShape([[1, 2], [3, 4], [5, 6]])).toEqual([3, 2]);
    expect(() => nestedShape([[1, 2], [3]], '/x')).toThrow('/x/1: shape [1] differs from [2]');
    expect(() => nestedShape([[1, Number.NaN]], '/x')).toThrow('/x/0/1');
  });
});

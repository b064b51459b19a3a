/**
 * Hand-made quantized tensors for the packed-format tests: codes + encoding drawn at random, `dequantized`
 * computed with decodeTensor, exactly as the methods promise (the real methods are tested on their own).
 */
import type { Weight } from '../../../src/model/types.js';
import { decodeTensor } from '../../../src/quant/packed/decode-tensor.js';
import { createRng, type Rng } from '../../../src/quant/rng.js';
import type { Encoding, QuantizedTensor } from '../../../src/quant/types.js';

export function randomFloats(rng: Rng, n: number): Float32Array {
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = rng.next() * 2 - 1;
  return values;
}

export function quantizedTensor(encoding: Encoding, shape: number[], rng: Rng): QuantizedTensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const columns = shape.length > 0 ? shape[shape.length - 1] : 1;
  const count = encoding.kind === 'pq' ? Math.ceil(size / columns / encoding.subvectorLength) * columns : size;
  const bits = encoding.kind === 'float16' ? 16 : encoding.bits;
  const codes = new Uint16Array(count);
  for (let i = 0; i < count; i++) codes[i] = rng.int(2 ** bits);
  if (encoding.kind === 'float16') {
    // Keep to finite halves (exponent < 31) so bit-for-bit comparisons are not about NaN payloads.
    for (let i = 0; i < count; i++) codes[i] &= 0xbfff;
  }
  const dequantized = decodeTensor(encoding, codes, shape);
  return { codes, encoding, dequantized, bitsPerWeight: bits };
}

export interface MixedModel {
  weights: Weight[];
  quantized: Map<string, QuantizedTensor>;
}

/** One weight per encoding kind and bit width the tests care about, plus raw float32, int32 and bool. */
export function mixedModel(seed = 7): MixedModel {
  const rng = createRng(seed);
  const quantized = new Map<string, QuantizedTensor>();
  const weights: Weight[] = [];
  const add = (name: string, shape: number[], encoding?: Encoding): void => {
    const size = shape.reduce((a, b) => a * b, 1);
    // For quantized weights these are the float values before quantization, which the packed form replaces.
    weights.push({ name, shape, dtype: 'float32', values: randomFloats(rng, size) });
    if (encoding) quantized.set(name, quantizedTensor(encoding, shape, rng));
  };
  add('affine_pc/kernel', [5, 6], {
    kind: 'affine',
    bits: 4,
    channels: 6,
    scales: randomFloats(rng, 6),
    mins: randomFloats(rng, 6),
  });
  add('affine_pt/kernel', [7], {
    kind: 'affine',
    bits: 3,
    channels: 1,
    scales: randomFloats(rng, 1),
    mins: randomFloats(rng, 1),
  });
  add('binary/kernel', [9, 3], { kind: 'codebook', bits: 1, channels: 3, codebook: randomFloats(rng, 3 * 2) });
  add('ternary/kernel', [4, 5], { kind: 'codebook', bits: 2, channels: 1, codebook: randomFloats(rng, 4) });
  add('kmeans/kernel', [11], { kind: 'codebook', bits: 3, channels: 1, codebook: randomFloats(rng, 8) });
  add('half/kernel', [3, 5], { kind: 'float16' });
  // 7 rows in sub-vectors of 3: the last sub-space holds one row.
  add('pq/kernel', [7, 4], {
    kind: 'pq',
    bits: 2,
    subvectorLength: 3,
    subspaces: 3,
    codebook: randomFloats(rng, 3 * 4 * 3),
  });
  add('dense/bias', [6]);
  weights.push({ name: 'step', shape: [3], dtype: 'int32', values: Int32Array.from([1, -2, 2 ** 31 - 1]) });
  weights.push({ name: 'mask', shape: [5], dtype: 'bool', values: Uint8Array.from([1, 0, 0, 1, 1]) });
  return { weights, quantized };
}

/**
 * IEEE 754 half precision (binary16): each weight rounded to the nearest half, ties to even, with finite
 * values beyond ±65504 saturating (see ../float16.ts). Guo 2018 §3 lists reduced-precision floating point as
 * the simplest post-training quantization; tfjs stores it natively (manifest quantization dtype 'float16').
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { encodeFloat16 } from '../float16.js';
import { decodeTensor } from '../packed/decode-tensor.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';

export const Float16Params = Type.Object(
  { name: Type.Literal('float16', { default: 'float16' }) },
  { additionalProperties: false },
);
export type Float16Params = Static<typeof Float16Params>;

export const float16: QuantMethod<typeof Float16Params> = {
  name: 'float16',
  summary: 'IEEE half precision, stored natively by tfjs (16 bits per weight)',
  params: Float16Params,
  quantize(weights: Float32Array, shape: readonly number[]): QuantizedTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (weights.length !== size) throw new Error(`float16: ${weights.length} values for shape [${shape.join(', ')}]`);
    const codes = encodeFloat16(weights);
    const encoding = { kind: 'float16' } as const;
    return {
      dequantized: decodeTensor(encoding, codes, shape),
      codes,
      encoding,
      bitsPerWeight: 16,
      tfjsEncoding: { dtype: 'float16' },
    };
  },
};

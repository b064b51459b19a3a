/**
 * float32/float64 → IEEE 754 binary16 bit patterns, rounding to nearest with ties to even, subnormals
 * exact. The reverse direction is the decoder's table (`halfToFloat`), re-exported so the engine and the
 * shipped decoder read halves with the same code.
 *
 * One deliberate departure from IEEE: finite values beyond ±65504 saturate to ±65504 instead of rounding
 * to ±Infinity. A weight is a parameter, not an overflowing result: an infinite weight turns every
 * activation it touches into ±Infinity (and NaN after a multiply by 0), while 65504 is the closest value
 * half precision can hold. Infinity and NaN inputs stay Infinity and NaN.
 */
export { halfToFloat } from './packed/decode-tensor.js';

const HALF_MAX_BITS = 0x7bff;
const HALF_INFINITY_BITS = 0x7c00;
const HALF_NAN_BITS = 0x7e00;

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1)) return floor + 1;
  return floor;
}

/** The binary16 bit pattern nearest to `x` (any float64), ties to even, saturating at ±65504. */
export function floatToHalf(x: number): number {
  if (Number.isNaN(x)) return HALF_NAN_BITS;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(x);
  if (magnitude === Infinity) return sign | HALF_INFINITY_BITS;
  if (magnitude >= 65504) return sign | HALF_MAX_BITS;
  // Below 2^-14 the spacing is 2^-24 everywhere; a result of 1024 is the smallest normal's pattern.
  if (magnitude < 2 ** -14) return sign | roundHalfEven(magnitude * 2 ** 24);
  let exponent = Math.floor(Math.log2(magnitude));
  // Math.log2 may be off by one next to a power of two.
  if (2 ** exponent > magnitude) exponent--;
  else if (2 ** (exponent + 1) <= magnitude) exponent++;
  // 11 significant bits in [1024, 2048]; 2048 carries into the exponent field through the addition.
  const significand = roundHalfEven(magnitude * 2 ** (10 - exponent));
  return sign | (((exponent + 15) << 10) + significand - 1024);
}

/**
 * The half bit pattern of a float32 given by its bits; same result as `floatToHalf` on the value, computed
 * on the bits (exponent rebias + rounded shift) because this runs over whole tensors.
 */
export function halfOfFloat32Bits(word: number): number {
  const sign = (word >>> 16) & 0x8000;
  const magnitude = word & 0x7fffffff;
  let half: number;
  if (magnitude >= 0x7f800000) {
    half = magnitude === 0x7f800000 ? HALF_INFINITY_BITS : HALF_NAN_BITS;
  } else if (magnitude >= 0x38800000) {
    // Normal half range: rebias the exponent (127 → 15) and round the 13 dropped mantissa bits to even.
    const rebiased = magnitude - 0x38000000;
    half = (rebiased + 0xfff + ((rebiased >>> 13) & 1)) >>> 13;
    if (half > HALF_MAX_BITS) half = HALF_MAX_BITS;
  } else {
    // Subnormal half: the 24-bit significand shifted right by 126 − exponent, rounded to even.
    const shift = 126 - (magnitude >>> 23);
    if (shift > 24) {
      half = 0;
    } else {
      const significand = (magnitude & 0x7fffff) | 0x800000;
      half = (significand + (1 << (shift - 1)) - 1 + ((significand >>> shift) & 1)) >>> shift;
    }
  }
  return sign | half;
}

/** Half bit patterns of float32 values (`halfOfFloat32Bits` of each). */
export function encodeFloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfOfFloat32Bits(bits[i]);
  return out;
}

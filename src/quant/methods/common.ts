/** Schema fragments and small facts that several methods share. */
import { Type } from '@sinclair/typebox';

/** Present on every method's params: the seed of the method's random choices (stochastic rounding, init). */
export const seedField = {
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1, default: 0, description: 'seed of every random choice' }),
};

export const Granularity = Type.Union([Type.Literal('per-tensor'), Type.Literal('per-channel')], {
  default: 'per-tensor',
  description: 'one scale for the tensor, or one per output channel (the last axis of a tfjs kernel)',
});

export const Rounding = Type.Union([Type.Literal('nearest'), Type.Literal('stochastic')], {
  default: 'nearest',
  description: 'stochastic: q = floor(x + u), u ~ U[0,1): unbiased in expectation',
});

/** Number of channels side information is kept for: 1 per tensor, else the size of the last axis. */
export function channelCount(shape: readonly number[], granularity: 'per-tensor' | 'per-channel'): number {
  return granularity === 'per-channel' && shape.length > 0 ? shape[shape.length - 1] : 1;
}

/** The smallest unsigned code array that holds `bits`-bit codes. */
export function codeArray(size: number, bits: number): Uint8Array | Uint16Array | Uint32Array {
  if (bits <= 8) return new Uint8Array(size);
  if (bits <= 16) return new Uint16Array(size);
  return new Uint32Array(size);
}

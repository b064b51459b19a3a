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

/**
 * The shape a method sees for a weight. Per-channel side information runs over the last axis; a depthwise
 * kernel [h, w, in, multiplier] has in × multiplier output channels, so its last two axes are merged (the
 * data is the same row-major array). pq splits columns into sub-vectors and keeps the stored shape, which
 * its decoder reads.
 */
export function quantizationShape(shape: readonly number[], role: string, method: string): number[] {
  if (role !== 'depthwise_kernel' || shape.length < 2 || method === 'pq') return [...shape];
  return [...shape.slice(0, -2), shape[shape.length - 2] * shape[shape.length - 1]];
}

/** The smallest unsigned code array that holds `bits`-bit codes. */
export function codeArray(size: number, bits: number): Uint8Array | Uint16Array | Uint32Array {
  if (bits <= 8) return new Uint8Array(size);
  if (bits <= 16) return new Uint16Array(size);
  return new Uint32Array(size);
}

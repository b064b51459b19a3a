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

export { channelCount, codeArray, quantizationShape } from './grid.js';

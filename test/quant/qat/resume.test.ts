/**
 * Resuming the training methods (lab, ttq, inq, admm) from an epoch checkpoint: 3 epochs unbroken vs 1
 * epoch, the checkpoint round-tripped through node:v8 as src/storage/checkpoints.ts stores it, then epochs
 * 2–3 in a fresh model. The exported tensors (codes and side information) and the shadow weights must be
 * bit-identical: every piece of a method's state is in the checkpoint at its own precision.
 */
import * as tf from '@tensorflow/tfjs';
import { deserialize, serialize } from 'node:v8';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../../src/model/backend.js';
import { exportParams, parseAnyMethodParams, type TrainingMethodParams } from '../../../src/quant/qat/methods.js';
import {
  trainQuantizationAware,
  type QatCheckpoint,
  type QatOptions,
  type QatPlan,
} from '../../../src/quant/qat/train.js';
import { classifier, weightMap } from './classifier.js';

beforeAll(async () => {
  await selectBackend('cpu');
});

function planOf(method: Record<string, unknown>): QatPlan {
  const training = parseAnyMethodParams(method) as TrainingMethodParams;
  const entry = { params: exportParams(training), training };
  return new Map([
    ['hidden/kernel', entry],
    ['out/kernel', entry],
  ]);
}

/** What the checkpoint store writes and reads back. */
function stored(checkpoint: QatCheckpoint): QatCheckpoint {
  return deserialize(serialize(checkpoint)) as QatCheckpoint;
}

const sum = (values: ArrayLike<number>): number => Array.from(values).reduce((a, b) => a + b, 0);

/** [label, method, the hidden kernel's saved state after epoch 1 (undefined: none)] */
const cases: [string, Record<string, unknown>, Record<string, number> | undefined][] = [
  ['lab per channel (no state but Adam’s v̂)', { name: 'lab', granularity: 'per-channel' }, undefined],
  [
    'ttq per channel (float64 scales and Adam moments)',
    { name: 'ttq', granularity: 'per-channel', thresholdFactor: 0.1 },
    { t: 4 },
  ],
  // 4 steps over 3 epochs: 50% of the 48 frozen in epoch 1, 75% in epoch 2, 87.5% in epoch 3 (after the resume).
  ['inq 4 bits', { name: 'inq', bits: 4 }, { frozen: 24 }],
  // 4 steps per epoch, a G-step every 3: the checkpoint falls 1 step after one; ρ = 0.1·1.5 is not a float32.
  [
    'admm ternary',
    { name: 'admm', projection: 'ternary', rho: 0.1, rhoGrowth: 1.5, interval: 3 },
    { stepsSinceProjection: 1, rho: 0.1 * 1.5 },
  ],
  [
    'admm stochastic binary (a restored G is the same draw)',
    { name: 'admm', projection: { name: 'binary', stochastic: true }, interval: 3 },
    { stepsSinceProjection: 1 },
  ],
  [
    'admm affine per channel, G-step per epoch',
    { name: 'admm', projection: { name: 'affine', bits: 2, granularity: 'per-channel' }, interval: 0 },
    { stepsSinceProjection: 0 },
  ],
];

describe('resuming a training method from its epoch-1 checkpoint', () => {
  it.each(cases)('%s: exports and shadow weights equal an unbroken run, bit for bit', async (_label, method, saved) => {
    const common: Omit<QatOptions, 'epochs'> = {
      plan: planOf(method),
      batchSize: 8,
      learningRate: 0.02,
      validationSplit: 0.25,
      seed: 3,
    };

    const whole = classifier(5);
    const checkpoints: QatCheckpoint[] = [];
    const unbroken = await trainQuantizationAware(
      whole.model,
      { x: whole.x, y: whole.y },
      {
        ...common,
        epochs: 3,
        onCheckpoint: (c) => void checkpoints.push(stored(c)),
      },
    );
    expect(checkpoints[0].kernels!.map((k) => k.name).sort()).toEqual(
      saved === undefined ? [] : ['hidden/kernel', 'out/kernel'],
    );
    const hiddenState = checkpoints[0].kernels!.find((k) => k.name === 'hidden/kernel')?.state;
    for (const [key, value] of Object.entries(saved ?? {})) expect(sum(hiddenState![key]), key).toBe(value);

    const fresh = classifier(99);
    const start = tf.memory().numTensors;
    const resumed = await trainQuantizationAware(
      fresh.model,
      { x: whole.x, y: whole.y },
      {
        ...common,
        plan: planOf(method),
        epochs: 3,
        resumeFrom: checkpoints[0],
      },
    );
    expect(tf.memory().numTensors).toBe(start);

    expect(resumed.history.map((h) => [h.epoch, h.loss, h.valLoss])).toEqual(
      unbroken.history.map((h) => [h.epoch, h.loss, h.valLoss]),
    );
    expect([...resumed.quantized.keys()].sort()).toEqual(['hidden/kernel', 'out/kernel']);
    for (const [name, tensor] of unbroken.quantized) expect(resumed.quantized.get(name), name).toEqual(tensor);
    const expected = weightMap(whole.model);
    for (const [name, values] of weightMap(fresh.model)) expect(values, name).toEqual(expected.get(name));
    const { history: _resumedHistory, ...resumedState } = resumed.checkpoint;
    const { history: _unbrokenHistory, ...unbrokenState } = unbroken.checkpoint;
    expect(resumedState).toEqual(unbrokenState);

    tf.dispose([whole.x, whole.y, fresh.x, fresh.y]);
    whole.model.dispose();
    fresh.model.dispose();
  });
});

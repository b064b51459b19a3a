import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { evaluate } from '../../src/quant/evaluate.js';
import { getMethod, parseMethodParams } from '../../src/quant/methods/index.js';
import { createRng } from '../../src/quant/rng.js';
import {
  analyzeSensitivity,
  cacheBatches,
  DEFAULT_CANDIDATES,
  disposeBatches,
  labelCandidates,
  layersWeightSwap,
} from '../../src/quant/sensitivity.js';
import { toBatches } from '../fixtures/tasks.js';
import { BOTTLENECK, trainBottleneckMlp, type BottleneckTask } from '../pipeline/auto-fixture.js';

let task: BottleneckTask;

beforeAll(async () => {
  await selectBackend('wasm');
  task = await trainBottleneckMlp({ seed: 6, trainSamples: 1600, evalSamples: 400, epochs: 12 });
});

afterAll(() => task?.model.dispose());

describe('labelCandidates', () => {
  it('names the default candidates with short flat labels and numbers collisions', () => {
    const defaults = DEFAULT_CANDIDATES.map((c) => parseMethodParams(c));
    expect(labelCandidates(defaults).map((c) => c.label)).toEqual([
      'affine8pc',
      'affine4pc',
      'affine2pc',
      'ternarypc',
      'binarypc',
      'kmeans4',
    ]);
    const twice = [
      parseMethodParams({ name: 'affine', bits: 4, symmetric: true }),
      parseMethodParams({ name: 'affine', bits: 4, symmetric: true, seed: 3 }),
    ];
    expect(labelCandidates(twice).map((c) => c.label)).toEqual(['affine4s', 'affine4s#2']);
  });
});

describe('layersWeightSwap', () => {
  it('runs with the given values in place of the weight and restores the float values exactly', async () => {
    const model = tf.sequential({
      layers: [tf.layers.dense({ units: 2, inputShape: [2], useBias: false, kernelInitializer: 'ones', name: 'd' })],
    });
    const before = tf.memory().numTensors;
    const swap = layersWeightSwap(model);
    const x = tf.tensor2d([[1, 2]]);
    const inside = await swap('d/kernel', Float32Array.from([1, 0, 0, 3]), async (m) => {
      const y = m.predict(x) as tf.Tensor;
      const values = Array.from(y.dataSync());
      y.dispose();
      return values;
    });
    // [1, 2] · [[1, 0], [0, 3]] = [1, 6]
    expect(inside).toEqual([1, 6]);
    expect(Array.from(model.getWeights()[0].dataSync())).toEqual([1, 1, 1, 1]);
    await expect(swap('d/kernel', new Float32Array(4), async () => Promise.reject(new Error('boom')))).rejects.toThrow(
      'boom',
    );
    expect(Array.from(model.getWeights()[0].dataSync())).toEqual([1, 1, 1, 1]);
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});

describe('analyzeSensitivity', () => {
  it('ranks the bottleneck first, measures every tensor × config, and leaks no tensor', async () => {
    const { model, evaluation } = task;
    const candidates = labelCandidates(DEFAULT_CANDIDATES.map((c) => parseMethodParams(c)));
    const weights = new Map(model.weights.map((w) => [w.originalName, w]));
    const names = ['wide1/kernel', BOTTLENECK, 'wide2/kernel', 'logits/kernel'];
    const before = tf.memory().numTensors;
    const batches = await cacheBatches(toBatches(evaluation, 100), 300);
    expect(batches.reduce((n, b) => n + (b.x as tf.Tensor).shape[0], 0)).toBe(300);
    const progress: number[] = [];
    const started = performance.now();
    const result = await analyzeSensitivity({
      model,
      tensors: names.map((name) => ({ name, size: weights.get(name)!.shape.reduce((a: number, b) => a * b!, 1) })),
      candidates,
      quantize: (name, { params }) => {
        const variable = weights.get(name)!;
        return getMethod(params.name).quantize(
          variable.read().dataSync() as Float32Array,
          variable.shape as number[],
          params,
          createRng(0),
        );
      },
      withWeight: layersWeightSwap(model),
      batches,
      goal: { metric: 'accuracy', relative: false },
      onProgress: (done) => void progress.push(done),
    });
    disposeBatches(batches);
    expect(tf.memory().numTensors).toBe(before);
    const ms = performance.now() - started;
    console.log(
      `sensitivity: 4 tensors × 6 configs on 300 samples in ${ms.toFixed(0)} ms; top rows`,
      result.rows.slice(0, 4),
    );

    expect(result.rows).toHaveLength(24);
    expect(result.baseline.samples).toBe(300);
    expect(progress).toEqual([0, 6, 12, 18, 24]);
    expect(result.rows[0].name).toBe(BOTTLENECK);
    const affine2 = result.rows.filter((r) => r.config === 'affine2pc');
    expect(affine2[0].name).toBe(BOTTLENECK);
    expect(affine2[0].drop).toBeGreaterThan(0.1);
    // Sorted by drop; every drop is baseline − the row's accuracy.
    for (const [i, row] of result.rows.entries()) {
      if (i > 0) expect(row.drop).toBeLessThanOrEqual(result.rows[i - 1].drop);
      expect(row.drop).toBeCloseTo(result.baseline.accuracy! - row.metric, 12);
    }
    // wide2 has fan-in 1: per-channel binary is exact, so the model is unchanged.
    const wide2Binary = result.rows.find((r) => r.name === 'wide2/kernel' && r.config === 'binarypc')!;
    expect(wide2Binary.drop).toBe(0);
    expect(wide2Binary.sqnrDb).toBeUndefined();
    // Bytes are the packed size of the tensor alone: 128×1 weights at 1 bit + 64 bits of side information
    // per channel (its codebook −α, +α as two float32).
    expect(result.rows.find((r) => r.name === BOTTLENECK && r.config === 'binarypc')!.bytes).toBe((128 + 64) / 8);
    // The model's float weights are back.
    const accuracyAfter = await evaluate(model, toBatches(evaluation, 100));
    expect(accuracyAfter.accuracy).toBeGreaterThan(0.9);
  });
});

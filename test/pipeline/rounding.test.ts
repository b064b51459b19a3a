import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import { runPtq } from '../../src/pipeline/ptq.js';
import { roundLayers, type RoundingCheckpoint } from '../../src/pipeline/rounding.js';
import type { Batch } from '../../src/quant/evaluate.js';
import {
  buildDepthwiseGraphModel,
  buildGraphModel,
  buildLayersModel,
  depthwiseGraphInput,
  graphInput,
  layersInput,
  loadStockGraph,
} from '../fixtures/models.js';

function batchesOf(make: (batch: number, seed: number) => tf.Tensor): () => AsyncIterable<Batch> {
  return async function* () {
    for (let seed = 1; seed <= 3; seed++) {
      const x = make(16, seed);
      try {
        yield { x };
      } finally {
        x.dispose();
      }
    }
  };
}

function specOf(algorithm: string, granularity: string) {
  return parseJobSpec({
    method: { name: 'affine', bits: 3, granularity },
    ptq: { algorithm, adaround: { iterations: 200 } },
    data: { calibration: 'calibration' },
  });
}

beforeAll(async () => {
  await tf.setBackend('wasm');
});

const graphCases = [
  {
    name: 'the depthwise graph (fused conv, fused and plain depthwise, conv, MatMul)',
    model: () => readModel(buildDepthwiseGraphModel()),
    batches: batchesOf(depthwiseGraphInput),
    layers: ['stem/weights', 'dw1/depthwise_weights', 'dw2/depthwise_weights', 'project/weights', 'logits/kernel'],
  },
  {
    name: 'the graph fixture (Conv2D, MatMul, _FusedMatMul)',
    model: () => readModel(buildGraphModel()),
    batches: batchesOf(graphInput),
    layers: ['conv/kernel', 'dense/kernel', 'logits/kernel'],
  },
];

describe.each(graphCases)('learned rounding of $name', ({ model, batches, layers }) => {
  it.each([
    ['gptq', 'per-tensor'],
    ['gptq', 'per-channel'],
    ['adaround', 'per-tensor'],
    ['adaround', 'per-channel'],
  ])(
    '%s %s rounds every kernel no worse than nearest, and the artifact loads in stock tfjs',
    async (algorithm, granularity) => {
      const source: LoadedModel = model();
      const spec = specOf(algorithm, granularity);
      const { precomputed, report } = await roundLayers(source, spec, { batches });
      expect(report.layers.map((l) => l.name).sort()).toEqual([...layers].sort());
      expect(report.nearest).toEqual([]);
      let improved = 0;
      for (const layer of report.layers) {
        expect(layer.outputMseAfter, layer.name).toBeLessThanOrEqual(layer.outputMseBefore * (1 + 1e-9));
        if (layer.outputMseAfter < 0.98 * layer.outputMseBefore) improved++;
      }
      expect(improved).toBeGreaterThan(0);
      const { files } = await runPtq(source, spec, { backend: 'wasm', precomputed });
      const modelFiles = new Map(
        [...files].filter(([p]) => p.startsWith('model/')).map(([p, b]) => [p.slice('model/'.length), b]),
      );
      const stock = await loadStockGraph(modelFiles);
      // model/ holds the learned values exactly, or as float16 where half precision costs next to nothing.
      for (const name of layers) {
        const stored = stock.weights[name][0].dataSync() as Float32Array;
        const learned = precomputed.get(name)!.dequantized;
        expect(stored.length, name).toBe(learned.length);
        for (let i = 0; i < learned.length; i++) {
          expect(Math.abs(stored[i] - learned[i]), name).toBeLessThanOrEqual(Math.abs(learned[i]) * 2 ** -11 + 1e-7);
        }
      }
      stock.dispose();
    },
  );
});

describe('learned rounding of a layers model', () => {
  it('rounds Dense, Conv2D and DepthwiseConv2D kernels and says why it left the others to nearest', async () => {
    const source = readModel(await buildLayersModel());
    const { report } = await roundLayers(source, specOf('gptq', 'per-channel'), { batches: batchesOf(layersInput) });
    expect(report.layers.map((l) => l.name)).toEqual([
      'conv2d/kernel',
      'depthwise/depthwise_kernel',
      'dense/kernel',
      'logits/kernel',
    ]);
    expect(Object.fromEntries(report.nearest.map((n) => [n.name, n.reason.split(' ')[0]]))).toEqual({
      'embedding/embeddings': 'Embedding',
      'separable/depthwise_kernel': 'SeparableConv2D',
      'separable/pointwise_kernel': 'SeparableConv2D',
      'lstm/kernel': 'LSTM',
      'lstm/recurrent_kernel': 'LSTM',
    });
  });
});

describe('learned rounding checkpoints and cancelling', () => {
  it('resumes after the layers a checkpoint holds, with the same codes as an uninterrupted run', async () => {
    const source = readModel(buildDepthwiseGraphModel());
    const spec = specOf('gptq', 'per-channel');
    const checkpoints: RoundingCheckpoint[] = [];
    const full = await roundLayers(source, spec, {
      batches: batchesOf(depthwiseGraphInput),
      onCheckpoint: (checkpoint) => {
        checkpoints.push(structuredClone(checkpoint));
      },
    });
    expect(checkpoints.map((c) => c.done.length)).toEqual([1, 2, 3, 4, 5]);
    const rounded: string[] = [];
    const resumed = await roundLayers(source, spec, {
      batches: batchesOf(depthwiseGraphInput),
      resumeFrom: checkpoints[1],
      onLayer: (_done, _total, name) => {
        if (name) rounded.push(name);
      },
    });
    expect(rounded).toHaveLength(3);
    for (const [name, tensor] of full.precomputed) {
      expect(Array.from(resumed.precomputed.get(name)!.codes), name).toEqual(Array.from(tensor.codes));
    }
    expect(resumed.report.layers).toEqual(
      full.report.layers.map((l, i) => (i < 2 ? l : { ...l, timeMs: expect.any(Number) })),
    );
  });

  it('stops between layers with an AbortError', async () => {
    const controller = new AbortController();
    const source = readModel(buildDepthwiseGraphModel());
    await expect(
      roundLayers(source, specOf('gptq', 'per-channel'), {
        batches: batchesOf(depthwiseGraphInput),
        signal: controller.signal,
        onLayer: (done) => {
          if (done === 1) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ name: 'AbortError' });
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluate, type Batch } from '../../src/quant/evaluate.js';
import { buildGraphModel, graphInput, loadStockGraph } from '../fixtures/models.js';

/** y = x·kernel: a Dense layer with no bias, so every output is worked out by hand. */
function linearModel(kernel: number[][]): tf.LayersModel {
  const inputs = kernel.length;
  const units = kernel[0].length;
  const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [inputs], units, useBias: false })] });
  model.setWeights([tf.tensor2d(kernel)]);
  return model;
}

function identity(n: number, scale = 1): number[][] {
  return Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? scale : 0)));
}

/** Rows of 6 scores; the row's rank order is what the labels below are checked against. */
const ROWS = [
  [6, 5, 4, 3, 2, 1],
  [1, 2, 3, 4, 5, 6],
  [3, 9, 1, 0, 2, 4],
  [0, 0, 7, 1, 2, 3],
];
/** Row 0: top-1 hit. Row 1: label 0 is ranked 6th. Row 2: label 3 ranked 6th. Row 3: label 5 ranked 2nd. */
const LABELS = [0, 0, 3, 5];

/** A generator making each batch on demand and disposing it when resumed, as a streaming loader would. */
function* batchesOf(rows: number[][], labels: number[] | number[][] | undefined, size: number): Generator<Batch> {
  for (let start = 0; start < rows.length; start += size) {
    const x = tf.tensor2d(rows.slice(start, start + size));
    const y = labels === undefined ? undefined : tf.tensor(labels.slice(start, start + size) as number[]);
    try {
      yield { x, y };
    } finally {
      x.dispose();
      y?.dispose();
    }
  }
}

async function* asyncBatches(rows: number[][], labels: number[], size: number): AsyncGenerator<Batch> {
  for (const batch of batchesOf(rows, labels, size)) {
    await new Promise((resolve) => setImmediate(resolve));
    yield batch;
  }
}

beforeAll(async () => {
  await tf.setBackend('wasm');
});

describe('evaluate', () => {
  it('computes top-1 and top-5 accuracy from integer labels, streamed over batches', async () => {
    const model = linearModel(identity(6));
    const before = tf.memory().numTensors;
    const metrics = await evaluate(model, batchesOf(ROWS, LABELS, 3));
    expect(metrics).toEqual({ accuracy: 1 / 4, top5: 2 / 4, samples: 4 });
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('gives the same numbers for one-hot labels and for an async batch source', async () => {
    const model = linearModel(identity(6));
    const oneHot = LABELS.map((label) => Array.from({ length: 6 }, (_, c) => (c === label ? 1 : 0)));
    expect(await evaluate(model, batchesOf(ROWS, oneHot, 4))).toEqual({ accuracy: 0.25, top5: 0.5, samples: 4 });
    expect(await evaluate(model, asyncBatches(ROWS, LABELS, 1))).toEqual({ accuracy: 0.25, top5: 0.5, samples: 4 });
    model.dispose();
  });

  it('computes mse and mae against regression targets', async () => {
    const model = linearModel([[2], [1]]);
    // Outputs 2a + b: [3, 1, -4]; targets [2, 1, 0] → errors [1, 0, -4].
    const rows = [
      [1, 1],
      [0, 1],
      [-2, 0],
    ];
    const metrics = await evaluate(model, batchesOf(rows, [[2], [1], [0]], 2));
    expect(metrics.samples).toBe(3);
    expect(metrics.mse).toBeCloseTo(17 / 3, 6);
    expect(metrics.mae).toBeCloseTo(5 / 3, 6);
    expect(metrics.accuracy).toBeUndefined();
    model.dispose();
  });

  it('measures agreement and SQNR against a reference model without labels', async () => {
    const model = linearModel(identity(6));
    // The reference outputs twice the model's: the same classes, and Σr²/Σ(y − r)² = 4/1 → 6.0206 dB.
    const reference = linearModel(identity(6, 2));
    const before = tf.memory().numTensors;
    const metrics = await evaluate(model, batchesOf(ROWS, undefined, 3), { reference });
    expect(metrics.agreement).toBe(1);
    expect(metrics.sqnrDb).toBeCloseTo(10 * Math.log10(4), 6);
    expect(metrics.accuracy).toBeUndefined();
    expect(tf.memory().numTensors).toBe(before);

    // A reference that reverses each row picks another class on every row.
    const reversed = linearModel(identity(6).map((row) => [...row].reverse()));
    const swapped = await evaluate(model, batchesOf(ROWS, LABELS, 2), {
      reference: reversed,
      metrics: ['agreement', 'accuracy'],
    });
    // Reversed rows: row 0 → argmax 5 (model 0), row 1 → 0 (model 5), row 2 → 4 (model 1), row 3 → 3 (model 2).
    expect(swapped).toEqual({ accuracy: 0.25, agreement: 0, samples: 4 });
    for (const m of [model, reference, reversed]) m.dispose();
  });

  it('reports sqnrDb null when the outputs equal the reference, for a graph model too', async () => {
    const graph = await loadStockGraph(buildGraphModel());
    const input = graphInput(8);
    const before = tf.memory().numTensors;
    const metrics = await evaluate(graph, [{ x: input }], { reference: graph });
    expect(metrics).toEqual({ agreement: 1, sqnrDb: null, samples: 8 });
    expect(tf.memory().numTensors).toBe(before);
    input.dispose();
    graph.dispose();
  });

  it('rejects metrics the data cannot give', async () => {
    const model = linearModel(identity(6));
    await expect(evaluate(model, batchesOf(ROWS, undefined, 4), { metrics: ['accuracy'] })).rejects.toThrow(
      /needs labels/,
    );
    await expect(evaluate(model, batchesOf(ROWS, LABELS, 4), { metrics: ['sqnrDb'] })).rejects.toThrow(
      /reference model/,
    );
    await expect(evaluate(model, batchesOf(ROWS, LABELS, 4), { metrics: ['mse'] })).rejects.toThrow(/output's shape/);
    await expect(evaluate(model, batchesOf(ROWS, [[1, 2]], 4))).rejects.toThrow(/fit neither/);
    model.dispose();
  });
});

/**
 * Issue 5's training methods on the generated 10-class task (test/fixtures/tasks.ts), all starting from one
 * float small CNN trained here: each one trains (its loss at the quantized weights falls from the first
 * epoch to the last), its shipped artifact (runPtq with the trainer's tensors as `precomputed`, loaded with
 * stock tf.loadLayersModel) beats PTQ of the same quantizer on held-out data, and its kernels take only the
 * values the method allows. DoReFa and PACT activations: the trained grid, simulated on the exported model
 * with FakeQuant, beats calibrated (minmax) activations of the same width on the float model.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import { writeModel } from '../../src/model/write.js';
import { openDataset } from '../../src/model/dataset/index.js';
import { runJob } from '../../src/pipeline/run.js';
import { planTensors, runPtq } from '../../src/pipeline/ptq.js';
import { calibrateActivations, withFakeQuantActivations } from '../../src/quant/activations.js';
import { evaluate } from '../../src/quant/evaluate.js';
import { learnedActivationRanges, withTrainedActivationQuantizers } from '../../src/quant/qat/activation-layers.js';
import { qatPlan } from '../../src/quant/qat/plan.js';
import { trainQuantizationAware, type EpochMetrics, type QatOptions } from '../../src/quant/qat/train.js';
import { floatToHalf, halfToFloat } from '../../src/quant/float16.js';
import { loadStockLayers, saveLayersModel } from '../fixtures/models.js';
import {
  makeClassificationTask,
  sliceTask,
  toBatches,
  trainSmallCnn,
  type ClassificationTask,
} from '../fixtures/tasks.js';
import { npy } from '../model/dataset/npy-fixture.js';

const task = makeClassificationTask({ seed: 1, samples: 3500 });
const train = sliceTask(task, 0, 2000);
const heldOut = sliceTask(task, 2500, 3500);
const KERNELS = ['conv1/kernel', 'depthwise/depthwise_kernel', 'pointwise/kernel', 'logits/kernel'];

let source: LoadedModel;
let floatAccuracy: number;
let x: tf.Tensor;
let y: tf.Tensor;
const started = performance.now();

function subtree(files: FileSet, prefix: string): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith(prefix)).map(([path, bytes]) => [path.slice(prefix.length), bytes]),
  );
}

async function accuracy(model: tf.LayersModel): Promise<number> {
  return (await evaluate(model, toBatches(heldOut, 250), { metrics: ['accuracy'] })).accuracy!;
}

function points(value: number): string {
  return `${(100 * value).toFixed(1)}%`;
}

interface Trained {
  ptqAccuracy: number;
  qatAccuracy: number;
  history: EpochMetrics[];
  kernels: Map<string, Float32Array>;
}

/** Trains a copy of the float model with `method`, ships it, and measures it against PTQ of the same quantizer. */
async function trainMethod(
  method: Record<string, unknown>,
  options: Partial<QatOptions> & { epochs: number },
): Promise<Trained> {
  const spec = parseJobSpec({ kind: 'qat', data: { training: 'train' }, method });
  const ptqFiles = (await runPtq(source, spec, { backend: tf.getBackend() })).files;
  const ptqModel = await loadStockLayers(subtree(ptqFiles, 'model/'));
  const ptqAccuracy = await accuracy(ptqModel);
  ptqModel.dispose();

  const model = await loadStockLayers(writeModel(source, new Map()));
  const shapes = new Map(source.weights.map((w) => [w.name, w.shape]));
  const plan = qatPlan(planTensors(source, spec).selected.map((t) => ({ ...t, shape: shapes.get(t.name)! })));
  expect([...plan.keys()]).toEqual(KERNELS);
  const before = tf.memory().numTensors;
  const trainStarted = performance.now();
  const result = await trainQuantizationAware(model, { x, y }, { plan, batchSize: 32, seed: 1, ...options });
  expect(tf.memory().numTensors).toBe(before);
  expect([...result.quantized.keys()]).toEqual(KERNELS);
  const values = new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
  const trained = {
    ...source,
    weights: source.weights.map((w) => ({ ...w, values: Float32Array.from(values.get(w.name)!) })),
  };
  model.dispose();

  const { files, report } = await runPtq(trained, spec, { backend: tf.getBackend(), precomputed: result.quantized });
  expect(report.tensors.map((t) => t.method)).toEqual(KERNELS.map(() => spec.method.name));
  const shipped = await loadStockLayers(subtree(files, 'model/'));
  const qatAccuracy = await accuracy(shipped);
  const kernels = new Map(
    KERNELS.map((name) => [
      name,
      shipped.weights
        .find((w) => w.originalName === name)!
        .read()
        .dataSync() as Float32Array,
    ]),
  );
  // model/ holds the trained quantized values in their smallest faithful form: float16 where half precision
  // adds at most 1% to the method's error, else exactly.
  for (const name of KERNELS) {
    const values = result.quantized.get(name)!.dequantized;
    const asHalf = Array.from(values, (value) => halfToFloat(floatToHalf(value)));
    const stored = report.tensors.find((t) => t.name === name)!.storedAs;
    expect(Array.from(kernels.get(name)!)).toEqual(stored === 'float16' ? asHalf : Array.from(values));
  }
  shipped.dispose();
  console.log(
    `${spec.method.name}: PTQ ${points(ptqAccuracy)}, trained ${points(qatAccuracy)} (float ${points(floatAccuracy)}), ` +
      `loss ${result.history.map((h) => h.loss.toFixed(3)).join(' → ')}, ${Math.round(performance.now() - trainStarted)} ms`,
  );
  return { ptqAccuracy, qatAccuracy, history: result.history, kernels };
}

function distinct(values: Float32Array): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

function expectTrains({ history, ptqAccuracy, qatAccuracy }: Trained, margin: number): void {
  expect(history[history.length - 1].loss).toBeLessThan(history[0].loss);
  expect(qatAccuracy).toBeGreaterThanOrEqual(ptqAccuracy + margin);
}

beforeAll(async () => {
  await selectBackend('wasm');
  const model = await trainSmallCnn(train, { seed: 3, epochs: 4 });
  floatAccuracy = await accuracy(model);
  source = readModel(await saveLayersModel(model));
  model.dispose();
  x = tf.tensor(train.x, [train.y.length, ...train.inputShape], 'float32');
  y = tf.tensor1d(train.y, 'int32');
});

afterAll(() => {
  tf.dispose([x, y]);
  console.log(`training-methods total ${Math.round(performance.now() - started)} ms`);
});

describe('weight training methods beat PTQ of their quantizer', () => {
  it('lab: binary ±α per output channel, α from Adam’s curvature', async () => {
    const result = await trainMethod({ name: 'lab', granularity: 'per-channel' }, { epochs: 3, learningRate: 5e-3 });
    expectTrains(result, 0.2);
    for (const [name, values] of result.kernels) {
      const channels = source.weights
        .find((w) => w.name === name)!
        .shape.slice(-2)
        .reduce((a, b) => (name.startsWith('depthwise') ? a * b : b));
      for (let c = 0; c < channels; c++) {
        // ±α of the channel (a channel whose weights all share a sign uses one of the two).
        const magnitudes = distinct(values.filter((_, i) => i % channels === c).map(Math.abs));
        expect(magnitudes).toHaveLength(1);
        expect(magnitudes[0]).toBeGreaterThan(0);
      }
    }
  });

  it('ttq: ternary {−Wn, 0, +Wp} per tensor with learned scales', async () => {
    const result = await trainMethod({ name: 'ttq' }, { epochs: 3, learningRate: 5e-3 });
    expectTrains(result, 0.05);
    for (const values of result.kernels.values()) {
      const levels = distinct(values);
      expect(levels).toHaveLength(3);
      expect(levels[1]).toBe(0);
    }
  });

  it('inq: 3-bit pow2 levels (0, ±2^(n1−2..n1)), frozen 50 → 75 → 87.5 → 100%, two epochs per step', async () => {
    const result = await trainMethod({ name: 'inq', bits: 3 }, { epochs: 6, learningRate: 2e-3 });
    // Each step freezes more weights (the loss jumps), then retraining the float rest brings it down.
    for (let step = 0; step < 3; step++)
      expect(result.history[2 * step + 1].loss).toBeLessThan(result.history[2 * step].loss);
    expect(result.qatAccuracy).toBeGreaterThanOrEqual(result.ptqAccuracy + 0.015);
    for (const values of result.kernels.values()) {
      const exponents = new Set(
        Array.from(values)
          .filter((v) => v !== 0)
          .map((v) => Math.log2(Math.abs(v))),
      );
      for (const exponent of exponents) expect(Number.isInteger(exponent)).toBe(true);
      expect(exponents.size).toBeLessThanOrEqual(3);
      expect(Math.max(...exponents) - Math.min(...exponents)).toBeLessThanOrEqual(2);
    }
  });

  it('admm: ternary projection (TWN per tensor), export G', async () => {
    const validation = sliceTask(task, 2000, 2500);
    const validationData = {
      x: tf.tensor(validation.x, [500, ...validation.inputShape]),
      y: tf.tensor1d(validation.y, 'int32'),
    };
    const result = await trainMethod(
      { name: 'admm', projection: 'ternary' },
      { epochs: 3, learningRate: 2e-3, validationData },
    );
    tf.dispose([validationData.x, validationData.y]);
    // The W-step's loss at the float W rises as the penalty pulls W onto G; the loss at G (validation) falls.
    console.log(`admm: validation loss at G ${result.history.map((h) => h.valLoss!.toFixed(3)).join(' → ')}`);
    expect(result.history[2].valLoss!).toBeLessThan(result.history[0].valLoss!);
    expect(result.qatAccuracy).toBeGreaterThanOrEqual(result.ptqAccuracy + 0.03);
    for (const values of result.kernels.values()) {
      const levels = distinct(values);
      expect(levels).toHaveLength(3);
      expect(levels[0]).toBe(-levels[2]);
      expect(levels[1]).toBe(0);
    }
  });
});

describe('trained activation quantizers beat calibrated ones of the same width', () => {
  const BITS = 2;

  async function calibratedAccuracy(): Promise<number> {
    const model = await loadStockLayers(writeModel(source, new Map()));
    const ranges = await calibrateActivations(model, toBatches(sliceTask(task, 2000, 2500), 250), {
      bits: BITS,
      calibration: 'minmax',
    });
    const relu = ranges.filter((r) => ['relu1', 'depthwise', 'pointwise'].includes(r.layer));
    const simulated = await withFakeQuantActivations(model, relu);
    const measured = await accuracy(simulated);
    model.dispose();
    simulated.dispose();
    return measured;
  }

  for (const quantizer of ['dorefa', 'pact'] as const) {
    it(`${quantizer}: ${BITS}-bit activations after every ReLU`, async () => {
      const baseline = await calibratedAccuracy();
      const float = await loadStockLayers(writeModel(source, new Map()));
      const trained = await withTrainedActivationQuantizers(float, {
        quantizer,
        bits: BITS,
        alpha: 4,
        alphaDecay: 1e-3,
        gradientBits: quantizer === 'dorefa' ? 8 : 32,
      });
      const before = tf.memory().numTensors;
      const { history } = await trainQuantizationAware(
        trained.model,
        { x, y },
        {
          plan: new Map(),
          epochs: 2,
          batchSize: 32,
          learningRate: 2e-3,
          seed: 1,
          regularizer: trained.regularizer,
        },
      );
      expect(tf.memory().numTensors).toBe(before);
      const ranges = learnedActivationRanges(trained);
      expect(ranges.map((r) => r.layer)).toEqual(['relu1', 'depthwise', 'pointwise']);
      if (quantizer === 'dorefa')
        for (const r of ranges) expect(r).toMatchObject({ alpha: 1, max: 1, scale: 1 / 3, zeroPoint: 0 });
      else for (const r of ranges) expect(r.alpha).not.toBe(4);
      // The trained model with FakeQuant at the learned grids: what the job reports as the integer metric.
      for (const layer of float.layers)
        if (layer.weights.length > 0) layer.setWeights(trained.model.getLayer(layer.name).getWeights());
      const simulated = await withFakeQuantActivations(
        float,
        ranges.map(({ layer, bits, min, max, scale, zeroPoint }) => ({
          layer,
          bits,
          calibration: 'minmax' as const,
          min,
          max,
          scale,
          zeroPoint,
        })),
      );
      const measured = await accuracy(simulated);
      const direct = await accuracy(trained.model);
      console.log(
        `${quantizer} ${BITS}-bit: calibrated ${points(baseline)}, trained ${points(measured)} (in training ${points(direct)}), ` +
          `α ${ranges.map((r) => r.alpha.toFixed(2)).join(', ')}, loss ${history.map((h) => h.loss.toFixed(3)).join(' → ')}`,
      );
      expect(Math.abs(measured - direct)).toBeLessThanOrEqual(0.01);
      expect(history[1].loss).toBeLessThan(history[0].loss);
      expect(measured).toBeGreaterThanOrEqual(baseline + 0.02);
      for (const model of [float, simulated, trained.model]) model.dispose();
    });
  }
});

describe('runJob with a training method', () => {
  it('ttq + PACT: exports the learned ternary kernels, reports the method, α per layer and the integer metric', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qaas-training-'));
    const write = async (name: string, part: ClassificationTask) => {
      const [xPath, yPath] = [join(dir, `${name}-x.npy`), join(dir, `${name}-y.npy`)];
      await writeFile(
        xPath,
        npy(
          '<f4',
          [part.y.length, ...part.inputShape],
          new Uint8Array(part.x.buffer, part.x.byteOffset, part.x.byteLength),
        ),
      );
      await writeFile(
        yPath,
        npy('<i4', [part.y.length], new Uint8Array(part.y.buffer, part.y.byteOffset, part.y.byteLength)),
      );
      return openDataset({ x: xPath, y: yPath });
    };
    const training = await write('train', sliceTask(train, 0, 1000));
    const evaluation = await write('eval', sliceTask(heldOut, 0, 500));
    try {
      const spec = parseJobSpec({
        kind: 'qat',
        method: { name: 'ttq' },
        data: { training: 't', evaluation: 'e' },
        activations: { quantizer: 'pact', bits: 4, alpha: 4 },
        qat: { epochs: 1, learningRate: 5e-3 },
      });
      const before = tf.memory().numTensors;
      const { report } = await runJob(source, spec, { training, evaluation }, { backend: tf.getBackend() });
      expect(tf.memory().numTensors).toBe(before);
      expect(report.tensors.map((t) => [t.name, t.method, t.bits])).toEqual(KERNELS.map((name) => [name, 'ttq', 2]));
      expect(report.activations!.map((a) => ('quantizer' in a ? [a.layer, a.quantizer, a.bits] : []))).toEqual([
        ['relu1', 'pact', 4],
        ['depthwise', 'pact', 4],
        ['pointwise', 'pact', 4],
      ]);
      const { qat, integer } = report.model.metrics;
      console.log(
        `job ttq + 4-bit PACT (1 epoch, 1000 samples): qat ${points(qat!.accuracy!)}, integer ${points(integer!.accuracy!)}`,
      );
      expect(qat!.accuracy!).toBeGreaterThan(0.8);
      expect(integer!.accuracy!).toBeGreaterThan(0.8);
    } finally {
      await Promise.all([training.close(), evaluation.close()]);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModelDir, readFileSetFromDir, readModel } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { writeModel } from '../../src/model/write.js';
import { NotStreamable, streamQuantize } from '../../src/pipeline/stream.js';
import { createRng } from '../../src/quant/rng.js';
import { writeTreeAtomically } from '../../src/storage/tree.js';
import { loadStockLayers, saveLayersModel, seedBatchNormWeights } from '../fixtures/models.js';
import { expectStreamedAsInMemory, inMemory, streamedInto } from './stream-compare.js';

/**
 * Streaming PTQ of models with BatchNorm (src/pipeline/stream.ts folding through src/model/fold-batchnorm.ts)
 * against the in-memory pipeline (runJob, what the CLI and the worker run when streaming refuses a job):
 * every artifact byte for byte, report.json but for timings and the backend, on the main thread and on
 * one and two worker threads; and the streamed fold run by stock tfjs against the float model.
 */

let dir: string;
const models: Record<string, string> = {};

/** Channels whose γ/√σ² spread over three decades: 10^(3c/(C−1)), times a draw in [0.8, 1.2). */
function spreadGamma(channels: number, draw: () => number): Float32Array {
  return Float32Array.from({ length: channels }, (_, c) => 10 ** ((3 * c) / (channels - 1)) * (0.8 + 0.4 * draw()));
}

function seedWeights(model: tf.LayersModel, seed: number): void {
  seedBatchNormWeights(model, seed, spreadGamma);
}

/**
 * A MobileNet-shaped functional model: Conv2D (no bias) + BN, DepthwiseConv2D + BN (channel scales 1000×
 * apart in both), a BN after a ReLU (skipped), and Dense + BN.
 */
function cnnModel(): tf.LayersModel {
  const input = tf.input({ shape: [6, 6, 3], name: 'image' });
  const apply = (layer: tf.layers.Layer, x: tf.SymbolicTensor) => layer.apply(x) as tf.SymbolicTensor;
  let x = apply(tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same', useBias: false, name: 'conv' }), input);
  x = apply(tf.layers.batchNormalization({ name: 'bn_conv' }), x);
  x = apply(tf.layers.reLU({ name: 'relu1' }), x);
  x = apply(tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', name: 'depthwise' }), x);
  x = apply(tf.layers.batchNormalization({ name: 'bn_depthwise', epsilon: 0.01 }), x);
  x = apply(tf.layers.reLU({ name: 'relu2' }), x);
  x = apply(tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'relu', name: 'conv_relu' }), x);
  x = apply(tf.layers.batchNormalization({ name: 'bn_after_relu' }), x);
  x = apply(tf.layers.flatten({ name: 'flatten' }), x);
  x = apply(tf.layers.dense({ units: 6, name: 'dense' }), x);
  const output = apply(tf.layers.batchNormalization({ name: 'bn_dense' }), x);
  return tf.model({ inputs: input, outputs: output, name: 'cnn' });
}

/** Sequential: a BN as the first layer (skipped), Dense + a chain of two BNs, Dense without bias + BN without γ. */
function sequentialModel(): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.batchNormalization({ inputShape: [5], name: 'bn_first' }),
      tf.layers.dense({ units: 16, name: 'd1' }),
      tf.layers.batchNormalization({ name: 'bn_d1' }),
      tf.layers.batchNormalization({ name: 'bn_d1_again' }),
      tf.layers.dense({ units: 3, useBias: false, name: 'd2' }),
      tf.layers.batchNormalization({ name: 'bn_d2', scale: false }),
    ],
  });
}

async function save(name: string, model: tf.LayersModel, seed: number): Promise<void> {
  seedWeights(model, seed);
  // 1 KiB shards: kernels span shards, and the BN statistics tfjs writes last sit in the last one.
  const files = await saveLayersModel(model, 1024);
  model.dispose();
  models[name] = join(dir, 'models', name);
  await writeTreeAtomically(models[name], files);
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'qaas-stream-bn-'));
  await save('cnn', cnnModel(), 21);
  await save('sequential', sequentialModel(), 22);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function streamed(modelDir: string, raw: Record<string, unknown>, threads?: number): Promise<FileSet> {
  return streamedInto(dir, modelDir, raw, threads);
}

interface Report {
  model: { backend: string };
  timings: Record<string, number>;
  tensors: { name: string; channelScaleIn?: string; storedAs: string; sqnrDb: number }[];
  equalization: { batchNorm: string; rangeRatioBefore: number; rangeRatioAfter: number }[];
  batchNorm: {
    folded: string[];
    skipped: { layer: string; reason: string }[];
    scaled: { batchNorm: string; rangeRatioBefore: number; rangeRatioAfter: number }[];
  };
  warnings: string[];
}

function reportOf(files: FileSet): Report {
  return JSON.parse(new TextDecoder().decode(files.get('report.json')!)) as Report;
}

/** On the main thread and on one and two worker threads; the in-memory report. */
async function expectSameArtifacts(model: string, raw: Record<string, unknown>): Promise<Report> {
  return reportOf(await expectStreamedAsInMemory(dir, models[model], raw, [undefined, 1, 2]));
}

const perTensor = { name: 'affine', bits: 8 };
const perChannel = { name: 'affine', bits: 8, granularity: 'per-channel' };
const plainFold = { equalize: false };

describe('streaming PTQ folds BatchNorm exactly as the in-memory pipeline', () => {
  it('cnn, plain fold, per-tensor uint8: Conv2D, DepthwiseConv2D and Dense folded, the BN after a ReLU kept', async () => {
    const report = await expectSameArtifacts('cnn', { method: perTensor, ptq: plainFold });
    expect(report.batchNorm.folded).toEqual(['bn_conv', 'bn_depthwise', 'bn_dense']);
    expect(report.batchNorm.skipped).toEqual([
      {
        layer: 'bn_after_relu',
        reason: 'conv_relu has activation relu: a BatchNorm after a non-linearity cannot be folded',
      },
    ]);
    expect(report.batchNorm.scaled).toEqual([]);
    expect(report.warnings[0]).toBe(`BatchNorm bn_after_relu was not folded: ${report.batchNorm.skipped[0].reason}`);
    // One grid over channels 1000× apart rounds the small ones away (40.0 dB; keepScale's 47.5 dB below).
    const conv = report.tensors.find((t) => t.name === 'conv/kernel')!;
    expect(conv.storedAs).toBe('uint8');
    expect(conv.sqnrDb).toBeLessThan(42);
  });

  it('cnn, plain fold, per-channel uint8', async () => {
    const report = await expectSameArtifacts('cnn', { method: perChannel, ptq: plainFold });
    expect(report.batchNorm.folded).toEqual(['bn_conv', 'bn_depthwise', 'bn_dense']);
    expect(report.tensors.find((t) => t.name === 'conv/kernel')!.sqnrDb).toBeGreaterThan(45);
  });

  it('cnn, keepScale (ptq.equalize, the default), per-tensor uint8: every folded kernel on one range', async () => {
    const report = await expectSameArtifacts('cnn', { method: perTensor });
    expect(report.batchNorm.folded).toEqual([]);
    expect(report.batchNorm.scaled.map((s) => s.batchNorm)).toEqual(['bn_conv', 'bn_depthwise', 'bn_dense']);
    for (const pair of report.batchNorm.scaled) {
      // Channel scales spread 10³ (times draws in [0.8, 1.2)) over kernels of similar channel ranges.
      expect(pair.rangeRatioBefore).toBeGreaterThan(100);
      expect(pair.rangeRatioAfter).toBeLessThan(1.001);
    }
    expect(report.equalization).toEqual(report.batchNorm.scaled);
    const conv = report.tensors.find((t) => t.name === 'conv/kernel')!;
    expect(conv.channelScaleIn).toBe('bn_conv');
    expect(conv.sqnrDb).toBeGreaterThan(45);
  });

  it('cnn, keepScale, per-channel uint8 (one grid on the equalized kernels)', async () => {
    const report = await expectSameArtifacts('cnn', { method: perChannel });
    expect(report.tensors.find((t) => t.name === 'depthwise/depthwise_kernel')!.storedAs).toBe('uint8');
  });

  it('cnn, float16 (no equalization): plain fold', async () => {
    const report = await expectSameArtifacts('cnn', { method: { name: 'float16' } });
    expect(report.batchNorm.folded).toEqual(['bn_conv', 'bn_depthwise', 'bn_dense']);
  });

  it('sequential, plain fold, per-tensor and per-channel: the first-layer BN kept, a chain of two folded twice', async () => {
    for (const method of [perTensor, perChannel]) {
      const report = await expectSameArtifacts('sequential', { method, ptq: plainFold });
      expect(report.batchNorm.folded).toEqual(['bn_d1', 'bn_d1_again', 'bn_d2']);
      expect(report.batchNorm.skipped).toEqual([
        { layer: 'bn_first', reason: 'it is the first layer: there is no layer to fold it into' },
      ]);
    }
  });

  it('sequential, keepScale, per-tensor and per-channel: γ added for the BN without one', async () => {
    for (const method of [perTensor, perChannel]) {
      const report = await expectSameArtifacts('sequential', { method });
      expect(report.batchNorm.scaled.map((s) => s.batchNorm)).toEqual(['bn_d1', 'bn_d2']);
      expect(report.batchNorm.skipped.map((s) => s.layer)).toEqual(['bn_first', 'bn_d1_again']);
    }
  });
});

/** Largest |a − b| over the largest |a|, on seeded inputs, both models loaded with stock tfjs. */
async function relativeDifference(reference: FileSet, other: FileSet, shape: number[]): Promise<number> {
  const a = await loadStockLayers(reference);
  const b = await loadStockLayers(other);
  const rng = createRng(9);
  const size = shape.reduce((x, y) => x * y, 1);
  const input = tf.tensor(
    Float32Array.from({ length: size }, () => 2 * rng.next() - 1),
    shape,
  );
  const [difference, scale] = tf.tidy(() => {
    const ya = a.predict(input) as tf.Tensor;
    const yb = b.predict(input) as tf.Tensor;
    return [tf.max(tf.abs(tf.sub(ya, yb))).dataSync()[0], tf.max(tf.abs(ya)).dataSync()[0]];
  });
  input.dispose();
  a.dispose();
  b.dispose();
  return difference / scale;
}

function modelFiles(files: FileSet): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith('model/')).map(([path, bytes]) => [path.slice(6), bytes]),
  );
}

describe('the streamed fold in stock tfjs', () => {
  it('computes the float model: within 1e-5 of its largest output unquantized, within 2% at 8 bits', async () => {
    const float = await readFileSetFromDir(models.cnn);
    for (const ptq of [{}, plainFold]) {
      // Nothing quantized: model/ is the folded model itself.
      const folded = await streamed(models.cnn, { method: perTensor, ptq, layers: { skip: ['**'] } });
      expect(reportOf(folded).tensors).toEqual([]);
      const layers = JSON.parse(new TextDecoder().decode(folded.get('model/model.json')!)).modelTopology.config
        .layers as { class_name: string }[];
      expect(layers.filter((l) => l.class_name === 'BatchNormalization')).toHaveLength(ptq === plainFold ? 1 : 4);
      expect(await relativeDifference(float, modelFiles(folded), [4, 6, 6, 3])).toBeLessThan(1e-5);

      // Measured: 1.1% (per-tensor, plain fold), 0.47% (per-tensor, keepScale), 0.38–0.66% per channel.
      for (const method of [perTensor, perChannel]) {
        const quantized = await streamed(models.cnn, { method, ptq });
        expect(await relativeDifference(float, modelFiles(quantized), [4, 6, 6, 3])).toBeLessThan(0.02);
      }
    }
  });
});

describe('what streaming still refuses on BatchNorm models', () => {
  it('a kept BN whose γ comes before its layer’s kernel in the manifest, and a non-finite BN statistic', async () => {
    const source = readModel(await readFileSetFromDir(models.sequential));
    const gammaFirst = [
      source.weights.find((w) => w.name === 'bn_d1/gamma')!,
      ...source.weights.filter((w) => w.name !== 'bn_d1/gamma'),
    ];
    const reordered = join(dir, 'models', 'gamma-first');
    await writeTreeAtomically(reordered, writeModel({ ...source, weights: gammaFirst }, new Map()));
    await expect(streamQuantize(reordered, parseJobSpec({ method: perTensor }), join(dir, 'refused'))).rejects.toThrow(
      new NotStreamable('bn_d1/gamma comes before d1/kernel in the manifest: it is derived from it'),
    );
    await expect(readdir(join(dir, 'refused'))).rejects.toThrow(/ENOENT/);
    // A plain fold needs no kernel for the BN's weights: that order streams, to the in-memory artifacts.
    const files = await streamed(reordered, { method: perTensor, ptq: plainFold });
    const expected = await inMemory(reordered, { method: perTensor, ptq: plainFold });
    expect(
      Buffer.compare(Buffer.from(files.get('packed/weights.bin')!), Buffer.from(expected.get('packed/weights.bin')!)),
    ).toBe(0);

    const variance = source.weights.find((w) => w.name === 'bn_d2/moving_variance')!;
    const broken = { ...variance, values: Float32Array.from(variance.values, (v, i) => (i === 1 ? Number.NaN : v)) };
    const nan = join(dir, 'models', 'nan');
    await writeTreeAtomically(
      nan,
      writeModel({ ...source, weights: source.weights.map((w) => (w === variance ? broken : w)) }, new Map()),
    );
    await expect(streamQuantize(nan, parseJobSpec({ method: perTensor }), join(dir, 'nan-out'))).rejects.toThrow(
      NotStreamable,
    );
    await expect(readModelDir(nan)).rejects.toThrow('weight bn_d2/moving_variance: value NaN at index 1');
  });
});

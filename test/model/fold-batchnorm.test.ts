import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { foldBatchNorm } from '../../src/model/fold-batchnorm.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import { writeModel } from '../../src/model/write.js';
import { createRng } from '../../src/quant/rng.js';
import {
  buildGraphModel,
  buildLayersModel,
  layersInput,
  loadStockLayers,
  saveLayersModel,
  seedBatchNormWeights as seedWeights,
} from '../fixtures/models.js';

function topologyLayers(model: LoadedModel): Record<string, unknown>[] {
  const topology = model.modelJson.modelTopology as { config: { layers: Record<string, unknown>[] } };
  return topology.config.layers;
}

function layerNames(model: LoadedModel): string[] {
  return topologyLayers(model).map((layer) => (layer.config as { name: string }).name);
}

function seededInput(shape: number[], seed: number): tf.Tensor {
  const rng = createRng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(
    Float32Array.from({ length: size }, () => 2 * rng.next() - 1),
    shape,
  );
}

/** Largest |original − folded| output, both loaded with stock tfjs, in inference mode. */
async function maxOutputDifference(source: LoadedModel, folded: LoadedModel, input: tf.Tensor): Promise<number> {
  const original = await loadStockLayers(writeModel(source, new Map()));
  const foldedModel = await loadStockLayers(writeModel(folded, new Map()));
  const difference = tf.tidy(
    () =>
      tf
        .max(tf.abs(tf.sub(original.predict(input) as tf.Tensor, foldedModel.predict(input) as tf.Tensor)))
        .dataSync()[0],
  );
  original.dispose();
  foldedModel.dispose();
  return difference;
}

beforeAll(async () => {
  await tf.setBackend('wasm');
});

describe('foldBatchNorm', () => {
  it('folds BN after Conv2D (no bias), DepthwiseConv2D, SeparableConv2D and Dense in a functional model', async () => {
    const input = tf.input({ shape: [6, 6, 2], name: 'image' });
    const apply = (layer: tf.layers.Layer, x: tf.SymbolicTensor) => layer.apply(x) as tf.SymbolicTensor;
    let x = apply(
      tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', useBias: false, name: 'conv' }),
      input,
    );
    x = apply(tf.layers.batchNormalization({ name: 'bn_conv' }), x);
    x = apply(tf.layers.reLU({ name: 'relu' }), x);
    x = apply(tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', name: 'depthwise' }), x);
    x = apply(tf.layers.batchNormalization({ name: 'bn_depthwise', epsilon: 0.01 }), x);
    x = apply(tf.layers.separableConv2d({ filters: 5, kernelSize: 3, padding: 'same', name: 'separable' }), x);
    x = apply(tf.layers.batchNormalization({ name: 'bn_separable', center: false, scale: false }), x);
    // A Conv2D with a ReLU: the BN after it normalises the activation and must stay.
    x = apply(tf.layers.conv2d({ filters: 3, kernelSize: 1, activation: 'relu', name: 'conv_relu' }), x);
    x = apply(tf.layers.batchNormalization({ name: 'bn_after_relu' }), x);
    const flat = apply(tf.layers.flatten({ name: 'flatten' }), x);
    const dense = apply(tf.layers.dense({ units: 7, name: 'dense' }), flat);
    const output = apply(tf.layers.batchNormalization({ name: 'bn_dense' }), dense);
    const model = tf.model({ inputs: input, outputs: output });
    seedWeights(model, 11);
    const source = readModel(await saveLayersModel(model));
    model.dispose();

    const { model: folded, folded: foldedNames, skipped } = foldBatchNorm(source);
    expect(foldedNames).toEqual(['bn_conv', 'bn_depthwise', 'bn_separable', 'bn_dense']);
    expect(skipped).toEqual([
      {
        layer: 'bn_after_relu',
        reason: 'conv_relu has activation relu: a BatchNorm after a non-linearity cannot be folded',
      },
    ]);
    expect(layerNames(folded)).toEqual([
      'image',
      'conv',
      'relu',
      'depthwise',
      'separable',
      'conv_relu',
      'bn_after_relu',
      'flatten',
      'dense',
    ]);
    const conv = topologyLayers(folded).find((layer) => layer.name === 'conv')!;
    expect((conv.config as { use_bias: boolean }).use_bias).toBe(true);
    expect(topologyLayers(folded).find((layer) => layer.name === 'relu')!.inbound_nodes).toEqual([
      [['conv', 0, 0, {}]],
    ]);
    expect((folded.modelJson.modelTopology as { config: { output_layers: unknown } }).config.output_layers).toEqual([
      ['dense', 0, 0],
    ]);
    const names = folded.weights.map((w) => w.name);
    expect(names.slice(0, 2)).toEqual(['conv/kernel', 'conv/bias']);
    expect(names.filter((name) => /^bn_(conv|depthwise|separable|dense)\//.test(name))).toEqual([]);
    expect(names.filter((name) => name.startsWith('bn_after_relu/'))).toHaveLength(4);
    // The source model is left as it was.
    expect(layerNames(source)).toContain('bn_conv');

    const x0 = seededInput([5, 6, 6, 2], 3);
    expect(await maxOutputDifference(source, folded, x0)).toBeLessThan(1e-5);
    x0.dispose();
  });

  it('folds a Sequential model, chains of BNs included, and hand-checks one folded value', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [3], units: 2, name: 'dense' }),
        tf.layers.batchNormalization({ name: 'bn1' }),
        tf.layers.batchNormalization({ name: 'bn2' }),
        tf.layers.dense({ units: 4, useBias: false, name: 'head' }),
        tf.layers.batchNormalization({ name: 'bn3' }),
      ],
    });
    seedWeights(model, 5);
    const source = readModel(await saveLayersModel(model));
    model.dispose();

    const { model: folded, folded: foldedNames, skipped } = foldBatchNorm(source);
    expect(foldedNames).toEqual(['bn1', 'bn2', 'bn3']);
    expect(skipped).toEqual([]);
    expect(layerNames(folded)).toEqual(['dense', 'head']);
    expect(folded.weights.map((w) => w.name)).toEqual(['dense/kernel', 'dense/bias', 'head/kernel', 'head/bias']);

    // head: W'[i, c] = W[i, c]·γ_c/√(σ²_c + ε), b'_c = (0 − μ_c)·γ_c/√(σ²_c + ε) + β_c, ε = 0.001.
    const value = (m: LoadedModel, name: string) => m.weights.find((w) => w.name === name)!.values as Float32Array;
    const [gamma, beta, mean, variance] = ['gamma', 'beta', 'moving_mean', 'moving_variance'].map(
      (n) => value(source, `bn3/${n}`)[1],
    );
    const factor = gamma / Math.sqrt(variance + 0.001);
    expect(value(folded, 'head/kernel')[4 + 1]).toBeCloseTo(value(source, 'head/kernel')[4 + 1] * factor, 6);
    expect(value(folded, 'head/bias')[1]).toBeCloseTo(-mean * factor + beta, 6);

    const x0 = seededInput([6, 3], 4);
    expect(await maxOutputDifference(source, folded, x0)).toBeLessThan(1e-5);
    x0.dispose();
  });

  it('skips a BN whose input also feeds another layer, or that follows a non-linear layer', async () => {
    const input = tf.input({ shape: [4], name: 'features' });
    const dense = tf.layers.dense({ units: 3, name: 'dense' }).apply(input) as tf.SymbolicTensor;
    const normalised = tf.layers.batchNormalization({ name: 'bn' }).apply(dense) as tf.SymbolicTensor;
    const sum = tf.layers.add({ name: 'add' }).apply([normalised, dense]) as tf.SymbolicTensor;
    const after = tf.layers.batchNormalization({ name: 'bn_after_add' }).apply(sum) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: after });
    seedWeights(model, 2);
    const source = readModel(await saveLayersModel(model));
    model.dispose();
    const result = foldBatchNorm(source);
    expect(result.folded).toEqual([]);
    expect(result.skipped).toEqual([
      { layer: 'bn', reason: 'the output of dense also feeds other layers, which must still see it unnormalised' },
      { layer: 'bn_after_add', reason: 'its input comes from add (Add), not a Dense or convolution layer' },
    ]);
    expect(result.model.weights).toHaveLength(source.weights.length);
  });

  it('leaves the fixture model (BN after a Conv2D with ReLU) numerically unchanged and graph models alone', async () => {
    const source = readModel(await buildLayersModel());
    const result = foldBatchNorm(source);
    expect(result.folded).toEqual([]);
    expect(result.skipped).toEqual([
      { layer: 'batch_norm', reason: 'conv2d has activation relu: a BatchNorm after a non-linearity cannot be folded' },
    ]);
    const tokens = layersInput(4);
    expect(await maxOutputDifference(source, result.model, tokens)).toBe(0);
    tokens.dispose();

    const graph = readModel(buildGraphModel());
    expect(foldBatchNorm(graph)).toEqual({ model: graph, folded: [], skipped: [], scaled: [] });
  });
});

/**
 * A graph model made trainable: its float weights become variables the graph reads (gradients reach every
 * one), a write to a variable changes what the graph computes, and dispose gives the graph its own tensors
 * back without leaking one.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadRunnable } from '../../src/model/load.js';
import { readModel } from '../../src/model/read.js';
import { TrainableGraph } from '../../src/model/trainable-graph.js';
import { buildGraphModel, graphInput } from '../fixtures/models.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('TrainableGraph', () => {
  it('trains through variables in place of the weights and gives the graph back on dispose', async () => {
    const files = buildGraphModel();
    const model = (await loadRunnable(files)) as tf.GraphModel;
    const x = graphInput(4);
    const before = tf.memory().numTensors;
    const original = tf.tidy(() => (model.predict(x) as tf.Tensor).arraySync() as number[][]);

    const trainable = new TrainableGraph(model, readModel(files).modelJson);
    expect(trainable.weights.map((w) => w.originalName).sort()).toEqual([
      'conv/bias',
      'conv/kernel',
      'dense/bias',
      'dense/kernel',
      'logits/bias',
      'logits/kernel',
    ]);
    expect(trainable.outputIsSoftmax).toBe(false);
    const variables = trainable.trainableWeights.map((w) => w.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(trainable.apply(x))) as tf.Scalar, variables);
    for (const variable of variables)
      expect(tf.tidy(() => tf.norm(grads[variable.name]).dataSync()[0])).toBeGreaterThan(0);
    tf.dispose([value, ...Object.values(grads)]);

    const bias = trainable.weights.find((w) => w.originalName === 'logits/bias')!.read() as tf.Variable;
    const shifted = tf.add(bias, 1);
    bias.assign(shifted);
    shifted.dispose();
    const moved = trainable.apply(x);
    (moved.arraySync() as number[][]).forEach((row, i) =>
      row.forEach((v, j) => expect(v).toBeCloseTo(original[i][j] + 1, 4)),
    );
    moved.dispose();

    trainable.dispose();
    const restored = model.predict(x) as tf.Tensor;
    expect(restored.arraySync()).toEqual(original);
    restored.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose(x);
    model.dispose();
  });

  it('keeps batch-norm moving statistics constant and trains its scale and offset', async () => {
    // The fixture with a FusedBatchNormV3 between conv/BiasAdd and conv/Relu, its four vectors in a new shard.
    const files = buildGraphModel();
    const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    const vector = { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '4' }] } };
    const names = ['scale', 'offset', 'mean', 'variance'].map((n) => `conv/bn/${n}`);
    json.modelTopology.node.push(
      ...names.map((name) => ({ name, op: 'Const', attr: { value: { tensor: vector }, dtype: { type: 'DT_FLOAT' } } })),
      {
        name: 'conv/bn',
        op: 'FusedBatchNormV3',
        input: ['conv/BiasAdd', ...names],
        attr: {
          T: { type: 'DT_FLOAT' },
          U: { type: 'DT_FLOAT' },
          epsilon: { f: 0.001 },
          is_training: { b: false },
          data_format: { s: Buffer.from('NHWC').toString('base64') },
        },
      },
    );
    json.modelTopology.node.find((node: { name: string }) => node.name === 'conv/Relu').input = ['conv/bn'];
    json.weightsManifest.push({
      paths: ['bn.bin'],
      weights: names.map((name) => ({ name, shape: [4], dtype: 'float32' })),
    });
    files.set('model.json', new TextEncoder().encode(JSON.stringify(json)));
    files.set(
      'bn.bin',
      new Uint8Array(Float32Array.from([1, 1, 1, 1, 0, 0, 0, 0, 0.1, 0.1, 0.1, 0.1, 2, 2, 2, 2]).buffer),
    );
    const model = (await loadRunnable(files)) as tf.GraphModel;
    const trainable = new TrainableGraph(model, JSON.parse(new TextDecoder().decode(files.get('model.json'))));
    const trained = trainable.weights.map((w) => w.originalName);
    expect(trained).toContain('conv/bn/scale');
    expect(trained).toContain('conv/bn/offset');
    expect(trained).not.toContain('conv/bn/mean');
    expect(trained).not.toContain('conv/bn/variance');
    const x = graphInput(2);
    const output = trainable.apply(x);
    expect(output.shape).toEqual([2, 3]);
    tf.dispose([x, output]);
    trainable.dispose();
    model.dispose();
  });
});

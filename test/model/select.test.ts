import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { readModel } from '../../src/model/read.js';
import { quantizableWeights } from '../../src/model/select.js';
import type { LoadedModel, Weight } from '../../src/model/types.js';
import {
  buildGraphModel,
  buildLayersModel,
  GRAPH_QUANTIZABLE,
  LAYERS_QUANTIZABLE,
  saveLayersModel,
} from '../fixtures/models.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const weight = (name: string, shape: number[], dtype: Weight['dtype'] = 'float32'): Weight => {
  const size = shape.reduce((a, b) => a * b, 1);
  const values =
    dtype === 'float32' ? new Float32Array(size) : dtype === 'int32' ? new Int32Array(size) : new Uint8Array(size);
  return { name, shape, dtype, values };
};

/** Recurrent layers, wrappers, a nested model and the rarer convolutions, as tfjs-layers names them. */
function createZooModel(): tf.LayersModel {
  const head = tf.sequential({
    name: 'head',
    layers: [
      tf.layers.dense({ units: 5, inputShape: [12], name: 'head_dense' }),
      tf.layers.batchNormalization({ name: 'head_bn' }),
      tf.layers.layerNormalization({ name: 'head_ln' }),
    ],
  });
  const input = tf.input({ shape: [5, 4], name: 'sequence' });
  const chain: tf.layers.Layer[] = [
    tf.layers.bidirectional({
      layer: tf.layers.lstm({ units: 2, returnSequences: true, name: 'lstm_a' }) as tf.RNN,
      name: 'bi',
    }),
    tf.layers.rnn({ cell: tf.layers.gruCell({ units: 3 }), returnSequences: true, name: 'cells' }),
    tf.layers.gru({ units: 3, returnSequences: true, name: 'gru' }),
    tf.layers.simpleRNN({ units: 3, returnSequences: true, name: 'simple' }),
    tf.layers.conv1d({ filters: 3, kernelSize: 2, name: 'conv1d' }),
    tf.layers.timeDistributed({ layer: tf.layers.dense({ units: 3, name: 'td_dense' }), name: 'td' }),
    tf.layers.reshape({ targetShape: [2, 2, 3], name: 'to_image' }),
    tf.layers.conv2dTranspose({ filters: 3, kernelSize: 2, name: 'deconv' }),
    tf.layers.globalAveragePooling2d({ name: 'pool' }),
    tf.layers.repeatVector({ n: 4, name: 'repeat' }),
    tf.layers.flatten({ name: 'flat' }),
    head,
  ];
  let output = input;
  for (const layer of chain) output = layer.apply(output) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: output, name: 'zoo' });
}

describe('quantizableWeights, layers models', () => {
  it('picks the fixture kernels and embeddings, never biases or BatchNorm', async () => {
    const model = readModel(await buildLayersModel());
    const selected = quantizableWeights(model);
    expect(selected.map((w) => w.name)).toEqual(LAYERS_QUANTIZABLE);
    expect(selected.map((w) => `${w.layerType}:${w.role}`)).toEqual([
      'Embedding:embeddings',
      'Conv2D:kernel',
      'DepthwiseConv2D:depthwise_kernel',
      'SeparableConv2D:depthwise_kernel',
      'SeparableConv2D:pointwise_kernel',
      'LSTM:kernel',
      'LSTM:recurrent_kernel',
      'Dense:kernel',
      'Dense:kernel',
    ]);
  });

  it('follows Bidirectional, TimeDistributed, generic RNN cells and nested models', async () => {
    const zoo = createZooModel();
    const model = readModel(await saveLayersModel(zoo));
    zoo.dispose();
    expect(quantizableWeights(model).map((w) => `${w.name} ${w.layerType}`)).toEqual([
      'bi/forward_lstm_a/kernel LSTM',
      'bi/forward_lstm_a/recurrent_kernel LSTM',
      'bi/backward_lstm_a/kernel LSTM',
      'bi/backward_lstm_a/recurrent_kernel LSTM',
      'cells/kernel RNN',
      'cells/recurrent_kernel RNN',
      'gru/kernel GRU',
      'gru/recurrent_kernel GRU',
      'simple/kernel SimpleRNN',
      'simple/recurrent_kernel SimpleRNN',
      'conv1d/kernel Conv1D',
      'td/kernel Dense',
      'deconv/kernel Conv2DTranspose',
      'head_dense/kernel Dense',
    ]);
  });

  it('matches Keras-style names with extra scopes (lstm/lstm_cell/kernel, model/dense/kernel)', () => {
    const model: LoadedModel = {
      format: 'layers-model',
      modelJson: {
        modelTopology: {
          class_name: 'Sequential',
          config: {
            name: 'sequential',
            layers: [
              { class_name: 'LSTM', config: { name: 'lstm' } },
              { class_name: 'Dense', config: { name: 'dense' } },
              { class_name: 'SeparableConv1D', config: { name: 'sep' } },
            ],
          },
        },
      },
      weights: [
        weight('lstm/lstm_cell/kernel', [4, 8]),
        weight('lstm/lstm_cell/recurrent_kernel', [2, 8]),
        weight('lstm/lstm_cell/bias', [8]),
        weight('sequential/dense/kernel', [2, 3]),
        weight('sequential/dense/bias', [3]),
        weight('sep/depthwise_kernel', [3, 3, 1]),
        weight('sep/pointwise_kernel', [1, 3, 4]),
        weight('other/kernel', [3, 3]),
      ],
    };
    expect(quantizableWeights(model).map((w) => w.name)).toEqual([
      'lstm/lstm_cell/kernel',
      'lstm/lstm_cell/recurrent_kernel',
      'sequential/dense/kernel',
      'sep/depthwise_kernel',
      'sep/pointwise_kernel',
    ]);
  });
});

describe('quantizableWeights, graph models', () => {
  it('picks the Conv2D, MatMul and _FusedMatMul kernels of the fixture', () => {
    const selected = quantizableWeights(readModel(buildGraphModel()));
    expect(selected.map((w) => w.name)).toEqual(GRAPH_QUANTIZABLE);
    expect(selected.map((w) => w.layerType)).toEqual(['Conv2D', 'MatMul', '_FusedMatMul']);
    expect(selected.every((w) => w.role === 'graph_const')).toBe(true);
  });

  it('covers every weight-consuming op, follows Identity, skips int, rank-1 and non-weight inputs', () => {
    const consts: [string, number[], Weight['dtype']][] = [
      ['mm/w', [4, 3], 'float32'],
      ['bmm/w', [2, 4, 3], 'float32'],
      ['bmm2/w', [2, 4, 3], 'float32'],
      ['fmm/w', [4, 3], 'float32'],
      ['conv/w', [3, 3, 2, 4], 'float32'],
      ['conv3d/w', [2, 2, 2, 2, 4], 'float32'],
      ['dw/w', [3, 3, 2, 1], 'float32'],
      ['deconv/sizes', [4], 'int32'],
      ['deconv/w', [3, 3, 4, 2], 'float32'],
      ['fconv/w', [3, 3, 2, 4], 'float32'],
      ['fdw/w', [3, 3, 2, 1], 'float32'],
      ['frozen/kernel', [4, 3], 'float32'],
      ['bias', [3], 'float32'],
      ['int/matrix', [4, 3], 'int32'],
      ['scale/matrix', [4, 3], 'float32'],
      ['left/w', [3, 4], 'float32'],
    ];
    const nodes = [
      { name: 'x', op: 'Placeholder' },
      ...consts.map(([name]) => ({ name, op: 'Const' })),
      { name: 'frozen/kernel/read', op: 'Identity', input: ['frozen/kernel'] },
      { name: 'mm', op: 'MatMul', input: ['x', 'mm/w:0'] },
      { name: 'mm_again', op: 'MatMul', input: ['x', 'mm/w'] },
      { name: 'bmm', op: 'BatchMatMul', input: ['x', 'bmm/w'] },
      { name: 'bmm2', op: 'BatchMatMulV2', input: ['x', 'bmm2/w'] },
      { name: 'fmm', op: '_FusedMatMul', input: ['x', 'fmm/w', 'bias'] },
      { name: 'conv', op: 'Conv2D', input: ['x', 'conv/w'] },
      { name: 'conv3d', op: 'Conv3D', input: ['x', 'conv3d/w'] },
      { name: 'dw', op: 'DepthwiseConv2dNative', input: ['x', 'dw/w'] },
      { name: 'deconv', op: 'Conv2DBackpropInput', input: ['deconv/sizes', 'deconv/w', 'x'] },
      { name: 'fconv', op: '_FusedConv2D', input: ['x', 'fconv/w', 'bias'] },
      { name: 'fdw', op: 'FusedDepthwiseConv2dNative', input: ['x', 'fdw/w', 'bias'] },
      { name: 'frozen', op: 'MatMul', input: ['x', 'frozen/kernel/read', '^bias'] },
      { name: 'int', op: 'MatMul', input: ['x', 'int/matrix'] },
      { name: 'mul', op: 'Mul', input: ['x', 'scale/matrix'] },
      { name: 'left', op: 'MatMul', input: ['left/w', 'x'] },
      { name: 'add', op: 'BiasAdd', input: ['mm', 'bias'] },
    ];
    const model: LoadedModel = {
      format: 'graph-model',
      modelJson: { modelTopology: { node: nodes } },
      weights: consts.map(([name, shape, dtype]) => weight(name, shape, dtype)),
    };
    expect(quantizableWeights(model).map((w) => `${w.name} ${w.layerType}`)).toEqual([
      'mm/w MatMul',
      'bmm/w BatchMatMul',
      'bmm2/w BatchMatMulV2',
      'fmm/w _FusedMatMul',
      'conv/w Conv2D',
      'conv3d/w Conv3D',
      'dw/w DepthwiseConv2dNative',
      'deconv/w Conv2DBackpropInput',
      'fconv/w _FusedConv2D',
      'fdw/w FusedDepthwiseConv2dNative',
      'frozen/kernel MatMul',
      'left/w MatMul',
    ]);
    const roles = new Map(quantizableWeights(model).map((w) => [w.name, w.role]));
    expect([roles.get('dw/w'), roles.get('fdw/w'), roles.get('conv/w')]).toEqual([
      'depthwise_kernel',
      'depthwise_kernel',
      'graph_const',
    ]);
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkDatasetFitsModel, modelInputs, modelOutputs, type TensorSignature } from '../../src/model/signature.js';
import type { FileSet } from '../../src/model/types.js';
import { buildGraphModel, buildLayersModel, saveLayersModel } from '../fixtures/models.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function modelJsonOf(files: FileSet): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(files.get('model.json')!));
}

/** Saves `model` and checks the signature read from its model.json against tfjs's own shapes. */
async function expectSameAsTfjs(model: tf.LayersModel): Promise<void> {
  const json = modelJsonOf(await saveLayersModel(model));
  expect(modelInputs(json).map((i) => i.shape)).toEqual(model.inputs.map((i) => i.shape));
  expect(modelOutputs(json).map((o) => o.shape)).toEqual(model.outputs.map((o) => o.shape));
  expect(modelOutputs(json).map((o) => o.name)).toEqual(model.outputs.map((o) => o.sourceLayer.name));
  model.dispose();
}

describe('modelInputs / modelOutputs: layers models', () => {
  it('reads the fixture through Embedding, Conv, BatchNorm, Depthwise, Separable, Reshape and LSTM', async () => {
    const json = modelJsonOf(await buildLayersModel());
    expect(modelInputs(json)).toEqual([{ name: 'tokens', shape: [null, 12], dtype: 'float32' }]);
    expect(modelOutputs(json)).toEqual([{ name: 'logits', shape: [null, 4], dtype: 'float32' }]);
  });

  it('names a Sequential input after its first layer and reads nested Sequentials and int inputs', async () => {
    const plain = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [4], units: 3, name: 'first' }),
        tf.layers.dense({ units: 2, name: 'last' }),
      ],
    });
    const plainJson = modelJsonOf(await saveLayersModel(plain));
    expect(modelInputs(plainJson)).toEqual([{ name: 'first_input', shape: [null, 4], dtype: 'float32' }]);
    expect(modelOutputs(plainJson)).toEqual([{ name: 'last', shape: [null, 2], dtype: 'float32' }]);
    plain.dispose();

    const inner = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [5], units: 3, name: 'inner_dense' })],
      name: 'inner',
    });
    const nestedFirst = tf.sequential({ layers: [inner, tf.layers.dense({ units: 7, name: 'out' })] });
    const nestedJson = modelJsonOf(await saveLayersModel(nestedFirst));
    expect(modelInputs(nestedJson)).toEqual([{ name: 'inner_dense_input', shape: [null, 5], dtype: 'float32' }]);
    expect(modelOutputs(nestedJson)[0].shape).toEqual([null, 7]);
    nestedFirst.dispose();

    const ids = tf.sequential({
      layers: [
        tf.layers.inputLayer({ inputShape: [6], dtype: 'int32', name: 'ids' }),
        tf.layers.embedding({ inputDim: 10, outputDim: 3 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 2 }),
      ],
    });
    const idsJson = modelJsonOf(await saveLayersModel(ids));
    expect(modelInputs(idsJson)).toEqual([{ name: 'ids', shape: [null, 6], dtype: 'int32' }]);
    expect(modelOutputs(idsJson)[0].shape).toEqual([null, 2]);
    ids.dispose();
  });

  it('infers the shapes tfjs computes for a CNN of convolutions and pooling', async () => {
    await expectSameAsTfjs(
      tf.sequential({
        layers: [
          tf.layers.conv2d({ inputShape: [29, 31, 1], filters: 4, kernelSize: 3, strides: 2, padding: 'valid' }),
          tf.layers.zeroPadding2d({
            padding: [
              [1, 2],
              [0, 1],
            ],
          }),
          tf.layers.maxPooling2d({ poolSize: 2 }),
          tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same' }),
          tf.layers.separableConv2d({ filters: 5, kernelSize: 2, dilationRate: 1 }),
          tf.layers.upSampling2d({ size: [2, 3] }),
          tf.layers.averagePooling2d({ poolSize: [2, 2], strides: [1, 2], padding: 'same' }),
          tf.layers.conv2dTranspose({ filters: 2, kernelSize: 3, strides: 2, padding: 'valid' }),
          tf.layers.batchNormalization(),
          tf.layers.activation({ activation: 'relu' }),
          tf.layers.globalAveragePooling2d({}),
          tf.layers.dense({ units: 10, activation: 'softmax' }),
        ],
      }),
    );
  });

  it('infers the shapes tfjs computes for a functional model with merges, recurrent and wrapper layers', async () => {
    const sequence = tf.input({ shape: [8, 3], name: 'sequence' });
    const a = tf.layers.conv1d({ filters: 4, kernelSize: 3, padding: 'same' }).apply(sequence) as tf.SymbolicTensor;
    const b = tf.layers
      .bidirectional({ layer: tf.layers.lstm({ units: 2, returnSequences: true }) as tf.RNN })
      .apply(sequence) as tf.SymbolicTensor;
    const joined = tf.layers.concatenate().apply([a, b]) as tf.SymbolicTensor;
    const perStep = tf.layers
      .timeDistributed({ layer: tf.layers.dense({ units: 5 }) })
      .apply(joined) as tf.SymbolicTensor;
    const summed = tf.layers.add().apply([perStep, perStep]) as tf.SymbolicTensor;
    const pooled = tf.layers.maxPooling1d({ poolSize: 2 }).apply(summed) as tf.SymbolicTensor;
    const permuted = tf.layers.permute({ dims: [2, 1] }).apply(pooled) as tf.SymbolicTensor;
    const last = tf.layers.gru({ units: 6 }).apply(permuted) as tf.SymbolicTensor;
    const repeated = tf.layers.repeatVector({ n: 3 }).apply(last) as tf.SymbolicTensor;
    const reshaped = tf.layers.reshape({ targetShape: [9, 2] }).apply(repeated) as tf.SymbolicTensor;
    const head = tf.layers.flatten().apply(reshaped) as tf.SymbolicTensor;
    await expectSameAsTfjs(tf.model({ inputs: sequence, outputs: [head, pooled], name: 'two_heads' }));
  });

  it('resolves -1 in Reshape and leaves the shape unknown after a layer it has no rule for', () => {
    const reshape = {
      modelTopology: {
        class_name: 'Sequential',
        config: {
          layers: [
            { class_name: 'Reshape', config: { name: 'r', target_shape: [-1, 2], batch_input_shape: [null, 3, 4] } },
          ],
        },
      },
    };
    expect(modelOutputs(reshape)[0].shape).toEqual([null, 6, 2]);
    const json = {
      format: 'layers-model',
      modelTopology: {
        class_name: 'Sequential',
        config: {
          name: 's',
          layers: [
            { class_name: 'Dense', config: { name: 'd', units: 3, batch_input_shape: [null, 4] } },
            { class_name: 'MyCustomLayer', config: { name: 'custom' } },
          ],
        },
      },
    };
    expect(modelOutputs(json)).toEqual([{ name: 'custom', shape: null, dtype: 'float32' }]);
  });
});

describe('modelInputs / modelOutputs: graph models', () => {
  it('reads the signature the converter wrote', () => {
    const json = modelJsonOf(buildGraphModel());
    expect(modelInputs(json)).toEqual([{ name: 'input', shape: [null, 6, 6, 2], dtype: 'float32' }]);
    expect(modelOutputs(json)).toEqual([{ name: 'output', shape: [null, 3], dtype: 'float32' }]);
  });

  it('falls back to Placeholder nodes and unconsumed nodes without a signature', () => {
    const json = modelJsonOf(buildGraphModel());
    delete json.signature;
    expect(modelInputs(json)).toEqual([{ name: 'input', shape: [null, 6, 6, 2], dtype: 'float32' }]);
    expect(modelOutputs(json)).toEqual([{ name: 'output', shape: null, dtype: 'float32' }]);
  });
});

describe('checkDatasetFitsModel', () => {
  const image: TensorSignature[] = [{ name: 'img', shape: [null, 28, 28, 1], dtype: 'float32' }];
  const logits: TensorSignature[] = [{ name: 'logits', shape: [null, 10], dtype: 'float32' }];

  it('accepts matching shapes, class ids, one-hot rows and free dimensions', () => {
    expect(
      checkDatasetFitsModel({ x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [] } }, image, logits),
    ).toBeNull();
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [1], labels: 'index' } },
        image,
        logits,
      ),
    ).toBeNull();
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [10], labels: 'onehot' } },
        image,
        logits,
      ),
    ).toBeNull();
    const anyLength: TensorSignature[] = [{ name: 'tokens', shape: [null, null], dtype: 'int32' }];
    const regression: TensorSignature[] = [{ name: 'value', shape: [null, 1], dtype: 'float32' }];
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [40] }, y: { sampleShape: [], labels: 'values' } },
        anyLength,
        regression,
      ),
    ).toBeNull();
    expect(checkDatasetFitsModel({ x: { sampleShape: [28, 28, 1] } }, image, [])).toBeNull();
  });

  it('names the mismatch, strictly', () => {
    expect(checkDatasetFitsModel({ x: { sampleShape: [28, 28] } }, image, logits)).toBe(
      "dataset x samples are [28,28] but input 'img' expects [28,28,1]",
    );
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [5] } },
        [{ name: 't', shape: [null, null, 3], dtype: 'float32' }],
        logits,
      ),
    ).toBe("dataset x samples are [5] but input 't' expects [?,3]");
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [4], labels: 'onehot' } },
        image,
        logits,
      ),
    ).toBe("dataset y samples are [4] but output 'logits' gives [10]");
    expect(
      checkDatasetFitsModel(
        { x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [], labels: 'values' } },
        image,
        logits,
      ),
    ).toBe("dataset y samples are [] but output 'logits' gives [10]");
    const sequenceOut: TensorSignature[] = [{ name: 'seq', shape: [null, 12, 8], dtype: 'float32' }];
    expect(checkDatasetFitsModel({ x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [] } }, image, sequenceOut)).toBe(
      "dataset y holds one class id per sample but output 'seq' gives [12,8] per sample, not [classes]",
    );
    const twoInputs: TensorSignature[] = [...image, { name: 'meta', shape: [null, 3], dtype: 'float32' }];
    expect(checkDatasetFitsModel({ x: { sampleShape: [28, 28, 1] } }, twoInputs, logits)).toBe(
      "the model has 2 inputs ('img', 'meta'): send one array per input, named by it (.npz keys, upload part names, or JSON x as an object)",
    );
    // One array per input, by name (`meta:0` is the graph spelling of `meta`), each of its input's shape.
    const image28 = { sampleShape: [28, 28, 1] };
    const named = (meta: number[], names = ['img', 'meta:0']) => ({
      x: null,
      inputs: [
        { name: names[0], ...image28 },
        { name: names[1], sampleShape: meta },
      ],
    });
    expect(checkDatasetFitsModel(named([3]), twoInputs, logits)).toBeNull();
    expect(checkDatasetFitsModel(named([4]), twoInputs, logits)).toBe(
      "dataset input 'meta:0' samples are [4] but input 'meta' expects [3]",
    );
    expect(checkDatasetFitsModel(named([3], ['img', 'extra']), twoInputs, logits)).toBe(
      "dataset inputs 'img', 'extra' must be the model's inputs 'img', 'meta': 'meta' missing, 'extra' not an input",
    );
    expect(
      checkDatasetFitsModel({ x: { sampleShape: [28, 28, 1] }, y: { sampleShape: [] } }, image, [...logits, ...logits]),
    ).toBe('the model has 2 outputs; labels (y) fit single-output models only');
  });
});

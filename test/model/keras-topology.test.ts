/**
 * The Keras config → tfjs Keras-JSON translation on hand-written configs: what Keras 3 spells differently is
 * rewritten, Keras 2 configs pass as they are, and what tfjs-layers cannot compute the same way is refused
 * with every such layer named.
 */
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../src/model/errors.js';
import { snakeCase } from '../../src/model/keras/weights.js';
import { toTfjsModelConfig } from '../../src/model/keras/topology.js';

type Json = Record<string, unknown>;

const policy = (name: string) => ({
  module: 'keras',
  class_name: 'DTypePolicy',
  config: { name },
  registered_name: null,
});
const tensor = (layer: string, node = 0) => ({
  class_name: '__keras_tensor__',
  config: { shape: [null, 4], dtype: 'float32', keras_history: [layer, node, 0] },
});

/** A Keras 3 functional model: input → the given layers in a chain → output. */
function keras3Chain(layers: { class_name: string; config: Json }[]): Json {
  const entries: Json[] = [
    {
      module: 'keras.layers',
      class_name: 'InputLayer',
      config: { batch_shape: [null, 4], dtype: 'float32', sparse: false, ragged: false, name: 'in', optional: false },
      name: 'in',
      inbound_nodes: [],
    },
  ];
  let previous = 'in';
  for (const layer of layers) {
    const name = String(layer.config.name);
    entries.push({
      module: 'keras.layers',
      ...layer,
      config: { dtype: policy('float32'), ...layer.config },
      registered_name: null,
      build_config: { input_shape: [null, 4] },
      name,
      inbound_nodes: [{ args: [tensor(previous)], kwargs: { mask: null } }],
    });
    previous = name;
  }
  return {
    module: 'keras.src.models.functional',
    class_name: 'Functional',
    config: {
      name: 'm',
      trainable: true,
      layers: entries,
      input_layers: ['in', 0, 0],
      output_layers: [previous, 0, 0],
    },
  };
}

function refusal(config: Json, version = '3.15.1'): ModelError {
  try {
    toTfjsModelConfig(config, version);
  } catch (error) {
    if (error instanceof ModelError) return error;
    throw error;
  }
  throw new Error('the config was not refused');
}

const layersOf = (translated: { config: Json }) => translated.config.layers as Json[];

describe('Keras 3 spellings become tfjs-layers ones', () => {
  it('rewrites call nodes, endpoints, batch_shape, dtype policies and drops Keras registry keys', () => {
    const out = toTfjsModelConfig(keras3Chain([{ class_name: 'Dense', config: { name: 'd', units: 2 } }]), '3.15.1');
    expect(out.class_name).toBe('Functional');
    expect(out.config.input_layers).toEqual([['in', 0, 0]]);
    expect(out.config.output_layers).toEqual([['d', 0, 0]]);
    const [input, dense] = layersOf(out);
    expect(input).toEqual({
      class_name: 'InputLayer',
      config: { batch_input_shape: [null, 4], dtype: 'float32', name: 'in' },
      name: 'in',
      inbound_nodes: [],
    });
    expect(dense).toEqual({
      class_name: 'Dense',
      config: { dtype: 'float32', name: 'd', units: 2 },
      name: 'd',
      inbound_nodes: [[['in', 0, 0, {}]]],
    });
  });

  it("renames LeakyReLU's negative_slope, silu, L2 and LecunNormal, and keeps a plain ReLU", () => {
    const out = toTfjsModelConfig(
      keras3Chain([
        { class_name: 'LeakyReLU', config: { name: 'leaky', negative_slope: 0.3 } },
        {
          class_name: 'Dense',
          config: {
            name: 'd',
            units: 4,
            activation: 'silu',
            kernel_regularizer: { module: 'keras.regularizers', class_name: 'L2', config: { l2: 0.01 } },
            kernel_initializer: { module: 'keras.initializers', class_name: 'LecunNormal', config: { seed: 1 } },
          },
        },
        { class_name: 'ReLU', config: { name: 'r', max_value: 6, negative_slope: 0, threshold: 0 } },
      ]),
      '3.15.1',
    );
    const [, leaky, dense, relu] = layersOf(out);
    expect(leaky.config).toEqual({ dtype: 'float32', name: 'leaky', alpha: 0.3 });
    expect((dense.config as Json).activation).toBe('swish');
    expect((dense.config as Json).kernel_regularizer).toEqual({ class_name: 'L1L2', config: { l1: 0, l2: 0.01 } });
    expect((dense.config as Json).kernel_initializer).toEqual({ class_name: 'LeCunNormal', config: { seed: 1 } });
    expect(relu.config).toEqual({ dtype: 'float32', name: 'r', max_value: 6 });
  });

  it("numbers a nested model's call node as tfjs does: Keras 3's node 0 is tfjs's node 1", () => {
    const inner = keras3Chain([{ class_name: 'Dense', config: { name: 'inner_dense', units: 4 } }]);
    const outer = keras3Chain([]);
    const layers = (outer.config as Json).layers as Json[];
    layers.push({
      ...inner,
      config: { ...(inner.config as Json), name: 'inner' },
      name: 'inner',
      inbound_nodes: [{ args: [tensor('in')], kwargs: {} }],
    });
    layers.push({
      class_name: 'Dense',
      config: { name: 'after', units: 1 },
      name: 'after',
      inbound_nodes: [{ args: [tensor('inner')], kwargs: {} }],
    });
    (outer.config as Json).output_layers = [
      ['after', 0, 0],
      ['inner', 0, 0],
    ];
    const out = toTfjsModelConfig(outer, '3.15.1');
    expect(layersOf(out)[2].inbound_nodes).toEqual([[['inner', 1, 0, {}]]]);
    expect(out.config.output_layers).toEqual([
      ['after', 0, 0],
      ['inner', 1, 0],
    ]);
  });

  it('leaves a Keras 2 config as it is, but for the registry keys', () => {
    const keras2 = {
      class_name: 'Sequential',
      config: {
        name: 'seq',
        layers: [
          {
            module: 'keras.layers',
            class_name: 'Dense',
            config: { name: 'dense', batch_input_shape: [null, 3], units: 2, activation: 'hard_sigmoid' },
            registered_name: null,
          },
        ],
      },
    };
    expect(toTfjsModelConfig(keras2, '2.15.0')).toEqual({
      class_name: 'Sequential',
      config: {
        name: 'seq',
        layers: [
          {
            class_name: 'Dense',
            config: { name: 'dense', batch_input_shape: [null, 3], units: 2, activation: 'hard_sigmoid' },
          },
        ],
      },
    });
  });

  it('snake-cases class names as Keras 3 names their weight groups', () => {
    expect(['Conv2D', 'BatchNormalization', 'LSTM', 'DepthwiseConv2D', 'PReLU', 'ReLU'].map(snakeCase)).toEqual([
      'conv2d',
      'batch_normalization',
      'lstm',
      'depthwise_conv2d',
      'p_re_lu',
      're_lu',
    ]);
  });
});

describe('what tfjs-layers cannot compute the same way is refused, every layer named', () => {
  it('names each refused layer and why, the first as the error layer', () => {
    const error = refusal(
      keras3Chain([
        { class_name: 'ReLU', config: { name: 'leaky_relu', negative_slope: 0.1, threshold: 0 } },
        { class_name: 'Conv1D', config: { name: 'grouped', filters: 4, kernel_size: [1], groups: 2 } },
        { class_name: 'Dense', config: { name: 'lora', units: 4, lora_rank: 2 } },
        { class_name: 'Dense', config: { name: 'half', units: 4, dtype: policy('mixed_float16') } },
        { class_name: 'Dense', config: { name: 'hard', units: 4, activation: 'hard_sigmoid' } },
        { class_name: 'Subtract', config: { name: 'minus' } },
        {
          class_name: 'Dense',
          config: { name: 'stft', units: 4, kernel_initializer: { class_name: 'STFTInitializer', config: {} } },
        },
      ]),
    );
    expect(error.code).toBe('unknown-layer');
    expect(error.layer).toBe('leaky_relu');
    for (const why of [
      'leaky_relu: ReLU negative_slope',
      'grouped: grouped convolution',
      'lora: LoRA weights',
      'half: dtype policy mixed_float16',
      'hard: activation "hard_sigmoid" has no tfjs equivalent',
      'minus: Subtract is not a tf.layers class',
      'stft: kernel_initializer STFTInitializer has no tfjs equivalent',
    ]) {
      expect(error.message).toContain(why);
    }
  });

  it('refuses models nested deeper than model.json allows', () => {
    let model: Json = keras3Chain([{ class_name: 'Dense', config: { name: 'leaf', units: 4 } }]);
    for (let level = 0; level < 40; level++) {
      model = {
        class_name: 'Sequential',
        config: { name: `level_${level}`, layers: [{ ...model, config: { ...(model.config as Json) } }] },
      };
    }
    const error = refusal(model);
    expect(error.code).toBe('too-deep');
    expect(error.message).toMatch(/nested more than 32 models or wrappers deep/);
  });

  it('refuses a saved object that is not a model', () => {
    const error = refusal({ class_name: 'Dense', config: { name: 'd', units: 1 } });
    expect(error.code).toBe('bad-topology');
    expect(error.message).toMatch(/a Dense, not a Sequential or functional model/);
  });
});

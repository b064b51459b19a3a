/**
 * A Keras model config (Keras 3's `config.json`, or the `model_config` attribute of a legacy `.h5`) in
 * the Keras-JSON form tfjs-layers deserializes: the form `tensorflowjs_converter --input_format keras`
 * writes as `modelTopology.model_config`. Keras 2 configs are that form already, less the `module` /
 * `registered_name` keys the converter drops too. Keras 3 changed a few spellings that tfjs-layers 4.x
 * does not read, so they are rewritten to their Keras 2 equivalents: call nodes `{args, kwargs}` with
 * `__keras_tensor__` entries become `[layer, node, tensor, kwargs]` lists, `batch_shape` becomes
 * `batch_input_shape`, DTypePolicy objects become dtype names, LeakyReLU's `negative_slope` its `alpha`,
 * `silu` is tfjs's `swish`, and L1/L2 regularizers are L1L2.
 *
 * Anything tfjs-layers cannot compute the same way is refused, never dropped: a class it does not have,
 * or an option it lacks (grouped convolutions, GRU reset_after, LoRA, mixed precision, ...). The error
 * names every such layer at once.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from '../errors.js';
import { isObject, MAX_NESTING } from '../topology.js';

type Json = Record<string, unknown>;

export interface KerasModelConfig {
  class_name: string;
  config: Json;
}

const CONTAINERS = new Set(['Sequential', 'Functional', 'Model']);

/** JSON levels inside one layer's own config (initializers, regularizers): a handful in real configs. */
const MAX_VALUE_DEPTH = 64;

/** Keys Keras writes for its own registry and build bookkeeping; tfjs reads none of them. */
const KERAS_ONLY_KEYS = new Set(['module', 'registered_name', 'shared_object_id', 'build_config', 'compile_config']);

/** Keras activation names tfjs-layers computes with the same formula, under the name tfjs knows them by. */
const ACTIVATIONS: Record<string, string> = {
  linear: 'linear',
  relu: 'relu',
  relu6: 'relu6',
  elu: 'elu',
  selu: 'selu',
  sigmoid: 'sigmoid',
  softplus: 'softplus',
  softsign: 'softsign',
  tanh: 'tanh',
  softmax: 'softmax',
  log_softmax: 'log_softmax',
  gelu: 'gelu',
  mish: 'mish',
  swish: 'swish',
  silu: 'swish',
};

/** The layer classes tfjs-layers registered on import (the map also holds initializers and the like). */
function registeredClasses(): Record<string, [unknown, unknown]> {
  return tf.serialization.SerializationMap.getMap().classNameMap as Record<string, [unknown, unknown]>;
}

function tfjsLayerClasses(): Set<string> {
  return new Set(
    Object.entries(registeredClasses())
      .filter(([, [cls]]) => typeof cls === 'function' && cls.prototype instanceof tf.layers.Layer)
      .map(([name]) => name),
  );
}

/** Initializer classes Keras and tfjs spell differently. */
const INITIALIZER_NAMES: Record<string, string> = { LecunNormal: 'LeCunNormal', LecunUniform: 'LeCunUniform' };

interface Refusal {
  layer: string;
  why: string;
}

class Translator {
  readonly refusals: Refusal[] = [];
  /** Models and wrappers around the layer being translated (bounded as for model.json: topology.ts). */
  private nesting = 0;
  private readonly layerClasses = tfjsLayerClasses();
  private readonly registered = new Set(Object.keys(registeredClasses()));

  /** `kerasMajor` 2 or 3: Keras 3 redefined `hard_sigmoid` (x/6 + 1/2 where Keras 2 and tfjs use 0.2x + 1/2). */
  constructor(private readonly kerasMajor: number) {}

  refuse(layer: string, why: string): void {
    this.refusals.push({ layer, why });
  }

  /**
   * One layer entry of a model's `layers` list (or a wrapper's `layer`). `nested` is given for the layers
   * of a functional model, which keep their name and call nodes: the names of its layers that are models.
   */
  layer(entry: unknown, where: string, nested?: Set<string>): Json {
    if (!isObject(entry) || typeof entry.class_name !== 'string' || !isObject(entry.config)) {
      throw new ModelError('bad-topology', `${where}: a layer entry needs class_name and config`);
    }
    const className = entry.class_name;
    const name = typeof entry.config.name === 'string' ? entry.config.name : where;
    if (this.nesting >= MAX_NESTING) {
      throw new ModelError(
        'too-deep',
        `layer ${name} is nested more than ${MAX_NESTING} models or wrappers deep; at most ${MAX_NESTING} levels are supported`,
        { layer: name },
      );
    }
    this.nesting++;
    try {
      return this.translateLayer(entry as Json & { config: Json }, className, name, nested);
    } finally {
      this.nesting--;
    }
  }

  private translateLayer(entry: Json & { config: Json }, className: string, name: string, nested?: Set<string>): Json {
    if (!this.layerClasses.has(className)) {
      this.refuse(name, `${className} is not a tf.layers class`);
    }
    const config = CONTAINERS.has(className)
      ? this.model(className, entry.config, name)
      : this.layerConfig(className, name, entry.config);
    const out: Json = { class_name: className, config };
    if (nested) {
      out.name = typeof entry.name === 'string' ? entry.name : name;
      out.inbound_nodes = this.nodes(entry.inbound_nodes, name, nested);
    }
    return out;
  }

  /** A Sequential's or Functional's config, with its layers translated. */
  model(className: string, config: Json, name: string): Json {
    const layers = config.layers;
    if (!Array.isArray(layers))
      throw new ModelError('bad-topology', `model ${name}: config has no layers list`, { layer: name });
    const { layers: _layers, build_input_shape: _shape, ...rest } = config;
    const out = this.clean(rest) as Json;
    if (className === 'Sequential') {
      out.layers = foldSequentialInput(layers.map((layer, i) => this.layer(layer, `${name} layer ${i}`)));
      return out;
    }
    const keras3 = layers.some(
      (layer) => isObject(layer) && Array.isArray(layer.inbound_nodes) && layer.inbound_nodes.some(isObject),
    );
    // Keras 2 and tfjs count a nested model's own input-to-output node as its node 0, so the node made by
    // calling it is node 1; Keras 3 numbers that call node 0.
    const nested = new Set(
      keras3
        ? layers.filter((l) => isObject(l) && CONTAINERS.has(String(l.class_name))).map((l) => String((l as Json).name))
        : [],
    );
    out.layers = layers.map((layer, i) => this.layer(layer, `${name} layer ${i}`, nested));
    out.input_layers = this.endpoints(config.input_layers, name, 'input_layers', nested);
    out.output_layers = this.endpoints(config.output_layers, name, 'output_layers', nested);
    return out;
  }

  /** Keras 3 writes a model's only input or output as one `[layer, node, tensor]`; tfjs wants a list of them. */
  private endpoints(value: unknown, name: string, key: string, nested: Set<string>): unknown[] {
    const isEndpoint = (v: unknown): v is unknown[] => Array.isArray(v) && v.length === 3 && typeof v[0] === 'string';
    if (isEndpoint(value)) return [shiftNode(value, nested)];
    if (Array.isArray(value) && value.every(isEndpoint)) return value.map((v) => shiftNode(v, nested));
    this.refuse(name, `${key} ${JSON.stringify(value)} is not a list of tensors (dict inputs and outputs)`);
    return [];
  }

  /** Keras 3 call nodes `{args, kwargs}` as Keras 2 nodes: one `[layer, node, tensor, kwargs]` per input. */
  private nodes(value: unknown, layer: string, nested: Set<string>): unknown[] {
    if (value === undefined) return [];
    if (!Array.isArray(value))
      throw new ModelError('bad-topology', `layer ${layer}: inbound_nodes is not a list`, { layer });
    return value.map((node) => {
      if (Array.isArray(node)) return node;
      if (!isObject(node) || !Array.isArray(node.args)) {
        throw new ModelError('bad-topology', `layer ${layer}: an inbound node has no args list`, { layer });
      }
      const [first, ...rest] = node.args;
      const kwargs = isObject(node.kwargs) ? node.kwargs : {};
      const inputs = Array.isArray(first) ? first : [first];
      if (!inputs.every(isKerasTensor) || rest.some(holdsTensor) || Object.values(kwargs).some(holdsTensor)) {
        this.refuse(layer, 'it is called with tensors beyond its first argument (tfjs-layers nodes cannot say so)');
        return [];
      }
      const callKwargs = Object.fromEntries(Object.entries(kwargs).filter(([, v]) => v !== null));
      return inputs.map((tensor) => [...shiftNode(tensor.config.keras_history, nested), callKwargs]);
    });
  }

  /** A leaf layer's config, cleaned and with Keras 3 spellings made tfjs's; refusals recorded. */
  private layerConfig(className: string, name: string, raw: Json): Json {
    const config = this.clean(raw) as Json;
    const option = (key: string, allowed: unknown, why: string) => {
      if (config[key] !== undefined && config[key] !== allowed && config[key] !== null) this.refuse(name, why);
      delete config[key];
    };
    if (typeof config.dtype === 'string' && config.dtype !== 'float32' && className !== 'InputLayer') {
      this.refuse(name, `dtype policy ${config.dtype} (tfjs-layers computes in float32)`);
    }
    for (const key of ['activation', 'recurrent_activation']) {
      if (config[key] === undefined) continue;
      const activation = config[key];
      const tfjsName = typeof activation === 'string' ? this.activation(activation) : undefined;
      if (tfjsName === undefined) this.refuse(name, `${key} ${JSON.stringify(activation)} has no tfjs equivalent`);
      else config[key] = tfjsName;
    }
    for (const [key, value] of Object.entries(config)) {
      if (!key.endsWith('_initializer') || !isObject(value) || typeof value.class_name !== 'string') continue;
      const tfjsName = INITIALIZER_NAMES[value.class_name] ?? value.class_name;
      if (!this.registered.has(tfjsName) || this.layerClasses.has(tfjsName)) {
        this.refuse(name, `${key} ${value.class_name} has no tfjs equivalent`);
      } else {
        config[key] = { ...value, class_name: tfjsName };
      }
    }
    for (const wrapped of ['layer', 'backward_layer']) {
      if (isObject(raw[wrapped])) config[wrapped] = this.layer(raw[wrapped], `${name}.${wrapped}`);
    }
    switch (className) {
      case 'InputLayer':
        if (config.batch_shape !== undefined) {
          config.batch_input_shape = config.batch_shape;
          delete config.batch_shape;
        }
        option('sparse', false, 'sparse inputs');
        option('ragged', false, 'ragged inputs');
        delete config.optional;
        break;
      case 'ReLU':
        option('negative_slope', 0, 'ReLU negative_slope (tfjs ReLU has max_value only)');
        option('threshold', 0, 'ReLU threshold (tfjs ReLU has max_value only)');
        break;
      case 'LeakyReLU':
        if (config.negative_slope !== undefined) {
          config.alpha = config.negative_slope;
          delete config.negative_slope;
        }
        break;
      case 'GRU':
        option('reset_after', false, 'GRU reset_after=True (tfjs GRUCell refuses it; rebuild with reset_after=False)');
        break;
      case 'BatchNormalization':
        option('renorm', false, 'batch renormalization');
        delete config.renorm_clipping;
        delete config.renorm_momentum;
        delete config.synchronized;
        break;
      default:
        break;
    }
    if (/^Conv[123]D$|Conv[123]DTranspose$/.test(className)) option('groups', 1, 'grouped convolution (groups > 1)');
    if (/^Global(Average|Max)Pooling[123]D$/.test(className)) option('keepdims', false, 'keepdims=True');
    option('lora_rank', null, 'LoRA weights');
    delete config.lora_alpha;
    option('quantization_config', null, 'Keras quantization');
    return config;
  }

  private activation(name: string): string | undefined {
    if (name === 'hard_sigmoid') return this.kerasMajor < 3 ? 'hard_sigmoid' : undefined;
    return Object.hasOwn(ACTIVATIONS, name) ? ACTIVATIONS[name] : undefined;
  }

  /**
   * A copy without Keras's registry keys, with DTypePolicy objects as their dtype name and L1 / L2
   * regularizers as tfjs's L1L2. Nested layers (wrappers) are translated by `layer`, not here.
   */
  private clean(value: unknown, depth = 0): unknown {
    if (depth > MAX_VALUE_DEPTH) {
      throw new ModelError('bad-topology', `a layer config nests values more than ${MAX_VALUE_DEPTH} deep`);
    }
    if (Array.isArray(value)) return value.map((item) => this.clean(item, depth + 1));
    if (!isObject(value)) return value;
    const { class_name: className, config } = value;
    if (typeof className === 'string' && /DTypePolicy$/.test(className) && isObject(config)) return config.name;
    if ((className === 'L1' || className === 'L2' || className === 'L1L2') && isObject(config)) {
      return { class_name: 'L1L2', config: { l1: config.l1 ?? 0, l2: config.l2 ?? 0 } };
    }
    const out: Json = {};
    for (const [key, item] of Object.entries(value)) {
      if (!KERAS_ONLY_KEYS.has(key)) out[key] = this.clean(item, depth + 1);
    }
    return out;
  }
}

/**
 * A Sequential's leading InputLayer as its first layer's `batch_input_shape` (and dtype), the form Keras 2
 * wrote: tfjs-layers builds a Sequential that lists its InputLayer, but not when that Sequential is nested
 * in another model (its InputLayer's tensor is then never fed: "Graph disconnected").
 */
function foldSequentialInput(layers: Json[]): Json[] {
  const [first, next, ...rest] = layers;
  if (first?.class_name !== 'InputLayer' || next === undefined) return layers;
  const input = first.config as Json;
  const config: Json = { ...(next.config as Json), batch_input_shape: input.batch_input_shape };
  if (typeof input.dtype === 'string' && input.dtype !== 'float32') config.dtype = input.dtype;
  return [{ ...next, config }, ...rest];
}

/** `[layer, node, tensor]` with the node counted as tfjs counts it (see `model`). */
function shiftNode(history: unknown[], nested: Set<string>): unknown[] {
  const [layer, node, ...rest] = history;
  return nested.has(String(layer)) && typeof node === 'number' ? [layer, node + 1, ...rest] : history;
}

interface KerasTensor {
  class_name: '__keras_tensor__';
  config: { keras_history: unknown[] };
}

function isKerasTensor(value: unknown): value is KerasTensor {
  return (
    isObject(value) &&
    value.class_name === '__keras_tensor__' &&
    isObject(value.config) &&
    Array.isArray(value.config.keras_history)
  );
}

function holdsTensor(value: unknown): boolean {
  if (isKerasTensor(value)) return true;
  if (Array.isArray(value)) return value.some(holdsTensor);
  return isObject(value) && Object.values(value).some(holdsTensor);
}

/**
 * `config` (the whole `{class_name, config}` of the model) in tfjs-layers' Keras-JSON form. Throws a
 * ModelError `unknown-layer` naming every layer tfjs-layers cannot represent.
 */
export function toTfjsModelConfig(config: unknown, kerasVersion: string): KerasModelConfig {
  if (!isObject(config) || typeof config.class_name !== 'string' || !isObject(config.config)) {
    throw new ModelError('bad-topology', 'the Keras model config needs class_name and config');
  }
  if (!CONTAINERS.has(config.class_name)) {
    throw new ModelError(
      'bad-topology',
      `the saved object is a ${config.class_name}, not a Sequential or functional model`,
    );
  }
  const translator = new Translator(Number.parseInt(kerasVersion, 10) || 3);
  const name = typeof config.config.name === 'string' ? config.config.name : 'model';
  const translated = translator.model(config.class_name, config.config, name);
  const refusals = translator.refusals;
  if (refusals.length > 0) {
    const list = refusals.map((r) => `${r.layer}: ${r.why}`).join('; ');
    throw new ModelError('unknown-layer', `tfjs-layers cannot represent ${list}`, { layer: refusals[0].layer });
  }
  return { class_name: config.class_name, config: translated };
}

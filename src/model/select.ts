/**
 * Which weights of a model a quantization job touches (docs/job-spec.md `layers`, docs/methods.md): the kernels and embeddings that
 * hold almost all of a model's bytes. Biases, normalisation parameters and integer tensors never are.
 * Layers models are matched by weight name (`<layer name>/<weight>`, tfjs's own naming, which Keras
 * exports follow with extra scopes such as `lstm/lstm_cell/kernel`); graph models by what consumes a Const,
 * which also gives its role (a depthwise op's filter is a `depthwise_kernel`, as in a layers model).
 */
import { flattenLayers, isObject, readLayersTopology, type LayerInfo } from './topology.js';
import type { ModelOutline, QuantizableWeight, Weight, WeightRole } from './types.js';

const KERNEL: WeightRole[] = ['kernel'];
const RECURRENT: WeightRole[] = ['kernel', 'recurrent_kernel'];
const SEPARABLE: WeightRole[] = ['depthwise_kernel', 'pointwise_kernel'];

const LAYER_ROLES: Record<string, WeightRole[]> = {
  Dense: KERNEL,
  Conv1D: KERNEL,
  Conv2D: KERNEL,
  Conv3D: KERNEL,
  Conv2DTranspose: KERNEL,
  Conv3DTranspose: KERNEL,
  DepthwiseConv2D: ['depthwise_kernel'],
  SeparableConv1D: SEPARABLE,
  SeparableConv2D: SEPARABLE,
  Embedding: ['embeddings'],
  LSTM: RECURRENT,
  GRU: RECURRENT,
  SimpleRNN: RECURRENT,
  ConvLSTM2D: RECURRENT,
  RNN: RECURRENT,
};

/** Graph ops and the input positions that carry their weights. */
const GRAPH_WEIGHT_INPUTS: Record<string, number[]> = {
  MatMul: [0, 1],
  BatchMatMul: [0, 1],
  BatchMatMulV2: [0, 1],
  _FusedMatMul: [0, 1],
  Conv2D: [1],
  Conv3D: [1],
  DepthwiseConv2dNative: [1],
  Conv2DBackpropInput: [1],
  _FusedConv2D: [1],
  FusedDepthwiseConv2dNative: [1],
};

/** Ops whose weight is a depthwise kernel [h, w, in, multiplier]: its output channels are its last two axes. */
const DEPTHWISE_OPS = new Set(['DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative']);

interface LayerRoles {
  layerType: string;
  roles: WeightRole[];
}

/** A wrapper (Bidirectional, TimeDistributed) owns its inner layer's weights under its own name. */
/** Own properties only: a class or op named "constructor" must not find Object.prototype's members. */
function lookup<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

function rolesOf(layer: LayerInfo): LayerRoles {
  const own = lookup(LAYER_ROLES, layer.className);
  if (own !== undefined) return { layerType: layer.className, roles: own };
  const wrapped = layer.inner.find((inner) => lookup(LAYER_ROLES, inner.className) !== undefined);
  if (wrapped !== undefined) return rolesOf(wrapped);
  return { layerType: layer.className, roles: [] };
}

function selectLayers(model: ModelOutline): QuantizableWeight[] {
  const layers = new Map<string, LayerRoles>();
  const topology = model.modelJson.modelTopology as Record<string, unknown>;
  for (const layer of flattenLayers(readLayersTopology(topology))) {
    if (!layers.has(layer.name)) layers.set(layer.name, rolesOf(layer));
  }
  const selected: QuantizableWeight[] = [];
  for (const weight of model.weights) {
    if (weight.dtype !== 'float32') continue;
    const parts = weight.name.split('/');
    const role = parts[parts.length - 1] as WeightRole;
    // The owner is the innermost scope that names a layer: `bi/forward_lstm/kernel` belongs to `bi`.
    for (let j = parts.length - 2; j >= 0; j--) {
      const owner = layers.get(parts[j]);
      if (owner === undefined) continue;
      if (owner.roles.includes(role)) selected.push({ name: weight.name, role, layerType: owner.layerType });
      break;
    }
  }
  return selected;
}

/** `name:1` → `name`; control inputs (`^name`) carry no data. */
function inputNode(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.startsWith('^')) return undefined;
  return input.replace(/:\d+$/, '');
}

function selectGraph(model: ModelOutline): QuantizableWeight[] {
  const topology = model.modelJson.modelTopology as Record<string, unknown>;
  const nodes = (Array.isArray(topology.node) ? topology.node : []).filter(isObject);
  const byName = new Map(nodes.map((node) => [String(node.name), node]));
  const weights = new Map<string, Omit<Weight, 'values'>>(model.weights.map((w) => [w.name, w]));
  // Follow Identity nodes back to the Const they forward (frozen graphs keep `kernel/read` identities).
  const resolve = (name: string): string => {
    let current = name;
    for (let hops = 0; hops < nodes.length; hops++) {
      const node = byName.get(current);
      if (node?.op !== 'Identity' || !Array.isArray(node.input)) break;
      const next = inputNode(node.input[0]);
      if (next === undefined) break;
      current = next;
    }
    return current;
  };
  const consumers = new Map<string, string>();
  for (const node of nodes) {
    const positions = lookup(GRAPH_WEIGHT_INPUTS, String(node.op));
    if (positions === undefined || !Array.isArray(node.input)) continue;
    for (const position of positions) {
      const source = inputNode(node.input[position]);
      if (source === undefined) continue;
      const constName = resolve(source);
      const constNode = byName.get(constName);
      const weight = weights.get(constName);
      if (weight === undefined || (constNode !== undefined && constNode.op !== 'Const')) continue;
      if (weight.dtype !== 'float32' || weight.shape.length < 2 || consumers.has(constName)) continue;
      consumers.set(constName, String(node.op));
    }
  }
  return model.weights
    .filter((w) => consumers.has(w.name))
    .map((w) => {
      const op = consumers.get(w.name) as string;
      // The consuming op, not the Const, says what the weight is: per-channel quantization needs it.
      const role: WeightRole = DEPTHWISE_OPS.has(op) ? 'depthwise_kernel' : 'graph_const';
      return { name: w.name, role, layerType: op };
    });
}

/** The weights to quantize, in manifest order. */
export function quantizableWeights(model: ModelOutline): QuantizableWeight[] {
  return model.format === 'layers-model' ? selectLayers(model) : selectGraph(model);
}

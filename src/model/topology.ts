/**
 * What qaas needs to know about a model.json topology without building the model: its format, and for
 * layers models every layer (nested models, wrapped layers and RNN cells included) with its class name.
 */
import { ModelError, quoted } from './errors.js';
import type { ModelFormat } from './types.js';

/** One layer of a layers-model topology. */
export interface LayerInfo {
  name: string;
  className: string;
  /** The layer a wrapper (Bidirectional, TimeDistributed) holds, or the cell(s) of a generic RNN. */
  inner: LayerInfo[];
}

export const CONTAINER_CLASSES: ReadonlySet<string> = new Set(['Sequential', 'Functional', 'Model']);

/**
 * Models and wrappers inside each other, at most. Keras models nest a handful of levels; tfjs deserialises
 * each level by recursion, and so does every walk of the topology here, so a bound keeps them all off the
 * end of the stack.
 */
export const MAX_NESTING = 32;

/**
 * Layers along the longest path of one model, at most. tfjs builds a model's graph by recursing along its
 * paths and runs out of stack between 3,000 and 5,000 layers deep (tfjs-layers 4.22 on Node 20).
 */
export const MAX_LAYER_DEPTH = 2000;

type Json = Record<string, unknown>;

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Keras-style model.json files wrap the model in `{keras_version, backend, model_config}`, as tfjs accepts. */
export function layersRoot(modelTopology: Json): Json {
  return isObject(modelTopology.model_config) ? modelTopology.model_config : modelTopology;
}

/**
 * The format the topology says, cross-checked with the `format` field: a `node` list is a GraphDef, a
 * `class_name` + `config` pair is a Keras model. When they disagree the file cannot load either way.
 */
export function detectFormat(modelJson: Json): ModelFormat {
  const topology = modelJson.modelTopology;
  const declared = modelJson.format;
  if (!isObject(topology)) throw new ModelError('bad-topology', 'model.json has no modelTopology object');
  const root = layersRoot(topology);
  const looksLayers = typeof root.class_name === 'string' && root.config !== undefined;
  const looksGraph = Array.isArray(topology.node);
  let format: ModelFormat | undefined;
  if (looksGraph && !looksLayers) format = 'graph-model';
  else if (looksLayers && !looksGraph) format = 'layers-model';
  if (declared !== undefined && declared !== 'layers-model' && declared !== 'graph-model') {
    throw new ModelError(
      'bad-topology',
      `model.json format ${quoted(declared)} is neither layers-model nor graph-model`,
    );
  }
  if (format === undefined) {
    throw new ModelError(
      'bad-topology',
      'modelTopology is neither a Keras model (class_name + config) nor a GraphDef (node list)',
    );
  }
  if (declared !== undefined && declared !== format) {
    throw new ModelError('bad-topology', `model.json says format ${declared} but its modelTopology is a ${format}`);
  }
  return format;
}

/**
 * Layers on the longest path through a functional model's inbound nodes, found without recursion (the
 * graph may be as deep as an attacker likes). Layers on a cycle are counted once: tfjs refuses those itself.
 */
function longestPath(layers: unknown[]): number {
  const inputsOf = new Map<string, string[]>();
  for (const layer of layers) {
    if (!isObject(layer)) continue;
    const config = isObject(layer.config) ? layer.config : {};
    const name = String(config.name ?? layer.name);
    const nodes = Array.isArray(layer.inbound_nodes) ? layer.inbound_nodes : [];
    const inputs = nodes.flatMap((node) =>
      Array.isArray(node) ? node.filter(Array.isArray).map((ref) => String(ref[0])) : [],
    );
    inputsOf.set(name, inputs);
  }
  const depth = new Map<string, number>();
  let longest = 0;
  for (const start of inputsOf.keys()) {
    const stack: { name: string; expanded: boolean }[] = [{ name: start, expanded: false }];
    const onStack = new Set<string>();
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (depth.has(top.name)) {
        stack.pop();
        continue;
      }
      const inputs = (inputsOf.get(top.name) ?? []).filter((input) => inputsOf.has(input));
      if (!top.expanded) {
        top.expanded = true;
        onStack.add(top.name);
        for (const input of inputs) {
          if (!depth.has(input) && !onStack.has(input)) stack.push({ name: input, expanded: false });
        }
        continue;
      }
      stack.pop();
      onStack.delete(top.name);
      const own = 1 + Math.max(0, ...inputs.map((input) => depth.get(input) ?? 0));
      depth.set(top.name, own);
      longest = Math.max(longest, own);
    }
  }
  return longest;
}

function readLayer(entry: unknown, where: string, nesting: number): LayerInfo {
  if (!isObject(entry) || typeof entry.class_name !== 'string') {
    throw new ModelError('bad-topology', `${where}: layer entry has no class_name`);
  }
  const config = entry.config;
  const configName = isObject(config) && typeof config.name === 'string' ? config.name : undefined;
  const name = configName ?? (typeof entry.name === 'string' ? entry.name : where);
  if (nesting > MAX_NESTING) {
    throw new ModelError(
      'too-deep',
      `layer ${name} is nested ${nesting} models or wrappers deep; at most ${MAX_NESTING} levels are supported`,
      { layer: name },
    );
  }
  const info: LayerInfo = { name, className: entry.class_name, inner: [] };
  if (CONTAINER_CLASSES.has(entry.class_name)) {
    // Sequential configs are either a bare layer list (old tfjs) or `{name, layers}`.
    const layers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
    if (!Array.isArray(layers))
      throw new ModelError('bad-topology', `model ${name} has no layer list`, { layer: name });
    // A Sequential is one path through all its layers.
    const depth = entry.class_name === 'Sequential' ? layers.length : longestPath(layers);
    if (depth > MAX_LAYER_DEPTH) {
      throw new ModelError(
        'too-deep',
        `model ${name} is ${depth} layers deep; at most ${MAX_LAYER_DEPTH} layers along one path are supported`,
        { layer: name },
      );
    }
    info.inner = layers.map((layer, i) => readLayer(layer, `${name} layer ${i}`, nesting + 1));
    return info;
  }
  if (isObject(config)) {
    const inner = (layer: unknown, label: string) => info.inner.push(readLayer(layer, label, nesting + 1));
    if (config.layer !== undefined) inner(config.layer, `${name} wrapped layer`);
    const cells = config.cell === undefined ? [] : Array.isArray(config.cell) ? config.cell : [config.cell];
    cells.forEach((cell, i) => inner(cell, `${name} cell ${i}`));
    if (Array.isArray(config.cells)) config.cells.forEach((cell, i) => inner(cell, `${name} cell ${i}`));
  }
  return info;
}

/** The root of a layers-model topology as a tree of layers (the root itself is the model container). */
export function readLayersTopology(modelTopology: Json): LayerInfo {
  return readLayer(layersRoot(modelTopology), 'modelTopology', 0);
}

/** A TensorShapeProto dim size as converters write it: an integer (often a string), -1 for a free size. */
function isDimSize(size: unknown): boolean {
  if (size === undefined) return true;
  if (typeof size !== 'number' && (typeof size !== 'string' || !/^-?\d+$/.test(size))) return false;
  const value = Number(size);
  return Number.isSafeInteger(value) && value >= -1;
}

function checkProtoShape(shape: unknown, node: string, what: string): void {
  const dims = isObject(shape) && Array.isArray(shape.dim) ? shape.dim : [];
  for (const dim of dims) {
    const size = isObject(dim) ? dim.size : dim;
    if (!isDimSize(size)) {
      throw new ModelError(
        'bad-topology',
        `node ${node}: ${what} dim ${quoted(size)} is not a size (an integer ≥ 0, or -1 for any)`,
        { layer: node },
      );
    }
  }
}

/**
 * The shapes a graph model declares for its inputs and outputs (Placeholder nodes, the signature) must be
 * sizes: the record that describes the model shows them, and tfjs feeds tensors by them.
 */
export function checkGraphShapes(modelJson: Json): void {
  const topology = isObject(modelJson.modelTopology) ? modelJson.modelTopology : {};
  const nodes = Array.isArray(topology.node) ? topology.node : [];
  for (const node of nodes) {
    if (!isObject(node) || node.op !== 'Placeholder') continue;
    const attr = isObject(node.attr) ? node.attr : {};
    const shape = isObject(attr.shape) ? attr.shape.shape : undefined;
    checkProtoShape(shape, String(node.name), 'Placeholder shape');
  }
  const signature = isObject(modelJson.signature) ? modelJson.signature : {};
  for (const side of ['inputs', 'outputs'] as const) {
    const entries = isObject(signature[side]) ? signature[side] : {};
    for (const [key, entry] of Object.entries(entries)) {
      if (isObject(entry)) checkProtoShape(entry.tensorShape, key.replace(/:\d+$/, ''), `signature ${side} shape`);
    }
  }
}

/** Every layer of the tree, depth first, parents before what they hold. */
export function flattenLayers(root: LayerInfo): LayerInfo[] {
  const out: LayerInfo[] = [];
  const visit = (layer: LayerInfo): void => {
    out.push(layer);
    layer.inner.forEach(visit);
  };
  visit(root);
  return out;
}

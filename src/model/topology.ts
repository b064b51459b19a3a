/**
 * What qaas needs to know about a model.json topology without building the model: its format, and for
 * layers models every layer (nested models, wrapped layers and RNN cells included) with its class name.
 */
import { ModelError } from './errors.js';
import type { ModelFormat } from './types.js';

/** One layer of a layers-model topology. */
export interface LayerInfo {
  name: string;
  className: string;
  /** The layer a wrapper (Bidirectional, TimeDistributed) holds, or the cell(s) of a generic RNN. */
  inner: LayerInfo[];
}

export const CONTAINER_CLASSES: ReadonlySet<string> = new Set(['Sequential', 'Functional', 'Model']);

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
      `model.json format ${JSON.stringify(declared)} is neither layers-model nor graph-model`,
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

function readLayer(entry: unknown, where: string): LayerInfo {
  if (!isObject(entry) || typeof entry.class_name !== 'string') {
    throw new ModelError('bad-topology', `${where}: layer entry has no class_name`);
  }
  const config = entry.config;
  const configName = isObject(config) && typeof config.name === 'string' ? config.name : undefined;
  const name = configName ?? (typeof entry.name === 'string' ? entry.name : where);
  const info: LayerInfo = { name, className: entry.class_name, inner: [] };
  if (CONTAINER_CLASSES.has(entry.class_name)) {
    // Sequential configs are either a bare layer list (old tfjs) or `{name, layers}`.
    const layers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
    if (!Array.isArray(layers))
      throw new ModelError('bad-topology', `model ${name} has no layer list`, { layer: name });
    info.inner = layers.map((layer, i) => readLayer(layer, `${name} layer ${i}`));
    return info;
  }
  if (isObject(config)) {
    if (config.layer !== undefined) info.inner.push(readLayer(config.layer, `${name} wrapped layer`));
    const cells = config.cell === undefined ? [] : Array.isArray(config.cell) ? config.cell : [config.cell];
    cells.forEach((cell, i) => info.inner.push(readLayer(cell, `${name} cell ${i}`)));
    if (Array.isArray(config.cells)) {
      config.cells.forEach((cell, i) => info.inner.push(readLayer(cell, `${name} cell ${i}`)));
    }
  }
  return info;
}

/** The root of a layers-model topology as a tree of layers (the root itself is the model container). */
export function readLayersTopology(modelTopology: Json): LayerInfo {
  return readLayer(layersRoot(modelTopology), 'modelTopology');
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

/**
 * Finding each tfjs weight's values in a Keras weights file. The tfjs side is the model tfjs-layers builds
 * from the translated topology: its layers, depth first through nested models, each with its weights in
 * the order tfjs creates them (trainable first, as Keras does). The Keras side has two layouts:
 *
 * - Keras 3 (`model.weights.h5` in a `.keras`): `layers/<key>/vars/<i>`, where `<key>` is the snake-cased
 *   class name numbered among same-class siblings in the model's layer list (`conv2d`, `conv2d_1`, ...),
 *   nested models one `layers/<key>/` deeper, RNN weights under `cell/`, wrappers under `forward_layer/`,
 *   `backward_layer/`, `layer/`. Var i is the layer's i-th weight, the same order tfjs uses.
 * - Keras 2 layout (legacy `.h5`): `model_weights/<layer name>` lists its datasets in `weight_names`,
 *   named `[scope/]<layer>/[cell/]<weight>[:0]`; a weight is matched by its layer's and its own name.
 *
 * Every tfjs weight must be found with the shape tfjs expects, and every Keras weight used: a mismatch is
 * a ModelError naming the layer, never a silently skipped weight.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from '../errors.js';
import { isObject } from '../topology.js';
import type { Weight } from '../types.js';
import { datasetAt, groupAt, readFloat32, stringListAttribute, type Hdf5Group } from './hdf5.js';
import type { KerasModelConfig } from './topology.js';

/** A layer that holds weights, with the nested models it sits in (outermost first). */
interface Leaf {
  scope: string[];
  layer: tf.layers.Layer;
}

function* leavesOf(model: tf.LayersModel, scope: string[] = []): Generator<Leaf> {
  for (const layer of model.layers) {
    if (layer instanceof tf.LayersModel) yield* leavesOf(layer, [...scope, layer.name]);
    else yield { scope, layer };
  }
}

/** Keras's `naming.to_snake_case`, which names a layer's group in a Keras 3 weights file. */
export function snakeCase(name: string): string {
  return name
    .replace(/\W+/g, '')
    .replace(/(.)([A-Z][a-z]+)/g, '$1_$2')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

/** `scope/.../layer name` → its group path in a Keras 3 weights file, for every layer of `config`. */
function kerasV3Paths(config: KerasModelConfig, prefix = 'layers', scope = '', out = new Map<string, string>()) {
  const used = new Map<string, number>();
  const layers = Array.isArray(config.config.layers) ? config.config.layers : [];
  for (const entry of layers) {
    if (!isObject(entry) || typeof entry.class_name !== 'string' || !isObject(entry.config)) continue;
    const base = snakeCase(entry.class_name);
    const count = used.get(base);
    used.set(base, (count ?? -1) + 1);
    const path = `${prefix}/${count === undefined ? base : `${base}_${count + 1}`}`;
    const name = `${scope}${String(entry.config.name)}`;
    out.set(name, path);
    if (Array.isArray(entry.config.layers)) {
      kerasV3Paths(entry as unknown as KerasModelConfig, `${path}/layers`, `${name}/`, out);
    }
  }
  return out;
}

const V3_CHILDREN = ['cell', 'forward_layer', 'backward_layer', 'layer'];

/** A layer's vars in a Keras 3 weights file: its own `vars/0..n`, then its cell's or wrapped layers'. */
function v3Vars(group: Hdf5Group, path: string): { path: string; group: Hdf5Group; key: string }[] {
  const found: { path: string; group: Hdf5Group; key: string }[] = [];
  const vars = groupAt(group, 'vars');
  if (vars) {
    const keys = vars.keys().filter((k) => /^\d+$/.test(k));
    keys.sort((a, b) => Number(a) - Number(b));
    for (const key of keys) found.push({ path: `${path}/vars/${key}`, group: vars, key });
  }
  for (const child of V3_CHILDREN) {
    const sub = groupAt(group, child);
    if (sub) found.push(...v3Vars(sub, `${path}/${child}`));
  }
  return found;
}

function shapeText(shape: readonly (number | null)[]): string {
  return `[${shape.join(',')}]`;
}

function sameShape(a: readonly (number | null)[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function checkedWeight(
  leafName: string,
  variable: tf.LayerVariable,
  label: string,
  stored: { shape: number[]; values: Float32Array },
): Weight {
  if (!sameShape(variable.shape, stored.shape)) {
    throw new ModelError(
      'bad-topology',
      `layer ${leafName}: Keras weight ${label} has shape ${shapeText(stored.shape)}, tfjs-layers expects ${shapeText(variable.shape)}`,
      { layer: leafName, weight: label },
    );
  }
  return { name: variable.originalName, shape: stored.shape, dtype: 'float32', values: stored.values };
}

/** The weights of `model` (built from `config`) read from a Keras 3 weights file. */
export function weightsFromV3(model: tf.LayersModel, config: KerasModelConfig, root: Hdf5Group): Weight[] {
  const paths = kerasV3Paths(config);
  const weights: Weight[] = [];
  for (const { scope, layer } of leavesOf(model)) {
    const variables = layer.weights;
    const qualified = [...scope, layer.name].join('/');
    const path = paths.get(qualified);
    const group = path === undefined ? undefined : groupAt(root, path);
    const stored = group && path ? v3Vars(group, path) : [];
    if (stored.length !== variables.length) {
      throw new ModelError(
        'bad-topology',
        `layer ${qualified}: the Keras weights file holds ${stored.length} weights for it (at ${path ?? 'no path'}), tfjs-layers expects ${variables.length}`,
        { layer: layer.name },
      );
    }
    variables.forEach((variable, i) => {
      const { path: varPath, group: varsGroup, key } = stored[i];
      const dataset = datasetAt(varsGroup, key);
      if (!dataset) throw new ModelError('bad-topology', `${varPath} is not a dataset`, { layer: layer.name });
      weights.push(checkedWeight(layer.name, variable, varPath, readFloat32(dataset, varPath)));
    });
  }
  return weights;
}

/** The layer among `layerNames` that a Keras 2 weight name (`[scope/]<layer>/[cell/]<weight>[:0]`) belongs to. */
function legacyOwner(name: string, layerNames: Set<string>, fallback: string): string {
  const parts = name.split('/').slice(0, -1).reverse();
  return parts.find((part) => layerNames.has(part)) ?? fallback;
}

/**
 * The weights of `model` read from a legacy `.h5`'s `model_weights` group. Each top-level layer's group
 * lists its datasets in `weight_names`; those of one (possibly nested) layer are in the order it created
 * them, which is tfjs's order too, so they are matched by position: the names differ between Keras
 * versions (Keras 3 calls a DepthwiseConv2D's kernel `kernel`, tfjs `depthwise_kernel`).
 */
export function weightsFromLegacyH5(model: tf.LayersModel, modelWeights: Hdf5Group): Weight[] {
  const weights: Weight[] = [];
  for (const top of model.layers) {
    const leaves = top instanceof tf.LayersModel ? [...leavesOf(top)].map((leaf) => leaf.layer) : [top];
    const group = groupAt(modelWeights, top.name);
    const names = group ? (stringListAttribute(group, 'weight_names') ?? []) : [];
    const layerNames = new Set(leaves.map((leaf) => leaf.name));
    const byLeaf = new Map<string, string[]>();
    for (const name of names) {
      const owner = legacyOwner(name, layerNames, top.name);
      byLeaf.set(owner, [...(byLeaf.get(owner) ?? []), name]);
    }
    for (const leaf of leaves) {
      const stored = byLeaf.get(leaf.name) ?? [];
      byLeaf.delete(leaf.name);
      if (stored.length !== leaf.weights.length) {
        throw new ModelError(
          'bad-topology',
          `layer ${leaf.name}: the .h5 holds ${stored.length} weights for it under model_weights/${top.name} ` +
            `(${stored.join(', ') || 'none'}), tfjs-layers expects ${leaf.weights.length}`,
          { layer: leaf.name },
        );
      }
      leaf.weights.forEach((variable, i) => {
        const label = `model_weights/${top.name}/${stored[i]}`;
        const dataset = group && datasetAt(group, stored[i]);
        if (!dataset) throw new ModelError('bad-topology', `${label} is not a dataset`, { layer: leaf.name });
        weights.push(checkedWeight(leaf.name, variable, label, readFloat32(dataset, label)));
      });
    }
    const [orphan] = byLeaf.values();
    if (orphan !== undefined) {
      throw new ModelError(
        'bad-topology',
        `layer ${top.name}: the .h5 holds weights no tfjs layer takes: ${orphan.join(', ')}`,
        {
          layer: top.name,
        },
      );
    }
  }
  return weights;
}

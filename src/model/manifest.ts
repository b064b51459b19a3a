/**
 * model.json and its weightsManifest without tfjs: parsing, the per-weight checks that need only the shards'
 * sizes (`weightSlots`), and decoding one weight's bytes the way tfjs-core's `decodeWeights` does. Shared by
 * `readModel` (read.ts, everything in memory), `validateModelFiles` (validate-stream.ts) and the streaming
 * reader (stream-read.ts); the layer-class check is passed in, so importing this module loads no tfjs.
 */
import path from 'node:path';
import { halfToFloat } from '../quant/packed/decode-tensor.js';
import { ModelError, quoted } from './errors.js';
import {
  CONTAINER_CLASSES,
  checkGraphShapes,
  detectFormat,
  flattenLayers,
  isObject,
  readLayersTopology,
} from './topology.js';
import type { LoadedModel, Weight, WeightDtype } from './types.js';

export const VALUE_BYTES: Record<WeightDtype | 'uint8' | 'uint16' | 'float16', number> = {
  float32: 4,
  int32: 4,
  bool: 1,
  uint8: 1,
  uint16: 2,
  float16: 2,
};

type Quantization = { dtype: 'uint8' | 'uint16'; min: number; scale: number } | { dtype: 'float16' };

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: WeightDtype;
  quantization?: Quantization;
}

/**
 * A manifest path as a FileSet key: `./group1-shard1of2.bin` → `group1-shard1of2.bin`. Undefined for paths
 * that leave the model's directory (absolute, `..`, URLs), which are never read.
 */
export function normalizeManifestPath(manifestPath: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(manifestPath) || manifestPath.includes('\\')) return undefined;
  const normalized = path.posix.normalize(manifestPath);
  if (path.posix.isAbsolute(normalized) || normalized === '..' || normalized.startsWith('../')) return undefined;
  if (normalized === '.' || normalized.endsWith('/')) return undefined;
  return normalized;
}

export function parseModelJson(bytes: Uint8Array): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ModelError('malformed-json', `model.json is not valid JSON: ${(err as Error).message}`, {
      file: 'model.json',
    });
  }
  if (!isObject(parsed))
    throw new ModelError('malformed-json', 'model.json is not a JSON object', { file: 'model.json' });
  return parsed;
}

export function manifestGroups(modelJson: Record<string, unknown>): { paths: string[]; weights: unknown[] }[] {
  const manifest = modelJson.weightsManifest ?? [];
  if (!Array.isArray(manifest)) throw new ModelError('bad-topology', 'weightsManifest is not a list of groups');
  return manifest.map((group, g) => {
    const paths = isObject(group) ? group.paths : undefined;
    const weights = isObject(group) ? group.weights : undefined;
    if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string') || !Array.isArray(weights)) {
      throw new ModelError('bad-topology', `weightsManifest group ${g + 1} needs a paths list and a weights list`);
    }
    return { paths: paths as string[], weights };
  });
}

function parseSpec(entry: unknown, where: string): WeightSpec {
  if (!isObject(entry) || typeof entry.name !== 'string') {
    throw new ModelError('bad-topology', `${where}: weight entry has no name`);
  }
  const name = entry.name;
  const { shape, dtype, quantization } = entry;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new ModelError('bad-topology', `weight ${name}: shape ${quoted(shape)} is not a list of sizes`, {
      weight: name,
    });
  }
  if (dtype !== 'float32' && dtype !== 'int32' && dtype !== 'bool') {
    throw new ModelError('unknown-dtype', `weight ${name}: dtype ${quoted(dtype)} is not float32, int32 or bool`, {
      weight: name,
    });
  }
  const spec: WeightSpec = { name, shape: shape as number[], dtype };
  if (quantization === undefined) return spec;
  const qDtype = isObject(quantization) ? quantization.dtype : undefined;
  if (qDtype === 'uint8' || qDtype === 'uint16') {
    const { min, scale } = quantization as Record<string, unknown>;
    if (typeof min !== 'number' || typeof scale !== 'number' || !Number.isFinite(min) || !Number.isFinite(scale)) {
      throw new ModelError(
        'bad-topology',
        `weight ${name}: ${qDtype} quantization needs a finite number min and scale`,
        {
          weight: name,
        },
      );
    }
    if (dtype === 'bool') {
      throw new ModelError('unknown-dtype', `weight ${name}: bool weights cannot carry ${qDtype} quantization`, {
        weight: name,
      });
    }
    spec.quantization = { dtype: qDtype, min, scale };
  } else if (qDtype === 'float16') {
    if (dtype !== 'float32') {
      throw new ModelError(
        'unknown-dtype',
        `weight ${name}: float16 quantization is only for float32 weights, not ${dtype}`,
        {
          weight: name,
        },
      );
    }
    spec.quantization = { dtype: 'float16' };
  } else {
    throw new ModelError(
      'unknown-dtype',
      `weight ${name}: quantization dtype ${quoted(qDtype)} is not uint8, uint16 or float16`,
      { weight: name },
    );
  }
  return spec;
}

/** Decodes whole elements of one weight; `bytes` must be a fresh, aligned copy (its buffer is viewed whole). */
export function decodeValues(spec: WeightSpec, bytes: Uint8Array): Weight['values'] {
  const q = spec.quantization;
  if (q === undefined) {
    if (spec.dtype === 'float32') return new Float32Array(bytes.buffer);
    if (spec.dtype === 'int32') return new Int32Array(bytes.buffer);
    return bytes;
  }
  if (q.dtype === 'float16') {
    const halves = new Uint16Array(bytes.buffer);
    const values = new Float32Array(halves.length);
    for (let i = 0; i < halves.length; i++) values[i] = halfToFloat(halves[i]);
    return values;
  }
  const codes = q.dtype === 'uint8' ? bytes : new Uint16Array(bytes.buffer);
  const { min, scale } = q;
  if (spec.dtype === 'int32') {
    const values = new Int32Array(codes.length);
    for (let i = 0; i < codes.length; i++) values[i] = Math.round(codes[i] * scale + min);
    return values;
  }
  const values = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) values[i] = codes[i] * scale + min;
  return values;
}

/** Throws for the first NaN/±Inf; `firstIndex` is the element index of `values[0]` within the weight. */
export function checkFinite(name: string, values: Float32Array, firstIndex = 0): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) {
      throw new ModelError('non-finite', `weight ${name}: value ${v} at index ${firstIndex + i}`, { weight: name });
    }
  }
}

/** Whether tf.layers can deserialize a layer class (read.ts asks tfjs's registry; stream-read.ts a fixed list). */
export type LayerClassCheck = (className: string) => boolean;

function checkLayerClasses(modelTopology: Record<string, unknown>, known: LayerClassCheck): void {
  for (const layer of flattenLayers(readLayersTopology(modelTopology))) {
    if (CONTAINER_CLASSES.has(layer.className) || layer.className === 'InputLayer') continue;
    if (!known(layer.className)) {
      throw new ModelError('unknown-layer', `layer ${layer.name}: class ${layer.className} is not a tf.layers class`, {
        layer: layer.name,
      });
    }
  }
}

/** model.json parsed and checked: format, layer classes, manifest groups (weights not yet looked at). */
export interface Manifest {
  json: Record<string, unknown>;
  format: LoadedModel['format'];
  groups: { paths: string[]; weights: unknown[] }[];
}

export function parseManifest(modelJsonBytes: Uint8Array, knownLayerClass: LayerClassCheck): Manifest {
  const json = parseModelJson(modelJsonBytes);
  const format = detectFormat(json);
  const groups = manifestGroups(json);
  if (format === 'layers-model') checkLayerClasses(json.modelTopology as Record<string, unknown>, knownLayerClass);
  else checkGraphShapes(json);
  return { json, format, groups };
}

/** Where one weight's bytes are: `byteLength` bytes at `offset` of its group (the concatenation of `shards`). */
export interface WeightSlot {
  spec: WeightSpec;
  group: number;
  /** The group's shard files as FileSet keys, in manifest order. */
  shards: string[];
  offset: number;
  byteLength: number;
}

/**
 * Walks the manifest weight by weight, checking everything that needs only the shards' sizes: entry
 * shapes and dtypes, duplicate names, missing shard files, and that each group's bytes match its weights.
 * Lazy, so a consumer that checks the values of each slot before taking the next reports faults in the
 * same order whether the bytes are in memory (readModel) or on disk (validateModelFiles).
 */
export function* weightSlots(manifest: Manifest, sizeOf: (key: string) => number | undefined): Generator<WeightSlot> {
  const seen = new Set<string>();
  for (const [g, group] of manifest.groups.entries()) {
    const specs = group.weights.map((entry, i) => parseSpec(entry, `weightsManifest group ${g + 1} entry ${i}`));
    for (const spec of specs) {
      if (seen.has(spec.name)) {
        throw new ModelError('duplicate-weight', `weight ${spec.name} appears twice in weightsManifest`, {
          weight: spec.name,
        });
      }
      seen.add(spec.name);
    }
    let length = 0;
    const shards = group.paths.map((manifestPath) => {
      const normalized = normalizeManifestPath(manifestPath);
      const size = normalized === undefined ? undefined : sizeOf(normalized);
      if (normalized === undefined || size === undefined) {
        const why = normalized === undefined ? 'points outside the model directory' : 'is missing';
        throw new ModelError('missing-file', `weight file ${manifestPath} of group ${g + 1} ${why}`, {
          file: manifestPath,
        });
      }
      length += size;
      return normalized;
    });
    let offset = 0;
    for (const spec of specs) {
      const need = elementCount(spec.shape) * VALUE_BYTES[spec.quantization?.dtype ?? spec.dtype];
      if (offset + need > length) {
        throw new ModelError(
          'byte-length',
          `weight ${spec.name}: manifest shape [${spec.shape.join(',')}] needs ${need} bytes, ` +
            `group ${g + 1} has ${length - offset} left`,
          { weight: spec.name, file: group.paths[group.paths.length - 1] },
        );
      }
      yield { spec, group: g, shards, offset, byteLength: need };
      offset += need;
    }
    if (offset !== length) {
      const last = specs[specs.length - 1];
      throw new ModelError(
        'byte-length',
        `group ${g + 1} holds ${length} bytes but its weights${last ? ` (the last is ${last.name})` : ''} need ${offset}`,
        {
          ...(last && { weight: last.name }),
          ...(group.paths.length > 0 && { file: group.paths[group.paths.length - 1] }),
        },
      );
    }
  }
}

export function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The weight's name, shape and dtype as the manifest declares them (what a model record lists). */
export function describeWeight(spec: WeightSpec): Omit<Weight, 'values'> {
  const weight: Omit<Weight, 'values'> = { name: spec.name, shape: spec.shape, dtype: spec.dtype };
  const quantization = spec.quantization;
  if (quantization !== undefined) {
    weight.sourceQuantization =
      quantization.dtype === 'float16'
        ? { dtype: 'float16' }
        : { dtype: quantization.dtype, min: quantization.min, scale: quantization.scale };
  }
  return weight;
}

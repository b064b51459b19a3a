/**
 * Reads a TF.js model (model.json + the shards its weightsManifest lists) into a LoadedModel, validating it
 * on the way. Weights are decoded the way tfjs-core's `decodeWeights` does: each manifest group is the
 * concatenation of its shards in path order, weights follow each other in manifest order (a weight may span
 * a shard boundary), and quantized entries are expanded on read — uint8/uint16: value = v·scale + min
 * (float64 arithmetic, stored as float32; int32 weights rounded), float16: the half's exact value.
 * The checks that need only model.json and the shards' sizes (`readManifest`, `weightSlots`) are shared with
 * `validateModelFiles` (validate-stream.ts), which checks the values from disk without holding them.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from './errors.js';
import {
  checkFinite,
  decodeValues,
  describeWeight,
  normalizeManifestPath,
  parseManifest,
  weightSlots,
  type Manifest,
} from './manifest.js';
import { readFileSetFromDir } from './files.js';
import type { FileSet, LoadedModel, Weight } from './types.js';

export { readFileSetFromDir };

export {
  checkFinite,
  decodeValues,
  describeWeight,
  elementCount,
  normalizeManifestPath,
  VALUE_BYTES,
  weightSlots,
  type Manifest,
  type WeightSlot,
  type WeightSpec,
} from './manifest.js';

/** model.json checked against the layer classes tfjs has registered (its own, and any qaas registered on import). */
export function readManifest(modelJsonBytes: Uint8Array): Manifest {
  const known = tf.serialization.SerializationMap.getMap().classNameMap;
  return parseManifest(modelJsonBytes, (className) => Object.hasOwn(known, className));
}

/** A fresh, aligned copy of bytes [offset, offset + length) of the concatenation of `shards`. */
function copyFromShards(shards: Uint8Array[], offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let written = 0;
  let shardStart = 0;
  for (const shard of shards) {
    const shardEnd = shardStart + shard.byteLength;
    if (written < length && offset + written < shardEnd) {
      const from = offset + written - shardStart;
      const take = Math.min(length - written, shard.byteLength - from);
      out.set(shard.subarray(from, from + take), written);
      written += take;
    }
    shardStart = shardEnd;
    if (written === length) break;
  }
  return out;
}

/** Decodes and validates a model held in memory. Throws ModelError naming the weight, file or layer at fault. */
export function readModel(files: FileSet): LoadedModel {
  const byPath = new Map<string, Uint8Array>();
  for (const [key, bytes] of files) {
    const normalized = normalizeManifestPath(key);
    if (normalized !== undefined) byPath.set(normalized, bytes);
  }
  const modelJsonBytes = byPath.get('model.json');
  if (modelJsonBytes === undefined)
    throw new ModelError('missing-file', 'model.json is missing', { file: 'model.json' });
  const manifest = readManifest(modelJsonBytes);

  const weights: Weight[] = [];
  for (const slot of weightSlots(manifest, (key) => byPath.get(key)?.byteLength)) {
    const shards = slot.shards.map((key) => byPath.get(key)!);
    const values = decodeValues(slot.spec, copyFromShards(shards, slot.offset, slot.byteLength));
    if (values instanceof Float32Array) checkFinite(slot.spec.name, values);
    weights.push({ ...describeWeight(slot.spec), values });
  }

  const modelJson = { ...manifest.json };
  delete modelJson.weightsManifest;
  return { format: manifest.format, modelJson, weights };
}

/** readModel over a directory on disk. */
export async function readModelDir(dir: string): Promise<LoadedModel> {
  return readModel(await readFileSetFromDir(dir));
}

/**
 * Validates a TF.js model whose files are on disk without holding its weights in memory: the same checks,
 * in the same order and with the same ModelError codes and messages, as `readModel` (both walk the manifest
 * with `readManifest` + `weightSlots`). Byte lengths come from file sizes; NaN/±Inf are found by decoding
 * each float weight in chunks of whole elements read straight from its group's shards, so a weight may span
 * chunk and shard boundaries and memory stays at about one chunk whatever the model's size.
 */
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { ModelError } from './errors.js';
import {
  checkFinite,
  decodeValues,
  describeWeight,
  normalizeManifestPath,
  readManifest,
  weightSlots,
  type WeightSlot,
} from './read.js';
import type { LoadedModel, Weight } from './types.js';

/** Relative path inside the model (`model.json`, `group1-shard1of2.bin`) → the file on disk holding it. */
export type DiskFileSet = Map<string, string>;

/** What validation learns about a model: everything a LoadedModel has but the values. */
export interface ModelSummary {
  format: LoadedModel['format'];
  modelJson: Record<string, unknown>;
  weights: Omit<Weight, 'values'>[];
}

/** 1 MiB: a multiple of every element size (1, 2, 4 bytes), so chunks always hold whole elements. */
export const CHUNK_BYTES = 1 << 20;

/** Reads byte ranges of a group's shards as if they were one file, keeping each shard open once. */
class GroupReader {
  private readonly handles = new Map<string, FileHandle>();

  constructor(private readonly shards: { path: string; size: number }[]) {}

  /** Bytes [offset, offset + length) of the concatenated shards, into `out` (by default a fresh buffer). */
  async read(offset: number, length: number, out = new Uint8Array(length)): Promise<Uint8Array> {
    let written = 0;
    let shardStart = 0;
    for (const shard of this.shards) {
      const shardEnd = shardStart + shard.size;
      if (written < length && offset + written < shardEnd) {
        const from = offset + written - shardStart;
        const take = Math.min(length - written, shard.size - from);
        const handle = await this.handle(shard.path);
        let done = 0;
        while (done < take) {
          const { bytesRead } = await handle.read(out, written + done, take - done, from + done);
          // The file shrank since it was sized; the bytes the manifest promised are gone.
          if (bytesRead === 0) throw new Error(`${shard.path} ended early`);
          done += bytesRead;
        }
        written += take;
      }
      shardStart = shardEnd;
      if (written === length) break;
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.handles.values()].map((handle) => handle.close()));
    this.handles.clear();
  }

  private async handle(path: string): Promise<FileHandle> {
    let handle = this.handles.get(path);
    if (!handle) {
      handle = await open(path, 'r');
      this.handles.set(path, handle);
    }
    return handle;
  }
}

/** Decodes one float weight chunk by chunk and throws at its first non-finite value. */
async function scanWeight(slot: WeightSlot, reader: GroupReader, chunk: Uint8Array<ArrayBuffer>): Promise<void> {
  const chunkBytes = chunk.byteLength;
  for (let start = 0; start < slot.byteLength; start += chunkBytes) {
    const length = Math.min(chunkBytes, slot.byteLength - start);
    if (slot.spec.quantization === undefined) {
      // Plain float32, the bulk of an upload: read into the one reused chunk, so validating a model makes no
      // garbage per chunk (a fresh 1 MiB buffer each was ~50 MiB of RSS growth awaiting GC on a 1 GiB model).
      const bytes = await reader.read(slot.offset + start, length, chunk.subarray(0, length));
      checkFinite(slot.spec.name, new Float32Array(bytes.buffer, bytes.byteOffset, length / 4), start / 4);
      continue;
    }
    const values = decodeValues(slot.spec, await reader.read(slot.offset + start, length));
    if (!(values instanceof Float32Array)) return;
    const elementBytes = length / values.length;
    checkFinite(slot.spec.name, values, start / elementBytes);
  }
}

/**
 * `readModel`'s validation over files on disk. Throws ModelError naming the weight, file or layer at
 * fault; returns the format, model.json (without its manifest) and every weight's name, shape and dtype.
 * `chunkBytes` (a multiple of 4) is there for tests that make weights straddle chunks.
 */
export async function validateModelFiles(files: DiskFileSet, chunkBytes = CHUNK_BYTES): Promise<ModelSummary> {
  if (chunkBytes <= 0 || chunkBytes % 4 !== 0)
    throw new RangeError(`chunkBytes must be a positive multiple of 4, got ${chunkBytes}`);
  const byPath = new Map<string, { path: string; size: number }>();
  for (const [key, path] of files) {
    const normalized = normalizeManifestPath(key);
    if (normalized !== undefined) byPath.set(normalized, { path, size: (await stat(path)).size });
  }
  const modelJsonFile = byPath.get('model.json');
  if (modelJsonFile === undefined)
    throw new ModelError('missing-file', 'model.json is missing', { file: 'model.json' });
  const manifest = readManifest(new Uint8Array(await readFile(modelJsonFile.path)));

  const chunk = new Uint8Array(chunkBytes);
  const weights: ModelSummary['weights'] = [];
  // Groups are walked in order, so only the current group's shards are ever open.
  let current = null as { group: number; reader: GroupReader } | null;
  try {
    for (const slot of weightSlots(manifest, (key) => byPath.get(key)?.size)) {
      if (slot.spec.dtype === 'float32' && slot.byteLength > 0) {
        if (current?.group !== slot.group) {
          await current?.reader.close();
          current = { group: slot.group, reader: new GroupReader(slot.shards.map((key) => byPath.get(key)!)) };
        }
        await scanWeight(slot, current.reader, chunk);
      }
      weights.push(describeWeight(slot.spec));
    }
  } finally {
    await current?.reader.close();
  }

  const modelJson = { ...manifest.json };
  delete modelJson.weightsManifest;
  return { format: manifest.format, modelJson, weights };
}

/**
 * A TF.js model directory opened for streaming: model.json parsed and checked, every manifest path resolved
 * inside the directory and sized, every weight's slot (group, offset, length) known and checked against the
 * shards' sizes before one weight byte is read. `WeightReader` then reads one weight's bytes straight from
 * its shards into a buffer the caller gives (a weight spanning shards is assembled once, in place).
 *
 * The checks and messages are readModel's (read.ts and manifest.ts share them), with the layer classes
 * checked against a fixed list instead of tfjs's registry so that streaming never loads tfjs.
 */
import { open, readFile, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ModelError } from './errors.js';
import { REGISTERED_LAYER_CLASSES } from './layer-classes.js';
import {
  describeWeight,
  manifestGroups,
  normalizeManifestPath,
  parseManifest,
  parseModelJson,
  weightSlots,
  type WeightSlot,
} from './manifest.js';
import type { ModelOutline, Weight } from './types.js';

export interface ModelDirectory extends ModelOutline {
  /** The weights in manifest order, each with where its bytes are. */
  slots: { weight: Omit<Weight, 'values'>; slot: WeightSlot }[];
  /** Manifest path key → file on disk and its size. */
  files: Map<string, { path: string; size: number }>;
}

export async function openModelDirectory(dir: string): Promise<ModelDirectory> {
  const root = await realpath(dir);
  const resolveInside = async (relative: string, label: string): Promise<string> => {
    let full: string;
    try {
      full = await realpath(path.join(root, relative));
    } catch (err) {
      throw new ModelError('missing-file', `${label} cannot be read: ${(err as Error).message}`, { file: label });
    }
    if (!full.startsWith(root + path.sep)) {
      throw new ModelError('missing-file', `weight file ${label} points outside the model directory`, { file: label });
    }
    return full;
  };
  const modelJsonBytes = new Uint8Array(await readFile(await resolveInside('model.json', 'model.json')));
  const files = new Map<string, { path: string; size: number }>();
  for (const group of manifestGroups(parseModelJson(modelJsonBytes))) {
    for (const manifestPath of group.paths) {
      const key = normalizeManifestPath(manifestPath);
      if (key === undefined) {
        throw new ModelError('missing-file', `weight file ${manifestPath} points outside the model directory`, {
          file: manifestPath,
        });
      }
      if (files.has(key)) continue;
      const full = await resolveInside(key, manifestPath);
      files.set(key, { path: full, size: (await stat(full)).size });
    }
  }
  const manifest = parseManifest(modelJsonBytes, (className) => REGISTERED_LAYER_CLASSES.has(className));
  const slots = [...weightSlots(manifest, (key) => files.get(key)?.size)].map((slot) => ({
    weight: describeWeight(slot.spec),
    slot,
  }));
  const modelJson = { ...manifest.json };
  delete modelJson.weightsManifest;
  return { format: manifest.format, modelJson, weights: slots.map((s) => s.weight), slots, files };
}

/** Reads weights' bytes from their shards in manifest order, with the shard last read kept open. */
export class WeightReader {
  private current: { path: string; handle: FileHandle } | undefined;

  constructor(private readonly model: ModelDirectory) {}

  /** Bytes [offset, offset + byteLength) of the slot's group, read into `into` (at least that long). */
  async read(slot: WeightSlot, into: Uint8Array): Promise<Uint8Array> {
    const out = into.subarray(0, slot.byteLength);
    let written = 0;
    let shardStart = 0;
    for (const key of slot.shards) {
      const shard = this.model.files.get(key)!;
      const shardEnd = shardStart + shard.size;
      if (written < slot.byteLength && slot.offset + written < shardEnd) {
        const from = slot.offset + written - shardStart;
        const take = Math.min(slot.byteLength - written, shard.size - from);
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
      if (written === slot.byteLength) break;
    }
    return out;
  }

  async close(): Promise<void> {
    const current = this.current;
    this.current = undefined;
    await current?.handle.close();
  }

  private async handle(file: string): Promise<FileHandle> {
    if (this.current?.path !== file) {
      await this.close();
      this.current = { path: file, handle: await open(file, 'r') };
    }
    return this.current.handle;
  }
}

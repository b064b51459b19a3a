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
import type { DiskFileSet } from './validate-stream.js';

export interface ModelDirectory extends ModelOutline {
  /** The weights in manifest order, each with where its bytes are. */
  slots: { weight: Omit<Weight, 'values'>; slot: WeightSlot }[];
  /** Manifest path key → file on disk and its size. */
  files: Map<string, { path: string; size: number }>;
}

/**
 * A model directory, or the files of a model stored elsewhere (DiskFileSet: manifest path → file on disk,
 * as the service keeps uploads as blobs).
 */
export type ModelSource = string | DiskFileSet;

export async function openModelDirectory(source: ModelSource): Promise<ModelDirectory> {
  const resolveInside = typeof source === 'string' ? await insideDirectory(source) : inFileSet(source);
  const modelJsonBytes = new Uint8Array(await readFile(await resolveInside('model.json', 'model.json')));
  const shards = new Map<string, string>();
  for (const group of manifestGroups(parseModelJson(modelJsonBytes))) {
    for (const manifestPath of group.paths) {
      const key = normalizeManifestPath(manifestPath);
      if (key === undefined) {
        throw new ModelError('missing-file', `weight file ${manifestPath} points outside the model directory`, {
          file: manifestPath,
        });
      }
      if (!shards.has(key)) shards.set(key, manifestPath);
    }
  }
  // All at once (a 1 GiB model's 257 shards: 25 ms one after another, a round trip to the thread pool each),
  // and the first failure in manifest order is the one reported, as before.
  const found = await Promise.allSettled(
    [...shards].map(async ([key, manifestPath]) => {
      const full = await resolveInside(key, manifestPath);
      return [key, { path: full, size: (await stat(full)).size }] as const;
    }),
  );
  const files = new Map<string, { path: string; size: number }>();
  for (const result of found) {
    if (result.status === 'rejected') throw result.reason;
    files.set(...result.value);
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

type Resolve = (relative: string, label: string) => Promise<string>;

/** Paths under `dir` that stay inside it, lexically and through symlinks (readFileSetFromDir's rule). */
async function insideDirectory(dir: string): Promise<Resolve> {
  const root = await realpath(dir);
  return async (relative, label) => {
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
}

function inFileSet(files: DiskFileSet): Resolve {
  const byKey = new Map<string, string>();
  for (const [key, file] of files) {
    const normalized = normalizeManifestPath(key);
    if (normalized !== undefined) byKey.set(normalized, file);
  }
  return async (relative, label) => {
    const file = byKey.get(relative);
    if (file === undefined) throw new ModelError('missing-file', `${label} is missing`, { file: label });
    return file;
  };
}

/**
 * Reads weights' bytes from their shards in manifest order: the pieces of one weight (one per shard it spans)
 * are read at once, and only the shard the last weight ended in stays open.
 */
export class WeightReader {
  private readonly open = new Map<string, Promise<FileHandle>>();

  constructor(private readonly model: ModelDirectory) {}

  /** Bytes [offset, offset + byteLength) of the slot's group, read into `into` (at least that long). */
  async read(slot: WeightSlot, into: Uint8Array): Promise<Uint8Array> {
    const out = into.subarray(0, slot.byteLength);
    const pieces: { file: string; from: number; at: number; length: number }[] = [];
    let at = 0;
    let shardStart = 0;
    for (const key of slot.shards) {
      const shard = this.model.files.get(key)!;
      const shardEnd = shardStart + shard.size;
      if (at < slot.byteLength && slot.offset + at < shardEnd) {
        const from = slot.offset + at - shardStart;
        const length = Math.min(slot.byteLength - at, shard.size - from);
        pieces.push({ file: shard.path, from, at, length });
        at += length;
      }
      shardStart = shardEnd;
      if (at === slot.byteLength) break;
    }
    await Promise.all(pieces.map((piece) => this.readPiece(out, piece)));
    const last = pieces.at(-1)?.file;
    for (const [file, handle] of this.open) {
      if (file === last) continue;
      this.open.delete(file);
      await (await handle).close();
    }
    return out;
  }

  async close(): Promise<void> {
    const handles = [...this.open.values()];
    this.open.clear();
    await Promise.allSettled(handles.map(async (handle) => (await handle).close()));
  }

  private async readPiece(
    out: Uint8Array,
    piece: { file: string; from: number; at: number; length: number },
  ): Promise<void> {
    let handle = this.open.get(piece.file);
    if (handle === undefined) {
      handle = open(piece.file, 'r');
      this.open.set(piece.file, handle);
    }
    const file = await handle;
    let done = 0;
    while (done < piece.length) {
      const { bytesRead } = await file.read(out, piece.at + done, piece.length - done, piece.from + done);
      // The file shrank since it was sized; the bytes the manifest promised are gone.
      if (bytesRead === 0) throw new Error(`${piece.file} ended early`);
      done += bytesRead;
    }
  }
}

/**
 * A model directory's files into memory, free of tfjs so the stores and the job sandbox can read artifacts
 * without loading it (src/model/read.ts decodes them into a LoadedModel).
 */
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { ModelError } from './errors.js';
import { manifestGroups, normalizeManifestPath, parseModelJson } from './manifest.js';
import type { FileSet } from './types.js';

/**
 * Reads model.json and exactly the files its manifest names from `dir` into a FileSet keyed by normalised
 * path. Paths that leave `dir` (lexically or through a symlink) are refused, never read.
 */
export async function readFileSetFromDir(dir: string): Promise<FileSet> {
  const root = await realpath(dir);
  const outside = (label: string): ModelError =>
    new ModelError('missing-file', `weight file ${label} points outside the model directory`, { file: label });
  const read = async (relative: string, label: string): Promise<Uint8Array> => {
    let full: string;
    try {
      full = await realpath(path.join(root, relative));
    } catch (err) {
      throw new ModelError('missing-file', `${label} cannot be read: ${(err as Error).message}`, { file: label });
    }
    if (!full.startsWith(root + path.sep)) throw outside(label);
    const buffer = await readFile(full);
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  };
  const files: FileSet = new Map();
  const modelJsonBytes = await read('model.json', 'model.json');
  files.set('model.json', modelJsonBytes);
  for (const group of manifestGroups(parseModelJson(modelJsonBytes))) {
    for (const manifestPath of group.paths) {
      const key = normalizeManifestPath(manifestPath);
      if (key === undefined) throw outside(manifestPath);
      if (!files.has(key)) files.set(key, await read(key, manifestPath));
    }
  }
  return files;
}

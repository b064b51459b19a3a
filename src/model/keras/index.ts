/**
 * Keras models where a TF.js model is expected: telling a Keras upload or path from a TF.js one, and
 * converting whichever Keras form it is. A set of files is Keras when it has no model.json and is either a
 * Keras 3 archive's three files (a `.keras` upload arrives expanded, like any zip) or one legacy `.h5`.
 */
import path from 'node:path';
import { ModelError } from '../errors.js';
import type { WriteOptions } from '../write.js';
import { readKerasArchive } from './archive.js';
import {
  convertKerasArchive,
  convertKerasH5,
  KERAS_ARCHIVE_FILES,
  type ConvertedKerasModel,
  type KerasArchiveFiles,
} from './convert.js';

export { convertKerasArchive, convertKerasH5, readKerasArchive, type ConvertedKerasModel, type KerasArchiveFiles };

/** The form a Keras model was uploaded in: a Keras 3 `.keras` archive or a legacy HDF5 `.h5`. */
export type KerasFormat = 'keras' | 'h5';

export type FoundKeras = { format: 'keras' } | { format: 'h5'; file: string };

/** Which Keras model `paths` (the relative paths of one upload) are, or undefined when they are none. */
export function findKerasModel(paths: string[]): FoundKeras | undefined {
  if (paths.some((p) => path.posix.basename(p) === 'model.json')) return undefined;
  // config.json + metadata.json are a Keras 3 archive's: a missing weights file is the converter's to name.
  if (paths.includes('config.json') && paths.includes('metadata.json')) return { format: 'keras' };
  return paths.length === 1 && isKerasPath(paths[0]) && !/\.keras$/i.test(paths[0])
    ? { format: 'h5', file: paths[0] }
    : undefined;
}

/** Converts the Keras model `findKerasModel` found, reading its files (by upload path) with `read`. */
export async function convertFoundKeras(
  found: FoundKeras,
  read: (path: string) => Promise<Uint8Array | undefined>,
  options: WriteOptions = {},
): Promise<ConvertedKerasModel & { format: KerasFormat }> {
  const readOrRefuse = async (name: string): Promise<Uint8Array> => {
    const bytes = await read(name);
    if (bytes !== undefined) return bytes;
    const why = name === 'model.weights.h5' ? ' (sharded Keras weights are not supported)' : '';
    throw new ModelError('missing-file', `the Keras model has no ${name}${why}`, { file: name });
  };
  if (found.format === 'h5') {
    const bytes = await readOrRefuse(found.file);
    return { format: 'h5', ...(await convertKerasH5(bytes, path.posix.basename(found.file), options)) };
  }
  const archive = Object.fromEntries(
    await Promise.all(KERAS_ARCHIVE_FILES.map(async (name) => [name, await readOrRefuse(name)] as const)),
  ) as unknown as KerasArchiveFiles;
  return { format: 'keras', ...(await convertKerasArchive(archive, options)) };
}

/** Whether a file name is a Keras model's (`.keras`, or HDF5 `.h5` / `.hdf5`). */
export function isKerasPath(file: string): boolean {
  return /\.(keras|h5|hdf5)$/i.test(file);
}

/** A whole `.keras` or `.h5` file's bytes converted; `name` (its file name) says which it is. */
export async function convertKerasBytes(
  bytes: Uint8Array,
  name: string,
  options: WriteOptions = {},
): Promise<ConvertedKerasModel & { format: KerasFormat }> {
  if (/\.keras$/i.test(name)) {
    return { format: 'keras', ...(await convertKerasArchive(await readKerasArchive(bytes, name), options)) };
  }
  return { format: 'h5', ...(await convertKerasH5(bytes, name, options)) };
}

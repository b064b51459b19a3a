/**
 * Reading HDF5 bytes (a Keras `.h5`, or the `model.weights.h5` inside a `.keras`) with h5wasm: the HDF5
 * C library compiled to WebAssembly, shipped inside its npm package, so no native build and no Python.
 * The bytes go into h5wasm's in-memory file system under a unique name for the time of one `withHdf5`
 * call (until the promise `read` returns settles) and are removed after it, whatever it threw.
 */
import { randomUUID } from 'node:crypto';
import * as h5wasm from 'h5wasm';
import { ModelError } from '../errors.js';

export type Hdf5Group = h5wasm.Group;
export type Hdf5Dataset = h5wasm.Dataset;

/** Runs `read` on the HDF5 file held in `bytes`; `label` names the file in errors. */
/** HDF5 reports faults through its error stack, which h5wasm prints; its throwing handler makes them errors. */
const ready = h5wasm.ready.then((module) => {
  module.activate_throwing_error_handler();
  return module;
});

/** The innermost cause in an HDF5 error stack (`#006: ... in H5F__super_read(): file signature not found`). */
function hdf5Cause(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const causes = [...message.matchAll(/#\d+: .* in \w+\(\): (.*)$/gm)].map((match) => match[1]);
  return causes.at(-1) ?? message.split('\n')[0];
}

export async function withHdf5<T>(
  bytes: Uint8Array,
  label: string,
  read: (file: h5wasm.File) => T | Promise<T>,
): Promise<T> {
  const { FS } = await ready;
  const path = `/${randomUUID()}.h5`;
  FS.writeFile(path, bytes);
  let file: h5wasm.File | undefined;
  try {
    try {
      file = new h5wasm.File(path, 'r');
    } catch (error) {
      throw new ModelError('malformed-file', `${label} is not a readable HDF5 file: ${hdf5Cause(error)}`, {
        file: label,
      });
    }
    try {
      return await read(file);
    } catch (error) {
      // A file that opens can still fail to read (a truncated dataset, a corrupt B-tree): its fault, not ours.
      if (error instanceof Error && error.message.startsWith('HDF5-DIAG')) {
        throw new ModelError('malformed-file', `${label} cannot be read: ${hdf5Cause(error)}`, { file: label });
      }
      throw error;
    }
  } finally {
    file?.close();
    FS.unlink(path);
  }
}

/** The entity at `path` when it is a group, else undefined. */
export function groupAt(parent: Hdf5Group, path: string): Hdf5Group | undefined {
  const entity = parent.get(path);
  return entity instanceof h5wasm.Group ? entity : undefined;
}

/** The entity at `path` when it is a dataset, else undefined. */
export function datasetAt(parent: Hdf5Group, path: string): Hdf5Dataset | undefined {
  const entity = parent.get(path);
  return entity instanceof h5wasm.Dataset ? entity : undefined;
}

/** A string attribute (HDF5 stores Keras's JSON and version strings as variable-length strings). */
export function stringAttribute(entity: Hdf5Group, name: string): string | undefined {
  if (!Object.hasOwn(entity.attrs, name)) return undefined;
  const value = entity.attrs[name].value;
  return typeof value === 'string' ? value : undefined;
}

/** A string-list attribute (`weight_names`, `layer_names`); a lone string is a list of one. */
export function stringListAttribute(entity: Hdf5Group, name: string): string[] | undefined {
  if (!Object.hasOwn(entity.attrs, name)) return undefined;
  const value = entity.attrs[name].value;
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[];
  return undefined;
}

/** A dataset's values as float32 (float64 is narrowed, as Keras does when it loads them); shape with them. */
export function readFloat32(dataset: Hdf5Dataset, label: string): { shape: number[]; values: Float32Array } {
  const value = dataset.value;
  const shape = dataset.shape ?? [];
  if (value instanceof Float32Array) return { shape, values: value };
  if (value instanceof Float64Array) return { shape, values: Float32Array.from(value) };
  throw new ModelError('unknown-dtype', `weight ${label}: HDF5 dtype ${dataset.dtype} is not float32 or float64`, {
    weight: label,
  });
}

/**
 * A stored dataset record's blobs opened as a streaming Dataset (src/model/dataset), for the worker: the
 * blob store keeps each uploaded file whole under its sha256, so the record says which reader applies.
 */
import { openDataset, type Dataset } from '../model/dataset/index.js';
import type { BlobStore } from './blobs.js';
import type { DatasetRecord } from './types.js';

export function openStoredDataset(record: DatasetRecord, blobs: BlobStore): Promise<Dataset> {
  const { x, inputs, y } = record;
  // One .npz or JSON blob holds every array; .npy arrays have a blob each.
  const first = inputs?.[0] ?? x!;
  if (first.encoding === 'json') return openDataset({ json: blobs.pathOf(first.sha256) });
  if (first.encoding === 'npz') return openDataset({ npz: blobs.pathOf(first.sha256) });
  const labels = y ? { y: blobs.pathOf(y.sha256) } : {};
  if (inputs)
    return openDataset({ inputs: inputs.map(({ name, sha256 }) => ({ name, path: blobs.pathOf(sha256) })), ...labels });
  return openDataset({ x: blobs.pathOf(first.sha256), ...labels });
}

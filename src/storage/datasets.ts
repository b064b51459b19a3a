/**
 * A stored dataset record's blobs opened as a streaming Dataset (src/model/dataset), for the worker: the
 * blob store keeps each uploaded file whole under its sha256, so the record says which reader applies.
 */
import { openDataset, type Dataset } from '../model/dataset/index.js';
import type { BlobStore } from './blobs.js';
import type { DatasetRecord } from './types.js';

export function openStoredDataset(record: DatasetRecord, blobs: BlobStore): Promise<Dataset> {
  const { x, y } = record;
  if (x.encoding === 'json') return openDataset({ json: blobs.pathOf(x.sha256) });
  if (x.encoding === 'npz') return openDataset({ npz: blobs.pathOf(x.sha256) });
  return openDataset(y ? { x: blobs.pathOf(x.sha256), y: blobs.pathOf(y.sha256) } : { x: blobs.pathOf(x.sha256) });
}

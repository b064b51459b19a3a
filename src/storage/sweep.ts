/**
 * Garbage collection of DATA_DIR. Blobs are shared by content, so deleting a model or a dataset leaves its
 * blobs behind; the sweep removes the blobs that no model or dataset record names, once they are older than
 * a grace period, the temp files of uploads that died, the artifacts of jobs whose record is gone (a crash
 * between a job's deletion and its files') and the temp trees of killed artifact writers.
 *
 * Why nothing in use is lost: every record is created right after its blobs were renamed into place (a
 * re-upload of the same bytes renames a fresh copy over the old blob), so a blob written within the grace
 * period is never removed, and BlobStore.removeIfOlderThan puts back a blob whose fresh copy arrived while
 * the sweep was looking. A model or dataset that an unfinished job needs cannot be deleted (409), so its
 * blobs stay referenced until the job ends. Sweeps in several processes at once are safe for the same
 * reasons.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from './blobs.js';
import { isId, type RecordStore } from './records.js';

export interface SweepOptions {
  /** Blobs and temp files written less than this long ago are kept. */
  graceMs: number;
  /** Count what would be removed, remove nothing. */
  dryRun?: boolean;
  now?: number;
}

export interface SweepResult {
  referenced: number;
  removed: number;
  removedBytes: number;
  /** Unreferenced blobs kept because they are younger than the grace period. */
  young: number;
  staleTemp: number;
  /** Artifact directories of deleted jobs and temp trees, removed. */
  artifacts: number;
}

/** The sha256 of every blob a model or dataset record names, across tenants. */
export async function referencedBlobs(records: RecordStore): Promise<Set<string>> {
  const referenced = new Set<string>();
  for await (const model of records.scanAll('models')) for (const file of model.files) referenced.add(file.sha256);
  for await (const dataset of records.scanAll('datasets')) {
    for (const array of dataset.inputs ?? [dataset.x!]) referenced.add(array.sha256);
    if (dataset.y) referenced.add(dataset.y.sha256);
  }
  return referenced;
}

export async function sweepBlobs(records: RecordStore, blobs: BlobStore, options: SweepOptions): Promise<SweepResult> {
  const cutoffMs = (options.now ?? Date.now()) - options.graceMs;
  const referenced = await referencedBlobs(records);
  const result: SweepResult = {
    referenced: referenced.size,
    removed: 0,
    removedBytes: 0,
    young: 0,
    staleTemp: 0,
    artifacts: 0,
  };
  for await (const blob of blobs.list()) {
    if (referenced.has(blob.sha256)) continue;
    if (blob.mtimeMs >= cutoffMs) {
      result.young++;
    } else if (options.dryRun || (await blobs.removeIfOlderThan(blob.sha256, cutoffMs))) {
      result.removed++;
      result.removedBytes += blob.bytes;
    }
  }
  if (!options.dryRun) {
    result.staleTemp = await blobs.removeStaleTemp(cutoffMs);
    result.artifacts = await sweepArtifacts(records, join(blobs.dataDir, 'artifacts'), cutoffMs);
  }
  return result;
}

/** `artifacts/{tenant}/{jobId}` of jobs that have no record, and `.…tmp-…`/`.…old-…` trees, older than the cutoff. */
async function sweepArtifacts(records: RecordStore, root: string, cutoffMs: number): Promise<number> {
  let removed = 0;
  for (const tenant of await readdir(root).catch(() => [])) {
    const tenantDir = join(root, tenant);
    for (const entry of await readdir(tenantDir).catch(() => [])) {
      const path = join(tenantDir, entry);
      const info = await stat(path).catch(() => null);
      if (!info || info.mtimeMs >= cutoffMs) continue;
      const orphan = isId('jobs', entry) ? (await records.get('jobs', tenant, entry)) === null : entry.startsWith('.');
      if (orphan) {
        await rm(path, { recursive: true, force: true });
        removed++;
      }
    }
  }
  return removed;
}

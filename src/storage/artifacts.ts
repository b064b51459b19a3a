/**
 * Where a job's artifacts live: `DATA_DIR/artifacts/{tenant}/{jobId}/` holding `model/`, `packed/` and
 * `report.json`, written in one piece by writeTreeAtomically.
 */
import { join, resolve, sep } from 'node:path';
import { isSafeRelativePath } from './tree.js';

export function artifactDir(dataDir: string, tenant: string, jobId: string): string {
  return join(dataDir, 'artifacts', tenant, jobId);
}

/** The file for an artifact path, or null when the path would leave the job's directory. */
export function artifactFile(dir: string, path: string): string | null {
  if (!isSafeRelativePath(path)) return null;
  const full = resolve(dir, path);
  return full.startsWith(dir + sep) ? full : null;
}

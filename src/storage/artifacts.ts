/**
 * A job's artifacts: `DATA_DIR/artifacts/{tenant}/{jobId}/` holding `model/`, `packed/` and `report.json`,
 * written in one piece by writeTreeAtomically (a retried job replaces them whole), read here for the API.
 */
import { createReadStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import yazl from 'yazl';
import type { FileSet } from '../model/types.js';
import { readFileSetFromDir } from '../model/read.js';
import { isSafeRelativePath, listTree, writeTreeAtomically } from './tree.js';

export function artifactDir(dataDir: string, tenant: string, jobId: string): string {
  return join(dataDir, 'artifacts', tenant, jobId);
}

/** The file for an artifact path, or null when the path would leave the job's directory. */
export function artifactFile(dir: string, path: string): string | null {
  if (!isSafeRelativePath(path)) return null;
  const full = resolve(dir, path);
  return full.startsWith(dir + sep) ? full : null;
}

export class ArtifactStore {
  constructor(private readonly dataDir: string) {}

  dir(tenant: string, jobId: string): string {
    return artifactDir(this.dataDir, tenant, jobId);
  }

  write(tenant: string, jobId: string, files: FileSet): Promise<void> {
    return writeTreeAtomically(this.dir(tenant, jobId), files);
  }

  readReport(tenant: string, jobId: string): Promise<string> {
    return readFile(join(this.dir(tenant, jobId), 'report.json'), 'utf8');
  }

  /** One artifact file as a stream with its size; null when there is no such file (or the path leaves the job). */
  async open(tenant: string, jobId: string, path: string): Promise<{ stream: Readable; bytes: number } | null> {
    const file = artifactFile(this.dir(tenant, jobId), path);
    const info = file ? await stat(file).catch(() => null) : null;
    if (!file || !info?.isFile()) return null;
    return { stream: createReadStream(file), bytes: info.size };
  }

  /** Every artifact, zipped as it streams out. */
  async zip(tenant: string, jobId: string): Promise<Readable> {
    const dir = this.dir(tenant, jobId);
    const zip = new yazl.ZipFile();
    for (const path of await listTree(dir)) zip.addFile(join(dir, path), path);
    zip.end();
    return zip.outputStream as Readable;
  }

  /** The stock TF.js model the job exported (`model/`). */
  readModelFiles(tenant: string, jobId: string): Promise<FileSet> {
    return readFileSetFromDir(join(this.dir(tenant, jobId), 'model'));
  }

  remove(tenant: string, jobId: string): Promise<void> {
    return rm(this.dir(tenant, jobId), { recursive: true, force: true });
  }
}

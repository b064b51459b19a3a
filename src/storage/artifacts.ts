/**
 * A job's artifacts: `DATA_DIR/artifacts/{tenant}/{jobId}/` holding `model/`, `packed/` and `report.json`,
 * written in one piece by writeTreeAtomically (a retried job replaces them whole), read here for the API.
 */
import { createReadStream, type ReadStream } from 'node:fs';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { PassThrough, Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { crc32 as nativeCrc32 } from 'node:zlib';
import yazl from 'yazl';
import type { FileSet } from '../model/types.js';
import { readFileSetFromDir } from '../model/files.js';
import { writeDirAtomically, isSafeRelativePath, listTree, writeTreeAtomically } from './tree.js';

// yazl checksums every entry with buffer-crc32, pure JS at about 200 MB/s here: 2.5 s of the API's CPU for the
// 512 MiB zip of a 1 GiB job. zlib.crc32 (Node ≥ 22.2) is the same CRC-32 at 2.5 GB/s. yazl calls
// `unsigned(chunk, runningCrc)` of the copy it requires, so that copy (resolved from yazl's own location) gets
// zlib's. test/http/artifacts-zip.test.ts checks every entry's CRC against zlib's.
const yazlCrc32 = createRequire(createRequire(import.meta.url).resolve('yazl'))('buffer-crc32') as {
  unsigned: (input: Buffer, previous?: number) => number;
};
yazlCrc32.unsigned = (input, previous = 0) => nativeCrc32(input, previous);

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

  async write(tenant: string, jobId: string, files: FileSet): Promise<void> {
    await this.removeTempTrees(tenant, jobId);
    await writeTreeAtomically(this.dir(tenant, jobId), files);
  }

  /**
   * Artifacts a writer puts on disk itself (the streaming engine writes model/, packed/ and report.json
   * tensor by tensor): `fill` creates and fills a directory, not there yet, that becomes the job's artifacts
   * whole once it resolves (writeDirAtomically). Returns fill's result and the artifact paths, sorted.
   */
  async fill<T>(
    tenant: string,
    jobId: string,
    fill: (dir: string) => Promise<T>,
  ): Promise<{ result: T; paths: string[] }> {
    await this.removeTempTrees(tenant, jobId);
    let paths: string[] = [];
    const result = await writeDirAtomically(this.dir(tenant, jobId), async (temp) => {
      const filled = await fill(temp);
      paths = await listTree(temp);
      return filled;
    });
    return { result, paths };
  }

  /**
   * The temp trees attempts of this job left beside its directory (a worker killed mid-write: the streaming
   * engine writes for the whole job). Called as an attempt starts, and when the queue gives the job up: only
   * one attempt holds a job at a time, so they are dead.
   */
  async removeTempTrees(tenant: string, jobId: string): Promise<void> {
    const parent = dirname(this.dir(tenant, jobId));
    const prefix = `.${jobId}.tmp-`;
    const entries = await readdir(parent).catch(() => []);
    await Promise.all(
      entries
        .filter((name) => name.startsWith(prefix))
        .map((name) => rm(join(parent, name), { recursive: true, force: true })),
    );
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

  /**
   * Every artifact as one zip, read from disk while it streams out: yazl pipes one file at a time with
   * backpressure, so memory stays at a few stream buffers whatever the job's size. Weight shards (`.bin`) are
   * stored, not deflated: deflate takes 16% off quantized codes at about 20 MB/s of a core (measured on
   * uint8 codes), which on a 1 GiB job would be half a minute of the API's CPU for little; the JSON and
   * markdown are deflated. Destroying the stream (a client that went away) closes the file being read; a
   * file that cannot be read (the job deleted mid-download) destroys the stream with that error.
   */
  async zip(tenant: string, jobId: string): Promise<Readable> {
    const dir = this.dir(tenant, jobId);
    const entries = await Promise.all(
      (await listTree(dir)).map(async (path) => ({ path, file: join(dir, path), info: await stat(join(dir, path)) })),
    );
    const zip = new yazl.ZipFile();
    const output = zip.outputStream as PassThrough;
    const reading = new Set<ReadStream>();
    const fail = (error: Error) => output.destroy(error);
    zip.on('error', fail);
    output.once('close', () => {
      for (const stream of reading) stream.destroy();
    });
    for (const { path, file, info } of entries) {
      const options = { size: info.size, mtime: info.mtime, mode: info.mode, compress: !path.endsWith('.bin') };
      zip.addReadStreamLazy(path, options, (callback) => {
        // Once nobody reads, no file is opened: yazl is left waiting and dropped with the stream.
        if (output.destroyed) return;
        const stream = createReadStream(file);
        reading.add(stream);
        stream.once('close', () => reading.delete(stream));
        stream.on('error', fail);
        callback(null, stream);
      });
    }
    zip.end();
    return output;
  }

  /** The stock TF.js model the job exported (`model/`). */
  readModelFiles(tenant: string, jobId: string): Promise<FileSet> {
    return readFileSetFromDir(join(this.dir(tenant, jobId), 'model'));
  }

  remove(tenant: string, jobId: string): Promise<void> {
    return rm(this.dir(tenant, jobId), { recursive: true, force: true });
  }
}

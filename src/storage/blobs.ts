/**
 * Content-addressed blobs under `DATA_DIR/blobs/ab/abcdef…` (sha256). Every write goes to a temp file in
 * `DATA_DIR/tmp` first and is renamed into place, so a crash never leaves a half blob under its hash; a blob
 * that already exists is kept (same hash, same bytes).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isSafeRelativePath } from './tree.js';

export interface BlobInfo {
  sha256: string;
  bytes: number;
}

export class BlobStore {
  readonly tmpDir: string;
  private readonly blobDir: string;

  constructor(readonly dataDir: string) {
    this.tmpDir = join(dataDir, 'tmp');
    this.blobDir = join(dataDir, 'blobs');
  }

  pathOf(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return join(this.blobDir, sha256.slice(0, 2), sha256);
  }

  async putBytes(bytes: Uint8Array): Promise<BlobInfo> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const target = this.pathOf(sha256);
    if (await exists(target)) return { sha256, bytes: bytes.byteLength };
    const temp = await this.tempPath();
    await writeFile(temp, bytes);
    await this.moveIntoPlace(temp, target);
    return { sha256, bytes: bytes.byteLength };
  }

  /** Streams `source` into the store without holding it in memory. */
  async putStream(source: Readable): Promise<BlobInfo> {
    const hash = createHash('sha256');
    let bytes = 0;
    const temp = await this.tempPath();
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(source, tap, createWriteStream(temp));
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    const sha256 = hash.digest('hex');
    await this.moveIntoPlace(temp, this.pathOf(sha256));
    return { sha256, bytes };
  }

  read(sha256: string): Promise<Buffer> {
    return readFile(this.pathOf(sha256));
  }

  stream(sha256: string): Readable {
    return createReadStream(this.pathOf(sha256));
  }

  /**
   * A fresh directory in the temp dir holding `files` under their paths as hard links to their blobs: a
   * reader that wants a model directory (the streaming engine) gets one without a byte copied. Linked
   * copies keep their bytes if the blob is swept meanwhile; the caller removes the directory (the sweep
   * removes one a crash left behind).
   */
  async linkDir(files: { path: string; sha256: string }[]): Promise<string> {
    const dir = await this.tempPath('.dir');
    try {
      for (const file of files) {
        if (!isSafeRelativePath(file.path)) throw new Error(`unsafe path: ${file.path}`);
        const target = join(dir, file.path);
        await mkdir(dirname(target), { recursive: true });
        await link(this.pathOf(file.sha256), target);
      }
      return dir;
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Every blob's hash, size and last write (an identical re-upload renames a fresh copy over it). */
  async *list(): AsyncGenerator<{ sha256: string; bytes: number; mtimeMs: number }> {
    for (const shard of await readdirOrEmpty(this.blobDir)) {
      for (const sha256 of await readdirOrEmpty(join(this.blobDir, shard))) {
        if (!/^[0-9a-f]{64}$/.test(sha256)) continue;
        const info = await stat(this.pathOf(sha256)).catch(() => null);
        if (info?.isFile()) yield { sha256, bytes: info.size, mtimeMs: info.mtimeMs };
      }
    }
  }

  /**
   * Removes the blob if it was last written before `cutoffMs`. It is first renamed aside, and put back if the
   * file moved aside turns out to be newer: an upload that renamed a fresh copy over it just before keeps it.
   */
  async removeIfOlderThan(sha256: string, cutoffMs: number): Promise<boolean> {
    const target = this.pathOf(sha256);
    const aside = await this.tempPath('.sweep');
    try {
      await rename(target, aside);
    } catch {
      return false;
    }
    if ((await stat(aside)).mtimeMs < cutoffMs) {
      await unlink(aside);
      return true;
    }
    await rename(aside, target);
    return false;
  }

  /** Removes files left in the temp dir by uploads that died, once older than `cutoffMs`. */
  async removeStaleTemp(cutoffMs: number): Promise<number> {
    let removed = 0;
    for (const name of await readdirOrEmpty(this.tmpDir)) {
      const path = join(this.tmpDir, name);
      const info = await stat(path).catch(() => null);
      if (info && info.mtimeMs < cutoffMs) {
        await rm(path, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  /** Throws unless a file can be written (and removed) where the blobs are: the readiness check. */
  async probeWritable(): Promise<void> {
    const probe = await this.tempPath('.ready');
    await writeFile(probe, '');
    await rm(probe);
  }

  /** A fresh path in the store's temp dir (same file system as the blobs, so rename is atomic). */
  async tempPath(suffix = ''): Promise<string> {
    await mkdir(this.tmpDir, { recursive: true });
    return join(this.tmpDir, `${randomUUID()}${suffix}`);
  }

  private async moveIntoPlace(temp: string, target: string): Promise<void> {
    await mkdir(join(target, '..'), { recursive: true });
    await rename(temp, target);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

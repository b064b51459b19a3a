/**
 * Content-addressed blobs under `DATA_DIR/blobs/ab/abcdef…` (sha256). Every write goes to a temp file in
 * `DATA_DIR/tmp` first and is renamed into place, so a crash never leaves a half blob under its hash; a blob
 * that already exists is kept (same hash, same bytes).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

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

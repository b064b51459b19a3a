/**
 * Writing a model's files as its tensors are done: `ShardWriter` cuts the stock `model/` weight bytes into
 * `group1-shard{i}of{n}.bin` files as they come (the shard count is only known at the end, so shards are
 * renamed then), and `PositionalFile` writes items at offsets known in advance (packed/weights.bin, whose
 * two sections are laid out before the first tensor is quantized). Neither keeps a copy of what it wrote.
 */
import { open, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { shardPaths } from './write.js';

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number | null): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      done,
      bytes.byteLength - done,
      position === null ? null : position + done,
    );
    done += bytesWritten;
  }
}

export class ShardWriter {
  private handle: FileHandle | undefined;
  private shards = 0;
  private inShard = 0;
  private total = 0;

  constructor(
    private readonly dir: string,
    private readonly shardSize: number,
  ) {
    if (!Number.isSafeInteger(shardSize) || shardSize <= 0) {
      throw new RangeError(`shardSizeBytes must be a positive integer, got ${shardSize}`);
    }
  }

  get bytesWritten(): number {
    return this.total;
  }

  /** Appends `bytes` to the weight data; they may be reused once this resolves. */
  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.byteLength) {
      if (this.handle === undefined || this.inShard === this.shardSize) await this.nextShard();
      const take = Math.min(bytes.byteLength - at, this.shardSize - this.inShard);
      await writeFully(this.handle!, bytes.subarray(at, at + take), null);
      at += take;
      this.inShard += take;
      this.total += take;
    }
  }

  /** Closes the last shard and gives the shards their final names; returns them in order. */
  async finish(): Promise<string[]> {
    await this.handle?.close();
    this.handle = undefined;
    const paths = shardPaths(this.shards);
    for (const [i, name] of paths.entries()) await rename(this.partPath(i + 1), path.join(this.dir, name));
    return paths;
  }

  /** Closes what is open after a failure; the caller removes the directory. */
  async abort(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }

  private async nextShard(): Promise<void> {
    await this.handle?.close();
    this.shards += 1;
    this.inShard = 0;
    this.handle = await open(this.partPath(this.shards), 'w');
  }

  private partPath(index: number): string {
    return path.join(this.dir, `.shard-${index}.part`);
  }
}

export class PositionalFile {
  private constructor(private readonly handle: FileHandle) {}

  static async create(file: string): Promise<PositionalFile> {
    return new PositionalFile(await open(file, 'w'));
  }

  /** Writes `bytes` at `position`; they may be reused once this resolves. */
  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    await writeFully(this.handle, bytes, position);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

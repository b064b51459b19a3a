/**
 * The report's gzip sizes at a cost worth what they tell (docs/report.md, `gzipSample`). Gzip at the default
 * level runs at 25–35 MiB/s here, so on a 1 GiB model the two figures would cost half a minute, twenty
 * times the quantization itself. Up to EXACT_GZIP_BYTES (8 MiB) of weights every byte is compressed; beyond, every
 * `every`-th block of GZIP_BLOCK_BYTES (about GZIP_SAMPLE_BLOCKS blocks in all) is compressed as one stream
 * at the same level and the size scaled to the whole. Either way the bytes are the ones already passing by
 * (read or written): the meter copies what it samples and never reads the model again.
 */
import { constants as zlibConstants, createGzip, type Gzip } from 'node:zlib';

export const EXACT_GZIP_BYTES = 8 * 1024 * 1024;
export const GZIP_BLOCK_BYTES = 64 * 1024;
export const GZIP_SAMPLE_BLOCKS = 64;

/** 1 (every block: exact) up to EXACT_GZIP_BYTES of weights, else the sampling stride in blocks. */
export function gzipStride(weightBytes: number): number {
  if (weightBytes <= EXACT_GZIP_BYTES) return 1;
  return Math.ceil(Math.ceil(weightBytes / GZIP_BLOCK_BYTES) / GZIP_SAMPLE_BLOCKS);
}

export class GzipMeter {
  private readonly gzip: Gzip = createGzip({ level: zlibConstants.Z_DEFAULT_COMPRESSION });
  private readonly ended: Promise<void>;
  private compressed = 0;
  private seen = 0;
  private sampled = 0;
  private readonly stage = new Uint8Array(GZIP_BLOCK_BYTES);

  constructor(private readonly every: number) {
    this.gzip.on('data', (chunk: Buffer) => {
      this.compressed += chunk.byteLength;
    });
    this.ended = new Promise((resolve, reject) => {
      this.gzip.on('end', resolve);
      this.gzip.on('error', reject);
    });
  }

  /** Takes the next bytes of the stream; `bytes` may be reused as soon as this returns. */
  async add(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.byteLength) {
      const block = Math.floor(this.seen / GZIP_BLOCK_BYTES);
      const inBlock = this.seen - block * GZIP_BLOCK_BYTES;
      const take = Math.min(bytes.byteLength - at, GZIP_BLOCK_BYTES - inBlock);
      if (block % this.every === 0) {
        this.stage.set(bytes.subarray(at, at + take), inBlock);
        this.sampled += take;
        if (inBlock + take === GZIP_BLOCK_BYTES) await this.flush(GZIP_BLOCK_BYTES);
      }
      at += take;
      this.seen += take;
    }
  }

  /** The gzip size of everything added: exact with stride 1, else the sample's scaled to the whole. */
  async size(): Promise<number> {
    const tail = this.seen % GZIP_BLOCK_BYTES;
    if (tail > 0 && Math.floor(this.seen / GZIP_BLOCK_BYTES) % this.every === 0) await this.flush(tail);
    this.gzip.end();
    await this.ended;
    if (this.every === 1 || this.sampled === 0) return this.compressed;
    return Math.round((this.compressed * this.seen) / this.sampled);
  }

  /**
   * Whole blocks go to zlib as one write each, wherever the callers' chunks end, so the compressed stream
   * depends only on the bytes (the in-memory pipeline and the streaming one report the same size).
   */
  private async flush(length: number): Promise<void> {
    // Buffer.from copies: the stage is refilled right away.
    if (!this.gzip.write(Buffer.from(this.stage.subarray(0, length)))) {
      await new Promise((resolve) => this.gzip.once('drain', resolve));
    }
  }
}

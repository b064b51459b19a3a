import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { GZIP_BLOCK_BYTES, GzipMeter, gzipStride } from '../../src/pipeline/gzip-size.js';
import { createRng } from '../../src/quant/rng.js';

/** Weight-like bytes: float32 values of a bell-shaped distribution, plus a run of zeros that compresses. */
function weightBytes(size: number, seed: number): Uint8Array {
  const rng = createRng(seed);
  const values = Float32Array.from({ length: size / 4 }, (_, i) =>
    i % 5000 < 1000 ? 0 : (rng.next() + rng.next() + rng.next() - 1.5) * 0.05,
  );
  return new Uint8Array(values.buffer);
}

async function metered(bytes: Uint8Array, every: number, chunk: number): Promise<number> {
  const meter = new GzipMeter(every);
  for (let at = 0; at < bytes.byteLength; at += chunk) {
    const copy = bytes.slice(at, at + chunk);
    await meter.add(copy);
    copy.fill(0xff); // the meter must not keep the caller's buffer
  }
  return meter.size();
}

describe('GzipMeter', () => {
  it('is exact with stride 1: the size of gzip over the whole stream, however it is chunked', async () => {
    const bytes = weightBytes(3 * GZIP_BLOCK_BYTES + 1236, 1);
    const expected = gzipSync(bytes).byteLength;
    expect(await metered(bytes, 1, 1000)).toBe(expected);
    expect(await metered(bytes, 1, 77_777)).toBe(expected);
    expect(await metered(bytes, 1, bytes.byteLength)).toBe(expected);
  });

  it('estimates from every n-th block within 1% on weight-like data, chunking aside', async () => {
    const bytes = weightBytes(96 * GZIP_BLOCK_BYTES, 2);
    const exact = gzipSync(bytes).byteLength;
    const estimate = await metered(bytes, 8, 50_000);
    expect(Math.abs(estimate - exact) / exact).toBeLessThan(0.01);
    expect(await metered(bytes, 8, 1 << 20)).toBe(estimate);
  });

  it('samples about 64 blocks beyond 8 MiB, and every byte up to it', () => {
    expect(gzipStride(8 * 1024 * 1024)).toBe(1);
    expect(gzipStride(8 * 1024 * 1024 + 1)).toBe(3);
    expect(gzipStride(1024 * 1024 * 1024)).toBe(256);
  });
});

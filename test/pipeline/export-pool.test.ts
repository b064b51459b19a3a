import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { inlineExporter, workerExporter, type Exporter } from '../../src/pipeline/export-pool.js';
import type { ExportedTensor } from '../../src/quant/export-affine.js';
import { affineGrid } from '../../src/quant/methods/grid.js';
import { parseMethodParams, type MethodParams } from '../../src/quant/methods/index.js';
import { createRng } from '../../src/quant/rng.js';

/**
 * A tensor larger than the affine kernel's memory may hold (wasm32's 4 GiB; here a limit of 64 KiB stands in
 * for it) is read into a buffer of its own and goes through the kernel a window at a time, on the main thread
 * and on worker threads (which are sent that SharedArrayBuffer instead of the slot's memory). Its export must
 * be the in-memory one's byte for byte, and its input is left as read (in the memory, codes overwrite it).
 */

const LIMIT = 64 * 1024;
const SHAPE = [300, 257];
const SIZE = SHAPE[0] * SHAPE[1];

function weights(): Float32Array {
  const rng = createRng(5);
  // Channels of very different ranges, so per-channel grids differ.
  return Float32Array.from({ length: SIZE }, (_, i) => (rng.next() - 0.4) * (1 + (i % SHAPE[1])) * 1e-3);
}

const cases: [string, MethodParams][] = [
  ['affine uint8 per tensor', parseMethodParams({ name: 'affine', bits: 8 })],
  ['affine uint16 per tensor', parseMethodParams({ name: 'affine', bits: 16 })],
  ['affine 4-bit per channel', parseMethodParams({ name: 'affine', bits: 4, granularity: 'per-channel' })],
  ['affine percentile (the method module)', parseMethodParams({ name: 'affine', bits: 8, range: 'percentile' })],
];

/** Digests, not the bytes: a failing comparison of arrays this long takes the test runner minutes to print. */
function digest(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

interface Outcome {
  stored: string;
  packed: string;
  exported: Omit<ExportedTensor, 'stored' | 'packedCodes'>;
  /** Whether the input buffer still holds the weights after the export. */
  inputKept: boolean;
}

async function exportWith(exporter: Exporter, params: MethodParams): Promise<Outcome> {
  const values = weights();
  const slot = await exporter.acquire();
  try {
    const input = new Float32Array(slot.input(values.byteLength).buffer, 0, SIZE);
    input.set(values);
    const { exported } = await slot.run(input, SHAPE, params, 7);
    const { stored, packedCodes, ...rest } = exported;
    return {
      stored: digest(stored),
      packed: digest(packedCodes),
      exported: structuredClone(rest),
      inputKept: input.every((x, i) => Object.is(x, values[i])),
    };
  } finally {
    slot.release();
  }
}

const exporters: Exporter[] = [];
function track(exporter: Exporter): Exporter {
  exporters.push(exporter);
  return exporter;
}
afterAll(async () => {
  await Promise.all(exporters.map((e) => e.close()));
});

describe('a tensor too large for the kernel memory', () => {
  const reference = track(inlineExporter());
  const inline = track(inlineExporter(LIMIT));
  const threaded = track(workerExporter(1, LIMIT));

  it.each(cases)('%s: the same export, on the main thread and on a worker thread', async (_, params) => {
    const expected = await exportWith(reference, params);
    const fused = params.name === 'affine' && params.range === 'minmax';
    // In the kernel's memory the fused export writes its outputs over the input.
    expect(expected.inputKept).toBe(!fused);
    for (const exporter of [inline, threaded]) {
      const outcome = await exportWith(exporter, params);
      expect(outcome.inputKept).toBe(true);
      expect(outcome.stored).toEqual(expected.stored);
      expect(outcome.packed).toEqual(expected.packed);
      expect(outcome.exported).toEqual(expected.exported);
    }
    expect(expected.exported.error.mse).toBeGreaterThan(0);
  });
});

describe('a tensor of more than 4 GiB', () => {
  // A structured clone keeps a view's length modulo 2^32 bytes: sent as a view, this tensor arrived as its
  // last 4 MiB. Its untouched pages are the kernel's zero page, so it costs the 1 GiB of codes in memory.
  it('goes to a worker thread whole and comes back whole', { timeout: 120_000 }, async () => {
    const count = 2 ** 30 + 2 ** 20;
    const exporter = track(workerExporter(1));
    const slot = await exporter.acquire();
    try {
      const input = new Float32Array(slot.input(4 * count).buffer, 0, count);
      input[5] = 0.5;
      input[2 ** 30 + 7] = 0.9;
      input[count - 3] = -0.7;
      const { exported } = await slot.run(input, [count], parseMethodParams({ name: 'affine', bits: 8 }), 1);
      const grid = affineGrid(Math.fround(-0.7), Math.fround(0.9), 8, false);
      expect(exported.bitsPerWeight).toBe(8 + 64 / count);
      expect(exported.stored.byteLength).toBe(count);
      expect(exported.packedCodes.byteLength).toBe(count);
      expect(exported.quantization).toEqual({
        dtype: 'uint8',
        min: Math.fround(grid.min),
        scale: Math.fround(grid.scale),
      });
      expect(exported.stored[count - 3]).toBe(0);
      expect(exported.stored[2 ** 30 + 7]).toBe(255);
      expect(exported.stored[5]).toBe(Math.floor(Math.fround(0.5) / grid.scale + grid.zeroPoint + 0.5));
      expect(exported.stored[count - 1]).toBe(grid.zeroPoint);
    } finally {
      slot.release();
    }
  });
});

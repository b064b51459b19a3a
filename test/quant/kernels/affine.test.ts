import { describe, expect, it } from 'vitest';
import { AFFINE_WAT, assemble } from '../../../tools/wasm.js';
import { exportAffineMinMax, ExportScratch, packedCodes } from '../../../src/quant/export-affine.js';
import { encodeFloat16 } from '../../../src/quant/float16.js';
import { decodeTensor } from '../../../src/quant/packed/decode-tensor.js';
import { AFFINE_WASM_BASE64 } from '../../../src/quant/kernels/affine-wasm.js';
import { AffineKernel, alignedEnd } from '../../../src/quant/kernels/affine.js';
import { affine, affineGrid, type AffineParams } from '../../../src/quant/methods/affine.js';
import { errorFromSums, tensorError } from '../../../src/quant/metrics.js';
import { createRng } from '../../../src/quant/rng.js';

function params(
  bits: number,
  symmetric: boolean,
  granularity: AffineParams['granularity'] = 'per-tensor',
): AffineParams {
  return {
    name: 'affine',
    bits,
    symmetric,
    granularity,
    rounding: 'nearest',
    range: 'minmax',
    percentile: 99.99,
    seed: 0,
  };
}

/** Seeded weights of mixed magnitude, a few exact zeros and −0s among them. */
function weights(count: number, seed: number, shift = 0): Float32Array {
  const rng = createRng(seed);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const u = rng.next();
    values[i] = u < 0.01 ? 0 : u < 0.02 ? -0 : (rng.next() - 0.5) * 0.2 * (1 + 9 * (i % 7 === 0 ? 1 : 0)) + shift;
  }
  return values;
}

/** The grid's code range (src/quant/methods/grid.ts affineGrid). */
function codeRange(bits: number, symmetric: boolean): { minCode: number; maxCode: number } {
  return { minCode: symmetric ? 1 : 0, maxCode: 2 ** bits - 1 };
}

/** Channel `c` (last axis) of a [rows, channels] tensor. */
function column(values: Float32Array, shape: number[], c: number): number[] {
  return Array.from({ length: shape[0] }, (_, row) => values[row * shape[1] + c]);
}

/** What the in-memory pipeline computes for the tensor: the affine module, then tensorError. */
function inMemory(values: Float32Array, bits: number, symmetric: boolean) {
  const result = affine.quantize(values, [values.length], params(bits, symmetric), createRng(0));
  return { codes: result.codes, encoding: result.encoding, error: tensorError(values, result.dequantized) };
}

describe('the affine WebAssembly kernel', () => {
  it('is the assembly of affine.wat as committed (npm run build:wasm)', async () => {
    const assembled = await assemble(AFFINE_WAT);
    expect(Buffer.from(AFFINE_WASM_BASE64, 'base64').equals(Buffer.from(assembled))).toBe(true);
  });

  // 1M + 3 crosses the kernel's 1M-weight calls and windows and ends in an odd tail.
  const sizes = [0, 1, 2, 3, 5, 17, (1 << 20) + 3];
  const cases = [
    { bits: 8, symmetric: false },
    { bits: 8, symmetric: true },
    { bits: 16, symmetric: false },
    { bits: 4, symmetric: true },
    { bits: 2, symmetric: false },
  ];

  it.each(cases)(
    'gives the affine module’s codes and tensorError’s figures bit for bit ($bits bits, symmetric $symmetric)',
    ({ bits, symmetric }) => {
      for (const [k, size] of sizes.entries()) {
        for (const shift of [0, 0.5]) {
          const values = weights(size, 100 * bits + k, shift);
          const expected = inMemory(values, bits, symmetric);
          // Read into the scratch's input (the streaming path), and from an array of its own (windowed).
          const scratch = new ExportScratch();
          const input = new Float32Array(scratch.input(values.byteLength).buffer, 0, size);
          input.set(values);
          for (const source of [input, values]) {
            const exported = exportAffineMinMax(source, [size], params(bits, symmetric), scratch);
            expect(exported.encoding, `size ${size}`).toEqual(expected.encoding);
            expect(
              Buffer.from(exported.stored).equals(Buffer.from(expected.codes.buffer, 0, exported.stored.byteLength)),
            ).toBe(true);
            expect(exported.codeCount).toBe(size);
            expect(exported.error, `size ${size}, shift ${shift}`).toEqual(expected.error);
          }
        }
      }
    },
  );

  // Channels that fill SIMD vectors and ones that leave a tail; 262145 × 4 crosses the 1M-weight calls.
  const channelShapes = [
    [7, 3],
    [6, 4],
    [9, 5],
    [33, 64],
    [262145, 4],
  ];

  it.each([
    { bits: 8, symmetric: false, forms: ['float16', 'float32'] },
    { bits: 4, symmetric: true, forms: ['float16'] },
    { bits: 16, symmetric: false, forms: ['float32'] },
  ])(
    'per channel, gives the affine module’s codes and ŵ, stored as float16 or float32 by the 1% rule, and tensorError’s figures of what is stored ($bits bits, symmetric $symmetric)',
    ({ bits, symmetric }) => {
      const stored: string[] = [];
      for (const [k, shape] of channelShapes.entries()) {
        const size = shape[0] * shape[1];
        const values = weights(size, 10 * bits + k, k % 2 ? 0.02 : 0);
        // One channel far wider than the others, as a BatchNorm-folded kernel has; with 3+ channels, one whose ŵ
        // are float16 subnormals and one beyond float16's range (on the vector path and the scalar one).
        for (let i = 1; i < size; i += shape[1]) values[i] *= 50;
        if (shape[1] >= 3) {
          for (let i = 2; i < size; i += shape[1]) values[i] *= 1e-4;
          for (let i = 0; i < size; i += shape[1]) values[i] *= 1e6;
        }
        const expected = affine.quantize(values, shape, params(bits, symmetric, 'per-channel'), createRng(0));
        const halves = encodeFloat16(expected.dequantized);
        const scratch = new ExportScratch();
        const input = new Float32Array(scratch.input(values.byteLength).buffer, 0, size);
        input.set(values);
        // The 1% rule on the module's ŵ: float16 when its squared error is at most 1.01× float32's.
        const halfValues = decodeTensor({ kind: 'float16' }, halves, shape);
        const storedAs =
          tensorError(values, halfValues).mse <= tensorError(values, expected.dequantized).mse * 1.01
            ? 'float16'
            : 'float32';
        if (expected.encoding.kind !== 'affine') throw new Error('expected an affine encoding');
        const { scales, mins } = expected.encoding;
        const grids = Array.from({ length: shape[1] }, (_, c) => {
          const channel = column(values, shape, c);
          return affineGrid(
            channel.reduce((a, b) => Math.min(a, b), 0),
            channel.reduce((a, b) => Math.max(a, b), 0),
            bits,
            symmetric,
          );
        });
        expect(Float32Array.from(grids, (g) => g.scale)).toEqual(scales);
        // + 0: a zero min may be −0 on one side and +0 on the other.
        expect(Array.from(grids, (g) => g.min + 0)).toEqual(Array.from(mins, (m) => m + 0));
        // The kernel's own outputs, whichever form is stored: codes, ŵ and its float16 bits.
        const direct = new ExportScratch().kernel.quantizeChannels(values, grids, bits, false, {
          codes: bits <= 8 ? new Uint8Array(size) : new Uint16Array(size),
          dequantized: new Float32Array(size),
          halves: new Uint16Array(size),
        });
        expect(
          Array.from(direct.codes).every((code, i) => code === expected.codes[i]),
          `shape ${shape}`,
        ).toBe(true);
        expect(Buffer.from(direct.dequantized.buffer).equals(Buffer.from(expected.dequantized.buffer))).toBe(true);
        expect(Buffer.from(direct.halves.buffer).equals(Buffer.from(halves.buffer)), `shape ${shape}`).toBe(true);
        // Both candidates' sums, float16's too when float32 is stored.
        expect(errorFromSums(direct.half, size), `shape ${shape}`).toEqual(tensorError(values, halfValues));
        expect(errorFromSums(direct.full, size), `shape ${shape}`).toEqual(tensorError(values, expected.dequantized));
        for (const source of [input, values]) {
          const exported = exportAffineMinMax(source, shape, params(bits, symmetric, 'per-channel'), scratch);
          expect(exported.encoding).toEqual(expected.encoding);
          expect(exported.storedAs, `shape ${shape}`).toBe(storedAs);
          stored.push(exported.storedAs);
          const storedValues = exported.storedAs === 'float16' ? halfValues : expected.dequantized;
          const storedBytes = exported.storedAs === 'float16' ? halves : expected.dequantized;
          expect(Buffer.from(exported.stored).equals(Buffer.from(storedBytes.buffer)), `shape ${shape}`).toBe(true);
          expect(exported.error, `shape ${shape}`).toEqual(tensorError(values, storedValues));
          const codeBytes = bits <= 8 ? Uint8Array.from(expected.codes) : Uint16Array.from(expected.codes);
          expect(Buffer.from(exported.packedCodes).equals(Buffer.from(packedCodes(codeBytes, bits)))).toBe(true);
        }
      }
      console.log(bits, stored.join(','));
      // The rule picks each form somewhere across the shapes and widths (8 bits: float16 is within 1%).
      expect(stored.length).toBe(2 * channelShapes.length);
    },
  );

  it.each([3, 4])(
    'rounds ŵ to float16 as halfOfFloat32Bits does, subnormals and overflow included (%i channels)',
    (channels) => {
      // Magnitudes whose ŵ are float16 subnormals (and zeros), normals, or beyond 65504; each tensor on its
      // own, so one channel's sums do not drown another's.
      for (const magnitude of [3e-5, 1, 2e5]) {
        const rows = 257;
        const size = rows * channels;
        const values = Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.37) * magnitude);
        const shape = [rows, channels];
        const expected = affine.quantize(values, shape, params(8, false, 'per-channel'), createRng(0));
        if (expected.encoding.kind !== 'affine') throw new Error('expected an affine encoding');
        const { scales, mins } = expected.encoding;
        const grids = Array.from(scales, (scale, c) => ({
          scale,
          min: mins[c],
          zeroPoint: Math.round(-mins[c] / scale),
          ...codeRange(8, false),
        }));
        const direct = new ExportScratch().kernel.quantizeChannels(values, grids, 8, false, {
          codes: new Uint8Array(size),
          dequantized: new Float32Array(size),
          halves: new Uint16Array(size),
        });
        const halves = encodeFloat16(expected.dequantized);
        expect(Buffer.from(direct.halves.buffer).equals(Buffer.from(halves.buffer)), `magnitude ${magnitude}`).toBe(
          true,
        );
        const halfValues = decodeTensor({ kind: 'float16' }, halves, shape);
        expect(errorFromSums(direct.half, size), `magnitude ${magnitude}`).toEqual(tensorError(values, halfValues));
      }
    },
  );

  it('stages a window past values of its own memory without touching them (a tensor too big to quantize in place)', () => {
    const shape = [300001, 4];
    const size = shape[0] * shape[1];
    const values = weights(size, 11);
    const expected = affine.quantize(values, shape, params(8, false, 'per-channel'), createRng(0));
    const kernel = new AffineKernel();
    kernel.reserve(values.byteLength);
    const held = new Float32Array(kernel.buffer, 0, size);
    held.set(values);
    const stagingAt = alignedEnd(values.byteLength);
    const { lo, hi } = kernel.channelRanges(held, 4, true);
    const grids = Array.from(lo, (low, c) => affineGrid(low, hi[c], 8, false));
    const out = kernel.quantizeChannels(
      held,
      grids,
      8,
      false,
      { codes: new Uint8Array(size), dequantized: new Float32Array(size), halves: new Uint16Array(size) },
      stagingAt,
    );
    expect(
      Buffer.from(new Float32Array(kernel.buffer, 0, size).buffer, 0, values.byteLength).equals(
        Buffer.from(values.buffer),
      ),
    ).toBe(true);
    expect(Buffer.from(out.dequantized.buffer).equals(Buffer.from(expected.dequantized.buffer))).toBe(true);
    expect(out.codes.every((code, i) => code === expected.codes[i])).toBe(true);
    expect(errorFromSums(out.full, size)).toEqual(tensorError(values, expected.dequantized));
  });

  it('carries its sums across calls: a tensor in pieces sums as in one piece', () => {
    const kernel = new AffineKernel();
    const values = weights(1001, 7);
    const grid = affineGrid(Math.min(0, ...values), Math.max(0, ...values), 8, false);
    const whole = { errorEnergy: 0, signalEnergy: 0, reconstructedEnergy: 0, dot: 0, maxAbsError: 0 };
    const pieces = { ...whole };
    kernel.reserve(8192);
    new Float32Array(kernel.buffer, 0, values.length).set(values);
    kernel.quantizeAt(0, 4096, values.length, 8, grid, whole);
    kernel.quantizeAt(0, 6000, 333, 8, grid, pieces);
    kernel.quantizeAt(4 * 333, 6000 + 333, values.length - 333, 8, grid, pieces);
    expect(pieces).toEqual(whole);
    expect(Buffer.from(kernel.buffer, 6000, 1001).equals(Buffer.from(kernel.buffer, 4096, 1001))).toBe(true);
    // Σw² of the seeded weights, summed here in index order as the kernel does.
    let signal = 0;
    for (const w of values) signal += w * w;
    expect(whole.signalEnergy).toBe(signal);
  });

  it('finds the range [min(0, w), max(0, w)] and reports ±Infinity', () => {
    const kernel = new AffineKernel();
    expect(kernel.range(Float32Array.of(0.25, 3, 0.5, 1, 2))).toEqual([0, 3]);
    expect(kernel.range(Float32Array.of(-0.25, -3, -0.5, -1, -2, -0))).toEqual([-3, 0]);
    expect(kernel.range(Float32Array.of(-0, -0, -0, -0, -0)).map((x) => Object.is(x, -0))).toEqual([false, false]);
    expect(kernel.range(Float32Array.of(1, 2, 3, -Infinity, 4))).toEqual([-Infinity, 4]);
  });

  it('finds a NaN in the range pass, before codes overwrite the values in place', () => {
    const scratch = new ExportScratch();
    for (const at of [0, 3, 4, 8]) {
      const values = weights(9, at);
      values[at] = NaN;
      expect(() => exportAffineMinMax(values, [9], params(8, false), scratch)).toThrow(/non-finite/);
      const input = new Float32Array(scratch.input(values.byteLength).buffer, 0, values.length);
      input.set(values);
      expect(() => exportAffineMinMax(input, [9], params(8, false), scratch)).toThrow(/non-finite/);
      expect(Buffer.from(input.buffer, 0, input.byteLength).equals(Buffer.from(values.buffer))).toBe(true);
    }
  });

  it('writes the codes of values in its input over them', () => {
    const scratch = new ExportScratch();
    const values = weights(1000, 3);
    const input = new Float32Array(scratch.input(values.byteLength).buffer, 0, values.length);
    input.set(values);
    const exported = exportAffineMinMax(input, [1000], params(8, false), scratch);
    expect(exported.stored.buffer).toBe(input.buffer);
    expect(exported.stored.byteOffset).toBe(0);
    expect(Buffer.from(exported.stored).equals(Buffer.from(inMemory(values, 8, false).codes.buffer))).toBe(true);
  });
});

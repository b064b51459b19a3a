/**
 * The affine export's kernel (affine.wat, assembled into affine-wasm.ts), in WebAssembly SIMD over a shared
 * memory: for one grid per tensor (the converter's uint8/uint16 scheme) the range pass and the codes-and-
 * error-sums pass; for per-channel grids the channel ranges and one pass writing the codes, ŵ, its float16
 * bits and the error sums of both. Its results are those of the JS affine module and tensorError bit for bit
 * (affine.wat says how).
 *
 * The memory is shared so that the streaming export's main thread reads a tensor straight into it and
 * writes the outputs out of it while a worker thread quantizes (src/pipeline/export-pool.ts): no copy either
 * way. Values elsewhere go through it a window at a time.
 */
import type { AffineGrid } from '../methods/grid.js';
import type { ErrorSums } from '../metrics.js';
import { AFFINE_WASM_BASE64 } from './affine-wasm.js';

const PAGE_BYTES = 65536;
/** wasm32's limit: 4 GiB. */
const MAX_PAGES = 65536;
export const KERNEL_MAX_BYTES = MAX_PAGES * PAGE_BYTES;
/**
 * Weights per call, and per window copied in when the values are not in the kernel's memory. A call runs
 * to its end in the tier it started in, so a 16M-weight tensor done in one call would run wholly in the
 * baseline compiler's code; calls of 1M let the optimized code take over early. The sums are carried from
 * call to call, so the pieces add up to the one-call result exactly.
 */
const CALL_WEIGHTS = 1 << 20;

interface KernelExports {
  range(src: number, count: number): [number, number];
  channelRanges(src: number, rows: number, channels: number, lo: number, hi: number): void;
  quantizeChannels(
    src: number,
    codesDst: number,
    dequantizedDst: number,
    halvesDst: number,
    count: number,
    channels: number,
    firstChannel: number,
    grids: number,
    wide: number,
    minCode: number,
    maxCode: number,
    ...sums: number[]
  ): [number, number, number, number, number, number, number, number, number];
  quantize(
    src: number,
    dst: number,
    count: number,
    wide: number,
    inverse: number,
    offset: number,
    minCode: number,
    maxCode: number,
    scale: number,
    min: number,
    errorEnergy: number,
    signalEnergy: number,
    reconstructedEnergy: number,
    dot: number,
    maxAbsError: number,
  ): [number, number, number, number, number];
}

let compiled: WebAssembly.Module | undefined;

function kernelModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(Uint8Array.from(atob(AFFINE_WASM_BASE64), (c) => c.charCodeAt(0)));
  return compiled;
}

/** A memory the kernel can run on, shareable with other threads (postMessage shares it, never copies). */
export function kernelMemory(): WebAssembly.Memory {
  return new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
}

/** Grows `memory` to at least `bytes`; a RangeError beyond 4 GiB. */
export function reserveMemory(memory: WebAssembly.Memory, bytes: number): void {
  if (bytes > KERNEL_MAX_BYTES) throw new RangeError(`the affine kernel holds at most 4 GiB, not ${bytes} bytes`);
  const have = memory.buffer.byteLength;
  if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE_BYTES));
}

/** `count` codes at byte `at` of `buffer`: uint8 up to 8 bits, else uint16. */
export function codesView(buffer: ArrayBufferLike, at: number, count: number, bits: number): Uint8Array | Uint16Array {
  return bits > 8 ? new Uint16Array(buffer, at, count) : new Uint8Array(buffer, at, count);
}

/** 16-byte aligned end of `bytes` bytes. */
export function alignedEnd(bytes: number): number {
  return Math.ceil(bytes / 16) * 16;
}

/** What the per-channel pass gives: the codes, ŵ, its float16 bits, and the error sums of each candidate. */
export interface ChannelsExport {
  codes: Uint8Array | Uint16Array;
  dequantized: Float32Array;
  halves: Uint16Array;
  full: ErrorSums;
  half: ErrorSums;
}

/**
 * Where the per-channel pass keeps things behind `count` values at byte `at`: the float16 bits, the codes and
 * the four float64 arrays of grid parameters.
 */
function channelLayout(at: number, count: number, channels: number) {
  const halvesAt = at + alignedEnd(4 * count);
  const codesAt = halvesAt + alignedEnd(2 * count);
  const gridsAt = codesAt + alignedEnd(2 * count);
  return { halvesAt, codesAt, gridsAt, end: gridsAt + 32 * channels };
}

/** Bytes the per-channel pass needs to quantize `count` values at byte 0 in place. */
export function inPlaceChannelsBytes(count: number, channels: number): number {
  return channelLayout(0, count, channels).end;
}

export class AffineKernel {
  private readonly exports: KernelExports;

  constructor(readonly memory: WebAssembly.Memory = kernelMemory()) {
    this.exports = new WebAssembly.Instance(kernelModule(), { env: { memory } }).exports as unknown as KernelExports;
  }

  /** The memory's current bytes (a shared memory's buffer is replaced when it grows; views stay valid). */
  get buffer(): ArrayBufferLike {
    return this.memory.buffer;
  }

  /** Grows the memory to at least `bytes`; a RangeError beyond 4 GiB. */
  reserve(bytes: number): void {
    reserveMemory(this.memory, bytes);
  }

  /** [min(0, w), max(0, w)] of the `count` float32 values at byte `at` of the memory; [NaN, …] with a NaN. */
  rangeAt(at: number, count: number): [number, number] {
    let lo = 0;
    let hi = 0;
    for (let done = 0; done < count; done += CALL_WEIGHTS) {
      const [low, high] = this.exports.range(at + 4 * done, Math.min(CALL_WEIGHTS, count - done));
      lo = Math.min(lo, low);
      hi = Math.max(hi, high);
    }
    return [lo, hi];
  }

  /**
   * Codes of the `count` float32 values at byte `src` on `grid`, written at byte `dst` (uint8 up to 8 bits,
   * else uint16; `dst` may be `src`, the codes overwriting the values), added to `sums` in index order.
   */
  quantizeAt(src: number, dst: number, count: number, bits: number, grid: AffineGrid, sums: ErrorSums): void {
    const wide = bits > 8 ? 1 : 0;
    const inverse = 1 / grid.scale;
    const offset = grid.zeroPoint + 0.5;
    for (let done = 0; done < count; done += CALL_WEIGHTS) {
      [sums.errorEnergy, sums.signalEnergy, sums.reconstructedEnergy, sums.dot, sums.maxAbsError] =
        this.exports.quantize(
          src + 4 * done,
          dst + (done << wide),
          Math.min(CALL_WEIGHTS, count - done),
          wide,
          inverse,
          offset,
          grid.minCode,
          grid.maxCode,
          grid.scale,
          grid.min,
          sums.errorEnergy,
          sums.signalEnergy,
          sums.reconstructedEnergy,
          sums.dot,
          sums.maxAbsError,
        );
    }
  }

  /** rangeAt for values anywhere: copied in a window at a time. */
  range(values: Float32Array): [number, number] {
    let lo = 0;
    let hi = 0;
    this.reserve(4 * Math.min(values.length, CALL_WEIGHTS));
    for (let done = 0; done < values.length; done += CALL_WEIGHTS) {
      const window = values.subarray(done, done + CALL_WEIGHTS);
      new Float32Array(this.buffer, 0, window.length).set(window);
      const [low, high] = this.rangeAt(0, window.length);
      lo = Math.min(lo, low);
      hi = Math.max(hi, high);
    }
    return [lo, hi];
  }

  /** quantizeAt for values and codes anywhere: copied through the memory a window at a time. */
  quantize(
    values: Float32Array,
    codes: Uint8Array | Uint16Array,
    bits: number,
    grid: AffineGrid,
    sums: ErrorSums,
  ): void {
    const window = Math.min(values.length, CALL_WEIGHTS);
    const codesAt = alignedEnd(4 * window);
    this.reserve(codesAt + window * codes.BYTES_PER_ELEMENT);
    for (let done = 0; done < values.length; done += CALL_WEIGHTS) {
      const part = values.subarray(done, done + CALL_WEIGHTS);
      new Float32Array(this.buffer, 0, part.length).set(part);
      this.quantizeAt(0, codesAt, part.length, bits, grid, sums);
      codes.set(codesView(this.buffer, codesAt, part.length, bits), done);
    }
  }

  /**
   * [min(0, w), max(0, w)] per channel (the last axis) as Math.min/max give them (a NaN wins), −0 turned to
   * +0. `inPlace`: the values are the memory's own, at byte 0; else they are copied in rows at a time to
   * byte `stagingAt` (past the memory's own values when those are elsewhere in it).
   */
  channelRanges(
    values: Float32Array,
    channels: number,
    inPlace: boolean,
    stagingAt = 0,
  ): { lo: Float64Array; hi: Float64Array } {
    const rows = values.length / channels;
    const rowsPerCall = Math.max(1, Math.floor(CALL_WEIGHTS / channels));
    const valuesAt = inPlace ? 0 : stagingAt;
    const loAt = valuesAt + alignedEnd(4 * (inPlace ? values.length : Math.min(rows, rowsPerCall) * channels));
    const hiAt = loAt + alignedEnd(4 * channels);
    this.reserve(hiAt + 4 * channels);
    new Float32Array(this.buffer, loAt, channels).fill(0);
    new Float32Array(this.buffer, hiAt, channels).fill(0);
    for (let row = 0; row < rows; row += rowsPerCall) {
      const callRows = Math.min(rowsPerCall, rows - row);
      let src = 4 * row * channels;
      if (!inPlace) {
        new Float32Array(this.buffer, valuesAt, callRows * channels).set(
          values.subarray(src / 4, (row + callRows) * channels),
        );
        src = valuesAt;
      }
      this.exports.channelRanges(src, callRows, channels, loAt, hiAt);
    }
    const lo = Float64Array.from(new Float32Array(this.buffer, loAt, channels), (x) => x + 0);
    const hi = Float64Array.from(new Float32Array(this.buffer, hiAt, channels));
    return { lo, hi };
  }

  /**
   * Codes on per-channel grids (the last axis), ŵ = float32(code · scale + min), its float16 bits and the
   * error sums of both, in index order. `inPlace`: the values are the memory's own at byte 0, ŵ is written
   * over them and the outputs are views of the memory; else the values go through byte `stagingAt` a window
   * at a time and `outputs` receives what comes out.
   */
  quantizeChannels(
    values: Float32Array,
    grids: readonly AffineGrid[],
    bits: number,
    inPlace: boolean,
    outputs?: Pick<ChannelsExport, 'codes' | 'dequantized' | 'halves'>,
    stagingAt = 0,
  ): ChannelsExport {
    const channels = grids.length;
    const count = values.length;
    const wide = bits > 8 ? 1 : 0;
    // A call (and, copying, a window) of about CALL_WEIGHTS values, at least one row.
    const span = Math.min(count, Math.max(CALL_WEIGHTS, channels));
    const valuesAt = inPlace ? 0 : stagingAt;
    const layout = channelLayout(valuesAt, inPlace ? count : span, channels);
    this.reserve(layout.end);
    const parameters = new Float64Array(this.buffer, layout.gridsAt, 4 * channels);
    for (const [c, grid] of grids.entries()) {
      parameters[c] = 1 / grid.scale;
      parameters[channels + c] = grid.zeroPoint + 0.5;
      parameters[2 * channels + c] = grid.scale;
      parameters[3 * channels + c] = grid.min;
    }
    const { minCode, maxCode } = grids[0];
    let sums = [0, 0, 0, 0, 0, 0, 0, 0, 0];
    for (let done = 0; done < count; done += span) {
      const part = Math.min(span, count - done);
      if (!inPlace) new Float32Array(this.buffer, valuesAt, part).set(values.subarray(done, done + part));
      // In place, the piece's offset in the tensor; staged, the window's start.
      const base = inPlace ? done : 0;
      sums = this.exports.quantizeChannels(
        valuesAt + 4 * base,
        layout.codesAt + (base << wide),
        valuesAt + 4 * base,
        layout.halvesAt + 2 * base,
        part,
        channels,
        done % channels,
        layout.gridsAt,
        wide,
        minCode,
        maxCode,
        ...sums,
      );
      if (!inPlace) {
        outputs!.dequantized.set(new Float32Array(this.buffer, valuesAt, part), done);
        outputs!.halves.set(new Uint16Array(this.buffer, layout.halvesAt, part), done);
        outputs!.codes.set(codesView(this.buffer, layout.codesAt, part, bits), done);
      }
    }
    const [
      signalEnergy,
      errorEnergy,
      reconstructedEnergy,
      dot,
      maxAbsError,
      halfError,
      halfReconstructed,
      halfDot,
      halfMax,
    ] = sums;
    const result = inPlace
      ? {
          codes: codesView(this.buffer, layout.codesAt, count, bits),
          dequantized: new Float32Array(this.buffer, 0, count),
          halves: new Uint16Array(this.buffer, layout.halvesAt, count),
        }
      : outputs!;
    return {
      ...result,
      full: { errorEnergy, signalEnergy, reconstructedEnergy, dot, maxAbsError },
      half: {
        errorEnergy: halfError,
        signalEnergy,
        reconstructedEnergy: halfReconstructed,
        dot: halfDot,
        maxAbsError: halfMax,
      },
    };
  }
}

/**
 * The fused export of affine with minmax ranges and nearest rounding — the converter's own scheme, and the
 * common case (src/quant/export-tensor.ts has the others): one pass finds the ranges, one pass writes the
 * codes and accumulates the report's error sums, with no float copy of ŵ when one grid covers the tensor.
 * Both passes run in the WebAssembly kernel (src/quant/kernels/affine.ts). The numbers are the affine
 * module's and tensorError's bit for bit: the same float64 arithmetic, summed in index order.
 * Free of schema code, so the worker threads of the streaming export load only this.
 */
import type { AffineParams } from './methods/affine.js';
import type { MethodParams } from './methods/index.js';
import { affineGrid, channelCount } from './methods/grid.js';
import {
  AffineKernel,
  alignedEnd,
  codesView,
  inPlaceChannelsBytes,
  KERNEL_MAX_BYTES,
  kernelMemory,
  reserveMemory,
} from './kernels/affine.js';
import { errorFromSums, type ErrorSums, type TensorError } from './metrics.js';
import { packBits } from './packed/bits.js';
import type { Codes, Encoding } from './types.js';

export type StoredAs = 'uint8' | 'uint16' | 'float16' | 'float32';

/** A stock TF.js manifest entry's `quantization` (absent: float32 values). */
export type StoredQuantization = { dtype: 'uint8' | 'uint16'; min: number; scale: number } | { dtype: 'float16' };

export interface ExportedTensor {
  encoding: Encoding;
  bitsPerWeight: number;
  storedAs: StoredAs;
  quantization?: StoredQuantization;
  /** The tensor's bytes in `model/`'s shards. */
  stored: Uint8Array;
  /** The codes bit-packed at the encoding's width (packed/weights.bin's code section). */
  packedCodes: Uint8Array;
  codeCount: number;
  error: TensorError;
}

/** A weight value is NaN or ±Infinity; the caller names it (src/model's checkFinite). */
export class NonFiniteValues extends RangeError {
  override name = 'NonFiniteValues';
}

/**
 * Growable buffers, one per use, reused from tensor to tensor (one scratch per thread, or per buffer set of
 * the worker pool, whose buffers are SharedArrayBuffers the main thread writes out without a copy), and the
 * affine kernel's memory, which holds the input tensor and its per-tensor codes.
 */
export class ExportScratch {
  private readonly buffers = new Map<string, ArrayBufferLike>();
  private affineKernel: AffineKernel | undefined;
  private inputView: Uint8Array | undefined;

  /**
   * `memory`: the kernel memory to hold the input in (a worker thread gets its buffer set's from the main
   * thread, which reads the tensors into it); by default one of its own, made when first needed.
   * `kernelInputBytes`: the largest input held in that memory (wasm32's 4 GiB, less to cap the memory, which
   * never shrinks); a larger tensor is read into a buffer of its own, which the kernel reads a window at a time.
   */
  constructor(
    private readonly allocate: (bytes: number) => ArrayBufferLike = (bytes) => new ArrayBuffer(bytes),
    private memory?: WebAssembly.Memory,
    private readonly kernelInputBytes = KERNEL_MAX_BYTES,
  ) {}

  private get kernelMemory(): WebAssembly.Memory {
    this.memory ??= kernelMemory();
    return this.memory;
  }

  /** The kernel on this scratch's memory, instantiated the first time it quantizes. */
  get kernel(): AffineKernel {
    this.affineKernel ??= new AffineKernel(this.kernelMemory);
    return this.affineKernel;
  }

  /**
   * A buffer for the next input tensor's `bytes` (float32 values), in the kernel's memory when it fits there:
   * a tensor read into it is quantized where it lies, its per-tensor codes (or per-channel ŵ) written over it.
   */
  input(bytes: number): Uint8Array {
    if (bytes > this.kernelInputBytes) {
      this.inputView = undefined;
      return new Uint8Array(this.buffer('input', bytes), 0, bytes);
    }
    reserveMemory(this.kernelMemory, bytes);
    this.inputView = new Uint8Array(this.kernelMemory.buffer, 0, bytes);
    return this.inputView;
  }

  /** Whether `values` are the input buffer's in the kernel's memory (so the kernel reads them in place). */
  holdsInput(values: Float32Array): boolean {
    const input = this.inputView;
    return (
      input !== undefined &&
      values.buffer === input.buffer &&
      values.byteOffset === 0 &&
      values.byteLength <= input.byteLength
    );
  }

  buffer(use: string, bytes: number): ArrayBufferLike {
    let buffer = this.buffers.get(use);
    if (buffer === undefined || buffer.byteLength < bytes) {
      // Some headroom, so tensors of slowly growing size do not reallocate each time.
      buffer = this.allocate(Math.max(bytes, Math.ceil((buffer?.byteLength ?? 0) * 1.25)));
      this.buffers.set(use, buffer);
    }
    return buffer;
  }

  codes(count: number, bits: number): Uint8Array | Uint16Array {
    return codesView(this.buffer('codes', bits > 8 ? 2 * count : count), 0, count, bits);
  }

  floats(use: string, count: number): Float32Array {
    return new Float32Array(this.buffer(use, 4 * count), 0, count);
  }

  halves(count: number): Uint16Array {
    return new Uint16Array(this.buffer('halves', 2 * count), 0, count);
  }
}

export function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** The packed code bytes: at 8 and 16 bits the little-endian codes are their own packing. */
export function packedCodes(codes: Codes, bits: number): Uint8Array {
  if ((bits === 8 && codes instanceof Uint8Array) || (bits === 16 && codes instanceof Uint16Array))
    return bytesOf(codes);
  return packBits(codes, bits);
}

/**
 * Whether `params` take the fused export (exportAffineMinMax): affine with minmax ranges and nearest rounding.
 * The others quantize through their method module (export-tensor.ts).
 */
export function isFusedAffine(params: MethodParams): params is AffineParams {
  return params.name === 'affine' && params.range === 'minmax' && params.rounding === 'nearest';
}

export function exportAffineMinMax(
  values: Float32Array,
  shape: readonly number[],
  params: Pick<AffineParams, 'bits' | 'symmetric' | 'granularity'>,
  scratch: ExportScratch,
): ExportedTensor {
  const { bits, symmetric } = params;
  const size = values.length;
  const channels = channelCount(shape, params.granularity);
  const bitsPerWeight = size > 0 ? bits + (64 * channels) / size : bits;
  if (channels === 1) return exportOnOneGrid(values, params, bitsPerWeight, scratch);

  // One grid per channel: stock TF.js cannot store the codes, so model/ gets ŵ as float16 when that adds at
  // most 1% to the squared error, else as float32; both candidates are measured in the same pass.
  const { kernel } = scratch;
  const held = scratch.holdsInput(values);
  // A tensor in the input whose outputs would not fit behind it (wasm32's 4 GiB) goes through a window past it.
  const inPlace = held && inPlaceChannelsBytes(size, channels) <= KERNEL_MAX_BYTES;
  const stagingAt = held ? alignedEnd(values.byteLength) : 0;
  const { lo, hi } = kernel.channelRanges(values, channels, held, stagingAt);
  for (let c = 0; c < channels; c++) {
    if (!Number.isFinite(lo[c]) || !Number.isFinite(hi[c])) throw new NonFiniteValues('non-finite weight');
  }
  const grids = Array.from({ length: channels }, (_, c) => affineGrid(lo[c], hi[c], bits, symmetric));
  const exported = kernel.quantizeChannels(
    values,
    grids,
    bits,
    inPlace,
    inPlace
      ? undefined
      : {
          codes: scratch.codes(size, bits),
          dequantized: scratch.floats('dequantized', size),
          halves: scratch.halves(size),
        },
    stagingAt,
  );
  return {
    encoding: {
      kind: 'affine',
      bits,
      channels,
      scales: Float32Array.from(grids, (g) => g.scale),
      mins: Float32Array.from(grids, (g) => g.min),
    },
    bitsPerWeight,
    ...storedFloats(exported.dequantized, exported.halves, exported.full, exported.half, size),
    packedCodes: packedCodes(exported.codes, bits),
    codeCount: size,
  };
}

/**
 * One grid: tfjs stores the codes themselves, and ŵ never needs to exist as an array. Values in the scratch's
 * input are quantized where they lie, the codes replacing them (the caller is done with the values once it
 * hands them over); others pass through the kernel a window at a time.
 */
function exportOnOneGrid(
  values: Float32Array,
  params: Pick<AffineParams, 'bits' | 'symmetric'>,
  bitsPerWeight: number,
  scratch: ExportScratch,
): ExportedTensor {
  const { bits, symmetric } = params;
  const size = values.length;
  const { kernel } = scratch;
  const inPlace = scratch.holdsInput(values);
  const [low, high] = inPlace ? kernel.rangeAt(0, size) : kernel.range(values);
  if (!Number.isFinite(low) || !Number.isFinite(high)) throw new NonFiniteValues('non-finite weight');
  // + 0: a −0 minimum is the +0 that the affine module's compare-and-replace scan keeps.
  const grid = affineGrid(low + 0, high, bits, symmetric);
  const sums = newSums();
  let codes: Uint8Array | Uint16Array;
  if (inPlace) {
    codes = codesView(values.buffer, 0, size, bits);
    kernel.quantizeAt(0, 0, size, bits, grid, sums);
  } else {
    codes = scratch.codes(size, bits);
    kernel.quantize(values, codes, bits, grid, sums);
  }
  const scales = Float32Array.of(grid.scale);
  const mins = Float32Array.of(grid.min);
  return {
    encoding: { kind: 'affine', bits, channels: 1, scales, mins },
    bitsPerWeight,
    storedAs: bits <= 8 ? 'uint8' : 'uint16',
    quantization: { dtype: bits <= 8 ? 'uint8' : 'uint16', min: mins[0], scale: scales[0] },
    stored: bytesOf(codes),
    packedCodes: packedCodes(codes, bits),
    codeCount: size,
    error: errorFromSums(sums, size),
  };
}

export function newSums(): ErrorSums {
  return { errorEnergy: 0, signalEnergy: 0, reconstructedEnergy: 0, dot: 0, maxAbsError: 0 };
}

/** Adds one (w, ŵ) pair to the sums but the signal energy, which both candidates share. */
export function accumulate(sums: ErrorSums, w: number, q: number): void {
  const e = w - q;
  sums.errorEnergy += e * e;
  sums.reconstructedEnergy += q * q;
  sums.dot += w * q;
  sums.maxAbsError = Math.max(sums.maxAbsError, Math.abs(e));
}

/**
 * float16 when its rounding adds at most 1% to the method's squared error (then the report measures the
 * halves), else float32 values. (An all-exact float16 is within that 1%, so the writer's exact-halves rule
 * never picks anything else.)
 */
export function storedFloats(
  dequantized: Float32Array,
  halves: Uint16Array,
  full: ErrorSums,
  half: ErrorSums,
  size: number,
): Pick<ExportedTensor, 'storedAs' | 'quantization' | 'stored' | 'error'> {
  if (half.errorEnergy <= full.errorEnergy * 1.01) {
    return {
      storedAs: 'float16',
      quantization: { dtype: 'float16' },
      stored: bytesOf(halves),
      error: errorFromSums(half, size),
    };
  }
  return { storedAs: 'float32', stored: bytesOf(dequantized), error: errorFromSums(full, size) };
}

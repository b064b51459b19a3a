/**
 * Where the streaming PTQ quantizes its tensors: on the main thread (`inlineExporter`), or on worker threads
 * (`workerExporter`), one tensor per thread at a time, for a model large enough to pay for their start-up.
 * The per-tensor math is pure typed-array work (src/quant/export-affine.ts, export-tensor.ts); tfjs is never
 * loaded in a worker thread.
 *
 * A slot is the set of buffers of one thread: the input tensor (in a shared WebAssembly memory the main
 * thread reads the shards into, where the affine kernel quantizes it and writes its per-tensor codes over it)
 * and the other outputs (SharedArrayBuffers of the thread's ExportScratch); the main thread writes them to
 * disk from the same memory. A slot is held from `acquire` until `release`, after its outputs are written, so
 * no buffer is copied between threads or reused before it is written.
 *
 * One slot a thread, not two: a second would let a thread start its next tensor while the last is written
 * out, but its memory is fresh pages to fault in (filling 256 MiB of fresh wasm memory takes 210 ms here,
 * 75 ms once faulted in), on the same two cores as the reads and the quantizing. Measured on the 1 GiB bench model (seven paired runs, idle):
 * one slot 1.08 s and 238 MiB peak RSS, two 1.21 s and 369 MiB (medians).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ExportScratch, NonFiniteValues, type ExportedTensor } from '../quant/export-affine.js';
import { exportTensor } from '../quant/export-tensor.js';
import { KERNEL_MAX_BYTES, kernelMemory } from '../quant/kernels/affine.js';
import type { MethodParams } from '../quant/methods/index.js';
import { bytesOfShared, toShared, type SharedBytes } from './shared-bytes.js';

export interface ExportSlot {
  /** A buffer of at least `bytes` for the next tensor's bytes, valid until release. */
  input(bytes: number): Uint8Array;
  /**
   * Quantizes `values` (a view of `input`'s buffer, or any Float32Array); outputs valid until release. `ms`
   * is the quantizing itself, on whichever thread ran it. Values in `input` are not kept: the affine kernel
   * writes the codes (one grid) or ŵ (per channel) over them.
   */
  run(values: Float32Array, shape: readonly number[], params: MethodParams, seed: number): Promise<Quantized>;
  release(): void;
}

export interface Quantized {
  exported: ExportedTensor;
  ms: number;
}

export interface Exporter {
  /** The next free slot, once one is released. */
  acquire(): Promise<ExportSlot>;
  close(): Promise<void>;
}

/** Hands out slots first come, first served, each to one holder at a time. */
class SlotQueue<T> {
  private readonly free: T[] = [];
  private readonly waiting: ((slot: T) => void)[] = [];

  put(slot: T): void {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.free.push(slot);
  }

  take(): Promise<T> {
    const slot = this.free.shift();
    if (slot !== undefined) return Promise.resolve(slot);
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * One slot on the main thread: quantizing blocks it, which is cheapest for small models. `kernelInputBytes`:
 * the largest tensor read into the affine kernel's memory (ExportScratch).
 */
export function inlineExporter(kernelInputBytes = KERNEL_MAX_BYTES): Exporter {
  const scratch = new ExportScratch(undefined, undefined, kernelInputBytes);
  const queue = new SlotQueue<ExportSlot>();
  const slot: ExportSlot = {
    input: (bytes) => scratch.input(bytes),
    run: async (values, shape, params, seed) => {
      const started = performance.now();
      const exported = exportTensor(values, shape, params, seed, scratch);
      return { exported, ms: performance.now() - started };
    },
    release: () => queue.put(slot),
  };
  queue.put(slot);
  return { acquire: () => queue.take(), close: async () => undefined };
}

interface WorkerReply {
  id: number;
  result?: Omit<ExportedTensor, 'stored' | 'packedCodes'>;
  stored?: SharedBytes;
  packedCodes?: SharedBytes;
  ms?: number;
  error?: { nonFinite: boolean; message: string };
}

/** The worker's module: beside this one in dist/, or the compiled copy when this runs from source (tests). */
function workerUrl(): URL {
  const beside = new URL('./export-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(beside))) return beside;
  const compiled = new URL('../../dist/src/pipeline/export-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(compiled))) return compiled;
  throw new Error('the export worker is not built: run `npm run build` first');
}

/** One worker thread and the replies it owes. */
class WorkerThread {
  readonly worker: Worker;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (r: Quantized) => void; reject: (e: Error) => void }>();

  constructor(url: URL) {
    this.worker = new Worker(url);
    this.worker.on('message', (reply: WorkerReply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.result) {
        const exported = {
          ...reply.result,
          stored: bytesOfShared(reply.stored!),
          packedCodes: bytesOfShared(reply.packedCodes!),
        };
        waiter?.resolve({ exported, ms: reply.ms ?? 0 });
      } else if (reply.error?.nonFinite) waiter?.reject(new NonFiniteValues(reply.error.message));
      else waiter?.reject(new Error(`export worker: ${reply.error?.message}`));
    });
    this.worker.on('error', (error) => this.failAll(error));
    this.worker.on('exit', (code) => this.failAll(new Error(`export worker exited with code ${code}`)));
  }

  request(job: Record<string, unknown>): Promise<Quantized> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...job, id });
    });
  }

  private failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}

/** The buffer set of a thread: its input, and the outputs of the thread's scratch. */
class WorkerSlot implements ExportSlot {
  private readonly memory = kernelMemory();
  /**
   * This thread's view of the slot's memory: it sizes the input as the worker's scratch will. An input too
   * large for the memory gets a SharedArrayBuffer, which the worker is sent instead.
   */
  private readonly scratch: ExportScratch;

  constructor(
    private readonly thread: WorkerThread,
    private readonly id: number,
    private readonly queue: SlotQueue<WorkerSlot>,
    kernelInputBytes: number,
  ) {
    this.scratch = new ExportScratch((bytes) => new SharedArrayBuffer(bytes), this.memory, kernelInputBytes);
  }

  input(bytes: number): Uint8Array {
    return this.scratch.input(bytes);
  }

  run(values: Float32Array, shape: readonly number[], params: MethodParams, seed: number): Promise<Quantized> {
    // A source stored quantized was decoded into a fresh array: its values go through the shared input.
    let shared = values;
    if (!this.scratch.holdsInput(values) && !(values.buffer instanceof SharedArrayBuffer)) {
      shared = new Float32Array(this.input(values.byteLength).buffer, 0, values.length);
      shared.set(values);
    }
    return this.thread.request({
      slot: this.id,
      memory: this.memory,
      length: values.length,
      ...(this.scratch.holdsInput(shared) ? {} : { values: toShared(shared) }),
      shape,
      params,
      seed,
    });
  }

  release(): void {
    this.queue.put(this);
  }
}

/**
 * `threads` worker threads, started now (they load while the caller reads the model), a slot each.
 * `kernelInputBytes` as for inlineExporter.
 */
export function workerExporter(threads: number, kernelInputBytes = KERNEL_MAX_BYTES): Exporter {
  const queue = new SlotQueue<WorkerSlot>();
  const url = workerUrl();
  const workers = Array.from({ length: threads }, () => new WorkerThread(url));
  // Not unref'd: a reply awaited from a worker is what keeps the process alive. close() ends them.
  for (const [t, thread] of workers.entries()) queue.put(new WorkerSlot(thread, t, queue, kernelInputBytes));
  return {
    acquire: () => queue.take(),
    close: async () => {
      await Promise.all(workers.map((thread) => thread.worker.terminate()));
    },
  };
}

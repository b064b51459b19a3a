/**
 * A worker thread of the streaming PTQ (export-pool.ts): quantizes the tensor in the shared input buffer it is
 * sent and answers with the ExportedTensor, whose model/ and packed/ bytes are views of the shared scratch
 * buffers of the job's slot (the main thread writes them out before it sends that slot again). It loads the
 * fused affine module only, and the method registry the first time another method is asked for; never tfjs.
 */
import { parentPort } from 'node:worker_threads';
import {
  exportAffineMinMax,
  ExportScratch,
  isFusedAffine,
  NonFiniteValues,
  type ExportedTensor,
} from '../quant/export-affine.js';
import type { MethodParams } from '../quant/methods/index.js';
import { floatsOfShared, toShared, type SharedBytes } from './shared-bytes.js';

interface Job {
  id: number;
  /** The buffer set (export-pool.ts WorkerSlot), which has its own scratch. */
  slot: number;
  /** The slot's kernel memory, the tensor's values at its start unless `values` are sent. */
  memory: WebAssembly.Memory;
  length: number;
  /** A tensor too large for the kernel's memory, in a SharedArrayBuffer of its own. */
  values?: SharedBytes;
  shape: number[];
  params: MethodParams;
  seed: number;
}

const scratches = new Map<number, ExportScratch>();
let generic: typeof import('../quant/export-tensor.js') | undefined;

async function exported(job: Job): Promise<ExportedTensor> {
  const { params } = job;
  let scratch = scratches.get(job.slot);
  if (scratch === undefined) {
    scratch = new ExportScratch((bytes) => new SharedArrayBuffer(bytes), job.memory);
    scratches.set(job.slot, scratch);
  }
  const values = job.values
    ? floatsOfShared(job.values)
    : new Float32Array(scratch.input(4 * job.length).buffer, 0, job.length);
  if (isFusedAffine(params)) return exportAffineMinMax(values, job.shape, params, scratch);
  generic ??= await import('../quant/export-tensor.js');
  return generic.exportTensor(values, job.shape, params, job.seed, scratch);
}

parentPort!.on('message', (job: Job) => {
  const started = performance.now();
  exported(job).then(
    ({ stored, packedCodes, ...result }) =>
      parentPort!.postMessage({
        id: job.id,
        result,
        stored: toShared(stored),
        packedCodes: toShared(packedCodes),
        ms: performance.now() - started,
      }),
    (error: unknown) =>
      parentPort!.postMessage({
        id: job.id,
        error: { nonFinite: error instanceof NonFiniteValues, message: (error as Error).message ?? String(error) },
      }),
  );
});

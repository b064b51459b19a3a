/**
 * The BullMQ sandboxed processor for `quantize` jobs: it runs in its own child process, so tfjs work can
 * neither block the worker's lock renewal nor take the worker down. Per job: mark the record running; run
 * it with progress relayed through `job.updateProgress`, stopping at the next checkpoint when the cancel
 * flag appears: a plain PTQ job on the streaming engine (src/pipeline/stream.ts, its own eligibility rule),
 * which reads the model's blobs tensor by tensor and writes the artifacts in place, any other job on the
 * in-memory pipeline with the model loaded from the blob store; the artifacts appear in one atomic rename
 * either way (a retry replaces them once); mark the record, queue the webhook. Bad input fails once (`UnrecoverableError`);
 * anything else is retried with backoff by BullMQ.
 */
import { rm } from 'node:fs/promises';
import { UnrecoverableError, type SandboxedJob } from 'bullmq';
import { pino } from 'pino';
import { loadConfig, type Config } from '../src/config.js';
import { datasetRoles } from '../src/jobs/inputs.js';
import { JobLifecycle, isTerminal } from '../src/jobs/lifecycle.js';
import {
  createQueues,
  enqueue,
  webhookJobId,
  workerRedis,
  type JobProgressEvent,
  type QuantizePayload,
  type Queues,
} from '../src/jobs/queue.js';
import { InputError } from '../src/errors.js';
import { parseJobSpec, type JobSpec } from '../src/jobs/spec.js';
import type { FileSet } from '../src/model/types.js';
import type { Dataset } from '../src/model/dataset/index.js';
import { NotStreamable, streamingBlocker, streamQuantize } from '../src/pipeline/stream.js';
import {
  isRoundingCheckpoint,
  type JobCheckpoint,
  type JobDatasets,
  type JobProgress,
  type JobReport,
  type JobResult,
} from '../src/pipeline/types.js';
import { CheckpointStore } from '../src/storage/checkpoints.js';
import { openStoredDataset } from '../src/storage/datasets.js';
import { ArtifactStore } from '../src/storage/artifacts.js';
import { BlobStore } from '../src/storage/blobs.js';
import { RecordStore } from '../src/storage/records.js';
import type { JobSummary, ModelRecord } from '../src/storage/types.js';

interface Context {
  config: Config;
  records: RecordStore;
  blobs: BlobStore;
  artifacts: ArtifactStore;
  lifecycle: JobLifecycle;
  queues: Queues;
  checkpoints: CheckpointStore<JobCheckpoint>;
  /**
   * The tfjs backend, selected (and tfjs loaded) by the first job that needs the in-memory pipeline: a child
   * that only streams plain PTQ never loads tfjs (importing this processor: 367 ms and 94 MiB without it,
   * 458 ms and 129 MiB with it).
   */
  backend: () => Promise<string>;
  log: pino.Logger;
}

let context: Promise<Context> | null = null;

// A sandbox whose worker died must not finish the job behind the back of the worker that takes it over.
process.on('disconnect', () => process.exit(1));

/** One Redis connection, store and tfjs backend per child process, reused by every job it runs. */
function getContext(): Promise<Context> {
  context ??= (async () => {
    const config = loadConfig(process.env);
    let backend: Promise<string> | undefined;
    const redis = workerRedis(config.redisUrl);
    const records = new RecordStore(redis, config.redisPrefix);
    const log = pino({ level: config.logLevel, base: { pid: process.pid, role: 'worker' } });
    return {
      config,
      records,
      blobs: new BlobStore(config.dataDir),
      artifacts: new ArtifactStore(config.dataDir),
      lifecycle: new JobLifecycle(records, redis, config.redisPrefix),
      queues: createQueues(redis, config.redisPrefix),
      checkpoints: new CheckpointStore<JobCheckpoint>(config.dataDir),
      backend: () => {
        backend ??= import('../src/model/backend.js').then(({ selectBackend }) => selectBackend(config.tfBackend));
        return backend;
      },
      log,
    };
  })();
  return context;
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError';
}

/** Record updates are throttled; the queue event for SSE is not. */
const recordEveryMs = 500;

export default async function quantize(job: SandboxedJob<QuantizePayload>): Promise<{ status: string }> {
  const ctx = await getContext();
  const { tenant, jobId } = job.data;
  const log = ctx.log.child({ job: { id: jobId, attempt: job.attemptsMade + 1 }, tenant });
  const record = await ctx.lifecycle.start(tenant, jobId, job.attemptsMade + 1);
  if (!record) throw new UnrecoverableError(`job record ${jobId} is missing`);
  if (isTerminal(record)) {
    log.info({ status: record.status }, 'job already ended; nothing to do');
    return { status: record.status };
  }
  log.info({ method: record.method, modelId: record.modelId }, 'job started');

  const controller = new AbortController();
  let datasets: JobDatasets = {};
  const checkCancel = async () => {
    if (!controller.signal.aborted && (await ctx.lifecycle.isCancelRequested(jobId))) controller.abort();
  };
  const cancelPoll = setInterval(() => void checkCancel().catch(() => undefined), 500);
  let lastRecorded = 0;
  const report = async (progress: JobProgressEvent) => {
    await job.updateProgress(progress as unknown as object);
    if (progress.message) {
      await ctx.lifecycle.appendLog(jobId, {
        at: new Date().toISOString(),
        stage: progress.stage,
        message: progress.message,
      });
    }
    const now = Date.now();
    if (now - lastRecorded >= recordEveryMs) {
      lastRecorded = now;
      await ctx.lifecycle.progress(tenant, jobId, progress.stage, progress.progress);
    }
    await checkCancel();
  };

  try {
    await report({ stage: 'load', progress: 0, message: `loading model ${record.modelId}` });
    const model = await ctx.records.get('models', tenant, record.modelId);
    if (!model) throw new UnrecoverableError(`model ${record.modelId} no longer exists`);
    const spec = parseJobSpec(record.spec);
    // The engine's 0–100 becomes 2–95 here: loading comes before it, storing the artifacts after.
    const onProgress = (progress: JobProgress) =>
      report({ ...progress, progress: Math.round((2 + progress.progress * 0.93) * 10) / 10 });
    const stopIfCancelled = async () => {
      await checkCancel();
      controller.signal.throwIfAborted();
    };
    const options: EngineOptions = { signal: controller.signal, onProgress };
    let stored: StoredJob | null = null;
    if (streamingBlocker(spec) === undefined) {
      stored = await streamJob(ctx, tenant, jobId, model, spec, options, async () => {
        await stopIfCancelled();
        await report({ stage: 'store', progress: 97, message: 'moving the artifacts into place' });
      });
    }
    if (!stored) {
      const result = await runInMemory(ctx, tenant, jobId, model, spec, options, log, (opened) => {
        datasets = opened;
      });
      await stopIfCancelled();
      await report({ stage: 'store', progress: 97, message: 'writing artifacts' });
      await ctx.artifacts.write(tenant, jobId, result.files);
      stored = { report: result.report, paths: [...result.files.keys()].sort() };
    }
    // The one "done" of the job, and its 100%: before the record ends, so a stream that closes on the end
    // has seen it.
    await report({ stage: 'store', progress: 100, message: `done: ${stored.paths.length} artifacts stored` });
    const m = stored.report.model;
    const summary: JobSummary = {
      params: m.params,
      quantizedParams: m.quantizedParams,
      bytesBefore: m.bytesBefore,
      bytesAfter: m.bytesAfter,
      packedBytes: m.packedBytes,
      compressionRatio: m.compressionRatio,
      bitsPerWeight: m.bitsPerWeight,
      backend: m.backend,
      metrics: m.metrics,
      warnings: stored.report.warnings,
    };
    const done = await ctx.lifecycle.succeed(tenant, jobId, summary, stored.paths);
    await ctx.checkpoints.remove(tenant, jobId);
    log.info({ status: done?.status, compressionRatio: summary.compressionRatio }, 'job ended');
    await queueWebhook(ctx, tenant, jobId, done?.webhookUrl ?? null);
    return { status: done?.status ?? 'succeeded' };
  } catch (error) {
    if (isAbort(error) || controller.signal.aborted) {
      // The API already marked the record cancelled; this attempt ends without error so it is not retried.
      const cancelled = await ctx.lifecycle.cancel(tenant, jobId);
      log.info('job cancelled at a checkpoint');
      await queueWebhook(ctx, tenant, jobId, cancelled?.webhookUrl ?? null);
      return { status: 'cancelled' };
    }
    const badInput = error instanceof InputError || error instanceof UnrecoverableError;
    const message = error instanceof Error ? error.message : String(error);
    const lastAttempt = badInput || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    if (lastAttempt) {
      const failed = await ctx.lifecycle.fail(tenant, jobId, {
        message,
        type: error instanceof InputError ? error.problem : badInput ? 'invalid-input' : 'internal',
      });
      log.error({ err: error }, 'job failed');
      await queueWebhook(ctx, tenant, jobId, failed?.webhookUrl ?? null);
    } else {
      await ctx.lifecycle.retrying(tenant, jobId, message);
      log.warn({ err: error }, 'job attempt failed; will retry');
    }
    throw badInput && !(error instanceof UnrecoverableError) ? new UnrecoverableError(message) : error;
  } finally {
    clearInterval(cancelPoll);
    await Promise.all(Object.values(datasets).map((dataset) => dataset.close()));
  }
}

interface EngineOptions {
  signal: AbortSignal;
  onProgress: (progress: JobProgress) => Promise<void>;
}

/** What a job leaves: its report and the artifact paths stored, sorted. */
interface StoredJob {
  report: JobReport;
  paths: string[];
}

/**
 * A plain PTQ job (streamingBlocker found nothing against it) on the streaming engine: the model's blobs
 * linked into a directory, quantized tensor by tensor straight into the job's artifact directory, so no
 * copy of the model is ever held whole. `beforeStore` runs once the engine is done and before the artifacts
 * move into place (a cancel still leaves none). Null when the model itself needs the in-memory pipeline
 * (NotStreamable, thrown before anything is written).
 */
async function streamJob(
  ctx: Context,
  tenant: string,
  jobId: string,
  model: ModelRecord,
  spec: JobSpec,
  options: EngineOptions,
  beforeStore: () => Promise<void>,
): Promise<StoredJob | null> {
  const modelDir = await ctx.blobs.linkDir(model.files);
  try {
    const { result, paths } = await ctx.artifacts.fill(tenant, jobId, async (dir) => {
      const written = await streamQuantize(modelDir, spec, dir, options);
      await beforeStore();
      return written;
    });
    return { report: result, paths };
  } catch (error) {
    if (error instanceof NotStreamable) return null;
    throw error;
  } finally {
    await rm(modelDir, { recursive: true, force: true });
  }
}

/** Any other job: the model read whole from its blobs and run by the in-memory pipeline. */
async function runInMemory(
  ctx: Context,
  tenant: string,
  jobId: string,
  model: ModelRecord,
  spec: JobSpec,
  options: EngineOptions,
  log: pino.Logger,
  onDatasets: (datasets: JobDatasets) => void,
): Promise<JobResult> {
  const [backend, { readModel }, { runJob }] = await Promise.all([
    ctx.backend(),
    import('../src/model/read.js'),
    import('../src/pipeline/run.js'),
  ]);
  const files: FileSet = new Map();
  for (const file of model.files) files.set(file.path, new Uint8Array(await ctx.blobs.read(file.sha256)));
  const loaded = readModel(files);
  const datasets = await openJobDatasets(ctx, tenant, spec);
  onDatasets(datasets);
  const resumeFrom = await ctx.checkpoints.load(tenant, jobId);
  if (isRoundingCheckpoint(resumeFrom)) {
    log.info({ layers: resumeFrom.done.length }, 'resuming the rounding after its last finished layer');
  } else if (resumeFrom) {
    log.info({ epoch: resumeFrom.epoch }, 'resuming training from the last checkpoint');
  }
  return runJob(loaded, spec, datasets, {
    backend,
    signal: options.signal,
    resumeFrom,
    onCheckpoint: (checkpoint) => ctx.checkpoints.save(tenant, jobId, checkpoint),
    onProgress: options.onProgress,
  });
}

/** The spec's dataset ids, opened from the tenant's records (one dataset may serve several roles). */
async function openJobDatasets(ctx: Context, tenant: string, spec: JobSpec): Promise<JobDatasets> {
  const datasets: JobDatasets = {};
  const opened = new Map<string, Dataset>();
  for (const role of datasetRoles) {
    const id = spec.data[role];
    if (id === undefined) continue;
    let dataset = opened.get(id);
    if (!dataset) {
      const record = await ctx.records.get('datasets', tenant, id);
      if (!record) throw new UnrecoverableError(`dataset ${id} (data.${role}) no longer exists`);
      dataset = await openStoredDataset(record, ctx.blobs);
      opened.set(id, dataset);
    }
    datasets[role] = dataset;
  }
  return datasets;
}

async function queueWebhook(ctx: Context, tenant: string, jobId: string, url: string | null): Promise<void> {
  if (!url) return;
  // jobId as the BullMQ id: a retried or duplicated end notifies once.
  await enqueue(ctx.queues, 'webhooks', 'deliver', { tenant, jobId }, { jobId: webhookJobId(jobId) });
}

/**
 * Jobs BullMQ fails without their processor having said so: a sandbox SIGKILLed (or OOM-killed) in every
 * attempt, a job that stalled more often than `maxStalledCount`. Only the processor writes a record's end,
 * so such a record would stay `running` (or `queued`) for good, counted as running by /metrics and keeping
 * its model from being deleted. Every worker process watches the queue's `failed` events (published by
 * whichever worker failed the job, the stalled check included) and ends the record as failed when BullMQ
 * has given up on it; JobLifecycle's compare-and-set lets exactly one of them, or the processor, end it.
 *
 * A job can also leave the queue with no `failed` event at all: removed, drained or obliterated by an
 * operator, or lost with a Redis that kept the records but not BullMQ's keys. The watch looks every
 * `lostCheckMs` for unfinished records whose BullMQ job is gone and ends them the same way. The same look
 * ends those whose BullMQ job failed with no watch listening: a worker fails a job at start when its first
 * stalled check finds it stalled once too often. startWorkers (src/service.ts) starts the quantize worker once
 * its watch is ready, so the event is heard; the look is for a watch that could not subscribe.
 */
import { Job, QueueEvents, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { JobLifecycle } from '../src/jobs/lifecycle.js';
import { enqueue, webhookJobId, type QuantizePayload, type Queues } from '../src/jobs/queue.js';
import type { ArtifactStore } from '../src/storage/artifacts.js';
import type { RecordStore } from '../src/storage/records.js';
import { jobStatuses, terminalStatuses, type JobRecord } from '../src/storage/types.js';

/**
 * What the record says about a job BullMQ failed for good: `failedReason` is BullMQ's last error. A stall is
 * not a failed attempt (each run of a job that stalls is its attempt 1 again), so a stalled-out job is told by
 * its stall count.
 */
export function abandonedJobError(job: { attemptsMade: number; stalledCounter: number; failedReason: string }): {
  message: string;
  type: string;
} {
  const { attemptsMade, stalledCounter, failedReason } = job;
  const tries = attemptsMade === 1 ? '1 attempt' : `${attemptsMade} attempts`;
  if (/^Unexpected exit code|exited while starting/.test(failedReason)) {
    return {
      type: 'worker-crashed',
      message: `the worker process running this job died in every attempt (${tries}; last: ${failedReason})`,
    };
  }
  if (/stalled more than allowable limit/.test(failedReason)) {
    return {
      type: 'worker-lost',
      message: `the workers running this job stopped renewing its lock ${stalledCounter} times (${failedReason})`,
    };
  }
  return { type: 'internal', message: `the queue failed this job after ${tries}: ${failedReason}` };
}

export interface FailureWatch {
  close(): Promise<void>;
  /** Settles once the watch receives events (tests wait on it before causing failures). */
  ready: Promise<void>;
}

export function watchFailedJobs(deps: {
  connection: ConnectionOptions;
  prefix: string;
  queues: Queues;
  lifecycle: JobLifecycle;
  records: RecordStore;
  artifacts: ArtifactStore;
  log: Logger;
  /** How often to look for unended records whose queue job is gone or failed, and how old such a record must be. */
  lostCheckMs?: number;
}): FailureWatch {
  const queue = deps.queues.quantize;
  const events = new QueueEvents(queue.name, { connection: deps.connection, prefix: deps.prefix });
  events.on('error', (error) => deps.log.warn({ err: error }, 'failed-jobs watch: Redis error'));
  const end = async (tenant: string, jobId: string, error: { message: string; type: string }, why: object) => {
    const ended = await deps.lifecycle.abandon(tenant, jobId, error);
    if (!ended) return;
    // The last attempt died writing its artifacts (streaming writes for the whole job); no attempt follows.
    await deps.artifacts.removeTempTrees(tenant, jobId);
    deps.log.warn({ jobId, ...why }, 'job ended by the queue; record ended');
    if (ended.webhookUrl) {
      await enqueue(deps.queues, 'webhooks', 'deliver', { tenant, jobId }, { jobId: webhookJobId(jobId) });
    }
  };
  const settle = async (bullId: string) => {
    const job = await Job.fromId<QuantizePayload>(queue, bullId);
    // Retried (waiting, delayed, active again) or removed meanwhile: nothing to end.
    if (!job || (await job.getState()) !== 'failed') return;
    const { tenant, jobId } = job.data;
    await end(tenant, jobId, abandonedJobError(job), {
      attempts: job.attemptsMade,
      stalls: job.stalledCounter,
      failedReason: job.failedReason,
    });
  };
  events.on('failed', ({ jobId }) => {
    settle(jobId).catch((error) => deps.log.warn({ err: error, jobId }, 'ending a failed job failed'));
  });
  const lostCheckMs = deps.lostCheckMs ?? 30_000;
  const endLost = async () => {
    for (const { record, state } of await unendedQueueJobs(deps.records, queue, Date.now() - lostCheckMs)) {
      if (state === 'failed') await settle(record.id);
      else await end(record.tenant, record.id, lostJobError, { status: record.status });
    }
  };
  const timer = setInterval(() => {
    endLost().catch((error) => deps.log.warn({ err: error }, 'looking for lost jobs failed'));
  }, lostCheckMs);
  timer.unref();
  return {
    ready: events.waitUntilReady().then(() => undefined),
    close: () => {
      clearInterval(timer);
      return events.close();
    },
  };
}

export const lostJobError = {
  type: 'worker-lost',
  message: 'the queue no longer holds this job (it was removed from Redis before it ended)',
};

/**
 * Unfinished records created before `createdBefore` whose BullMQ job does not exist (`unknown`) or has
 * failed for good. The age keeps a job that is being submitted (its record is written just before its
 * queue job) from counting as lost.
 */
async function unendedQueueJobs(
  records: RecordStore,
  queue: Queues['quantize'],
  createdBefore: number,
): Promise<{ record: JobRecord; state: 'unknown' | 'failed' }[]> {
  const counts = await records.countByStatus('jobs');
  const open = jobStatuses.filter((status) => !terminalStatuses.includes(status) && (counts[status] ?? 0) > 0);
  const unfinished: JobRecord[] = [];
  for (const status of open) {
    for await (const job of records.jobsWithStatus(status)) {
      if (Date.parse(job.createdAt) < createdBefore) unfinished.push(job);
    }
  }
  const states = await Promise.all(unfinished.map((job) => queue.getJobState(job.id)));
  return unfinished.flatMap((record, i) => {
    const state = states[i];
    return state === 'unknown' || state === 'failed' ? [{ record, state }] : [];
  });
}

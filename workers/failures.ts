/**
 * Jobs BullMQ fails without their processor having said so: a sandbox SIGKILLed (or OOM-killed) in every
 * attempt, a job that stalled more often than `maxStalledCount`. Only the processor writes a record's end,
 * so such a record would stay `running` (or `queued`) for good, counted as running by /metrics and keeping
 * its model from being deleted. Every worker process watches the queue's `failed` events (published by
 * whichever worker failed the job, the stalled check included) and ends the record as failed when BullMQ
 * has given up on it; JobLifecycle's compare-and-set lets exactly one of them, or the processor, end it.
 */
import { Job, QueueEvents, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { JobLifecycle } from '../src/jobs/lifecycle.js';
import { enqueue, webhookJobId, type QuantizePayload, type Queues } from '../src/jobs/queue.js';

/** What the record says about a job BullMQ failed for good: `failedReason` is BullMQ's last error. */
export function abandonedJobError(attempts: number, failedReason: string): { message: string; type: string } {
  const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
  if (/^Unexpected exit code|exited while starting/.test(failedReason)) {
    return {
      type: 'worker-crashed',
      message: `the worker process running this job died in every attempt (${tries}; last: ${failedReason})`,
    };
  }
  if (/stalled more than allowable limit/.test(failedReason)) {
    return {
      type: 'worker-lost',
      message: `the workers running this job stopped renewing its lock too often (${tries}; ${failedReason})`,
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
  log: Logger;
}): FailureWatch {
  const queue = deps.queues.quantize;
  const events = new QueueEvents(queue.name, { connection: deps.connection, prefix: deps.prefix });
  events.on('error', (error) => deps.log.warn({ err: error }, 'failed-jobs watch: Redis error'));
  const settle = async (bullId: string, failedReason: string) => {
    const job = await Job.fromId<QuantizePayload>(queue, bullId);
    // Retried (waiting, delayed, active again) or removed meanwhile: nothing to end.
    if (!job || (await job.getState()) !== 'failed') return;
    const { tenant, jobId } = job.data;
    const ended = await deps.lifecycle.abandon(tenant, jobId, abandonedJobError(job.attemptsMade, failedReason));
    if (!ended) return;
    deps.log.warn({ jobId, attempts: job.attemptsMade, failedReason }, 'job failed by the queue; record ended');
    if (ended.webhookUrl) {
      await enqueue(deps.queues, 'webhooks', 'deliver', { tenant, jobId }, { jobId: webhookJobId(jobId) });
    }
  };
  events.on('failed', ({ jobId, failedReason }) => {
    settle(jobId, failedReason).catch((error) => deps.log.warn({ err: error, jobId }, 'ending a failed job failed'));
  });
  return {
    ready: events.waitUntilReady().then(() => undefined),
    close: () => events.close(),
  };
}

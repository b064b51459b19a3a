/**
 * The job record's state machine, shared by the API and the workers (no Fastify, no BullMQ worker types):
 * queued → running → succeeded | failed | cancelled, with queued → cancelled directly. Terminal states are
 * final: every transition is a compare-and-set that leaves a terminal record alone, so a worker finishing
 * late cannot overwrite a cancel, and a retried attempt cannot resurrect a failed job.
 */
import type { Redis } from 'ioredis';
import type { RecordStore } from '../storage/records.js';
import { terminalStatuses, type JobRecord, type JobSummary } from '../storage/types.js';
import type { RedisKeys } from '../storage/keys.js';
import { JobDurations } from './durations.js';
import { holdInputs, releaseInputs } from './inputs.js';

/** One line of a job's log: what the worker reported, with when and in which stage. */
export interface JobLogLine {
  at: string;
  stage: string;
  message: string;
}

/** The last lines of a job's log kept for a job page opened later, and how long they are kept. */
const logLines = 500;
const logTtlSeconds = 14 * 24 * 3600;

export function isTerminal(job: Pick<JobRecord, 'status'>): boolean {
  return terminalStatuses.includes(job.status);
}

export class JobLifecycle {
  private readonly durations: JobDurations;
  private readonly keys: RedisKeys;

  constructor(
    private readonly records: RecordStore,
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.durations = new JobDurations(redis, prefix);
    this.keys = records.keys;
  }

  private async change(
    tenant: string,
    id: string,
    patch: (job: JobRecord) => Partial<JobRecord> | null,
  ): Promise<JobRecord | null> {
    return (await this.transition(tenant, id, patch)).job;
  }

  /**
   * The record after `patch` (null: no such job) and whether this call wrote it. A job leaves the sets of
   * unfinished jobs of its model and datasets in the same write that ends it.
   */
  private async transition(
    tenant: string,
    id: string,
    patch: (job: JobRecord) => Partial<JobRecord> | null,
  ): Promise<{ job: JobRecord | null; written: boolean }> {
    let next: JobRecord | null = null;
    const job = await this.records.update(
      'jobs',
      tenant,
      id,
      (current) => {
        const changes = isTerminal(current) ? null : patch(current);
        next = changes === null ? null : { ...current, ...changes };
        return next;
      },
      (changed) => (isTerminal(changed) ? releaseInputs(this.keys, changed) : {}),
    );
    return { job, written: job !== null && job === next };
  }

  /**
   * Stores a queued job and adds it to the sets of unfinished jobs of its model and datasets, in one atomic
   * step that happens only while they all exist: false (nothing stored) when one does not, so an input
   * deleted meanwhile never gets a job, and an input with a job is never deleted (jobs/inputs.ts).
   */
  create(job: JobRecord): Promise<boolean> {
    return this.records.create('jobs', job, {
      ...holdInputs(this.keys, job),
      index: { key: this.byModelKey(job), op: 'add' },
    });
  }

  /** The index of a model's jobs, ended ones included, that GET /v1/jobs?modelId= walks. */
  private byModelKey(job: Pick<JobRecord, 'tenant' | 'modelId'>): string {
    return this.keys.fieldIndex('jobs', job.tenant, 'modelId', job.modelId);
  }

  start(tenant: string, id: string, attempt: number): Promise<JobRecord | null> {
    return this.change(tenant, id, (job) => ({
      status: 'running',
      stage: 'load',
      progress: 0,
      attempts: attempt,
      startedAt: job.startedAt ?? new Date().toISOString(),
      error: null,
    }));
  }

  progress(tenant: string, id: string, stage: string, progress: number): Promise<JobRecord | null> {
    return this.change(tenant, id, (job) =>
      job.stage === stage && job.progress === progress
        ? null
        : { stage, progress: Math.max(0, Math.min(100, progress)) },
    );
  }

  /** Records a failed attempt that will be retried: still running as far as the user is concerned. */
  retrying(tenant: string, id: string, message: string): Promise<JobRecord | null> {
    return this.change(tenant, id, () => ({ stage: 'retrying', error: { message } }));
  }

  async succeed(tenant: string, id: string, summary: JobSummary, artifacts: string[]): Promise<JobRecord | null> {
    const ended = await this.finish(tenant, id, () => ({
      status: 'succeeded',
      stage: 'done',
      progress: 100,
      summary,
      artifacts,
      error: null,
    }));
    return ended.job;
  }

  async fail(tenant: string, id: string, error: { message: string; type?: string }): Promise<JobRecord | null> {
    return (await this.finish(tenant, id, () => ({ status: 'failed', stage: 'failed', error }))).job;
  }

  /**
   * Ends a job BullMQ has failed for good without its processor saying so (the sandbox died in every
   * attempt, it stalled too often): the ended record when this call ended it, null when it had ended
   * already (its processor, or another process that saw the same failure, came first) or is gone.
   */
  async abandon(tenant: string, id: string, error: { message: string; type: string }): Promise<JobRecord | null> {
    const { job, written } = await this.finish(tenant, id, () => ({ status: 'failed', stage: 'failed', error }));
    return written ? job : null;
  }

  /** Marks the record cancelled and raises the flag a running worker polls. */
  async cancel(tenant: string, id: string): Promise<JobRecord | null> {
    await this.redis.set(this.keys.cancel(id), '1', 'EX', 7 * 24 * 3600);
    return (await this.finish(tenant, id, () => ({ status: 'cancelled', stage: 'cancelled' }))).job;
  }

  /**
   * Deletes an ended job's record and the keys kept beside it: its log, cancel flag, webhook secret and the
   * Idempotency-Key that created it (a retry of that request then makes a new job). `job` is the record as
   * read (an ended record no longer changes). False when it is gone or has not ended; its artifacts are the
   * caller's to remove.
   */
  async remove(job: JobRecord): Promise<boolean> {
    if (!isTerminal(job)) return false;
    const { tenant, id } = job;
    if (
      (await this.records.delete('jobs', tenant, id, { index: { key: this.byModelKey(job), op: 'remove' } })) !==
      'deleted'
    )
      return false;
    const keys = [this.keys.jobLog(id), this.keys.cancel(id), this.keys.webhookSecret(tenant, id)];
    await this.redis.del(...keys, ...(job.idempotencyKey ? [job.idempotencyKey] : []));
    return true;
  }

  async appendLog(id: string, line: JobLogLine): Promise<void> {
    const key = this.keys.jobLog(id);
    await this.redis
      .multi()
      .rpush(key, JSON.stringify(line))
      .ltrim(key, -logLines, -1)
      .expire(key, logTtlSeconds)
      .exec();
  }

  async log(id: string): Promise<JobLogLine[]> {
    const lines = await this.redis.lrange(this.keys.jobLog(id), 0, -1);
    return lines.map((line) => JSON.parse(line) as JobLogLine);
  }

  async isCancelRequested(id: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.cancel(id))) === 1;
  }

  /** Ends the job (if it has not ended) and records its run time for /metrics, once, where it ended. */
  private async finish(
    tenant: string,
    id: string,
    patch: (job: JobRecord) => Partial<JobRecord>,
  ): Promise<{ job: JobRecord | null; written: boolean }> {
    const ended = await this.transition(tenant, id, (current) => ({
      ...patch(current),
      finishedAt: new Date().toISOString(),
    }));
    const { job, written } = ended;
    if (written && job?.startedAt && job.finishedAt) {
      const seconds = (Date.parse(job.finishedAt) - Date.parse(job.startedAt)) / 1000;
      await this.durations.record(job.method, job.status, seconds).catch(() => undefined);
    }
    return ended;
  }
}

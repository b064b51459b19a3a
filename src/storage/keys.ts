/**
 * Every Redis key qaas writes, in one place. All of them sit under the configured prefix (QAAS_REDIS_PREFIX),
 * so deployments (and test files) sharing one Redis never meet:
 *
 *   {p}:rec:{kind}:{tenant}:{id}               a record's JSON (storage/records.ts)
 *   {p}:idx:{kind}:{tenant}                    the tenant's ids of that kind, a sorted set pagination walks
 *   {p}:idx:{kind}:{tenant}:{field}:{value}    the ids whose field has that value (jobs by status, by model)
 *   {p}:idx:{kind}:{tenant}:name:{sha256}      the ids named so (sha256 of the name)
 *   {p}:idx:{kind}:{tenant}:label:{sha256}     the ids carrying a label key=value (sha256 of "key\0value")
 *   {p}:idx:{kind}:{tenant}:label-key:{sha256} the ids carrying a label key, whatever its value
 *   {p}:content:{kind}:{tenant}:{sha256}       the id of the tenant's record with that content (uploads dedup on it)
 *   {p}:counts:{kind}                          records per status, for /metrics
 *   {p}:model-jobs:{tenant}:{modelId}          a model's unfinished jobs: its delete waits for none (jobs/inputs.ts)
 *   {p}:dataset-jobs:{tenant}:{datasetId}      a dataset's unfinished jobs, the same guard
 *   {p}:job-log:{jobId}                        the last lines of a job's log
 *   {p}:cancel:{jobId}                         the cancel flag a running worker polls
 *   {p}:webhook-secret:{tenant}:{jobId}        a job's webhook HMAC key (never in a record or queue payload)
 *   {p}:idem:{tenant}:{sha256(Idempotency-Key)} "{body sha256} {jobId}" of the submission that claimed the key
 *   {p}:job-durations                          job run times per method and status, for /metrics
 *   {p}:bull:{queue}:…                         BullMQ's own keys, queues `quantize` and `webhooks`
 */
import { createHash } from 'node:crypto';
import type { RecordKind } from './types.js';

export class RedisKeys {
  constructor(readonly prefix: string) {}

  record(kind: RecordKind, tenant: string, id: string): string {
    return `${this.prefix}:rec:${kind}:${tenant}:${id}`;
  }

  /** SCAN pattern of every record of a kind, across tenants. */
  records(kind: RecordKind): string {
    return `${this.prefix}:rec:${kind}:*`;
  }

  index(kind: RecordKind, tenant: string): string {
    return `${this.prefix}:idx:${kind}:${tenant}`;
  }

  fieldIndex(kind: RecordKind, tenant: string, field: string, value: string): string {
    return `${this.prefix}:idx:${kind}:${tenant}:${field}:${value}`;
  }

  /** Names and labels are hashed: what a client writes never becomes part of a Redis key as it is. */
  nameIndex(kind: RecordKind, tenant: string, name: string): string {
    return this.fieldIndex(kind, tenant, 'name', sha256Hex(name));
  }

  labelIndex(kind: RecordKind, tenant: string, key: string, value: string): string {
    return this.fieldIndex(kind, tenant, 'label', sha256Hex(`${key}\0${value}`));
  }

  labelKeyIndex(kind: RecordKind, tenant: string, key: string): string {
    return this.fieldIndex(kind, tenant, 'label-key', sha256Hex(key));
  }

  content(kind: RecordKind, tenant: string, sha256: string): string {
    return `${this.prefix}:content:${kind}:${tenant}:${sha256}`;
  }

  counts(kind: RecordKind): string {
    return `${this.prefix}:counts:${kind}`;
  }

  modelJobs(tenant: string, modelId: string): string {
    return `${this.prefix}:model-jobs:${tenant}:${modelId}`;
  }

  datasetJobs(tenant: string, datasetId: string): string {
    return `${this.prefix}:dataset-jobs:${tenant}:${datasetId}`;
  }

  jobLog(jobId: string): string {
    return `${this.prefix}:job-log:${jobId}`;
  }

  cancel(jobId: string): string {
    return `${this.prefix}:cancel:${jobId}`;
  }

  webhookSecret(tenant: string, jobId: string): string {
    return `${this.prefix}:webhook-secret:${tenant}:${jobId}`;
  }

  /** The key is hashed: a client's header never becomes part of a Redis key as it is. */
  idempotency(tenant: string, idempotencyKey: string): string {
    return `${this.prefix}:idem:${tenant}:${sha256Hex(idempotencyKey)}`;
  }

  jobDurations(): string {
    return `${this.prefix}:job-durations`;
  }

  /** BullMQ's `prefix` option: its queues' keys live under it. */
  bull(): string {
    return `${this.prefix}:bull`;
  }
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Job submission, the use case behind POST /v1/jobs, free of HTTP: validate the spec against the tenant's
 * model and datasets, honour an Idempotency-Key (the same body replays the first job, another body is
 * refused), then store the record and queue its work as one outcome — a record whose work never reached
 * the queue ends failed, and a key whose job was never stored is freed for a retry.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { ConflictError, NotFoundError } from '../errors.js';
import type { BlobStore } from '../storage/blobs.js';
import type { RedisKeys } from '../storage/keys.js';
import { isId, newId, type RecordStore } from '../storage/records.js';
import type { JobRecord } from '../storage/types.js';
import type { WeightDtype } from '../model/types.js';
import { nothingToSearch } from '../pipeline/auto.js';
import { planTensors } from '../pipeline/ptq.js';
import { checkJobDatasets, storedModelJson } from './inputs.js';
import type { JobLifecycle } from './lifecycle.js';
import { enqueue, type Queues } from './queue.js';
import { parseJobSpec, SpecError, type JobSpec } from './spec.js';
import { urlRefusal } from './webhook-target.js';
import { publicJob, type PublicJob } from './view.js';

const idempotencyTtlSeconds = 24 * 3600;

export interface SubmitDeps {
  config: Pick<Config, 'webhooks'>;
  records: RecordStore;
  blobs: BlobStore;
  redis: Redis;
  queues: Queues;
  keys: RedisKeys;
  lifecycle: JobLifecycle;
}

export interface Submission {
  tenant: string;
  /** The spec as the client sent it (validated here). */
  body: unknown;
  idempotencyKey?: string;
}

export interface Submitted {
  job: PublicJob;
  /** The Idempotency-Key's first job, answered again: nothing new was stored. */
  replayed: boolean;
}

/** Stable JSON (sorted keys) so the same body hashes the same whatever its key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Every check a submission makes: the spec, its model (the tenant's), what the model's format allows, and
 * the datasets it names (the tenant's, fitting the model). `full` reads the model even when no dataset
 * needs it (a dry run says everything); otherwise the model's existence is left to the atomic create.
 */
export async function checkSubmission(
  deps: SubmitDeps,
  tenant: string,
  body: unknown,
  full: boolean,
): Promise<JobSpec> {
  const spec = parseJobSpec(body);
  if (!spec.modelId) throw new SpecError([{ path: '/modelId', message: 'required: the id of an uploaded model' }]);
  const webhookRefusal = spec.webhook ? urlRefusal(spec.webhook.url, deps.config.webhooks.allow) : null;
  if (webhookRefusal !== null) throw new SpecError([{ path: '/webhook/url', message: webhookRefusal }]);
  if (!isId('models', spec.modelId)) throw noModel(spec.modelId);
  const namesDatasets = Object.values(spec.data).some((id) => typeof id === 'string');
  if (!namesDatasets && !full) return spec;
  const model = await deps.records.get('models', tenant, spec.modelId);
  if (!model) throw noModel(spec.modelId);
  // DoReFa and PACT train quantizer layers inserted into a tf.LayersModel; said now, not by a failed job.
  const trained = spec.activations && spec.activations.quantizer !== 'calibrated' ? spec.activations.quantizer : null;
  if (trained && model.format !== 'layers-model') {
    throw new SpecError([
      {
        path: '/activations/quantizer',
        message: `${trained} activations need a layers model; ${model.id} is a ${model.format}`,
      },
    ]);
  }
  await checkJobDatasets(deps, tenant, model, spec.data, spec.kind === 'qat' ? ['training'] : []);
  if ((spec.kind === 'auto' || spec.kind === 'analyze') && spec.layers.skip.length > 0) {
    const described = {
      format: model.format,
      modelJson: await storedModelJson(deps.blobs, model),
      weights: model.tensors.map((t) => ({ ...t, dtype: t.dtype as WeightDtype, values: new Float32Array(0) })),
    };
    if (planTensors(described, spec).selected.length === 0) throw nothingToSearch(spec);
  }
  return spec;
}

function noModel(modelId: string): SpecError {
  return new SpecError([{ path: '/modelId', message: `no model ${modelId}` }]);
}

/** The spec a dry run answers with: defaults filled in, the webhook secret left out. */
export function resolvedSpec(spec: JobSpec): Record<string, unknown> {
  const { webhook, ...resolved } = spec;
  return { ...resolved, ...(webhook ? { webhook: { url: webhook.url } } : {}) };
}

export async function submitJob(deps: SubmitDeps, submission: Submission): Promise<Submitted> {
  const { tenant, body, idempotencyKey } = submission;
  const spec = await checkSubmission(deps, tenant, body, false);
  const id = newId('jobs');
  let claimedKey: string | null = null;
  if (idempotencyKey) {
    const bodyHash = createHash('sha256').update(canonicalJson(body)).digest('hex');
    const key = deps.keys.idempotency(tenant, idempotencyKey);
    const claimed = await deps.redis.set(key, `${bodyHash} ${id}`, 'EX', idempotencyTtlSeconds, 'NX');
    if (claimed === null) {
      const [storedHash, storedId] = ((await deps.redis.get(key)) ?? ' ').split(' ');
      if (storedHash !== bodyHash) {
        throw new ConflictError(
          'idempotency-key-reused',
          'this Idempotency-Key was already used with a different body',
        );
      }
      const existing = await deps.records.get('jobs', tenant, storedId);
      if (existing) return { job: publicJob(existing), replayed: true };
      // The first request claimed the key but has not stored its record yet.
      throw new ConflictError('conflict', 'a request with this Idempotency-Key is still being processed; retry');
    }
    claimedKey = key;
  }
  let created = false;
  // The name and labels live on the record (PATCH changes them there), not in the spec the worker runs.
  const { webhook, name, labels, ...rest } = spec;
  const secret = webhook?.secret ? { key: deps.keys.webhookSecret(tenant, id), value: webhook.secret } : null;
  try {
    if (secret) await deps.redis.set(secret.key, secret.value);
    const job: JobRecord = {
      id,
      tenant,
      ...(name !== undefined ? { name } : {}),
      labels: labels ?? {},
      status: 'queued',
      stage: 'queued',
      progress: 0,
      kind: spec.kind,
      modelId: spec.modelId!,
      method: spec.method.name,
      spec: rest,
      webhookUrl: webhook?.url ?? null,
      attempts: 0,
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      error: null,
      summary: null,
      artifacts: [],
      ...(claimedKey ? { idempotencyKey: claimedKey } : {}),
    };
    created = await deps.lifecycle.create(job);
    if (!created) throw await missingInput(deps, job);
    await enqueue(deps.queues, 'quantize', 'ptq', { tenant, jobId: id }, { jobId: id, priority: spec.priority });
    return { job: publicJob(job), replayed: false };
  } catch (error) {
    // A record whose job never reached the queue would stay "queued" forever: it ends failed instead.
    if (created) {
      await deps.lifecycle
        .fail(tenant, id, { message: 'the job could not be queued', type: 'internal' })
        .catch(() => undefined);
    }
    // A key whose job was never created must not block a retry for a day.
    if (claimedKey) await deps.redis.del(claimedKey).catch(() => undefined);
    if (secret && !created) await deps.redis.del(secret.key).catch(() => undefined);
    throw error;
  }
}

/** Which input a refused create lacked: the model, else the first dataset deleted since the check. */
async function missingInput(deps: SubmitDeps, job: JobRecord): Promise<Error> {
  if (!(await deps.records.get('models', job.tenant, job.modelId))) return noModel(job.modelId);
  const data = (job.spec.data ?? {}) as Record<string, unknown>;
  for (const [role, id] of Object.entries(data)) {
    if (typeof id === 'string' && !(await deps.records.get('datasets', job.tenant, id)))
      return new NotFoundError(`no dataset ${id} (data.${role})`, { dataset: id, role });
  }
  return new ConflictError('conflict', 'an input of the job changed while it was submitted; retry');
}

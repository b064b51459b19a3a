/**
 * The inputs a job holds while it is unfinished: its model and the datasets its spec names. A job is stored
 * only while they all exist, and enters each one's set of unfinished jobs in the same atomic write; it leaves
 * them in the write that ends it. A model or dataset is deleted only while its set is empty, also in one
 * atomic write: no delete can slip in between a check and a job (nor a job between a check and a delete).
 */
import type { Redis } from 'ioredis';
import { ConflictError, NotFoundError } from '../errors.js';
import { DatasetError } from '../model/dataset/index.js';
import { checkDatasetFitsModel, modelInputs, modelOutputs } from '../model/signature.js';
import type { BlobStore } from '../storage/blobs.js';
import type { RedisKeys } from '../storage/keys.js';
import { isId, type RecordStore, type WriteEffects } from '../storage/records.js';
import type { DatasetRecord, JobRecord, ModelRecord } from '../storage/types.js';
import { SpecError } from './spec.js';

export const datasetRoles = ['calibration', 'evaluation', 'training', 'verification'] as const;
export type DatasetRole = (typeof datasetRoles)[number];

/** The distinct dataset ids a job's spec names. */
export function jobDatasetIds(job: Pick<JobRecord, 'spec'>): string[] {
  const data = (job.spec.data ?? {}) as Partial<Record<DatasetRole, unknown>>;
  return [...new Set(datasetRoles.map((role) => data[role]).filter((id): id is string => typeof id === 'string'))];
}

/** What storing a new job checks and changes with it: its inputs exist, and it joins their sets. */
export function holdInputs(keys: RedisKeys, job: JobRecord): WriteEffects {
  const datasets = jobDatasetIds(job);
  return {
    guards: [
      { key: keys.record('models', job.tenant, job.modelId), expect: 'exists' },
      ...datasets.map((id) => ({ key: keys.record('datasets', job.tenant, id), expect: 'exists' as const })),
    ],
    memberships: [
      { key: keys.modelJobs(job.tenant, job.modelId), op: 'add' },
      ...datasets.map((id) => ({ key: keys.datasetJobs(job.tenant, id), op: 'add' as const })),
    ],
  };
}

/** What the write that ends a job changes with it: it leaves its inputs' sets. */
export function releaseInputs(keys: RedisKeys, job: JobRecord): WriteEffects {
  return {
    memberships: [
      { key: keys.modelJobs(job.tenant, job.modelId), op: 'remove' },
      ...jobDatasetIds(job).map((id) => ({ key: keys.datasetJobs(job.tenant, id), op: 'remove' as const })),
    ],
  };
}

/** Deletes a model or dataset that no unfinished job holds; NotFoundError / ConflictError (naming the jobs) else. */
export async function deleteInput(
  deps: { records: RecordStore; redis: Redis; keys: RedisKeys },
  kind: 'models' | 'datasets',
  tenant: string,
  id: string,
): Promise<void> {
  const what = kind === 'models' ? 'model' : 'dataset';
  const jobsKey = kind === 'models' ? deps.keys.modelJobs(tenant, id) : deps.keys.datasetJobs(tenant, id);
  // Blobs are shared by content: `qaas sweep` removes those no record names any more (storage/sweep.ts).
  const outcome = isId(kind, id)
    ? await deps.records.delete(kind, tenant, id, { guards: [{ key: jobsKey, expect: 'absent' }] })
    : 'missing';
  if (outcome === 'missing') throw new NotFoundError(`no ${what} ${id}`);
  if (outcome === 'guarded') {
    const jobs = (await deps.redis.smembers(jobsKey)).sort();
    throw new ConflictError('conflict', `${what} ${id} is used by unfinished jobs: ${jobs.join(', ')}`, { jobs });
  }
}

/** A model's model.json as stored (its manifest included). */
export async function storedModelJson(blobs: BlobStore, model: ModelRecord): Promise<Record<string, unknown>> {
  const file = model.files.find((f) => f.path === 'model.json');
  return file ? (JSON.parse((await blobs.read(file.sha256)).toString('utf8')) as Record<string, unknown>) : {};
}

/**
 * Job submission's check of `spec.data`: every named dataset must be the tenant's (404) and fit the model —
 * x the model's input, y (evaluation and training; calibration needs no labels) its output (422 naming the
 * mismatch). The model's shapes come from its stored model.json. `labelled` names the roles whose dataset
 * must carry labels (y) for the job's kind.
 */
export async function checkJobDatasets(
  deps: { records: RecordStore; blobs: BlobStore },
  tenant: string,
  model: ModelRecord,
  data: Partial<Record<DatasetRole, string>>,
  labelled: readonly DatasetRole[] = [],
): Promise<void> {
  const named = Object.entries(data).filter((entry): entry is [DatasetRole, string] => typeof entry[1] === 'string');
  if (named.length === 0) return;
  const modelJson = await storedModelJson(deps.blobs, model);
  const inputs = modelInputs(modelJson);
  const outputs = modelOutputs(modelJson);
  const records = new Map<DatasetRole, DatasetRecord>();
  for (const [role, id] of named) {
    const record = isId('datasets', id) ? await deps.records.get('datasets', tenant, id) : null;
    if (!record) throw new NotFoundError(`no dataset ${id} (data.${role})`, { dataset: id, role });
    records.set(role, record);
    if (labelled.includes(role) && !record.y) {
      throw new SpecError([
        { path: `/data/${role}`, message: `dataset ${id} has no labels (y); this job trains against them` },
      ]);
    }
    const problem = checkDatasetFitsModel(
      {
        x: record.x && { sampleShape: record.x.shape.slice(1) },
        inputs: record.inputs?.map((a) => ({ name: a.name, sampleShape: a.shape.slice(1) })),
        y: role === 'calibration' || !record.y ? null : { sampleShape: record.y.shape.slice(1) },
      },
      inputs,
      outputs,
    );
    if (problem) throw new DatasetError(`data.${role} (${id}): ${problem}`, { dataset: id, role });
  }
  const labels = (role: DatasetRole): boolean => Boolean(records.get(role)?.y);
  if (records.has('verification') && records.has('evaluation') && labels('evaluation') !== labels('verification')) {
    throw new SpecError([
      {
        path: '/data/verification',
        message: `data.evaluation ${labels('evaluation') ? 'has' : 'has no'} labels (y) and data.verification ${
          labels('verification') ? 'has' : 'has no'
        }: the drop is measured in one metric on both`,
      },
    ]);
  }
}

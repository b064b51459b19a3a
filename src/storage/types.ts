/**
 * The records the service keeps in Redis, one JSON document each, always owned by one tenant. What the API
 * returns is a projection of these (response schemas drop the internal fields).
 */
import type { Metrics } from '../quant/types.js';
import type { TensorSignature } from '../model/signature.js';
import type { ModelFormat } from '../model/types.js';

/** What a person calls a record and labels to find it by (jobs/metadata.ts); both optional, labels `{}` by default. */
export interface Named {
  name?: string;
  labels?: Record<string, string>;
}

export interface StoredFile {
  path: string;
  sha256: string;
  bytes: number;
}

export interface ModelRecord extends Named {
  id: string;
  tenant: string;
  format: ModelFormat;
  params: number;
  bytes: number;
  /** sha256 over the sorted `path\0sha256\n` lines of its files: the model's identity. */
  sha256: string;
  tensors: { name: string; shape: number[]; dtype: string }[];
  /** What the model takes and gives, batch axis first (null: any size); a dataset must fit these. */
  inputs?: TensorSignature[];
  outputs?: TensorSignature[];
  files: StoredFile[];
  /** Set when the upload was a Keras model: the stored files are its conversion to TF.js layers form. */
  source?: ModelSource;
  createdAt: string;
}

export interface ModelSource {
  /** `keras`: a Keras 3 `.keras` archive; `h5`: a legacy Keras HDF5 file. */
  format: 'keras' | 'h5';
  /** The Keras version that saved it. */
  kerasVersion: string;
}

export interface ArrayInfo {
  dtype: string;
  shape: number[];
  sha256: string;
  bytes: number;
  /** `npy` blobs hold a whole .npy file; `json` blobs the uploaded JSON document; `npz` the archive (x and y share it). */
  encoding: 'npy' | 'json' | 'npz';
}

export interface DatasetRecord extends Named {
  id: string;
  tenant: string;
  samples: number;
  /** The array that feeds a single-input model; null when the dataset has named `inputs` instead. */
  x: ArrayInfo | null;
  /** One array per model input, named by it (multi-input models); absent when `x` is the input. */
  inputs?: (ArrayInfo & { name: string })[];
  y: ArrayInfo | null;
  bytes: number;
  /** sha256 over its arrays' roles and blobs: the dataset's identity (absent on datasets stored before it). */
  sha256?: string;
  createdAt: string;
}

export const jobStatuses = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof jobStatuses)[number];
export const terminalStatuses: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];

export interface JobSummary {
  params: number;
  quantizedParams: number;
  bytesBefore: number;
  bytesAfter: number;
  packedBytes: number;
  compressionRatio: number;
  bitsPerWeight: number;
  backend: string;
  /** Metrics by stage (float, ptq, qat, integer) when the job named an evaluation dataset. */
  metrics?: Partial<Record<string, Metrics>>;
  /** The report's warnings (model/ not smaller than the upload, a tensor left in float32, ...). */
  warnings?: string[];
}

export interface WebhookDelivery {
  /** refused: the URL's address may not receive webhooks (never retried); failed: this attempt did not land. */
  status: 'delivered' | 'failed' | 'refused';
  at: string;
  attempt: number;
  /** The receiver's HTTP status, when it answered. */
  httpStatus?: number;
  detail?: string;
}

export interface JobRecord extends Named {
  id: string;
  tenant: string;
  status: JobStatus;
  stage: string;
  progress: number;
  kind: string;
  modelId: string;
  method: string;
  /** The validated spec without `webhook` (its secret lives in its own key, never in a record or job data). */
  spec: Record<string, unknown>;
  webhookUrl: string | null;
  attempts: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: { message: string; type?: string } | null;
  summary: JobSummary | null;
  artifacts: string[];
  /** The last webhook delivery attempt's outcome (absent until one was made). */
  webhookDelivery?: WebhookDelivery;
  /** The Redis key of the Idempotency-Key that created the job (internal: deleting the job frees it). */
  idempotencyKey?: string;
}

export type RecordKind = 'models' | 'datasets' | 'jobs';
export interface RecordOf {
  models: ModelRecord;
  datasets: DatasetRecord;
  jobs: JobRecord;
}

/**
 * A client of the qaas HTTP API, for `qaas submit`: uploads streamed from disk, job submission under an
 * Idempotency-Key (resent on a network error, so a retry never makes a second job), the job's SSE stream,
 * and artifact downloads. A 4xx/5xx answer becomes an ApiError carrying the service's problem+json.
 */
import { openAsBlob } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { EventSourceMessage } from 'eventsource-parser';
import { EventSourceParserStream } from 'eventsource-parser/stream';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: { type?: string; title?: string; detail?: string; [key: string]: unknown },
  ) {
    super(`${status} ${problem.title ?? 'error'}${problem.detail ? `: ${problem.detail}` : ''}`);
    this.name = 'ApiError';
  }
}

export interface RemoteJob {
  id: string;
  status: 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
  stage: string;
  progress: number;
  error: { message: string; type?: string } | null;
  artifacts: string[];
}

/** What to call an uploaded model or dataset and the labels to find it by (docs/architecture.md). */
export interface Metadata {
  name?: string;
  labels?: Record<string, string>;
}

/** An uploaded model or dataset; `created` is false when the tenant already had it (the same content). */
export interface Uploaded extends Metadata {
  id: string;
  created: boolean;
}

export interface JobEvent {
  event: string;
  data: Record<string, unknown>;
}

const networkRetries = 3;
/** Tries of a request the service answered 429 or 503, waiting its Retry-After between them. */
const busyRetries = 6;

export class QaasClient {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey?: string,
  ) {}

  /**
   * A model directory (model.json and the shards its manifest names) or one .zip / .tar.gz holding them.
   * Files the tenant already has as a model give back that model as it is (its own name and labels).
   */
  async uploadModel(path: string, metadata: Metadata = {}): Promise<Uploaded> {
    const form = new FormData();
    if ((await stat(path)).isDirectory()) {
      const modelJson = JSON.parse(await readFile(join(path, 'model.json'), 'utf8')) as {
        weightsManifest?: { paths: string[] }[];
      };
      const shards = (modelJson.weightsManifest ?? []).flatMap((group) => group.paths);
      for (const name of ['model.json', ...shards]) form.append('file', await openAsBlob(join(path, name)), name);
    } else {
      form.append('file', await openAsBlob(path), basename(path));
    }
    return this.upload('/v1/models', form, metadata);
  }

  /** `x.npy[,y.npy]`, one `.npz`, or one JSON file `{x, y}` (the forms POST /v1/datasets takes). */
  async uploadDataset(ref: string, metadata: Metadata = {}): Promise<Uploaded> {
    const form = new FormData();
    const paths = ref.split(',');
    if (paths.length > 2) throw new Error(`a dataset is x.npy[,y.npy], one .npz or one .json; got ${ref}`);
    for (const [i, path] of paths.entries()) {
      // A lone .npy is x whatever its file name; .npz and .json are read by their ending.
      const field = paths.length === 2 ? ['x', 'y'][i] : path.toLowerCase().endsWith('.npy') ? 'x' : 'file';
      form.append(field, await openAsBlob(path), basename(path));
    }
    return this.upload('/v1/datasets', form, metadata);
  }

  private async upload(path: string, form: FormData, { name, labels }: Metadata): Promise<Uploaded> {
    if (name !== undefined) form.append('name', name);
    if (labels !== undefined) form.append('labels', JSON.stringify(labels));
    const response = await this.request(path, { method: 'POST', body: form });
    const record = (await response.json()) as Omit<Uploaded, 'created'>;
    return { ...record, created: response.status === 201 };
  }

  async submitJob(spec: Record<string, unknown>, idempotencyKey: string): Promise<RemoteJob> {
    const init = {
      method: 'POST',
      body: JSON.stringify(spec),
      headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
    };
    for (let attempt = 1; ; attempt++) {
      try {
        return (await (await this.request('/v1/jobs', init)).json()) as RemoteJob;
      } catch (error) {
        if (error instanceof ApiError || attempt >= networkRetries) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
      }
    }
  }

  async job(id: string): Promise<RemoteJob> {
    return (await this.request(`/v1/jobs/${id}`)).json() as Promise<RemoteJob>;
  }

  async report(id: string): Promise<unknown> {
    return (await this.request(`/v1/jobs/${id}/report`)).json();
  }

  /** One artifact's bytes as they arrive (a model's shards need not fit in memory). */
  async artifact(id: string, path: string): Promise<AsyncIterable<Uint8Array>> {
    const encoded = path.split('/').map(encodeURIComponent).join('/');
    return (await this.request(`/v1/jobs/${id}/artifacts/${encoded}`)).body as unknown as AsyncIterable<Uint8Array>;
  }

  /** The job's Server-Sent Events, in order, until the service ends the stream (after `final`). */
  async *events(id: string): AsyncGenerator<JobEvent> {
    const response = await this.request(`/v1/jobs/${id}/events`, { headers: { accept: 'text/event-stream' } });
    const messages = response.body!.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
    for await (const message of messages as unknown as AsyncIterable<EventSourceMessage>) {
      if (message.event) yield { event: message.event, data: JSON.parse(message.data) as Record<string, unknown> };
    }
  }

  /**
   * One call. A 429 (rate limit, checked before the service reads a body) or a 503 (Redis away) did nothing,
   * so the same request is sent again after the Retry-After the service gave, a few times.
   */
  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.apiKey) headers.set('authorization', `Bearer ${this.apiKey}`);
    let response: Response;
    for (let attempt = 1; ; attempt++) {
      try {
        response = await fetch(new URL(path, this.baseUrl), { ...init, headers });
      } catch (error) {
        const cause = (error as { cause?: { code?: string; message?: string } }).cause;
        throw new Error(
          `cannot reach the service at ${this.baseUrl}: ${cause?.code ?? cause?.message ?? (error as Error).message}`,
        );
      }
      if ((response.status !== 429 && response.status !== 503) || attempt >= busyRetries) break;
      await response.body?.cancel();
      const seconds = Number(response.headers.get('retry-after'));
      await new Promise((resolve) =>
        setTimeout(resolve, Math.min(Number.isFinite(seconds) && seconds > 0 ? seconds : 1, 30) * 1000),
      );
    }
    if (response.ok) return response;
    const text = await response.text();
    let problem: ApiError['problem'];
    try {
      problem = JSON.parse(text) as ApiError['problem'];
    } catch {
      problem = { title: response.statusText, detail: text.slice(0, 200) };
    }
    throw new ApiError(response.status, problem);
  }
}

/**
 * /v1/jobs: submit (spec validated by the same schema the CLI uses, Idempotency-Key honoured), list, show,
 * live events (SSE relayed from BullMQ QueueEvents), cancel, report and artifacts (one file or all as zip).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import yazl from 'yazl';
import { JobLifecycle, isTerminal } from '../../jobs/lifecycle.js';
import { enqueue, webhookJobId, webhookSecretKey, type JobProgressEvent } from '../../jobs/queue.js';
import { parseJobSpec, SpecError } from '../../jobs/spec.js';
import { urlRefusal } from '../../jobs/webhook-target.js';
import { nothingToSearch } from '../../pipeline/auto.js';
import { planTensors } from '../../pipeline/ptq.js';
import { artifactDir, artifactFile } from '../../storage/artifacts.js';
import { isId, newId } from '../../storage/records.js';
import { listTree } from '../../storage/tree.js';
import type { JobRecord } from '../../storage/types.js';
import type { WeightDtype } from '../../model/types.js';
import { ApiProblem } from '../errors.js';
import { IdParams, Job, JobStatus, ListQuery, pageOf, Problem, problemResponses, servablePage } from '../schemas.js';
import { checkJobDatasets, storedModelJson } from './datasets.js';

const idempotencyTtlSeconds = 24 * 3600;

/** Stable JSON (sorted keys) so the same body hashes the same whatever its key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** A record as the Job schema shows it, for the SSE events that are written without Fastify's serializer. */
function publicJob({ tenant, idempotencyKey, ...job }: JobRecord): Omit<JobRecord, 'tenant' | 'idempotencyKey'> {
  return job;
}

const contentTypes: Record<string, string> = {
  json: 'application/json',
  bin: 'application/octet-stream',
  js: 'text/javascript',
  md: 'text/markdown',
};

function contentTypeOf(path: string): string {
  const extension = path.split('.').pop() ?? '';
  return Object.hasOwn(contentTypes, extension) ? contentTypes[extension] : 'application/octet-stream';
}

export async function jobRoutes(app: FastifyInstance): Promise<void> {
  const { records, config, redis, queues, blobs } = app.services;
  const lifecycle = new JobLifecycle(records, redis, config.redisPrefix);

  async function findJob(request: FastifyRequest): Promise<JobRecord> {
    const { id } = request.params as { id: string };
    const job = isId('jobs', id) ? await records.get('jobs', request.tenant, id) : null;
    if (!job) throw new ApiProblem('not-found', `no job ${id}`);
    return job;
  }

  app.post(
    '/v1/jobs',
    {
      schema: {
        summary: 'Submit a job',
        headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) }),
        querystring: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        body: Type.Object({}, { additionalProperties: true }),
        response: {
          200: Type.Object({ spec: Type.Object({}, { additionalProperties: true }) }),
          202: Job,
          409: Problem,
          422: Problem,
          ...problemResponses,
        },
      },
    },
    async (request, reply) => {
      const { dryRun } = request.query as { dryRun?: boolean };
      const spec = parseJobSpec(request.body);
      if (!spec.modelId) throw new SpecError([{ path: '/modelId', message: 'required: the id of an uploaded model' }]);
      const webhookRefusal = spec.webhook ? urlRefusal(spec.webhook.url, config.webhooks.allow) : null;
      if (webhookRefusal !== null) throw new SpecError([{ path: '/webhook/url', message: webhookRefusal }]);
      const noModel = () => new SpecError([{ path: '/modelId', message: `no model ${spec.modelId}` }]);
      if (!isId('models', spec.modelId)) throw noModel();
      const namesDatasets = Object.values(spec.data).some((id) => typeof id === 'string');
      // Without datasets the model's existence is all that matters, and lifecycle.create checks it atomically.
      if (namesDatasets || dryRun) {
        const model = await records.get('models', request.tenant, spec.modelId);
        if (!model) throw noModel();
        // DoReFa and PACT train quantizer layers inserted into a tf.LayersModel; said now, not by a failed job.
        const trained =
          spec.activations && spec.activations.quantizer !== 'calibrated' ? spec.activations.quantizer : null;
        if (trained && model.format !== 'layers-model') {
          throw new SpecError([
            {
              path: '/activations/quantizer',
              message: `${trained} activations need a layers model; ${model.id} is a ${model.format}`,
            },
          ]);
        }
        await checkJobDatasets(app.services, request.tenant, model, spec.data, spec.kind === 'qat' ? ['training'] : []);
        if ((spec.kind === 'auto' || spec.kind === 'analyze') && spec.layers.skip.length > 0) {
          const modelJson = await storedModelJson(blobs, model);
          const described = {
            format: model.format,
            modelJson,
            weights: model.tensors.map((t) => ({ ...t, dtype: t.dtype as WeightDtype, values: new Float32Array(0) })),
          };
          if (planTensors(described, spec).selected.length === 0) throw nothingToSearch(spec);
        }
      }
      if (dryRun) {
        // Every check a submission makes has passed; nothing is stored or queued.
        const { webhook, ...resolved } = spec;
        return reply.code(200).send({ spec: { ...resolved, ...(webhook ? { webhook: { url: webhook.url } } : {}) } });
      }

      const id = newId('jobs');
      const idempotencyKey = request.headers['idempotency-key'] as string | undefined;
      let claimedKey: string | null = null;
      if (idempotencyKey) {
        const bodyHash = createHash('sha256').update(canonicalJson(request.body)).digest('hex');
        const key = `${config.redisPrefix}:idem:${request.tenant}:${createHash('sha256').update(idempotencyKey).digest('hex')}`;
        const claimed = await redis.set(key, `${bodyHash} ${id}`, 'EX', idempotencyTtlSeconds, 'NX');
        if (claimed === null) {
          const [storedHash, storedId] = ((await redis.get(key)) ?? ' ').split(' ');
          if (storedHash !== bodyHash) {
            throw new ApiProblem(
              'idempotency-key-reused',
              'this Idempotency-Key was already used with a different body',
            );
          }
          const existing = await records.get('jobs', request.tenant, storedId);
          if (existing) return reply.code(202).header('idempotent-replayed', 'true').send(existing);
          // The first request claimed the key but has not stored its record yet.
          throw new ApiProblem('conflict', 'a request with this Idempotency-Key is still being processed; retry');
        }
        claimedKey = key;
      }
      let created = false;
      const { webhook, ...rest } = spec;
      const secret = webhook?.secret
        ? { key: webhookSecretKey(config.redisPrefix, request.tenant, id), value: webhook.secret }
        : null;
      try {
        if (secret) await redis.set(secret.key, secret.value);
        const job: JobRecord = {
          id,
          tenant: request.tenant,
          status: 'queued',
          stage: 'queued',
          progress: 0,
          kind: spec.kind,
          modelId: spec.modelId,
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
        created = await lifecycle.create(job);
        if (!created) throw noModel();
        await enqueue(
          queues,
          'quantize',
          'ptq',
          { tenant: request.tenant, jobId: id },
          { jobId: id, priority: spec.priority },
        );
        request.log.info({ jobId: id, method: job.method }, 'job queued');
        return reply.code(202).header('location', `/v1/jobs/${id}`).send(job);
      } catch (error) {
        // A record whose job never reached the queue would stay "queued" forever: it ends failed instead.
        if (created) {
          await lifecycle
            .fail(request.tenant, id, { message: 'the job could not be queued', type: 'internal' })
            .catch(() => undefined);
        }
        // A key whose job was never created must not block a retry for a day.
        if (claimedKey) await redis.del(claimedKey).catch(() => undefined);
        if (secret && !created) await redis.del(secret.key).catch(() => undefined);
        throw error;
      }
    },
  );

  app.get(
    '/v1/jobs',
    {
      schema: {
        summary: 'List jobs',
        querystring: Type.Composite(
          [
            ListQuery,
            Type.Object({
              status: Type.Optional(JobStatus),
              modelId: Type.Optional(Type.String({ pattern: '^mdl_[0-9a-z]{25}$' })),
            }),
          ],
          { additionalProperties: false },
        ),
        response: { 200: pageOf(Job), ...problemResponses },
      },
    },
    async (request, reply) => {
      const { modelId, ...query } = request.query as {
        cursor?: string;
        limit: number;
        status?: string;
        modelId?: string;
      };
      const page = await records.list('jobs', request.tenant, {
        ...query,
        ...(modelId ? { where: { field: 'modelId', value: modelId } } : {}),
      });
      return servablePage(reply, Job, page);
    },
  );

  app.get(
    '/v1/jobs/:id',
    { schema: { summary: 'Show a job', params: IdParams, response: { 200: Job, ...problemResponses } } },
    (request) => findJob(request),
  );

  app.delete(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'Delete an ended job and its artifacts',
        params: IdParams,
        response: { 204: Type.Null(), 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findJob(request);
      if (!isTerminal(job)) throw new ApiProblem('conflict', `job ${job.id} is ${job.status}: cancel it first`);
      // The record goes first: a crash after it leaves only files that `qaas sweep` removes.
      if (!(await lifecycle.remove(job))) throw new ApiProblem('not-found', `no job ${job.id}`);
      await Promise.all([queues.quantize.remove(job.id), queues.webhooks.remove(webhookJobId(job.id))]).catch(
        () => undefined,
      );
      await rm(artifactDir(config.dataDir, request.tenant, job.id), { recursive: true, force: true });
      request.log.info({ jobId: job.id }, 'job deleted');
      return reply.code(204).send();
    },
  );

  app.post(
    '/v1/jobs/:id/cancel',
    {
      schema: { summary: 'Cancel a job', params: IdParams, response: { 200: Job, 409: Problem, ...problemResponses } },
    },
    async (request) => {
      const job = await findJob(request);
      if (isTerminal(job)) throw new ApiProblem('conflict', `job ${job.id} already ${job.status}`);
      const cancelled = await lifecycle.cancel(request.tenant, job.id);
      // A job no worker holds yet is simply taken off the queue; a running one stops at its next checkpoint.
      const queued = await queues.quantize.getJob(job.id);
      const waiting = ['waiting', 'prioritized', 'delayed'];
      if (queued && waiting.includes(await queued.getState())) await queued.remove().catch(() => undefined);
      if (!cancelled || cancelled.status !== 'cancelled') {
        throw new ApiProblem('conflict', `job ${job.id} already ${cancelled?.status ?? 'gone'}`);
      }
      request.log.info({ jobId: job.id }, 'job cancelled');
      return cancelled;
    },
  );

  app.get(
    '/v1/jobs/:id/report',
    {
      schema: {
        summary: 'The job report',
        params: IdParams,
        response: { 200: Type.Object({}, { additionalProperties: true }), 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findJob(request);
      if (job.status !== 'succeeded')
        throw new ApiProblem('conflict', `job ${job.id} is ${job.status}; the report exists once it succeeded`);
      const text = await readFile(`${artifactDir(config.dataDir, job.tenant, job.id)}/report.json`, 'utf8');
      return reply.type('application/json').send(text);
    },
  );

  app.get(
    '/v1/jobs/:id/artifacts.zip',
    {
      schema: {
        summary: 'All artifacts as one zip',
        params: IdParams,
        response: { 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findJob(request);
      if (job.status !== 'succeeded')
        throw new ApiProblem('conflict', `job ${job.id} is ${job.status}; artifacts exist once it succeeded`);
      const dir = artifactDir(config.dataDir, job.tenant, job.id);
      const zip = new yazl.ZipFile();
      for (const path of await listTree(dir)) zip.addFile(`${dir}/${path}`, path);
      zip.end();
      return reply
        .type('application/zip')
        .header('content-disposition', `attachment; filename="${job.id}.zip"`)
        .send(zip.outputStream);
    },
  );

  app.get(
    '/v1/jobs/:id/artifacts/*',
    {
      schema: {
        summary: 'One artifact file',
        params: Type.Object({ id: Type.String(), '*': Type.String() }),
        response: { 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findJob(request);
      if (job.status !== 'succeeded')
        throw new ApiProblem('conflict', `job ${job.id} is ${job.status}; artifacts exist once it succeeded`);
      const path = (request.params as { '*': string })['*'];
      const file = artifactFile(artifactDir(config.dataDir, job.tenant, job.id), path);
      const info = file ? await stat(file).catch(() => null) : null;
      if (!file || !info?.isFile()) throw new ApiProblem('not-found', `job ${job.id} has no artifact ${path}`);
      return reply.type(contentTypeOf(path)).header('content-length', info.size).send(createReadStream(file));
    },
  );

  app.get(
    '/v1/jobs/:id/log',
    {
      schema: {
        summary: "A job's log lines (the last 500, kept 14 days)",
        params: IdParams,
        response: {
          200: Type.Object({
            lines: Type.Array(Type.Object({ at: Type.String(), stage: Type.String(), message: Type.String() })),
          }),
          ...problemResponses,
        },
      },
    },
    async (request) => {
      const job = await findJob(request);
      return { lines: await lifecycle.log(job.id) };
    },
  );

  app.get(
    '/v1/jobs/:id/events',
    { schema: { summary: 'Live job events (SSE)', params: IdParams, response: problemResponses } },
    async (request, reply) => {
      const first = await findJob(request);
      const events = app.services.queueEvents();
      await events.waitUntilReady();
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      let stage = first.stage;
      let closed = false;
      const send = (event: string, data: unknown) => {
        if (!closed) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const finish = async () => {
        if (closed) return;
        const job = await records.get('jobs', request.tenant, first.id).catch(() => null);
        if (!job || !isTerminal(job)) return;
        send('final', publicJob(job));
        close();
      };
      const onProgress = ({ jobId, data }: { jobId: string; data: unknown }) => {
        if (jobId !== first.id || typeof data !== 'object' || data === null) return;
        const progress = data as JobProgressEvent;
        if (progress.stage !== stage) {
          stage = progress.stage;
          send('stage', { stage });
        }
        send('progress', { stage: progress.stage, progress: progress.progress });
        if (progress.message) send('log', { message: progress.message });
      };
      const onEnd = ({ jobId }: { jobId: string }) => {
        if (jobId === first.id) void finish();
      };
      // Cancel of a queued job and a record changed by another replica produce no queue event: poll too.
      const poll = setInterval(() => void finish(), 1000);
      const heartbeat = setInterval(() => !closed && raw.write(': keep-alive\n\n'), 15_000);
      function close() {
        if (closed) return;
        closed = true;
        clearInterval(poll);
        clearInterval(heartbeat);
        events.off('progress', onProgress);
        events.off('completed', onEnd);
        events.off('failed', onEnd);
        events.off('removed', onEnd);
        raw.end();
      }
      events.on('progress', onProgress);
      events.on('completed', onEnd);
      events.on('failed', onEnd);
      events.on('removed', onEnd);
      request.raw.on('close', close);
      // Subscribed first, then the current state: nothing that happens in between is lost.
      const current = (await records.get('jobs', request.tenant, first.id).catch(() => null)) ?? first;
      stage = current.stage;
      send('state', publicJob(current));
      // A client that connects late gets the log so far (a line reported in this instant may come twice).
      for (const line of await lifecycle.log(first.id).catch(() => [])) send('log', line);
      if (isTerminal(current)) {
        send('final', publicJob(current));
        close();
      }
    },
  );
}

/**
 * /v1/jobs: submit (the spec validated by the schema the CLI and worker use, Idempotency-Key honoured), list,
 * show, live events (SSE relayed from BullMQ QueueEvents), cancel, report and artifacts (one file or all as
 * zip). Each handler adapts HTTP to a use case in src/jobs (submit.ts, view.ts) or a store.
 */
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifySchemaCompiler } from 'fastify';
import { isTerminal } from '../../jobs/lifecycle.js';
import { webhookJobId, type JobProgressEvent } from '../../jobs/queue.js';
import { JobSpecSchema, parseJobSpec } from '../../jobs/spec.js';
import { MetadataPatchSchema, patchRecordMetadata } from '../../jobs/metadata.js';
import { checkSubmission, resolvedSpec, submitJob } from '../../jobs/submit.js';
import { publicJob, type PublicJob } from '../../jobs/view.js';
import { isId } from '../../storage/records.js';
import type { JobRecord } from '../../storage/types.js';
import { ApiProblem } from '../errors.js';
import {
  FileStream,
  IdParams,
  Job,
  JobStatus,
  listFilter,
  ListQuery,
  MetadataQuery,
  pageOf,
  Problem,
  problemResponses,
  servablePage,
} from '../schemas.js';

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

/**
 * The submission body is checked by parseJobSpec, the job spec's own validation (defaults, per-method params,
 * combinations), so a bad spec is answered as every SpecError is; the other parts by their TypeBox schemas.
 */
const submissionValidator: FastifySchemaCompiler<unknown> = (route) => {
  if (route.httpPart !== 'body')
    return TypeBoxValidatorCompiler(route as Parameters<typeof TypeBoxValidatorCompiler>[0]);
  return (body: unknown) => {
    try {
      parseJobSpec(body);
      return { value: body };
    } catch (error) {
      return { error: error as Error };
    }
  };
};

export const jobRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { records, queues, lifecycle, artifacts } = app.services;

  /** `request` as every /v1/jobs/:id route has it: the tenant and the id in the path. */
  type JobRequest = { tenant: string; params: { id: string } };

  async function findJob(request: JobRequest): Promise<JobRecord> {
    const { id } = request.params;
    const job = isId('jobs', id) ? await records.get('jobs', request.tenant, id) : null;
    if (!job) throw new ApiProblem('not-found', `no job ${id}`);
    return job;
  }

  async function findSucceededJob(request: JobRequest, what: string): Promise<JobRecord> {
    const job = await findJob(request);
    if (job.status !== 'succeeded')
      throw new ApiProblem('conflict', `job ${job.id} is ${job.status}; ${what} once it succeeded`);
    return job;
  }

  app.post(
    '/v1/jobs',
    {
      schema: {
        summary: 'Submit a job',
        headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) }),
        querystring: Type.Object({ dryRun: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        body: JobSpecSchema,
        response: {
          200: Type.Object({ spec: Type.Object({}, { additionalProperties: true }) }),
          202: Job,
          409: Problem,
          422: Problem,
          ...problemResponses,
        },
      },
      validatorCompiler: submissionValidator,
    },
    async (request, reply) => {
      if (request.query.dryRun) {
        // Every check a submission makes; nothing is stored or queued.
        const spec = await checkSubmission(app.services, request.tenant, request.body, true);
        return reply.code(200).send({ spec: resolvedSpec(spec) });
      }
      const { job, replayed } = await submitJob(app.services, {
        tenant: request.tenant,
        body: request.body,
        idempotencyKey: request.headers['idempotency-key'],
      });
      if (replayed) return reply.code(202).header('idempotent-replayed', 'true').send(job);
      request.log.info({ jobId: job.id, method: job.method }, 'job queued');
      return reply.code(202).header('location', `/v1/jobs/${job.id}`).send(job);
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
            MetadataQuery,
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
      const { modelId, ...query } = request.query;
      const page = await records.list('jobs', request.tenant, {
        ...listFilter(query),
        ...(modelId ? { where: { field: 'modelId', value: modelId } } : {}),
      });
      return servablePage(reply, Job, { ...page, items: page.items.map(publicJob) });
    },
  );

  app.get(
    '/v1/jobs/:id',
    { schema: { summary: 'Show a job', params: IdParams, response: { 200: Job, ...problemResponses } } },
    async (request): Promise<PublicJob> => publicJob(await findJob(request)),
  );

  app.patch(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'Rename or relabel a job',
        params: IdParams,
        body: MetadataPatchSchema,
        response: { 200: Job, ...problemResponses },
      },
    },
    async (request): Promise<PublicJob> => {
      const { id } = request.params;
      const job = await patchRecordMetadata(records, 'jobs', request.tenant, id, request.body);
      if (!job) throw new ApiProblem('not-found', `no job ${id}`);
      return publicJob(job);
    },
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
      await artifacts.remove(request.tenant, job.id);
      request.log.info({ jobId: job.id }, 'job deleted');
      return reply.code(204).send(null);
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
      return publicJob(cancelled);
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
      const job = await findSucceededJob(request, 'the report exists');
      return reply.type('application/json').send(await artifacts.readReport(job.tenant, job.id));
    },
  );

  app.get(
    '/v1/jobs/:id/artifacts.zip',
    {
      schema: {
        summary: 'All artifacts as one zip',
        params: IdParams,
        response: { 200: FileStream, 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findSucceededJob(request, 'artifacts exist');
      return reply
        .type('application/zip')
        .header('content-disposition', `attachment; filename="${job.id}.zip"`)
        .send(await artifacts.zip(job.tenant, job.id));
    },
  );

  app.get(
    '/v1/jobs/:id/artifacts/*',
    {
      schema: {
        summary: 'One artifact file',
        params: Type.Object({ id: Type.String(), '*': Type.String() }),
        response: { 200: FileStream, 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const job = await findSucceededJob(request, 'artifacts exist');
      const path = request.params['*'];
      const file = await artifacts.open(job.tenant, job.id, path);
      if (!file) throw new ApiProblem('not-found', `job ${job.id} has no artifact ${path}`);
      return reply.type(contentTypeOf(path)).header('content-length', file.bytes).send(file.stream);
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
};

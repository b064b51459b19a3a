/**
 * Every problem the API can answer with, declared once (RFC 9457 problem+json). Handlers throw
 * `new ApiProblem('model-not-found', detail)`; the root error handler renders it with the request id, and
 * maps library errors (Fastify validation, multipart limits, rate limit, Redis) and the application's own
 * (DomainError: bad input and conflicts, src/errors.ts)
 * onto the same catalogue. 5xx answers never carry the underlying message.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../errors.js';

export const problemCatalogue = {
  'invalid-request': { status: 400, title: 'The request is malformed' },
  'invalid-job-spec': { status: 400, title: 'The job spec is invalid' },
  'invalid-upload': { status: 400, title: 'The upload is not a model or dataset the service can read' },
  'unsafe-archive-entry': { status: 400, title: 'An archive entry points outside the archive' },
  unauthorized: { status: 401, title: 'A valid API key is required' },
  'not-found': { status: 404, title: 'No such resource' },
  conflict: { status: 409, title: 'The resource is in a state that does not allow this' },
  'idempotency-key-reused': { status: 409, title: 'The Idempotency-Key was used with another request body' },
  'upload-too-large': { status: 413, title: 'The upload exceeds a configured limit' },
  'unsupported-media-type': { status: 415, title: 'Unsupported content type' },
  'invalid-model': { status: 422, title: 'The model failed validation' },
  'invalid-dataset': { status: 422, title: 'The dataset failed validation' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal server error' },
  'service-unavailable': { status: 503, title: 'A backing service is unavailable' },
} as const;

export type ProblemKind = keyof typeof problemCatalogue;

export const problemTypeBase = 'urn:qaas:problem:';

export class ApiProblem extends Error {
  override readonly name = 'ApiProblem';
  readonly status: number;
  constructor(
    readonly kind: ProblemKind,
    detail?: string,
    /** Extension members (RFC 9457 §3.2), e.g. `problems`, `weight`. */
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(detail ?? problemCatalogue[kind].title);
    this.status = problemCatalogue[kind].status;
  }
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance: string;
  requestId: string;
  [extension: string]: unknown;
}

const multipartLimitCodes = new Set([
  'FST_REQ_FILE_TOO_LARGE',
  'FST_FILES_LIMIT',
  'FST_PARTS_LIMIT',
  'FST_FIELDS_LIMIT',
]);

/** Redis being away surfaces as these ioredis / BullMQ messages. */
function isRedisUnavailable(error: Error): boolean {
  return /Stream isn't writeable|Connection is closed|ECONNREFUSED|ETIMEDOUT|Reached the max retries|connect ETIMEDOUT/i.test(
    error.message,
  );
}

export function toProblem(error: unknown): ApiProblem {
  if (error instanceof ApiProblem) return error;
  if (error instanceof DomainError) return new ApiProblem(error.problem, error.message, error.details);
  const fastifyError = error as FastifyError;
  if (fastifyError && typeof fastifyError === 'object') {
    if (fastifyError.validation) return new ApiProblem('invalid-request', fastifyError.message);
    if (fastifyError.code && multipartLimitCodes.has(fastifyError.code)) {
      return new ApiProblem('upload-too-large', fastifyError.message);
    }
    if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return new ApiProblem('upload-too-large', fastifyError.message);
    if (
      fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ||
      fastifyError.code === 'FST_INVALID_MULTIPART_CONTENT_TYPE'
    ) {
      return new ApiProblem('unsupported-media-type', fastifyError.message);
    }
    if (fastifyError.statusCode === 429) return new ApiProblem('rate-limited', fastifyError.message);
    if (fastifyError instanceof Error && isRedisUnavailable(fastifyError)) {
      return new ApiProblem('service-unavailable', 'Redis is not reachable; retry shortly');
    }
    const status = fastifyError.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      if (status === 404) return new ApiProblem('not-found', fastifyError.message);
      if (status === 413) return new ApiProblem('upload-too-large', fastifyError.message);
      if (status === 415) return new ApiProblem('unsupported-media-type', fastifyError.message);
      return new ApiProblem('invalid-request', fastifyError.message);
    }
  }
  return new ApiProblem('internal');
}

export function sendProblem(request: FastifyRequest, reply: FastifyReply, problem: ApiProblem): FastifyReply {
  const entry = problemCatalogue[problem.kind];
  const body: ProblemBody = {
    ...problem.extensions,
    type: `${problemTypeBase}${problem.kind}`,
    title: entry.title,
    status: entry.status,
    // 5xx detail could leak internals; the request id lets an operator find the logged cause.
    ...(entry.status < 500 || problem.kind === 'service-unavailable' ? { detail: problem.message } : {}),
    instance: request.url,
    requestId: request.id,
  };
  return reply.code(entry.status).type('application/problem+json').send(body);
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error, request, reply) => {
    const problem = toProblem(error);
    if (problem.status >= 500 && problem.kind !== 'service-unavailable') {
      request.log.error({ err: error }, 'request failed');
    } else {
      request.log.info({ problem: problem.kind, detail: problem.message }, 'request rejected');
    }
    const headers = (error as { headers?: Record<string, string> }).headers;
    if (problem.kind === 'rate-limited' && headers) reply.headers(headers);
    if (problem.kind === 'unauthorized') reply.header('www-authenticate', 'Bearer realm="qaas"');
    // The rest of an oversized body is not worth reading: the connection ends with the answer.
    if (problem.kind === 'upload-too-large') reply.header('connection', 'close');
    // ioredis retries the connection at most 2 s apart: a client that waits that long meets the next try.
    if (problem.kind === 'service-unavailable') reply.header('retry-after', '2');
    return sendProblem(request, reply, problem);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(request, reply, new ApiProblem('not-found', `no route ${request.method} ${request.url.split('?')[0]}`)),
  );
}

/**
 * The API routes the dashboard needs beyond the core ones (documented in openapi.yaml like every route):
 * - `GET /v1/schema/job-spec`: the JSON schema of the job spec and of each method's params, so a client can
 *   generate its form from the schemas the server validates with and never drift from them;
 * - `GET /v1/models/{id}/files/{path}`: an uploaded model's own files, so a browser can load the float model
 *   with stock TF.js beside the quantized artifact;
 * - `GET /v1/jobs/{id}/tensors/{name}/histogram`: one weight's value histogram before (the stored source
 *   model) and after (the job's `model/` artifact, decoded as TF.js would) on shared bin edges.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { JobSpecSchema } from '../../jobs/spec.js';
import { readModel } from '../../model/read.js';
import type { FileSet, Weight } from '../../model/types.js';
import { methods } from '../../quant/methods/index.js';
import { trainingMethodNames, trainingMethods } from '../../quant/qat/methods.js';
import { isId } from '../../storage/records.js';
import type { JobRecord, ModelRecord } from '../../storage/types.js';
import { ApiProblem } from '../errors.js';
import { FileStream, IdParams, Problem, problemResponses } from '../schemas.js';

export interface Histogram {
  /** bins + 1 ascending edges; bin i holds edges[i] ≤ v < edges[i+1], the last bin includes its upper edge. */
  edges: number[];
  before: number[];
  after: number[];
}

/** Counts both value sets over the same `bins` equal-width bins spanning the range of both. */
export function sharedHistogram(before: Float32Array, after: Float32Array, bins: number): Histogram {
  let low = Infinity;
  let high = -Infinity;
  for (const values of [before, after]) {
    for (let i = 0; i < values.length; i++) {
      if (values[i] < low) low = values[i];
      if (values[i] > high) high = values[i];
    }
  }
  if (!(low <= high)) [low, high] = [0, 0];
  if (low === high) [low, high] = [low - 0.5, high + 0.5];
  const width = (high - low) / bins;
  const edges = Array.from({ length: bins + 1 }, (_, i) => (i === bins ? high : low + i * width));
  const count = (values: Float32Array): number[] => {
    const counts = new Array<number>(bins).fill(0);
    for (let i = 0; i < values.length; i++) counts[Math.min(bins - 1, Math.floor((values[i] - low) / width))]++;
    return counts;
  };
  return { edges, before: count(before), after: count(after) };
}

const contentTypes: Record<string, string> = { json: 'application/json', bin: 'application/octet-stream' };

function contentTypeOf(path: string): string {
  const extension = path.split('.').pop() ?? '';
  return Object.hasOwn(contentTypes, extension) ? contentTypes[extension] : 'application/octet-stream';
}

const HistogramResponse = Type.Object({
  name: Type.String(),
  shape: Type.Array(Type.Integer()),
  bins: Type.Integer(),
  edges: Type.Array(Type.Number()),
  before: Type.Array(Type.Integer()),
  after: Type.Array(Type.Integer()),
  /** Distinct values after quantization: the grid or codebook the tensor landed on. */
  levelsAfter: Type.Integer(),
});

function floatValues(weight: Weight | undefined): Float32Array | null {
  return weight && weight.values instanceof Float32Array ? weight.values : null;
}

export const dashboardApiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { records, blobs, artifacts } = app.services;

  async function findModel(request: { tenant: string }, id: string): Promise<ModelRecord> {
    const model = isId('models', id) ? await records.get('models', request.tenant, id) : null;
    if (!model) throw new ApiProblem('not-found', `no model ${id}`);
    return model;
  }

  async function findSucceededJob(request: { tenant: string }, id: string): Promise<JobRecord> {
    const job = isId('jobs', id) ? await records.get('jobs', request.tenant, id) : null;
    if (!job) throw new ApiProblem('not-found', `no job ${id}`);
    if (job.status !== 'succeeded')
      throw new ApiProblem('conflict', `job ${job.id} is ${job.status}; its tensors exist once it succeeded`);
    return job;
  }

  app.get(
    '/v1/schema/job-spec',
    {
      schema: {
        summary: 'JSON schemas of the job spec and of each method’s params',
        response: {
          200: Type.Object({
            spec: Type.Object({}, { additionalProperties: true }),
            methods: Type.Record(Type.String(), Type.Object({}, { additionalProperties: true })),
            trainingMethods: Type.Array(Type.String()),
          }),
          ...problemResponses,
        },
      },
    },
    // TypeBox schemas are JSON schemas; the round trip drops its symbol-keyed bookkeeping.
    () =>
      JSON.parse(
        JSON.stringify({
          spec: JobSpecSchema,
          methods: Object.fromEntries(
            [...Object.values(methods), ...Object.values(trainingMethods)].map((m) => [m.name, m.params]),
          ),
          trainingMethods: trainingMethodNames,
        }),
      ),
  );

  app.get(
    '/v1/models/:id/files/*',
    {
      schema: {
        summary: 'One file of an uploaded model',
        params: Type.Object({ id: Type.String(), '*': Type.String() }),
        response: { 200: FileStream, ...problemResponses },
      },
    },
    async (request, reply) => {
      const { id, '*': path } = request.params;
      const model = await findModel(request, id);
      const file = model.files.find((f) => f.path === path);
      if (!file) throw new ApiProblem('not-found', `model ${id} has no file ${path}`);
      return reply.type(contentTypeOf(path)).header('content-length', file.bytes).send(blobs.stream(file.sha256));
    },
  );

  app.get(
    '/v1/jobs/:id/tensors/:name/histogram',
    {
      schema: {
        summary: 'A weight’s histogram before and after quantization',
        params: Type.Composite([IdParams, Type.Object({ name: Type.String({ minLength: 1 }) })]),
        querystring: Type.Object(
          { bins: Type.Integer({ minimum: 2, maximum: 512, default: 64 }) },
          { additionalProperties: false },
        ),
        response: { 200: HistogramResponse, 409: Problem, ...problemResponses },
      },
    },
    async (request) => {
      const { id, name } = request.params;
      const { bins } = request.query;
      const job = await findSucceededJob(request, id);
      const model = await findModel(request, job.modelId);
      const sourceFiles: FileSet = new Map();
      for (const file of model.files) sourceFiles.set(file.path, new Uint8Array(await blobs.read(file.sha256)));
      const source = readModel(sourceFiles).weights.find((w) => w.name === name);
      const quantized = readModel(await artifacts.readModelFiles(job.tenant, job.id)).weights.find(
        (w) => w.name === name,
      );
      const before = floatValues(source);
      const after = floatValues(quantized);
      if (!source || !before || !after) throw new ApiProblem('not-found', `job ${job.id} has no float tensor ${name}`);
      return {
        name,
        shape: source.shape,
        bins,
        ...sharedHistogram(before, after, bins),
        levelsAfter: new Set(after).size,
      };
    },
  );
};

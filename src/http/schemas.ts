/**
 * TypeBox schemas of what the routes return. Fastify serialises responses through them, which also drops
 * internal record fields (tenant, blob lists); openapi.yaml documents the same shapes.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { jobStatuses } from '../storage/types.js';

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.Optional(Type.String()),
    instance: Type.String(),
    requestId: Type.String(),
  },
  { additionalProperties: true },
);

const Timestamp = Type.String({ format: 'date-time' });

export const Model = Type.Object({
  id: Type.String(),
  format: Type.String(),
  params: Type.Integer(),
  bytes: Type.Integer(),
  sha256: Type.String(),
  tensors: Type.Array(Type.Object({ name: Type.String(), shape: Type.Array(Type.Integer()), dtype: Type.String() })),
  files: Type.Array(Type.Object({ path: Type.String(), bytes: Type.Integer(), sha256: Type.String() })),
  createdAt: Timestamp,
});

const ArrayInfo = Type.Object({ dtype: Type.String(), shape: Type.Array(Type.Integer()), bytes: Type.Integer() });

export const Dataset = Type.Object({
  id: Type.String(),
  samples: Type.Integer(),
  x: ArrayInfo,
  y: Type.Union([ArrayInfo, Type.Null()]),
  bytes: Type.Integer(),
  createdAt: Timestamp,
});

export const JobStatus = Type.Union(jobStatuses.map((status) => Type.Literal(status)));

export const Job = Type.Object({
  id: Type.String(),
  status: JobStatus,
  stage: Type.String(),
  progress: Type.Number({ minimum: 0, maximum: 100 }),
  kind: Type.String(),
  modelId: Type.String(),
  method: Type.String(),
  spec: Type.Object({}, { additionalProperties: true }),
  webhookUrl: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer(),
  createdAt: Timestamp,
  startedAt: Type.Union([Timestamp, Type.Null()]),
  finishedAt: Type.Union([Timestamp, Type.Null()]),
  error: Type.Union([Type.Object({ message: Type.String(), type: Type.Optional(Type.String()) }), Type.Null()]),
  summary: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()]),
  artifacts: Type.Array(Type.String()),
});

export function pageOf<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });
}

export const ListQuery = Type.Object(
  {
    cursor: Type.Optional(Type.String({ pattern: '^[a-z]+_[0-9a-z]{25}$' })),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  },
  { additionalProperties: false },
);

export const IdParams = Type.Object({ id: Type.String() });

export const problemResponses = {
  400: Problem,
  401: Problem,
  404: Problem,
  429: Problem,
  500: Problem,
  503: Problem,
};

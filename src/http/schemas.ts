/**
 * TypeBox schemas of what the routes return. Fastify serialises responses through them, which also drops
 * internal record fields (tenant, blob lists); openapi.yaml documents the same shapes.
 */
import type { Readable } from 'node:stream';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { LabelsSchema, maxLabels, NameSchema, parseLabelSelector, type LabelSelector } from '../jobs/metadata.js';
import type { ListFilter, Page } from '../storage/records.js';
import { jobStatuses, type JobStatus as JobStatusValue } from '../storage/types.js';

/**
 * `schema` or null as a JSON Schema type list. fast-json-stringify serialises a type list with a typeof
 * test; an anyOf (TypeBox's Union) makes it run an Ajv validator per branch on every response.
 */
function Nullable<T extends TSchema>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] });
}

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

/** A model input or output: the batch axis first; null for a size (or a whole shape) the model leaves open. */
const Signature = Type.Object({
  name: Type.String(),
  shape: Nullable(Type.Array(Nullable(Type.Integer()))),
  dtype: Type.String(),
});

/** Present when set: records stored before names existed have neither. */
const metadata = { name: Type.Optional(NameSchema), labels: Type.Optional(LabelsSchema) };

export const Model = Type.Object({
  id: Type.String(),
  ...metadata,
  format: Type.String(),
  params: Type.Integer(),
  bytes: Type.Integer(),
  sha256: Type.String(),
  tensors: Type.Array(Type.Object({ name: Type.String(), shape: Type.Array(Type.Integer()), dtype: Type.String() })),
  inputs: Type.Optional(Type.Array(Signature)),
  outputs: Type.Optional(Type.Array(Signature)),
  files: Type.Array(Type.Object({ path: Type.String(), bytes: Type.Integer(), sha256: Type.String() })),
  source: Type.Optional(
    Type.Object({
      format: Type.Unsafe<'keras' | 'h5'>({ type: 'string', enum: ['keras', 'h5'] }),
      kerasVersion: Type.String(),
    }),
  ),
  createdAt: Timestamp,
});

const ArrayInfo = Type.Object({ dtype: Type.String(), shape: Type.Array(Type.Integer()), bytes: Type.Integer() });

export const Dataset = Type.Object({
  id: Type.String(),
  ...metadata,
  samples: Type.Integer(),
  x: Nullable(ArrayInfo),
  inputs: Type.Optional(Type.Array(Type.Object({ name: Type.String(), ...ArrayInfo.properties }))),
  y: Nullable(ArrayInfo),
  bytes: Type.Integer(),
  sha256: Type.Optional(Type.String()),
  createdAt: Timestamp,
});

/** An enum rather than a union of literals, for the same reason as Nullable. */
export const JobStatus = Type.Unsafe<JobStatusValue>({ type: 'string', enum: [...jobStatuses] });

export const Job = Type.Object({
  id: Type.String(),
  ...metadata,
  status: JobStatus,
  stage: Type.String(),
  progress: Type.Number({ minimum: 0, maximum: 100 }),
  kind: Type.String(),
  modelId: Type.String(),
  method: Type.String(),
  spec: Type.Object({}, { additionalProperties: true }),
  webhookUrl: Nullable(Type.String()),
  attempts: Type.Integer(),
  createdAt: Timestamp,
  startedAt: Nullable(Timestamp),
  finishedAt: Nullable(Timestamp),
  error: Nullable(Type.Object({ message: Type.String(), type: Type.Optional(Type.String()) })),
  summary: Nullable(Type.Object({}, { additionalProperties: true })),
  artifacts: Type.Array(Type.String()),
  webhookDelivery: Type.Optional(
    Type.Object({
      status: Type.Unsafe<'delivered' | 'failed' | 'refused'>({
        type: 'string',
        enum: ['delivered', 'failed', 'refused'],
      }),
      at: Timestamp,
      attempt: Type.Integer(),
      httpStatus: Type.Optional(Type.Integer()),
      detail: Type.Optional(Type.String()),
    }),
  ),
});

export function pageOf<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), nextCursor: Nullable(Type.String()) });
}

/**
 * A page as its response schema can serialise it: a record that does not fit `item` (written by an older
 * version, or by hand) or does not parse is logged with its id and left out, so one bad record never turns a
 * tenant's whole list into a 500.
 */
export function servablePage<T>(reply: FastifyReply, item: TSchema, page: Page<T>): Page<T> {
  const serialize = reply.compileSerializationSchema(item);
  for (const id of page.unreadable ?? []) reply.log.error({ id }, 'record left out of a list: its JSON does not parse');
  const items = page.items.filter((record) => {
    try {
      serialize(record as Record<string, unknown>);
      return true;
    } catch (error) {
      const id = (record as { id?: unknown }).id;
      reply.log.error({ err: error, id }, 'record left out of a list: it does not fit its schema');
      return false;
    }
  });
  return { items, nextCursor: page.nextCursor };
}

/** A file's bytes, streamed as they are (Fastify serializes no stream). */
export const FileStream = Type.Unsafe<Readable>({ description: 'the file' });

export const ListQuery = Type.Object(
  {
    cursor: Type.Optional(Type.String({ pattern: '^[a-z]+_[0-9a-z]{25}$' })),
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  },
  { additionalProperties: false },
);

/** `?name=` and repeatable `?label=key=value` / `?label=key` filters of every list (ANDed). */
export const MetadataQuery = Type.Object({
  name: Type.Optional(NameSchema),
  label: Type.Optional(
    Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: maxLabels })], {
      description: 'key=value (that value) or key (any value); repeat for more, all must hold',
    }),
  ),
});

export const ListWithMetadataQuery = Type.Composite([ListQuery, MetadataQuery], { additionalProperties: false });

/** The query of a list route as the record store's filter (label selectors checked: 400 if malformed). */
export function listFilter(query: Static<typeof ListWithMetadataQuery> & { status?: string }): ListFilter {
  const { label, ...rest } = query;
  const labels: LabelSelector[] = (label === undefined ? [] : [label].flat()).map(parseLabelSelector);
  return { ...rest, ...(labels.length > 0 ? { labels } : {}) };
}

export const IdParams = Type.Object({ id: Type.String() });

export const problemResponses = {
  400: Problem,
  401: Problem,
  404: Problem,
  429: Problem,
  500: Problem,
  503: Problem,
};

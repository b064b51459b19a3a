/**
 * Names and labels of models, datasets and jobs: what a person calls a record and free-form key=value pairs
 * to find it by (GET /v1/models?name=…&label=team=vision). Keys follow Kubernetes label keys (an optional
 * DNS-subdomain prefix and `/`, then up to 63 letters, digits, `-`, `_`, `.`, alphanumeric at both ends), so
 * labels copied from a cluster or a pipeline fit; values are free text up to 256 characters.
 */
import { Type, type Static } from '@sinclair/typebox';
import { InputError } from '../errors.js';
import { withDefaults, type SchemaProblem } from '../quant/schema.js';
import { isId, type RecordStore } from '../storage/records.js';
import type { RecordKind, RecordOf } from '../storage/types.js';

export const maxNameLength = 128;
export const maxLabels = 32;
export const maxLabelValueLength = 256;
export const labelKeyPattern =
  '^(?:(?=[a-z0-9.-]{1,253}/)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?' +
  '[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$';
const labelKey = new RegExp(labelKeyPattern);

export const NameSchema = Type.String({
  minLength: 1,
  maxLength: maxNameLength,
  pattern: '^[^\\u0000-\\u001f\\u007f]+$',
  description: `what to call it: 1–${maxNameLength} characters, no control characters; not unique`,
});

export const LabelsSchema = Type.Record(
  Type.String({ pattern: labelKeyPattern }),
  Type.String({ maxLength: maxLabelValueLength }),
  {
    maxProperties: maxLabels,
    additionalProperties: false,
    description:
      `free-form key → value pairs (at most ${maxLabels}); keys as Kubernetes label keys ([prefix/]name, name ` +
      `≤ 63 letters, digits, -, _, . and alphanumeric at both ends), values up to ${maxLabelValueLength} characters`,
  },
);

export type Labels = Static<typeof LabelsSchema>;

export interface Metadata {
  name?: string;
  labels: Labels;
}

const MetadataSchema = Type.Object(
  { name: Type.Optional(NameSchema), labels: Type.Optional(LabelsSchema) },
  { additionalProperties: false },
);

/** A name or labels that break the rules above: 400 `invalid-request`, each problem with its JSON path. */
export class MetadataError extends InputError {
  override name = 'MetadataError';

  constructor(readonly problems: SchemaProblem[]) {
    super('invalid-request', problems.map((p) => `${p.path || '/'}: ${p.message}`).join('; '), { problems });
  }
}

/** Checks `{name, labels}` as a client sent them; labels default to none. */
export function parseMetadata(input: { name?: unknown; labels?: unknown }): Metadata {
  const given = Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined));
  const { value, problems } = withDefaults(MetadataSchema, given);
  if (problems.length > 0) throw new MetadataError(problems);
  return { ...(value.name !== undefined ? { name: value.name } : {}), labels: value.labels ?? {} };
}

/**
 * Multipart text fields `name` and `labels` (a JSON object) of an upload. A field sent twice, labels that
 * are not JSON, or another text field (a misspelt `lables`, a file sent without a file name) are refused
 * rather than silently dropped or one of them winning.
 */
export function metadataFromFields(fields: Map<string, string[]>): Metadata {
  const unknown = [...fields.keys()].filter((field) => field !== 'name' && field !== 'labels');
  if (unknown.length > 0) {
    throw new MetadataError(
      unknown.map((field) => ({
        path: `/${field}`,
        message: 'not a text field uploads take (name, labels); files are parts with a file name',
      })),
    );
  }
  const single = (field: string): string | undefined => {
    const values = fields.get(field);
    if (values && values.length > 1) throw new MetadataError([{ path: `/${field}`, message: 'given more than once' }]);
    return values?.[0];
  };
  const labelsText = single('labels');
  let labels: unknown;
  if (labelsText !== undefined) {
    try {
      labels = JSON.parse(labelsText);
    } catch {
      throw new MetadataError([{ path: '/labels', message: 'must be a JSON object, e.g. {"team":"vision"}' }]);
    }
  }
  return parseMetadata({ name: single('name'), labels });
}

/** One `label` query filter: `key=value` (that value) or `key` (any value). */
export interface LabelSelector {
  key: string;
  value?: string;
}

export function parseLabelSelector(text: string): LabelSelector {
  const at = text.indexOf('=');
  const key = at < 0 ? text : text.slice(0, at);
  const value = at < 0 ? undefined : text.slice(at + 1);
  if (!labelKey.test(key)) {
    throw new MetadataError([
      { path: '/label', message: `"${key}" is not a label key ([prefix/]name, as Kubernetes label keys)` },
    ]);
  }
  if (value !== undefined && value.length > maxLabelValueLength) {
    throw new MetadataError([
      { path: '/label', message: `the value of ${key} is over ${maxLabelValueLength} characters` },
    ]);
  }
  return value === undefined ? { key } : { key, value };
}

/**
 * A JSON merge patch (RFC 7396) of a record's name and labels: `name: null` removes the name, a label set to
 * null is removed, the others are set; what the patch leaves out stays.
 */
export function patchMetadata(current: Metadata, patch: { name?: unknown; labels?: unknown }): Metadata {
  const labelsPatch = patch.labels;
  if (
    labelsPatch !== undefined &&
    (typeof labelsPatch !== 'object' || labelsPatch === null || Array.isArray(labelsPatch))
  )
    throw new MetadataError([{ path: '/labels', message: 'must be an object of labels (null values remove one)' }]);
  const labels: Record<string, unknown> = { ...current.labels };
  for (const [key, value] of Object.entries((labelsPatch ?? {}) as Record<string, unknown>)) {
    if (value === null) delete labels[key];
    else labels[key] = value;
  }
  const name = patch.name === null ? undefined : patch.name === undefined ? current.name : patch.name;
  return parseMetadata({ name, labels });
}

/** The body of PATCH /v1/{models,datasets,jobs}/{id}: a merge patch of the name and labels. */
export const MetadataPatchSchema = Type.Object(
  {
    // Type lists, not unions: a coercing validator (Fastify's) would turn null into "" on a union's string branch.
    name: Type.Optional(Type.Unsafe<string | null>({ ...NameSchema, type: ['string', 'null'] })),
    labels: Type.Optional(
      Type.Record(
        Type.String({ pattern: labelKeyPattern }),
        Type.Unsafe<string | null>({ type: ['string', 'null'], maxLength: maxLabelValueLength }),
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

/** Applies a merge patch to a stored record's name and labels; null when there is no such record. */
export async function patchRecordMetadata<K extends RecordKind>(
  records: RecordStore,
  kind: K,
  tenant: string,
  id: string,
  patch: Static<typeof MetadataPatchSchema>,
): Promise<RecordOf[K] | null> {
  if (!isId(kind, id)) return null;
  return records.update(kind, tenant, id, (current) => {
    const { name, labels } = patchMetadata({ name: current.name, labels: current.labels ?? {} }, patch);
    const { name: _old, ...rest } = current;
    return { ...rest, ...(name !== undefined ? { name } : {}), labels } as RecordOf[K];
  });
}

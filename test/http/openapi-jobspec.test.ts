/**
 * The job spec is written twice: as TypeBox in src/jobs/spec.ts (what the API, the worker and the CLI validate
 * with) and as JSON schema in openapi.yaml (what clients read). This test holds them to one contract: the same
 * fields at every depth, each with the same type, enum, bounds, pattern, format, default and openness. Prose
 * (descriptions) may differ. Required fields compare as a client sees them: a TypeBox field with a default is
 * required of the validated spec but optional to send.
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { openApiPath } from '../../src/http/app.js';
import { JobSpecSchema } from '../../src/jobs/spec.js';
import { methodNames } from '../../src/quant/methods/index.js';
import { trainingMethodNames } from '../../src/quant/qat/methods.js';

type Schema = Record<string, unknown>;

const compared = [
  'type',
  'enum',
  'const',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'pattern',
  'format',
  'default',
] as const;

/** A union of literals is an enum; `[t, 'null']` and anyOf-with-null are the same nullable type. */
function normalise(schema: Schema): Schema {
  const literals = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (literals?.every((s) => 'const' in s)) {
    const { anyOf: _a, oneOf: _o, ...rest } = schema;
    return normalise({ ...rest, type: typeof literals[0].const, enum: literals.map((s) => s.const) });
  }
  const out: Schema = {};
  for (const key of compared) if (schema[key] !== undefined) out[key] = schema[key];
  if (schema.type === 'object') {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    const required = new Set((schema.required ?? []) as string[]);
    // TypeBox writes a Record as patternProperties with one catch-all pattern.
    const patterns = Object.values((schema.patternProperties ?? {}) as Record<string, Schema>);
    const open = patterns.length === 1 ? patterns[0] : schema.additionalProperties;
    out.additionalProperties = typeof open === 'object' ? normalise(open as Schema) : (open ?? true);
    out.properties = Object.fromEntries(Object.entries(properties).map(([name, p]) => [name, normalise(p)]));
    // Required to send: no default to fall back on.
    out.required = [...required].filter((name) => properties[name]?.default === undefined).sort();
    // An object with defaults for all its fields defaults to {} in TypeBox; openapi leaves that implied.
    if (JSON.stringify(out.default) === '{}') delete out.default;
  }
  if (schema.type === 'array' && schema.items) out.items = normalise(schema.items as Schema);
  return out;
}

describe('openapi.yaml JobSpec', () => {
  it('is the TypeBox job spec: same fields, types, enums, bounds, defaults and openness', async () => {
    const document = parse(await readFile(openApiPath(), 'utf8')) as {
      components: { schemas: Record<string, Schema> };
    };
    const documented = normalise(document.components.schemas.JobSpec);
    // JSON round trip: TypeBox's symbol-keyed bookkeeping is not part of the schema.
    const validated = normalise(JSON.parse(JSON.stringify(JobSpecSchema)) as Schema);
    // The API requires modelId (the CLI's offline `quantize` takes the model as a directory instead).
    validated.required = [...(validated.required as string[]), 'modelId'].sort();
    // Method names are checked against the method registry, which openapi lists as an enum.
    const properties = validated.properties as Record<string, { properties: Record<string, Schema> }>;
    properties.method.properties.name.enum = [...methodNames, ...trainingMethodNames];
    expect(documented).toEqual(validated);
  });
});

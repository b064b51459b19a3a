/**
 * The job spec (DESIGN.md §3): one schema shared by the API, the worker and the CLI's --spec file, so a spec
 * that runs offline runs the same way as a service job. `method` is checked against the method registry,
 * which owns each method's own params schema.
 */
import { Type, type Static } from '@sinclair/typebox';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { MethodParamsError, methodNames, parseMethodParams, type MethodParams } from '../quant/methods/index.js';

const MethodSpec = Type.Object(
  { name: Type.String({ description: `one of: ${methodNames.join(', ')}` }) },
  { additionalProperties: true, description: 'a method name and its params (see the method catalogue)' },
);

export const LayersSpec = Type.Object(
  {
    skip: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'globs over weight names (`*` within a path segment, `**` across) left in float32',
    }),
    overrides: Type.Record(Type.String({ minLength: 1 }), Type.Object({}, { additionalProperties: true }), {
      default: {},
      description: 'glob → method params merged over `method` for the weights it matches (first match wins)',
    }),
  },
  { additionalProperties: false, default: {} },
);

export const OutputSpec = Type.Object(
  {
    shardSizeBytes: Type.Integer({ minimum: 1024, maximum: 1 << 30, default: 4 * 1024 * 1024 }),
  },
  { additionalProperties: false, default: {} },
);

// TypeBox knows no formats until they are registered; without this every webhook URL is rejected.
if (!FormatRegistry.Has('uri')) FormatRegistry.Set('uri', (value) => URL.canParse(value));

export const WebhookSpec = Type.Object(
  {
    url: Type.String({ format: 'uri', pattern: '^https?://' }),
    secret: Type.Optional(Type.String({ minLength: 8 })),
  },
  { additionalProperties: false },
);

export const JobSpecSchema = Type.Object(
  {
    modelId: Type.Optional(Type.String({ minLength: 1 })),
    kind: Type.Union([Type.Literal('ptq')], { default: 'ptq', description: 'ptq (qat, auto, analyze: planned)' }),
    method: MethodSpec,
    layers: LayersSpec,
    output: OutputSpec,
    webhook: Type.Optional(WebhookSpec),
  },
  { additionalProperties: false },
);

export type RawJobSpec = Static<typeof JobSpecSchema>;

/** A validated spec with every default filled in and `method` parsed by its own schema. */
export interface JobSpec extends Omit<RawJobSpec, 'method'> {
  method: MethodParams;
}

export interface SpecProblem {
  path: string;
  message: string;
}

export class SpecError extends Error {
  constructor(readonly problems: SpecProblem[]) {
    super(problems.map((p) => `${p.path || '/'}: ${p.message}`).join('; '));
    this.name = 'SpecError';
  }
}

/** Validates and defaults a spec; throws SpecError listing every problem with its JSON path. */
export function parseJobSpec(input: unknown): JobSpec {
  const withDefaults = Value.Default(JobSpecSchema, structuredClone(input ?? {}));
  const problems = [...Value.Errors(JobSpecSchema, withDefaults)].map((e) => ({ path: e.path, message: e.message }));
  if (problems.length > 0) throw new SpecError(problems);
  const raw = withDefaults as RawJobSpec;
  try {
    const method = parseMethodParams(raw.method, '/method');
    for (const [glob, override] of Object.entries(raw.layers.overrides)) {
      parseMethodParams(mergeOverride(raw.method, override), `/layers/overrides/${glob}`);
    }
    return { ...raw, method };
  } catch (error) {
    if (error instanceof MethodParamsError) throw new SpecError(error.problems);
    throw error;
  }
}

/**
 * An override that names another method replaces the base params outright (they would not fit the other
 * method's schema); one without a name, or with the same name, changes only the fields it gives.
 */
export function mergeOverride(base: { name: string }, override: Record<string, unknown>): Record<string, unknown> {
  if (typeof override.name === 'string' && override.name !== base.name) return override;
  return { ...base, ...override };
}

/**
 * Validating params against a TypeBox schema with its defaults filled in. Each schema is compiled once
 * (TypeCompiler): a valid input, the common case on the job-submission path, costs one compiled check;
 * only an invalid one walks the schema again to say what is wrong.
 */
import { Kind, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';

export interface SchemaProblem {
  path: string;
  message: string;
}

const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();

function checkerOf<S extends TSchema>(schema: S): TypeCheck<S> {
  let checker = compiled.get(schema);
  if (!checker) {
    checker = TypeCompiler.Compile(schema);
    compiled.set(schema, checker);
  }
  return checker as TypeCheck<S>;
}

const nestedDefaultMemo = new WeakMap<TSchema, boolean>();

/** Whether any schema under `schema` has a default (Ref and This count as yes: they are not followed). */
function declaresNestedDefault(schema: TSchema): boolean {
  let declares = nestedDefaultMemo.get(schema);
  if (declares === undefined) {
    const children: unknown[] = [
      ...Object.values((schema.properties ?? {}) as Record<string, unknown>),
      ...Object.values((schema.patternProperties ?? {}) as Record<string, unknown>),
      ...[schema.items ?? []].flat(),
      ...((schema.anyOf ?? []) as unknown[]),
      ...((schema.allOf ?? []) as unknown[]),
      schema.additionalProperties,
    ];
    declares =
      schema[Kind] === 'Ref' ||
      schema[Kind] === 'This' ||
      children.some((child) => typeof child === 'object' && child !== null && declaresDefault(child as TSchema));
    nestedDefaultMemo.set(schema, declares);
  }
  return declares;
}

function declaresDefault(schema: TSchema): boolean {
  return 'default' in schema || declaresNestedDefault(schema);
}

/** Returns its input with the defaults of one schema filled in; see fillerOf. */
type Filler = (value: unknown) => unknown;

const fillers = new WeakMap<TSchema, Filler>();
const unchanged: Filler = (value) => value;

/**
 * Value.Default's result for `schema`, as a function built once per schema: on the job-submission path
 * Value.Default's walk (which clones and checks union variants one by one) cost more than the check itself.
 * The filler never modifies its input: it copies only the objects it adds a default to, and each default
 * it adds is a fresh copy. Objects are filled here field by field; a schema of another kind that has
 * defaults further down (a union of objects, a record, an array) is left to Value.Default.
 */
function fillerOf(schema: TSchema): Filler {
  let filler = fillers.get(schema);
  if (!filler) {
    filler = buildFiller(schema);
    fillers.set(schema, filler);
  }
  return filler;
}

function buildFiller(schema: TSchema): Filler {
  if (!declaresDefault(schema)) return unchanged;
  const fallback = 'default' in schema ? defaultMaker(schema.default) : null;
  const additional = schema.additionalProperties as unknown;
  const objectDefaults = typeof additional === 'object' && additional !== null && 'default' in additional;
  if (schema[Kind] === 'Object' && !objectDefaults) {
    const properties = schema.properties as Record<string, TSchema>;
    const fields = Object.getOwnPropertyNames(properties)
      .filter((key) => declaresDefault(properties[key]))
      .map((key) => [key, fillerOf(properties[key])] as const);
    return (value) => {
      let filled = value;
      if (fallback) {
        const base = fallback();
        if (value === undefined) filled = base;
        else if (isObject(value) && isObject(base)) filled = Object.assign(base, value);
      }
      if (!isObject(filled)) return filled;
      let out = filled;
      for (const [key, fill] of fields) {
        const current = out[key];
        const next = fill(current);
        if (next === current || next === undefined) continue;
        // Not { ...out }: V8 turns a spread copy into a slow dictionary object on the first keyed store.
        if (out === value) out = Object.assign({}, out);
        out[key] = next;
      }
      return out;
    };
  }
  if (declaresNestedDefault(schema)) return (value) => Value.Default(schema, structuredClone(value));
  return (value) => (value === undefined ? fallback!() : value);
}

function defaultMaker(value: unknown): () => unknown {
  if (typeof value === 'function') return value as () => unknown;
  if (typeof value !== 'object' || value === null) return () => value;
  return () => Value.Clone(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/**
 * `input` with `schema`'s defaults filled in (the input is not modified), or the problems, each with its
 * JSON path under `at` and, for enums and ranges, the allowed values.
 */
export function withDefaults<S extends TSchema>(
  schema: S,
  input: unknown,
  at = '',
): { value: Static<S>; problems: SchemaProblem[] } {
  const value = fillerOf(schema)(input ?? {}) as Static<S>;
  const checker = checkerOf(schema);
  if (checker.Check(value)) return { value, problems: [] };
  const problems = [...checker.Errors(value)].map((e) => ({
    path: `${at}${e.path}`,
    message: describeProblem(e.message, e.schema),
  }));
  return { value, problems };
}

function describeProblem(message: string, schema: TSchema): string {
  const allowed = schema.anyOf?.map((s: TSchema) => s.const).filter((v: unknown) => v !== undefined);
  if (allowed?.length) return `${message}; allowed: ${allowed.join(', ')}`;
  if (schema.minimum !== undefined || schema.maximum !== undefined) {
    return `${message} (allowed range ${schema.minimum ?? '-∞'}..${schema.maximum ?? '∞'})`;
  }
  return message;
}

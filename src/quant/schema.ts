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

const declaresDefaultMemo = new WeakMap<TSchema, boolean>();

/** Whether `schema` or any schema under it has a default (Ref and This count as yes: not followed). */
function declaresDefault(schema: TSchema): boolean {
  let declares = declaresDefaultMemo.get(schema);
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
      'default' in schema ||
      schema[Kind] === 'Ref' ||
      schema[Kind] === 'This' ||
      children.some((child) => typeof child === 'object' && child !== null && declaresDefault(child as TSchema));
    declaresDefaultMemo.set(schema, declares);
  }
  return declares;
}

/**
 * Value.Default's result, without its walk of subschemas that hold no default — most of a job spec, whose
 * literal unions Value.Default would otherwise clone and check variant by variant on every submission.
 * Objects are walked here as Value.Default walks them; every other kind that holds a default goes to it.
 */
function fillDefaults(schema: TSchema, value: unknown): unknown {
  if (!declaresDefault(schema)) return value;
  const additional = schema.additionalProperties as unknown;
  if (schema[Kind] !== 'Object' || (typeof additional === 'object' && additional !== null && 'default' in additional)) {
    return Value.Default(schema, value);
  }
  let filled = value;
  if ('default' in schema) {
    const fallback: unknown = typeof schema.default === 'function' ? schema.default() : Value.Clone(schema.default);
    if (value === undefined) filled = fallback;
    else if (isObject(value) && isObject(fallback)) filled = Object.assign(fallback, value);
  }
  if (!isObject(filled)) return filled;
  const properties = schema.properties as Record<string, TSchema>;
  for (const key of Object.getOwnPropertyNames(properties)) {
    const next = fillDefaults(properties[key], filled[key]);
    if (next !== undefined) filled[key] = next;
  }
  return filled;
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
  const value = fillDefaults(schema, structuredClone(input ?? {})) as Static<S>;
  const checker = checkerOf(schema);
  if (checker.Check(value)) return { value, problems: [] };
  const problems = [...checker.Errors(value)].map((e) => ({ path: `${at}${e.path}`, message: describeProblem(e.message, e.schema) }));
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

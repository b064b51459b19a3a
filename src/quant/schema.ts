/**
 * Validating params against a TypeBox schema with its defaults filled in. Each schema is compiled once
 * (TypeCompiler): a valid input, the common case on the job-submission path, costs one compiled check;
 * only an invalid one walks the schema again to say what is wrong.
 */
import type { Static, TSchema } from '@sinclair/typebox';
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

/**
 * `input` with `schema`'s defaults filled in (the input is not modified), or the problems, each with its
 * JSON path under `at` and, for enums and ranges, the allowed values.
 */
export function withDefaults<S extends TSchema>(
  schema: S,
  input: unknown,
  at = '',
): { value: Static<S>; problems: SchemaProblem[] } {
  const value = Value.Default(schema, structuredClone(input ?? {})) as Static<S>;
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

/**
 * The method registry: name → module. The job spec names a method; its params are validated by that
 * method's own schema, with its defaults filled in, before any work starts.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { InputError } from '../../errors.js';
import { withDefaults } from '../schema.js';
import type { QuantMethod } from '../types.js';
import { affine } from './affine.js';
import { binary } from './binary.js';
import { float16 } from './float16.js';
import { kmeans } from './kmeans.js';
import { pow2 } from './pow2.js';
import { pq } from './pq.js';
import { ternary } from './ternary.js';
import { methodNames, type MethodName } from './names.js';

export { methodNames, type MethodName } from './names.js';

// `satisfies` fails the build when a name in names.ts has no method here or a method here no name there.
export const methods = { affine, float16, binary, ternary, pow2, kmeans, pq } as const satisfies Record<
  MethodName,
  QuantMethod<TSchema>
>;

/** Params of any method, defaults filled in; `name` tells which. */
export type MethodParams = { [K in MethodName]: Static<(typeof methods)[K]['params']> }[MethodName];

export class MethodParamsError extends InputError {
  override name = 'MethodParamsError';

  constructor(readonly problems: { path: string; message: string }[]) {
    super('invalid-job-spec', problems.map((p) => `${p.path}: ${p.message}`).join('; '), { problems });
  }
}

export function getMethod(name: string): QuantMethod<TSchema> {
  // Own properties only: a name like "constructor" must not find Object.prototype's members.
  const method = Object.hasOwn(methods, name) ? (methods as Record<string, QuantMethod<TSchema>>)[name] : undefined;
  if (!method) throw new Error(`unknown method "${name}"; allowed: ${methodNames.join(', ')}`);
  return method;
}

/**
 * Validates `input` against its method's schema and fills defaults. Problems carry JSON paths under
 * `at` so an API error can point at the field.
 */
export function parseMethodParams(input: unknown, at = ''): MethodParams {
  const name = (input as { name?: unknown } | null)?.name;
  if (typeof name !== 'string' || !Object.hasOwn(methods, name)) {
    throw new MethodParamsError([
      { path: `${at}/name`, message: `unknown method ${JSON.stringify(name)}; allowed: ${methodNames.join(', ')}` },
    ]);
  }
  const { value, problems } = withDefaults(getMethod(name).params, input, at);
  if (problems.length > 0) throw new MethodParamsError(problems);
  return value as MethodParams;
}

/**
 * The errors the application layer throws for what the caller did, each with the problem type
 * (src/http/errors.ts) it is answered with. Anything else thrown is a fault of the service.
 *
 * Bad input is recognised in one place: every error that says the spec, the model or the dataset is at
 * fault extends InputError (SpecError, ModelError, DatasetError, ...). The HTTP error handler answers it
 * as a 4xx, the CLI exits 2, and the worker fails the job at once (no retry can fix it) with `problem` as
 * the recorded error type. A ConflictError is a request that is valid but not now (a model still in use).
 */

export type InputProblem = 'invalid-request' | 'invalid-job-spec' | 'invalid-model' | 'invalid-dataset' | 'not-found';
export type ConflictProblem = 'conflict' | 'idempotency-key-reused';

export abstract class DomainError extends Error {
  abstract readonly problem: InputProblem | ConflictProblem;

  constructor(
    message: string,
    /** Extension members that name the culprit (RFC 9457 §3.2), e.g. `problems`, `weight`, `jobs`. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export class InputError extends DomainError {
  override name = 'InputError';

  constructor(
    readonly problem: InputProblem,
    message: string,
    details: Record<string, unknown> = {},
  ) {
    super(message, details);
  }
}

/** A request that names a model, dataset or job the tenant does not have. */
export class NotFoundError extends InputError {
  override name = 'NotFoundError';

  constructor(message: string, details: Record<string, unknown> = {}) {
    super('not-found', message, details);
  }
}

export class ConflictError extends DomainError {
  override name = 'ConflictError';

  constructor(
    readonly problem: ConflictProblem,
    message: string,
    details: Record<string, unknown> = {},
  ) {
    super(message, details);
  }
}

/**
 * Bad input, recognised in one place: every error that says the spec, the model or the dataset is at fault
 * extends InputError (SpecError, ModelError, DatasetError, ...). The HTTP error handler answers it with its
 * `problem` as a 4xx, the CLI exits 2, and the worker fails the job at once (no retry can fix it) with
 * `problem` as the recorded error type. Anything else thrown is a fault of the service.
 */

/** The problem types (src/http/errors.ts) bad input is answered with. */
export type InputProblem = 'invalid-job-spec' | 'invalid-model' | 'invalid-dataset';

export class InputError extends Error {
  override name = 'InputError';

  constructor(
    readonly problem: InputProblem,
    message: string,
    /** Extension members that name the culprit (RFC 9457 §3.2), e.g. `problems`, `weight`. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

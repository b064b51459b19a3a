import { InputError } from '../../errors.js';

/** A dataset that cannot be read or does not fit the job: every parse error of a dataset is one. */
export class DatasetError extends InputError {
  override name = 'DatasetError';

  constructor(message: string, details: Record<string, unknown> = {}) {
    super('invalid-dataset', message, details);
  }
}

/**
 * The one error type model reading and writing throws for bad input. `code` says what is wrong and the
 * optional `weight` / `file` / `layer` say where, so the HTTP layer can answer 422 with the culprit named
 * and the CLI can print one line.
 */
import { InputError } from '../errors.js';

export type ModelErrorCode =
  | 'malformed-json'
  | 'malformed-file'
  | 'missing-file'
  | 'byte-length'
  | 'non-finite'
  | 'unknown-dtype'
  | 'duplicate-weight'
  | 'unknown-layer'
  | 'bad-topology'
  | 'too-deep';

export interface ModelErrorLocation {
  weight?: string;
  file?: string;
  layer?: string;
}

export class ModelError extends InputError {
  override name = 'ModelError';
  readonly code: ModelErrorCode;
  readonly weight?: string;
  readonly file?: string;
  readonly layer?: string;

  constructor(code: ModelErrorCode, message: string, where: ModelErrorLocation = {}) {
    super('invalid-model', message, {
      code,
      ...Object.fromEntries(Object.entries(where).filter(([, value]) => value !== undefined)),
    });
    this.code = code;
    if (where.weight !== undefined) this.weight = where.weight;
    if (where.file !== undefined) this.file = where.file;
    if (where.layer !== undefined) this.layer = where.layer;
  }
}

/**
 * A value from a model file, quoted for a message: short, and safe for any input (JSON.stringify recurses
 * and runs out of stack on a value nested thousands deep).
 */
export function quoted(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    return Array.isArray(value) ? 'a deeply nested list' : 'a deeply nested object';
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

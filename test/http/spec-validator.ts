/**
 * Validates a response against openapi.yaml: finds the operation by method and concrete URL (path templates
 * matched segment by segment, `{path}` may hold slashes), follows a `$ref`'d response, picks the schema
 * of the response's content type, and validates the body with ajv. Every `$ref` inside resolves against the
 * whole document, so the test checks the spec's own schemas, not copies.
 *
 * OpenAPI 3.1 schemas are JSON Schema 2020-12, hence Ajv2020; strict mode is off because the document
 * around the schemas (paths, examples, descriptions) is not a schema.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { expect } from 'vitest';
import { parse } from 'yaml';

type Json = Record<string, unknown>;

const spec = parse(readFileSync(fileURLToPath(new URL('../../openapi.yaml', import.meta.url)), 'utf8')) as Json;
const documentId = 'openapi.yaml';
const ajv = new Ajv2020({ allErrors: true, strict: false });
addFormats.default(ajv);
ajv.addSchema(spec, documentId);

const pointerEscape = (token: string): string => token.replace(/~/g, '~0').replace(/\//g, '~1');

function templateMatches(template: string, path: string): boolean {
  const pattern = template
    .split(/(\{[^}]+\})/)
    .map((part) =>
      part === '{path}' ? '(.+)' : part.startsWith('{') ? '([^/]+)' : part.replace(/[.*+?^$()|[\]\\]/g, '\\$&'),
    )
    .join('');
  return new RegExp(`^${pattern}$`).test(path);
}

/** The JSON pointer (within openapi.yaml) of the schema that documents this response. */
export function responseSchemaPointer(method: string, url: string, status: number, contentType: string): string {
  const path = url.split('?')[0];
  const paths = spec.paths as Record<string, Json>;
  // A literal path (`/v1/jobs/{id}/artifacts.zip`) wins over a template that also matches it.
  const template =
    Object.keys(paths).find((candidate) => candidate === path) ??
    Object.keys(paths)
      .filter((candidate) => templateMatches(candidate, path))
      .sort((a, b) => a.split('{').length - b.split('{').length)[0];
  if (!template) throw new Error(`openapi.yaml has no path for ${path}`);
  const operation = paths[template][method.toLowerCase()] as Json | undefined;
  if (!operation) throw new Error(`openapi.yaml has no ${method} ${template}`);
  const responses = operation.responses as Json;
  let pointer = `#/paths/${pointerEscape(template)}/${method.toLowerCase()}/responses/${status}`;
  let response = responses[String(status)] as Json | undefined;
  if (!response) throw new Error(`openapi.yaml documents no ${status} for ${method} ${template}`);
  if (typeof response.$ref === 'string') {
    pointer = response.$ref;
    const name = response.$ref.replace('#/components/responses/', '');
    response = ((spec.components as Json).responses as Json)[name] as Json;
  }
  const mediaType = contentType.split(';')[0].trim();
  const content = response.content as Json | undefined;
  if (!content?.[mediaType]) {
    throw new Error(`openapi.yaml documents no ${mediaType} body for ${status} of ${method} ${template}`);
  }
  return `${pointer}/content/${pointerEscape(mediaType)}/schema`;
}

/** Asserts that `body` (parsed JSON) is what openapi.yaml says `method url` answers with `status`. */
export function expectMatchesSpec(
  method: string,
  url: string,
  response: { statusCode: number; headers: Record<string, unknown>; body: string },
): void {
  const contentType = String(response.headers['content-type'] ?? '');
  const pointer = responseSchemaPointer(method, url, response.statusCode, contentType);
  const validate = ajv.getSchema(`${documentId}${pointer}`);
  if (!validate) throw new Error(`cannot compile the schema at ${pointer}`);
  const valid = validate(JSON.parse(response.body));
  expect(valid ? [] : validate.errors, `${method} ${url} → ${response.statusCode} against ${pointer}`).toEqual([]);
}

/** Asserts that a report (as the pipeline returns it, before the worker stores it) is openapi.yaml's Report. */
export function expectValidReport(report: unknown): void {
  const validate = ajv.getSchema(`${documentId}#/components/schemas/Report`)!;
  const valid = validate(JSON.parse(JSON.stringify(report)));
  expect(valid ? [] : validate.errors, 'the report against #/components/schemas/Report').toEqual([]);
}

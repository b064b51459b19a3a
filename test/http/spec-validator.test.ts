/**
 * The openapi.yaml response validator itself: it finds the right schema and really rejects bodies that
 * break it, so a passing e2e check means something.
 */
import { describe, expect, it } from 'vitest';
import { expectMatchesSpec, responseSchemaPointer } from './spec-validator.js';

const json = (statusCode: number, body: unknown, type = 'application/json') => ({
  statusCode,
  headers: { 'content-type': `${type}; charset=utf-8` },
  body: JSON.stringify(body),
});

const model = {
  id: 'mdl_0000000000000000000000000',
  format: 'layers-model',
  params: 2,
  bytes: 8,
  sha256: 'ab',
  tensors: [{ name: 'w', shape: [2], dtype: 'float32' }],
  files: [{ path: 'w.bin', bytes: 8, sha256: 'cd' }],
  createdAt: '2026-01-02T03:04:05.000Z',
};
const problem = {
  type: 'urn:qaas:problem:not-found',
  title: 'No such resource',
  status: 404,
  detail: 'no job',
  instance: '/v1/jobs/x',
  requestId: 'r1',
};

describe('expectMatchesSpec', () => {
  it('finds operations by concrete URL, literal paths before templates, and $ref responses', () => {
    expect(responseSchemaPointer('POST', '/v1/models', 201, 'application/json')).toBe(
      '#/paths/~1v1~1models/post/responses/201/content/application~1json/schema',
    );
    expect(
      responseSchemaPointer('GET', '/v1/jobs/job_1/artifacts/model/model.json', 404, 'application/problem+json'),
    ).toBe('#/components/responses/NotFound/content/application~1problem+json/schema');
    expect(() => responseSchemaPointer('GET', '/v1/jobs/job_1/artifacts.zip', 418, 'application/json')).toThrow(
      'no 418',
    );
    expect(() => responseSchemaPointer('GET', '/v2/nothing', 200, 'application/json')).toThrow('no path');
  });

  it('accepts conforming bodies and rejects a missing field, a wrong type, a bad date and an unknown status value', () => {
    expectMatchesSpec('POST', '/v1/models', json(201, model));
    expectMatchesSpec('GET', '/v1/jobs/job_1', json(404, problem, 'application/problem+json'));
    const noHash: Partial<typeof model> = { ...model };
    delete noHash.sha256;
    for (const bad of [
      noHash,
      { ...model, params: 'two' },
      { ...model, createdAt: 'yesterday' },
      { ...model, format: 'onnx' },
    ]) {
      expect(() => expectMatchesSpec('POST', '/v1/models', json(201, bad))).toThrow();
    }
    expect(() =>
      expectMatchesSpec(
        'GET',
        '/v1/jobs/job_1',
        json(404, { ...problem, requestId: undefined }, 'application/problem+json'),
      ),
    ).toThrow();
    expect(() => expectMatchesSpec('GET', '/v1/jobs/job_1', json(404, problem, 'text/html'))).toThrow('no text/html');
  });
});

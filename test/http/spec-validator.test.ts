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

describe('the Report schema', () => {
  const tensor = {
    name: 'dense/kernel',
    shape: [4, 2],
    role: 'kernel',
    layerType: 'Dense',
    method: 'affine',
    bits: 8,
    bitsPerWeight: 12,
    channels: 1,
    storedAs: 'uint8',
    bytesBefore: 32,
    bytesAfter: 12,
    mse: 1e-5,
    sqnrDb: 41.2,
    maxAbsError: 0.004,
    cosine: 0.9999,
  };
  const report = {
    version: 1,
    generatedBy: 'qaas 0.1.0',
    kind: 'ptq',
    spec: { modelId: 'mdl_1', method: { name: 'affine', bits: 8 } },
    model: {
      format: 'layers-model',
      params: 10,
      quantizedParams: 8,
      bytesBefore: 40,
      bytesAfter: 16,
      packedBytes: 300,
      gzipBytesBefore: 50,
      gzipBytesAfter: 30,
      compressionRatio: 0.13,
      stockCompressionRatio: 2.5,
      bitsPerWeight: 12,
      backend: 'wasm',
      metrics: {
        float: { accuracy: 0.9, samples: 10 },
        ptq: { accuracy: 0.9, agreement: 1, sqnrDb: null, samples: 10 },
      },
    },
    tensors: [tensor],
    skipped: [{ name: 'dense/bias', reason: 'bias' }],
    timings: { quantizeMs: 1, writeMs: 1, packMs: 1, reportMs: 1, totalMs: 5, evaluateFloatMs: 2 },
  };
  const url = '/v1/jobs/job_1/report';

  it('accepts a report with every field typed, and rejects a missing, mistyped or unknown one', () => {
    expectMatchesSpec('GET', url, json(200, report));
    const { packedBytes: _dropped, ...noPacked } = report.model;
    for (const bad of [
      { ...report, model: noPacked },
      { ...report, tensors: [{ ...tensor, sqnrDb: '41 dB' }] },
      { ...report, tensors: [{ ...tensor, storedAs: 'int4' }] },
      { ...report, model: { ...report.model, metrics: { fp32: { samples: 1 } } } },
      { ...report, timings: { ...report.timings, trainMs: 'slow' } },
      { ...report, activations: [{ layer: 'dense', bits: 8, calibration: 'minmax', min: 0, max: 1, scale: 0.1 }] },
      { ...report, kind: 'magic' },
      { ...report, surprise: true },
    ]) {
      expect(() => expectMatchesSpec('GET', url, json(200, bad)), JSON.stringify(bad).slice(0, 80)).toThrow();
    }
  });
});

import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { JobSpecSchema } from '../../src/jobs/spec.js';
import { methods } from '../../src/quant/methods/index.js';
import { trainingMethods } from '../../src/quant/qat/methods.js';
import { withDefaults } from '../../src/quant/schema.js';

/** withDefaults skips default-free subschemas; its filled value must stay exactly Value.Default's. */
const specs: unknown[] = [
  {},
  { method: { name: 'affine' } },
  {
    modelId: 'mdl_x',
    method: { name: 'affine', bits: 4, granularity: 'per-channel' },
    kind: 'ptq',
    webhook: { url: 'https://h/x' },
  },
  {
    method: { name: 'kmeans' },
    layers: { skip: ['dense/bias'], overrides: { 'conv*': { bits: 2 } } },
    qat: { epochs: 7 },
  },
  {
    kind: 'auto',
    method: { name: 'affine' },
    target: { maxDrop: 0.01 },
    search: { candidates: [{ name: 'binary' }, { name: 'pow2' }] },
  },
  {
    kind: 'qat',
    method: { name: 'lab' },
    data: { training: 'ds_a' },
    activations: { quantizer: 'pact' },
    preprocess: { scale: 2 },
  },
  { method: 5, qat: null, search: 'x', output: [] },
];

describe('withDefaults', () => {
  it.each(specs.map((spec) => [JSON.stringify(spec), spec]))(
    'fills a job spec as Value.Default does: %s',
    (_, spec) => {
      const before = structuredClone(spec);
      const { value } = withDefaults(JobSpecSchema, spec);
      expect(value).toEqual(Value.Default(JobSpecSchema, structuredClone(spec)));
      expect(spec).toEqual(before);
    },
  );

  it('gives every filled value its own copy of an object default', () => {
    const first = withDefaults(JobSpecSchema, { method: { name: 'affine' } }).value;
    first.layers.skip.push('dense/bias');
    first.layers.overrides['x'] = { bits: 2 };
    const second = withDefaults(JobSpecSchema, { method: { name: 'affine' } }).value;
    expect(second.layers).toEqual({ skip: [], overrides: {} });
  });

  it('fills every method schema as Value.Default does, and leaves the input alone', () => {
    const schemas = [...Object.values(methods), ...Object.values(trainingMethods)].map((method) => method.params);
    for (const schema of schemas) {
      for (const input of [{}, { bits: 3 }, { seed: 7, extra: true }, undefined]) {
        const before = structuredClone(input);
        expect(withDefaults(schema, input).value).toEqual(Value.Default(schema, structuredClone(input ?? {})));
        expect(input).toEqual(before);
      }
    }
  });

  it('gives the documented defaults of a minimal spec', () => {
    const { value, problems } = withDefaults(JobSpecSchema, { method: { name: 'affine' } });
    expect(problems).toEqual([]);
    expect(value.kind).toBe('ptq');
    expect(value.qat).toMatchObject({
      epochs: 3,
      batchSize: 32,
      learningRate: 1e-3,
      optimizer: 'adam',
      ste: 'clipped',
    });
    expect(value.search).toEqual({
      maxTrials: 24,
      timeBudgetSeconds: 600,
      analysisSamples: 1024,
      verificationSplit: 0.5,
      seed: 0,
    });
    expect(value.layers).toEqual({ skip: [], overrides: {} });
  });
});

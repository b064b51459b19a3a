import { describe, expect, it } from 'vitest';
import { mergeOverride, parseJobSpec, SpecError } from '../../src/jobs/spec.js';

function problemsOf(input: unknown): { path: string; message: string }[] {
  try {
    parseJobSpec(input);
  } catch (error) {
    if (error instanceof SpecError) return error.problems;
    throw error;
  }
  throw new Error('expected a SpecError');
}

describe('parseJobSpec', () => {
  it('fills every default of the spec and of the method', () => {
    const spec = parseJobSpec({ method: { name: 'affine' } });
    expect(spec.kind).toBe('ptq');
    expect(spec.method).toEqual({
      name: 'affine',
      bits: 8,
      symmetric: false,
      granularity: 'per-tensor',
      rounding: 'nearest',
      range: 'minmax',
      percentile: 99.99,
      seed: 0,
    });
    expect(spec.layers).toEqual({ skip: [], overrides: {} });
    expect(spec.output).toEqual({ shardSizeBytes: 4 * 1024 * 1024 });
  });

  it('defaults ptq.algorithm to nearest and checks what gptq and adaround need', () => {
    expect(parseJobSpec({ method: { name: 'affine' } }).ptq).toMatchObject({
      algorithm: 'nearest',
      samples: 256,
      gptq: { percdamp: 0.01, actOrder: true, blockSize: 128 },
      adaround: { iterations: 1000, betaStart: 20, betaEnd: 2 },
    });
    expect(problemsOf({ method: { name: 'kmeans' }, ptq: { algorithm: 'gptq' } })).toEqual([
      {
        path: '/data/calibration',
        message: `ptq.algorithm "gptq" needs a calibration dataset to take each layer's inputs from`,
      },
      {
        path: '/method/name',
        message: 'ptq.algorithm "gptq" chooses codes on the affine grid: method must be "affine", not "kmeans"',
      },
    ]);
    expect(
      problemsOf({
        method: { name: 'affine', rounding: 'stochastic' },
        ptq: { algorithm: 'adaround' },
        data: { calibration: 'ds' },
      }).map((p) => p.path),
    ).toEqual(['/method/rounding']);
    expect(problemsOf({ method: { name: 'affine' }, ptq: { algorithm: 'bogus' } })[0].path).toBe('/ptq/algorithm');
  });

  it('makes 1-bit activations binary (sign), and gives sign and ternary their width', () => {
    const spec = (activations: Record<string, unknown>) => parseJobSpec({ method: { name: 'affine' }, activations });
    expect(spec({ bits: 1 }).activations).toMatchObject({ bits: 1, quantizer: 'sign' });
    expect(spec({ quantizer: 'ternary' }).activations).toMatchObject({ bits: 2, quantizer: 'ternary' });
    expect(
      parseJobSpec({
        kind: 'qat',
        method: { name: 'affine' },
        activations: { bits: 1, quantizer: 'dorefa' },
        data: { training: 'ds' },
      }).activations,
    ).toMatchObject({ bits: 1, quantizer: 'dorefa' });
    expect(problemsOf({ method: { name: 'affine' }, activations: { bits: 4 } }).map((p) => p.path)).toEqual([
      '/data/calibration',
    ]);
  });

  it('names the allowed methods for an unknown one', () => {
    expect(problemsOf({ method: { name: 'int3' } })).toEqual([
      {
        path: '/method/name',
        message: 'unknown method "int3"; allowed: affine, float16, binary, ternary, pow2, kmeans, pq',
      },
    ]);
  });

  it('names the allowed values and ranges of bad method params', () => {
    const problems = problemsOf({ method: { name: 'affine', bits: 1, granularity: 'per-row' } });
    expect(problems.map((p) => p.path).sort()).toEqual(['/method/bits', '/method/granularity']);
    expect(problems.find((p) => p.path === '/method/bits')!.message).toContain('2..16');
    expect(problems.find((p) => p.path === '/method/granularity')!.message).toContain(
      'allowed: per-tensor, per-channel',
    );
  });

  it('rejects unknown fields and checks overrides against the method they end up with', () => {
    expect(problemsOf({ method: { name: 'binary', bits: 4 } })[0].path).toBe('/method/bits');
    expect(problemsOf({ method: { name: 'affine' }, colour: 'red' })[0].path).toBe('/colour');
    const problems = problemsOf({ method: { name: 'affine' }, layers: { overrides: { 'dense/*': { bits: 40 } } } });
    expect(problems).toHaveLength(1);
    expect(problems[0].path).toBe('/layers/overrides/dense/*/bits');
  });

  it('merges an override over the base method, or replaces it when the override names another method', () => {
    expect(mergeOverride({ name: 'affine', bits: 8, symmetric: true } as { name: string }, { bits: 4 })).toEqual({
      name: 'affine',
      bits: 4,
      symmetric: true,
    });
    expect(mergeOverride({ name: 'affine', bits: 8 } as { name: string }, { name: 'ternary' })).toEqual({
      name: 'ternary',
    });
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec, SpecError } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import { escapeGlob, type AutoReport } from '../../src/pipeline/auto.js';
import { runJob } from '../../src/pipeline/run.js';
import { saveLayersModel } from '../fixtures/models.js';
import { BOTTLENECK, taskDataset, trainBottleneckMlp } from './auto-fixture.js';

let dir: string;
let model: LoadedModel;
let evaluation: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-auto-'));
  const task = await trainBottleneckMlp({ seed: 6, trainSamples: 1600, evalSamples: 400, epochs: 12 });
  model = readModel(await saveLayersModel(task.model));
  task.model.dispose();
  evaluation = await taskDataset(dir, 'evaluation', task.evaluation);
});

afterAll(async () => {
  await evaluation?.close();
  await rm(dir, { recursive: true, force: true });
});

const written = (files: Map<string, Uint8Array>) =>
  JSON.parse(new TextDecoder().decode(files.get('report.json'))) as AutoReport;

describe('spec', () => {
  it('refuses analyze/auto without an evaluation set and auto without a target', () => {
    const problems = (input: unknown) => {
      try {
        parseJobSpec(input);
      } catch (error) {
        if (error instanceof SpecError) return error.problems.map((p) => p.path);
      }
      return [];
    };
    expect(problems({ kind: 'analyze', method: { name: 'affine' } })).toEqual(['/data/evaluation']);
    expect(problems({ kind: 'auto', method: { name: 'affine' }, data: { evaluation: 'e' } })).toEqual(['/target']);
    expect(
      problems({
        kind: 'auto',
        method: { name: 'affine' },
        data: { evaluation: 'e' },
        search: { candidates: [{ name: 'affine', bits: 1 }] },
      }),
    ).toEqual(['/target']);
    expect(() =>
      parseJobSpec({
        kind: 'auto',
        method: { name: 'affine' },
        data: { evaluation: 'e' },
        target: { maxBytes: 10 },
        search: { candidates: [{ name: 'affine', bits: 1 }] },
      }),
    ).toThrow('/search/candidates/0/bits');
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine' },
      data: { evaluation: 'e' },
      target: { maxDrop: 0.01 },
    });
    expect(spec.search).toEqual({
      maxTrials: 24,
      timeBudgetSeconds: 600,
      analysisSamples: 1024,
      verificationSplit: 0.5,
      seed: 0,
    });
    expect(spec.target!.relative).toBe(false);
  });

  it('refuses data.verification for a kind that would not read it', () => {
    expect(() =>
      parseJobSpec({ kind: 'ptq', method: { name: 'affine' }, data: { evaluation: 'e', verification: 'v' } }),
    ).toThrow('/data/verification');
  });

  it('refuses ptq.layers without a learned rounding to apply to them', () => {
    expect(() => parseJobSpec({ method: { name: 'affine' }, ptq: { layers: ['dense/kernel'] } })).toThrow(
      '/ptq/layers',
    );
  });

  it('escapes glob characters so an override names exactly one weight', () => {
    expect(escapeGlob('a/b[1]*')).toBe('a/b\\[1\\]\\*');
  });
});

describe('runJob kind analyze / auto', () => {
  it('analyze: writes the sensitivity table (most sensitive first) next to the spec method’s own export', async () => {
    const spec = parseJobSpec({
      kind: 'analyze',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: 'e' },
      search: { analysisSamples: 200 },
    });
    const before = tf.memory().numTensors;
    const stages = new Set<string>();
    const { files, report } = await runJob(
      model,
      spec,
      { evaluation },
      { backend: 'wasm', onProgress: (p) => void stages.add(p.stage) },
    );
    expect(tf.memory().numTensors).toBe(before);
    const auto = report as AutoReport;
    expect(auto.sensitivity).toHaveLength(4 * 6);
    expect(auto.sensitivity[0].name).toBe(BOTTLENECK);
    expect(auto.search.analysisSamples).toBe(200);
    expect(auto.model.metrics.float!.samples).toBe(400);
    expect(auto.model.metrics.ptq!.samples).toBe(400);
    expect(auto.frontier).toBeUndefined();
    expect([...stages]).toEqual(['fold', 'evaluate', 'analyze', 'quantize', 'diagnose', 'report']);
    expect(files.has('model/model.json')).toBe(true);
    expect(written(files).sensitivity).toEqual(auto.sensitivity);
  });

  it('auto: report.json has sensitivity, frontier and chosenSpec; the chosenSpec re-run as ptq reproduces the trial; half the evaluation set is held out', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: 'e' },
      target: { maxDrop: 0.01 },
    });
    const before = tf.memory().numTensors;
    const messages: string[] = [];
    const { files, report } = await runJob(
      model,
      spec,
      { evaluation },
      {
        backend: 'wasm',
        onProgress: (p) => void (p.stage === 'search' && messages.push(p.message)),
      },
    );
    expect(tf.memory().numTensors).toBe(before);
    const json = written(files);
    expect(json.sensitivity.length).toBe(24);
    expect(json.frontier!.length).toBe(json.search.trials);
    expect(json.frontier!.filter((f) => f.chosen)).toHaveLength(1);
    const chosen = json.frontier!.find((f) => f.chosen)!;
    expect(chosen.trial).toBe(json.search.chosenTrial);
    expect(chosen.bytes).toBe(json.model.packedBytes);
    // A seeded half of the 400 samples is searched on, the other half held out; the report's metrics are the whole set's.
    expect(json.search.heldOut).toMatchObject({ source: 'split', samples: 200, fraction: 0.5, seed: 0 });
    expect(json.search.searchSamples).toBe(200);
    expect(json.search.analysisSamples).toBe(200);
    for (const t of json.frontier!) {
      expect(t.metrics.samples).toBe(200);
      expect(t.heldOut.metrics.samples).toBe(200);
      expect(t.feasible).toBe(t.drop <= 0.01 && t.heldOut.drop <= 0.01);
      expect(t.heldOut.drop95[0]).toBeLessThanOrEqual(t.heldOut.drop);
      expect(t.heldOut.drop95[1]).toBeGreaterThanOrEqual(t.heldOut.drop);
    }
    const whole = json.model.metrics.ptq!;
    expect(whole.samples).toBe(400);
    expect(whole.accuracy!).toBeCloseTo((chosen.metrics.accuracy! + chosen.heldOut.metrics.accuracy!) / 2, 10);
    expect(
      messages.some((m) =>
        /^trial 1 of 24: \d+ bytes, drop -?[\d.]+ \(held-out -?[\d.]+\); best so far: trial 1/.test(m),
      ),
    ).toBe(true);
    console.log(
      `auto: ${json.search.trials} trials, chosen ${chosen.bytes} bytes, drop ${chosen.drop} searched, ${chosen.heldOut.drop} held out, overrides ${JSON.stringify(chosen.overrides)}`,
    );

    const chosenSpec = parseJobSpec(json.chosenSpec);
    expect(chosenSpec.kind).toBe('ptq');
    expect(Object.keys(chosenSpec.layers.overrides).sort()).toEqual(
      Object.keys(chosen.overrides)
        .filter((n) => chosen.overrides[n] !== 'float')
        .sort(),
    );
    const rerun = await runJob(model, chosenSpec, { evaluation }, { backend: 'wasm' });
    expect(rerun.report.model.packedBytes).toBe(chosen.bytes);
    expect(rerun.report.model.metrics.ptq!.accuracy).toBe(whole.accuracy);
    expect(rerun.files.get('packed/weights.bin')).toEqual(files.get('packed/weights.bin'));
    expect(report.kind).toBe('auto');
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import type { AutoReport } from '../../src/pipeline/auto.js';
import { runJob } from '../../src/pipeline/run.js';
import { sliceTask } from '../fixtures/tasks.js';
import { saveLayersModel } from '../fixtures/models.js';
import { expectValidReport } from '../http/spec-validator.js';
import { BOTTLENECK, taskDataset, trainBottleneckMlp } from './auto-fixture.js';

let dir: string;
let model: LoadedModel;
let evaluation: Dataset;
let calibration: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-auto-rounding-'));
  const task = await trainBottleneckMlp({ seed: 6, trainSamples: 1600, evalSamples: 400, epochs: 12 });
  model = readModel(await saveLayersModel(task.model));
  task.model.dispose();
  evaluation = await taskDataset(dir, 'evaluation', task.evaluation);
  calibration = await taskDataset(dir, 'calibration', sliceTask(task.train, 0, 256));
});

afterAll(async () => {
  await Promise.all([evaluation, calibration].map((d) => d?.close()));
  await rm(dir, { recursive: true, force: true });
});

const candidates = [{ name: 'affine', bits: 2, granularity: 'per-channel' }];

describe('auto picks the rounding per tensor, and returns its best even when the target cannot be met', () => {
  it('with calibration data, 2-bit GPTQ enters as a candidate per tensor, is chosen, and beats nearest rounding', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: 'e', calibration: 'c' },
      target: { maxDrop: 0.01 },
      search: { candidates, maxTrials: 8 },
    });
    const before = tf.memory().numTensors;
    const { files, report } = await runJob(model, spec, { evaluation, calibration }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(before);
    expectValidReport(report);
    const auto = report as AutoReport;
    expect(auto.search.candidates.map((c) => c.label)).toEqual(['affine2pc', 'affine2pc+gptq']);
    const drop = (name: string, config: string) =>
      auto.sensitivity.find((r) => r.name === name && r.config === config)!.drop;
    console.log(
      `auto-rounding: 2-bit alone, nearest → gptq: logits ${drop('logits/kernel', 'affine2pc')} → ${drop('logits/kernel', 'affine2pc+gptq')}, ` +
        `bottleneck ${drop(BOTTLENECK, 'affine2pc')} → ${drop(BOTTLENECK, 'affine2pc+gptq')}`,
    );
    // Alone, GPTQ at 2 bits costs the logits layer nothing where nearest rounding costs it 12.5 points.
    expect(drop('logits/kernel', 'affine2pc')).toBeCloseTo(0.125, 10);
    expect(drop('logits/kernel', 'affine2pc+gptq')).toBeCloseTo(0, 10);
    expect(drop(BOTTLENECK, 'affine2pc')).toBeCloseTo(0.295, 10);
    expect(drop(BOTTLENECK, 'affine2pc+gptq')).toBeCloseTo(0.005, 10);

    const chosen = auto.frontier!.find((t) => t.chosen)!;
    expect(chosen.overrides).toEqual({
      'wide1/kernel': 'affine2pc+gptq',
      [BOTTLENECK]: 'float',
      'wide2/kernel': 'float',
      'logits/kernel': 'affine2pc+gptq',
    });
    expect(chosen.feasible).toBe(true);
    expect(auto.search.targetMet).toBe(true);
    expect(auto.rounding!.layers.map((l) => [l.name, l.algorithm])).toEqual([
      ['wide1/kernel', 'gptq'],
      ['logits/kernel', 'gptq'],
    ]);
    for (const layer of auto.rounding!.layers) expect(layer.outputMseAfter).toBeLessThan(layer.outputMseBefore / 4);

    // chosenSpec is a ptq job with GPTQ on exactly those kernels; re-run, it reproduces the trial byte for byte.
    const chosenSpec = parseJobSpec(auto.chosenSpec);
    expect(chosenSpec.ptq.algorithm).toBe('gptq');
    expect(chosenSpec.ptq.layers).toEqual(['wide1/kernel', 'logits/kernel']);
    const rerun = await runJob(model, chosenSpec, { evaluation, calibration }, { backend: 'wasm' });
    expect(rerun.files.get('packed/weights.bin')).toEqual(files.get('packed/weights.bin'));
    expect(rerun.report.model.metrics.ptq!.accuracy).toBe(auto.model.metrics.ptq!.accuracy);

    // The same config with nearest rounding: the same bytes, far less accurate.
    const nearestSpec = parseJobSpec({ ...auto.chosenSpec, ptq: { algorithm: 'nearest' } });
    const nearest = await runJob(model, nearestSpec, { evaluation, calibration }, { backend: 'wasm' });
    const [gptqAccuracy, nearestAccuracy] = [
      auto.model.metrics.ptq!.accuracy!,
      nearest.report.model.metrics.ptq!.accuracy!,
    ];
    console.log(
      `auto-rounding: chosen ${chosen.bytes} B: float ${auto.model.metrics.float!.accuracy}, gptq ${gptqAccuracy}, nearest ${nearestAccuracy}`,
    );
    expect(nearest.report.model.packedBytes).toBe(auto.model.packedBytes);
    expect(gptqAccuracy - nearestAccuracy).toBeGreaterThan(0.05);
  });

  it('an unreachable target: the job succeeds with the closest config, the whole frontier and a warning', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: 'e' },
      // Binary costs every quantizable tensor of this model more than 0.1 point alone.
      target: { maxDrop: 0.001 },
      search: { maxTrials: 6, candidates: [{ name: 'binary', granularity: 'per-channel' }] },
    });
    const { files, report } = await runJob(model, spec, { evaluation }, { backend: 'wasm' });
    expectValidReport(report);
    const auto = report as AutoReport;
    const frontier = auto.frontier!;
    console.log(
      `auto-unreachable: ${frontier.map((t) => `${t.bytes} B ${t.drop.toFixed(4)}/${t.heldOut.drop.toFixed(4)}`).join(', ')}; ${auto.warnings.join(' | ')}`,
    );
    expect(auto.search.targetMet).toBe(false);
    // Nothing met 0.001, so each move was verified alone: binary wide1, bottleneck, logits, each far off.
    expect(frontier.map((t) => [t.bytes, t.drop, t.heldOut.drop])).toEqual([
      [11880, expect.closeTo(0.13, 10), expect.closeTo(0.08, 10)],
      [79356, expect.closeTo(0.16, 10), expect.closeTo(0.135, 10)],
      [81797, expect.closeTo(0.135, 10), expect.closeTo(0.095, 10)],
    ]);
    expect(frontier.every((t) => !t.feasible)).toBe(true);
    // The best found: the least drop (the larger of the two, 0.13).
    const chosen = frontier.find((t) => t.chosen)!;
    expect(chosen.trial).toBe(1);
    expect(auto.search.chosenTrial).toBe(chosen.trial);
    expect(auto.model.packedBytes).toBe(chosen.bytes);
    expect(files.has('model/model.json')).toBe(true);
    expect(parseJobSpec(auto.chosenSpec).kind).toBe('ptq');
    expect(
      auto.warnings.some((w) =>
        w.startsWith('no configuration of the 3 tried met target.maxDrop 0.001: the closest is returned (trial 1,'),
      ),
    ).toBe(true);
  });
});

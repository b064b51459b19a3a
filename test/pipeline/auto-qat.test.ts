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
import { saveLayersModel } from '../fixtures/models.js';
import { makeClassificationTask, sliceTask, taskDataset, trainSmallCnn } from '../fixtures/tasks.js';

let dir: string;
let model: LoadedModel;
let training: Dataset;
let evaluation: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-auto-qat-'));
  const task = makeClassificationTask({ seed: 3, samples: 1800 });
  const trained = await trainSmallCnn(sliceTask(task, 0, 1600), { seed: 3, epochs: 4 });
  model = readModel(await saveLayersModel(trained));
  trained.dispose();
  const part = (start: number, end: number) => taskDataset(dir, `rows-${start}`, sliceTask(task, start, end));
  training = await part(0, 1600);
  evaluation = await part(1600, 1800);
});

afterAll(async () => {
  await Promise.all([training, evaluation].map((d) => d?.close()));
  await rm(dir, { recursive: true, force: true });
});

describe('auto with a QAT fallback', () => {
  it('trains the best PTQ config quantization-aware when binary PTQ misses maxDrop, and chooses it when it is better', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'binary', granularity: 'per-channel' },
      data: { training: 't', evaluation: 'e' },
      target: { metric: 'accuracy', maxDrop: 0.005 },
      search: { candidates: [{ name: 'binary', granularity: 'per-channel' }], maxTrials: 4, analysisSamples: 200 },
      qat: { epochs: 3, batchSize: 32, learningRate: 5e-3, learningRateDecay: 0.5 },
    });
    const tensorsBefore = tf.memory().numTensors;
    const stages: string[] = [];
    const { files, report: result } = await runJob(
      model,
      spec,
      { training, evaluation },
      {
        backend: 'wasm',
        onProgress: (p) => void (stages.at(-1) !== p.stage && stages.push(p.stage)),
      },
    );
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    const report = result as AutoReport;
    const frontier = report.frontier!;
    const ptqTrials = frontier.filter((t) => !t.qat);
    const qatEntry = frontier.at(-1)!;
    const bestPtq = ptqTrials.reduce((a, b) => (b.drop < a.drop ? b : a));
    console.log(
      `auto-qat: float ${report.model.metrics.float!.accuracy}, PTQ trials ${ptqTrials.map((t) => t.metrics.accuracy).join(', ')}, ` +
        `QAT ${qatEntry.metrics.accuracy} (drop ${qatEntry.drop.toFixed(4)})`,
    );

    // PTQ alone missed the budget: every trial's measured drop is above it.
    expect(ptqTrials.length).toBeGreaterThan(0);
    for (const trial of ptqTrials) expect(trial.drop).toBeGreaterThan(0.005);
    expect(stages).toContain('train');

    // The fallback is one more frontier entry, on the best trial's config, measured as the trials are: on the
    // searched half of the evaluation set and on the held-out half.
    expect(frontier.filter((t) => t.qat)).toHaveLength(1);
    expect(qatEntry.qat).toBe(true);
    expect(qatEntry.trial).toBe(ptqTrials.length + 1);
    expect(report.search.qatTrial).toBe(qatEntry.trial);
    expect(qatEntry.overrides).toEqual(bestPtq.overrides);
    expect(qatEntry.metrics.samples).toBe(100);
    expect(qatEntry.heldOut.metrics.samples).toBe(100);
    expect(qatEntry.metrics.accuracy!).toBeGreaterThan(bestPtq.metrics.accuracy!);
    expect(qatEntry.drop).toBeCloseTo(report.search.floatValue - qatEntry.metrics.accuracy!, 10);
    expect(qatEntry.heldOut.drop).toBeCloseTo(
      report.search.heldOut!.floatValue - qatEntry.heldOut.metrics.accuracy!,
      10,
    );

    // Better than every PTQ trial, so it is the one chosen, and the reusable spec is a qat spec with the same overrides.
    expect(frontier.filter((t) => t.chosen)).toEqual([qatEntry]);
    expect(report.search.chosenTrial).toBe(qatEntry.trial);
    expect(report.search.targetMet).toBe(qatEntry.drop <= 0.005 && qatEntry.heldOut.drop <= 0.005);
    // The report's metrics are the whole evaluation set's.
    expect(report.model.metrics.qat!.samples).toBe(200);
    expect(report.model.metrics.qat!.accuracy!).toBeCloseTo(
      (qatEntry.metrics.accuracy! + qatEntry.heldOut.metrics.accuracy!) / 2,
      10,
    );
    expect(report.training!.history).toHaveLength(3);
    const chosenSpec = report.chosenSpec as {
      kind: string;
      layers: { overrides: Record<string, unknown>; skip: string[] };
      qat: unknown;
    };
    expect(chosenSpec.kind).toBe('qat');
    expect(chosenSpec.qat).toEqual(spec.qat);
    const quantized = Object.entries(qatEntry.overrides).filter(([, config]) => config !== 'float').length;
    expect(Object.keys(chosenSpec.layers.overrides)).toHaveLength(quantized);
    expect(report.model.packedBytes).toBe(qatEntry.bytes);
    const written = JSON.parse(new TextDecoder().decode(files.get('report.json'))) as AutoReport;
    expect(written.search.chosenTrial).toBe(qatEntry.trial);
  }, 60_000);
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import type { AutoReport } from '../../src/pipeline/auto.js';
import { runJob } from '../../src/pipeline/run.js';
import { saveLayersModel } from '../fixtures/models.js';
import { expectValidReport } from '../http/spec-validator.js';
import { makeClassificationTask, sliceTask } from '../fixtures/tasks.js';
import { taskDataset, trainBottleneckMlp } from './auto-fixture.js';

let dir: string;
let model: LoadedModel;
let evaluation: Dataset;
let verification: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-auto-heldout-'));
  const task = await trainBottleneckMlp({ seed: 6, trainSamples: 1600, evalSamples: 400, epochs: 12 });
  model = readModel(await saveLayersModel(task.model));
  task.model.dispose();
  evaluation = await taskDataset(dir, 'evaluation', task.evaluation);
  // The same classes, noisier: unseen samples on which quantization error moves more of them across a boundary.
  const noisy = makeClassificationTask({ seed: 6, samples: 2400, classes: 6, noise: 0.35 });
  verification = await taskDataset(dir, 'verification', sliceTask(noisy, 2000, 2400));
});

afterAll(async () => {
  await Promise.all([evaluation, verification].map((d) => d?.close()));
  await rm(dir, { recursive: true, force: true });
});

describe('auto keeps its budget on data it did not search', () => {
  it('refuses a config whose search-set drop meets maxDrop but whose drop on data.verification does not', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine', bits: 8 },
      data: { evaluation: 'e', verification: 'v' },
      target: { maxDrop: 0.01 },
      search: { maxTrials: 8, analysisSamples: 200 },
    });
    const { report } = await runJob(model, spec, { evaluation, verification }, { backend: 'wasm' });
    expectValidReport(report);
    const auto = report as AutoReport;
    const frontier = auto.frontier!;
    for (const t of frontier)
      console.log(
        `held-out: trial ${t.trial}, ${t.bytes} B, drop ${t.drop.toFixed(4)} searched, ${t.heldOut.drop.toFixed(4)} ` +
          `held out [${t.heldOut.drop95.map((v) => v.toFixed(4)).join(', ')}], feasible ${t.feasible}, chosen ${t.chosen}`,
      );

    // The whole evaluation set is searched on; the verification set is the held-out part.
    expect(auto.search.searchSamples).toBe(400);
    expect(auto.search.heldOut).toEqual({ source: 'verification', samples: 400, floatValue: 0.8425 });
    expect(auto.search.floatValue).toBe(0.99);

    // Trial 1 keeps the budget where it was searched (−0.5 pp) and breaks it held out (−2.25 pp): refused.
    const [first] = frontier;
    expect(first.drop).toBeCloseTo(0.005, 10);
    expect(first.heldOut.drop).toBeCloseTo(0.0225, 10);
    expect(first.heldOut.drop).toBeCloseTo(0.8425 - first.heldOut.metrics.accuracy!, 10);
    expect(first.heldOut.metrics.samples).toBe(400);
    expect(first.feasible).toBe(false);
    expect(first.chosen).toBe(false);
    // Its paired 95% interval (Agresti–Min) holds the drop and reaches below 0: at 400 samples even −2.25 pp
    // is not certain at 95%. auto judges by the point estimate and states the interval.
    expect(first.heldOut.drop95[0]).toBeCloseTo(-0.0014, 4);
    expect(first.heldOut.drop95[1]).toBeCloseTo(0.0462, 4);

    // Every trial that meets maxDrop only where it was searched is refused; the chosen one meets it held out.
    const searchedOnly = frontier.filter((t) => t.drop <= 0.01 && t.heldOut.drop > 0.01);
    expect(searchedOnly.length).toBeGreaterThan(0);
    for (const t of searchedOnly) expect(t).toMatchObject({ feasible: false, chosen: false });
    const chosen = frontier.find((t) => t.chosen)!;
    expect(chosen.trial).toBe(4);
    expect(chosen.drop).toBeCloseTo(0, 10);
    expect(chosen.heldOut.drop).toBeCloseTo(0.005, 10);
    expect(chosen.feasible).toBe(true);
    expect(auto.search.targetMet).toBe(true);
    expect(chosen.bytes).toBeGreaterThan(first.bytes);
    // Met, but not beyond doubt at this sample size: the report says so.
    expect(auto.warnings.some((w) => w.includes('95% interval') && w.includes('400 held-out samples'))).toBe(true);
  }, 60_000);
});

/**
 * Issue 5's "tests that must hold" for `analyze` and `auto`, on the model with one deliberately sensitive
 * layer (test/pipeline/auto-fixture.ts: a 1-wide Dense bottleneck between wide tolerant layers), trained on
 * the generated task. Every claim is checked on the shipped `model/` artifact, loaded with stock
 * tf.loadLayersModel and evaluated here, independently of the job's own report.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import type { AutoReport } from '../../src/pipeline/auto.js';
import { runJob } from '../../src/pipeline/run.js';
import { evaluate } from '../../src/quant/evaluate.js';
import { loadStockLayers, saveLayersModel } from '../fixtures/models.js';
import { toBatches, type ClassificationTask } from '../fixtures/tasks.js';
import { BOTTLENECK, taskDataset, trainBottleneckMlp } from '../pipeline/auto-fixture.js';

let dir: string;
let model: LoadedModel;
let heldOut: ClassificationTask;
let evaluation: Dataset;
let floatAccuracy: number;
const started = performance.now();

async function artifactAccuracy(files: FileSet): Promise<number> {
  const modelFiles: FileSet = new Map();
  for (const [path, bytes] of files) if (path.startsWith('model/')) modelFiles.set(path.slice('model/'.length), bytes);
  const loaded = await loadStockLayers(modelFiles);
  try {
    return (await evaluate(loaded, toBatches(heldOut, 100))).accuracy!;
  } finally {
    loaded.dispose();
  }
}

async function uniformPackedBytes(method: Record<string, unknown>): Promise<{ bytes: number; accuracy: number }> {
  const { files, report } = await runJob(model, parseJobSpec({ method }), {}, { backend: 'wasm' });
  return { bytes: report.model.packedBytes, accuracy: await artifactAccuracy(files) };
}

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-auto-accuracy-'));
  const task = await trainBottleneckMlp({ seed: 6, trainSamples: 1600, evalSamples: 400, epochs: 12 });
  heldOut = task.evaluation;
  floatAccuracy = (await evaluate(task.model, toBatches(heldOut, 100))).accuracy!;
  model = readModel(await saveLayersModel(task.model));
  task.model.dispose();
  evaluation = await taskDataset(dir, 'held-out', heldOut);
});

afterAll(async () => {
  await evaluation?.close();
  await rm(dir, { recursive: true, force: true });
  console.log(`auto accuracy tests: ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

describe('analyze and auto on a model with one sensitive layer', () => {
  it('analyze ranks the bottleneck first, under 2-bit and overall', async () => {
    const { report } = await runJob(
      model,
      parseJobSpec({ kind: 'analyze', method: { name: 'affine' }, data: { evaluation: 'e' } }),
      { evaluation },
      { backend: 'wasm' },
    );
    const rows = (report as AutoReport).sensitivity;
    expect(floatAccuracy).toBeGreaterThan(0.9);
    expect(rows[0].name).toBe(BOTTLENECK);
    const twoBit = rows.filter((r) => r.config === 'affine2pc');
    expect(twoBit[0].name).toBe(BOTTLENECK);
    // By a wide margin: the next tensor's 2-bit drop is less than half the bottleneck's.
    expect(twoBit[1].drop).toBeLessThan(twoBit[0].drop / 2);
    console.log('2-bit drops:', twoBit.map((r) => `${r.name} ${r.drop.toFixed(4)}`).join(', '));
  });

  it('auto with maxDrop 0.01 ships a model within 0.01 of float and smaller than uniform 8-bit affine', async () => {
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine' },
      data: { evaluation: 'e' },
      target: { metric: 'accuracy', maxDrop: 0.01 },
    });
    const at = performance.now();
    const { files, report } = await runJob(model, spec, { evaluation }, { backend: 'wasm' });
    const seconds = (performance.now() - at) / 1000;
    const auto = report as AutoReport;
    const accuracy = await artifactAccuracy(files);
    const perTensor8 = await uniformPackedBytes({ name: 'affine', bits: 8 });
    const perChannel8 = await uniformPackedBytes({ name: 'affine', bits: 8, granularity: 'per-channel' });
    console.log(
      `maxDrop 0.01: float ${floatAccuracy} → ${accuracy} in ${auto.model.packedBytes} B (uniform 8-bit ${perTensor8.bytes} B per-tensor, ` +
        `${perChannel8.bytes} B per-channel); ${auto.search.trials} trials, ${seconds.toFixed(1)} s`,
    );
    expect(auto.search.targetMet).toBe(true);
    expect(floatAccuracy - accuracy).toBeLessThanOrEqual(0.01);
    expect(accuracy).toBe(auto.model.metrics.ptq!.accuracy);
    expect(auto.model.packedBytes).toBeLessThan(perTensor8.bytes);
    expect(auto.model.packedBytes).toBeLessThan(perChannel8.bytes);
    // The bottleneck stays at 4 bits or more; the tolerant tensors are the ones squeezed.
    const chosen = auto.frontier!.find((f) => f.chosen)!;
    expect(['affine8pc', 'affine4pc', 'kmeans4', 'float']).toContain(chosen.overrides[BOTTLENECK]);
  });

  it('auto with maxBytes keeps the packed size within budget and beats uniform binary on accuracy', async () => {
    const binary = await uniformPackedBytes({ name: 'binary', granularity: 'per-channel' });
    const affine8 = await uniformPackedBytes({ name: 'affine', bits: 8 });
    const maxBytes = Math.floor((binary.bytes + affine8.bytes) / 2);
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine' },
      data: { evaluation: 'e' },
      target: { maxBytes },
    });
    const { files, report } = await runJob(model, spec, { evaluation }, { backend: 'wasm' });
    const auto = report as AutoReport;
    const accuracy = await artifactAccuracy(files);
    console.log(
      `maxBytes ${maxBytes}: ${auto.model.packedBytes} B, accuracy ${accuracy} (uniform binary ${binary.accuracy} in ${binary.bytes} B); ` +
        `${auto.search.trials} trials`,
    );
    expect(auto.search.targetMet).toBe(true);
    expect(auto.model.packedBytes).toBeLessThanOrEqual(maxBytes);
    let packed = 0;
    for (const [path, bytes] of files)
      if (path === 'packed/weights.bin' || path === 'packed/manifest.json') packed += bytes.byteLength;
    expect(packed).toBe(auto.model.packedBytes);
    expect(accuracy).toBeGreaterThan(binary.accuracy);
  });
});

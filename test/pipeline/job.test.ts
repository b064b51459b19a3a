import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import type { Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import type { ActivationRange } from '../../src/quant/activations.js';
import type { QatCheckpoint } from '../../src/quant/qat/train.js';
import { openDataset } from '../../src/model/dataset/index.js';
import { loadRunnable } from '../../src/model/load.js';
import { buildGraphModel, graphInput, GRAPH_INPUT_SHAPE, saveLayersModel } from '../fixtures/models.js';
import { npy } from '../model/dataset/npy-fixture.js';
import { makeClassificationTask, sliceTask, taskDataset, trainSmallCnn } from '../fixtures/tasks.js';

let dir: string;
let model: LoadedModel;
let evaluation: Dataset;
let calibration: Dataset;
let training: Dataset;

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-job-'));
  const task = makeClassificationTask({ seed: 3, samples: 2000 });
  const trained = await trainSmallCnn(sliceTask(task, 0, 1600), { seed: 3, epochs: 4 });
  model = readModel(await saveLayersModel(trained));
  trained.dispose();
  const part = (start: number, end: number) => taskDataset(dir, `rows-${start}`, sliceTask(task, start, end));
  training = await part(0, 1600);
  calibration = await part(1600, 1800);
  evaluation = await part(1800, 2000);
});

afterAll(async () => {
  await Promise.all([training, calibration, evaluation].map((d) => d?.close()));
  await rm(dir, { recursive: true, force: true });
});

describe('runJob', () => {
  it('measures float, exported and integer-simulated metrics on the artifact, and leaks no tensor', async () => {
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 8, granularity: 'per-channel' },
      data: { calibration: 'c', evaluation: 'e' },
      activations: { bits: 8, calibration: 'percentile' },
    });
    const tensorsBefore = tf.memory().numTensors;
    const stages: string[] = [];
    const { files, report } = await runJob(
      model,
      spec,
      { calibration, evaluation },
      {
        backend: 'wasm',
        onProgress: (p) => void (stages.at(-1) !== p.stage && stages.push(p.stage)),
      },
    );
    expect(tf.memory().numTensors).toBe(tensorsBefore);

    const { float, ptq, integer } = report.model.metrics;
    console.log(`job: float ${float!.accuracy} → ptq ${ptq!.accuracy} → W8A8 ${integer!.accuracy}`);
    expect(float!.samples).toBe(200);
    expect(float!.accuracy).toBeGreaterThan(0.8);
    // 8-bit per-channel weights barely move a classifier: the artifact agrees with the float model.
    expect(ptq!.agreement).toBeGreaterThanOrEqual(0.97);
    expect(Math.abs(ptq!.accuracy! - float!.accuracy!)).toBeLessThanOrEqual(0.03);
    expect(integer!.agreement).toBeGreaterThanOrEqual(0.9);
    expect(report.activations!.length).toBeGreaterThan(0);
    for (const range of report.activations! as ActivationRange[]) {
      expect(range.bits).toBe(8);
      expect(range.min).toBeLessThanOrEqual(0);
      expect(range.max).toBeGreaterThanOrEqual(0);
      expect(range.scale).toBeCloseTo((range.max - range.min) / 255, 6);
    }
    // The conv2d → BN pair of the small CNN is folded before quantization, the BN kept as its channel scale.
    expect(report.batchNorm!.scaled.length).toBeGreaterThan(0);
    expect(report.batchNorm!.folded).toEqual([]);
    expect(stages).toEqual([
      'fold',
      'evaluate',
      'quantize',
      'write',
      'pack',
      'report',
      'evaluate',
      'calibrate',
      'diagnose',
      'report',
    ]);
    const written = JSON.parse(new TextDecoder().decode(files.get('report.json')));
    expect(written.model.metrics.ptq.accuracy).toBe(ptq!.accuracy);
  });

  it('trains quantization-aware for kind qat, reports the history, and exports weights that beat binary PTQ', async () => {
    const method = { name: 'binary', granularity: 'per-channel' };
    const ptqJob = await runJob(
      model,
      parseJobSpec({ method, data: { evaluation: 'e' } }),
      { evaluation },
      { backend: 'wasm' },
    );
    const qatSpec = parseJobSpec({
      kind: 'qat',
      method,
      data: { training: 't', evaluation: 'e' },
      qat: { epochs: 3, batchSize: 32, learningRate: 5e-3, learningRateDecay: 0.5, validationSplit: 0.1 },
    });
    const epochs: number[] = [];
    const { report } = await runJob(
      model,
      qatSpec,
      { training, evaluation },
      {
        backend: 'wasm',
        onCheckpoint: (checkpoint) => void epochs.push((checkpoint as QatCheckpoint).epoch),
      },
    );
    expect(epochs).toEqual([1, 2, 3]);
    expect(report.training!.history).toHaveLength(3);
    expect(report.training!.history[2].valMetric).toBeDefined();
    const ptqAccuracy = ptqJob.report.model.metrics.ptq!.accuracy!;
    const qatAccuracy = report.model.metrics.qat!.accuracy!;
    console.log(`job: binary PTQ ${ptqAccuracy} → binary QAT (3 epochs) ${qatAccuracy}`);
    expect(qatAccuracy).toBeGreaterThan(ptqAccuracy);
    expect(report.batchNorm).toBeUndefined();
  });

  it('trains a graph model quantization-aware: its weights become variables, the loss falls, nothing leaks', async () => {
    const files = buildGraphModel({ seed: 4 });
    const graph = readModel(files);
    const reference = await loadRunnable(files);
    const x = graphInput(256, 9);
    const labels = tf.tidy(() => (reference.predict(x) as tf.Tensor).argMax(-1));
    const y = Int32Array.from(await labels.data());
    const xValues = (await x.data()) as Float32Array;
    tf.dispose([x, labels]);
    reference.dispose();
    await writeFile(
      join(dir, 'graph-train-x.npy'),
      npy('<f4', [256, ...GRAPH_INPUT_SHAPE], new Uint8Array(xValues.buffer)),
    );
    await writeFile(join(dir, 'graph-train-y.npy'), npy('<i4', [256], new Uint8Array(y.buffer)));
    const data = await openDataset({ x: join(dir, 'graph-train-x.npy'), y: join(dir, 'graph-train-y.npy') });
    try {
      const method = { name: 'affine', bits: 2, granularity: 'per-channel' };
      const ptq = await runJob(
        graph,
        parseJobSpec({ method, data: { evaluation: 'd' } }),
        { evaluation: data },
        { backend: 'wasm' },
      );
      const tensorsBefore = tf.memory().numTensors;
      const { report, files: exported } = await runJob(
        graph,
        parseJobSpec({
          kind: 'qat',
          method,
          data: { training: 'd', evaluation: 'd' },
          qat: { epochs: 4, batchSize: 32, learningRate: 1e-2 },
        }),
        { training: data, evaluation: data },
        { backend: 'wasm' },
      );
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      const history = report.training!.history;
      expect(history).toHaveLength(4);
      expect(history[3].loss).toBeLessThan(history[0].loss);
      const [ptqAccuracy, qatAccuracy] = [ptq.report.model.metrics.ptq!.accuracy!, report.model.metrics.qat!.accuracy!];
      console.log(`job (graph): 2-bit PTQ ${ptqAccuracy} → 2-bit QAT (4 epochs) ${qatAccuracy}`);
      expect(qatAccuracy).toBeGreaterThan(ptqAccuracy);
      // The artifact is a graph model still, and its kernels sit on the 2-bit grid.
      expect(JSON.parse(new TextDecoder().decode(exported.get('model/model.json'))).format).toBe('graph-model');
      expect(report.tensors.filter((t) => t.name.endsWith('kernel')).every((t) => t.bits === 2)).toBe(true);
    } finally {
      await data.close();
    }
  });

  it('simulates integer activations on a graph model too: after each fused chain, close to float at 8 bits', async () => {
    const files = buildGraphModel();
    const graph = readModel(files);
    // Labels are the float graph's own classes, so its accuracy is 1 and the others measure agreement.
    const x = graphInput(64, 5);
    const reference = await loadRunnable(files);
    const labels = tf.tidy(() => (reference.predict(x) as tf.Tensor).argMax(-1));
    const y = Int32Array.from(await labels.data());
    const xValues = (await x.data()) as Float32Array;
    tf.dispose([x, labels]);
    reference.dispose();
    await writeFile(join(dir, 'graph-x.npy'), npy('<f4', [64, ...GRAPH_INPUT_SHAPE], new Uint8Array(xValues.buffer)));
    await writeFile(join(dir, 'graph-y.npy'), npy('<i4', [64], new Uint8Array(y.buffer)));
    const data = await openDataset({ x: join(dir, 'graph-x.npy'), y: join(dir, 'graph-y.npy') });
    try {
      const spec = parseJobSpec({
        method: { name: 'affine', bits: 8, granularity: 'per-channel' },
        data: { calibration: 'd', evaluation: 'd' },
        activations: { bits: 8, calibration: 'minmax' },
      });
      const tensorsBefore = tf.memory().numTensors;
      const { report } = await runJob(graph, spec, { calibration: data, evaluation: data }, { backend: 'wasm' });
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      expect(report.activations!.map((range) => range.layer)).toEqual(['conv/Relu', 'dense/Relu', 'logits/BiasAdd']);
      const { float, integer } = report.model.metrics;
      console.log(`job (graph): float ${float!.accuracy} → W8A8 agreement ${integer!.agreement}`);
      expect(float!.accuracy).toBe(1);
      expect(integer!.samples).toBe(64);
      expect(integer!.agreement).toBeGreaterThanOrEqual(0.9);
    } finally {
      await data.close();
    }
  });
});

/**
 * Issue 13's "must show" for binary activations: binary weights and binary activations (BNN, Courbariaux,
 * Hubara et al. 2016; XNOR-Net, Rastegari et al. 2016: α·sign(x) in place of every ReLU, α per position)
 * trained quantization-aware on the generated task, within 5 points of float. As in BNN and XNOR-Net the first
 * and last layers keep 8-bit weights; every ReLU, the first layer's included, is binarized. Runs the whole job:
 * kind qat, export, and the `integer` stage evaluated on the exported weights with the binarizers in place.
 *
 * The network is the tests' small CNN widened from 12/16 to 32/64 channels (conv1 and depthwise / pointwise):
 * low-precision networks need width (WRPN, Mishra et al. 2018, widens layers to win back what fewer bits
 * lose; BNN's own networks are wide), and 12 binary channels after the first layer carry too little.
 * Measured on wasm with the QAT recipe below (Adam, lr 0.01 with decay 0.1, 8 epochs, batch 64):
 *   32/64 channels: float 94.1%, PTQ 38.3%, QAT 92.0% (2.1 points below), 108 s for the test on a shared
 *   machine. Before QAT shuffled a dataset's rows each epoch (it read them in file order), the same run gave
 *   91.4% (2.7 points below), seed 4 gave 93.6% of 96.2% float, and 12/16 channels gave float 95.0%, QAT
 *   86.4% (8.6 points below; 86.7% with the former 15 epochs at lr 0.005); those were not re-measured.
 * The method was checked as well: the binarizer sees the pre-activation (a ReLU layer is replaced, a layer's
 * `activation: "relu"` turns linear), BatchNorm stands before the first sign, and neither the identity STE for
 * the weights (79.4%) nor the exact gradient through the activations' α (86.5%) did better on 12/16 channels.
 */
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
import { runJob } from '../../src/pipeline/run.js';
import { expectValidReport } from '../http/spec-validator.js';
import { saveLayersModel } from '../fixtures/models.js';
import { makeClassificationTask, sliceTask, taskDataset, trainSmallCnn } from '../fixtures/tasks.js';

const task = makeClassificationTask({ seed: 1, samples: 3500 });
const train = sliceTask(task, 0, 2000);
const heldOut = sliceTask(task, 2500, 3500);

let dir: string;
let source: LoadedModel;
let datasets: { training: Dataset; evaluation: Dataset };

const method = { name: 'binary', granularity: 'per-channel' };
const firstAndLast = { 'conv1/kernel': { name: 'affine', bits: 8 }, 'logits/kernel': { name: 'affine', bits: 8 } };

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-binary-activations-'));
  const trained = await trainSmallCnn(train, { seed: 3, epochs: 4, widths: [32, 64] });
  source = readModel(await saveLayersModel(trained));
  trained.dispose();
  datasets = {
    training: await taskDataset(dir, 'train', train),
    evaluation: await taskDataset(dir, 'evaluation', heldOut),
  };
}, 300_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('binary weights and binary activations (issue 13)', () => {
  it('PTQ with sign activations collapses; QAT through the clipped STE comes within 5 points of float', async () => {
    const ptq = await runJob(
      source,
      parseJobSpec({
        method,
        layers: { overrides: firstAndLast },
        activations: { bits: 1 },
        data: { evaluation: 'evaluation' },
      }),
      datasets,
      { backend: tf.getBackend() },
    );
    const spec = parseJobSpec({
      kind: 'qat',
      method,
      layers: { overrides: firstAndLast },
      activations: { bits: 1 },
      data: { training: 'train', evaluation: 'evaluation' },
      qat: { epochs: 8, batchSize: 64, learningRate: 0.01, learningRateDecay: 0.1 },
    });
    expect(spec.activations).toMatchObject({ bits: 1, quantizer: 'sign' });
    const qat = await runJob(source, spec, datasets, { backend: tf.getBackend() });
    expectValidReport(ptq.report);
    expectValidReport(qat.report);
    const float = qat.report.model.metrics.float!.accuracy!;
    const ptqAccuracy = ptq.report.model.metrics.integer!.accuracy!;
    const qatAccuracy = qat.report.model.metrics.integer!.accuracy!;
    console.log(
      `float ${(100 * float).toFixed(1)}%; binary weights + binary activations: PTQ ${(100 * ptqAccuracy).toFixed(1)}%, ` +
        `QAT (8 epochs) ${(100 * qatAccuracy).toFixed(1)}% (${(100 * (float - qatAccuracy)).toFixed(1)} points below float)`,
    );
    console.log(`integer stage: ${qat.report.model.metrics.integer!.simulated}`);
    expect(qat.report.model.metrics.integer!.simulated).toContain('3 ReLUs replaced by binary activations');
    expect(qat.report.activations!.map((a) => a.layer)).toEqual(['relu1', 'depthwise', 'pointwise']);
    expect(float - qatAccuracy).toBeLessThanOrEqual(0.05);
    expect(qatAccuracy).toBeGreaterThan(ptqAccuracy + 0.3);
  }, 600_000);
});

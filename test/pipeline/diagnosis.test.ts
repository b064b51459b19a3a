/**
 * The layer-by-layer diagnosis (src/pipeline/diagnose.ts) on models built here with chosen weights: its SQNRs
 * against the same quantities computed in plain arithmetic, and a model with one fragile layer that ranks
 * first with the right split, activation-dominated (a calibration outlier) or weight-dominated (one huge
 * kernel channel under a per-tensor grid).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import { openDataset, type Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { LoadedModel } from '../../src/model/types.js';
import type { Diagnosis } from '../../src/pipeline/diagnose.js';
import { runJob } from '../../src/pipeline/run.js';
import { artifactModelFiles } from '../../src/pipeline/runtime.js';
import { EXACT_SQNR_DB } from '../../src/quant/metrics.js';
import {
  buildGraphModel,
  buildLayersModel,
  buildMobileNetLikeModel,
  graphInput,
  GRAPH_INPUT_SHAPE,
  LAYERS_SEQUENCE_LENGTH,
  LAYERS_VOCABULARY,
  mobileNetInput,
  MOBILENET_INPUT_SHAPE,
  saveLayersModel,
} from '../fixtures/models.js';
import { expectValidReport } from '../http/spec-validator.js';
import { npy } from '../model/dataset/npy-fixture.js';

let dir: string;
const opened: Dataset[] = [];

beforeAll(async () => {
  await selectBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'qaas-diagnosis-'));
});

afterAll(async () => {
  await Promise.all(opened.map((d) => d.close()));
  await rm(dir, { recursive: true, force: true });
});

/** Rows of `width` features as a dataset (labels all 0: the diagnosis needs none). */
async function dataset(name: string, rows: number[][]): Promise<Dataset> {
  const width = rows[0].length;
  const x = Float32Array.from(rows.flat());
  const y = new Int32Array(rows.length);
  await writeFile(join(dir, `${name}-x.npy`), npy('<f4', [rows.length, width], new Uint8Array(x.buffer)));
  await writeFile(join(dir, `${name}-y.npy`), npy('<i4', [rows.length], new Uint8Array(y.buffer)));
  const data = await openDataset({ x: join(dir, `${name}-x.npy`), y: join(dir, `${name}-y.npy`) });
  opened.push(data);
  return data;
}

/** A Sequential stack of Dense layers with the given kernels ([in][out]) and biases. */
async function denseStack(
  inputs: number,
  layers: { name: string; kernel: number[][]; bias: number[]; activation?: 'relu' }[],
): Promise<LoadedModel> {
  const model = tf.sequential();
  layers.forEach((layer, i) =>
    model.add(
      tf.layers.dense({
        name: layer.name,
        units: layer.bias.length,
        activation: layer.activation ?? 'linear',
        ...(i === 0 ? { inputShape: [inputs] } : {}),
      }),
    ),
  );
  for (const layer of layers) {
    const values = [tf.tensor2d(layer.kernel), tf.tensor1d(layer.bias)];
    model.getLayer(layer.name).setWeights(values);
    tf.dispose(values);
  }
  const loaded = readModel(await saveLayersModel(model));
  model.dispose();
  return loaded;
}

/** A deterministic value in [0, 1) per (row, column). */
const wave = (r: number, c: number) => (Math.sin(12.9898 * (r + 1) + 78.233 * (c + 1)) * 43758.5453) % 1;
const unit = (r: number, c: number) => Math.abs(wave(r, c));

describe('diagnosis SQNRs', () => {
  it('equal a hand computation on a 3 → 2 → 2 model, per layer and source', async () => {
    const a = {
      kernel: [
        [0.9, -0.3],
        [0.2, 0.7],
        [-0.5, 0.4],
      ],
      bias: [0.1, -0.05],
    };
    const b = {
      kernel: [
        [1.1, -0.6],
        [0.3, 0.8],
      ],
      bias: [0, 0.2],
    };
    const model = await denseStack(3, [
      { name: 'a', ...a },
      { name: 'b', ...b },
    ]);
    const rows = Array.from({ length: 6 }, (_, r) => [0, 1, 2].map((c) => 2 * unit(r, c) - 1));
    const data = await dataset('hand', rows);
    const bits = 3;
    const spec = parseJobSpec({
      method: { name: 'affine', bits, granularity: 'per-tensor' },
      data: { calibration: 'd', evaluation: 'd' },
      activations: { bits, calibration: 'minmax' },
    });
    const tensorsBefore = tf.memory().numTensors;
    const { report, files } = await runJob(model, spec, { calibration: data, evaluation: data }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    expect(diagnosis.samples).toBe(6);
    expect(diagnosis.layers.map((l) => [l.name, l.op, l.weights])).toEqual([
      ['a', 'Dense', ['a/kernel']],
      ['b', 'Dense', ['b/kernel']],
    ]);

    // The hand computation: the artifact's weights, FakeQuant's grid and the SQNR sums, in float64.
    const exported = new Map(readModel(artifactModelFiles(files)).weights.map((w) => [w.name, Array.from(w.values)]));
    const qa = chunk(exported.get('a/kernel')!, 2);
    const qb = chunk(exported.get('b/kernel')!, 2);
    const dense = (x: number[], kernel: number[][], bias: number[]) =>
      bias.map((bj, j) => x.reduce((sum, xi, i) => sum + xi * kernel[i][j], bj));
    const forward = (ka: number[][], kb: number[][], fa = (v: number[]) => v, fb = fa) =>
      rows.map((x) => {
        const ya = fa(dense(x, ka, a.bias));
        return [ya, fb(dense(ya, kb, b.bias))];
      });
    const floats = forward(a.kernel, b.kernel);
    const weightsOnly = forward(qa, qb);
    const grid = (outputs: number[][][], layer: number) =>
      fakeQuant(
        outputs.flatMap((o) => o[layer]),
        bits,
      );
    const activationsOnly = forward(a.kernel, b.kernel, grid(floats, 0), grid(floats, 1));
    const both = forward(qa, qb, grid(weightsOnly, 0), grid(weightsOnly, 1));
    const sqnr = (variant: number[][][], layer: number) => {
      let signal = 0;
      let noise = 0;
      variant.forEach((o, r) =>
        o[layer].forEach((v, j) => {
          signal += floats[r][layer][j] ** 2;
          noise += (v - floats[r][layer][j]) ** 2;
        }),
      );
      return 10 * Math.log10(signal / noise);
    };
    // Layer b alone: fed a's float output, with the variant's kernel and fake-quant.
    const alone = (kb: number[][], fb: (v: number[]) => number[]) =>
      floats.map(([ya]) => [ya, fb(dense(ya, kb, b.bias))]);
    const identity = (v: number[]) => v;
    const hand = (variant: number[][][], bAlone: number[][][], layer: number) => ({
      sqnr: sqnr(variant, layer),
      local: sqnr(layer === 0 ? variant : bAlone, layer),
    });
    for (const [i, layer] of diagnosis.layers.entries()) {
      const expected = {
        weights: hand(weightsOnly, alone(qb, identity), i),
        activations: hand(activationsOnly, alone(b.kernel, grid(floats, 1)), i),
        both: hand(both, alone(qb, grid(weightsOnly, 1)), i),
      };
      console.log(
        `${layer.name}: sqnr W ${layer.sqnrDb.weights.toFixed(2)} (hand ${expected.weights.sqnr.toFixed(2)}), ` +
          `A ${layer.sqnrDb.activations!.toFixed(2)} (${expected.activations.sqnr.toFixed(2)}), ` +
          `W+A ${layer.sqnrDb.both.toFixed(2)} (${expected.both.sqnr.toFixed(2)}); local W ${layer.localSqnrDb.weights.toFixed(2)} ` +
          `(${expected.weights.local.toFixed(2)}), A ${layer.localSqnrDb.activations!.toFixed(2)} (${expected.activations.local.toFixed(2)})`,
      );
      for (const variant of ['weights', 'activations', 'both'] as const) {
        expect(layer.sqnrDb[variant]).toBeCloseTo(expected[variant].sqnr, 2);
        expect(layer.localSqnrDb[variant]).toBeCloseTo(expected[variant].local, 2);
      }
      // 3 bits leave a visible error everywhere: nothing here is exact.
      expect(layer.sqnrDb.both).toBeLessThan(25);
    }
    expect(diagnosis.layers.map((l) => l.rank).sort()).toEqual([1, 2]);
  });
});

describe('a fragile layer', () => {
  // h1 (4 → 8, relu): units 0–6 read features 0–2, unit 7 only feature 3 (0 in the evaluation rows);
  // spike (8 → 8, relu): the identity on units 0–6, and 1000 × unit 7; out (8 → 3) reads spike's 0–6 and
  // 0.001 × its channel 7, so nothing downstream sees the spike's scale.
  const h1 = Array.from({ length: 4 }, (_, i) =>
    Array.from({ length: 8 }, (_, j) => (j < 7 ? (i < 3 ? 0.5 + 0.05 * ((i + j) % 5) : 0) : i === 3 ? 1 : 0)),
  );
  const spike = Array.from({ length: 8 }, (_, i) =>
    Array.from({ length: 8 }, (_, j) => (i !== j ? 0 : i < 7 ? 1 : 1000)),
  );
  const out = Array.from({ length: 8 }, (_, i) => [0, 1, 2].map((c) => (i < 7 ? 0.2 + 0.1 * ((i + c) % 4) : 0.001)));
  const rows = Array.from({ length: 64 }, (_, r) => [unit(r, 0), unit(r, 1), unit(r, 2), 0]);
  let model: LoadedModel;

  beforeAll(async () => {
    model = await denseStack(4, [
      { name: 'h1', kernel: h1, bias: new Array(8).fill(0), activation: 'relu' },
      { name: 'spike', kernel: spike, bias: new Array(8).fill(0), activation: 'relu' },
      { name: 'out', kernel: out, bias: [0, 0, 0] },
    ]);
  });

  const diagnose = async (granularity: string, calibrationRows: number[][]): Promise<Diagnosis> => {
    const evaluation = await dataset(`eval-${granularity}`, rows);
    const calibration = await dataset(`calibration-${granularity}`, calibrationRows);
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 8, granularity },
      data: { calibration: 'c', evaluation: 'e' },
      activations: { bits: 8, calibration: 'minmax' },
    });
    const { report } = await runJob(model, spec, { calibration, evaluation }, { backend: 'wasm' });
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    // At the model's output the variants are the job's own exported and integer-simulated models.
    const last = diagnosis.layers.at(-1)!;
    expect(last.sqnrDb.weights).toBeCloseTo(report.model.metrics.ptq!.sqnrDb!, 3);
    expect(last.sqnrDb.both).toBeCloseTo(report.model.metrics.integer!.sqnrDb!, 3);
    for (const l of diagnosis.layers) {
      console.log(
        `${granularity}: #${l.rank} ${l.name}: local W ${l.localSqnrDb.weights.toFixed(1)} dB, A ${l.localSqnrDb.activations!.toFixed(1)} dB, ` +
          `W+A ${l.localSqnrDb.both.toFixed(1)} dB (at its output ${l.sqnrDb.both.toFixed(1)} dB) → ${l.suggestion}: ${l.reason}`,
      );
    }
    return diagnosis;
  };

  it('ranks first, activation-dominated, when one calibration sample stretches its output range', async () => {
    // One calibration row switches unit 7 on: spike's range becomes [0, 1000], a 3.9-wide 8-bit step.
    const diagnosis = await diagnose('per-channel', [...rows, [0.5, 0.5, 0.5, 1]]);
    const [worst] = diagnosis.layers.filter((l) => l.rank === 1);
    expect(worst.name).toBe('spike');
    expect(diagnosis.worst[0]).toBe('spike');
    expect(worst.dominant).toBe('activations');
    expect(worst.localSqnrDb.activations!).toBeLessThan(10);
    expect(worst.localSqnrDb.weights).toBeGreaterThan(40);
    // 8-bit activations already: the remedy is to keep it in float.
    expect(worst.suggestion).toBe('skip');
    // Downstream, out inherits the error (low at its output) but adds little of its own.
    const last = diagnosis.layers.find((l) => l.name === 'out')!;
    expect(last.sqnrDb.both).toBeLessThan(15);
    expect(last.localSqnrDb.both).toBeGreaterThan(35);
    expect(last.suggestion).toBe('none');
  });

  it('ranks first, weight-dominated, when one kernel channel is 1000× the others under a per-tensor grid', async () => {
    const diagnosis = await diagnose('per-tensor', rows);
    const [worst] = diagnosis.layers.filter((l) => l.rank === 1);
    expect(worst.name).toBe('spike');
    expect(worst.dominant).toBe('weights');
    expect(worst.localSqnrDb.weights).toBeLessThan(10);
    expect(worst.localSqnrDb.activations!).toBeGreaterThan(30);
    expect(worst.suggestion).toBe('equalize');
    expect(worst.reason).toContain('1000.0×');
    expect(diagnosis.worst).toEqual(['spike']);
  });
});

describe('kind analyze', () => {
  it('diagnoses the spec’s own method, weights alone when the spec quantizes no activations', async () => {
    const model = await denseStack(2, [
      // wide's unit 2 is never on for inputs in [0, 1): narrow's 40 on it costs nothing in float.
      {
        name: 'wide',
        kernel: [
          [0.3, -0.2, -0.5],
          [0.1, 0.4, -0.6],
        ],
        bias: [0, 0, 0],
        activation: 'relu',
      },
      {
        name: 'narrow',
        kernel: [
          [0.5, 0.3],
          [-0.4, 0.6],
          [40, -0.2],
        ],
        bias: [0, 0],
      },
    ]);
    const data = await dataset(
      'analyze',
      Array.from({ length: 32 }, (_, r) => [unit(r, 0), unit(r, 1)]),
    );
    const spec = parseJobSpec({
      kind: 'analyze',
      method: { name: 'affine', bits: 4, granularity: 'per-tensor' },
      data: { evaluation: 'e' },
      target: { metric: 'agreement' },
    });
    const tensorsBefore = tf.memory().numTensors;
    const { report } = await runJob(model, spec, { evaluation: data }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    expect(diagnosis.activations).toBeUndefined();
    expect(diagnosis.measured).toContain('the spec quantizes no activations');
    const [wide, narrow] = diagnosis.layers;
    console.log(
      `analyze: wide ${wide.localSqnrDb.weights.toFixed(1)} dB (#${wide.rank}), narrow ${narrow.localSqnrDb.weights.toFixed(1)} dB (#${narrow.rank}, ${narrow.suggestion})`,
    );
    // narrow's one large weight stretches the per-tensor 4-bit grid to a 2.7-wide step: every weight that
    // matters rounds to 0.
    expect(narrow.rank).toBe(1);
    expect(narrow.sqnrDb.both).toBe(narrow.sqnrDb.weights);
    expect(Object.keys(narrow.sqnrDb)).toEqual(['weights', 'both']);
    expect(narrow.localSqnrDb.weights).toBeLessThan(3);
    expect(wide.localSqnrDb.weights).toBeGreaterThan(15);
    // The outlier sits in an input row, not an output channel: per-channel scales would not help, bits would.
    expect(narrow.suggestion).toBe('more-bits');
    expect(narrow.reason).toContain('with 4-bit weights');
  });
});

describe('binary activations', () => {
  it('split out as the job simulates them: a sign in place of the ReLU, checked by hand', async () => {
    const kernel = [
      [0.3, -0.2, -0.5],
      [0.1, 0.4, -0.6],
    ];
    const model = await denseStack(2, [
      { name: 'wide', kernel, bias: [0, 0, 0], activation: 'relu' },
      {
        name: 'narrow',
        kernel: [
          [0.5, 0.3],
          [-0.4, 0.6],
          [0.2, -0.2],
        ],
        bias: [0, 0],
      },
    ]);
    const rows = Array.from({ length: 16 }, (_, r) => [2 * unit(r, 0) - 1, 2 * unit(r, 1) - 1]);
    const data = await dataset('sign', rows);
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 8, granularity: 'per-channel' },
      data: { evaluation: 'e' },
      activations: { bits: 1 },
    });
    const tensorsBefore = tf.memory().numTensors;
    const { report } = await runJob(model, spec, { evaluation: data }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    expect(diagnosis.activations).toEqual({ quantizer: 'sign', bits: 1 });
    const [wide, narrow] = diagnosis.layers;
    // By hand: the pre-activation z, α = mean |z| per sample, α·sign(z) (sign(0) = +1) against relu(z).
    let signal = 0;
    let noise = 0;
    for (const x of rows) {
      const z = [0, 1, 2].map((j) => x[0] * kernel[0][j] + x[1] * kernel[1][j]);
      const alpha = z.reduce((sum, v) => sum + Math.abs(v), 0) / z.length;
      for (const v of z) {
        const relu = Math.max(0, v);
        signal += relu ** 2;
        noise += ((v >= 0 ? alpha : -alpha) - relu) ** 2;
      }
    }
    const hand = 10 * Math.log10(signal / noise);
    console.log(
      `sign: wide alone A ${wide.localSqnrDb.activations!.toFixed(2)} dB (hand ${hand.toFixed(2)}), W ${wide.localSqnrDb.weights.toFixed(1)} dB`,
    );
    expect(wide.localSqnrDb.activations!).toBeCloseTo(hand, 2);
    expect(wide.dominant).toBe('activations');
    expect(wide.rank).toBe(1);
    expect(wide.suggestion).toBe('more-bits');
    expect(wide.reason).toContain('with 1-bit activations');
    // narrow has no ReLU: nothing replaces its output (exact with float weights), its own error is its 8-bit weights'.
    expect(narrow.localSqnrDb.activations).toBe(EXACT_SQNR_DB);
    expect(narrow.localSqnrDb.both).toBeCloseTo(narrow.localSqnrDb.weights, 6);
    expect(narrow.localSqnrDb.weights).toBeGreaterThan(35);
  });
});

describe('trained activations', () => {
  it('split out with the grids QAT trained (DoReFa after each ReLU output)', async () => {
    const model = await denseStack(2, [
      {
        name: 'wide',
        kernel: [
          [0.3, -0.2, -0.5],
          [0.1, 0.4, -0.6],
        ],
        bias: [0, 0, 0],
        activation: 'relu',
      },
      {
        name: 'narrow',
        kernel: [
          [0.5, 0.3],
          [-0.4, 0.6],
          [0.2, -0.2],
        ],
        bias: [0, 0],
      },
    ]);
    const data = await dataset(
      'dorefa',
      Array.from({ length: 16 }, (_, r) => [unit(r, 0), unit(r, 1)]),
    );
    const spec = parseJobSpec({
      kind: 'qat',
      method: { name: 'affine', bits: 8 },
      data: { training: 't', evaluation: 'e' },
      activations: { quantizer: 'dorefa', bits: 3 },
      qat: { epochs: 1, batchSize: 16 },
    });
    const tensorsBefore = tf.memory().numTensors;
    const { report } = await runJob(model, spec, { training: data, evaluation: data }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    expect(diagnosis.activations).toEqual({ quantizer: 'dorefa', bits: 3 });
    expect(diagnosis.measured).toContain('the 3-bit dorefa grids QAT trained');
    const [wide, narrow] = diagnosis.layers;
    console.log(
      `dorefa: wide alone A ${wide.localSqnrDb.activations!.toFixed(1)} dB, W ${wide.localSqnrDb.weights.toFixed(1)} dB`,
    );
    // 3 bits on [0, 1] after wide's ReLU: a real error, not none; narrow's output keeps float activations.
    expect(wide.localSqnrDb.activations!).toBeLessThan(30);
    expect(wide.dominant).toBe('activations');
    expect(narrow.localSqnrDb.activations).toBe(EXACT_SQNR_DB);
  });
});

describe('the layers fixture', () => {
  it('diagnoses embedding, convolutions, the BatchNorm kept as a scale, LSTM and dense layers alike', async () => {
    const model = readModel(await buildLayersModel());
    const rows = Array.from({ length: 24 }, (_, r) =>
      Array.from({ length: LAYERS_SEQUENCE_LENGTH }, (_, c) => (r * 7 + c * 3) % LAYERS_VOCABULARY),
    );
    const data = await dataset('fixture', rows);
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 4, granularity: 'per-channel' },
      data: { calibration: 'd', evaluation: 'd' },
      activations: { bits: 8, calibration: 'minmax' },
    });
    const tensorsBefore = tf.memory().numTensors;
    const { report } = await runJob(model, spec, { calibration: data, evaluation: data }, { backend: 'wasm' });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expectValidReport(report);
    const diagnosis = report.diagnosis!;
    const { diagnoseMs, evaluateExportedMs, evaluateIntegerMs } = report.timings;
    console.log(
      `fixture: diagnosis ${diagnoseMs} ms; evaluating the artifact ${evaluateExportedMs} ms, W4A8 ${evaluateIntegerMs} ms`,
    );
    for (const l of diagnosis.layers) {
      console.log(
        `fixture: #${l.rank} ${l.name} (${l.op}): alone W ${l.localSqnrDb.weights.toFixed(1)} A ${l.localSqnrDb.activations!.toFixed(1)} dB → ${l.suggestion}`,
      );
    }
    expect(diagnosis.layers.map((l) => l.name)).toEqual(
      expect.arrayContaining(['embedding', 'conv2d', 'depthwise', 'separable', 'lstm', 'dense', 'logits']),
    );
    // Each quantized tensor belongs to exactly one diagnosed layer.
    expect(diagnosis.layers.flatMap((l) => l.weights).sort()).toEqual(report.tensors.map((t) => t.name).sort());
    expect(diagnosis.layers.map((l) => l.rank).sort((a, b) => a - b)).toEqual(diagnosis.layers.map((_, i) => i + 1));
  });
});

describe('the suggestion is the remedy', () => {
  it('equalize on the MobileNetV2-shaped fixture (BN scales 100× apart per channel): taking it lifts those layers, more bits is next', async () => {
    const model = readModel(await buildMobileNetLikeModel());
    const x = mobileNetInput(32, 3);
    const xValues = (await x.data()) as Float32Array;
    x.dispose();
    await writeFile(
      join(dir, 'mnet-x.npy'),
      npy('<f4', [32, ...MOBILENET_INPUT_SHAPE], new Uint8Array(xValues.buffer)),
    );
    const data = await openDataset({ x: join(dir, 'mnet-x.npy') });
    opened.push(data);
    const run = async (equalize: boolean) => {
      const spec = parseJobSpec({
        method: { name: 'affine', bits: 4, granularity: 'per-tensor' },
        ptq: { equalize },
        data: { evaluation: 'e' },
      });
      const tensorsBefore = tf.memory().numTensors;
      const { report } = await runJob(model, spec, { evaluation: data }, { backend: 'wasm' });
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      expectValidReport(report);
      console.log(
        `mobilenet-like, equalize ${equalize}: diagnosis ${report.timings.diagnoseMs} ms (evaluating the artifact ${report.timings.evaluateExportedMs} ms)`,
      );
      for (const l of report.diagnosis!.layers)
        console.log(`  #${l.rank} ${l.name}: own W ${l.localSqnrDb.weights.toFixed(1)} dB → ${l.suggestion}`);
      return new Map(report.diagnosis!.layers.map((l) => [l.name, l]));
    };
    const folded = await run(false);
    const equalized = await run(true);
    // The folded kernels carry the BN's 100× channel scales: one 4-bit per-tensor grid loses the small channels.
    const uneven = ['stem', 'expand', 'depthwise', 'project', 'head'];
    for (const name of uneven) {
      expect(folded.get(name)!.suggestion, name).toBe('equalize');
      expect(folded.get(name)!.reason, name).toMatch(/differ \d+(\.\d)?×/);
      // With the scale kept in the BN, the same 4-bit per-tensor grid fits every channel: better, though by
      // a few dB only, since the channels it rescues carry little of the output's energy; what is left is
      // the 4 bits themselves.
      const gain = equalized.get(name)!.localSqnrDb.weights - folded.get(name)!.localSqnrDb.weights;
      expect(gain, name).toBeGreaterThan(1);
      expect(equalized.get(name)!.suggestion, name).toBe('more-bits');
    }
  });
});

describe('graph models', () => {
  it('diagnose the end of each fused chain; a layer alone is fed the float graph’s tensors', async () => {
    const files = buildGraphModel();
    const graph = readModel(files);
    const x = graphInput(48, 5);
    const xValues = (await x.data()) as Float32Array;
    x.dispose();
    await writeFile(join(dir, 'graph-x.npy'), npy('<f4', [48, ...GRAPH_INPUT_SHAPE], new Uint8Array(xValues.buffer)));
    const data = await openDataset({ x: join(dir, 'graph-x.npy') });
    opened.push(data);
    const run = async (skip: string[]) => {
      const spec = parseJobSpec({
        method: { name: 'affine', bits: 4, granularity: 'per-channel' },
        layers: { skip },
        data: { calibration: 'd', evaluation: 'd' },
        activations: { bits: 6, calibration: 'minmax' },
      });
      const tensorsBefore = tf.memory().numTensors;
      const { report } = await runJob(graph, spec, { calibration: data, evaluation: data }, { backend: 'wasm' });
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      expectValidReport(report);
      expect(report.warnings.filter((w) => w.includes('diagnosis'))).toEqual([]);
      for (const l of report.diagnosis!.layers) {
        console.log(
          `graph (skip ${skip.join(',') || 'none'}): #${l.rank} ${l.name} (${l.op}, ${l.weights.join(',')}): ` +
            `at output W ${l.sqnrDb.weights.toFixed(1)} A ${l.sqnrDb.activations!.toFixed(1)} W+A ${l.sqnrDb.both.toFixed(1)} dB; ` +
            `alone W ${l.localSqnrDb.weights.toFixed(1)} A ${l.localSqnrDb.activations!.toFixed(1)} W+A ${l.localSqnrDb.both.toFixed(1)} dB → ${l.suggestion}`,
        );
      }
      return report;
    };

    const all = (await run([])).diagnosis!;
    expect(all.layers.map((l) => [l.name, l.op, l.weights])).toEqual([
      ['conv/Relu', 'Relu', ['conv/kernel']],
      ['dense/Relu', 'Relu', ['dense/kernel']],
      ['logits/BiasAdd', '_FusedMatMul', ['logits/kernel']],
    ]);
    // The first layer reads the model's input, exact in every variant: alone is all of it.
    const [conv, dense] = all.layers;
    for (const v of ['weights', 'activations', 'both'] as const)
      expect(conv.localSqnrDb[v]).toBeCloseTo(conv.sqnrDb[v]!, 3);
    // 4-bit weights, 6-bit activations: every layer has an error of its own, none exact.
    for (const l of all.layers) expect(l.localSqnrDb.both).toBeLessThan(40);

    // dense's kernel left in float: alone it is exact, while at its output it still carries conv's error.
    const skipped = (await run(['dense/kernel'])).diagnosis!;
    const dense2 = skipped.layers.find((l) => l.name === 'dense/Relu')!;
    expect(dense2.weights).toEqual([]);
    expect(dense2.localSqnrDb.weights).toBeGreaterThan(100);
    expect(dense2.sqnrDb.weights).toBeLessThan(40);
    expect(dense2.sqnrDb.weights).toBeGreaterThan(dense.sqnrDb.weights);
    // Its activations alone are what they were: the same float inputs, the same float-calibrated grid.
    expect(dense2.localSqnrDb.activations!).toBeCloseTo(dense.localSqnrDb.activations!, 6);
  });
});

function chunk(values: number[], width: number): number[][] {
  return Array.from({ length: values.length / width }, (_, i) => values.slice(i * width, (i + 1) * width));
}

/** FakeQuant (activations.ts, fake-quant-layer.ts) with minmax ranges over `observed`, by hand. */
function fakeQuant(observed: number[], bits: number): (v: number[]) => number[] {
  const min = Math.min(0, ...observed);
  const max = Math.max(0, ...observed);
  const levels = 2 ** bits - 1;
  const scale = (max - min) / levels;
  const zero = Math.min(levels, Math.max(0, Math.round(-min / scale)));
  // tf.round rounds halves to even.
  const round = (x: number) => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));
  return (v) => v.map((x) => scale * (Math.min(levels, Math.max(0, round(x / scale) + zero)) - zero));
}

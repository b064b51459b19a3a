/**
 * Activation simulation on a graph model: which nodes are quantized (once per fused chain), the rewritten
 * graph computing FakeQuant's formula exactly, calibration ranges equal to the observed ones, and the
 * error falling as the bits grow. The graph fixture: Conv2D → BiasAdd → Relu → Reshape → MatMul → BiasAdd
 * → Relu → _FusedMatMul(+bias) → Identity.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { FakeQuant } from '../../src/quant/fake-quant-layer.js';
import { loadRunnable } from '../../src/model/load.js';
import type { FileSet } from '../../src/model/types.js';
import { affineRange, type ActivationRange } from '../../src/quant/activations.js';
import {
  activationNodes,
  calibrateGraphActivations,
  withFakeQuantGraphActivations,
} from '../../src/quant/graph-activations.js';
import { buildGraphModel, graphInput } from '../fixtures/models.js';

let files: FileSet;

beforeAll(async () => {
  await tf.setBackend('cpu');
  files = buildGraphModel();
});

/** Calibration reads x only; y is a placeholder the batch type asks for. */
async function* batchesOf(x: tf.Tensor, y: tf.Tensor) {
  yield { x, y };
}

function run(modelFiles: FileSet, x: tf.Tensor): Promise<Float32Array> {
  return loadRunnable(modelFiles).then(async (model) => {
    const output = model.predict(x) as tf.Tensor;
    const values = (await output.data()) as Float32Array;
    output.dispose();
    model.dispose();
    return values;
  });
}

describe('activationNodes', () => {
  it('takes the last op of each fused chain: after each Relu and the logits, not Conv2D, MatMul or BiasAdd', () => {
    expect(activationNodes(files)).toEqual(['conv/Relu', 'dense/Relu', 'logits/BiasAdd']);
  });
});

describe('withFakeQuantGraphActivations', () => {
  it('computes s·(clamp(round(x/s) + z, 0, 2^b − 1) − z) on the logits, as the FakeQuant layer does', async () => {
    const x = graphInput(16);
    const float = await run(files, x);
    const [low, high] = [Math.min(...float) * 0.6, Math.max(...float) * 0.6];
    const range: ActivationRange = {
      layer: 'logits/BiasAdd',
      bits: 4,
      calibration: 'minmax',
      ...affineRange(low, high, 4),
    };
    const simulated = await run(withFakeQuantGraphActivations(files, [range]), x);
    const layer = new FakeQuant({ scale: range.scale, zeroPoint: range.zeroPoint, bits: 4 });
    const expected = tf.tidy(() => layer.apply(tf.tensor(float)) as tf.Tensor).dataSync();
    for (let i = 0; i < float.length; i++) expect(simulated[i]).toBeCloseTo(expected[i], 5);
    // 4 bits and a clipped range: the values sit on at most 16 levels, and the ends are clipped.
    expect(new Set(Array.from(simulated, (v) => Math.round(v / range.scale))).size).toBeLessThanOrEqual(16);
    expect(Math.max(...simulated)).toBeLessThanOrEqual(range.max + 1e-6);
    x.dispose();
  });

  it('moves a signature output that is quantized to the fake-quant node', async () => {
    // The fixture without its Identity: the signature names logits/BiasAdd itself.
    const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    json.modelTopology.node = json.modelTopology.node.filter((node: { name: string }) => node.name !== 'output');
    json.signature.outputs = { 'logits:0': { ...json.signature.outputs['output:0'], name: 'logits/BiasAdd:0' } };
    const direct = new Map(files).set('model.json', new TextEncoder().encode(JSON.stringify(json)));
    const range: ActivationRange = {
      layer: 'logits/BiasAdd',
      bits: 2,
      calibration: 'minmax',
      ...affineRange(-1, 1, 2),
    };
    const rewritten = withFakeQuantGraphActivations(direct, [range]);
    const signature = JSON.parse(new TextDecoder().decode(rewritten.get('model.json'))).signature;
    expect(signature.outputs['logits:0'].name).toBe('logits/BiasAdd/fake_quant:0');
    const x = graphInput(8);
    // 2 bits over [-1, 1] widened to hold 0: every output is one of four grid points.
    const levels = new Set(Array.from(await run(rewritten, x), (v) => Math.round(v / range.scale)));
    expect(levels.size).toBeLessThanOrEqual(4);
    expect([...levels].every((q) => q >= -range.zeroPoint && q <= 3 - range.zeroPoint)).toBe(true);
    x.dispose();
  });

  it('leaves the graph unchanged without ranges', () => {
    expect(withFakeQuantGraphActivations(files, [])).toBe(files);
  });
});

describe('calibrateGraphActivations', () => {
  it('observes each node over the batches (minmax = the observed range with 0 in it) and leaks no tensor', async () => {
    const model = (await loadRunnable(files)) as tf.GraphModel;
    const x = graphInput(32, 11);
    const y = tf.zeros([32]);
    const before = tf.memory().numTensors;
    const ranges = await calibrateGraphActivations(model, files, batchesOf(x, y), { bits: 8, calibration: 'minmax' });
    expect(tf.memory().numTensors).toBe(before);
    expect(ranges.map((r) => r.layer)).toEqual(['conv/Relu', 'dense/Relu', 'logits/BiasAdd']);
    const logitsTensor = model.execute(x, 'logits/BiasAdd') as tf.Tensor;
    const logits = logitsTensor.dataSync();
    logitsTensor.dispose();
    const expected = affineRange(Math.min(...logits), Math.max(...logits), 8);
    expect(ranges[2].min).toBeCloseTo(expected.min, 6);
    expect(ranges[2].max).toBeCloseTo(expected.max, 6);
    expect(ranges[2].scale).toBeCloseTo(expected.scale, 9);
    expect(ranges[0].min).toBe(0);

    const error = async (bits: number) => {
      const calibrated = await calibrateGraphActivations(model, files, batchesOf(x, y), {
        bits,
        calibration: 'minmax',
      });
      const [float, simulated] = [await run(files, x), await run(withFakeQuantGraphActivations(files, calibrated), x)];
      return Math.max(...float.map((v, i) => Math.abs(v - simulated[i])));
    };
    const [e4, e8, e16] = [await error(4), await error(8), await error(16)];
    expect(e16).toBeLessThan(1e-3);
    expect(e8).toBeLessThan(e4);
    expect(e16).toBeLessThan(e8);
    tf.dispose([x, y]);
    model.dispose();
  });
});

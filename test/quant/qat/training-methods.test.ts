/**
 * The training methods' formulas on tiny tensors worked out by hand (LAB's α, TTQ's scale gradients, INQ's
 * partition order and levels, ADMM's W-step gradient, DoReFa's grid and gradient quantizer, PACT's α
 * gradient), and the job spec's rules for them.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec, SpecError } from '../../../src/jobs/spec.js';
import { selectBackend } from '../../../src/model/backend.js';
import { pow2 } from '../../../src/quant/methods/pow2.js';
import { reluOutputLayers, withTrainedActivationQuantizers } from '../../../src/quant/qat/activation-layers.js';
import { admmGradient } from '../../../src/quant/qat/admm.js';
import { DoReFaActivation, dorefaGrid, quantizeGradient } from '../../../src/quant/qat/dorefa.js';
import { inqPartition, inqStepAt, nearestPow2Code } from '../../../src/quant/qat/inq.js';
import type { StepContext } from '../../../src/quant/qat/kernel.js';
import { binaryTensor, LabKernel, labScales } from '../../../src/quant/qat/lab.js';
import { parseAnyMethodParams, type LabParams, type TtqParams } from '../../../src/quant/qat/methods.js';
import { PactActivation, pactGradients, pactGrid, pactPenalty } from '../../../src/quant/qat/pact.js';
import { ttqCodes, TtqKernel, ttqScaleGradients, ttqThresholds } from '../../../src/quant/qat/ttq.js';
import { createRng } from '../../../src/quant/rng.js';
import { buildSmallCnn } from '../../fixtures/tasks.js';

beforeAll(async () => {
  await selectBackend('cpu');
});

function context(secondMoment?: Float32Array, learningRate = 0.1): StepContext {
  return { step: 1, learningRate, rng: createRng(0), secondMoment: () => secondMoment };
}

function close(actual: ArrayLike<number>, expected: number[], digits = 6): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((value, i) => expect(actual[i]).toBeCloseTo(value, digits));
}

describe('lab: α = ‖d⊙w‖₁ / ‖d‖₁', () => {
  const w = Float32Array.of(1, -2, 3, -4);
  it('per tensor with d = (4, 3, 2, 1): (4 + 6 + 6 + 4)/10 = 2; without d the mean |w| = 2.5', () => {
    close(labScales(w, [4, 3, 2, 1], 1), [2]);
    close(labScales(w, undefined, 1), [2.5]);
  });
  it('per channel of [2, 2]: (4·1 + 2·3)/6 = 5/3 and (3·2 + 1·4)/4 = 2.5', () => {
    close(labScales(w, [4, 3, 2, 1], 2), [5 / 3, 2.5]);
  });
  it('the kernel takes d = √v̂ + ε from Adam and exports ±α codes (sign(0) = +1)', () => {
    const kernel = new LabKernel({ name: 'lab', granularity: 'per-tensor', seed: 0 } as LabParams, {
      shape: [4],
      ste: 'identity',
    });
    const shadow = Float32Array.of(1, -2, 0, -4);
    const result = kernel.result(shadow, context(Float32Array.of(16, 9, 4, 1)));
    // d = (4, 3, 2, 1): (4 + 6 + 0 + 4)/10 = 1.4
    close(result.dequantized, [1.4, -1.4, 1.4, -1.4]);
    expect(Array.from(result.codes)).toEqual([1, 0, 1, 0]);
    expect(result.encoding).toMatchObject({ kind: 'codebook', bits: 1, channels: 1 });
    expect(result.tfjsEncoding).toEqual({ dtype: 'uint8', min: -Math.fround(1.4), scale: 2 * Math.fround(1.4) });
    expect(Array.from(binaryTensor(shadow, Float32Array.of(2)).dequantized)).toEqual([2, -2, 2, -2]);
  });
});

describe('ttq: Δ = t·max|w|, learned Wp and Wn', () => {
  const w = Float32Array.of(0.5, -1, 0.02, 0.3, -0.04);
  it('codes with t = 0.05 (Δ = 0.05): 2, 0, 1, 2, 1', () => {
    const thresholds = ttqThresholds(w, 1, 0.05);
    close(thresholds, [0.05]);
    expect(Array.from(ttqCodes(w, thresholds))).toEqual([2, 0, 1, 2, 1]);
  });
  it('∂L/∂Wp = Σ_Ip g = 0.1 + 0.4, ∂L/∂Wn = −Σ_In g = 0.2 + 0.5', () => {
    const g = Float32Array.of(0.1, -0.2, 0.3, 0.4, -0.5);
    close(ttqScaleGradients(g, Uint8Array.of(2, 0, 1, 2, 0), 1), [0.5, 0.7]);
  });
  it('one step: scales start at the mean |w| of each side, the shadow gradient is scaled by them, Adam moves each by η', () => {
    const kernel = new TtqKernel(
      { name: 'ttq', granularity: 'per-tensor', thresholdFactor: 0.05, seed: 0 } as TtqParams,
      {
        shape: [5],
        ste: 'identity',
      },
    );
    const { weights } = kernel.forward(w);
    // Wp = (0.5 + 0.3)/2 = 0.4, Wn = 1 (the only weight below −Δ).
    close(weights, [0.4, -1, 0, 0.4, 0]);
    const g = Float32Array.of(0.1, -0.2, 0.3, 0.4, -0.5);
    const shadowGradient = kernel.backward(g, w, context(undefined, 0.01));
    close(shadowGradient, [0.04, -0.2, 0.3, 0.16, -0.5]);
    // Adam's first step is η·sign(gradient): Wp = 0.4 − 0.01 (∂L/∂Wp = 0.5 > 0), Wn = 1 − 0.01 (0.2 > 0).
    close(kernel.learnedScales, [0.39, 0.99]);
    const { encoding } = kernel.result(w);
    close(encoding.kind === 'codebook' ? encoding.codebook : [], [-0.99, 0, 0.39, 0]);
  });
});

describe('inq: partition by magnitude, pow2 levels', () => {
  it('freezes the largest |w| first, ties by index; then the next largest of the float rest', () => {
    const w = Float32Array.of(0.1, -0.9, 0.5, -0.5, 0.3, 0.05);
    const frozen = new Uint8Array(6);
    const first = inqPartition(w, frozen, Math.round(0.5 * 6));
    expect(Array.from(first)).toEqual([1, 2, 3]);
    for (const i of first) frozen[i] = 1;
    expect(Array.from(inqPartition(w, frozen, Math.round(0.75 * 6)))).toEqual([4, 0]);
    expect(Array.from(inqPartition(w, frozen, 3))).toEqual([]);
  });
  it('the nearest level is the pow2 module’s own choice, weight by weight', () => {
    const rng = createRng(5);
    const w = Float32Array.from({ length: 400 }, () => (rng.next() - 0.5) * 0.8);
    for (const bits of [3, 5]) {
      const reference = pow2.quantize(w, [400], { name: 'pow2', bits, rounding: 'nearest', seed: 0 }, rng);
      const codebook = (reference.encoding as { codebook: Float32Array }).codebook;
      expect(Array.from(w, (x) => nearestPow2Code(x, codebook, bits))).toEqual(Array.from(reference.codes));
    }
  });
  it('epochs are split evenly over the steps before the last: 6 epochs, 4 steps → 0 0 1 1 2 2', () => {
    expect([0, 1, 2, 3, 4, 5].map((e) => inqStepAt(e, 6, 4))).toEqual([0, 0, 1, 1, 2, 2]);
    expect([0, 1].map((e) => inqStepAt(e, 2, 1))).toEqual([0, 0]);
  });
});

describe('admm: the W-step gradient', () => {
  it('g + ρ(W − G + λ)', () => {
    const g = Float32Array.of(0.1, -0.1);
    close(
      admmGradient(g, Float32Array.of(0.5, -0.2), Float32Array.of(0.4, 0), Float32Array.of(0.1, -0.3), 2),
      [0.5, -1.1],
    );
  });
});

describe('dorefa', () => {
  it('2 bits: round(3·clip(x, 0, 1))/3, the STE passes the gradient on [0, 1] only', () => {
    const x = tf.tensor1d([-0.5, 0.1, 0.2, 0.5, 0.9, 1.7]);
    close(dorefaGrid(x, 2).dataSync(), [0, 0, 1 / 3, 2 / 3, 1, 1]);
    const layer = new DoReFaActivation({ bits: 2 });
    const grad = tf.grad((input: tf.Tensor) => tf.sum(layer.apply(input) as tf.Tensor))(x);
    close(grad.dataSync(), [0, 1, 1, 1, 1, 0]);
    tf.dispose([x, grad]);
  });
  it('stochastic 2-bit gradients sit on the grid ±max|dr|/3, ±max|dr| and are unbiased', () => {
    const values = new Float32Array(20000).fill(0.3);
    values[0] = 1;
    const dy = tf.tensor2d(values, [1, 20000]);
    const quantized = quantizeGradient(dy, 2, 7);
    const q = quantized.dataSync();
    const levels = new Set(Array.from(q.subarray(1), (v) => Math.round(v * 3000) / 1000));
    expect([...levels].sort()).toEqual([-1, 1]);
    let mean = 0;
    for (let i = 1; i < q.length; i++) mean += q[i] / (q.length - 1);
    // 3·(0.3/2 + 1/2) = 1.95: level 2 (+1/3) with probability 0.95, level 1 (−1/3) with 0.05 → mean 0.3.
    expect(mean).toBeCloseTo(0.3, 2);
    expect(q[0]).toBeCloseTo(1, 6);
    tf.dispose([dy, quantized]);
  });
});

describe('pact', () => {
  it('leaks no tensors through a training step of the layer', () => {
    const layer = new PactActivation({ bits: 3, alpha: 1, gradientBits: 4 });
    layer.build();
    const x = tf.tensor2d([[-1, 0.2, 0.7, 2]]);
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => tf.sum(layer.apply(x) as tf.Tensor) as tf.Scalar, [layer.alpha]);
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, layer.alpha]);
  });
  it('2 bits, α = 3: round(clip(x, 0, α)·3/α)·α/3', () => {
    const x = tf.tensor1d([-1, 0.4, 1.6, 2.5, 7]);
    const alpha = tf.scalar(3);
    close(pactGrid(x, alpha, 2).dataSync(), [0, 0, 2, 2, 3]);
    tf.dispose([x, alpha]);
  });
  it('∂/∂x = 1 on [0, α), ∂/∂α = Σ dy over x ≥ α; through the layer as well', () => {
    const x = tf.tensor1d([-1, 0.5, 2, 3]);
    const dy = tf.tensor1d([0.1, 0.2, 0.3, 0.4]);
    const alpha = tf.scalar(2);
    const [dx, dAlpha] = pactGradients(dy, x, alpha);
    close(dx.dataSync(), [0, 0.2, 0, 0]);
    close(dAlpha.dataSync(), [0.7]);
    const layer = new PactActivation({ bits: 4, alpha: 2 });
    layer.build();
    const { value, grads } = tf.variableGrads(
      () => tf.sum(tf.mul(layer.apply(x) as tf.Tensor, dy)) as tf.Scalar,
      [layer.alpha],
    );
    close(grads[layer.alpha.name].dataSync(), [0.7]);
    const penalty = tf.variableGrads(() => pactPenalty([layer], 0.01), [layer.alpha]);
    // d(λα²)/dα = 2·0.01·2
    close(penalty.grads[layer.alpha.name].dataSync(), [0.04]);
    tf.dispose([
      x,
      dy,
      alpha,
      dx,
      dAlpha,
      value,
      penalty.value,
      ...Object.values(grads),
      ...Object.values(penalty.grads),
    ]);
    layer.alpha.dispose();
  });
  it('inserts a quantizer after each ReLU output and keeps the weights', async () => {
    const model = buildSmallCnn([12, 12, 1], 10, 1);
    expect(reluOutputLayers(model)).toEqual(['relu1', 'depthwise', 'pointwise']);
    const trained = await withTrainedActivationQuantizers(model, { quantizer: 'pact', bits: 4, alpha: 5 });
    expect([...trained.inserted.values()]).toEqual(['relu1_pact', 'depthwise_pact', 'pointwise_pact']);
    expect(trained.model.getLayer('pool1').inboundNodes[0].inboundLayers[0].name).toBe('relu1_pact');
    expect(trained.model.trainableWeights.map((w) => w.originalName)).toContain('depthwise_pact/alpha');
    const kernel = (m: tf.LayersModel) => m.getLayer('conv1').getWeights()[0].dataSync();
    expect(Array.from(kernel(trained.model))).toEqual(Array.from(kernel(model)));
    trained.model.dispose();
    model.dispose();
  });
});

describe('job spec', () => {
  const base = { kind: 'qat', data: { training: 'ds' } };
  function problems(spec: unknown): string {
    try {
      parseJobSpec(spec);
    } catch (error) {
      if (error instanceof SpecError) return error.message;
      throw error;
    }
    return '';
  }
  it('fills every default of the training methods and activations', () => {
    const spec = parseJobSpec({ ...base, method: { name: 'inq' }, activations: { quantizer: 'pact', bits: 4 } });
    expect(spec.method).toEqual({ name: 'inq', bits: 5, steps: [0.5, 0.75, 0.875, 1], seed: 0 });
    expect(spec.activations).toMatchObject({
      quantizer: 'pact',
      bits: 4,
      gradientBits: 32,
      alpha: 6,
      alphaDecay: 1e-4,
    });
    expect(parseAnyMethodParams({ name: 'admm' })).toEqual({
      name: 'admm',
      projection: 'ternary',
      rho: 0.1,
      rhoGrowth: 1.5,
      interval: 20,
      seed: 0,
    });
    expect(parseJobSpec({ ...base, method: { name: 'ttq' } }).method).toEqual({
      name: 'ttq',
      granularity: 'per-tensor',
      thresholdFactor: 0.05,
      seed: 0,
    });
  });
  it('is 400 with the allowed values', () => {
    expect(problems({ method: { name: 'lab' } })).toContain('"lab" is a training method: it needs kind "qat"');
    expect(problems({ ...base, method: { name: 'nope' } })).toContain(
      'allowed: affine, float16, binary, ternary, pow2, kmeans, pq (and, with kind "qat", lab, admm, inq, ttq)',
    );
    expect(problems({ method: { name: 'nope' } })).toMatch(
      /allowed: affine, float16, binary, ternary, pow2, kmeans, pq$/,
    );
    expect(problems({ ...base, method: { name: 'lab' }, qat: { optimizer: 'sgd' } })).toContain(
      'optimizer must be "adam"',
    );
    expect(problems({ ...base, method: { name: 'inq', steps: [0.5, 0.9] } })).toContain(
      '/method/steps: steps must increase and end at 1',
    );
    expect(problems({ ...base, method: { name: 'admm', projection: 'kmeans' } })).toContain(
      'allowed: binary, ternary, pow2, affine',
    );
    expect(problems({ ...base, method: { name: 'admm', projection: { name: 'affine', bits: 1 } } })).toContain(
      '/method/projection/bits',
    );
    expect(problems({ method: { name: 'binary' }, activations: { quantizer: 'dorefa' } })).toContain(
      'they need kind "qat"',
    );
    expect(problems({ ...base, method: { name: 'binary' }, activations: { quantizer: 'pact' } })).toBe('');
  });
});

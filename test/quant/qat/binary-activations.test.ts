import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { BinaryActivation, binarize, withBinaryActivations } from '../../../src/quant/qat/binary-activations.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('binary and ternary activations', () => {
  it('sign: α·sign(x) with α = mean|x| over one sample of a flat tensor', () => {
    // mean(|1|, |−2|, |3|, |−6|) = 3
    const { value, alpha } = binarize(tf.tensor2d([[1, -2, 3, -6]]), 'sign');
    expect(Array.from(value.dataSync())).toEqual([3, -3, 3, -3]);
    expect(Array.from(alpha.dataSync())).toEqual([3]);
    tf.dispose([value, alpha]);
  });

  it('sign: α over the channels at each position of a feature map (XNOR-Net’s A), sign(0) = +1', () => {
    // Position 0: channels (1, −3) → α = 2; position 1: (0, −0.5) → α = 0.25.
    const { value } = binarize(tf.tensor4d([1, -3, 0, -0.5], [1, 1, 2, 2]), 'sign');
    expect(Array.from(value.dataSync())).toEqual([2, -2, 0.25, -0.25]);
    value.dispose();
  });

  it('ternary: Δ = 0.7·mean|x|, α = mean |x| above Δ', () => {
    // mean|x| = (0.1 + 2 + 3 + 0.5)/4 = 1.4, Δ = 0.98: −2 and 3 are kept, α = 2.5.
    const { value } = binarize(tf.tensor2d([[0.1, -2, 3, -0.5]]), 'ternary');
    const values = Array.from(value.dataSync());
    expect(values[0]).toBeCloseTo(0, 12);
    expect(values[1]).toBeCloseTo(-2.5, 6);
    expect(values[2]).toBeCloseTo(2.5, 6);
    expect(values[3]).toBeCloseTo(0, 12);
    value.dispose();
  });

  it('passes the gradient straight through where |x| ≤ α and stops it outside (clipped STE)', () => {
    const layer = new BinaryActivation({ mode: 'sign' });
    const x = tf.tensor2d([[1, -2, 3, -6]]);
    // α = 3: |−6| > 3 gets no gradient.
    const gradient = tf.grad((input: tf.Tensor) => tf.sum(layer.apply(input) as tf.Tensor))(x);
    expect(Array.from(gradient.dataSync())).toEqual([1, 1, 1, 0]);
    tf.dispose([x, gradient]);
  });
});

describe('withBinaryActivations', () => {
  it('puts the binarizer where each ReLU was, on the pre-activation (ReLU layers, activation "relu" and "relu6")', async () => {
    const input = tf.input({ shape: [4] });
    const seeded = (seed: number) => tf.initializers.randomNormal({ seed, stddev: 1 });
    const dense = (units: number, name: string, seed: number, activation?: 'relu' | 'relu6') =>
      tf.layers.dense({ units, name, activation, kernelInitializer: seeded(seed), biasInitializer: seeded(seed + 10) });
    let h = dense(3, 'd1', 1, 'relu').apply(input) as tf.SymbolicTensor;
    h = dense(4, 'd2', 2).apply(h) as tf.SymbolicTensor;
    h = tf.layers.reLU({ name: 'r1' }).apply(h) as tf.SymbolicTensor;
    h = dense(3, 'd3', 3, 'relu6').apply(h) as tf.SymbolicTensor;
    const output = dense(2, 'out', 4).apply(h) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: output });
    const { model: binarized, layers } = await withBinaryActivations(model, 'sign');
    expect(layers).toEqual(['d1', 'r1', 'd3']);
    const x = tf.tensor2d([
      [0.5, -1, 2, 0.1],
      [-0.3, 0.8, -1.5, 1],
    ]);
    const affine = (v: tf.Tensor, name: string) => {
      const [kernel, bias] = model.getLayer(name).getWeights();
      return tf.add(tf.matMul(v as tf.Tensor2D, kernel as tf.Tensor2D), bias);
    };
    const sign = (v: tf.Tensor) => {
      const { value, alpha } = binarize(v, 'sign');
      alpha.dispose();
      return value;
    };
    const expected = tf.tidy(() => {
      const h1 = sign(affine(x, 'd1'));
      const h2 = sign(affine(h1, 'd2'));
      const h3 = sign(affine(h2, 'd3'));
      return affine(h3, 'out');
    });
    const actual = binarized.predict(x) as tf.Tensor;
    const [want, got] = [Array.from(expected.dataSync()), Array.from(actual.dataSync())];
    got.forEach((value, i) => expect(value).toBeCloseTo(want[i], 5));
    // A sign of ReLU outputs would be +1 everywhere; pre-activations of both signs reach the next layer.
    const firstSigns = tf.tidy(() => tf.sign(affine(x, 'd1')).dataSync());
    expect(new Set(firstSigns)).toEqual(new Set([1, -1]));
    tf.dispose([x, expected, actual]);
    binarized.dispose();
    model.dispose();
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { BinaryActivation, binarize } from '../../../src/quant/qat/binary-activations.js';

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

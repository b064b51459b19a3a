import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { backendName, selectBackend, type BackendPreference } from '../../src/model/backend.js';

describe('selectBackend', () => {
  it("'auto' picks wasm here (tfjs-node is not installed) and registers the missing gradient kernels", async () => {
    expect(await selectBackend('auto')).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(backendName()).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
    // The wasm binary really runs: a 2×2 matMul worked out by hand.
    const product = tf.matMul(
      tf.tensor2d([
        [1, 2],
        [3, 4],
      ]),
      tf.tensor2d([
        [5, 6],
        [7, 8],
      ]),
    );
    expect(Array.from(await product.data())).toEqual([19, 22, 43, 50]);
    product.dispose();
  });

  it('is idempotent and cheap the second time', async () => {
    const start = performance.now();
    expect(await selectBackend()).toBe('wasm');
    expect(await selectBackend('wasm')).toBe('wasm');
    expect(performance.now() - start).toBeLessThan(50);
  });

  it("forcing 'cpu' switches to it, and 'auto' switches back", async () => {
    expect(await selectBackend('cpu')).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(backendName()).toBe('cpu');
    expect(await selectBackend('auto')).toBe('wasm');
    expect(backendName()).toBe('wasm');
  });

  it('forcing an unavailable or unknown backend throws an Error naming it and keeps the active one', async () => {
    await expect(selectBackend('tensorflow')).rejects.toThrow(/backend 'tensorflow' cannot load/);
    await expect(selectBackend('webgpu' as BackendPreference)).rejects.toThrow(/unknown tfjs backend 'webgpu'/);
    expect(backendName()).toBe('wasm');
  });
});

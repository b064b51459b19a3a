import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import type { JobReport } from '../../src/pipeline/types.js';
import { tensorError } from '../../src/quant/metrics.js';
import { buildMobileNetLikeModel, loadStockLayers, MOBILENET_CLASSES, mobileNetInput } from '../fixtures/models.js';

function modelFiles(files: FileSet): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith('model/')).map(([path, bytes]) => [path.slice(6), bytes]),
  );
}

function shardBytes(files: FileSet): number {
  return [...files].filter(([path]) => path.endsWith('.bin')).reduce((sum, [, bytes]) => sum + bytes.byteLength, 0);
}

let source: FileSet;
let reference: Float32Array;

beforeAll(async () => {
  await tf.setBackend('wasm');
  source = await buildMobileNetLikeModel();
  const float = await loadStockLayers(source);
  const input = mobileNetInput(32);
  const output = float.predict(input) as tf.Tensor;
  reference = output.dataSync() as Float32Array;
  output.dispose();
  input.dispose();
  float.dispose();
});

/** Quantizes with `spec`, loads `model/` with stock tfjs, returns its output cosine vs float and its bytes. */
async function measure(spec: Record<string, unknown>): Promise<{ cosine: number; ratio: number; report: JobReport }> {
  const { files, report } = await runJob(readModel(source), parseJobSpec(spec), {}, { backend: 'wasm' });
  const stock = await loadStockLayers(modelFiles(files));
  const input = mobileNetInput(32);
  const output = stock.predict(input) as tf.Tensor;
  const { cosine } = tensorError(reference, output.dataSync() as Float32Array);
  output.dispose();
  input.dispose();
  stock.dispose();
  return { cosine, ratio: shardBytes(modelFiles(files)) / shardBytes(source), report };
}

describe('BatchNorm scale kept out of the kernel (ptq.equalize), on a MobileNetV2-shaped model', () => {
  const perTensor8 = { name: 'affine', bits: 8 };

  it('a plain fold collapses per-tensor 8-bit; by default the stock model/ keeps cosine ≥ 0.999 at ≤ 0.27× the bytes', async () => {
    const folded = await measure({ method: perTensor8, ptq: { equalize: false } });
    const unfolded = await measure({ method: perTensor8, foldBatchNorm: false });
    const equalized = await measure({ method: perTensor8 });
    console.log(
      `per-tensor 8-bit: plain fold cosine ${folded.cosine.toFixed(4)} (${folded.ratio.toFixed(3)}×), ` +
        `unfolded ${unfolded.cosine.toFixed(4)} (${unfolded.ratio.toFixed(3)}×), ` +
        `default (fold + scale kept) ${equalized.cosine.toFixed(4)} (${equalized.ratio.toFixed(3)}×)`,
    );
    expect(folded.cosine).toBeLessThan(0.95);
    expect(equalized.cosine).toBeGreaterThanOrEqual(0.999);
    expect(equalized.ratio).toBeLessThanOrEqual(0.27);
    // Not folding keeps the same precision but ships every BatchNorm's four float32 vectors.
    expect(unfolded.cosine).toBeGreaterThanOrEqual(0.999);
    expect(unfolded.ratio).toBeGreaterThan(equalized.ratio);
    // Every kernel is stored as uint8 and every BatchNorm is kept as a scale whose kernel channels share a range.
    const { report } = equalized;
    expect(report.tensors.every((t) => t.storedAs === 'uint8')).toBe(true);
    expect(report.batchNorm!.scaled.map((s) => s.batchNorm)).toEqual([
      'stem_bn',
      'expand_bn',
      'depthwise_bn',
      'project_bn',
      'head_bn',
    ]);
    for (const pair of report.batchNorm!.scaled) {
      expect(pair.rangeRatioBefore).toBeGreaterThan(20);
      expect(pair.rangeRatioAfter).toBeLessThan(1.001);
    }
    expect(report.equalization).toHaveLength(5);
    expect(report.tensors.find((t) => t.name === 'depthwise/depthwise_kernel')!.channelScaleIn).toBe('depthwise_bn');
  });

  it('a per-channel method on equalized kernels is stored as uint8 at per-channel quality', async () => {
    const perChannel = await measure({ method: { ...perTensor8, granularity: 'per-channel' } });
    const plain = await measure({ method: { ...perTensor8, granularity: 'per-channel' }, ptq: { equalize: false } });
    expect(perChannel.cosine).toBeGreaterThanOrEqual(0.999);
    const withScale = perChannel.report.tensors.filter((t) => t.channelScaleIn !== undefined);
    expect(withScale).toHaveLength(5);
    expect(withScale.every((t) => t.storedAs === 'uint8' && t.channels === 1)).toBe(true);
    // The logits have no BatchNorm to hold their scales: they keep one grid per channel.
    expect(perChannel.report.tensors.find((t) => t.name === 'logits/kernel')!.channels).toBe(MOBILENET_CLASSES);
    expect(plain.report.tensors.every((t) => t.channels > 1)).toBe(true);
    // uint8 kernels (with the logits' per-channel grids) against per-channel values that only float16 holds.
    expect(perChannel.ratio).toBeLessThanOrEqual(0.3);
    expect(plain.report.tensors.filter((t) => t.name.endsWith('kernel')).every((t) => t.storedAs === 'float16')).toBe(
      true,
    );
    expect(plain.ratio).toBeGreaterThan(0.45);
  });
});

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import { runPtq, type PtqResult } from '../../src/pipeline/ptq.js';
import { encodeFloat16, halfToFloat } from '../../src/quant/float16.js';
import { tensorError } from '../../src/quant/metrics.js';
import { decodePacked } from '../../src/quant/packed/decoder.js';
import {
  buildDepthwiseGraphModel,
  buildGraphModel,
  buildLayersModel,
  depthwiseGraphInput,
  graphInput,
  GRAPH_QUANTIZABLE,
  LAYERS_QUANTIZABLE,
  layersInput,
  loadStockGraph,
  loadStockLayers,
} from '../fixtures/models.js';

/** Every method, and the manifest dtype its kernels must be stored as in `model/`. */
const configs: { method: Record<string, unknown>; storedAs: string }[] = [
  { method: { name: 'affine', bits: 8 }, storedAs: 'uint8' },
  { method: { name: 'affine', bits: 12, symmetric: true }, storedAs: 'uint16' },
  { method: { name: 'affine', bits: 4, granularity: 'per-channel', range: 'mse' }, storedAs: 'float16' },
  {
    method: { name: 'affine', bits: 6, rounding: 'stochastic', range: 'percentile', percentile: 99 },
    storedAs: 'uint8',
  },
  { method: { name: 'float16' }, storedAs: 'float16' },
  { method: { name: 'binary' }, storedAs: 'uint8' },
  { method: { name: 'binary', granularity: 'per-channel', stochastic: true }, storedAs: 'float16' },
  { method: { name: 'ternary' }, storedAs: 'uint8' },
  { method: { name: 'pow2', bits: 4 }, storedAs: 'float16' },
  { method: { name: 'kmeans', bits: 3, init: 'kmeans++' }, storedAs: 'float16' },
  { method: { name: 'pq', bits: 3, subvectorLength: 2 }, storedAs: 'float16' },
  { method: { name: 'pq', bits: 3, subvectorLength: 2, codebooks: 'shared' }, storedAs: 'float16' },
];

/** Bit for bit, except where model/ rounded values to float16 (≤ 1% more error per tensor): then closely. */
function expectSameOutputs(stock: ArrayLike<number>, packed: ArrayLike<number>, storedAs: string): void {
  if (storedAs !== 'float16') {
    expect(Array.from(packed)).toEqual(Array.from(stock));
    return;
  }
  const scale = Math.max(...Array.from(packed, Math.abs));
  for (let i = 0; i < stock.length; i++) expect(Math.abs(stock[i] - packed[i])).toBeLessThan(0.01 * scale);
}

function halves(values: Float32Array): Float32Array {
  return Float32Array.from(encodeFloat16(values), halfToFloat);
}

function subtree(files: FileSet, prefix: string): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith(prefix)).map(([path, bytes]) => [path.slice(prefix.length), bytes]),
  );
}

function json(bytes: Uint8Array | undefined): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
}

function weightValues(model: tf.LayersModel | tf.GraphModel): Map<string, Float32Array> {
  if (model instanceof tf.GraphModel) {
    return new Map(Object.entries(model.weights).map(([name, [t]]) => [name, t.dataSync() as Float32Array]));
  }
  // Layers weights are named `<layer>/<weight>` in the manifest; tfjs's originalName carries the same.
  return new Map(model.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
}

async function runMethod(
  files: FileSet,
  method: Record<string, unknown>,
): Promise<{ model: LoadedModel; result: PtqResult }> {
  const model = readModel(files);
  const result = await runPtq(model, parseJobSpec({ method, output: { shardSizeBytes: 2048 } }), {
    backend: tf.getBackend(),
  });
  return { model, result };
}

beforeAll(async () => {
  await tf.setBackend('wasm');
});

describe.each(configs)('PTQ with $method.name $method', ({ method, storedAs }) => {
  it('writes a layers model that stock tfjs loads, equal to the packed form and the report', async () => {
    const source = await buildLayersModel({ shardSizeBytes: 1500 });
    const { model, result } = await runMethod(source, method);
    const { files, report } = result;

    expect(report.tensors.map((t) => t.name)).toEqual(LAYERS_QUANTIZABLE);
    for (const tensor of report.tensors) expect(tensor.storedAs, tensor.name).toBe(storedAs);

    const stock = await loadStockLayers(subtree(files, 'model/'));
    const packedArtifacts = decodePacked(json(files.get('packed/manifest.json')), files.get('packed/weights.bin')!);
    const fromPacked = await tf.loadLayersModel(tf.io.fromMemory(packedArtifacts as tf.io.ModelArtifacts));
    const stockWeights = weightValues(stock);
    const packedWeights = weightValues(fromPacked);
    const original = new Map(model.weights.map((w) => [w.name, w.values as Float32Array]));

    for (const [name, values] of stockWeights) {
      // model/ holds the packed values, rounded to float16 where that adds ≤ 1% to the method's error.
      const packed = packedWeights.get(name)!;
      const tensor = report.tensors.find((t) => t.name === name);
      expect(tensor && storedAs === 'float16' ? halves(packed) : packed, name).toEqual(values);
      if (tensor) {
        // The report measures exactly the artifact users download.
        const measured = tensorError(original.get(name)!, values);
        expect(tensor.mse).toBeCloseTo(measured.mse, 12);
        expect(tensor.maxAbsError).toBeCloseTo(measured.maxAbsError, 6);
      } else {
        expect(values, `${name} is not quantized`).toEqual(original.get(name));
      }
    }

    const input = layersInput(8);
    const stockOut = (stock.predict(input) as tf.Tensor).dataSync();
    const packedOut = (fromPacked.predict(input) as tf.Tensor).dataSync();
    expectSameOutputs(stockOut, packedOut, storedAs);
    // The fixture is tiny, so its manifest (the whole topology) outweighs the codes: compare the codes,
    // except for pq, whose per-block codebooks cost more than small kernels save.
    if (method.name !== 'pq')
      expect(files.get('packed/weights.bin')!.byteLength).toBeLessThan(report.model.bytesBefore);
    expect(report.model.backend).toBe('wasm');
    input.dispose();
    stock.dispose();
    fromPacked.dispose();
  });

  it('writes a graph model that stock tfjs loads and runs, equal to the packed form', async () => {
    const { result } = await runMethod(buildGraphModel(), method);
    const { files, report } = result;
    expect(report.tensors.map((t) => t.name).sort()).toEqual([...GRAPH_QUANTIZABLE].sort());

    const stock = await loadStockGraph(subtree(files, 'model/'));
    const packedArtifacts = decodePacked(json(files.get('packed/manifest.json')), files.get('packed/weights.bin')!);
    const fromPacked = await tf.loadGraphModel(tf.io.fromMemory(packedArtifacts as tf.io.ModelArtifacts));
    const input = graphInput(4);
    const stockOut = (stock.execute(input) as tf.Tensor).dataSync();
    const packedOut = (fromPacked.execute(input) as tf.Tensor).dataSync();
    expect(stockOut.length).toBe(12);
    expectSameOutputs(stockOut, packedOut, storedAs);
    input.dispose();
    stock.dispose();
    fromPacked.dispose();
  });
});

describe('PTQ plan and report', () => {
  it('applies layers.skip and layers.overrides by glob, and reports sizes consistently', async () => {
    const source = await buildLayersModel();
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 8 },
      layers: { skip: ['lstm/*'], overrides: { 'dense/kernel': { bits: 4 }, 'logits/*': { name: 'ternary' } } },
    });
    const { files, report } = await runPtq(readModel(source), spec, { backend: 'wasm' });
    expect(report.skipped.map((s) => s.name)).toEqual(['lstm/kernel', 'lstm/recurrent_kernel']);
    const byName = new Map(report.tensors.map((t) => [t.name, t]));
    expect(byName.get('dense/kernel')!.bits).toBe(4);
    expect(byName.get('logits/kernel')!.method).toBe('ternary');
    expect(byName.get('conv2d/kernel')!.bits).toBe(8);

    const shardBytes = [...files]
      .filter(([p]) => p.startsWith('model/') && p.endsWith('.bin'))
      .reduce((s, [, b]) => s + b.byteLength, 0);
    expect(report.model.bytesAfter).toBe(shardBytes);
    expect(report.model.packedBytes).toBe(
      files.get('packed/weights.bin')!.byteLength + files.get('packed/manifest.json')!.byteLength,
    );
    expect(report.model.compressionRatio).toBeCloseTo(report.model.bytesBefore / report.model.packedBytes, 10);
    // report.json is the job's (runJob writes it once, whatever the kind), not runPtq's.
    expect(files.has('report.json')).toBe(false);
    for (const name of ['decoder.js', 'decode-tensor.js', 'bits.js']) expect(files.has(`packed/${name}`)).toBe(true);
  });

  it('keeps one scale per output channel of a depthwise kernel (in × multiplier, its last two axes)', async () => {
    const { files } = (
      await runMethod(await buildLayersModel(), { name: 'affine', bits: 8, granularity: 'per-channel' })
    ).result;
    const manifest = json(files.get('packed/manifest.json')) as {
      weights: { name: string; shape: number[]; encoding?: { channels: number } }[];
    };
    const depthwise = manifest.weights.find((w) => w.name === 'depthwise/depthwise_kernel')!;
    expect(depthwise.shape).toEqual([3, 3, 6, 1]);
    expect(depthwise.encoding!.channels).toBe(6);
    expect(manifest.weights.find((w) => w.name === 'dense/kernel')!.encoding!.channels).toBe(10);
  });

  it('quantizes the depthwise consts of a graph model per output channel (their last two axes)', async () => {
    const source = buildDepthwiseGraphModel();
    const float = await loadStockGraph(source);
    const input = depthwiseGraphInput(16);
    const reference = float.execute(input) as tf.Tensor;
    const outputCosine = async (granularity: string) => {
      const { report, files } = (await runMethod(source, { name: 'affine', bits: 8, granularity })).result;
      const stock = await loadStockGraph(subtree(files, 'model/'));
      const output = stock.execute(input) as tf.Tensor;
      const cosine = tensorError(reference.dataSync() as Float32Array, output.dataSync() as Float32Array).cosine;
      output.dispose();
      stock.dispose();
      return { cosine, byName: new Map(report.tensors.map((t) => [t.name, t])) };
    };
    const perChannel = await outputCosine('per-channel');
    const perTensor = await outputCosine('per-tensor');
    const dw1 = perChannel.byName.get('dw1/depthwise_weights')!;
    expect([dw1.role, dw1.layerType, dw1.channels]).toEqual(['depthwise_kernel', 'FusedDepthwiseConv2dNative', 8]);
    const dw2 = perChannel.byName.get('dw2/depthwise_weights')!;
    expect([dw2.role, dw2.layerType, dw2.channels]).toEqual(['depthwise_kernel', 'DepthwiseConv2dNative', 16]);
    expect(perChannel.byName.get('project/weights')!.channels).toBe(6);
    expect(perTensor.byName.get('dw1/depthwise_weights')!.channels).toBe(1);
    // One grid for channels 100× apart rounds the small ones away; one grid each keeps them.
    expect(perChannel.cosine).toBeGreaterThan(0.9999);
    expect(perTensor.cosine).toBeLessThan(0.99);
    reference.dispose();
    input.dispose();
    float.dispose();
  });

  it('stops with an AbortError when cancelled, producing nothing', async () => {
    const controller = new AbortController();
    controller.abort();
    const model = readModel(await buildLayersModel());
    await expect(
      runPtq(model, parseJobSpec({ method: { name: 'kmeans' } }), { backend: 'wasm', signal: controller.signal }),
    ).rejects.toMatchObject({ name: 'AbortError' });
  });
});

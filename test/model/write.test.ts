import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import { writeModel, type WeightReplacement } from '../../src/model/write.js';
import { encodeFloat16, halfToFloat } from '../../src/quant/float16.js';
import {
  buildGraphModel,
  buildLayersModel,
  graphInput,
  layersInput,
  loadStockGraph,
  loadStockLayers,
} from '../fixtures/models.js';

const version = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
const bits = (values: Float32Array): Uint32Array => new Uint32Array(values.buffer, values.byteOffset, values.length);

interface Manifest {
  format: string;
  generatedBy: string;
  convertedBy: string;
  modelTopology: unknown;
  weightsManifest: {
    paths: string[];
    weights: { name: string; dtype: string; shape: number[]; quantization?: Record<string, unknown> }[];
  }[];
}
const manifestOf = (files: FileSet): Manifest => JSON.parse(new TextDecoder().decode(files.get('model.json')));
const entryOf = (files: FileSet, name: string) =>
  manifestOf(files).weightsManifest[0].weights.find((w) => w.name === name)!;

async function predictLayers(files: FileSet): Promise<Float32Array> {
  const model = await loadStockLayers(files);
  const input = layersInput(8);
  const output = model.predict(input) as tf.Tensor;
  const values = output.dataSync() as Float32Array;
  tf.dispose([input, output]);
  model.dispose();
  return values;
}

async function predictGraph(files: FileSet): Promise<Float32Array> {
  const model = await loadStockGraph(files);
  const input = graphInput(8);
  const output = model.predict(input) as tf.Tensor;
  const values = output.dataSync() as Float32Array;
  tf.dispose([input, output]);
  model.dispose();
  return values;
}

async function stockWeight(files: FileSet, name: string): Promise<Float32Array> {
  const model = await loadStockLayers(files);
  const values = model.weights
    .find((w) => w.originalName === name)!
    .read()
    .dataSync() as Float32Array;
  model.dispose();
  return values;
}

/** Per-tensor asymmetric affine on a `bits` grid, decoded as tfjs decodes: fround(code·scale + min). */
function affine(
  values: Float32Array,
  levels: number,
): Required<Pick<WeightReplacement, 'dequantized' | 'codes'>> & { min: number; scale: number } {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const scale = (max - min) / (levels - 1);
  const codes = levels <= 256 ? new Uint8Array(values.length) : new Uint16Array(values.length);
  const dequantized = new Float32Array(values.length);
  values.forEach((v, i) => {
    codes[i] = Math.round((v - min) / scale);
    dequantized[i] = codes[i] * scale + min;
  });
  return { codes, dequantized, min, scale };
}

const floatWeight = (model: LoadedModel, name: string): Float32Array =>
  model.weights.find((w) => w.name === name)!.values as Float32Array;

let layersFiles: FileSet;
let layers: LoadedModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  layersFiles = await buildLayersModel();
  layers = readModel(layersFiles);
});

describe('writeModel without replacements', () => {
  it('gives a layers model that predicts exactly like the original under stock tfjs', async () => {
    const written = writeModel(layers, new Map());
    expect(await predictLayers(written)).toEqual(await predictLayers(layersFiles));
    const manifest = manifestOf(written);
    expect(manifest.format).toBe('layers-model');
    expect(manifest.generatedBy).toBe('TensorFlow.js tfjs-layers v4.22.0');
    expect(manifest.convertedBy).toBe(`qaas ${version}`);
    expect(manifest.modelTopology).toEqual(layers.modelJson.modelTopology);
    expect(manifest.weightsManifest).toHaveLength(1);
    expect(manifest.weightsManifest[0].paths).toEqual(['group1-shard1of1.bin']);
    expect(manifest.weightsManifest[0].weights).toEqual(
      layers.weights.map(({ name, shape, dtype }) => ({ name, shape, dtype })),
    );
  });

  it('gives a graph model that predicts exactly like the original, int32 Const included', async () => {
    const files = buildGraphModel();
    const written = writeModel(readModel(files), new Map());
    expect(await predictGraph(written)).toEqual(await predictGraph(files));
    const manifest = manifestOf(written) as Manifest & { signature: unknown };
    expect(manifest.format).toBe('graph-model');
    expect(manifest.generatedBy).toBe('2.15.0');
    expect(manifest.signature).toBeDefined();
    expect(entryOf(written, 'flatten/shape').dtype).toBe('int32');
  });

  it('writes weights that arrived as float16 back as float16', () => {
    const model: LoadedModel = {
      format: 'graph-model',
      modelJson: { modelTopology: { node: [] } },
      weights: [
        {
          name: 'h',
          shape: [3],
          dtype: 'float32',
          values: new Float32Array([1, -2, 0.5]),
          sourceQuantization: { dtype: 'float16' },
        },
      ],
    };
    const written = writeModel(model, new Map());
    expect(entryOf(written, 'h').quantization).toEqual({ dtype: 'float16' });
    expect(Array.from(new Uint16Array(written.get('group1-shard1of1.bin')!.slice().buffer))).toEqual([
      0x3c00, 0xc000, 0x3800,
    ]);
    expect(manifestOf(written).generatedBy).toBe(`qaas ${version}`);
  });

  it('writes weights that arrived as uint8 back with the same min, scale and codes', async () => {
    const { codes, dequantized, min, scale } = affine(floatWeight(layers, 'dense/kernel'), 256);
    const quantized = writeModel(
      layers,
      new Map([['dense/kernel', { dequantized, codes, tfjsEncoding: { dtype: 'uint8', min, scale } }]]),
    );
    const rewritten = writeModel(readModel(quantized), new Map());
    expect(entryOf(rewritten, 'dense/kernel').quantization).toEqual({
      dtype: 'uint8',
      min,
      scale,
      original_dtype: 'float32',
    });
    expect(rewritten.get('group1-shard1of1.bin')).toEqual(quantized.get('group1-shard1of1.bin'));
    expect(bits(await stockWeight(rewritten, 'dense/kernel'))).toEqual(bits(dequantized));
  });
});

describe('replaced weights', () => {
  it('uint8 codes: stock tfjs loads values equal to `dequantized` bit for bit', async () => {
    const kernel = floatWeight(layers, 'dense/kernel');
    const { codes, dequantized, min, scale } = affine(kernel, 256);
    const written = writeModel(
      layers,
      new Map([['dense/kernel', { dequantized, codes, tfjsEncoding: { dtype: 'uint8', min, scale } }]]),
    );
    expect(entryOf(written, 'dense/kernel').quantization).toEqual({
      dtype: 'uint8',
      min,
      scale,
      original_dtype: 'float32',
    });
    const floatBytes = [...layersFiles.values()].slice(1).reduce((n, b) => n + b.byteLength, 0);
    expect(written.get('group1-shard1of1.bin')!.byteLength).toBe(floatBytes - kernel.length * 3);

    expect(bits(await stockWeight(written, 'dense/kernel'))).toEqual(bits(dequantized));
    // The same values written as plain floats predict identically: the manifest form changes nothing.
    const asFloats = writeModel(layers, new Map([['dense/kernel', { dequantized }]]));
    expect(entryOf(asFloats, 'dense/kernel').quantization).toBeUndefined();
    expect(await predictLayers(written)).toEqual(await predictLayers(asFloats));
  });

  it('uint16 codes on a graph model load bit for bit', async () => {
    const files = buildGraphModel();
    const graph = readModel(files);
    const { codes, dequantized, min, scale } = affine(floatWeight(graph, 'conv/kernel'), 65536);
    const written = writeModel(
      graph,
      new Map([['conv/kernel', { dequantized, codes, tfjsEncoding: { dtype: 'uint16', min, scale } }]]),
    );
    expect(entryOf(written, 'conv/kernel').quantization).toMatchObject({ dtype: 'uint16', min, scale });
    expect(bits(floatWeight(readModel(written), 'conv/kernel'))).toEqual(bits(dequantized));
    const asFloats = writeModel(graph, new Map([['conv/kernel', { dequantized }]]));
    expect(await predictGraph(written)).toEqual(await predictGraph(asFloats));
  });

  it('float16 codes are stored as uint16 halves', async () => {
    const kernel = floatWeight(layers, 'conv2d/kernel');
    const codes = encodeFloat16(kernel);
    const dequantized = Float32Array.from(codes, (h) => halfToFloat(h));
    const written = writeModel(
      layers,
      new Map([['conv2d/kernel', { dequantized, codes, tfjsEncoding: { dtype: 'float16' } }]]),
    );
    expect(entryOf(written, 'conv2d/kernel').quantization).toEqual({ dtype: 'float16' });
    expect(bits(await stockWeight(written, 'conv2d/kernel'))).toEqual(bits(dequantized));
  });

  it('without tfjsEncoding: float16 when every value is a half, float32 otherwise', () => {
    const size = floatWeight(layers, 'logits/kernel').length;
    // A binary {−α, α} tensor: α = 0.25 is a half, α = 0.3 is not.
    const binary = (alpha: number) => Float32Array.from({ length: size }, (_, i) => (i % 3 === 0 ? -alpha : alpha));
    const exact = writeModel(layers, new Map([['logits/kernel', { dequantized: binary(0.25) }]]));
    expect(entryOf(exact, 'logits/kernel').quantization).toEqual({ dtype: 'float16' });
    expect(Array.from(floatWeight(readModel(exact), 'logits/kernel'))).toEqual(Array.from(binary(0.25)));
    const inexact = writeModel(layers, new Map([['logits/kernel', { dequantized: binary(0.3) }]]));
    expect(entryOf(inexact, 'logits/kernel').quantization).toBeUndefined();
    expect(bits(floatWeight(readModel(inexact), 'logits/kernel'))).toEqual(bits(binary(0.3)));
  });

  it('refuses codes that would not decode to `dequantized`, and unknown or non-float weights', () => {
    const kernel = floatWeight(layers, 'dense/kernel');
    const { codes, dequantized, min, scale } = affine(kernel, 256);
    const wrong = dequantized.slice();
    wrong[3] += 1e-3;
    expect(() =>
      writeModel(
        layers,
        new Map([['dense/kernel', { dequantized: wrong, codes, tfjsEncoding: { dtype: 'uint8', min, scale } }]]),
      ),
    ).toThrow(/dense\/kernel: code \d+ at index 3/);
    expect(() =>
      writeModel(layers, new Map([['dense/kernel', { dequantized, tfjsEncoding: { dtype: 'uint8', min, scale } }]])),
    ).toThrow(/needs one code per value/);
    expect(() => writeModel(layers, new Map([['nope/kernel', { dequantized }]]))).toThrow(/nope\/kernel/);
    const graph = readModel(buildGraphModel());
    expect(() => writeModel(graph, new Map([['flatten/shape', { dequantized: new Float32Array(2) }]]))).toThrow(
      /int32/,
    );
  });
});

describe('sharding', () => {
  it('cuts one group into group1-shard{i}of{n}.bin of shardSizeBytes, the last one shorter', () => {
    const total = layers.weights.reduce((n, w) => n + w.values.byteLength, 0);
    const written = writeModel(layers, new Map(), { shardSizeBytes: 1000 });
    const n = Math.ceil(total / 1000);
    const paths = Array.from({ length: n }, (_, i) => `group1-shard${i + 1}of${n}.bin`);
    expect(n).toBe(4);
    expect([...written.keys()]).toEqual(['model.json', ...paths]);
    expect(manifestOf(written).weightsManifest[0].paths).toEqual(paths);
    expect(paths.map((p) => written.get(p)!.byteLength)).toEqual([1000, 1000, 1000, total - 3000]);
    const reread = readModel(written);
    expect(reread.weights.map((w) => w.values)).toEqual(layers.weights.map((w) => w.values));
    expect(() => writeModel(layers, new Map(), { shardSizeBytes: 0 })).toThrow(RangeError);
  });
});

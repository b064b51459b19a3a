import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelError } from '../../src/model/errors.js';
import { readFileSetFromDir, readModel, readModelDir } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { buildGraphModel, buildLayersModel, loadStockLayers } from '../fixtures/models.js';

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));
const bytes = (view: ArrayBufferView): Uint8Array => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
const bits = (values: Float32Array): Uint32Array => new Uint32Array(values.buffer, values.byteOffset, values.length);

interface Group {
  paths: string[];
  weights: Record<string, unknown>[];
  /** The group's bytes, cut at `cuts` into its shards (one cut fewer than paths). */
  data: Uint8Array;
  cuts?: number[];
}

/** A graph-model FileSet (empty GraphDef: no layer checks) with hand-made manifest groups. */
function craft(groups: Group[], extra: Record<string, unknown> = {}): FileSet {
  const modelJson = {
    format: 'graph-model',
    modelTopology: { node: [] },
    weightsManifest: groups.map(({ paths, weights }) => ({ paths, weights })),
    ...extra,
  };
  const files: FileSet = new Map([['model.json', encode(modelJson)]]);
  for (const group of groups) {
    const edges = [0, ...(group.cuts ?? []), group.data.byteLength];
    group.paths.forEach((p, i) => files.set(p.replace(/^\.\//, ''), group.data.slice(edges[i], edges[i + 1])));
  }
  return files;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.byteLength), 0);
  return out;
}

function catchModelError(fn: () => unknown): ModelError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ModelError);
    return err as ModelError;
  }
  throw new Error('expected a ModelError');
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('readModel on the fixtures', () => {
  it('reads a layers model cut into 1 KiB shards with the values stock tfjs loads', async () => {
    const files = await buildLayersModel({ shardSizeBytes: 1024 });
    expect([...files.keys()]).toEqual([
      'model.json',
      'group1-shard1of4.bin',
      'group1-shard2of4.bin',
      'group1-shard3of4.bin',
      'group1-shard4of4.bin',
    ]);
    const model = readModel(files);
    expect(model.format).toBe('layers-model');
    expect(model.modelJson.weightsManifest).toBeUndefined();
    expect((model.modelJson.modelTopology as { class_name: string }).class_name).toBe('Model');

    const stock = await loadStockLayers(files);
    const stockWeights = stock.weights.map((w) => ({
      name: w.originalName,
      values: w.read().dataSync() as Float32Array,
    }));
    expect(model.weights.map((w) => w.name).sort()).toEqual(stockWeights.map((w) => w.name).sort());
    for (const { name, values } of stockWeights) {
      const weight = model.weights.find((w) => w.name === name)!;
      expect(weight.dtype).toBe('float32');
      expect(weight.sourceQuantization).toBeUndefined();
      expect(bits(weight.values as Float32Array)).toEqual(bits(values));
    }
    stock.dispose();
  });

  it('reads the graph model with its int32 Const', () => {
    const model = readModel(buildGraphModel());
    expect(model.format).toBe('graph-model');
    expect(model.weights.map((w) => w.name)).toEqual([
      'conv/kernel',
      'conv/bias',
      'flatten/shape',
      'dense/kernel',
      'dense/bias',
      'logits/kernel',
      'logits/bias',
    ]);
    const shape = model.weights[2];
    expect(shape.dtype).toBe('int32');
    expect(Array.from(shape.values)).toEqual([-1, 36]);
    expect(model.modelJson.signature).toBeDefined();
  });
});

describe('quantized manifests', () => {
  it('dequantizes uint8, uint16 and float16 entries exactly like tf.io.decodeWeights', () => {
    const u8 = new Uint8Array([0, 1, 2, 3, 128, 254, 255, 77]);
    const u16 = new Uint16Array([0, 1, 40000, 65535, 12345, 3]);
    const halves = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x3555]);
    const i8 = new Uint8Array([0, 1, 2, 3]);
    const specs: tf.io.WeightsManifestEntry[] = [
      { name: 'a', shape: [2, 4], dtype: 'float32', quantization: { dtype: 'uint8', min: -1, scale: 0.5 } },
      { name: 'b', shape: [3, 2], dtype: 'float32', quantization: { dtype: 'uint16', min: -0.731, scale: 2.7e-5 } },
      { name: 'c', shape: [6], dtype: 'float32', quantization: { dtype: 'float16' } },
      { name: 'd', shape: [4], dtype: 'int32', quantization: { dtype: 'uint8', min: -0.5, scale: 0.4 } },
    ];
    // uint16 entries must start 2-byte aligned in tfjs too: 8 bytes of uint8 come first.
    const data = concat(u8, bytes(u16), bytes(halves), i8);
    const model = readModel(craft([{ paths: ['w.bin'], weights: specs as never[], data }]));
    const reference = tf.io.decodeWeights(data.slice().buffer, specs);
    for (const weight of model.weights) {
      const expected = reference[weight.name].dataSync();
      if (weight.dtype === 'float32')
        expect(bits(weight.values as Float32Array)).toEqual(bits(expected as Float32Array));
      else expect(Array.from(weight.values)).toEqual(Array.from(expected));
    }
    Object.values(reference).forEach((t) => t.dispose());

    // Hand-worked: v·scale + min.
    expect(Array.from(model.weights[0].values.slice(0, 4))).toEqual([-1, -0.5, 0, 0.5]);
    expect(model.weights[0].values[6]).toBe(126.5);
    expect(model.weights[1].values[3]).toBe(Math.fround(65535 * 2.7e-5 - 0.731));
    expect(Array.from(model.weights[2].values)).toEqual([1, -2, 2 ** -24, 65504, -0, Math.fround(0.333251953125)]);
    // int32: Math.round(-0.5, -0.1, 0.3, 0.7) like tfjs.
    expect(model.weights[3].values).toBeInstanceOf(Int32Array);
    expect(Array.from(model.weights[3].values)).toEqual([0, 0, 0, 1]);
    expect(model.weights.map((w) => w.sourceQuantization?.dtype)).toEqual(['uint8', 'uint16', 'float16', 'uint8']);
  });
});

describe('several groups and shard boundaries', () => {
  it('concatenates each group in path order and slices weights across shard edges', () => {
    const a = Float32Array.from({ length: 15 }, (_, i) => i * 0.25 - 1);
    const b = Int32Array.from([7, -3, 0, 2 ** 31 - 1, -(2 ** 31), 5, 9]);
    const c = new Uint8Array([1, 0, 1, 1]);
    const d = Float32Array.from({ length: 6 }, (_, i) => -i / 3);
    const files = craft([
      {
        paths: ['./g1-a.bin', './g1-b.bin', 'g1-c.bin'],
        weights: [
          { name: 'a', shape: [3, 5], dtype: 'float32' },
          { name: 'b', shape: [7], dtype: 'int32' },
          { name: 'c', shape: [2, 2], dtype: 'bool' },
        ],
        // 60 + 28 + 4 bytes cut at 50 (inside a) and 81 (inside b).
        data: concat(bytes(a), bytes(b), c),
        cuts: [50, 81],
      },
      {
        paths: ['sub/../g2-a.bin', 'g2-b.bin'],
        weights: [{ name: 'd', shape: [6], dtype: 'float32' }],
        data: bytes(d),
        cuts: [3],
      },
    ]);
    const model = readModel(files);
    expect(model.weights.map((w) => [w.name, w.dtype, w.shape])).toEqual([
      ['a', 'float32', [3, 5]],
      ['b', 'int32', [7]],
      ['c', 'bool', [2, 2]],
      ['d', 'float32', [6]],
    ]);
    expect(model.weights[0].values).toEqual(a);
    expect(model.weights[1].values).toEqual(b);
    expect(model.weights[2].values).toEqual(c);
    expect(model.weights[3].values).toEqual(d);
  });
});

describe('validation errors name what is wrong', () => {
  const kernel = { name: 'dense_1/kernel', shape: [3, 4], dtype: 'float32' };

  it('malformed-json', () => {
    const files: FileSet = new Map([['model.json', new TextEncoder().encode('{"modelTopology": {')]]);
    const err = catchModelError(() => readModel(files));
    expect(err.code).toBe('malformed-json');
    expect(err.file).toBe('model.json');
    expect(catchModelError(() => readModel(new Map([['model.json', encode([1, 2])]]))).code).toBe('malformed-json');
  });

  it('missing-file for model.json and for a shard', () => {
    expect(catchModelError(() => readModel(new Map())).file).toBe('model.json');
    const files = craft([
      {
        paths: ['./group1-shard1of2.bin', './group1-shard2of2.bin'],
        weights: [kernel],
        data: new Uint8Array(48),
        cuts: [24],
      },
    ]);
    files.delete('group1-shard2of2.bin');
    const err = catchModelError(() => readModel(files));
    expect(err.code).toBe('missing-file');
    expect(err.file).toBe('./group1-shard2of2.bin');
    expect(err.message).toContain('./group1-shard2of2.bin');
  });

  it('missing-file for a manifest path outside the model', () => {
    const files = craft([{ paths: ['w.bin'], weights: [kernel], data: new Uint8Array(48) }]);
    const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    json.weightsManifest[0].paths = ['../w.bin'];
    files.set('model.json', encode(json));
    files.set('../w.bin', new Uint8Array(48));
    const err = catchModelError(() => readModel(files));
    expect(err.code).toBe('missing-file');
    expect(err.file).toBe('../w.bin');
  });

  it('byte-length: a weight that does not fit, and bytes nobody describes', () => {
    const short = craft([{ paths: ['w.bin'], weights: [kernel], data: new Uint8Array(40) }]);
    const err = catchModelError(() => readModel(short));
    expect(err.code).toBe('byte-length');
    expect(err.weight).toBe('dense_1/kernel');
    expect(err.message).toBe('weight dense_1/kernel: manifest shape [3,4] needs 48 bytes, group 1 has 40 left');

    const long = craft([{ paths: ['w.bin'], weights: [kernel], data: new Uint8Array(52) }]);
    const trailing = catchModelError(() => readModel(long));
    expect(trailing.code).toBe('byte-length');
    expect(trailing.weight).toBe('dense_1/kernel');
    expect(trailing.file).toBe('w.bin');
    expect(trailing.message).toContain('52 bytes');

    // A quantized entry is sized by its storage dtype: [3,4] uint8 is 12 bytes, not 48.
    const quantized = { ...kernel, quantization: { dtype: 'uint8', min: 0, scale: 1 } };
    expect(
      readModel(craft([{ paths: ['w.bin'], weights: [quantized], data: new Uint8Array(12) }])).weights,
    ).toHaveLength(1);
  });

  it('non-finite: NaN and Infinity name the weight and the first index', () => {
    const values = new Float32Array(12);
    values[5] = NaN;
    values[9] = Infinity;
    const err = catchModelError(() => readModel(craft([{ paths: ['w.bin'], weights: [kernel], data: bytes(values) }])));
    expect(err.code).toBe('non-finite');
    expect(err.weight).toBe('dense_1/kernel');
    expect(err.message).toBe('weight dense_1/kernel: value NaN at index 5');

    const halves = new Uint16Array([0x3c00, 0xfc00]);
    const spec = { name: 'h', shape: [2], dtype: 'float32', quantization: { dtype: 'float16' } };
    const inf = catchModelError(() => readModel(craft([{ paths: ['w.bin'], weights: [spec], data: bytes(halves) }])));
    expect(inf.message).toBe('weight h: value -Infinity at index 1');
  });

  it('unknown-dtype: weight dtype and quantization dtype', () => {
    const str = { name: 'vocab', shape: [2], dtype: 'string' };
    const err = catchModelError(() =>
      readModel(craft([{ paths: ['w.bin'], weights: [str], data: new Uint8Array(8) }])),
    );
    expect(err.code).toBe('unknown-dtype');
    expect(err.weight).toBe('vocab');
    const int8 = { ...kernel, quantization: { dtype: 'int8', min: 0, scale: 1 } };
    const q = catchModelError(() =>
      readModel(craft([{ paths: ['w.bin'], weights: [int8], data: new Uint8Array(12) }])),
    );
    expect(q.code).toBe('unknown-dtype');
    expect(q.weight).toBe('dense_1/kernel');
  });

  it('duplicate-weight, across groups too', () => {
    const files = craft([
      { paths: ['a.bin'], weights: [kernel], data: new Uint8Array(48) },
      { paths: ['b.bin'], weights: [kernel], data: new Uint8Array(48) },
    ]);
    const err = catchModelError(() => readModel(files));
    expect(err.code).toBe('duplicate-weight');
    expect(err.weight).toBe('dense_1/kernel');
  });

  it('unknown-layer names the layer, also inside a wrapper', async () => {
    const files = await buildLayersModel();
    const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    const layers = json.modelTopology.config.layers as { class_name: string; config: Record<string, unknown> }[];
    const dense = layers.find((l) => l.config.name === 'dense')!;
    dense.class_name = 'TFOpLambda';
    files.set('model.json', encode(json));
    const err = catchModelError(() => readModel(files));
    expect(err.code).toBe('unknown-layer');
    expect(err.layer).toBe('dense');
    expect(err.message).toContain('TFOpLambda');

    dense.class_name = 'TimeDistributed';
    dense.config = { name: 'dense', layer: { class_name: 'MyDense', config: { name: 'inner_dense' } } };
    files.set('model.json', encode(json));
    expect(catchModelError(() => readModel(files)).layer).toBe('inner_dense');
  });

  it('bad-topology: no topology, or a format that contradicts it', () => {
    const noTopology: FileSet = new Map([['model.json', encode({ format: 'graph-model', weightsManifest: [] })]]);
    expect(catchModelError(() => readModel(noTopology)).code).toBe('bad-topology');
    const contradiction = craft([], { format: 'layers-model' });
    const err = catchModelError(() => readModel(contradiction));
    expect(err.code).toBe('bad-topology');
    expect(err.message).toContain('layers-model');
  });
});

describe('reading a directory', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'qaas-read-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads model.json and only the files the manifest names', async () => {
    const files = await buildLayersModel({ shardSizeBytes: 2048 });
    const modelDir = path.join(dir, 'model');
    await mkdir(modelDir);
    for (const [name, data] of files) await writeFile(path.join(modelDir, name), data);
    await writeFile(path.join(modelDir, 'notes.txt'), 'not a shard');

    const read = await readFileSetFromDir(modelDir);
    expect([...read.keys()].sort()).toEqual([...files.keys()].sort());
    const fromDir = await readModelDir(modelDir);
    const inMemory = readModel(files);
    expect(fromDir.weights.map((w) => w.values)).toEqual(inMemory.weights.map((w) => w.values));
  });

  it('refuses manifest paths that leave the directory, lexically or by symlink', async () => {
    const outside = path.join(dir, 'secret.bin');
    await writeFile(outside, new Uint8Array(48));
    for (const [shard, link] of [
      ['../secret.bin', undefined],
      ['link.bin', outside],
    ] as const) {
      const modelDir = await mkdtemp(path.join(dir, 'escape-'));
      const json = {
        format: 'graph-model',
        modelTopology: { node: [] },
        weightsManifest: [{ paths: [shard], weights: [{ name: 'w', shape: [12], dtype: 'float32' }] }],
      };
      await writeFile(path.join(modelDir, 'model.json'), JSON.stringify(json));
      if (link) await symlink(link, path.join(modelDir, shard));
      const err = await readFileSetFromDir(modelDir).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ModelError);
      expect((err as ModelError).code).toBe('missing-file');
      expect((err as ModelError).file).toBe(shard);
    }
  });

  it('missing-file for a shard that is not on disk', async () => {
    const modelDir = await mkdtemp(path.join(dir, 'missing-'));
    const json = {
      format: 'graph-model',
      modelTopology: { node: [] },
      weightsManifest: [{ paths: ['gone.bin'], weights: [] }],
    };
    await writeFile(path.join(modelDir, 'model.json'), JSON.stringify(json));
    await expect(readModelDir(modelDir)).rejects.toMatchObject({ code: 'missing-file', file: 'gone.bin' });
  });
});

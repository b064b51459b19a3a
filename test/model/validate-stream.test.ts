/**
 * validateModelFiles against readModel: on valid models the same tensors, on every fault the same ModelError
 * (code, message, weight, file, layer), with chunks of 8 bytes so weights straddle chunks as well as shards.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelError } from '../../src/model/errors.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { validateModelFiles, type DiskFileSet } from '../../src/model/validate-stream.js';
import { buildGraphModel, buildLayersModel } from '../fixtures/models.js';

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));
const bytes = (view: ArrayBufferView): Uint8Array => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

let dir: string;
let counter = 0;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(path.join(tmpdir(), 'qaas-validate-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes each file under its own random-ish name: the validator must go by the keys, not the disk names. */
async function toDisk(files: FileSet): Promise<DiskFileSet> {
  const onDisk: DiskFileSet = new Map();
  for (const [key, data] of files) {
    const file = path.join(dir, `staged-${counter++}`);
    await writeFile(file, data);
    onDisk.set(key, file);
  }
  return onDisk;
}

function errorOf(fn: () => unknown): ModelError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ModelError);
    return error as ModelError;
  }
  throw new Error('readModel accepted the model');
}

/** Both validators must fail alike; returns the error. */
async function sameFailure(files: FileSet): Promise<ModelError> {
  const expected = errorOf(() => readModel(files));
  const actual = await validateModelFiles(await toDisk(files), 8).then(
    () => {
      throw new Error(`validateModelFiles accepted a model readModel refuses: ${expected.message}`);
    },
    (error: unknown) => error as ModelError,
  );
  expect(actual).toBeInstanceOf(ModelError);
  expect({
    code: actual.code,
    message: actual.message,
    weight: actual.weight,
    file: actual.file,
    layer: actual.layer,
  }).toEqual({
    code: expected.code,
    message: expected.message,
    weight: expected.weight,
    file: expected.file,
    layer: expected.layer,
  });
  return actual;
}

function graph(groups: { paths: string[]; weights: unknown[]; shards: Uint8Array[] }[]): FileSet {
  const files: FileSet = new Map([
    [
      'model.json',
      encode({
        format: 'graph-model',
        modelTopology: { node: [] },
        weightsManifest: groups.map(({ paths, weights }) => ({ paths, weights })),
      }),
    ],
  ]);
  // Fewer shards than paths leaves the last paths missing.
  for (const group of groups) group.shards.forEach((shard, i) => files.set(group.paths[i], shard));
  return files;
}

describe('validateModelFiles', () => {
  it('describes the fixtures like readModel (layers model in 1 KiB shards, graph model with int32)', async () => {
    for (const files of [await buildLayersModel({ shardSizeBytes: 1024 }), buildGraphModel()]) {
      const expected = readModel(files);
      const summary = await validateModelFiles(await toDisk(files), 8);
      expect(summary.format).toBe(expected.format);
      expect(summary.modelJson).toEqual(expected.modelJson);
      expect(summary.weights).toEqual(expected.weights.map(({ values: _values, ...rest }) => rest));
    }
  });

  it('finds NaN in a weight that spans two shards and many chunks, at its index within the weight', async () => {
    const a = Float32Array.from({ length: 10 }, (_, i) => i);
    const b = Float32Array.from({ length: 9 }, (_, i) => -i);
    b[7] = Number.NaN; // byte 40 + 28 of the group: past the cut at 50, in the 9th 8-byte chunk of b
    const data = new Uint8Array(76);
    data.set(bytes(a), 0);
    data.set(bytes(b), 40);
    const files = graph([
      {
        paths: ['s1.bin', 's2.bin'],
        weights: [
          { name: 'a', shape: [10], dtype: 'float32' },
          { name: 'b', shape: [9], dtype: 'float32' },
        ],
        shards: [data.slice(0, 50), data.slice(50)],
      },
    ]);
    const error = await sameFailure(files);
    expect(error.message).toBe('weight b: value NaN at index 7');
    expect(error.weight).toBe('b');
  });

  it('decodes quantized entries per chunk: float16 -Infinity, uint8 overflow to Infinity; int32 is not scanned', async () => {
    const halves = new Uint16Array([0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0xfc00]);
    const half = await sameFailure(
      graph([
        {
          paths: ['h.bin'],
          weights: [{ name: 'h', shape: [6], dtype: 'float32', quantization: { dtype: 'float16' } }],
          shards: [bytes(halves)],
        },
      ]),
    );
    expect(half.message).toBe('weight h: value -Infinity at index 5');

    const codes = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 255]);
    const huge = { name: 'q', shape: [10], dtype: 'float32', quantization: { dtype: 'uint8', min: 0, scale: 3e36 } };
    expect((await sameFailure(graph([{ paths: ['q.bin'], weights: [huge], shards: [codes] }]))).message).toBe(
      'weight q: value Infinity at index 9',
    );

    const ints = Int32Array.from([0x7fc00000, 1, 2]); // NaN's bit pattern, but an int32 weight
    const summary = await validateModelFiles(
      await toDisk(
        graph([{ paths: ['i.bin'], weights: [{ name: 'i', shape: [3], dtype: 'int32' }], shards: [bytes(ints)] }]),
      ),
      8,
    );
    expect(summary.weights).toEqual([{ name: 'i', shape: [3], dtype: 'int32' }]);
  });

  it('reports faults in readModel order: a NaN in group 1 before a short group 2', async () => {
    const bad = Float32Array.from([1, Number.NaN]);
    const error = await sameFailure(
      graph([
        { paths: ['g1.bin'], weights: [{ name: 'first', shape: [2], dtype: 'float32' }], shards: [bytes(bad)] },
        { paths: ['g2.bin'], weights: [{ name: 'second', shape: [4], dtype: 'float32' }], shards: [new Uint8Array(8)] },
      ]),
    );
    expect(error.code).toBe('non-finite');
    expect(error.weight).toBe('first');
  });

  it('fails like readModel on each kind of fault', async () => {
    const kernel = { name: 'k', shape: [3, 4], dtype: 'float32' };
    const cases: [string, FileSet][] = [
      ['malformed-json', new Map([['model.json', new TextEncoder().encode('{"modelTopology": {')]])],
      ['missing-file', new Map()],
      ['missing-file', graph([{ paths: ['a.bin', 'b.bin'], weights: [kernel], shards: [new Uint8Array(24)] }])],
      ['missing-file', graph([{ paths: ['../w.bin'], weights: [kernel], shards: [new Uint8Array(48)] }])],
      ['byte-length', graph([{ paths: ['w.bin'], weights: [kernel], shards: [new Uint8Array(40)] }])],
      ['byte-length', graph([{ paths: ['w.bin'], weights: [kernel], shards: [new Uint8Array(52)] }])],
      [
        'unknown-dtype',
        graph([
          { paths: ['w.bin'], weights: [{ name: 's', shape: [2], dtype: 'string' }], shards: [new Uint8Array(8)] },
        ]),
      ],
      [
        'duplicate-weight',
        graph([
          { paths: ['a.bin'], weights: [kernel], shards: [new Uint8Array(48)] },
          { paths: ['b.bin'], weights: [kernel], shards: [new Uint8Array(48)] },
        ]),
      ],
      ['bad-topology', new Map([['model.json', encode({ format: 'layers-model', modelTopology: { node: [] } })]])],
    ];
    for (const [code, files] of cases) expect((await sameFailure(files)).code, code).toBe(code);

    const layers = await buildLayersModel();
    const json = JSON.parse(new TextDecoder().decode(layers.get('model.json')));
    json.modelTopology.config.layers.find((l: { config: { name: string } }) => l.config.name === 'dense').class_name =
      'TFOpLambda';
    layers.set('model.json', encode(json));
    expect((await sameFailure(layers)).layer).toBe('dense');
  });
});

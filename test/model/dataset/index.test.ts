import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DatasetError,
  JSON_DATASET_MAX_BYTES,
  datasetFiles,
  openDataset,
  type BatchOptions,
  type Dataset,
  type DatasetBatch,
} from '../../../src/model/dataset/index.js';
import { zipOf } from '../../http/helpers.js';
import { npy, npyOf } from './npy-fixture.js';

let dir: string;
let count = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-dataset-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(bytes: Uint8Array | string, suffix = '.npy'): Promise<string> {
  const path = join(dir, `f${count++}${suffix}`);
  await writeFile(path, bytes);
  return path;
}

async function collect(dataset: Dataset, batchSize: number, options?: BatchOptions): Promise<DatasetBatch[]> {
  const out: DatasetBatch[] = [];
  for await (const batch of dataset.batches(batchSize, options)) out.push(batch);
  return out;
}

const range = (n: number, f: (i: number) => number = (i) => i) => Array.from({ length: n }, (_, i) => f(i));

describe('openDataset: .npy pairs', () => {
  it('streams uint8 pixels with preprocess and big-endian int64 labels, batch by batch', async () => {
    // 5 samples of 2×2 pixels: sample i holds 10i, 10i+1, 10i+2, 10i+3.
    const x = await file(
      npyOf(
        '|u1',
        [5, 2, 2],
        range(20, (i) => 10 * Math.floor(i / 4) + (i % 4)),
      ),
    );
    const y = await file(npyOf('>i8', [5], [3, 1, 4, 1, 5]));
    const dataset = await openDataset({ x, y });
    expect(dataset.samples).toBe(5);
    expect(dataset.x).toEqual({ dtype: 'uint8', sampleShape: [2, 2] });
    expect(dataset.y).toEqual({ dtype: 'int64', sampleShape: [], labels: 'index' });
    const batches = await collect(dataset, 2, { preprocess: { scale: 1 / 255, offset: -0.5 } });
    expect(batches.map((b) => b.count)).toEqual([2, 2, 1]);
    expect(batches[0].x).toBeInstanceOf(Float32Array);
    expect(batches[0].x[5]).toBe(Math.fround(11 / 255 - 0.5));
    expect(batches[2].x).toEqual(new Float32Array([40, 41, 42, 43].map((v) => v / 255 - 0.5)));
    expect(batches.map((b) => Array.from(b.y!))).toEqual([[3, 1], [4, 1], [5]]);
    expect(batches[0].y).toBeInstanceOf(Int32Array);
    await dataset.close();
  });

  it('reads exactly the rows in [start, end)', async () => {
    const x = await file(
      npyOf(
        '>f8',
        [10, 3],
        range(30, (i) => i + 0.25),
      ),
    );
    const dataset = await openDataset({ x });
    expect(dataset.y).toBeUndefined();
    const batches = await collect(dataset, 4, { start: 3, end: 8 });
    expect(batches.map((b) => b.count)).toEqual([4, 1]);
    expect(Array.from(batches[0].x.subarray(0, 3))).toEqual([9.25, 10.25, 11.25]);
    expect(Array.from(batches[1].x)).toEqual([21.25, 22.25, 23.25]);
    expect(await collect(dataset, 4, { start: 10, end: 10 })).toEqual([]);
    await expect(collect(dataset, 4, { start: 2, end: 11 })).rejects.toThrow('sample range [2, 11) is outside [0, 10)');
    await expect(collect(dataset, 0)).rejects.toThrow('batch size 0');
    await dataset.close();
  });

  it('gives int32 x for integer inputs and refuses what int32 cannot hold', async () => {
    const ids = await openDataset({ x: await file(npyOf('<f4', [2, 3], [0, 5, 15, 2, 2, 9])) });
    const [batch] = await collect(ids, 8, { xDtype: 'int32' });
    expect(batch.x).toEqual(new Int32Array([0, 5, 15, 2, 2, 9]));
    await expect(collect(ids, 8, { xDtype: 'int32', preprocess: { scale: 2, offset: 0 } })).rejects.toThrow(
      'preprocess',
    );
    const fractional = await openDataset({ x: await file(npyOf('<f4', [2, 2], [1, 2, 3, 3.5])) });
    await expect(collect(fractional, 1, { xDtype: 'int32' })).rejects.toThrow('x of sample 1 is 3.5, not an int32');
    const large = await openDataset({ x: await file(npyOf('<i8', [1, 1], [2 ** 40])) });
    await expect(collect(large, 1, { xDtype: 'int32' })).rejects.toThrow('not an int32');
    expect((await collect(large, 1))[0].x).toEqual(new Float32Array([2 ** 40]));
    await Promise.all([ids.close(), fractional.close(), large.close()]);
  });

  it('streams a file far larger than what it holds in memory', async () => {
    // A sparse 512 MiB x: the dataset reads one 64-row batch at its end.
    const rows = 131072;
    const path = join(dir, 'sparse.npy');
    const header = npy('<f4', [rows, 1024], new Uint8Array(0));
    await writeFile(path, header);
    const handle = await open(path, 'r+');
    await handle.write(new Uint8Array(new Float32Array([7.5]).buffer), 0, 4, header.length + (rows - 1) * 4096);
    await handle.truncate(header.length + rows * 4096);
    await handle.close();
    const before = process.memoryUsage().arrayBuffers;
    const dataset = await openDataset({ x: path });
    const batches = await collect(dataset, 64, { start: rows - 64 });
    expect(batches.length).toBe(1);
    expect(batches[0].x[63 * 1024]).toBe(7.5);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
    await dataset.close();
  });

  it('rejects Fortran order, count mismatches and scalars, naming the file', async () => {
    const fortran = await file(npyOf('<f4', [2, 2], [1, 2, 3, 4], { fortran: true }));
    await expect(openDataset({ x: fortran })).rejects.toThrow(/^x: Fortran-ordered \.npy arrays are not supported/);
    const x = await file(npyOf('<f4', [3, 2], range(6)));
    await expect(openDataset({ x, y: await file(npyOf('<i4', [2], [0, 1])) })).rejects.toThrow(
      'x has 3 samples but y has 2',
    );
    await expect(openDataset({ x: await file(npyOf('<f4', [], [1])) })).rejects.toThrow('x is a scalar');
    await expect(openDataset({ x, y: fortran })).rejects.toBeInstanceOf(DatasetError);
  });
});

describe('label kinds', () => {
  const kinds: [string, string, number[], number[], string][] = [
    ['int labels [n]', '<i4', [4], [0, 2, 1, 2], 'index'],
    ['integer floats [n, 1]', '<f4', [4, 1], [1, 0, 3, 2], 'index'],
    ['one-hot rows', '<f4', [3, 3], [0, 1, 0, 1, 0, 0, 0, 0, 1], 'onehot'],
    ['uint8 one-hot rows', '|u1', [2, 2], [1, 0, 0, 1], 'onehot'],
    ['fractional targets', '<f8', [4], [0.5, 1, 2, 3], 'values'],
    ['negative integers', '<i2', [4], [0, -1, 2, 3], 'values'],
    ['rows with two ones', '<f4', [2, 3], [1, 1, 0, 0, 0, 1], 'values'],
    ['soft labels', '<f4', [2, 2], [0.3, 0.7, 1, 0], 'values'],
    ['[n, 2, 2] targets', '<f4', [1, 2, 2], [0, 1, 0, 0], 'values'],
  ];
  for (const [name, descr, shape, values, kind] of kinds) {
    it(`${name} → ${kind}`, async () => {
      const x = await file(npyOf('<f4', [shape[0], 1], range(shape[0])));
      const dataset = await openDataset({ x, y: await file(npyOf(descr, shape, values)) });
      expect(dataset.y?.labels).toBe(kind);
      const [batch] = await collect(dataset, 100);
      expect(batch.y).toBeInstanceOf(kind === 'index' ? Int32Array : Float32Array);
      expect(Array.from(batch.y!)).toEqual(values.map(Math.fround));
      await dataset.close();
    });
  }
});

describe('openDataset: .npz', () => {
  const x = npyOf(
    '<f4',
    [6, 2],
    range(12, (i) => i / 2),
  );
  const y = npyOf('<i8', [6], [0, 1, 2, 0, 1, 2]);

  for (const compress of [false, true]) {
    it(`streams x.npy and y.npy from a ${compress ? 'deflated' : 'stored'} archive`, async () => {
      const path = await file(
        await zipOf(
          [
            ['y.npy', y],
            ['x.npy', x],
            ['meta.npy', npyOf('<f4', [1], [0])],
          ],
          { compress },
        ),
        '.npz',
      );
      const dataset = await openDataset({ npz: path });
      expect(dataset.samples).toBe(6);
      expect(dataset.x).toEqual({ dtype: 'float32', sampleShape: [2] });
      expect(dataset.y).toEqual({ dtype: 'int64', sampleShape: [], labels: 'index' });
      const all = await collect(dataset, 4);
      expect(all.map((b) => b.count)).toEqual([4, 2]);
      expect(Array.from(all[1].x)).toEqual([4, 4.5, 5, 5.5]);
      const middle = await collect(dataset, 2, { start: 1, end: 4, preprocess: { scale: 2, offset: 1 } });
      expect(middle.map((b) => Array.from(b.x))).toEqual([
        [3, 4, 5, 6],
        [7, 8],
      ]);
      expect(middle.map((b) => Array.from(b.y!))).toEqual([[1, 2], [0]]);
      // Leaving a loop early stops the entry streams it opened.
      for await (const batch of dataset.batches(1, { start: 2 })) {
        expect(batch.y).toEqual(new Int32Array([2]));
        break;
      }
      await dataset.close();
      // A dataset shared by two roles of a job is closed by each.
      await dataset.close();
    });
  }

  it('reads an archive of named arrays as one input each, streamed together, each in its own dtype', async () => {
    const tokens = npyOf('<i8', [3, 2], [1, 2, 3, 4, 5, 6]);
    const scale = npyOf('<f4', [3, 1], [0.5, 1.5, 2.5]);
    const labels = npyOf('<i4', [3], [1, 0, 1]);
    const path = await file(
      await zipOf([
        ['tokens.npy', tokens],
        ['scale.npy', scale],
        ['y.npy', labels],
      ]),
      '.npz',
    );
    const dataset = await openDataset({ npz: path });
    expect(dataset.inputs).toEqual([
      { name: 'tokens', dtype: 'int64', sampleShape: [2] },
      { name: 'scale', dtype: 'float32', sampleShape: [1] },
    ]);
    expect(dataset.samples).toBe(3);
    const batches = await collect(dataset, 2, {
      inputDtypes: { tokens: 'int32' },
      preprocess: { scale: 1, offset: 0 },
    });
    expect(batches.map((b) => b.inputs!.map((a) => [a.constructor.name, Array.from(a)]))).toEqual([
      [
        ['Int32Array', [1, 2, 3, 4]],
        ['Float32Array', [0.5, 1.5]],
      ],
      [
        ['Int32Array', [5, 6]],
        ['Float32Array', [2.5]],
      ],
    ]);
    expect(batches.map((b) => Array.from(b.y!))).toEqual([[1, 0], [1]]);
    await dataset.close();

    // The same as one .npy file per input; their sample counts must agree.
    const paths = await Promise.all([file(tokens, '.npy'), file(scale, '.npy')]);
    const fromFiles = await openDataset({
      inputs: [
        { name: 'tokens', path: paths[0] },
        { name: 'scale', path: paths[1] },
      ],
    });
    expect(fromFiles.inputs!.map((a) => a.name)).toEqual(['tokens', 'scale']);
    expect((await collect(fromFiles, 3))[0].inputs![1]).toEqual(new Float32Array([0.5, 1.5, 2.5]));
    await fromFiles.close();
    const short = await file(npyOf('<f4', [2, 1], [1, 2]), '.npy');
    await expect(
      openDataset({
        inputs: [
          { name: 'tokens', path: paths[0] },
          { name: 'scale', path: short },
        ],
      }),
    ).rejects.toThrow('input tokens has 3 samples but scale has 2');
  });

  it('takes the first two arrays of an archive without x.npy, and refuses three', async () => {
    const path = await file(
      await zipOf([
        ['arr_0.npy', x],
        ['arr_1.npy', y],
      ]),
      '.npz',
    );
    const dataset = await openDataset({ npz: path });
    expect(dataset.y?.labels).toBe('index');
    expect((await collect(dataset, 6))[0].y).toEqual(new Int32Array([0, 1, 2, 0, 1, 2]));
    await dataset.close();
    const three = await file(
      await zipOf(
        [
          ['arr_0.npy', x],
          ['arr_1.npy', y],
          ['arr_2.npy', y],
        ],
        { compress: false },
      ),
      '.npz',
    );
    await expect(openDataset({ npz: three })).rejects.toThrow(
      'holds 3 arrays (arr_0.npy, arr_1.npy, arr_2.npy) and none is named x',
    );
    const fortran = await file(await zipOf([['x.npy', npyOf('<f4', [2, 2], [1, 2, 3, 4], { fortran: true })]]), '.npz');
    await expect(openDataset({ npz: fortran })).rejects.toThrow('x.npy: Fortran-ordered');
    await expect(openDataset({ npz: await file('not a zip', '.npz') })).rejects.toThrow('not a readable .npz');
  });
});

describe('openDataset: JSON', () => {
  it('parses {x, y} whole and batches it like the others', async () => {
    const path = await file(
      JSON.stringify({
        x: [
          [1, 2],
          [3, 4],
          [5, 6],
        ],
        y: [
          [0, 1],
          [1, 0],
          [0, 1],
        ],
      }),
      '.json',
    );
    const dataset = await openDataset({ json: path });
    expect(dataset.x).toEqual({ dtype: 'float64', sampleShape: [2] });
    expect(dataset.y).toEqual({ dtype: 'float64', sampleShape: [2], labels: 'onehot' });
    const batches = await collect(dataset, 2, { start: 1, preprocess: { scale: 10, offset: 0 } });
    expect(batches.map((b) => Array.from(b.x))).toEqual([[30, 40, 50, 60]]);
    expect(Array.from(batches[0].y!)).toEqual([1, 0, 0, 1]);
    await dataset.close();
  });

  it('names ragged paths and refuses files over the cap', async () => {
    await expect(openDataset({ json: await file(JSON.stringify({ x: [[1], [2, 3]] }), '.json') })).rejects.toThrow(
      '/x/1: shape [2] differs',
    );
    await expect(openDataset({ json: await file('{"x": [1], "y": [1, 2]}', '.json') })).rejects.toThrow(
      'x has 1 samples but y has 2',
    );
    const big = join(dir, 'big.json');
    await writeFile(big, '');
    const handle = await open(big, 'r+');
    await handle.truncate(JSON_DATASET_MAX_BYTES + 1);
    await handle.close();
    await expect(openDataset({ json: big })).rejects.toThrow(
      `capped at ${JSON_DATASET_MAX_BYTES} bytes — send .npy or .npz instead`,
    );
  });
});

describe('datasetFiles', () => {
  it('maps CLI references to files', () => {
    expect(datasetFiles('data/train.npz')).toEqual({ npz: 'data/train.npz' });
    expect(datasetFiles('eval.JSON')).toEqual({ json: 'eval.JSON' });
    expect(datasetFiles('x.npy')).toEqual({ x: 'x.npy' });
    expect(datasetFiles('x.npy,y.npy')).toEqual({ x: 'x.npy', y: 'y.npy' });
    expect(() => datasetFiles('images.csv')).toThrow('give a .npz, a .json {x, y}, x.npy, or x.npy,y.npy');
  });
});

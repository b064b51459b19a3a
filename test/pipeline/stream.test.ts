import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { ModelError } from '../../src/model/errors.js';
import { readFileSetFromDir, readModelDir } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { NotStreamable, streamingBlocker, streamQuantize } from '../../src/pipeline/stream.js';
import { createRng } from '../../src/quant/rng.js';
import { writeTreeAtomically } from '../../src/storage/tree.js';
import { buildDepthwiseGraphModel, buildGraphModel, buildLayersModel, saveLayersModel } from '../fixtures/models.js';
import { expectStreamedAsInMemory, inMemory, normalisedReport, readTree, streamedInto } from './stream-compare.js';

/**
 * The streaming path (src/pipeline/stream.ts) against the in-memory one (src/pipeline/run.ts) on the same
 * model directory and spec: every artifact file byte for byte, and report.json with only the fields that
 * are inherently different normalised away.
 */

let dir: string;
const models: Record<string, string> = {};

async function saveDir(name: string, files: FileSet): Promise<string> {
  const path = join(dir, 'models', name);
  await writeTreeAtomically(path, files);
  return path;
}

/**
 * Dense layers only, saved in 1 KiB shards. d1's kernel is [2, 32]:
 * per-channel grids cost 64 bits of side information per 2 weights there, more than float32.
 */
async function buildDenseModel(): Promise<FileSet> {
  const rng = createRng(11);
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [2], units: 32, activation: 'relu', name: 'd1' }),
      tf.layers.dense({ units: 16, activation: 'relu', name: 'd2' }),
      tf.layers.dense({ units: 5, name: 'd3' }),
    ],
  });
  try {
    model.setWeights(
      model.weights.map((w) => {
        const size = w.shape.reduce((a, b) => a! * b!, 1)!;
        return tf.tensor(
          Float32Array.from({ length: size }, () => (rng.next() - 0.5) * 0.4),
          w.shape as number[],
        );
      }),
    );
    return await saveLayersModel(model, 1024);
  } finally {
    model.dispose();
  }
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'qaas-stream-'));
  models.dense = await saveDir('dense', await buildDenseModel());
  models.layers = await saveDir('layers', await buildLayersModel({ shardSizeBytes: 700 }));
  models.graph = await saveDir('graph', buildGraphModel({ shardSizeBytes: 300 }));
  models.depthwise = await saveDir('depthwise', buildDepthwiseGraphModel());
  // A source stored quantized (uint8 grids and float16 in its manifest), as qaas's own model/ output is.
  const firstPass = await inMemory(models.dense, {
    method: { name: 'affine', bits: 8 },
    layers: { overrides: { 'd3/**': { name: 'float16' } } },
  });
  const quantizedSource = new Map<string, Uint8Array>();
  for (const [path, bytes] of firstPass) if (path.startsWith('model/')) quantizedSource.set(path.slice(6), bytes);
  models.quantizedSource = await saveDir('quantized-source', quantizedSource);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function streamed(modelDir: string, raw: Record<string, unknown>, threads?: number): Promise<FileSet> {
  return streamedInto(dir, modelDir, raw, threads);
}

/** On the main thread (the default for models this small) and on two worker threads. */
async function expectSameArtifacts(model: string, raw: Record<string, unknown>): Promise<void> {
  await expectStreamedAsInMemory(dir, models[model], raw, [undefined, 2]);
}

const noFold = { foldBatchNorm: false };

describe('streaming PTQ writes the in-memory pipeline’s artifacts byte for byte', () => {
  const cases: [string, Record<string, unknown>][] = [
    ['dense', { method: { name: 'affine', bits: 8 } }],
    ['dense', { method: { name: 'affine', bits: 8, granularity: 'per-channel' } }],
    ['dense', { method: { name: 'affine', bits: 4, symmetric: true, granularity: 'per-channel' } }],
    ['dense', { method: { name: 'affine', bits: 12 }, output: { shardSizeBytes: 1500 } }],
    ['dense', { method: { name: 'affine', bits: 3, range: 'mse', seed: 5 } }],
    ['dense', { method: { name: 'affine', bits: 6, rounding: 'stochastic', seed: 9, granularity: 'per-channel' } }],
    ['layers', { ...noFold, method: { name: 'affine', bits: 8 } }],
    // Its BatchNorm follows a ReLU: planned, skipped, reported (test/pipeline/stream-batchnorm.test.ts folds).
    ['layers', { method: { name: 'affine', bits: 8 } }],
    ['layers', { ...noFold, method: { name: 'affine', bits: 5, granularity: 'per-channel', range: 'percentile' } }],
    ['layers', { ...noFold, method: { name: 'binary', granularity: 'per-channel' }, layers: { skip: ['lstm/**'] } }],
    [
      'layers',
      { ...noFold, method: { name: 'ternary' }, layers: { overrides: { 'dense/**': { name: 'kmeans', bits: 3 } } } },
    ],
    ['layers', { ...noFold, method: { name: 'pow2', bits: 4 } }],
    ['layers', { ...noFold, method: { name: 'float16' } }],
    ['graph', { method: { name: 'affine', bits: 8 } }],
    ['graph', { method: { name: 'affine', bits: 2, granularity: 'per-channel' } }],
    ['graph', { method: { name: 'kmeans', bits: 4, init: 'kmeans++', seed: 3 } }],
    ['depthwise', { method: { name: 'affine', bits: 8, granularity: 'per-channel' } }],
    ['depthwise', { method: { name: 'affine', bits: 16, symmetric: true } }],
    ['quantizedSource', { method: { name: 'affine', bits: 4, granularity: 'per-channel' } }],
    // Per block where that costs less than float32; d2 and d3 share one codebook, the biases stay float32.
    ['dense', { method: { name: 'pq', bits: 4, subvectorLength: 2, seed: 1 } }],
    ['layers', { ...noFold, method: { name: 'pq', bits: 3, codebooks: 'shared', trainingSample: 256 } }],
    ['graph', { method: { name: 'pq', bits: 2, subvectorLength: 3 } }],
  ];
  for (const [model, raw] of cases) {
    it(`${model}: ${JSON.stringify(raw)}`, async () => {
      await expectSameArtifacts(model, raw);
    });
  }

  it('leaves a tensor whose side information would cost more than float32 in float32, as in memory', async () => {
    const raw = { method: { name: 'affine', bits: 8, granularity: 'per-channel' } };
    const report = JSON.parse(new TextDecoder().decode((await streamed(models.dense, raw)).get('report.json')!)) as {
      skipped: { name: string; reason: string }[];
      warnings: string[];
    };
    expect(report.skipped).toEqual([{ name: 'd1/kernel', reason: 'affine would inflate it beyond float32' }]);
    expect(report.warnings[0]).toMatch(/^d1\/kernel: affine costs 40\.0 bits\/weight/);
  });

  it('gives pq one shared codebook where per-block ones would cost more than float32, as in memory', async () => {
    const raw = { method: { name: 'pq', bits: 4, subvectorLength: 2, seed: 1 } };
    const report = JSON.parse(new TextDecoder().decode((await streamed(models.dense, raw)).get('report.json')!)) as {
      tensors: { name: string; bitsPerWeight: number }[];
      warnings: string[];
    };
    // d2/kernel [32, 16]: 16 blocks of 2 rows; per block (256 · 4 + 16 · 16 · 2 · 32) / 512 = 34 bits/weight,
    // shared (256 · 4 + 16 · 2 · 32) / 512 = 4.
    expect(report.warnings).toContain(
      'd2/kernel: pq per-block codebooks would cost 34.0 bits/weight (more than float32) on [32, 16]; ' +
        'one shared codebook was used (4.0 bits/weight)',
    );
    expect(report.tensors.find((t) => t.name === 'd2/kernel')!.bitsPerWeight).toBe(4);
  });
});

describe('a model given as files on disk (manifest path → file, as the service stores blobs)', () => {
  it('streams to the same artifacts as from its directory', async () => {
    const blobs = join(dir, 'blobs');
    await mkdir(blobs);
    const files = new Map<string, string>();
    for (const [path, bytes] of await readFileSetFromDir(models.graph)) {
      const blob = join(blobs, `blob-${files.size}`);
      await writeFile(blob, bytes);
      files.set(path, blob);
    }
    const raw = { method: { name: 'affine', bits: 4, granularity: 'per-channel' } };
    const fromDir = await streamed(models.graph, raw);
    const out = join(dir, 'from-blobs');
    await streamQuantize(files, parseJobSpec(raw), out);
    const fromBlobs = await readTree(out);
    for (const [path, bytes] of fromDir) {
      if (path !== 'report.json') expect(Buffer.compare(Buffer.from(fromBlobs.get(path)!), Buffer.from(bytes))).toBe(0);
    }
    expect(normalisedReport(fromBlobs.get('report.json')!)).toBe(normalisedReport(fromDir.get('report.json')!));
  });
});

describe('what streaming refuses', () => {
  it('names the spec fields that need the whole model', () => {
    expect(streamingBlocker(parseJobSpec({ method: { name: 'affine' } }))).toBeUndefined();
    expect(streamingBlocker(parseJobSpec({ method: { name: 'pq' } }))).toBeUndefined();
    expect(streamingBlocker(parseJobSpec({ method: { name: 'affine' }, data: { evaluation: 'x.npz' } }))).toMatch(
      /data\.evaluation/,
    );
    expect(
      streamingBlocker(
        parseJobSpec({ method: { name: 'affine' }, data: { calibration: 'c' }, ptq: { algorithm: 'gptq' } }),
      ),
    ).toMatch(/gptq/);
  });

  it('throws NotStreamable for a spec it cannot run, before writing anything', async () => {
    const out = join(dir, 'refused');
    const spec = parseJobSpec({ method: { name: 'affine' }, data: { evaluation: 'x.npz' } });
    await expect(streamQuantize(models.dense, spec, out)).rejects.toThrow(NotStreamable);
    await expect(readdir(out)).rejects.toThrow(/ENOENT/);
  });

  it('names the first missing shard in manifest order, though it looks for all of them at once', async () => {
    const files = await readFileSetFromDir(models.dense);
    const shards = [...files.keys()].filter((key) => key.endsWith('.bin'));
    expect(shards).toHaveLength(3);
    const [, second, third] = shards;
    const broken = await saveDir('missing', new Map([...files].filter(([key]) => key !== second && key !== third)));
    const out = join(dir, 'missing-out');
    const error = await streamQuantize(broken, parseJobSpec({ method: { name: 'affine' } }), out).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error).toMatchObject({ code: 'missing-file', file: second });
    await expect(readdir(out)).rejects.toThrow(/ENOENT/);
  });

  it('fails on a NaN weight with readModel’s ModelError and leaves nothing behind', async () => {
    const files = await readFileSetFromDir(models.dense);
    const first = [...files.keys()].find((key) => key.startsWith('group1-shard1of'))!;
    const shard = Uint8Array.from(files.get(first)!);
    new Float32Array(shard.buffer)[7] = Number.NaN;
    const broken = await saveDir('nan', new Map([...files, [first, shard]]));
    const spec = parseJobSpec({ method: { name: 'affine', bits: 8 } });
    const inMemoryError = await readModelDir(broken).catch((error: unknown) => error);
    expect(inMemoryError).toBeInstanceOf(ModelError);
    for (const threads of [0, 2]) {
      const out = join(dir, `nan-out-${threads}`);
      await expect(streamQuantize(broken, spec, out, { threads })).rejects.toThrow((inMemoryError as Error).message);
      await expect(readdir(out)).rejects.toThrow(/ENOENT/);
    }
  });
});

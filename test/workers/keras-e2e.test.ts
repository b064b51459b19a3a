/**
 * A Keras model end to end (files Keras itself saved, test/fixtures/keras): uploaded as `.keras` through
 * the API, quantized by a ptq job on a sandboxed worker, its model/ artifact loaded by stock
 * tf.loadLayersModel and compared with Keras's own outputs; and the CLI's `qaas submit` (to the same
 * service) and `qaas quantize` (offline) taking `.keras` / `.h5` files.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { convertKerasBytes } from '../../src/model/keras/index.js';
import { loadRunnable } from '../../src/model/load.js';
import { readFileSetFromDir } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { cleanup, multipart, testConfig } from '../http/helpers.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/keras');
const run = promisify(execFile);
const cli = new URL('../../dist/src/cli.js', import.meta.url).pathname;

interface Expected {
  x: { dtype: string; shape: number[]; values: number[] };
  y: { shape: number[]; values: number[] };
}

let config: Config;
let app: FastifyInstance;
let workers: Closable;
let baseUrl: string;
let dir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  config = await testConfig();
  app = await buildApp(config, { logger: false });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  workers = startWorkers(config, { concurrency: 1 });
  dir = await mkdtemp(path.join(tmpdir(), 'qaas-keras-'));
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  await cleanup(config);
  await rm(dir, { recursive: true, force: true });
});

async function qaas(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      env: { ...process.env, QAAS_API_URL: baseUrl, QAAS_TF_BACKEND: 'wasm' },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

async function expected(name: string): Promise<Expected> {
  return JSON.parse(await readFile(path.join(FIXTURES, `${name}.expected.json`), 'utf8')) as Expected;
}

/** Largest |stock-tfjs output − Keras output| on the fixture's saved input. */
async function maxAbsError(files: FileSet, saved: Expected): Promise<number> {
  const model = (await loadRunnable(files)) as tf.LayersModel;
  const x = tf.tensor(saved.x.values, saved.x.shape, saved.x.dtype === 'int32' ? 'int32' : 'float32');
  const y = model.predict(x) as tf.Tensor;
  expect(y.shape).toEqual(saved.y.shape);
  const got = await y.data();
  tf.dispose([x, y]);
  model.dispose();
  return saved.y.values.reduce((worst, want, i) => Math.max(worst, Math.abs(got[i] - want)), 0);
}

async function waitFor(jobId: string): Promise<Record<string, unknown>> {
  for (;;) {
    const job = (await app.inject({ url: `/v1/jobs/${jobId}` })).json();
    if (job.status === 'succeeded' || job.status === 'failed') return job;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('a Keras model through the service', () => {
  it('uploads as .keras, quantizes in a ptq job, and its model/ loads in stock tfjs close to Keras', async () => {
    const data = await readFile(path.join(FIXTURES, 'functional_skip_bn.keras'));
    const uploaded = await app.inject({
      method: 'POST',
      url: '/v1/models',
      ...multipart([{ filename: 'functional_skip_bn.keras', data }]),
    });
    expect(uploaded.statusCode, uploaded.body).toBe(201);
    expect(uploaded.json().source).toEqual({ format: 'keras', kerasVersion: '3.15.1' });

    const submitted = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId: uploaded.json().id, kind: 'ptq', method: { name: 'affine', bits: 8 } },
    });
    expect(submitted.statusCode, submitted.body).toBe(202);
    const job = await waitFor(submitted.json().id);
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
    const summary = job.summary as { quantizedParams: number; params: number };
    // Every conv and dense kernel: 3·3·2·4 + 3·3·4·4 + 6·6 + 6·4 + 4·3.
    expect(summary.quantizedParams).toBe(72 + 144 + 36 + 24 + 12);

    const files: FileSet = new Map();
    const modelJson = await app.inject({ url: `/v1/jobs/${submitted.json().id}/artifacts/model/model.json` });
    files.set('model.json', new Uint8Array(modelJson.rawPayload));
    for (const shard of modelJson.json().weightsManifest[0].paths as string[]) {
      const res = await app.inject({ url: `/v1/jobs/${submitted.json().id}/artifacts/model/${shard}` });
      files.set(shard, new Uint8Array(res.rawPayload));
    }
    const error = await maxAbsError(files, await expected('functional_skip_bn'));
    console.log(`functional_skip_bn.keras after 8-bit ptq: max abs error vs Keras ${error.toExponential(2)}`);
    // 8-bit weights move the softmax outputs a little, never by much; unquantized it is within 1e-7.
    expect(error).toBeGreaterThan(0);
    expect(error).toBeLessThan(5e-3);
  });

  it('qaas submit uploads a .h5 and downloads artifacts that load in stock tfjs', async () => {
    const out = path.join(dir, 'submitted');
    const result = await qaas('submit', path.join(FIXTURES, 'lstm.h5'), '--out', out, '--bits', '8');
    expect(result.stderr).toMatch(/^model mdl_\w+\njob job_\w+ queued\nwrote /);
    expect(result.code).toBe(0);
    const modelId = result.stderr.match(/model (mdl_\w+)/)![1];
    expect((await app.inject({ url: `/v1/models/${modelId}` })).json().source).toEqual({
      format: 'h5',
      kerasVersion: '3.15.1',
    });
    const error = await maxAbsError(await readFileSetFromDir(path.join(out, 'model')), await expected('lstm'));
    console.log(`lstm.h5 after 8-bit ptq: max abs error vs Keras ${error.toExponential(2)}`);
    expect(error).toBeLessThan(0.05);
  });
});

describe('qaas quantize on Keras files', () => {
  it('converts a .keras offline and writes a model stock tfjs loads', async () => {
    const out = path.join(dir, 'offline');
    const result = await qaas('quantize', path.join(FIXTURES, 'sequential_cnn.keras'), '--out', out, '--bits', '8');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('5 tensors quantized, 0 skipped');
    const error = await maxAbsError(
      await readFileSetFromDir(path.join(out, 'model')),
      await expected('sequential_cnn'),
    );
    console.log(`sequential_cnn.keras after 8-bit ptq: max abs error vs Keras ${error.toExponential(2)}`);
    expect(error).toBeGreaterThan(0);
    expect(error).toBeLessThan(0.02);
  });

  it('runs every job kind on a converted model: qat, analyze and auto as ptq', async () => {
    // Labels are the converted float model's own argmax on random inputs, so the float accuracy is 1 exactly.
    const { files } = await convertKerasBytes(
      new Uint8Array(await readFile(path.join(FIXTURES, 'functional_skip_bn.keras'))),
      'functional_skip_bn.keras',
    );
    const float = (await loadRunnable(files)) as tf.LayersModel;
    const x = tf.randomNormal([16, 6, 6, 2], 0, 1, 'float32', 7);
    const y = tf.tidy(() => tf.oneHot((float.predict(x) as tf.Tensor).argMax(-1), 3));
    const dataset = path.join(dir, 'skip-bn.json');
    await writeFile(dataset, JSON.stringify({ x: await x.array(), y: await y.array() }));
    tf.dispose([x, y]);
    float.dispose();
    const kinds: [string, string[], string][] = [
      ['qat', ['--train', dataset, '--eval', dataset], 'qat'],
      ['analyze', ['--eval', dataset], 'ptq'],
      ['auto', ['--eval', dataset, '--verify', dataset, '--max-drop', '0.2'], 'ptq'],
    ];
    for (const [kind, data, stage] of kinds) {
      const out = path.join(dir, `kind-${kind}`);
      const result = await qaas(
        'quantize',
        path.join(FIXTURES, 'functional_skip_bn.keras'),
        '--out',
        out,
        '--kind',
        kind,
        '--bits',
        '4',
        ...data,
        '-q',
      );
      expect(result.stderr, kind).toBe('');
      expect(result.code, kind).toBe(0);
      const report = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8'));
      expect(report.model.metrics.float.accuracy, kind).toBe(1);
      expect(report.model.metrics[stage].samples, kind).toBe(16);
      // --verify is the held-out set auto checks every trial on.
      if (kind === 'auto') {
        expect(report.search.heldOut).toMatchObject({ source: 'verification', samples: 16 });
        // Here it is the evaluation set itself, which the report says.
        expect(report.warnings).toContain(
          `data.verification is data.evaluation (${dataset}): the held-out drop is measured on the data searched on`,
        );
      }
      await loadRunnable(await readFileSetFromDir(path.join(out, 'model'))).then((model) => model.dispose());
    }
  });

  it('names the layer tfjs cannot represent and writes nothing', async () => {
    const out = path.join(dir, 'refused');
    const result = await qaas('quantize', path.join(FIXTURES, 'unsupported_layer.keras'), '--out', out);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/groups: GroupNormalization is not a tf\.layers class/);
    await expect(readFile(path.join(out, 'report.json'))).rejects.toThrow(/ENOENT/);
  });
});

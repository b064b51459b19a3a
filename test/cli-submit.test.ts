/**
 * `qaas submit` against a real listening service with a sandboxed worker: the model directory and local
 * .npy datasets are uploaded, the job runs, the artifacts land in --out and load in stock tfjs; a bad spec
 * or key ends with exit 2 before anything is stored; --detach prints the queued job's id.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import { buildApp } from '../src/http/app.js';
import { readFileSetFromDir } from '../src/model/read.js';
import { startWorkers, type Closable } from '../src/service.js';
import { writeTreeAtomically } from '../src/storage/tree.js';
import { loadStockLayers } from './fixtures/models.js';
import { cleanup, tinyModel, testConfig } from './http/helpers.js';
import { elements, npy } from './model/dataset/npy-fixture.js';

const run = promisify(execFile);
const cli = new URL('../dist/src/cli.js', import.meta.url).pathname;
const alice = { authorization: 'Bearer alice-key' };

let config: Config;
let app: FastifyInstance;
let workers: Closable;
let baseUrl: string;
let dir: string;

async function qaas(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      env: { ...process.env, QAAS_API_URL: baseUrl },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

async function modelCount(): Promise<number> {
  return (await app.inject({ url: '/v1/models', headers: alice })).json().items.length;
}

beforeAll(async () => {
  config = await testConfig({ QAAS_API_KEYS: 'alice:alice-key' });
  app = await buildApp(config, { logger: false });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  workers = startWorkers(config, { concurrency: 1 });
  dir = await mkdtemp(join(tmpdir(), 'qaas-submit-'));
  await writeTreeAtomically(join(dir, 'model'), await tinyModel());
  const samples = 8;
  const x = Array.from({ length: samples * 4 }, (_, i) => Math.sin(i));
  const y = Array.from({ length: samples }, (_, i) => (i % 2 === 0 ? [1, 0] : [0, 1])).flat();
  await writeFile(join(dir, 'x.npy'), npy('<f4', [samples, 4], elements('<f4', x)));
  await writeFile(join(dir, 'y.npy'), npy('<f4', [samples, 2], elements('<f4', y)));
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  await cleanup(config);
  await rm(dir, { recursive: true, force: true });
});

describe('qaas submit', () => {
  it('uploads the model and datasets, runs the job on the service and writes its artifacts', async () => {
    const out = join(dir, 'out');
    const evalRef = `${join(dir, 'x.npy')},${join(dir, 'y.npy')}`;
    const result = await qaas(
      'submit',
      join(dir, 'model'),
      '--api-key',
      'alice-key',
      '--out',
      out,
      '--bits',
      '4',
      '--eval',
      evalRef,
      '--priority',
      '3',
    );
    expect(result.stderr).toMatch(/^model mdl_\w+\ndata\.evaluation ds_\w+\njob job_\w+ queued\nwrote /);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('2 tensors quantized, 0 skipped');
    expect(result.stdout).toMatch(/^float: samples 8, accuracy /m);

    const jobId = result.stderr.match(/job (job_\w+)/)![1];
    const job = (await app.inject({ url: `/v1/jobs/${jobId}`, headers: alice })).json();
    expect(job.status).toBe('succeeded');
    expect(job.spec.priority).toBe(3);
    expect(job.spec.method).toMatchObject({ name: 'affine', bits: 4 });
    expect(job.spec.data.evaluation).toMatch(/^ds_/);

    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.tensors.map((t: { bits: number }) => t.bits)).toEqual([4, 4]);
    // Evaluated on the 8 uploaded samples: accuracies are multiples of 1/8.
    for (const stage of ['float', 'ptq']) {
      expect(report.model.metrics[stage].samples).toBe(8);
      expect(report.model.metrics[stage].accuracy * 8).toBeCloseTo(
        Math.round(report.model.metrics[stage].accuracy * 8),
        9,
      );
    }

    await tf.setBackend('cpu');
    const stock = await loadStockLayers(await readFileSetFromDir(join(out, 'model')));
    const input = tf.tensor2d([[0.5, -1, 2, 0.25]]);
    const output = stock.predict(input) as tf.Tensor;
    expect(output.shape).toEqual([1, 2]);
    tf.dispose([input, output]);
    stock.dispose();
  });

  it("on a terminal, draws the job's progress up to 100%", async () => {
    // script(1) gives the CLI a pseudo-terminal, so it draws its bar as it does for a user.
    const command = [
      process.execPath,
      cli,
      'submit',
      join(dir, 'model'),
      '--api-key',
      'alice-key',
      '--method',
      'ternary',
    ]
      .map((arg) => `'${arg}'`)
      .join(' ');
    const { stdout } = await run('script', ['-qefc', command, '/dev/null'], {
      env: { ...process.env, QAAS_API_URL: baseUrl },
    });
    const percentages = [...stdout.matchAll(/(\d+)% \| /g)].map((match) => Number(match[1]));
    expect(percentages.length).toBeGreaterThan(0);
    expect(percentages.at(-1)).toBe(100);
    expect(stdout).toContain('2 tensors quantized');
  });

  it('uploads a model whose manifest names its shards with ./', async () => {
    const files = await tinyModel();
    const modelJson = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    modelJson.weightsManifest[0].paths = modelJson.weightsManifest[0].paths.map((shard: string) => `./${shard}`);
    files.set('model.json', new TextEncoder().encode(JSON.stringify(modelJson)));
    await writeTreeAtomically(join(dir, 'dotted'), files);
    const result = await qaas('submit', join(dir, 'dotted'), '--api-key', 'alice-key', '--detach', '--quiet');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^job_\w+\n$/);
  });

  it('uploads a lone .npy as a calibration set whatever its name', async () => {
    await writeFile(join(dir, 'cal.npy'), await readFile(join(dir, 'x.npy')));
    const result = await qaas(
      'submit',
      join(dir, 'model'),
      '--api-key',
      'alice-key',
      '--calibration',
      join(dir, 'cal.npy'),
      '--activation-bits',
      '8',
      '--detach',
      '--quiet',
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const job = (await app.inject({ url: `/v1/jobs/${result.stdout.trim()}`, headers: alice })).json();
    expect(job.spec.data.calibration).toMatch(/^ds_/);
    const dataset = (await app.inject({ url: `/v1/datasets/${job.spec.data.calibration}`, headers: alice })).json();
    expect(dataset.x.shape).toEqual([8, 4]);
    expect(dataset.y).toBeNull();
  });

  it('run twice on the same model and data stores one model and one dataset; --name and --label name the job', async () => {
    await writeTreeAtomically(join(dir, 'twice'), await tinyModel());
    const jobIds: string[] = [];
    for (const run of [0, 1]) {
      const result = await qaas(
        'submit',
        join(dir, 'twice'),
        '--api-key',
        'alice-key',
        '--calibration',
        join(dir, 'x.npy'),
        '--activation-bits',
        '8',
        '--name',
        `nightly ${run}`,
        '--label',
        'pipeline=nightly',
        '--label',
        `run=${run}`,
        '--detach',
        '--quiet',
      );
      expect(result.code, result.stderr).toBe(0);
      jobIds.push(result.stdout.trim());
    }
    const jobs = await Promise.all(
      jobIds.map(async (id) => (await app.inject({ url: `/v1/jobs/${id}`, headers: alice })).json()),
    );
    expect(jobs[1].modelId).toBe(jobs[0].modelId);
    expect(jobs[1].spec.data.calibration).toBe(jobs[0].spec.data.calibration);
    const model = (await app.inject({ url: `/v1/models/${jobs[0].modelId}`, headers: alice })).json();
    const models = (await app.inject({ url: '/v1/models?limit=100', headers: alice })).json().items;
    expect(models.filter((m: { sha256: string }) => m.sha256 === model.sha256)).toHaveLength(1);
    const datasetId = jobs[0].spec.data.calibration;
    const dataset = (await app.inject({ url: `/v1/datasets/${datasetId}`, headers: alice })).json();
    const datasets = (await app.inject({ url: '/v1/datasets?limit=100', headers: alice })).json().items;
    expect(datasets.filter((d: { sha256?: string }) => d.sha256 === dataset.sha256)).toHaveLength(1);

    expect(jobs.map((job) => job.name)).toEqual(['nightly 0', 'nightly 1']);
    expect(jobs[1].labels).toEqual({ pipeline: 'nightly', run: '1' });
    const listed = await app.inject({ url: '/v1/jobs?label=pipeline=nightly&label=run', headers: alice });
    expect(listed.json().items.map((job: { id: string }) => job.id)).toEqual([...jobIds].reverse());
    const badLabel = await qaas('submit', join(dir, 'twice'), '--api-key', 'alice-key', '--label', 'no-equals');
    expect(badLabel.code).toBe(2);
    expect(badLabel.stderr).toContain('--label takes key=value');
  });

  it('ends with exit 2 on a bad spec or key, before anything is stored', async () => {
    const before = await modelCount();
    const badSpec = await qaas('submit', join(dir, 'model'), '--api-key', 'alice-key', '--bits', '99');
    expect(badSpec.code).toBe(2);
    expect(badSpec.stderr).toMatch(/^qaas: invalid spec: \/method\/bits/);
    const badKey = await qaas('submit', join(dir, 'model'), '--api-key', 'nope');
    expect(badKey.code).toBe(2);
    expect(badKey.stderr).toMatch(/^qaas: 401 /);
    const noModel = await qaas('submit', 'mdl_0000000000000000000000000', '--api-key', 'alice-key');
    expect(noModel.code).toBe(2);
    expect(noModel.stderr).toContain('no model mdl_0000000000000000000000000');
    expect(await modelCount()).toBe(before);
  });

  it('--detach prints the id of the queued job, and qaas fetch waits for it and downloads it', async () => {
    const modelId = (await app.inject({ url: '/v1/models', headers: alice })).json().items[0].id;
    const result = await qaas(
      'submit',
      modelId,
      '--api-key',
      'alice-key',
      '--detach',
      '--quiet',
      '--method',
      'ternary',
    );
    expect(result.code).toBe(0);
    const jobId = result.stdout.trim();
    const job = (await app.inject({ url: `/v1/jobs/${jobId}`, headers: alice })).json();
    expect(job.method).toBe('ternary');
    expect(job.modelId).toBe(modelId);

    const out = join(dir, 'fetched');
    const fetched = await qaas('fetch', jobId, '--api-key', 'alice-key', '--out', out);
    expect(fetched.code).toBe(0);
    expect(fetched.stdout).toContain('2 tensors quantized');
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.tensors.map((t: { method: string }) => t.method)).toEqual(['ternary', 'ternary']);
    const badId = await qaas('fetch', 'not-a-job');
    expect(badId.code).toBe(2);
    expect(badId.stderr).toBe('qaas: fetch takes one job id (job_…); run qaas fetch --help\n');
  });

  it('waits out the rate limit (429 with Retry-After) instead of failing', async () => {
    const strict = await buildApp({ ...config, rateLimit: { max: 3, timeWindowMs: 1000 } }, { logger: false });
    const strictUrl = await strict.listen({ port: 0, host: '127.0.0.1' });
    try {
      const out = join(dir, 'strict');
      const result = await qaas(
        'submit',
        join(dir, 'model'),
        '--api',
        strictUrl,
        '--api-key',
        'alice-key',
        '--out',
        out,
        '--quiet',
      );
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
      expect(report.tensors).toHaveLength(2);
      // Upload, submit, events, report and six artifacts are more than 3 a second: some were answered 429.
      const metrics = (await strict.inject({ url: '/metrics' })).body;
      const limited = [...metrics.matchAll(/^qaas_http_request_duration_seconds_count\{[^}]*status="429"\} (\d+)$/gm)];
      expect(limited.reduce((sum, match) => sum + Number(match[1]), 0)).toBeGreaterThan(0);
    } finally {
      await strict.close();
    }
  });

  it('says which service it cannot reach, with exit 1', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const result = await qaas('submit', join(dir, 'model'), '--api', `http://127.0.0.1:${port}`, '--quiet');
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`qaas: cannot reach the service at http://127.0.0.1:${port}: ECONNREFUSED\n`);
  });
});

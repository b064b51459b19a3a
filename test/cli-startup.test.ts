/**
 * What `qaas` loads before it does its work: the offline streaming quantize none of the service's modules
 * (fastify, BullMQ, Redis, pino) nor tfjs, and --help nothing from node_modules (TypeBox was most of the
 * CLI's start-up). Each run records its modules with test/fixtures/record-loads.mjs.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const cli = new URL('../dist/src/cli.js', import.meta.url).pathname;
const recorder = new URL('./fixtures/record-loads.mjs', import.meta.url).pathname;

let dir: string;

/** The module URLs one `qaas ...args` run loaded; the run must exit 0. */
async function loadsOf(...args: string[]): Promise<string[]> {
  const file = join(dir, `loads-${args[0]}.txt`);
  await run(process.execPath, ['--import', recorder, cli, ...args], {
    env: { ...process.env, QAAS_TEST_LOADS_FILE: file },
  });
  return (await readFile(file, 'utf8')).trim().split('\n');
}

/** The package a node_modules URL belongs to (`@scope/name` or `name`). */
function packageOf(url: string): string | undefined {
  return /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-startup-'));
  // One Dense layer, 4×3 kernel and 3 biases: the streaming path takes it.
  const model = join(dir, 'model');
  await mkdir(model);
  const weights = Float32Array.from({ length: 15 }, (_, i) => (i - 7) / 8);
  await writeFile(join(model, 'group1-shard1of1.bin'), new Uint8Array(weights.buffer));
  await writeFile(
    join(model, 'model.json'),
    JSON.stringify({
      format: 'layers-model',
      modelTopology: {
        class_name: 'Sequential',
        config: {
          name: 'tiny',
          layers: [
            { class_name: 'InputLayer', config: { batch_input_shape: [null, 4], dtype: 'float32', name: 'input' } },
            { class_name: 'Dense', config: { name: 'dense', units: 3, activation: 'linear', use_bias: true } },
          ],
        },
      },
      weightsManifest: [
        {
          paths: ['group1-shard1of1.bin'],
          weights: [
            { name: 'dense/kernel', shape: [4, 3], dtype: 'float32' },
            { name: 'dense/bias', shape: [3], dtype: 'float32' },
          ],
        },
      ],
    }),
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('qaas start-up', () => {
  it('quantize on the streaming path loads no service module and no tfjs', async () => {
    const out = join(dir, 'out');
    const loads = await loadsOf('quantize', join(dir, 'model'), '--out', out, '--bits', '8', '--quiet');
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.tensors.map((t: { name: string }) => t.name)).toEqual(['dense/kernel']);
    // The recorder saw the run: the streaming engine and the spec's TypeBox are among the loads.
    expect(loads.some((url) => url.endsWith('/dist/src/pipeline/stream.js'))).toBe(true);
    const packages = new Set(loads.map(packageOf).filter((name) => name !== undefined));
    expect(packages.has('@sinclair/typebox')).toBe(true);
    const service = /^(fastify|@fastify\/.*|bullmq|ioredis|pino|@tensorflow\/.*|cli-progress|eventsource-parser)$/;
    expect([...packages].filter((name) => service.test(name))).toEqual([]);
  });

  it('--help loads nothing from node_modules', async () => {
    const loads = await loadsOf('--help');
    expect(loads.some((url) => url.endsWith('/dist/src/cli/main.js'))).toBe(true);
    expect(loads.filter((url) => packageOf(url) !== undefined)).toEqual([]);
  });
});

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { foldBatchNorm } from '../src/model/fold-batchnorm.js';
import { readFileSetFromDir, readModel } from '../src/model/read.js';
import { writeTreeAtomically } from '../src/storage/tree.js';
import {
  buildGraphModel,
  buildLayersModel,
  GRAPH_OUTPUTS,
  GRAPH_QUANTIZABLE,
  graphInput,
  LAYERS_QUANTIZABLE,
  layersInput,
  loadStockGraph,
  loadStockLayers,
  saveLayersModel,
  setSeededWeights,
} from './fixtures/models.js';
import { npy } from './model/dataset/npy-fixture.js';

const run = promisify(execFile);
const cli = new URL('../dist/src/cli.js', import.meta.url).pathname;

async function qaas(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], {
      env: { ...process.env, QAAS_TF_BACKEND: 'wasm' },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

let dir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'qaas-cli-'));
  await writeTreeAtomically(join(dir, 'model'), await buildLayersModel());
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('qaas quantize', () => {
  it('writes model/, packed/ and report.json from flags and a spec file, and prints the per-tensor table', async () => {
    const specPath = join(dir, 'spec.json');
    await writeFile(specPath, JSON.stringify({ method: { name: 'affine', bits: 8 }, layers: { skip: ['lstm/**'] } }));
    const out = join(dir, 'out');
    const result = await qaas(
      'quantize',
      join(dir, 'model'),
      '--out',
      out,
      '--spec',
      specPath,
      '--bits',
      '4',
      '--granularity',
      'per-channel',
    );
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const quantized = LAYERS_QUANTIZABLE.filter((name) => !name.startsWith('lstm/'));
    for (const name of quantized) expect(result.stdout).toContain(name);
    expect(result.stdout).toContain(`${quantized.length} tensors quantized, 2 skipped`);

    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.spec.method).toMatchObject({ name: 'affine', bits: 4, granularity: 'per-channel' });
    expect(report.tensors.every((t: { bits: number }) => t.bits === 4)).toBe(true);
    // Plain PTQ of a layers model with a BatchNorm (after a ReLU: kept as it is) streams.
    expect(report.model.backend).toBe('none');
    expect(report.batchNorm.skipped).toMatchObject([{ layer: 'batch_norm' }]);

    const stock = await loadStockLayers(await readFileSetFromDir(join(out, 'model')));
    const input = layersInput(4);
    const output = stock.predict(input) as tf.Tensor;
    expect(output.shape).toEqual([4, 4]);
    // Softmax rows: the quantized model still computes a distribution.
    for (const row of (await output.array()) as number[][]) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    tf.dispose([input, output]);
    stock.dispose();
    const packed = await readFile(join(out, 'packed', 'weights.bin'));
    expect(packed.byteLength).toBeGreaterThan(0);
  });

  it('prints the diagnosis’s worst layers when it evaluates', async () => {
    const tokens = Float32Array.from({ length: 16 * 12 }, (_, i) => (i * 7 + Math.floor(i / 12) * 3) % 16);
    const xPath = join(dir, 'tokens.npy');
    await writeFile(xPath, npy('<f4', [16, 12], new Uint8Array(tokens.buffer)));
    const out = join(dir, 'diagnosed');
    const result = await qaas('quantize', join(dir, 'model'), '--out', out, '--bits', '3', '--eval', xPath);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const { diagnosis } = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    const lines = result.stdout.split('\n').filter((l) => l.startsWith('worst layer '));
    expect(lines).toHaveLength(Math.min(3, diagnosis.worst.length));
    expect(diagnosis.worst.length).toBeGreaterThan(0);
    expect(lines[0]).toMatch(new RegExp(`^worst layer 1: ${diagnosis.worst[0]} \\(`));
    expect(lines[0]).toContain('activations –');
  });

  it('takes pq with a shared codebook from flags', async () => {
    const out = join(dir, 'pq');
    const result = await qaas(
      'quantize',
      join(dir, 'model'),
      '--out',
      out,
      '--method',
      'pq',
      '--bits',
      '4',
      '--subvector-length',
      '2',
      '--codebooks',
      'shared',
      '--quiet',
    );
    expect(result.stderr).toBe('');
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.spec.method).toMatchObject({ name: 'pq', bits: 4, subvectorLength: 2, codebooks: 'shared' });
    const manifest = JSON.parse(await readFile(join(out, 'packed', 'manifest.json'), 'utf8'));
    const dense = manifest.weights.find((w: { name: string }) => w.name === 'dense/kernel');
    expect(dense.encoding.subspaces).toBe(1);
  });

  it('streams plain PTQ when the spec and model allow it: no tfjs backend, a stock-loadable model/', async () => {
    await writeTreeAtomically(join(dir, 'graph'), buildGraphModel({ shardSizeBytes: 300 }));
    const out = join(dir, 'streamed');
    const result = await qaas('quantize', join(dir, 'graph'), '--out', out, '--bits', '8');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`${GRAPH_QUANTIZABLE.length} tensors quantized, 0 skipped`);
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.model.backend).toBe('none');
    expect(Object.keys(report.timings)).toContain('readMs');
    const stock = await loadStockGraph(await readFileSetFromDir(join(out, 'model')));
    const input = graphInput(2);
    const output = stock.predict(input) as tf.Tensor;
    expect(output.shape).toEqual([2, GRAPH_OUTPUTS]);
    tf.dispose([input, output]);
    stock.dispose();
  });

  it('streams a model whose BatchNorm folds into the Conv2D before it, as foldBatchNorm folds it', async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [4, 4, 2], filters: 3, kernelSize: 3, useBias: false, name: 'conv' }),
        tf.layers.batchNormalization({ name: 'bn' }),
        tf.layers.flatten({ name: 'flatten' }),
        tf.layers.dense({ units: 2, name: 'dense' }),
      ],
    });
    setSeededWeights(model, 4, (next) => 0.5 + next());
    const source = await saveLayersModel(model, 256);
    model.dispose();
    await writeTreeAtomically(join(dir, 'conv-bn'), source);
    const out = join(dir, 'conv-bn-out');
    const result = await qaas('quantize', join(dir, 'conv-bn'), '--out', out, '--bits', '8', '--quiet');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.model.backend).toBe('none');
    expect(Object.keys(report.timings)).toContain('readMs');
    // ptq.equalize (the default) keeps the BatchNorm as the kernel's per-channel scale.
    expect(report.batchNorm).toMatchObject({ folded: [], skipped: [], scaled: [{ layer: 'conv', batchNorm: 'bn' }] });
    const expected = foldBatchNorm(readModel(source), { keepScale: true });
    expect(report.batchNorm.scaled).toEqual(expected.scaled);
    const manifest = JSON.parse(await readFile(join(out, 'model', 'model.json'), 'utf8')).weightsManifest[0];
    expect(manifest.weights.map((w: { name: string }) => w.name)).toEqual(expected.model.weights.map((w) => w.name));
  });

  it('exits 2 with one line naming the allowed values on a bad method', async () => {
    const result = await qaas('quantize', join(dir, 'model'), '--out', join(dir, 'bad'), '--method', 'int3');
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain('allowed: affine, float16, binary, ternary, pow2, kmeans, pq');
  });

  it('exits 2 with one line on a missing model directory and on an out-of-range flag', async () => {
    const missing = await qaas('quantize', join(dir, 'nope'), '--out', join(dir, 'x'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^qaas: .*nope.*\n$/);
    const badBits = await qaas('quantize', join(dir, 'model'), '--out', join(dir, 'x'), '--bits', '40');
    expect(badBits.code).toBe(2);
    expect(badBits.stderr).toContain('/method/bits');
  });
});

describe('qaas help and flags', () => {
  it('gives every subcommand a --help that exits 0 and lists the flags its parser takes', async () => {
    const expected: Record<string, string[]> = {
      serve: [],
      worker: [],
      quantize: ['--out, -o <outDir>', '--bits, -b <n>', '--granularity <g>', '--skip <glob>', '--quiet, -q'],
      submit: ['--api <url>', '--api-key <key>', '--priority <n>', '--detach', '--bits, -b <n>', '--eval <ref>'],
      fetch: ['--out, -o <outDir>', '--api <url>', '--api-key <key>', '--quiet, -q'],
      sweep: ['--grace-minutes <n>', '--dry-run'],
    };
    for (const [command, flags] of Object.entries(expected)) {
      for (const help of command === 'quantize' ? ['--help', '-h'] : ['--help']) {
        const result = await qaas(command, help);
        expect(result.code, `${command} ${help}`).toBe(0);
        expect(result.stderr).toBe('');
        expect(result.stdout.split('\n')[0]).toMatch(new RegExp(`^Usage: qaas ${command}\\b`));
        for (const flag of [...flags, '--help, -h'])
          expect(result.stdout, `${command}: ${flag}`).toContain(`  ${flag}  `);
      }
    }
    const top = await qaas('--help');
    expect(top.code).toBe(0);
    for (const command of Object.keys(expected)) expect(top.stdout).toContain(`  qaas ${command}`);
  });

  it('names the closest flag for a typo, lists the flags, and exits 2', async () => {
    const typo = await qaas('quantize', join(dir, 'model'), '--out', join(dir, 'typo'), '--bitz', '4');
    expect(typo.code).toBe(2);
    const lines = typo.stderr.split('\n');
    expect(lines[0]).toBe('qaas: unknown option --bitz for quantize; did you mean --bits?');
    expect(lines[2]).toBe('Usage: qaas quantize <modelDir | model.keras | model.h5> --out <outDir> [options]');
    expect(typo.stderr).toContain('  --bits, -b <n>  ');
    expect(typo.stdout).toBe('');
    const prefix = await qaas('submit', 'mdl_x', '--gran', 'per-channel');
    expect(prefix.stderr.split('\n')[0]).toBe('qaas: unknown option --gran for submit; did you mean --granularity?');
    const far = await qaas('sweep', '--frobnicate');
    expect(far.code).toBe(2);
    expect(far.stderr.split('\n')[0]).toBe('qaas: unknown option --frobnicate for sweep');
    expect(far.stderr).toContain('  --dry-run  ');
    const command = await qaas('quantise');
    expect(command.code).toBe(2);
    expect(command.stderr).toBe('qaas: unknown command "quantise" (did you mean quantize?); run qaas --help\n');
    const missing = await qaas('quantize', join(dir, 'model'), '--out');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe("qaas: Option '-o, --out <value>' argument missing; run qaas quantize --help\n");
    const extra = await qaas('serve', 'now');
    expect(extra.code).toBe(2);
    expect(extra.stderr).toBe('qaas: serve takes no arguments; run qaas serve --help\n');
  });
});

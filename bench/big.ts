/**
 * `npm run bench:big` (issue 12, "Big models at memory speed"): whole-process `qaas quantize` (affine uint8
 * per tensor, the converter's own method) on a seeded 1 GiB layers model — 16 × Dense 4096×4096 with
 * biases, 4 MiB shards, written to a temp dir and removed afterwards — against bench/tfjs_uint8.py (numpy
 * implementation of tensorflowjs_converter's uint8 quantization) and against `cat` of the same shards to
 * /dev/null. Three pairs run in turn (cat, numpy, qaas) after one warm-up cat; medians. Peak RSS of each
 * child comes from /usr/bin/time -v, or /proc/<pid>/status VmHWM polled every 10 ms where that is missing.
 *
 * Targets: qaas ÷ numpy wall ≤ 0.5, qaas ÷ cat ≤ 1.75, qaas ÷ numpy peak RSS ≤ 0.5 and qaas ≤ 512 MiB.
 * Printed, never asserted: a bench is not a test.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const LAYERS = 16;
const UNITS = 4096;
const SHARD_BYTES = 4 * 1024 * 1024;
const PAIRS = 3;
const TIME = '/usr/bin/time';
const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/src/cli.js');
const numpyBaseline = join(root, 'bench/tfjs_uint8.py');

interface Run {
  wallMs: number;
  peakRssMiB: number;
}

/** xorshift32; a sum of four 16-bit uniforms is bell-shaped enough for weights (and fast at 268M values). */
function weightSource(seed: number): (scale: number) => number {
  let state = seed >>> 0 || 1;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  return (scale) => {
    const a = next();
    const b = next();
    const sum = (a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16);
    return (sum / 0x10000 - 2) * scale;
  };
}

/** Writes the model shard by shard: memory stays at one shard whatever the model's size. */
async function writeModel(dir: string): Promise<string[]> {
  const weights: { name: string; shape: number[]; dtype: 'float32' }[] = [];
  for (let l = 0; l < LAYERS; l++) {
    weights.push({ name: `dense_${l}/kernel`, shape: [UNITS, UNITS], dtype: 'float32' });
    weights.push({ name: `dense_${l}/bias`, shape: [UNITS], dtype: 'float32' });
  }
  const totalBytes = weights.reduce((sum, w) => sum + 4 * w.shape.reduce((a, b) => a * b, 1), 0);
  const shardCount = Math.ceil(totalBytes / SHARD_BYTES);
  const paths = Array.from({ length: shardCount }, (_, i) => `group1-shard${i + 1}of${shardCount}.bin`);
  const random = weightSource(12);
  const shard = new Float32Array(SHARD_BYTES / 4);
  let inShard = 0;
  let shardIndex = 0;
  const flush = async (): Promise<void> => {
    const file = await open(join(dir, paths[shardIndex++]), 'w');
    await file.write(new Uint8Array(shard.buffer, 0, inShard * 4));
    await file.close();
    inShard = 0;
  };
  for (const weight of weights) {
    const size = weight.shape.reduce((a, b) => a * b, 1);
    // Layers of different spread, kernels at about the fan-in scale, small biases.
    const scale = weight.name.endsWith('bias') ? 0.01 : (0.5 + (weights.indexOf(weight) % 5) / 4) / Math.sqrt(UNITS);
    for (let i = 0; i < size; i++) {
      shard[inShard++] = random(scale);
      if (inShard === shard.length) await flush();
    }
  }
  if (inShard > 0) await flush();
  const layers = [
    { class_name: 'InputLayer', config: { batch_input_shape: [null, UNITS], dtype: 'float32', name: 'input' } },
    ...Array.from({ length: LAYERS }, (_, l) => ({
      class_name: 'Dense',
      config: { name: `dense_${l}`, units: UNITS, activation: l === LAYERS - 1 ? 'linear' : 'relu', use_bias: true },
    })),
  ];
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'qaas bench:big',
    convertedBy: null,
    modelTopology: {
      class_name: 'Sequential',
      config: { name: 'big', layers },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightsManifest: [{ paths, weights }],
  };
  await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
  return paths.map((p) => join(dir, p));
}

/** Runs a command to completion and measures its wall time and peak RSS. */
async function measure(command: string, args: string[]): Promise<Run> {
  const timed = existsSync(TIME);
  const started = performance.now();
  const child = timed
    ? spawn(TIME, ['-v', command, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let polledKiB = 0;
  const poll = timed
    ? undefined
    : setInterval(() => {
        readFile(`/proc/${child.pid}/status`, 'utf8')
          .then((status) => {
            const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
            polledKiB = Math.max(polledKiB, kib);
          })
          .catch(() => undefined);
      }, 10);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const wallMs = performance.now() - started;
  if (poll) clearInterval(poll);
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}:\n${stderr}`);
  const kib = timed ? Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1]) : polledKiB;
  return { wallMs, peakRssMiB: kib / 1024 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qaas-bench-big-'));
  try {
    const modelDir = join(dir, 'model');
    await mkdir(modelDir);
    const generated = performance.now();
    const shards = await writeModel(modelDir);
    process.stdout.write(
      `model: ${LAYERS} × Dense ${UNITS}×${UNITS} + bias, ${shards.length} shards of 4 MiB ` +
        `(written in ${((performance.now() - generated) / 1000).toFixed(1)} s)\n`,
    );
    const runs: Record<'cat' | 'numpy' | 'qaas', Run[]> = { cat: [], numpy: [], qaas: [] };
    await measure('cat', shards); // warm-up: every run reads the shards from the page cache
    for (let pair = 1; pair <= PAIRS; pair++) {
      runs.cat.push(await measure('cat', shards));
      const numpyOut = join(dir, 'numpy-out');
      runs.numpy.push(await measure('python3', [numpyBaseline, modelDir, numpyOut]));
      await rm(numpyOut, { recursive: true, force: true });
      const qaasOut = join(dir, 'qaas-out');
      runs.qaas.push(
        await measure(process.execPath, [cli, 'quantize', modelDir, '--out', qaasOut, '--bits', '8', '--quiet']),
      );
      const report = JSON.parse(await readFile(join(qaasOut, 'report.json'), 'utf8')) as {
        timings: Record<string, number>;
      };
      await rm(qaasOut, { recursive: true, force: true });
      const line = (name: keyof typeof runs) =>
        `${name} ${(runs[name][pair - 1].wallMs / 1000).toFixed(2)} s ${runs[name][pair - 1].peakRssMiB.toFixed(0)} MiB`;
      process.stdout.write(
        `pair ${pair}: ${line('cat')} | ${line('numpy')} | ${line('qaas')} | qaas timings ${JSON.stringify(report.timings)}\n`,
      );
    }
    const wall = (name: keyof typeof runs) => median(runs[name].map((r) => r.wallMs));
    const rss = (name: keyof typeof runs) => median(runs[name].map((r) => r.peakRssMiB));
    const rows: [string, number, string, boolean][] = [
      ['qaas ÷ numpy wall', wall('qaas') / wall('numpy'), '≤ 0.5', wall('qaas') / wall('numpy') <= 0.5],
      ['qaas ÷ cat wall', wall('qaas') / wall('cat'), '≤ 1.75', wall('qaas') / wall('cat') <= 1.75],
      ['qaas ÷ numpy peak RSS', rss('qaas') / rss('numpy'), '≤ 0.5', rss('qaas') / rss('numpy') <= 0.5],
      ['qaas peak RSS MiB', rss('qaas'), '≤ 512', rss('qaas') <= 512],
    ];
    process.stdout.write(
      `\nmedians of ${PAIRS} pairs: cat ${(wall('cat') / 1000).toFixed(2)} s (${rss('cat').toFixed(0)} MiB), ` +
        `numpy ${(wall('numpy') / 1000).toFixed(2)} s (${rss('numpy').toFixed(0)} MiB), ` +
        `qaas ${(wall('qaas') / 1000).toFixed(2)} s (${rss('qaas').toFixed(0)} MiB)\n`,
    );
    for (const [name, value, target, met] of rows) {
      process.stdout.write(
        `${name.padEnd(24)} ${value.toFixed(2).padStart(8)}  target ${target.padEnd(7)} ${met ? 'met' : 'NOT met'}\n`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * `npm run bench:big` (issue 12, "Big models at memory speed"): whole-process `qaas quantize` (affine uint8
 * per tensor, the converter's own method) on a seeded 1 GiB layers model — 16 × Dense 4096×4096 with
 * biases, 4 MiB shards, written to a temp dir and removed afterwards — against bench/tfjs_uint8.py (numpy
 * implementation of tensorflowjs_converter's uint8 quantization) and against `cat` of the same shards to
 * /dev/null (the target's baseline: reading alone) and into one file (reading and writing 1 GiB: context,
 * since qaas writes too). Three rounds run in turn (cat, cat into a file, numpy, qaas) after one warm-up cat;
 * medians. Peak RSS of each
 * child comes from /usr/bin/time -v, or /proc/<pid>/status VmHWM polled every 10 ms where that is missing.
 *
 * Targets: qaas ÷ numpy wall ≤ 0.5, qaas ÷ cat ≤ 1.75, qaas ÷ numpy peak RSS ≤ 0.5 and qaas ≤ 512 MiB.
 * Printed, never asserted: a bench is not a test.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIG_UNITS, writeBigModel } from './big-model.js';

const ROUNDS = 3;
const TIME = '/usr/bin/time';
const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/src/cli.js');
const numpyBaseline = join(root, 'bench/tfjs_uint8.py');

interface Run {
  wallMs: number;
  peakRssMiB: number;
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
    const shards = (await writeBigModel(modelDir)).shards.map((name) => join(modelDir, name));
    process.stdout.write(
      `model: 16 × Dense ${BIG_UNITS}×${BIG_UNITS} + bias, ${shards.length} shards of 4 MiB ` +
        `(written in ${((performance.now() - generated) / 1000).toFixed(1)} s)\n`,
    );
    const runs: Record<'cat' | 'copy' | 'numpy' | 'qaas', Run[]> = { cat: [], copy: [], numpy: [], qaas: [] };
    const copyOut = join(dir, 'cat-out.bin');
    await measure('cat', shards); // warm-up: every run reads the shards from the page cache
    for (let round = 1; round <= ROUNDS; round++) {
      runs.cat.push(await measure('cat', shards));
      runs.copy.push(await measure('sh', ['-c', `cat "$@" > '${copyOut}'`, 'sh', ...shards]));
      await rm(copyOut, { force: true });
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
        `${name} ${(runs[name][round - 1].wallMs / 1000).toFixed(2)} s ${runs[name][round - 1].peakRssMiB.toFixed(0)} MiB`;
      process.stdout.write(
        `round ${round}: ${line('cat')} | ${line('copy')} | ${line('numpy')} | ${line('qaas')} | ` +
          `qaas timings ${JSON.stringify(report.timings)}\n`,
      );
    }
    const wall = (name: keyof typeof runs) => median(runs[name].map((r) => r.wallMs));
    const rss = (name: keyof typeof runs) => median(runs[name].map((r) => r.peakRssMiB));
    const rows: [string, number, string, boolean][] = [
      ['qaas ÷ numpy wall', wall('qaas') / wall('numpy'), '≤ 0.5', wall('qaas') / wall('numpy') <= 0.5],
      ['qaas ÷ cat wall', wall('qaas') / wall('cat'), '≤ 1.75', wall('qaas') / wall('cat') <= 1.75],
      ['qaas ÷ cat into a file', wall('qaas') / wall('copy'), '(context)', true],
      ['qaas ÷ numpy peak RSS', rss('qaas') / rss('numpy'), '≤ 0.5', rss('qaas') / rss('numpy') <= 0.5],
      ['qaas peak RSS MiB', rss('qaas'), '≤ 512', rss('qaas') <= 512],
    ];
    process.stdout.write(
      `\nmedians of ${ROUNDS} rounds: cat ${(wall('cat') / 1000).toFixed(2)} s (${rss('cat').toFixed(0)} MiB), ` +
        `cat into a file ${(wall('copy') / 1000).toFixed(2)} s, ` +
        `numpy ${(wall('numpy') / 1000).toFixed(2)} s (${rss('numpy').toFixed(0)} MiB), ` +
        `qaas ${(wall('qaas') / 1000).toFixed(2)} s (${rss('qaas').toFixed(0)} MiB)\n`,
    );
    for (const [name, value, target, met] of rows) {
      process.stdout.write(
        `${name.padEnd(24)} ${value.toFixed(2).padStart(8)}  ` +
          (target.startsWith('(') ? `${target}\n` : `target ${target.padEnd(7)} ${met ? 'met' : 'NOT met'}\n`),
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

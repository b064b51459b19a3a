/**
 * `npm run bench:big` (issue 12, "Big models at memory speed"): whole-process `qaas quantize` (affine uint8
 * per tensor, the converter's own method) on a seeded 1 GiB layers model — 16 × Dense 4096×4096 with
 * biases, 4 MiB shards, written to a temp dir and removed afterwards — against bench/tfjs_uint8.py (numpy
 * implementation of tensorflowjs_converter's uint8 quantization) and against `cat` of the same shards to
 * /dev/null (the target's baseline: reading alone) and into one file (reading and writing 1 GiB: context,
 * since qaas writes too), and against writing as many zero bytes as qaas wrote (its artifacts' size, with
 * `head -c N /dev/zero`: the floor of any tool that writes them, whatever it computes). Three rounds run in
 * turn (cat, cat into a file, numpy, qaas, the write) after one warm-up cat; medians. Peak RSS of each
 * child comes from /usr/bin/time -v, or /proc/<pid>/status VmHWM polled every 10 ms where that is missing.
 *
 * Targets: qaas ÷ numpy wall ≤ 0.5, qaas ÷ cat ≤ 1.75, qaas ÷ numpy peak RSS ≤ 0.5 and qaas ≤ 512 MiB.
 * Printed, never asserted: a bench is not a test.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
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

/**
 * Runs a command to completion and measures its wall time and peak RSS. The dirty pages of the runs before
 * are flushed first (sync, not timed): on this machine's disk their writeback otherwise lands in whichever
 * run comes next (a 1 GiB `cat` into a file slowed the next run's writes 2–4×).
 */
async function measure(command: string, args: string[]): Promise<Run> {
  spawnSync('sync');
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

/** Bytes of every file below `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) bytes += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return bytes;
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
    const runs: Record<'cat' | 'copy' | 'numpy' | 'qaas' | 'write', Run[]> = {
      cat: [],
      copy: [],
      numpy: [],
      qaas: [],
      write: [],
    };
    let outputBytes = 0;
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
      outputBytes = await treeBytes(qaasOut);
      await rm(qaasOut, { recursive: true, force: true });
      const zeros = join(dir, 'zeros.bin');
      runs.write.push(await measure('sh', ['-c', `head -c ${outputBytes} /dev/zero > '${zeros}'`]));
      await rm(zeros, { force: true });
      const line = (name: keyof typeof runs) =>
        `${name} ${(runs[name][round - 1].wallMs / 1000).toFixed(2)} s ${runs[name][round - 1].peakRssMiB.toFixed(0)} MiB`;
      process.stdout.write(
        `round ${round}: ${line('cat')} | ${line('copy')} | ${line('numpy')} | ${line('qaas')} | ${line('write')} | ` +
          `qaas timings ${JSON.stringify(report.timings)}\n`,
      );
    }
    const wall = (name: keyof typeof runs) => median(runs[name].map((r) => r.wallMs));
    const rss = (name: keyof typeof runs) => median(runs[name].map((r) => r.peakRssMiB));
    const rows: [string, number, string, boolean][] = [
      ['qaas ÷ numpy wall', wall('qaas') / wall('numpy'), '≤ 0.5', wall('qaas') / wall('numpy') <= 0.5],
      ['qaas ÷ cat wall', wall('qaas') / wall('cat'), '≤ 1.75', wall('qaas') / wall('cat') <= 1.75],
      ['qaas ÷ cat into a file', wall('qaas') / wall('copy'), '(context)', true],
      ['qaas ÷ writing its output', wall('qaas') / wall('write'), '(context)', true],
      ['writing its output ÷ cat', wall('write') / wall('cat'), '(context)', true],
      ['qaas ÷ numpy peak RSS', rss('qaas') / rss('numpy'), '≤ 0.5', rss('qaas') / rss('numpy') <= 0.5],
      ['qaas peak RSS MiB', rss('qaas'), '≤ 512', rss('qaas') <= 512],
    ];
    process.stdout.write(
      `\nmedians of ${ROUNDS} rounds: cat ${(wall('cat') / 1000).toFixed(2)} s (${rss('cat').toFixed(0)} MiB), ` +
        `cat into a file ${(wall('copy') / 1000).toFixed(2)} s, ` +
        `numpy ${(wall('numpy') / 1000).toFixed(2)} s (${rss('numpy').toFixed(0)} MiB), ` +
        `qaas ${(wall('qaas') / 1000).toFixed(2)} s (${rss('qaas').toFixed(0)} MiB), ` +
        `writing qaas's ${(outputBytes / 2 ** 20).toFixed(1)} MiB of output alone ${(wall('write') / 1000).toFixed(2)} s\n`,
    );
    for (const [name, value, target, met] of rows) {
      process.stdout.write(
        `${name.padEnd(26)} ${value.toFixed(2).padStart(8)}  ` +
          (target.startsWith('(') ? `${target}\n` : `target ${target.padEnd(7)} ${met ? 'met' : 'NOT met'}\n`),
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

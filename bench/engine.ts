/**
 * `npm run bench`: the engine's speed as ratios measured in one run (issue 2, "Performance").
 *
 * On a seeded normal float32 tensor of 16M weights shaped [4096, 4096]: the time of copying the
 * Float32Array (allocation included: every method returns at least one new array of that size) is the memory
 * floor, and each method's time is reported as a multiple of it. Affine int8 per-channel is also compared with
 * the same math written with tfjs ops on the fastest backend available (and, for information, on cpu). k-means with 256 clusters on 4M
 * weights is measured against the affine pass on the same tensor, and pq on 1M weights is shown for
 * information. GPTQ's time per layer (input statistics from calibration rows + the rounding) is compared with
 * nearest rounding of the same kernel, 4-bit per-channel, for a Dense 1024×1024 (256 input rows) and a Conv
 * 3×3×64×64 (8 inputs of 16×16×64, every position: 2048 patches). Every time is the median of several runs
 * after one warm-up run.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/model/backend.js';
import { affine, type AffineParams } from '../src/quant/methods/affine.js';
import { binary, type BinaryParams } from '../src/quant/methods/binary.js';
import { float16, type Float16Params } from '../src/quant/methods/float16.js';
import { kmeans, type KmeansParams } from '../src/quant/methods/kmeans.js';
import { pow2, type Pow2Params } from '../src/quant/methods/pow2.js';
import { pq, type PqParams } from '../src/quant/methods/pq.js';
import { ternary, type TernaryParams } from '../src/quant/methods/ternary.js';
import { parseMethodParams } from '../src/quant/methods/index.js';
import { createRng } from '../src/quant/rng.js';
import { InputStatistics, type LayerGeometry } from '../src/quant/rounding/gram.js';
import { roundKernel } from '../src/quant/rounding/index.js';
import type { QuantMethod } from '../src/quant/types.js';

const RUNS = 3;

/** A method's params with every default the registry fills in (what a job spec would run). */
function withDefaults<P>(input: { name: string } & Record<string, unknown>): P {
  return parseMethodParams(input) as P;
}

function normalTensor(size: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - rng.next())) * 0.05;
    const angle = 2 * Math.PI * rng.next();
    values[i] = radius * Math.cos(angle);
    if (i + 1 < size) values[i + 1] = radius * Math.sin(angle);
  }
  return values;
}

/** Median wall time in ms of `runs` calls, after one warm-up call (JIT, first-touch page faults). */
function medianMs(task: () => unknown, runs = RUNS): number {
  task();
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    task();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(runs / 2)];
}

function timeMethod<S extends TSchema>(
  method: QuantMethod<S>,
  weights: Float32Array,
  shape: number[],
  params: Static<S>,
  runs = RUNS,
): number {
  const seed = (params as { seed?: number }).seed ?? 0;
  return medianMs(() => method.quantize(weights, shape, params, createRng(seed)), runs);
}

/** GPTQ of one layer: statistics of `inputs` (ReLU'd normal values, as a hidden layer sees) + the rounding. */
function gptqLayer(
  weights: Float32Array,
  shape: number[],
  geometry: LayerGeometry,
  inputShape: number[],
  params: AffineParams,
) {
  const inputs = normalTensor(
    inputShape.reduce((a, b) => a * b, 1),
    5,
  ).map((v) => Math.max(0, v));
  const rounding = {
    gptq: { percdamp: 0.01, actOrder: true, blockSize: 128 },
    adaround: { iterations: 1, learningRate: 0.05, regularization: 0.1, betaStart: 20, betaEnd: 2, warmup: 0.2 },
    seed: 0,
  };
  return () => {
    const statistics = new InputStatistics(geometry, { maxPositions: 1 << 16, seed: 0 });
    statistics.observe(inputs, inputShape);
    return roundKernel('gptq', weights, shape, params, statistics, rounding);
  };
}

/** Affine int8 asymmetric per-channel (min/max over the range widened to hold 0) with tfjs ops, read back. */
function affinePerChannelWithTfjs(weights: Float32Array, shape: [number, number]): void {
  const [codes, dequantized] = tf.tidy(() => {
    const x = tf.tensor2d(weights, shape);
    const min = tf.minimum(tf.min(x, 0), 0);
    const max = tf.maximum(tf.max(x, 0), 0);
    const scale = tf.maximum(tf.div(tf.sub(max, min), 255), 1e-12);
    const zeroPoint = tf.round(tf.div(tf.neg(min), scale));
    const q = tf.clipByValue(tf.add(tf.round(tf.div(x, scale)), zeroPoint), 0, 255);
    return [q, tf.mul(tf.sub(q, zeroPoint), scale)];
  });
  codes.dataSync();
  dequantized.dataSync();
  tf.dispose([codes, dequantized]);
}

interface Row {
  what: string;
  ratio: number;
  /** Pass condition as text and as a test; absent for rows shown for information. */
  target?: { text: string; ok: (ratio: number) => boolean };
  note?: string;
}

const atMost = (limit: number) => ({ text: `≤ ${limit}`, ok: (ratio: number) => ratio <= limit });
const atLeast = (limit: number) => ({ text: `≥ ${limit}`, ok: (ratio: number) => ratio >= limit });

function printTable(rows: Row[]): void {
  const header = ['what', 'ratio', 'target', 'result', 'note'];
  const cells = rows.map((row) => [
    row.what,
    row.ratio.toFixed(2),
    row.target?.text ?? '—',
    row.target ? (row.target.ok(row.ratio) ? 'ok' : 'MISS') : 'info',
    row.note ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((cell, i) => (i === 1 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) console.log(line(c).trimEnd());
}

async function main(): Promise<void> {
  // Production mode: no per-op debug checks (and no "install tfjs-node" banner) in the tfjs baseline.
  tf.enableProdMode();
  const backend = await selectBackend('auto');
  const started = performance.now();
  const rows: Row[] = [];
  const ms = (value: number) => `${value.toFixed(1)} ms`;

  const bigShape = [4096, 4096];
  const big = normalTensor(4096 * 4096, 1);
  const copy = medianMs(() => big.slice(), 7);
  console.log(`tensor [${bigShape.join(', ')}] float32 (${big.length} weights): copy ${ms(copy)} (the memory floor)`);

  const int8 = withDefaults<AffineParams>({ name: 'affine', bits: 8 });
  const int8PerChannel: AffineParams = { ...int8, granularity: 'per-channel' };
  const perChannel = timeMethod(affine, big, bigShape, int8PerChannel);
  const cases: { what: string; time: () => number; target?: Row['target'] }[] = [
    { what: 'affine int8 per-tensor', time: () => timeMethod(affine, big, bigShape, int8) },
    { what: 'affine int8 per-channel', time: () => perChannel, target: atMost(3) },
    { what: 'affine 4-bit per-channel', time: () => timeMethod(affine, big, bigShape, { ...int8PerChannel, bits: 4 }) },
    {
      what: 'float16',
      time: () => timeMethod(float16, big, bigShape, withDefaults<Float16Params>({ name: 'float16' })),
    },
    {
      what: 'binary per-tensor',
      time: () => timeMethod(binary, big, bigShape, withDefaults<BinaryParams>({ name: 'binary' })),
    },
    {
      what: 'ternary per-tensor',
      time: () => timeMethod(ternary, big, bigShape, withDefaults<TernaryParams>({ name: 'ternary' })),
    },
    {
      what: 'pow2 4-bit',
      time: () => timeMethod(pow2, big, bigShape, withDefaults<Pow2Params>({ name: 'pow2', bits: 4 })),
    },
    {
      what: 'kmeans 4-bit',
      time: () => timeMethod(kmeans, big, bigShape, withDefaults<KmeansParams>({ name: 'kmeans', bits: 4 }), 3),
    },
  ];
  for (const { what, time, target } of cases) {
    const elapsed = time();
    rows.push({ what: `${what} ÷ copy`, ratio: elapsed / copy, target, note: ms(elapsed) });
  }

  const tfjs = medianMs(() => affinePerChannelWithTfjs(big, [4096, 4096]), 3);
  rows.push({
    what: `affine int8 per-channel: tfjs ops (${backend}) ÷ engine`,
    ratio: tfjs / perChannel,
    target: atLeast(5),
    note: `${ms(tfjs)} vs ${ms(perChannel)}`,
  });

  if (backend !== 'cpu') {
    await selectBackend('cpu');
    const tfjsCpu = medianMs(() => affinePerChannelWithTfjs(big, [4096, 4096]), 1);
    rows.push({
      what: 'affine int8 per-channel: tfjs ops (cpu) ÷ engine',
      ratio: tfjsCpu / perChannel,
      note: `${ms(tfjsCpu)} vs ${ms(perChannel)}`,
    });
  }

  const midShape = [2048, 2048];
  const mid = normalTensor(2048 * 2048, 2);
  const affineMid = timeMethod(affine, mid, midShape, int8);
  const kmeans256 = timeMethod(kmeans, mid, midShape, withDefaults<KmeansParams>({ name: 'kmeans', bits: 8 }));
  rows.push({
    what: 'kmeans 256 clusters ÷ affine int8, 4M weights',
    ratio: kmeans256 / affineMid,
    target: atMost(20),
    note: `${ms(kmeans256)} vs ${ms(affineMid)}`,
  });

  const smallShape = [1024, 1024];
  const small = normalTensor(1024 * 1024, 3);
  const smallCopy = medianMs(() => small.slice(), 7);
  const pqParams = withDefaults<PqParams>({ name: 'pq', bits: 8, subvectorLength: 4 });
  const pqTime = timeMethod(pq, small, smallShape, pqParams, 1);
  rows.push({ what: 'pq 8-bit d=4 ÷ copy, 1M weights', ratio: pqTime / smallCopy, note: ms(pqTime) });
  const pqSharedTime = timeMethod(pq, small, smallShape, { ...pqParams, codebooks: 'shared' }, 1);
  rows.push({
    what: 'pq shared 8-bit d=4 ÷ copy, 1M weights',
    ratio: pqSharedTime / smallCopy,
    note: ms(pqSharedTime),
  });

  const fourBit: AffineParams = { ...int8PerChannel, bits: 4 };
  const layers: { what: string; shape: number[]; geometry: LayerGeometry; inputShape: number[] }[] = [
    {
      what: 'Dense 1024×1024',
      shape: [1024, 1024],
      geometry: { kind: 'dense', inputs: 1024 },
      inputShape: [256, 1024],
    },
    {
      what: 'Conv 3×3×64×64',
      shape: [3, 3, 64, 64],
      geometry: {
        kind: 'conv2d',
        kernelHeight: 3,
        kernelWidth: 3,
        channels: 64,
        strides: [1, 1],
        dilations: [1, 1],
        padding: 'same',
      },
      inputShape: [8, 16, 16, 64],
    },
  ];
  for (const layer of layers) {
    const weights = normalTensor(
      layer.shape.reduce((a, b) => a * b, 1),
      4,
    );
    const nearest = timeMethod(affine, weights, layer.shape, fourBit, 5);
    const gptqTime = medianMs(gptqLayer(weights, layer.shape, layer.geometry, layer.inputShape, fourBit), 1);
    rows.push({
      what: `GPTQ per layer ÷ nearest, 4-bit per-channel, ${layer.what}`,
      ratio: gptqTime / nearest,
      note: `${ms(gptqTime)} vs ${ms(nearest)}`,
    });
  }

  console.log(`fastest tfjs backend: ${backend}\n`);
  printTable(rows);
  console.log(`\nbench took ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

await main();

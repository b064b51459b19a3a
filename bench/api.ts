/**
 * `npm run bench:api`: the service's performance as ratios measured in one run (issue 3, "Performance"),
 * against the local Redis (REDIS_URL) under fresh key prefixes and temp DATA_DIRs, loopback only, with
 * every key and directory removed at the end.
 *
 * The servers run with `--max-semi-space-size=64`, as `npm start` and the Docker image run the API.
 *
 * 1. Job submission: autocannon, 100 connections for a fixed time, on `POST /v1/jobs` (an uploaded small
 *    model, no worker running so nothing but the API is measured) and on `GET /healthz` of the same
 *    in-process server, alternating over LOAD_ROUNDS rounds. Throughput ratio jobs ÷ healthz (target ≥ 0.3),
 *    each one's worst p99, and the CPU the server (this process) and Redis spent per request: on a machine
 *    whose cores the server, Redis and autocannon share, those say where a submission's time goes.
 *    autocannon runs in a CHILD process for both endpoints alike: in this process its client work shared
 *    the server's event loop, so both numbers measured client and server together.
 * 2. A 200 MiB model upload (model.json + 50 shards of 4 MiB, streamed from disk by the client) to a server
 *    running in a CHILD process, so its RSS is the server's alone: baseline VmRSS after a warm-up upload
 *    and a GC, then the peak (VmHWM after resetting it through /proc/<pid>/clear_refs, and VmRSS sampled
 *    every 10 ms) while the upload is received, validated and stored. Growth target < 64 MiB.
 * 3. A small PTQ job end to end through the API (upload → job → SSE `final` succeeded, worker warm) ÷ the
 *    same model and method through the CLI (`qaas quantize`, a process); the in-process path
 *    (readModelDir → runPtq → write) is printed for information. Medians of RUNS after one warm-up. Target ≤ 1.5.
 */
import { fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../src/config.js';
import { buildApp } from '../src/http/app.js';
import { parseJobSpec } from '../src/jobs/spec.js';
import { selectBackend } from '../src/model/backend.js';
import { readModelDir } from '../src/model/read.js';
import type { FileSet } from '../src/model/types.js';
import { runPtq } from '../src/pipeline/ptq.js';
import { redisAnswers, startWorkers } from '../src/service.js';
import { writeTreeAtomically } from '../src/storage/tree.js';
import { cleanup, denseModel } from '../test/http/helpers.js';
import { procStatus, streamUpload } from './service-client.js';

const RUNS = 3;
const LOAD_SECONDS = 4;
/** healthz, jobs, healthz, jobs, …: load from other processes drifts, and alternating spreads it over both. */
const LOAD_ROUNDS = 2;
const CONNECTIONS = 100;
const MiB = 1024 * 1024;
const BIG_SHARDS = 50;
const SMALL_WIDTHS = [64, 256, 256, 10];
const PTQ_METHOD = { name: 'affine', bits: 8 };

const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const selfPath = fileURLToPath(import.meta.url);
const cliPath = fileURLToPath(new URL('../src/cli.js', import.meta.url));

interface Scratch {
  configs: Config[];
  dirs: string[];
}

async function benchConfig(scratch: Scratch, env: Record<string, string> = {}): Promise<Config> {
  const dataDir = await mkdtemp(join(tmpdir(), 'qaas-bench-'));
  const config = loadConfig({
    REDIS_URL: redisUrl,
    DATA_DIR: dataDir,
    QAAS_REDIS_PREFIX: `bench-${randomUUID()}`,
    QAAS_RATE_LIMIT_MAX: String(1e9),
    LOG_LEVEL: 'warn',
    ...(process.env.QAAS_TF_BACKEND ? { QAAS_TF_BACKEND: process.env.QAAS_TF_BACKEND } : {}),
    ...env,
  });
  scratch.configs.push(config);
  return config;
}

async function cleanupScratch(scratch: Scratch): Promise<void> {
  for (const config of scratch.configs) await cleanup(config);
  for (const dir of scratch.dirs) await rm(dir, { recursive: true, force: true });
}

/**
 * A Dense(6400 → 8192) layers model whose kernel is exactly BIG_SHARDS × 4 MiB, written shard by shard
 * (small normal-ish values, never NaN) so the bench itself never holds it.
 */
async function writeBigModel(dir: string): Promise<string[]> {
  const [inputs, units] = [6400, 8192];
  const shardBytes = 4 * MiB;
  const biasBytes = units * 4;
  const shardCount = BIG_SHARDS + 1;
  const paths = Array.from({ length: shardCount }, (_, i) => `group1-shard${i + 1}of${shardCount}.bin`);
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'bench',
    convertedBy: null,
    modelTopology: {
      class_name: 'Sequential',
      config: {
        name: 'big',
        layers: [
          {
            class_name: 'Dense',
            config: {
              name: 'dense',
              units,
              activation: 'linear',
              use_bias: true,
              batch_input_shape: [null, inputs],
              dtype: 'float32',
            },
          },
        ],
      },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightsManifest: [
      {
        paths,
        weights: [
          { name: 'dense/kernel', shape: [inputs, units], dtype: 'float32' },
          { name: 'dense/bias', shape: [units], dtype: 'float32' },
        ],
      },
    ],
  };
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
  const values = new Float32Array(shardBytes / 4);
  for (let shard = 0; shard < BIG_SHARDS; shard++) {
    for (let i = 0; i < values.length; i++) values[i] = (Math.random() - 0.5) * 0.1;
    await writeFile(join(dir, paths[shard]), new Uint8Array(values.buffer));
  }
  await writeFile(join(dir, paths[BIG_SHARDS]), new Uint8Array(biasBytes));
  return ['model.json', ...paths];
}

async function uploadSmall(baseUrl: string, files: FileSet): Promise<string> {
  const form = new FormData();
  for (const [name, data] of files) form.append('file', new Blob([Buffer.from(data)]), name);
  const res = await fetch(`${baseUrl}/v1/models`, { method: 'POST', body: form });
  // 200: the same files were uploaded before (a repeated round), answered with that model.
  if (res.status !== 201 && res.status !== 200) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

/** What the bench reads of an autocannon result, small enough to cross the IPC channel. */
interface LoadResult {
  total: number;
  duration: number;
  p99: number;
  non2xx: number;
  errors: number;
}

/** A load run with the CPU the server (this process) and Redis spent on it, in µs. */
interface Measured extends LoadResult {
  serverMicros: number;
  redisMicros: number;
}

/** Redis's own CPU time so far (INFO cpu), in µs. */
async function redisCpuMicros(): Promise<number> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    const info = await redis.info('cpu');
    const seconds = ['used_cpu_user', 'used_cpu_sys'].map((field) =>
      Number(info.match(new RegExp(`^${field}:([\\d.]+)`, 'm'))?.[1] ?? 0),
    );
    return (seconds[0] + seconds[1]) * 1e6;
  } finally {
    redis.disconnect();
  }
}

async function measured(run: () => Promise<LoadResult>): Promise<Measured> {
  const [server, redis] = [process.cpuUsage(), await redisCpuMicros()];
  const result = await run();
  const used = process.cpuUsage(server);
  return { ...result, serverMicros: used.user + used.system, redisMicros: (await redisCpuMicros()) - redis };
}

/** Runs autocannon in a `--load` child process, so the client never competes with the server's event loop. */
function load(url: string, options: Partial<autocannon.Options> = {}): Promise<LoadResult> {
  const child = fork(selfPath, ['--load'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('message', (result) => resolve(result as LoadResult));
    child.once('exit', (code) => code !== 0 && reject(new Error(`autocannon child exited ${code}`)));
    child.send({ url, connections: CONNECTIONS, duration: LOAD_SECONDS, ...options });
  });
}

/** The `--load` child: one autocannon run with the options it is sent, its result sent back. */
function loadClient(): void {
  process.once('message', (options) => {
    void autocannon(options as autocannon.Options).then((result) => {
      const summary: LoadResult = {
        total: result.requests.total,
        duration: result.duration,
        p99: result.latency.p99,
        non2xx: result.non2xx,
        errors: result.errors,
      };
      process.send!(summary, () => process.exit(0));
    });
  });
}

/** 1: POST /v1/jobs vs GET /healthz on one in-process server, loaded from a child process. */
async function submissionThroughput(scratch: Scratch, small: FileSet) {
  const config = await benchConfig(scratch);
  const app = await buildApp(config, { logger: false });
  const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    const modelId = await uploadSmall(baseUrl, small);
    const jobs = {
      method: 'POST' as const,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ modelId, method: PTQ_METHOD }),
    };
    // A short pass of each first: JIT, connection pools, Redis scripts loaded.
    await load(`${baseUrl}/healthz`, { duration: 1 });
    await load(`${baseUrl}/v1/jobs`, { ...jobs, duration: 1 });
    const health: Measured[] = [];
    const submit: Measured[] = [];
    for (let round = 0; round < LOAD_ROUNDS; round++) {
      health.push(await measured(() => load(`${baseUrl}/healthz`)));
      submit.push(await measured(() => load(`${baseUrl}/v1/jobs`, jobs)));
    }
    const summary = (name: string, results: Measured[]) => {
      for (const result of results) {
        if (result.non2xx > 0 || result.errors > 0)
          throw new Error(`${name}: ${result.non2xx} non-2xx answers, ${result.errors} errors`);
      }
      const requests = results.reduce((sum, r) => sum + r.total, 0);
      const seconds = results.reduce((sum, r) => sum + r.duration, 0);
      const perRequest = (field: 'serverMicros' | 'redisMicros') =>
        results.reduce((sum, r) => sum + r[field], 0) / requests;
      return {
        perSecond: requests / seconds,
        requests,
        p99: Math.max(...results.map((r) => r.p99)),
        serverMicros: perRequest('serverMicros'),
        redisMicros: perRequest('redisMicros'),
      };
    };
    return { health: summary('healthz', health), submit: summary('jobs', submit) };
  } finally {
    await app.close();
  }
}

/** 2: RSS growth of a child-process server while it takes a 200 MiB upload. */
async function uploadRss(scratch: Scratch, small: FileSet) {
  const config = await benchConfig(scratch);
  // Outside DATA_DIR: the client's files, not the server's.
  const modelDir = await mkdtemp(join(tmpdir(), 'qaas-bench-big-'));
  scratch.dirs.push(modelDir);
  const names = await writeBigModel(modelDir);
  let uploadBytes = 0;
  for (const name of names) uploadBytes += (await stat(join(modelDir, name))).size;

  const child = fork(selfPath, ['--upload-server'], {
    execArgv: ['--expose-gc'],
    env: {
      ...process.env,
      REDIS_URL: config.redisUrl,
      DATA_DIR: config.dataDir,
      QAAS_REDIS_PREFIX: config.redisPrefix,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const message = <T>(): Promise<T> => new Promise((resolve) => child.once('message', (m) => resolve(m as T)));
  try {
    const { url } = await message<{ url: string }>();
    await uploadSmall(url, small);
    child.send('gc');
    await message<'gc-done'>();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const baseline = (await procStatus(child.pid!)).VmRSS;
    const hwmReset = await writeFile(`/proc/${child.pid}/clear_refs`, '5').then(
      () => true,
      () => false,
    );
    let sampledPeak = baseline;
    const sampler = setInterval(() => {
      procStatus(child.pid!).then(
        (s) => (sampledPeak = Math.max(sampledPeak, s.VmRSS)),
        () => undefined,
      );
    }, 10);
    const started = performance.now();
    const res = await streamUpload(url, modelDir, names);
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    if (res.status !== 201) throw new Error(`200 MiB upload answered ${res.status}: ${res.body.slice(0, 300)}`);
    const status = await procStatus(child.pid!);
    const peak = hwmReset ? Math.max(status.VmHWM, sampledPeak) : sampledPeak;
    return { uploadBytes, baseline, peak, growth: peak - baseline, seconds, hwmReset };
  } finally {
    child.send('close');
    await new Promise((resolve) => child.once('exit', resolve));
  }
}

/** The `--upload-server` child: the API alone (no workers) on a free loopback port. */
async function uploadServer(): Promise<void> {
  const app = await buildApp(loadConfig(process.env), { logger: false });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  process.on('message', (m) => {
    if (m === 'gc') {
      (globalThis as { gc?: () => void }).gc?.();
      process.send!('gc-done');
    } else if (m === 'close') {
      void app.close().then(() => process.exit(0));
    }
  });
  process.send!({ url });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function timed(task: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await task();
  return performance.now() - started;
}

/** Reads a job's SSE stream to its end and returns the `final` event's status. */
async function finalStatus(baseUrl: string, jobId: string): Promise<string> {
  const text = await (await fetch(`${baseUrl}/v1/jobs/${jobId}/events`)).text();
  const final = text.split('\n\n').find((block) => block.startsWith('event: final'));
  if (!final) throw new Error(`job ${jobId}: the event stream ended without a final event`);
  return (JSON.parse(final.split('\n')[1].slice('data: '.length)) as { status: string }).status;
}

/** 3: a small PTQ job through the API (warm worker) vs the CLI process vs runPtq in-process. */
async function endToEnd(scratch: Scratch, small: FileSet) {
  const config = await benchConfig(scratch, { QAAS_WORKERS: '1' });
  const modelDir = join(config.dataDir, 'source-model');
  await writeTreeAtomically(modelDir, small);
  const app = await buildApp(config, { logger: false });
  const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  const workers = startWorkers(config, { concurrency: 1 });
  try {
    const throughApi = async () => {
      const modelId = await uploadSmall(baseUrl, small);
      const res = await fetch(`${baseUrl}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ modelId, method: PTQ_METHOD }),
      });
      if (res.status !== 202) throw new Error(`job submission answered ${res.status}: ${await res.text()}`);
      const status = await finalStatus(baseUrl, ((await res.json()) as { id: string }).id);
      if (status !== 'succeeded') throw new Error(`the API job ended ${status}`);
    };
    const cliArgs = ['quantize', modelDir, '--method', PTQ_METHOD.name, '--bits', String(PTQ_METHOD.bits), '--quiet'];
    const throughCli = (run: number) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [cliPath, ...cliArgs, '--out', join(config.dataDir, `cli-out-${run}`)], {
          env: { ...process.env, QAAS_TF_BACKEND: config.tfBackend },
          stdio: ['ignore', 'ignore', 'inherit'],
        });
        child.once('error', reject);
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`qaas quantize exited ${code}`))));
      });
    const backend = await selectBackend(config.tfBackend);
    const inProcess = async (run: number) => {
      const model = await readModelDir(modelDir);
      const { files } = await runPtq(model, parseJobSpec({ method: PTQ_METHOD }), { backend });
      await writeTreeAtomically(join(config.dataDir, `lib-out-${run}`), files);
    };

    const apiCold = await timed(throughApi);
    const api: number[] = [];
    const cli: number[] = [];
    const lib: number[] = [];
    await inProcess(-1);
    for (let run = 0; run < RUNS; run++) {
      api.push(await timed(throughApi));
      cli.push(await timed(() => throughCli(run)));
      lib.push(await timed(() => inProcess(run)));
    }
    return { apiCold, api: median(api), cli: median(cli), lib: median(lib), backend };
  } finally {
    await app.close();
    await workers.close();
  }
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const verdict = (ok: boolean) => (ok ? 'ok' : 'MISSED');

async function main(): Promise<number> {
  if (process.argv[2] === '--upload-server') {
    await uploadServer();
    return 0;
  }
  if (process.argv[2] === '--load') {
    loadClient();
    return 0;
  }
  if (!(await redisAnswers(redisUrl))) {
    process.stderr.write(`bench:api: nothing answers on ${redisUrl}; start redis-server or set REDIS_URL\n`);
    return 1;
  }
  const scratch: Scratch = { configs: [], dirs: [] };
  try {
    const small = await denseModel(SMALL_WIDTHS);
    const params = SMALL_WIDTHS.slice(1).reduce((sum, units, i) => sum + (SMALL_WIDTHS[i] + 1) * units, 0);
    console.log(
      `qaas bench:api — Redis ${redisUrl}, ${CONNECTIONS} connections × ${LOAD_SECONDS} s per round, small model Dense ${SMALL_WIDTHS.join('→')} (${params} params)\n`,
    );

    const { health, submit } = await submissionThroughput(scratch, small);
    const throughputRatio = submit.perSecond / health.perSecond;
    console.log(
      `1. job submission vs /healthz, same server, autocannon in a child process, ${LOAD_ROUNDS} alternating rounds each`,
    );
    const cpu = (r: typeof health) =>
      `CPU/request: server ${r.serverMicros.toFixed(0)} µs, Redis ${r.redisMicros.toFixed(0)} µs`;
    console.log(
      `   GET /healthz   ${health.perSecond.toFixed(0).padStart(6)} req/s   p99 ${health.p99} ms   ${cpu(health)}`,
    );
    console.log(
      `   POST /v1/jobs  ${submit.perSecond.toFixed(0).padStart(6)} req/s   p99 ${submit.p99} ms   ${cpu(submit)}   (${submit.requests} jobs queued)`,
    );
    console.log(
      `   throughput ratio jobs ÷ healthz = ${throughputRatio.toFixed(2)} (target ≥ 0.3: ${verdict(throughputRatio >= 0.3)}); p99 ratio jobs ÷ healthz = ${(submit.p99 / Math.max(1, health.p99)).toFixed(2)}\n`,
    );

    const rss = await uploadRss(scratch, small);
    console.log(
      `2. ${mib(rss.uploadBytes)} upload (${BIG_SHARDS + 2} parts) to a server in a child process, ${rss.seconds.toFixed(1)} s`,
    );
    console.log(
      `   RSS baseline ${mib(rss.baseline)}, peak ${mib(rss.peak)} (${rss.hwmReset ? 'VmHWM reset via clear_refs + 10 ms VmRSS samples' : '10 ms VmRSS samples'})`,
    );
    console.log(`   growth ${mib(rss.growth)} (target < 64 MiB: ${verdict(rss.growth < 64 * MiB)})\n`);

    const e2e = await endToEnd(scratch, small);
    const ratio = e2e.api / e2e.cli;
    console.log(
      `3. small PTQ job (${PTQ_METHOD.name} ${PTQ_METHOD.bits}-bit, tfjs backend ${e2e.backend}), median of ${RUNS}`,
    );
    console.log(
      `   API upload → job → SSE final: ${e2e.api.toFixed(0)} ms (first job on a cold worker: ${e2e.apiCold.toFixed(0)} ms)`,
    );
    console.log(`   CLI qaas quantize (process):  ${e2e.cli.toFixed(0)} ms`);
    console.log(`   in-process read → runPtq → write: ${e2e.lib.toFixed(0)} ms`);
    console.log(
      `   ratio API ÷ CLI = ${ratio.toFixed(2)} (target ≤ 1.5: ${verdict(ratio <= 1.5)}); API ÷ in-process = ${(e2e.api / e2e.lib).toFixed(2)}`,
    );
    const ok = throughputRatio >= 0.3 && rss.growth < 64 * MiB && ratio <= 1.5;
    return ok ? 0 : 1;
  } finally {
    await cleanupScratch(scratch);
  }
}

main().then(
  (code) => {
    if (process.argv[2] !== '--upload-server' && process.argv[2] !== '--load') process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`bench:api: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);

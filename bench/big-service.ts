/**
 * `npm run bench:big:service` (or `node dist/bench/big-service.js` after `npm run build`): issue 12's service
 * figures for a job on a ≥ 1 GiB model through the service, in one run.
 *
 * The API (`qaas serve` with QAAS_WORKERS=0) and the worker (`qaas worker`) run as separate processes, as a
 * deployment runs them, on a free loopback port with a private DATA_DIR and Redis key prefix (REDIS_URL,
 * default 127.0.0.1:6379); every key and directory is removed at the end. The job runs in the worker's
 * BullMQ sandbox child, forked for it: its peak is the worker's peak RSS.
 *
 * 1. The seeded layers model of bench/big-model.ts, 16 × Dense 4096×4096 with biases (1.00 GiB of float32, 257
 *    shards of 4 MiB), is generated shard by shard to a temp dir and uploaded as multipart parts streamed from disk: API RSS growth
 *    while it is received, validated and stored.
 * 2. An affine uint8 per-tensor PTQ job on it, followed to its end: the worker's peak RSS (target ≤ 512 MiB).
 * 3. artifacts.zip downloaded to disk, then checked against the artifact files (every entry, its size): API
 *    RSS growth while it streams (target ≤ 64 MiB).
 *
 * RSS peaks are VmHWM (reset through /proc/<pid>/clear_refs for processes already running) with VmRSS
 * sampled every 20 ms besides (bench/service-client.ts). Exit code 1 when a target is missed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { get } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import yauzl from 'yauzl';
import { loadConfig } from '../src/config.js';
import { redisAnswers } from '../src/service.js';
import { artifactDir } from '../src/storage/artifacts.js';
import { cleanup } from '../test/http/helpers.js';
import { BIG_UNITS, writeBigModel } from './big-model.js';
import { descendants, measurePeakRss, streamUpload, type PeakRss } from './service-client.js';

const MiB = 1024 * 1024;
/** 16 is the ≥ 1 GiB model the targets are for; BENCH_LAYERS=2 makes a quick smoke run of the same path. */
const LAYERS = Number(process.env.BENCH_LAYERS || 16);
const METHOD = { name: 'affine', bits: 8, granularity: 'per-tensor' };
const WORKER_TARGET = 512 * MiB;
const ZIP_TARGET = 64 * MiB;

const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const cliPath = fileURLToPath(new URL('../src/cli.js', import.meta.url));

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function start(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM')
      process.stderr.write(`big-service: ${args.at(-1)} exited ${code ?? signal}\n`);
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

async function waitReady(baseUrl: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`${baseUrl}/readyz`).then(
      (res) => res.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`the API at ${baseUrl} did not become ready in 30 s`);
}

interface JobView {
  id: string;
  status: string;
  artifacts: string[];
  error: { message: string } | null;
  summary: { bytesAfter: number; packedBytes: number } | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

async function waitForJob(baseUrl: string, id: string): Promise<JobView> {
  for (;;) {
    const job = (await (await fetch(`${baseUrl}/v1/jobs/${id}`)).json()) as JobView;
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function download(url: string, file: string): Promise<number> {
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
    get(url, resolve).on('error', reject),
  );
  if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}`);
  await pipeline(res, createWriteStream(file));
  return (await stat(file)).size;
}

/** Every entry of the zip with its uncompressed size (central directory only: nothing is inflated). */
function zipEntries(file: string): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true }, (error, zip) => {
      if (error || !zip) return reject(error ?? new Error('no zip'));
      const entries = new Map<string, number>();
      zip.on('entry', (entry: yauzl.Entry) => {
        entries.set(entry.fileName, entry.uncompressedSize);
        zip.readEntry();
      });
      zip.on('end', () => resolve(entries));
      zip.on('error', reject);
      zip.readEntry();
    });
  });
}

async function checkZip(zipFile: string, dir: string, artifacts: string[]): Promise<void> {
  const entries = await zipEntries(zipFile);
  if ([...entries.keys()].join('\n') !== artifacts.join('\n'))
    throw new Error(`artifacts.zip lists ${entries.size} entries, the job ${artifacts.length}`);
  for (const [path, size] of entries) {
    const onDisk = (await stat(join(dir, path))).size;
    if (size !== onDisk) throw new Error(`artifacts.zip: ${path} is ${size} bytes, the artifact ${onDisk}`);
  }
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const verdict = (ok: boolean) => (ok ? 'ok' : 'MISSED');
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function timed<T>(task: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await task();
  return { value, ms: performance.now() - started };
}

function growth(rss: Map<number, PeakRss>, pid: number): PeakRss & { growth: number } {
  const entry = rss.get(pid) ?? { before: 0, peak: 0 };
  return { ...entry, growth: entry.peak - entry.before };
}

async function main(): Promise<number> {
  if (!(await redisAnswers(redisUrl))) {
    process.stderr.write(`bench:big:service: nothing answers on ${redisUrl}; start redis-server or set REDIS_URL\n`);
    return 1;
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'qaas-bench-big-service-'));
  const clientDir = await mkdtemp(join(tmpdir(), 'qaas-bench-big-client-'));
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: redisUrl,
    DATA_DIR: dataDir,
    QAAS_REDIS_PREFIX: `bench-big-service-${randomUUID()}`,
    PORT: String(port),
    HOST: '127.0.0.1',
    QAAS_WORKERS: '0',
    QAAS_API_KEYS: '',
    QAAS_RATE_LIMIT_MAX: String(1e9),
    LOG_LEVEL: 'warn',
  };
  const config = loadConfig(env);
  const baseUrl = `http://127.0.0.1:${port}`;
  const children: ChildProcess[] = [];
  try {
    const modelDir = join(clientDir, 'model');
    await mkdir(modelDir, { recursive: true });
    const generated = await timed(() => writeBigModel(modelDir, LAYERS));
    const { bytes } = generated.value;
    const names = ['model.json', ...generated.value.shards];
    console.log(
      `qaas bench:big:service — ${LAYERS} × Dense ${BIG_UNITS}×${BIG_UNITS}: ${mib(bytes)} of float32 in ${names.length - 1} shards of 4 MiB, generated in ${seconds(generated.ms)}`,
    );
    console.log(`API (qaas serve, QAAS_WORKERS=0) and worker (qaas worker) as separate processes on ${baseUrl}\n`);

    const api = start(['--max-semi-space-size=64', cliPath, 'serve'], env);
    children.push(api);
    await waitReady(baseUrl);
    const worker = start([cliPath, 'worker'], { ...env, QAAS_WORKERS: '1' });
    children.push(worker);

    const upload = await measurePeakRss(
      async () => [api.pid!],
      () => timed(() => streamUpload(baseUrl, modelDir, names)),
    );
    const uploaded = upload.result.value;
    if (uploaded.status !== 201)
      throw new Error(`the upload answered ${uploaded.status}: ${uploaded.body.slice(0, 300)}`);
    const modelId = (JSON.parse(uploaded.body) as { id: string }).id;
    const uploadRss = growth(upload.rss, api.pid!);
    console.log(`1. upload of ${mib(bytes)} (${names.length} parts): ${seconds(upload.result.ms)}`);
    console.log(
      `   API RSS ${mib(uploadRss.before)} → peak ${mib(uploadRss.peak)}: growth ${mib(uploadRss.growth)} (target < 64 MiB: ${verdict(uploadRss.growth < 64 * MiB)})\n`,
    );

    const job = await measurePeakRss(
      async () => [worker.pid!, ...(await descendants(worker.pid!))],
      () =>
        timed(async () => {
          const res = await fetch(`${baseUrl}/v1/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ modelId, method: METHOD }),
          });
          if (res.status !== 202) throw new Error(`the job submission answered ${res.status}: ${await res.text()}`);
          return waitForJob(baseUrl, ((await res.json()) as { id: string }).id);
        }),
    );
    const finished = job.result.value;
    if (finished.status !== 'succeeded')
      throw new Error(`the job ended ${finished.status}: ${finished.error?.message ?? ''}`);
    const supervisor = growth(job.rss, worker.pid!);
    const sandboxes = [...job.rss].filter(([pid]) => pid !== worker.pid);
    const workerPeak = Math.max(0, ...sandboxes.map(([, entry]) => entry.peak));
    console.log(
      `2. ${METHOD.name} ${METHOD.bits}-bit ${METHOD.granularity} PTQ job: ${seconds(job.result.ms)} from submission to succeeded; model/ ${mib(finished.summary?.bytesAfter ?? 0)}, packed/ ${mib(finished.summary?.packedBytes ?? 0)}`,
    );
    // Where the job's time went: waiting for a worker's sandbox to take it, the engine (report.json's own
    // total), and the rest of the run in the sandbox (opening the blobs as a directory, moving the
    // artifacts into place, the record's end).
    const report = (await (await fetch(`${baseUrl}/v1/jobs/${finished.id}/artifacts/report.json`)).json()) as {
      timings: { totalMs: number };
    };
    const at = (iso: string | null) => (iso === null ? NaN : Date.parse(iso));
    const queuedMs = at(finished.startedAt) - at(finished.createdAt);
    const runMs = at(finished.finishedAt) - at(finished.startedAt);
    console.log(
      `   record: queued ${seconds(queuedMs)} before a sandbox started it, then ${seconds(runMs)} running: ` +
        `the engine ${seconds(report.timings.totalMs)}, the rest ${seconds(runMs - report.timings.totalMs)}`,
    );
    console.log(
      `   worker peak RSS ${mib(workerPeak)} in the job's sandbox process (target ≤ 512 MiB: ${verdict(workerPeak > 0 && workerPeak <= WORKER_TARGET)}); supervisor process peak ${mib(supervisor.peak)}\n`,
    );

    const zipFile = join(clientDir, `${finished.id}.zip`);
    const zip = await measurePeakRss(
      async () => [api.pid!],
      () => timed(() => download(`${baseUrl}/v1/jobs/${finished.id}/artifacts.zip`, zipFile)),
    );
    await checkZip(zipFile, artifactDir(config.dataDir, 'local', finished.id), finished.artifacts);
    const zipRss = growth(zip.rss, api.pid!);
    console.log(
      `3. artifacts.zip: ${mib(zip.result.value)} (${finished.artifacts.length} entries, sizes checked against the artifacts) in ${seconds(zip.result.ms)}`,
    );
    console.log(
      `   API RSS ${mib(zipRss.before)} → peak ${mib(zipRss.peak)}: growth ${mib(zipRss.growth)} (target ≤ 64 MiB: ${verdict(zipRss.growth <= ZIP_TARGET)})`,
    );
    console.log(
      JSON.stringify({
        bench: 'big-service',
        modelBytes: bytes,
        uploadSeconds: upload.result.ms / 1000,
        apiUploadGrowthBytes: uploadRss.growth,
        jobSeconds: job.result.ms / 1000,
        workerPeakRssBytes: workerPeak,
        zipBytes: zip.result.value,
        zipSeconds: zip.result.ms / 1000,
        apiZipGrowthBytes: zipRss.growth,
      }),
    );
    return workerPeak > 0 && workerPeak <= WORKER_TARGET && zipRss.growth <= ZIP_TARGET ? 0 : 1;
  } finally {
    for (const child of children.reverse()) await stop(child);
    await cleanup(config);
    await rm(clientDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:big:service: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);

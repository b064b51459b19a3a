/**
 * The fuzz run (issue 10): a listening service on loopback with an embedded sandboxed worker, a seeded
 * stream of hostile requests (cases.ts) sent to it a few at a time, and the checks that make it a test —
 * no 5xx answer, no crash (uncaught exception or unhandled rejection in the service's process, a job that
 * ends `internal`, a service that stops answering), nothing written outside DATA_DIR (the run's directory
 * holds only DATA_DIR, the escape targets hostile archives aim at do not exist) and the records stored
 * before the run byte for byte the same after it. Bounded by a count and a time budget.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../src/config.js';
import { buildApp } from '../src/http/app.js';
import { createRng } from '../src/quant/rng.js';
import { startWorkers } from '../src/service.js';
import { makeCase, type FuzzCase, type Material } from './cases.js';

export interface FuzzOptions {
  seed: number;
  /** Requests to send (the run stops earlier when the time budget is spent). */
  count: number;
  timeBudgetMs: number;
  /** Requests in flight at once. */
  concurrency?: number;
  /** Specs submitted for real (queued and run by the worker) at most. */
  queuedJobs?: number;
  redisUrl?: string;
  log?: (line: string) => void;
}

export interface FuzzFinding {
  kind: string;
  label: string;
  status: string;
  detail: string;
}

export interface FuzzResult {
  seed: number;
  sent: number;
  elapsedMs: number;
  /** Answers by HTTP status; `no-answer:<code>` for connections that ended without one. */
  byStatus: Record<string, number>;
  byKind: Record<string, Record<string, number>>;
  serverErrors: FuzzFinding[];
  crashes: string[];
  internalJobs: string[];
  outsideWrites: string[];
  changedRecords: string[];
  queued: number;
}

export function failed(result: FuzzResult): boolean {
  return (
    result.serverErrors.length > 0 ||
    result.crashes.length > 0 ||
    result.internalJobs.length > 0 ||
    result.outsideWrites.length > 0 ||
    result.changedRecords.length > 0
  );
}

/** A Dense(4→3) layers model saved by stock tfjs, and a graph model of the same shape written by hand. */
async function material(): Promise<Omit<Material, 'modelId' | 'datasetId' | 'jobId' | 'escapeName'>> {
  const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, name: 'd' })] });
  let layers = { json: '', shard: Buffer.alloc(0) };
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      layers = {
        json: JSON.stringify({
          format: 'layers-model',
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: artifacts.weightSpecs }],
        }),
        shard: Buffer.from(artifacts.weightData as ArrayBuffer),
      };
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  model.dispose();
  const dims = (shape: number[]) => ({ dim: shape.map((size) => ({ size: String(size) })) });
  const graphJson = JSON.stringify({
    format: 'graph-model',
    signature: {
      inputs: { 'x:0': { name: 'x:0', dtype: 'DT_FLOAT', tensorShape: dims([-1, 4]) } },
      outputs: { 'y:0': { name: 'y:0', dtype: 'DT_FLOAT', tensorShape: dims([-1, 3]) } },
    },
    modelTopology: {
      node: [
        { name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims([-1, 4]) } } },
        {
          name: 'w',
          op: 'Const',
          attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dims([4, 3]) } } },
        },
        { name: 'm', op: 'MatMul', input: ['x', 'w'], attr: { T: { type: 'DT_FLOAT' } } },
        { name: 'y', op: 'Identity', input: ['m'], attr: { T: { type: 'DT_FLOAT' } } },
      ],
      versions: { producer: 1 },
    },
    weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ name: 'w', shape: [4, 3], dtype: 'float32' }] }],
  });
  const graphShard = Buffer.from(new Float32Array(Array.from({ length: 12 }, (_, i) => (i - 6) / 7)).buffer);
  return { layersJson: layers.json, layersShard: layers.shard, graphJson, graphShard };
}

interface Answer {
  status: string;
  body: string;
}

function send(port: number, request: FuzzCase, timeoutMs: number): Promise<Answer> {
  if (request.raw) return sendRaw(port, request.raw, timeoutMs);
  return new Promise((resolve) => {
    let settled = false;
    const settle = (answer: Answer) => {
      if (!settled) {
        settled = true;
        resolve(answer);
      }
    };
    const outgoing = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: request.method,
        path: request.path,
        headers: { ...request.headers, ...(request.body ? { 'content-length': String(request.body.length) } : {}) },
        agent: false,
        timeout: timeoutMs,
      },
      (response) => {
        let body = '';
        response.setEncoding('latin1');
        response.on('data', (chunk: string) => {
          if (body.length < 2000) body += chunk;
        });
        const done = () => settle({ status: String(response.statusCode), body });
        response.on('end', done);
        response.on('close', done);
        response.on('error', done);
      },
    );
    outgoing.on('timeout', () => {
      outgoing.destroy();
      settle({ status: 'no-answer:timeout', body: '' });
    });
    outgoing.on('error', (error: NodeJS.ErrnoException) =>
      settle({ status: `no-answer:${error.code ?? error.name}`, body: '' }),
    );
    outgoing.end(request.body);
  });
}

function sendRaw(port: number, raw: Buffer, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('connect', () => socket.end(raw));
    socket.on('data', (chunk) => (received += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(received)?.[1];
      resolve({ status: status ?? 'no-answer:closed', body: received.slice(0, 2000) });
    });
  });
}

/** Every record under the prefix (key → JSON) and every blob (path → sha256). */
async function snapshot(redis: Redis, config: Config): Promise<Map<string, string>> {
  const state = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.redisPrefix}:rec:*`, 'COUNT', 1000);
    cursor = next;
    const values = keys.length > 0 ? await redis.mget(keys) : [];
    keys.forEach((key, i) => state.set(key, values[i] ?? ''));
  } while (cursor !== '0');
  const blobsDir = join(config.dataDir, 'blobs');
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else
        state.set(
          path,
          createHash('sha256')
            .update(await readFile(path))
            .digest('hex'),
        );
    }
  };
  await walk(blobsDir);
  return state;
}

async function expectStatus(port: number, request: FuzzCase, status: number): Promise<string> {
  const answer = await send(port, request, 60_000);
  if (answer.status !== String(status))
    throw new Error(`${request.label}: expected ${status}, got ${answer.status} ${answer.body}`);
  return answer.body.slice(answer.body.indexOf('{'));
}

function multipartFiles(files: [string, string, Buffer][]): { headers: Record<string, string>; body: Buffer } {
  const boundary = `qaasfuzzsetup${randomUUID()}`;
  const chunks: Buffer[] = [];
  for (const [field, filename, data] of files) {
    chunks.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\n\r\n`),
      data,
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body: Buffer.concat(chunks) };
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const log = options.log ?? (() => undefined);
  const runId = randomUUID().slice(0, 8);
  const root = await mkdtemp(join(tmpdir(), 'qaas-fuzz-'));
  const dataDir = join(root, 'data');
  const config = loadConfig({
    REDIS_URL: options.redisUrl ?? 'redis://127.0.0.1:6379',
    DATA_DIR: dataDir,
    QAAS_REDIS_PREFIX: `fuzz-${runId}`,
    QAAS_TF_BACKEND: 'cpu',
    LOG_LEVEL: 'silent',
    HOST: '127.0.0.1',
    QAAS_RATE_LIMIT_MAX: String(1e9),
    QAAS_MAX_UPLOAD_BYTES: String(1024 * 1024),
    QAAS_MAX_UPLOAD_TOTAL_BYTES: String(2 * 1024 * 1024),
    QAAS_MAX_UPLOAD_FILES: '8',
    QAAS_HEADERS_TIMEOUT_MS: '5000',
    QAAS_REQUEST_TIMEOUT_MS: '20000',
  });
  const crashes: string[] = [];
  const onCrash = (what: string) => (error: unknown) =>
    crashes.push(`${what}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  const onException = onCrash('uncaught exception');
  const onRejection = onCrash('unhandled rejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);

  await tf.setBackend('cpu');
  // The service's error log, by request id: what a 5xx finding reports as its cause.
  const errorLog = new Map<string, string>();
  const app = await buildApp(config, {
    logger: {
      level: 'error',
      stream: {
        write(line: string) {
          const entry = JSON.parse(line) as { reqId?: string; err?: { stack?: string } };
          if (entry.reqId) errorLog.set(entry.reqId, entry.err?.stack ?? line);
        },
      },
    },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  const workers = startWorkers(config, { concurrency: 1 });
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
  const result: FuzzResult = {
    seed: options.seed,
    sent: 0,
    elapsedMs: 0,
    byStatus: {},
    byKind: {},
    serverErrors: [],
    crashes,
    internalJobs: [],
    outsideWrites: [],
    changedRecords: [],
    queued: 0,
  };
  const started = Date.now();
  try {
    // What the run must leave as it is: a model, a dataset and a finished job.
    const base = await material();
    const upload = multipartFiles([
      ['f', 'model.json', Buffer.from(base.layersJson)],
      ['f', 'group1-shard1of1.bin', base.layersShard],
    ]);
    const modelId = JSON.parse(
      await expectStatus(
        port,
        { kind: 'model', label: 'setup model', method: 'POST', path: '/v1/models', ...upload },
        201,
      ),
    ).id as string;
    const dataset = multipartFiles([
      [
        'data',
        'data.json',
        Buffer.from(
          JSON.stringify({
            x: [
              [1, 2, 3, 4],
              [4, 3, 2, 1],
              [0, 1, 0, 1],
            ],
            y: [0, 1, 2],
          }),
        ),
      ],
    ]);
    const datasetId = JSON.parse(
      await expectStatus(
        port,
        { kind: 'dataset', label: 'setup dataset', method: 'POST', path: '/v1/datasets', ...dataset },
        201,
      ),
    ).id as string;
    const job = JSON.stringify({ modelId, method: { name: 'affine', bits: 8 }, data: { evaluation: datasetId } });
    const jobId = JSON.parse(
      await expectStatus(
        port,
        {
          kind: 'spec',
          label: 'setup job',
          method: 'POST',
          path: '/v1/jobs',
          headers: { 'content-type': 'application/json' },
          body: Buffer.from(job),
        },
        202,
      ),
    ).id as string;
    for (let status = ''; !['succeeded', 'failed', 'cancelled'].includes(status);) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = JSON.parse((await redis.get(`${config.redisPrefix}:rec:jobs:local:${jobId}`)) ?? '{}').status ?? '';
      if (Date.now() - started > 120_000) throw new Error(`setup job ${jobId} did not end: ${status}`);
    }
    const before = await snapshot(redis, config);
    const rootBefore = (await readdir(root)).sort();
    const escapeName = `qaas-fuzz-escape-${runId}`;
    const m: Material = { ...base, modelId, datasetId, jobId, escapeName };
    log(`fuzz: seed ${options.seed}, up to ${options.count} requests, service on 127.0.0.1:${port}`);

    const rng = createRng(options.seed);
    const queuedLimit = options.queuedJobs ?? 20;
    const deadline = started + options.timeBudgetMs;
    const queuedIds: string[] = [];
    let next = 0;
    const lane = async () => {
      while (next < options.count && Date.now() < deadline) {
        next++;
        const fuzzCase = makeCase(rng, m, result.queued < queuedLimit);
        if (fuzzCase.queued) result.queued++;
        const answer = await send(port, fuzzCase, 30_000);
        result.sent++;
        result.byStatus[answer.status] = (result.byStatus[answer.status] ?? 0) + 1;
        const kind = (result.byKind[fuzzCase.kind] ??= {});
        kind[answer.status] = (kind[answer.status] ?? 0) + 1;
        if (/^5/.test(answer.status) || answer.status === 'no-answer:timeout') {
          const requestId = /"requestId":"([^"]+)"/.exec(answer.body)?.[1] ?? '';
          const cause = errorLog.get(requestId)?.split('\n').slice(0, 4).join(' | ');
          result.serverErrors.push({
            kind: fuzzCase.kind,
            label: fuzzCase.label,
            status: answer.status,
            detail: cause ?? answer.body.slice(0, 300),
          });
        }
        if (fuzzCase.queued && answer.status === '202') queuedIds.push(JSON.parse(answer.body).id as string);
        if (result.sent % 1000 === 0) log(`fuzz: ${result.sent} sent, ${JSON.stringify(result.byStatus)}`);
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 8 }, lane));

    // The jobs that were queued end, and none of them as an internal error.
    const jobsDeadline = Date.now() + 120_000;
    for (const id of queuedIds) {
      for (;;) {
        const record = JSON.parse((await redis.get(`${config.redisPrefix}:rec:jobs:local:${id}`)) ?? '{}');
        if (['succeeded', 'failed', 'cancelled'].includes(record.status)) {
          if (record.error?.type === 'internal') result.internalJobs.push(`${id}: ${record.error.message}`);
          break;
        }
        if (Date.now() > jobsDeadline) {
          result.internalJobs.push(`${id}: still ${record.status} when the run ended`);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    const health = await send(
      port,
      { kind: 'path', label: 'health', method: 'GET', path: '/healthz', headers: {} },
      10_000,
    );
    if (health.status !== '200') crashes.push(`the service stopped answering: /healthz gave ${health.status}`);

    const after = await snapshot(redis, config);
    for (const [key, value] of before) {
      if (after.get(key) !== value) result.changedRecords.push(key);
    }
    const rootAfter = (await readdir(root)).sort();
    if (rootAfter.join() !== rootBefore.join()) result.outsideWrites.push(`${root} now holds ${rootAfter.join(', ')}`);
    for (const escaped of [
      join(tmpdir(), escapeName),
      join(root, escapeName),
      join('/tmp', escapeName),
      join(dataDir, '..', escapeName),
    ]) {
      if (existsSync(escaped)) result.outsideWrites.push(escaped);
    }
  } finally {
    result.elapsedMs = Date.now() - started;
    await workers.close();
    await app.close();
    let cursor = '0';
    do {
      const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', `${config.redisPrefix}:*`, 'COUNT', 1000);
      cursor = nextCursor;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
    redis.disconnect();
    await rm(root, { recursive: true, force: true });
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  }
  return result;
}

/** The run's counts and findings as text. */
export function describeResult(result: FuzzResult): string {
  const lines = [
    `fuzz seed ${result.seed}: ${result.sent} requests in ${(result.elapsedMs / 1000).toFixed(1)} s (${result.queued} specs queued for the worker)`,
    `by status: ${Object.entries(result.byStatus)
      .sort()
      .map(([s, n]) => `${s}: ${n}`)
      .join(', ')}`,
    ...Object.entries(result.byKind).map(
      ([kind, counts]) =>
        `  ${kind}: ${Object.entries(counts)
          .sort()
          .map(([s, n]) => `${s}: ${n}`)
          .join(', ')}`,
    ),
    `5xx or unanswered: ${result.serverErrors.length}`,
    ...result.serverErrors.slice(0, 20).map((f) => `  ${f.status} ${f.kind} ${f.label} ${f.detail}`),
    `crashes: ${result.crashes.length}`,
    ...result.crashes.slice(0, 5).map((c) => `  ${c.split('\n').slice(0, 4).join(' | ')}`),
    `jobs ended internal or not at all: ${result.internalJobs.length}`,
    ...result.internalJobs.slice(0, 5).map((j) => `  ${j}`),
    `written outside DATA_DIR: ${result.outsideWrites.length}`,
    ...result.outsideWrites.map((w) => `  ${w}`),
    `stored records changed: ${result.changedRecords.length}`,
    ...result.changedRecords.slice(0, 5).map((r) => `  ${r}`),
  ];
  return lines.join('\n');
}

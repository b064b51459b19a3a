/**
 * End to end through a real sandboxed worker on real Redis and a temp DATA_DIR: upload → job → SSE →
 * artifacts that stock tfjs loads, report, zip; and a running job cancelled at a checkpoint.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import yauzl from 'yauzl';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import type { FileSet } from '../../src/model/types.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig, tinyModel } from '../http/helpers.js';
import { expectMatchesSpec } from '../http/spec-validator.js';
import { artifactDir } from '../../src/storage/artifacts.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

let config: Config;
let app: FastifyInstance;
let workers: Closable;
let source: FileSet;
let modelId: string;
let baseUrl: string;

beforeAll(async () => {
  config = await testConfig({ QAAS_WEBHOOK_ALLOW: '127.0.0.1' });
  app = await buildApp(config, { logger: false });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  workers = startWorkers(config, { concurrency: 1 });
  source = await tinyModel();
  const body = multipart(filesAsParts(source));
  modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...body })).json().id;
});

afterAll(async () => {
  await workers?.close();
  await workers?.close();
  await app?.close();
  await app?.close();
  await cleanup(config);
});

async function waitFor(jobId: string, statuses: string[], timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await app.inject({ url: `/v1/jobs/${jobId}` })).json();
    if (statuses.includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

async function readEvents(url: string): Promise<SseEvent[]> {
  const response = await fetch(url);
  expect(response.headers.get('content-type')).toContain('text/event-stream');
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('event:'))
    .map((block) => {
      const [eventLine, dataLine] = block.split('\n');
      return { event: eventLine.slice('event: '.length), data: JSON.parse(dataLine.slice('data: '.length)) };
    });
}

describe('a job through a sandboxed worker', () => {
  it('succeeds, streams state first and a final event, and yields artifacts stock tfjs loads', async () => {
    const submitted = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'affine', bits: 8, symmetric: false } },
    });
    expect(submitted.statusCode).toBe(202);
    expectMatchesSpec('POST', '/v1/jobs', submitted);
    const id = submitted.json().id;
    const events = await readEvents(`${baseUrl}/v1/jobs/${id}/events`);
    expect(events[0].event).toBe('state');
    expect(events[0].data.id).toBe(id);
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.data.progress as number);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(events.some((e) => e.event === 'stage')).toBe(true);
    expect(events.filter((e) => e.event === 'final')).toHaveLength(1);
    const final = events[events.length - 1];
    expect(final.event).toBe('final');
    expect(final.data.status).toBe('succeeded');

    const job = await waitFor(id, ['succeeded', 'failed']);
    expect(job.status).toBe('succeeded');
    expect(job.progress).toBe(100);
    expect(job.startedAt).not.toBeNull();
    expect(job.summary.bytesBefore).toBe(23 * 4);
    expect(job.artifacts).toContain('model/model.json');
    expect(job.artifacts).toContain('report.json');

    // The log is kept: a client that comes back later reads it, and a late SSE client gets it replayed.
    const logResponse = await app.inject({ url: `/v1/jobs/${id}/log` });
    expectMatchesSpec('GET', `/v1/jobs/${id}/log`, logResponse);
    const lines = logResponse.json().lines as { stage: string; message: string }[];
    expect(lines.map((l) => l.message)).toEqual(
      expect.arrayContaining(['quantizing dense_1/kernel (affine)', 'quantizing dense_2/kernel (affine)']),
    );
    const replay = await readEvents(`${baseUrl}/v1/jobs/${id}/events`);
    expect(replay.map((e) => e.event)).toEqual(['state', ...lines.map(() => 'log'), 'final']);
    expect(replay.slice(1, -1).map((e) => e.data.message)).toEqual(lines.map((l) => l.message));

    const shown = await app.inject({ url: `/v1/jobs/${id}` });
    expectMatchesSpec('GET', `/v1/jobs/${id}`, shown);
    const reportResponse = await app.inject({ url: `/v1/jobs/${id}/report` });
    expectMatchesSpec('GET', `/v1/jobs/${id}/report`, reportResponse);
    const report = reportResponse.json();
    expect(report.model.params).toBe(23);
    expect(report.tensors.map((t: { name: string }) => t.name).sort()).toEqual(['dense_1/kernel', 'dense_2/kernel']);

    const modelJson = (await app.inject({ url: `/v1/jobs/${id}/artifacts/model/model.json` })).json();
    const manifest = modelJson.weightsManifest as { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
    const shards: Buffer[] = [];
    for (const path of manifest[0].paths) {
      const res = await app.inject({ url: `/v1/jobs/${id}/artifacts/model/${path}` });
      expect(res.statusCode).toBe(200);
      shards.push(res.rawPayload);
    }
    const weightData = Buffer.concat(shards);
    await tf.setBackend('cpu');
    const loaded = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: modelJson.modelTopology,
        weightSpecs: manifest.flatMap((group) => group.weights),
        weightData: weightData.buffer.slice(weightData.byteOffset, weightData.byteOffset + weightData.byteLength),
      }),
    );
    const original = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: JSON.parse(new TextDecoder().decode(source.get('model.json'))).modelTopology,
        weightSpecs: JSON.parse(new TextDecoder().decode(source.get('model.json'))).weightsManifest[0].weights,
        weightData: source.get('group1-shard1of1.bin')!.slice().buffer,
      }),
    );
    const input = tf.tensor2d([[0.5, -1, 2, 0.25]]);
    const quantized = (loaded.predict(input) as tf.Tensor).dataSync();
    const reference = (original.predict(input) as tf.Tensor).dataSync();
    expect(quantized).toHaveLength(2);
    // 8-bit affine: each weight within s/2 of its original; the outputs of a 2-layer net stay close.
    for (let i = 0; i < 2; i++) expect(Math.abs(quantized[i] - reference[i])).toBeLessThan(0.05);
    tf.dispose(input);
    loaded.dispose();
    original.dispose();

    const zip = await app.inject({ url: `/v1/jobs/${id}/artifacts.zip` });
    expect(zip.statusCode).toBe(200);
    expect(zip.headers['content-type']).toBe('application/zip');
    const names = await zipEntryNames(zip.rawPayload);
    expect(names).toEqual(job.artifacts);

    const escape = await app.inject({ url: `/v1/jobs/${id}/artifacts/..%2F..%2Fblobs` });
    expect(escape.statusCode).toBe(404);
    expectMatchesSpec('GET', `/v1/jobs/${id}/artifacts/..%2F..%2Fblobs`, escape);
    let metrics = '';
    for (
      let i = 0;
      i < 50 && !metrics.includes('qaas_job_duration_seconds_count{method="affine",status="succeeded"} 1');
      i++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      metrics = (await app.inject({ url: '/metrics' })).body;
    }
    expect(metrics).toContain('qaas_job_duration_seconds_count{method="affine",status="succeeded"} 1');
    expect(metrics).toMatch(/qaas_jobs\{status="succeeded"\} 1/);
    expect(metrics).toMatch(/qaas_queue_jobs\{queue="quantize",state="waiting"\} 0/);
    // startWorkers ran one sandboxed quantize worker (and its webhook worker) for this app.
    expect(metrics).toMatch(/^qaas_workers\{queue="quantize"\} 1$/m);
    expect(metrics).toMatch(/qaas_uploaded_bytes_total [1-9]/);
    expect(metrics).toContain('qaas_http_request_duration_seconds_bucket');
  });

  it("streams a job's stages as they ran: no calibrate stage without calibration data, one done, up to 100%", async () => {
    const id = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'affine', bits: 4 } } })
    ).json().id;
    const live = await readEvents(`${baseUrl}/v1/jobs/${id}/events`);
    const lastProgress = live.filter((e) => e.event === 'progress').at(-1);
    expect(lastProgress?.data).toEqual({ stage: 'store', progress: 100 });
    expect(live.filter((e) => e.event === 'stage').map((e) => e.data.stage)).not.toContain('calibrate');
    expect(live.at(-1)).toMatchObject({ event: 'final', data: { status: 'succeeded', progress: 100 } });
    expect(live.at(-1)!.data).not.toHaveProperty('tenant');

    // The kept log is complete whenever the stream was opened: every stage in order, each once.
    const lines = (await app.inject({ url: `/v1/jobs/${id}/log` })).json().lines as {
      stage: string;
      message: string;
    }[];
    const stages = lines.map((l) => l.stage).filter((stage, i, all) => stage !== all[i - 1]);
    // A plain PTQ job runs on the streaming engine: it quantizes, writes and packs tensor by tensor.
    expect(stages).toEqual(['load', 'quantize', 'report', 'store']);
    expect(lines.filter((l) => /\bdone\b/.test(l.message)).map((l) => l.message)).toEqual([
      `done: ${(await waitFor(id, ['succeeded'])).artifacts.length} artifacts stored`,
    ]);
    const replay = await readEvents(`${baseUrl}/v1/jobs/${id}/events`);
    expect(replay.at(-1)!.data).not.toHaveProperty('tenant');
  });

  it('deletes a succeeded job with its artifacts', async () => {
    const id = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'ternary' } } })
    ).json().id;
    await waitFor(id, ['succeeded']);
    const dir = artifactDir(config.dataDir, 'local', id);
    expect(existsSync(join(dir, 'report.json'))).toBe(true);
    expect((await app.inject({ method: 'DELETE', url: `/v1/jobs/${id}` })).statusCode).toBe(204);
    expect(existsSync(dir)).toBe(false);
    expect(await app.services.queues.quantize.getJob(id)).toBeUndefined();
    expect((await app.inject({ url: `/v1/jobs/${id}/artifacts/report.json` })).statusCode).toBe(404);
  });

  it('cancels a running job at a checkpoint: no artifacts, not retried', async () => {
    const big = multipart(filesAsParts(await denseModel([256, 256, 256, 256, 256, 256, 256, 256, 256])));
    const bigId = (await app.inject({ method: 'POST', url: '/v1/models', ...big })).json().id;
    const id = (
      await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId: bigId, method: { name: 'kmeans', bits: 8 } },
      })
    ).json().id;
    await waitFor(id, ['running']);
    const cancel = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel` });
    expect(cancel.statusCode).toBe(200);
    expect(cancel.json().status).toBe('cancelled');
    const queued = (await app.services.queues.quantize.getJob(id))!;
    const deadline = Date.now() + 30_000;
    while (!(await queued.isCompleted()) && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 100));
    const finished = (await app.services.queues.quantize.getJob(id))!;
    expect(finished.returnvalue).toEqual({ status: 'cancelled' });
    expect(finished.attemptsMade).toBe(1);
    const job = (await app.inject({ url: `/v1/jobs/${id}` })).json();
    expect(job.status).toBe('cancelled');
    expect(job.artifacts).toEqual([]);
    expect(existsSync(artifactDir(config.dataDir, 'local', id))).toBe(false);
  });
});

describe('webhooks', () => {
  it('POSTs the final record signed with HMAC-SHA256, retrying a failed delivery; the secret stays out of Redis job data', async () => {
    const secret = 'whsec-0123456789';
    const deliveries: { status: number; body: string; signature: string | undefined }[] = [];
    const server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        const status = deliveries.length === 0 ? 500 : 204;
        deliveries.push({ status, body, signature: request.headers['x-qaas-signature'] as string | undefined });
        response.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId, method: { name: 'float16' }, webhook: { url: `http://127.0.0.1:${port}/hook`, secret } },
      });
      const id = res.json().id;
      await waitFor(id, ['succeeded']);
      const deadline = Date.now() + 20_000;
      while (deliveries.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(deliveries.map((d) => d.status)).toEqual([500, 204]);
      const { body, signature } = deliveries[1];
      expect(signature).toBe(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
      const payload = JSON.parse(body);
      expect(payload.event).toBe('job.succeeded');
      expect(payload.job.id).toBe(id);
      expect(body).not.toContain(secret);
      const quantizeJob = await app.services.queues.quantize.getJob(id);
      const webhookJob = await app.services.queues.webhooks.getJob(`webhook-${id}`);
      expect(JSON.stringify(quantizeJob?.data)).not.toContain(secret);
      expect(webhookJob?.data).toEqual({ tenant: 'local', jobId: id });
    } finally {
      server.close();
    }
  });
});

function zipEntryNames(buffer: Buffer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buffer, { lazyEntries: true }, (error, zip) => {
      if (error || !zip) return reject(error);
      const names: string[] = [];
      zip.on('entry', (entry: yauzl.Entry) => {
        names.push(entry.fileName);
        zip.readEntry();
      });
      zip.on('end', () => resolve(names.sort()));
      zip.on('error', reject);
      zip.readEntry();
    });
  });
}

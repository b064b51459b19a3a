/**
 * Sandboxed processors that die (SIGKILL, as the OOM killer does) at the worst moments, in a real `qaas
 * serve` with its embedded worker: the sandbox-killer hook makes its sandboxes kill themselves when told.
 */
import { mkdtemp, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { cleanup, filesAsParts, multipart, testConfig, tinyModel } from '../http/helpers.js';
import { serveProcess, type Served } from '../fixtures/serve.js';

const killer = new URL('../fixtures/sandbox-killer.mjs', import.meta.url).pathname;

let served: Served | undefined;
let config: Config | undefined;
afterEach(async () => {
  await served?.kill();
  if (config) await cleanup(config);
  served = undefined;
  config = undefined;
});

async function killingServe(at: 'init' | 'progress', kills: number): Promise<{ served: Served; killDir: string }> {
  config = await testConfig();
  const killDir = await mkdtemp(join(config.dataDir, 'kills-'));
  served = await serveProcess(config, {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${killer}`.trim(),
    QAAS_TEST_KILL_AT: at,
    QAAS_TEST_KILL_DIR: killDir,
    QAAS_TEST_KILLS: String(kills),
  });
  return { served, killDir };
}

async function post(base: string, path: string, body: { payload: Buffer | string; headers: Record<string, string> }) {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: body.headers, body: body.payload });
  return { status: res.status, json: await res.json() };
}

async function submit(base: string, modelId: string): Promise<string> {
  const res = await post(base, '/v1/jobs', {
    payload: JSON.stringify({ modelId, method: { name: 'affine', bits: 8 } }),
    headers: { 'content-type': 'application/json' },
  });
  expect(res.status, JSON.stringify(res.json)).toBe(202);
  return res.json.id;
}

/** Polls the job until it ends; gives up (returning the last record) after `patienceMs`, which only a hang reaches. */
async function ended(base: string, id: string, patienceMs: number) {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const job = await (await fetch(`${base}/v1/jobs/${id}`)).json();
    if (['succeeded', 'failed', 'cancelled'].includes(job.status) || Date.now() > deadline) return job;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('a sandbox SIGKILLed while it starts', () => {
  it('costs the job one attempt; the slot takes the next job and SIGTERM stops the server', async () => {
    const { served, killDir } = await killingServe('init', 1);
    const model = await post(served.base, '/v1/models', multipart(filesAsParts(await tinyModel())));
    expect(model.status).toBe(201);

    const started = Date.now();
    const first = await submit(served.base, model.json.id);
    // Far beyond the stalled interval (15 s) and the retry backoff (1 s): only a hung slot gets here.
    const firstJob = await ended(served.base, first, 90_000);
    const firstMs = Date.now() - started;
    expect(await readdir(killDir)).toEqual(['kill-0']);
    expect(firstJob.status, served.stderr()).toBe('succeeded');
    expect(firstJob.attempts).toBe(2);

    const second = await submit(served.base, model.json.id);
    const secondJob = await ended(served.base, second, 90_000);
    expect(secondJob.status, served.stderr()).toBe('succeeded');
    expect(secondJob.attempts).toBe(1);
    console.log(`sandbox killed at init: first job succeeded after ${firstMs} ms (attempt 2), next job 1 attempt`);

    served.process.kill('SIGTERM');
    const exit = await Promise.race([
      served.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running 60 s after SIGTERM'), 60_000)),
    ]);
    expect(exit).toEqual({ code: 0, signal: null });
  });
});

function metric(text: string, line: RegExp): number {
  const found = text.split('\n').find((l) => line.test(l));
  expect(found, `${line} in /metrics`).toBeDefined();
  return Number(found!.split(' ').pop());
}

describe('a sandbox SIGKILLed mid-job in every attempt', () => {
  it('ends the record failed once, not counted running, and its model can be deleted', async () => {
    const { served, killDir } = await killingServe('progress', 3);
    const model = await post(served.base, '/v1/models', multipart(filesAsParts(await tinyModel())));
    expect(model.status).toBe(201);
    const id = await submit(served.base, model.json.id);
    // Three attempts with 1 s and 2 s of backoff between them; only a record left running gets this far.
    const job = await ended(served.base, id, 90_000);
    expect((await readdir(killDir)).sort()).toEqual(['kill-0', 'kill-1', 'kill-2']);
    expect(job.status, served.stderr()).toBe('failed');
    expect(job.attempts).toBe(3);
    expect(job.error.type).toBe('worker-crashed');
    expect(job.error.message).toMatch(
      /died in every attempt \(3 attempts; last: Unexpected exit code: null signal: SIGKILL\)/,
    );
    console.log(`record after 3 SIGKILLed attempts: ${job.status}, attempts ${job.attempts}: ${job.error.message}`);

    const metrics = await (await fetch(`${served.base}/metrics`)).text();
    expect(metric(metrics, /^qaas_jobs\{status="running"\}/)).toBe(0);
    expect(metric(metrics, /^qaas_jobs\{status="failed"\}/)).toBe(1);
    // The run time is recorded only by the write that ended the job: once.
    expect(metric(metrics, /^qaas_job_duration_seconds_count\{.*status="failed"/)).toBe(1);

    const deleted = await fetch(`${served.base}/v1/models/${model.json.id}`, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
  });
});

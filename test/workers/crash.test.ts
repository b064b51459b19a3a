/**
 * A worker process SIGKILLed mid-job (with its sandbox, as when a container dies): once its lock lapses
 * another worker takes the job over and it completes exactly once, with complete artifacts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { processorFile, startWorkers, type Closable } from '../../src/service.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig } from '../http/helpers.js';

let config: Config;
let app: FastifyInstance;
let rescuer: Closable | undefined;
let doomed: ChildProcess | undefined;

function killGroup(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
}

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
});

afterAll(async () => {
  if (doomed) killGroup(doomed);
  await rescuer?.close();
  await app?.close();
  await cleanup(config);
});

async function jobOf(id: string) {
  return (await app.inject({ url: `/v1/jobs/${id}` })).json();
}

describe('a worker killed mid-job', () => {
  it('leaves the job to the next worker, which finishes it once', async () => {
    const body = multipart(filesAsParts(await denseModel([256, 256, 256, 256, 256, 256])));
    const modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...body })).json().id;
    const id = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'kmeans', bits: 8 } } })
    ).json().id;

    const service = processorFile('quantize').replace(/workers\/quantize\.js$/, 'src/service.js');
    const script = `import { startWorkers } from ${JSON.stringify(service)};
      import { loadConfig } from ${JSON.stringify(service.replace(/service\.js$/, 'config.js'))};
      startWorkers(loadConfig(), { lockDurationMs: 2000, stalledIntervalMs: 1000 });`;
    // A file, not `-e`: BullMQ forks sandboxes with this process's execArgv, and `--input-type` breaks them.
    const scriptFile = join(config.dataDir, 'doomed-worker.mjs');
    await writeFile(scriptFile, script);
    doomed = spawn(process.execPath, [scriptFile], {
      detached: true,
      stdio: 'ignore',
      env: {
        ...process.env,
        REDIS_URL: config.redisUrl,
        QAAS_REDIS_PREFIX: config.redisPrefix,
        DATA_DIR: config.dataDir,
        QAAS_TF_BACKEND: 'cpu',
        LOG_LEVEL: 'silent',
      },
    });
    let deadline = Date.now() + 30_000;
    while ((await jobOf(id)).status !== 'running' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await jobOf(id)).status).toBe('running');
    const exited = new Promise((resolve) => doomed!.once('exit', resolve));
    killGroup(doomed);
    await exited;

    rescuer = startWorkers(config, { concurrency: 1, lockDurationMs: 2000, stalledIntervalMs: 1000 });
    deadline = Date.now() + 60_000;
    let job = await jobOf(id);
    while (job.status !== 'succeeded' && job.status !== 'failed' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      job = await jobOf(id);
    }
    expect(job.status).toBe('succeeded');
    const queued = (await app.services.queues.quantize.getJob(id))!;
    expect(await queued.isCompleted()).toBe(true);
    // One attempt counted: a stall is not a failure. Completed once: the record went terminal once.
    expect(queued.attemptsMade).toBeLessThanOrEqual(1);
    const artifactsParent = join(config.dataDir, 'artifacts', 'local');
    expect(await readdir(artifactsParent)).toEqual([id]);
    expect((await app.inject({ url: `/v1/jobs/${id}/report` })).statusCode).toBe(200);
    const counts = await app.services.records.countByStatus('jobs');
    expect(counts).toEqual({ queued: 0, running: 0, succeeded: 1 });
  });
});

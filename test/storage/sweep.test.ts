/**
 * The blob sweep on real uploads: the blobs of a deleted model go once older than the grace period, those
 * a model or dataset still names never do, a blob rewritten during the sweep is put back, dead uploads'
 * temp files go, and `qaas sweep --dry-run` counts without removing.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { newId } from '../../src/storage/records.js';
import { sweepBlobs } from '../../src/storage/sweep.js';
import { cleanup, denseModel, filesAsParts, multipart, testConfig, tinyModel } from '../http/helpers.js';
import { npyOf } from '../model/dataset/npy-fixture.js';

const run = promisify(execFile);
const cli = new URL('../../dist/src/cli.js', import.meta.url).pathname;
const hour = 3600_000;

let config: Config;
let app: FastifyInstance;

interface Stored {
  id: string;
  files: { sha256: string; bytes: number }[];
}

async function uploadModel(files: Map<string, Uint8Array>): Promise<Stored> {
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(filesAsParts(files)) });
  expect(res.statusCode).toBe(201);
  return res.json();
}

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

describe('sweepBlobs', () => {
  it('removes only the blobs no record names, once past the grace period, and dead temp files', async () => {
    const { records, blobs } = app.services;
    const kept = await uploadModel(await tinyModel());
    const gone = await uploadModel(await denseModel([5, 3, 2]));
    const dataset = await app.inject({
      method: 'POST',
      url: '/v1/datasets',
      ...multipart([{ field: 'x', filename: 'x.npy', data: npyOf('<f4', [2, 4], [1, 2, 3, 4, 5, 6, 7, 8]) }]),
    });
    expect(dataset.statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: `/v1/models/${gone.id}` })).statusCode).toBe(204);
    const goneBytes = gone.files.reduce((sum, file) => sum + file.bytes, 0);

    expect(await sweepBlobs(records, blobs, { graceMs: hour })).toEqual({
      referenced: kept.files.length + 1,
      removed: 0,
      removedBytes: 0,
      young: gone.files.length,
      staleTemp: 0,
      artifacts: 0,
    });

    const later = Date.now() + 2 * hour;
    const dry = await sweepBlobs(records, blobs, { graceMs: hour, now: later, dryRun: true });
    expect(dry).toMatchObject({ removed: gone.files.length, removedBytes: goneBytes });
    for (const file of gone.files) expect(existsSync(blobs.pathOf(file.sha256))).toBe(true);

    await mkdir(blobs.tmpDir, { recursive: true });
    const [deadTemp, liveTemp] = [join(blobs.tmpDir, 'dead-upload'), join(blobs.tmpDir, 'live-upload')];
    await writeFile(deadTemp, 'x');
    await writeFile(liveTemp, 'y');
    const longAgo = new Date(Date.now() - 3 * hour);
    await utimes(deadTemp, longAgo, longAgo);

    // Artifacts of a job whose record is gone, and a killed writer's temp tree, go; a live job's stay.
    const live = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId: kept.id, method: { name: 'affine' } } })
    ).json();
    const artifactRoot = join(config.dataDir, 'artifacts', 'local');
    const [liveDir, orphanDir, tempTree] = [
      join(artifactRoot, live.id),
      join(artifactRoot, newId('jobs')),
      join(artifactRoot, '.x.tmp-1'),
    ];
    for (const dir of [liveDir, orphanDir, tempTree]) {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'report.json'), '{}');
      await utimes(dir, longAgo, longAgo);
    }

    const swept = await sweepBlobs(records, blobs, { graceMs: hour, now: Date.now() + hour / 2 });
    // Blobs written just now are within the grace period even at now + 30 min; the dead temp file is not.
    expect(swept).toMatchObject({ removed: 0, staleTemp: 1, artifacts: 2 });
    expect(existsSync(deadTemp)).toBe(false);
    expect(existsSync(liveTemp)).toBe(true);
    expect([liveDir, orphanDir, tempTree].map((dir) => existsSync(dir))).toEqual([true, false, false]);

    expect(await sweepBlobs(records, blobs, { graceMs: hour, now: later })).toMatchObject({
      removed: gone.files.length,
      removedBytes: goneBytes,
    });
    for (const file of gone.files) expect(existsSync(blobs.pathOf(file.sha256))).toBe(false);
    for (const file of kept.files) expect(existsSync(blobs.pathOf(file.sha256))).toBe(true);
    const storedDataset = await records.get('datasets', 'local', dataset.json().id);
    expect(existsSync(blobs.pathOf(storedDataset!.x!.sha256))).toBe(true);
  });

  it('puts back a blob rewritten while it was being removed', async () => {
    const { blobs } = app.services;
    const model = await uploadModel(await denseModel([3, 2]));
    const fresh = model.files[0].sha256;
    // Only a blob written before the cutoff (a minute ago) goes; this one was written just now.
    expect(await blobs.removeIfOlderThan(fresh, Date.now() - 60_000)).toBe(false);
    expect(existsSync(blobs.pathOf(fresh))).toBe(true);
    expect(await blobs.removeIfOlderThan('0'.repeat(64), Date.now())).toBe(false);
  });
});

describe('qaas sweep', () => {
  it('prints what it would remove with --dry-run and removes nothing', async () => {
    const env = {
      ...process.env,
      REDIS_URL: config.redisUrl,
      DATA_DIR: config.dataDir,
      QAAS_REDIS_PREFIX: config.redisPrefix,
    };
    const { stdout } = await run(process.execPath, [cli, 'sweep', '--dry-run', '--grace-minutes', '0'], { env });
    expect(stdout).toMatch(
      /^would remove 0 unreferenced blobs \(0 B\); kept \d+ referenced and 0 younger than 0 min; 0 stale temp files and 0 orphaned artifact directories removed\n$/,
    );
  });
});

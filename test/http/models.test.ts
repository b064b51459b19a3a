import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/http/app.js';
import type { Config } from '../../src/config.js';
import type { FileSet } from '../../src/model/types.js';
import { buildGraphModel } from '../fixtures/models.js';
import { cleanup, filesAsParts, multipart, patchBytes, testConfig, tinyModel, zipOf } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';

let config: Config;
let app: FastifyInstance;
let model: FileSet;

beforeAll(async () => {
  config = await testConfig({ QAAS_MAX_UPLOAD_BYTES: String(64 * 1024) });
  app = await buildApp(config, { logger: false });
  model = await tinyModel();
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

function upload(parts: ReturnType<typeof multipart>) {
  return app.inject({ method: 'POST', url: '/v1/models', ...parts });
}

describe('POST /v1/models', () => {
  it('stores model.json + shard parts and describes every tensor', async () => {
    const res = await upload(multipart(filesAsParts(model)));
    expect(res.statusCode).toBe(201);
    expectMatchesSpec('POST', '/v1/models', res);
    const body = res.json();
    expect(body.id).toMatch(/^mdl_[0-9a-z]{25}$/);
    expect(body.format).toBe('layers-model');
    // 4*3 + 3 + 3*2 + 2
    expect(body.params).toBe(23);
    expect(body.bytes).toBe(model.get('model.json')!.byteLength + 23 * 4);
    expect(body.tensors).toEqual([
      { name: 'dense_1/kernel', shape: [4, 3], dtype: 'float32' },
      { name: 'dense_1/bias', shape: [3], dtype: 'float32' },
      { name: 'dense_2/kernel', shape: [3, 2], dtype: 'float32' },
      { name: 'dense_2/bias', shape: [2], dtype: 'float32' },
    ]);
    expect(body.inputs).toEqual([{ name: 'dense_1_input', shape: [null, 4], dtype: 'float32' }]);
    expect(body.outputs).toEqual([{ name: 'dense_2', shape: [null, 2], dtype: 'float32' }]);
    expect(res.headers.location).toBe(`/v1/models/${body.id}`);

    const shown = await app.inject({ url: `/v1/models/${body.id}` });
    expect(shown.statusCode).toBe(200);
    expectMatchesSpec('GET', `/v1/models/${body.id}`, shown);
    expect(shown.json().sha256).toBe(body.sha256);
    expect(shown.json().tenant).toBeUndefined();
  });

  it("describes a graph model's inputs and outputs from its signature", async () => {
    const res = await upload(multipart(filesAsParts(buildGraphModel())));
    expect(res.statusCode, res.body).toBe(201);
    expectMatchesSpec('POST', '/v1/models', res);
    expect(res.json().inputs).toEqual([{ name: 'input', shape: [null, 6, 6, 2], dtype: 'float32' }]);
    expect(res.json().outputs).toEqual([{ name: 'output', shape: [null, 3], dtype: 'float32' }]);
  });

  it('takes a zip with the model inside a folder as the same model as the loose files (200, same id)', async () => {
    const loose = (await upload(multipart(filesAsParts(model)))).json();
    const zip = await zipOf([...model].map(([name, data]) => [`my-model/${name}`, data]));
    const res = await upload(multipart([{ filename: 'model.zip', data: zip }]));
    expect(res.statusCode).toBe(200);
    expectMatchesSpec('POST', '/v1/models', res);
    expect(res.json().sha256).toBe(loose.sha256);
    expect(res.json().id).toBe(loose.id);
  });

  it('refuses a zip entry that climbs out of the archive with 400', async () => {
    const zip = patchBytes(await zipOf([...model].map(([name, data]) => [`aa/${name}`, data])), 'aa/', '../');
    const res = await upload(multipart([{ filename: 'model.zip', data: zip }]));
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.json()).toMatchObject({ type: 'urn:qaas:problem:unsafe-archive-entry', status: 400 });
    expectMatchesSpec('POST', '/v1/models', res);
    expect(res.json().detail).toContain('../model.json');
  });

  it('accepts a .tar.gz and refuses one whose entry climbs out with 400', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qaas-tar-'));
    try {
      await mkdir(join(dir, 'inner', 'm'), { recursive: true });
      // A model not uploaded before in this file: the same files again would be the stored model (200).
      for (const [name, data] of await tinyModel()) await writeFile(join(dir, 'inner', 'm', name), data);
      const good = join(dir, 'good.tar.gz');
      await tar.c({ gzip: true, file: good, cwd: join(dir, 'inner') }, ['m']);
      const res = await upload(multipart([{ filename: 'model.tar.gz', data: await readFile(good) }]));
      expect(res.statusCode).toBe(201);
      expect(res.json().params).toBe(23);

      const evil = join(dir, 'evil.tgz');
      await tar.c({ gzip: true, file: evil, cwd: join(dir, 'inner', 'm'), preservePaths: true }, ['../m/model.json']);
      const refused = await upload(multipart([{ filename: 'model.tgz', data: await readFile(evil) }]));
      expect(refused.statusCode).toBe(400);
      expect(refused.json().type).toBe('urn:qaas:problem:unsafe-archive-entry');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('answers 413 for a file over the per-file limit and for a zip bomb', async () => {
    const big = new Uint8Array(65 * 1024);
    const tooBig = await upload(multipart([{ filename: 'group1-shard1of1.bin', data: big }]));
    expect(tooBig.statusCode).toBe(413);
    expect(tooBig.json().type).toBe('urn:qaas:problem:upload-too-large');
    expectMatchesSpec('POST', '/v1/models', tooBig);

    // 60 KiB of zeros deflates to well under 1 KiB: more than 100× expansion.
    const bomb = await zipOf([['model.json', new Uint8Array(60 * 1024)]]);
    expect(bomb.length).toBeLessThan(1024);
    const res = await upload(multipart([{ filename: 'bomb.zip', data: bomb }]));
    expect(res.statusCode).toBe(413);
    expect(res.json().detail).toContain('expands beyond');
  });

  it('answers 422 naming the weight whose bytes do not match its shape', async () => {
    const shard = model.get('group1-shard1of1.bin')!;
    const broken = new Map(model);
    broken.set('group1-shard1of1.bin', shard.slice(0, shard.byteLength - 8));
    const res = await upload(multipart(filesAsParts(broken)));
    expect(res.statusCode).toBe(422);
    expectMatchesSpec('POST', '/v1/models', res);
    const body = res.json();
    expect(body.type).toBe('urn:qaas:problem:invalid-model');
    expect(body.weight).toBe('dense_2/bias');
    expect(body.detail).toContain('dense_2/bias');
    expect(body.requestId).toBe(res.headers['x-request-id']);
  });

  it('answers 422 naming the weight holding NaN', async () => {
    const shard = new Float32Array(model.get('group1-shard1of1.bin')!.slice().buffer);
    shard[13] = Number.NaN; // dense_1/bias[1]: after the 12 kernel values
    const broken = new Map(model);
    broken.set('group1-shard1of1.bin', new Uint8Array(shard.buffer));
    const res = await upload(multipart(filesAsParts(broken)));
    expect(res.statusCode).toBe(422);
    expect(res.json().weight).toBe('dense_1/bias');
  });

  it('answers 422 naming the weight when the NaN is in the second of two shards', async () => {
    const json = JSON.parse(new TextDecoder().decode(model.get('model.json')));
    json.weightsManifest[0].paths = ['group1-shard1of2.bin', 'group1-shard2of2.bin'];
    const values = new Float32Array(model.get('group1-shard1of1.bin')!.slice().buffer);
    values[17] = Number.NaN; // dense_2/kernel[2]: after 12 + 3 values of dense_1 and two of dense_2/kernel
    const data = new Uint8Array(values.buffer);
    // Cut inside dense_1/bias (bytes 48–60), so a weight also spans the two shards.
    const res = await upload(
      multipart([
        { filename: 'model.json', data: JSON.stringify(json) },
        { filename: 'group1-shard1of2.bin', data: data.slice(0, 52) },
        { filename: 'group1-shard2of2.bin', data: data.slice(52) },
      ]),
    );
    expect(res.statusCode).toBe(422);
    expectMatchesSpec('POST', '/v1/models', res);
    expect(res.json()).toMatchObject({
      code: 'non-finite',
      weight: 'dense_2/kernel',
      detail: 'weight dense_2/kernel: value NaN at index 2',
    });
    expect(await readdir(join(config.dataDir, 'tmp'))).toEqual([]);
  });

  it('lists with a cursor, newest first, and deletes', async () => {
    const ids: string[] = [];
    // Three different models (tinyModel draws fresh weights): identical ones would be one record.
    for (let i = 0; i < 3; i++) ids.push((await upload(multipart(filesAsParts(await tinyModel())))).json().id);
    const firstPage = await app.inject({ url: '/v1/models?limit=2' });
    expectMatchesSpec('GET', '/v1/models?limit=2', firstPage);
    const first = firstPage.json();
    expect(first.items).toHaveLength(2);
    expect(first.items[0].id).toBe(ids[2]);
    expect(first.items[1].id).toBe(ids[1]);
    const second = (await app.inject({ url: `/v1/models?limit=2&cursor=${first.nextCursor}` })).json();
    expect(second.items[0].id).toBe(ids[0]);

    expect((await app.inject({ method: 'DELETE', url: `/v1/models/${ids[0]}` })).statusCode).toBe(204);
    expect((await app.inject({ url: `/v1/models/${ids[0]}` })).statusCode).toBe(404);
  });

  it('answers 404 problem for an unknown id and 415 for a JSON body', async () => {
    const missing = await app.inject({ url: '/v1/models/mdl_0000000000000000000000000' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().type).toBe('urn:qaas:problem:not-found');
    expectMatchesSpec('GET', '/v1/models/mdl_0000000000000000000000000', missing);
    const json = await app.inject({ method: 'POST', url: '/v1/models', payload: { a: 1 } });
    expect(json.statusCode).toBe(415);
    expectMatchesSpec('POST', '/v1/models', json);
  });
});

/**
 * POST /v1/models with Keras files (saved by Keras itself, test/fixtures/keras): a `.keras` or `.h5` is
 * stored as its TF.js conversion with its Keras origin on the record; what tfjs cannot represent is a 422
 * naming the layer; a `.keras` is a zip and meets the same archive refusals as any.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import yauzl from 'yauzl';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { cleanup, multipart, patchBytes, testConfig, zipOf } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/keras');

let config: Config;
let app: FastifyInstance;

beforeAll(async () => {
  config = await testConfig();
  app = await buildApp(config, { logger: false });
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

async function fixture(name: string): Promise<Buffer> {
  return readFile(path.join(FIXTURES, name));
}

function upload(filename: string, data: Uint8Array) {
  return app.inject({ method: 'POST', url: '/v1/models', ...multipart([{ filename, data }]) });
}

/** The entries of a zip, in order, as [name, bytes]. */
async function unzip(data: Buffer): Promise<[string, Uint8Array][]> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromBuffer(data, { lazyEntries: true }, (error, z) => (error || !z ? reject(error) : resolve(z))),
  );
  const entries: [string, Uint8Array][] = [];
  await new Promise<void>((resolve, reject) => {
    zip.on('end', () => resolve());
    zip.on('error', reject);
    zip.on('entry', (entry: yauzl.Entry) =>
      zip.openReadStream(entry, (error, stream) => {
        if (error || !stream) return reject(error);
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          entries.push([entry.fileName, Buffer.concat(chunks)]);
          zip.readEntry();
        });
      }),
    );
    zip.readEntry();
  });
  return entries;
}

describe('POST /v1/models with Keras files', () => {
  it('stores a .keras as its TF.js layers conversion, the record naming Keras and its version', async () => {
    const res = await upload('skip.keras', await fixture('functional_skip_bn.keras'));
    expect(res.statusCode, res.body).toBe(201);
    expectMatchesSpec('POST', '/v1/models', res);
    const body = res.json();
    expect(body.format).toBe('layers-model');
    expect(body.source).toEqual({ format: 'keras', kerasVersion: '3.15.1' });
    expect(body.files.map((f: { path: string }) => f.path)).toEqual(['model.json', 'group1-shard1of1.bin']);
    expect(body.tensors.slice(0, 3)).toEqual([
      { name: 'conv2d/kernel', shape: [3, 3, 2, 4], dtype: 'float32' },
      { name: 'conv2d/bias', shape: [4], dtype: 'float32' },
      { name: 'batch_normalization/gamma', shape: [4], dtype: 'float32' },
    ]);
    // conv 3·3·2·4+4, BN 4·4, conv 3·3·4·4+4, PReLU 6·6·6, dense 6·6+6, 6·4+4, 4·3+3
    expect(body.params).toBe(76 + 16 + 148 + 216 + 42 + 28 + 15);
    expect(body.inputs).toEqual([{ name: 'image', shape: [null, 6, 6, 2], dtype: 'float32' }]);
    expect(body.outputs).toEqual([{ name: 'softmax', shape: [null, 3], dtype: 'float32' }]);

    const shown = await app.inject({ url: `/v1/models/${body.id}` });
    expectMatchesSpec('GET', `/v1/models/${body.id}`, shown);
    expect(shown.json().source).toEqual({ format: 'keras', kerasVersion: '3.15.1' });

    // The conversion is deterministic: the same .keras again is the stored model.
    const again = await upload('skip-again.keras', await fixture('functional_skip_bn.keras'));
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().id).toBe(body.id);
  });

  it('stores a legacy .h5 the same way: the same tensors as the .keras of the same model', async () => {
    const fromH5 = await upload('lstm.h5', await fixture('lstm.h5'));
    const fromKeras = await upload('lstm.keras', await fixture('lstm.keras'));
    expect(fromH5.statusCode, fromH5.body).toBe(201);
    expect(fromH5.json().source).toEqual({ format: 'h5', kerasVersion: '3.15.1' });
    expect(fromH5.json().tensors).toEqual(fromKeras.json().tensors);
    expect(fromH5.json().inputs).toEqual([{ name: 'input_layer', shape: [null, 7], dtype: 'int32' }]);
    // Same weights, same topology but for Keras's h5 `backend` attribute: the model.json differs, the shard not.
    expect(fromH5.json().files[1]).toEqual(fromKeras.json().files[1]);
  });

  it('answers 422 naming a layer tfjs-layers cannot represent', async () => {
    const count = async () => (await app.inject({ url: '/v1/models?limit=100' })).json().items.length as number;
    const before = await count();
    const res = await upload('unsupported.keras', await fixture('unsupported_layer.keras'));
    expect(res.statusCode).toBe(422);
    expectMatchesSpec('POST', '/v1/models', res);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.json().layer).toBe('groups');
    expect(res.json().detail).toMatch(/groups: GroupNormalization is not a tf\.layers class/);
    expect(await count()).toBe(before);
  });

  it('answers 422 for a weights-only .h5, a .keras without its weights, and bytes that are not HDF5', async () => {
    const entries = await unzip(await fixture('lstm.keras'));
    const weightsOnly = await upload('lstm.weights.h5', entries.find(([name]) => name === 'model.weights.h5')![1]);
    expect(weightsOnly.statusCode).toBe(422);
    expect(weightsOnly.json().detail).toMatch(
      /lstm\.weights\.h5 has no model_config or model_weights: save the whole model/,
    );

    const noWeights = await upload('lstm.keras', await zipOf(entries.filter(([name]) => name !== 'model.weights.h5')));
    expect(noWeights.statusCode).toBe(422);
    expect(noWeights.json()).toMatchObject({ code: 'missing-file', file: 'model.weights.h5' });

    const garbage = await upload('model.h5', new TextEncoder().encode('not hdf5 at all'));
    expect(garbage.statusCode).toBe(422);
    expect(garbage.json()).toMatchObject({ code: 'malformed-file', file: 'model.h5' });
    expect(garbage.json().detail).toMatch(/model\.h5 is not a readable HDF5 file/);
  });

  it('refuses a .keras whose entry climbs out of the archive, like any zip', async () => {
    const entries = await unzip(await fixture('sequential_cnn.keras'));
    const zip = await zipOf(entries.map(([name, data]) => [`aa/${name}`, data]));
    const res = await upload('cnn.keras', patchBytes(zip, 'aa/', '../'));
    expect(res.statusCode).toBe(400);
    expect(res.json().type).toMatch(/unsafe-archive-entry$/);
  });

  it('refuses a .keras that expands past the expansion limit (a zip bomb), like any zip', async () => {
    const entries = await unzip(await fixture('sequential_cnn.keras'));
    const bomb = await zipOf([...entries, ['assets/zeros.bin', new Uint8Array(8 * 1024 * 1024)]]);
    const res = await upload('bomb.keras', bomb);
    expect(res.statusCode).toBe(413);
    expect(res.json().detail).toMatch(/bomb\.keras expands beyond/);
  });
});

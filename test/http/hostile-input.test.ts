/**
 * Input a hostile client sends that once answered 5xx (issue 10 items 4–7): each must be a 4xx
 * problem+json, store nothing, and leave the tenant's lists answering.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import * as tf from '@tensorflow/tfjs';
import { buildApp } from '../../src/http/app.js';
import { MAX_LAYER_DEPTH } from '../../src/model/topology.js';
import type { Config } from '../../src/config.js';
import { tarGzOf } from '../../fuzz/cases.js';
import { buildGraphModel } from '../fixtures/models.js';
import { npy } from '../model/dataset/npy-fixture.js';
import { cleanup, filesAsParts, multipart, testConfig, tinyModel, zipOf } from './helpers.js';

let config: Config;
let app: FastifyInstance;

beforeAll(async () => {
  config = await testConfig({ QAAS_RATE_LIMIT_MAX: '100000' });
  app = await buildApp(config, { logger: process.env.DEBUG_LOG ? { level: 'error' } : false });
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

function upload(parts: ReturnType<typeof multipart>, url = '/v1/models') {
  return app.inject({ method: 'POST', url, ...parts });
}

async function modelCount(): Promise<number> {
  const res = await app.inject({ url: '/v1/models?limit=100' });
  expect(res.statusCode, res.body).toBe(200);
  return res.json().items.length;
}

/** model.json alone (no weights) with the given Keras topology. */
function layersModelJson(modelTopology: unknown) {
  return multipart([
    { filename: 'model.json', data: encode({ format: 'layers-model', modelTopology, weightsManifest: [] }) },
  ]);
}

describe('graph model shapes that are not sizes (item 4)', () => {
  for (const size of ['2.5', '1e309', 'abc', '-2']) {
    it(`refuses a Placeholder dim "${size}" with 422 naming the node, and stores nothing`, async () => {
      const before = await modelCount();
      const files = buildGraphModel();
      const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
      delete json.signature;
      json.modelTopology.node[0].attr.shape.shape.dim[1].size = size;
      files.set('model.json', encode(json));
      const res = await upload(multipart(filesAsParts(files)));
      expect(res.statusCode, res.body).toBe(422);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.json().layer).toBe('input');
      expect(res.json().detail).toContain(size);
      expect(await modelCount()).toBe(before);
    });
  }

  it('refuses a signature tensorShape dim of 1e309 with 422', async () => {
    const files = buildGraphModel();
    const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
    json.signature.inputs['input:0'].tensorShape.dim[1].size = '1e309';
    files.set('model.json', encode(json));
    const res = await upload(multipart(filesAsParts(files)));
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toContain('1e309');
  });

  it('describes a layers input of batch_input_shape [null, 2.5] as an unknown size rather than failing', async () => {
    const res = await upload(
      layersModelJson({
        class_name: 'Sequential',
        config: {
          name: 's',
          layers: [{ class_name: 'Flatten', config: { name: 'f', batch_input_shape: [null, 2.5, 1e400] } }],
        },
      }),
    );
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().inputs).toEqual([{ name: 'f_input', shape: [null, null, null], dtype: 'float32' }]);
  });

  it('lists the other models when one stored record no longer fits the schema', async () => {
    const good = await upload(multipart(filesAsParts(await tinyModel())));
    expect(good.statusCode).toBe(201);
    const bad = await upload(multipart(filesAsParts(await tinyModel())));
    const redis = new Redis(config.redisUrl);
    try {
      const key = `${config.redisPrefix}:rec:models:local:${bad.json().id}`;
      const record = JSON.parse((await redis.get(key))!);
      record.params = 'many';
      await redis.set(key, JSON.stringify(record));
      const res = await app.inject({ url: '/v1/models?limit=100' });
      expect(res.statusCode, res.body).toBe(200);
      const ids = res.json().items.map((m: { id: string }) => m.id);
      expect(ids).toContain(good.json().id);
      expect(ids).not.toContain(bad.json().id);
      await redis.set(key, '{not json');
      const again = await app.inject({ url: '/v1/models?limit=100' });
      expect(again.statusCode, again.body).toBe(200);
      expect(again.json().items.map((m: { id: string }) => m.id)).toContain(good.json().id);
    } finally {
      redis.disconnect();
    }
  });
});

describe('malformed multipart bodies (item 5)', () => {
  it('answers 400 for a body cut off in the middle of a part', async () => {
    const body = multipart(filesAsParts(await tinyModel()));
    const res = await upload({ headers: body.headers, payload: body.payload.subarray(0, body.payload.length - 60) });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  });

  it('answers 400 for a body cut off inside the part headers', async () => {
    const body = multipart(filesAsParts(await tinyModel()));
    const res = await upload({ headers: body.headers, payload: body.payload.subarray(0, 70) });
    expect(res.statusCode, res.body).toBe(400);
  });

  it('answers 400 for multipart/form-data without a boundary', async () => {
    const body = multipart(filesAsParts(await tinyModel()));
    const res = await upload({ headers: { 'content-type': 'multipart/form-data' }, payload: body.payload });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().detail).toMatch(/boundary/i);
  });

  it('answers 400 for a boundary longer than 70 characters (RFC 2046), e.g. 300', async () => {
    const boundary = 'b'.repeat(300);
    const payload = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="model.json"\r\n\r\n{}\r\n--${boundary}--\r\n`,
    );
    const res = await upload({ headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, payload });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().detail).toMatch(/boundary/i);
  });

  it('answers 400 for a truncated dataset upload too', async () => {
    const body = multipart([{ field: 'data', filename: 'data.json', data: '{"x": [[1, 2], [3, 4]]}' }]);
    const res = await upload(
      { headers: body.headers, payload: body.payload.subarray(0, body.payload.length - 10) },
      '/v1/datasets',
    );
    expect(res.statusCode, res.body).toBe(400);
  });
});

/**
 * model.json text with `inner` wrapped `depth` times by `open(i)` … `close`, inside `around`: written as
 * text, since JSON.stringify itself recurses and runs out of stack on what it would have to write.
 */
function nestedModelJson(
  depth: number,
  open: (i: number) => string,
  inner: string,
  close: string,
  around: [string, string] = ['', ''],
) {
  const opens = Array.from({ length: depth }, (_, i) => open(i)).join('');
  const topology = around[0] + opens + inner + close.repeat(depth) + around[1];
  return multipart([
    { filename: 'model.json', data: `{"format":"layers-model","weightsManifest":[],"modelTopology":${topology}}` },
  ]);
}

/** Sequential models `depth` deep, each holding the next, around one Flatten. */
function nestedSequential(depth: number) {
  return nestedModelJson(
    depth,
    (i) => `{"class_name":"Sequential","config":{"name":"s${i}","layers":[`,
    '{"class_name":"Flatten","config":{"name":"f","batch_input_shape":[null,2,2]}}',
    ']}}',
  );
}

/** A Sequential holding TimeDistributed wrappers `depth` deep around one Dense. */
function nestedTimeDistributed(depth: number) {
  return nestedModelJson(
    depth,
    (i) =>
      `{"class_name":"TimeDistributed","config":{"name":"t${i}",${i === 0 ? '"batch_input_shape":[null,3,4,5],' : ''}"layer":`,
    '{"class_name":"Dense","config":{"name":"d","units":2}}',
    '}}',
    ['{"class_name":"Sequential","config":{"name":"s","layers":[', ']}}'],
  );
}

function functionalChain(length: number) {
  const layers: unknown[] = [
    { class_name: 'InputLayer', name: 'in', config: { name: 'in', batch_input_shape: [null, 4] }, inbound_nodes: [] },
  ];
  for (let i = 0; i < length; i++) {
    layers.push({
      class_name: 'Activation',
      name: `a${i}`,
      config: { name: `a${i}`, activation: 'relu' },
      inbound_nodes: [[[i === 0 ? 'in' : `a${i - 1}`, 0, 0, {}]]],
    });
  }
  return {
    class_name: 'Model',
    config: { name: 'm', layers, input_layers: [['in', 0, 0]], output_layers: [[`a${length - 1}`, 0, 0]] },
  };
}

describe('deep nesting (item 6)', () => {
  it('refuses Sequential nested 3,000 deep with 422 saying how deep is allowed', async () => {
    const res = await upload(nestedSequential(3000));
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toMatch(/nest/);
  });

  it('refuses TimeDistributed nested 10,000 deep with 422', async () => {
    const res = await upload(nestedTimeDistributed(10_000));
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toMatch(/nest/);
  });

  it('accepts nesting a real model has (Sequential 3 deep, TimeDistributed 2 deep)', async () => {
    const sequential = await upload(nestedSequential(3));
    expect(sequential.statusCode, sequential.body).toBe(201);
    expect(sequential.json().inputs).toEqual([{ name: 'f_input', shape: [null, 2, 2], dtype: 'float32' }]);
    const wrapped = await upload(nestedTimeDistributed(2));
    expect(wrapped.statusCode, wrapped.body).toBe(201);
    expect(wrapped.json().outputs).toEqual([{ name: 't0', shape: [null, 3, 4, 2], dtype: 'float32' }]);
  });

  it('refuses a 10,000-layer functional chain with 422 (tfjs cannot build one that deep)', async () => {
    const res = await upload(layersModelJson(functionalChain(10_000)));
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toContain('10001 layers deep');
    const over = await upload(layersModelJson(functionalChain(MAX_LAYER_DEPTH)));
    expect(over.statusCode, over.body).toBe(422);
  });

  it('takes a chain as deep as the limit, which stock tfjs loads and runs', async () => {
    const topology = functionalChain(MAX_LAYER_DEPTH - 1);
    const ok = await upload(layersModelJson(topology));
    expect(ok.statusCode, ok.body).toBe(201);
    expect(ok.json().outputs).toEqual([{ name: `a${MAX_LAYER_DEPTH - 2}`, shape: [null, 4], dtype: 'float32' }]);
    await tf.setBackend('cpu');
    const model = await tf.loadLayersModel({
      load: async () => ({ modelTopology: topology as never, weightSpecs: [], weightData: new ArrayBuffer(0) }),
    });
    const y = tf.tidy(() => (model.predict(tf.tensor2d([[-1, 2, -3, 4]])) as tf.Tensor).arraySync());
    expect(y).toEqual([[0, 2, 0, 4]]);
    model.dispose();
  });

  it('refuses dataset JSON with x nested 50,000 deep with 422', async () => {
    const x = '['.repeat(50_000) + '1' + ']'.repeat(50_000);
    const res = await upload(
      multipart([{ field: 'data', filename: 'data.json', data: `{"x": ${x}}` }]),
      '/v1/datasets',
    );
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toMatch(/deep|nest/);
  });

  it('refuses a job spec nested 50,000 deep with 400', async () => {
    const deep = '{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000);
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'deep' },
      payload: `{"modelId": "mdl_x", "method": {"name": "affine"}, "layers": {"overrides": {"x": ${deep}}}}`,
    });
    expect(res.statusCode, res.body).toBe(400);
  });
});

describe('keys that name Object.prototype members (item 7)', () => {
  let modelId: string;
  beforeAll(async () => {
    modelId = (await upload(multipart(filesAsParts(await tinyModel())))).json().id;
  });

  const submit = (body: string) =>
    app.inject({
      method: 'POST',
      url: '/v1/jobs?dryRun=true',
      headers: { 'content-type': 'application/json' },
      payload: body,
    });

  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']) {
    it(`answers 400 for method.name "${name}"`, async () => {
      const res = await submit(JSON.stringify({ modelId, method: { name } }));
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().detail).toContain('unknown method');
    });

    it(`answers 400 for method.name "${name}" with kind qat`, async () => {
      const res = await submit(JSON.stringify({ modelId, kind: 'qat', method: { name }, data: { training: 'ds_x' } }));
      expect(res.statusCode, res.body).toBe(400);
    });

    it(`answers 400 for an override naming method "${name}"`, async () => {
      const res = await submit(
        JSON.stringify({ modelId, method: { name: 'affine' }, layers: { overrides: { 'dense_1/*': { name } } } }),
      );
      expect(res.statusCode, res.body).toBe(400);
    });

    it(`takes "${name}" as an override glob like any other (it matches no weight)`, async () => {
      const res = await submit(
        `{"modelId": "${modelId}", "method": {"name": "affine"}, "layers": {"overrides": {"${name}": {"bits": 4}}}}`,
      );
      expect([200, 400]).toContain(res.statusCode);
      expect(res.statusCode, res.body).not.toBe(500);
    });
  }

  it('answers 400 for an admm projection named "constructor"', async () => {
    const res = await submit(
      JSON.stringify({
        modelId,
        kind: 'qat',
        method: { name: 'admm', projection: 'constructor' },
        data: { training: 'ds_x' },
      }),
    );
    expect(res.statusCode, res.body).toBe(400);
  });
});

describe('specs the API can tell will fail (item 8)', () => {
  let modelId: string;
  let unlabelled: string;
  let labelled: string;
  beforeAll(async () => {
    modelId = (await upload(multipart(filesAsParts(await tinyModel())))).json().id;
    const x = [
      [1, 2, 3, 4],
      [4, 3, 2, 1],
    ];
    const dataset = async (body: unknown) => {
      const res = await upload(
        multipart([{ field: 'data', filename: 'data.json', data: JSON.stringify(body) }]),
        '/v1/datasets',
      );
      expect(res.statusCode, res.body).toBe(201);
      return res.json().id as string;
    };
    unlabelled = await dataset({ x });
    labelled = await dataset({ x, y: [0, 1] });
  });

  const submit = (spec: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'affine' }, ...spec } });

  it('answers 400 for QAT on a training dataset without labels, naming data.training', async () => {
    const res = await submit({ kind: 'qat', data: { training: unlabelled } });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().problems).toEqual([{ path: '/data/training', message: expect.stringContaining('no labels') }]);
    const ok = await app.inject({
      method: 'POST',
      url: '/v1/jobs?dryRun=true',
      payload: { modelId, kind: 'qat', method: { name: 'affine' }, data: { training: labelled } },
    });
    expect(ok.statusCode, ok.body).toBe(200);
  });

  it('answers 400 for auto when data.verification and data.evaluation disagree on labels, naming data.verification', async () => {
    const res = await submit({
      kind: 'auto',
      data: { evaluation: labelled, verification: unlabelled },
      target: { maxDrop: 0.1 },
    });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().problems).toEqual([
      { path: '/data/verification', message: expect.stringContaining('data.verification has no') },
    ]);
    const ok = await app.inject({
      method: 'POST',
      url: '/v1/jobs?dryRun=true',
      payload: {
        modelId,
        kind: 'auto',
        method: { name: 'affine' },
        data: { evaluation: labelled, verification: labelled },
        target: { maxDrop: 0.1 },
      },
    });
    expect(ok.statusCode, ok.body).toBe(200);
  });

  it('answers 400 for kind auto (and analyze) when layers.skip leaves no tensor to quantize', async () => {
    for (const kind of ['auto', 'analyze']) {
      const res = await submit({
        kind,
        layers: { skip: ['dense_*/kernel'] },
        data: { evaluation: labelled },
        target: { maxDrop: 0.1 },
      });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().problems[0].path).toBe('/layers/skip');
    }
    const partial = await app.inject({
      method: 'POST',
      url: '/v1/jobs?dryRun=true',
      payload: {
        modelId,
        kind: 'auto',
        method: { name: 'affine' },
        layers: { skip: ['dense_1/*'] },
        data: { evaluation: labelled },
        target: { maxDrop: 0.1 },
      },
    });
    expect(partial.statusCode, partial.body).toBe(200);
  });
});

describe('what the fuzz run found', () => {
  it('refuses a model.json whose format is nested 20,000 deep with 422 (quoting it overflowed the stack)', async () => {
    const deep = '['.repeat(20_000) + ']'.repeat(20_000);
    const res = await upload(
      multipart([{ filename: 'model.json', data: `{"format": ${deep}, "modelTopology": {"node": []}}` }]),
    );
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toContain('a deeply nested list');
  });

  it('refuses an .npz whose entry has a broken local header with 422', async () => {
    const x = npy('<f4', [2, 2], new Uint8Array(16));
    const npz = Buffer.from(await zipOf([['x.npy', x]], { compress: false }));
    npz.writeUInt32LE(0x36034b50, 0);
    const res = await upload(multipart([{ field: 'data', filename: 'data.npz', data: npz }]), '/v1/datasets');
    expect(res.statusCode, res.body).toBe(422);
    expect(res.json().detail).toMatch(/x\.npy: bad \.npz entry/);
  });
});

describe('a damaged .tar.gz (found by the fuzz run after tar staging changed)', () => {
  it('is a 4xx, cut short or with a bad header checksum, with no uncaught exception from the entry streams it ends', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const files = await tinyModel();
      const archive = tarGzOf([
        { name: '../../escape', data: Buffer.from('x') },
        ...[...files].map(([name, data]) => ({ name, data: Buffer.from(data) })),
      ]);
      // The refused first entry, then a header whose checksum fails, parsed in the same chunk.
      const tar = gunzipSync(archive);
      tar[1024 + 148] ^= 1;
      const damaged = [gzipSync(tar), ...[40, 200, 600].map((cut) => archive.subarray(0, cut))];
      const statuses = new Set<number>();
      for (const data of damaged) {
        const res = await upload(multipart([{ filename: 'model.tar.gz', data }]));
        statuses.add(res.statusCode);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(
        [...statuses].every((status) => status >= 400 && status < 500),
        [...statuses].join(),
      ).toBe(true);
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});

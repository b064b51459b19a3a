/**
 * /v1/datasets (upload of .npy pairs, .npz and JSON checked from headers; list, show, delete) and the
 * dataset checks at job submission: 404 for a dataset that is not the tenant's, 422 naming the mismatch
 * with the model's input or output.
 */
import { describe, expect, it } from 'vitest';
import { openStoredDataset } from '../../src/storage/datasets.js';
import { npyOf } from '../model/dataset/npy-fixture.js';
import { buildGraphModel } from '../fixtures/models.js';
import { alice, bob, multipart, zipOf, type Part } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

/** Alice's tinyModel: input 'dense_1_input' [null, 4] → output 'dense_2' [null, 2]. */
const suite = useTwoTenantApp();

function upload(parts: Part[], headers: Record<string, string> = alice) {
  const body = multipart(parts);
  return suite.app.inject({
    method: 'POST',
    url: '/v1/datasets',
    payload: body.payload,
    headers: { ...body.headers, ...headers },
  });
}

async function uploaded(parts: Part[], headers: Record<string, string> = alice): Promise<string> {
  const res = await upload(parts, headers);
  expect(res.statusCode, res.body).toBe(201);
  return res.json().id;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const xOf = (features: number, samples = 3) => npyOf('<f4', [samples, features], range(samples * features));
let freshCount = 0;
/** A [3, 4] x no other upload in this file has: the same arrays again would be the stored dataset (200). */
const freshX = () => {
  const offset = ++freshCount * 100;
  return npyOf(
    '<f4',
    [3, 4],
    range(12).map((v) => v + offset),
  );
};

function submit(data: Record<string, string>, headers: Record<string, string> = alice) {
  return suite.app.inject({
    method: 'POST',
    url: '/v1/jobs',
    payload: { modelId: suite.modelId, method: { name: 'affine', bits: 8 }, data },
    headers,
  });
}

describe('POST /v1/datasets', () => {
  it('stores an .npz (x and y in one archive) and opens it for the worker', async () => {
    const npz = await zipOf([
      ['x.npy', npyOf('>f8', [3, 4], range(12))],
      ['y.npy', npyOf('|u1', [3], [1, 0, 1])],
    ]);
    const res = await upload([{ field: 'data', filename: 'data.npz', data: npz }]);
    expect(res.statusCode).toBe(201);
    expectMatchesSpec('POST', '/v1/datasets', res);
    expect(res.json()).toMatchObject({
      samples: 3,
      x: { dtype: '>f8', shape: [3, 4] },
      y: { dtype: '|u1', shape: [3] },
      bytes: npz.length,
    });
    const record = await suite.app.services.records.get('datasets', 'alice', res.json().id);
    const dataset = await openStoredDataset(record!, suite.app.services.blobs);
    expect(dataset.y?.labels).toBe('index');
    const batches = [];
    for await (const batch of dataset.batches(2, { start: 1 })) batches.push(batch);
    expect(Array.from(batches[0].x.subarray(0, 4))).toEqual([4, 5, 6, 7]);
    expect(batches.map((b) => Array.from(b.y!))).toEqual([[0, 1]]);
    await dataset.close();
  });

  it('opens stored .npy pairs and JSON documents for the worker', async () => {
    const pairId = await uploaded([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: npyOf('<f4', [3, 2], [1, 0, 0, 1, 1, 0]) },
    ]);
    const pair = await openStoredDataset(
      (await suite.app.services.records.get('datasets', 'alice', pairId))!,
      suite.app.services.blobs,
    );
    expect(pair.y).toEqual({ dtype: 'float32', sampleShape: [2], labels: 'onehot' });
    await pair.close();
    const jsonId = await uploaded([{ filename: 'd.json', data: JSON.stringify({ x: [[1, 2, 3, 4]], y: [0.5] }) }]);
    const record = (await suite.app.services.records.get('datasets', 'alice', jsonId))!;
    expect(record.x).toMatchObject({ dtype: 'float64', shape: [1, 4], encoding: 'json' });
    const json = await openStoredDataset(record, suite.app.services.blobs);
    expect(json.y?.labels).toBe('values');
    await json.close();
  });

  it('answers 422 naming the part for Fortran order, truncated data and a bad archive', async () => {
    const fortran = await upload([
      { field: 'x', filename: 'x.npy', data: npyOf('<f4', [2, 2], [1, 2, 3, 4], { fortran: true }) },
    ]);
    expect(fortran.statusCode).toBe(422);
    expect(fortran.json()).toMatchObject({ type: 'urn:qaas:problem:invalid-dataset' });
    expectMatchesSpec('POST', '/v1/datasets', fortran);
    expect(fortran.json().detail).toMatch(/^x: Fortran-ordered \.npy arrays are not supported; save in C order/);
    const short = await upload([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: xOf(1).slice(0, -4) },
    ]);
    expect(short.json().detail).toBe('y: .npy data holds 8 bytes, shape (3, 1) of <f4 needs 12');
    const notZip = await upload([{ filename: 'data.npz', data: 'nope' }]);
    expect(notZip.statusCode).toBe(422);
    expect(notZip.json().detail).toContain('data.npz: not a readable .npz');
    const none = await upload([{ filename: 'readme.txt', data: 'hello' }]);
    expect(none.statusCode).toBe(400);
  });
});

describe('GET and DELETE /v1/datasets', () => {
  it('lists with a cursor, shows, hides other tenants and deletes', async () => {
    const ids = [
      await uploaded([{ field: 'x', filename: 'x.npy', data: xOf(2) }], bob),
      await uploaded([{ field: 'x', filename: 'x.npy', data: xOf(3) }], bob),
    ];
    const first = await suite.app.inject({ url: '/v1/datasets?limit=1', headers: bob });
    expect(first.statusCode).toBe(200);
    expectMatchesSpec('GET', '/v1/datasets', first);
    expect(first.json().items.map((d: { id: string }) => d.id)).toEqual([ids[1]]);
    const second = await suite.app.inject({
      url: `/v1/datasets?limit=1&cursor=${first.json().nextCursor}`,
      headers: bob,
    });
    expect(second.json()).toEqual({ items: [expect.objectContaining({ id: ids[0], samples: 3 })], nextCursor: null });
    const shown = await suite.app.inject({ url: `/v1/datasets/${ids[0]}`, headers: bob });
    expect(shown.json()).toMatchObject({ id: ids[0], x: { shape: [3, 2] }, y: null });
    expectMatchesSpec('GET', `/v1/datasets/${ids[0]}`, shown);
    expect(shown.json().tenant).toBeUndefined();
    expect((await suite.app.inject({ url: `/v1/datasets/${ids[0]}`, headers: alice })).statusCode).toBe(404);
    expect(
      (await suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${ids[0]}`, headers: alice })).statusCode,
    ).toBe(404);
    expect((await suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${ids[0]}`, headers: bob })).statusCode).toBe(
      204,
    );
    expect((await suite.app.inject({ url: `/v1/datasets/${ids[0]}`, headers: bob })).statusCode).toBe(404);
    expect((await suite.app.inject({ url: '/v1/datasets/nonsense', headers: bob })).statusCode).toBe(404);
  });

  it('refuses to delete a dataset a queued job names', async () => {
    const id = await uploaded([{ field: 'x', filename: 'x.npy', data: freshX() }]);
    expect((await submit({ calibration: id })).statusCode).toBe(202);
    const res = await suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${id}`, headers: alice });
    expect(res.statusCode).toBe(409);
    expectMatchesSpec('DELETE', `/v1/datasets/${id}`, res);
    expect(res.json().detail).toMatch(new RegExp(`^dataset ${id} is used by unfinished jobs: job_`));
  });

  it('deletes a dataset once the jobs that name it ended', async () => {
    const id = await uploaded([{ field: 'x', filename: 'x.npy', data: freshX() }]);
    const jobs = [(await submit({ calibration: id })).json().id, (await submit({ evaluation: id })).json().id];
    const del = () => suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${id}`, headers: alice });
    const refused = await del();
    expect(refused.statusCode).toBe(409);
    expect(refused.json().jobs).toEqual([...jobs].sort());
    await suite.app.inject({ method: 'POST', url: `/v1/jobs/${jobs[0]}/cancel`, headers: alice });
    expect((await del()).json().jobs).toEqual([jobs[1]]);
    await suite.app.inject({ method: 'POST', url: `/v1/jobs/${jobs[1]}/cancel`, headers: alice });
    expect((await del()).statusCode).toBe(204);
    expect((await suite.app.inject({ url: `/v1/datasets/${id}`, headers: alice })).statusCode).toBe(404);
  });

  it('never lets a delete and a submission both win: no job is left naming a deleted dataset', async () => {
    for (let round = 0; round < 5; round++) {
      const id = await uploaded([{ field: 'x', filename: 'x.npy', data: freshX() }]);
      const [deleted, ...submitted] = await Promise.all([
        suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${id}`, headers: alice }),
        ...Array.from({ length: 6 }, () => submit({ calibration: id })),
      ]);
      const accepted = submitted.filter((res) => res.statusCode === 202);
      expect(submitted.every((res) => res.statusCode === 202 || res.statusCode === 404)).toBe(true);
      if (deleted.statusCode === 204) expect(accepted).toHaveLength(0);
      else expect(deleted.statusCode).toBe(409);
      const exists = (await suite.app.services.records.get('datasets', 'alice', id)) !== null;
      expect(exists || accepted.length === 0).toBe(true);
      for (const res of accepted)
        await suite.app.inject({ method: 'POST', url: `/v1/jobs/${res.json().id}/cancel`, headers: alice });
    }
  });
});

describe('POST /v1/jobs with data', () => {
  it('accepts datasets that fit the model', async () => {
    const classIds = await uploaded([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: npyOf('<i8', [3], [0, 1, 1]) },
    ]);
    const oneHot = await uploaded([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: npyOf('<f4', [3, 2], [1, 0, 0, 1, 0, 1]) },
    ]);
    const res = await submit({ calibration: classIds, evaluation: oneHot, training: classIds });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json().spec.data).toEqual({ calibration: classIds, evaluation: oneHot, training: classIds });
  });

  it("answers 404 for a dataset that is not the tenant's", async () => {
    const bobs = await uploaded([{ field: 'x', filename: 'x.npy', data: xOf(4) }], bob);
    const res = await submit({ evaluation: bobs });
    expect(res.statusCode).toBe(404);
    expectMatchesSpec('POST', '/v1/jobs', res);
    expect(res.json()).toMatchObject({
      type: 'urn:qaas:problem:not-found',
      detail: `no dataset ${bobs} (data.evaluation)`,
      dataset: bobs,
      role: 'evaluation',
    });
    expect((await submit({ training: 'ds_missing' })).statusCode).toBe(404);
  });

  it('answers 422 naming the mismatch with the input or the output', async () => {
    const wide = await uploaded([{ field: 'x', filename: 'x.npy', data: xOf(5) }]);
    const badX = await submit({ calibration: wide });
    expect(badX.statusCode).toBe(422);
    expectMatchesSpec('POST', '/v1/jobs', badX);
    expect(badX.json()).toMatchObject({
      type: 'urn:qaas:problem:invalid-dataset',
      detail: `data.calibration (${wide}): dataset x samples are [5] but input 'dense_1_input' expects [4]`,
      dataset: wide,
      role: 'calibration',
    });
    const threeClasses = await uploaded([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: npyOf('<f4', [3, 3], [1, 0, 0, 0, 1, 0, 0, 0, 1]) },
    ]);
    const badY = await submit({ evaluation: threeClasses });
    expect(badY.statusCode).toBe(422);
    expect(badY.json().detail).toBe(
      `data.evaluation (${threeClasses}): dataset y samples are [3] but output 'dense_2' gives [2]`,
    );
    // Calibration reads x only: the same dataset's labels are not held against it there.
    expect((await submit({ calibration: threeClasses })).statusCode).toBe(202);
  });

  it('takes training and activation simulation on a graph model, and answers 400 for trained activations on one', async () => {
    const graph = multipart([...buildGraphModel()].map(([filename, data]) => ({ filename, data })));
    const graphRes = await suite.app.inject({
      method: 'POST',
      url: '/v1/models',
      payload: graph.payload,
      headers: { ...graph.headers, ...alice },
    });
    expect(graphRes.statusCode, graphRes.body).toBe(201);
    const graphId = graphRes.json().id;
    const data = await uploaded([
      { field: 'x', filename: 'x.npy', data: xOf(4) },
      { field: 'y', filename: 'y.npy', data: npyOf('<i4', [3], [0, 1, 0]) },
    ]);
    const qat = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: alice,
      payload: { modelId: graphId, kind: 'qat', method: { name: 'affine', bits: 4 }, data: { training: data } },
    });
    expect(qat.statusCode, qat.body).toBe(422);
    const images = await uploaded([
      { field: 'x', filename: 'x.npy', data: npyOf('<f4', [3, 6, 6, 2], range(3 * 72)) },
      { field: 'y', filename: 'y.npy', data: npyOf('<i4', [3], [0, 1, 2]) },
    ]);
    const trainable = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: alice,
      payload: { modelId: graphId, kind: 'qat', method: { name: 'affine', bits: 4 }, data: { training: images } },
    });
    expect(trainable.statusCode, trainable.body).toBe(202);
    const pact = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: alice,
      payload: {
        modelId: graphId,
        kind: 'qat',
        method: { name: 'affine', bits: 4 },
        activations: { quantizer: 'pact' },
        data: { training: images },
      },
    });
    expect(pact.statusCode).toBe(400);
    expectMatchesSpec('POST', '/v1/jobs', pact);
    expect(pact.json().problems).toEqual([
      { path: '/activations/quantizer', message: `pact activations need a layers model; ${graphId} is a graph-model` },
    ]);
    const activations = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: alice,
      payload: {
        modelId: graphId,
        method: { name: 'affine' },
        activations: { bits: 8 },
        data: { calibration: images },
      },
    });
    expect(activations.statusCode).toBe(202);
  });
});

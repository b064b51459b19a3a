/**
 * Datasets' names, labels and content dedup, as models have them: the same tenant uploading the same
 * arrays the same way gets its dataset back (200, same id), one record even when the uploads race; another
 * tenant never does; lists filter by name and labels; a deleted dataset's arrays upload again as a new one.
 */
import { describe, expect, it } from 'vitest';
import { npyOf } from '../model/dataset/npy-fixture.js';
import { alice, bob, multipart, type Part } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

const suite = useTwoTenantApp();

type Tenant = typeof alice;

let made = 0;
/** x and y of 3 samples no other upload in this file has. */
function arrays(): Part[] {
  const offset = ++made * 100;
  return [
    {
      field: 'x',
      filename: 'x.npy',
      data: npyOf(
        '<f4',
        [3, 4],
        [...Array(12).keys()].map((v) => v + offset),
      ),
    },
    { field: 'y', filename: 'y.npy', data: npyOf('|u1', [3], [0, 1, 0]) },
  ];
}

function upload(parts: Part[], fields: Part[] = [], tenant: Tenant = alice) {
  const body = multipart([...parts, ...fields]);
  return suite.app.inject({
    method: 'POST',
    url: '/v1/datasets',
    payload: body.payload,
    headers: { ...body.headers, ...tenant },
  });
}

const named = (name: string, labels: Record<string, string> = {}): Part[] => [
  { field: 'name', data: name },
  { field: 'labels', data: JSON.stringify(labels) },
];

async function listIds(query: string, tenant: Tenant = alice): Promise<string[]> {
  const res = await suite.app.inject({ url: `/v1/datasets?${query}`, headers: tenant });
  expect(res.statusCode, res.body).toBe(200);
  expectMatchesSpec('GET', `/v1/datasets?${query}`, res);
  return res.json().items.map((d: { id: string }) => d.id);
}

describe('dataset names, labels and content dedup', () => {
  it('stores name and labels; the same arrays again answer 200 with the stored dataset, unchanged', async () => {
    const parts = arrays();
    const first = await upload(parts, named('calib-set', { split: 'calibration' }));
    expect(first.statusCode, first.body).toBe(201);
    expectMatchesSpec('POST', '/v1/datasets', first);
    expect(first.json()).toMatchObject({ name: 'calib-set', labels: { split: 'calibration' } });
    expect(first.json().sha256).toMatch(/^[0-9a-f]{64}$/);

    const again = await upload(parts, named('renamed'));
    expect(again.statusCode).toBe(200);
    expectMatchesSpec('POST', '/v1/datasets', again);
    expect(again.json()).toMatchObject({ id: first.json().id, name: 'calib-set', labels: { split: 'calibration' } });

    // The same x without y is other data: a new dataset.
    const xOnly = await upload([parts[0]]);
    expect(xOnly.statusCode).toBe(201);
    expect(xOnly.json().id).not.toBe(first.json().id);

    const theirs = await upload(parts, [], bob);
    expect(theirs.statusCode).toBe(201);
    expect(theirs.json().id).not.toBe(first.json().id);
  });

  it('ends concurrent identical uploads with one record', async () => {
    const parts = arrays();
    const answers = await Promise.all(Array.from({ length: 6 }, () => upload(parts, named('raced-ds'))));
    expect(answers.map((res) => res.statusCode).sort()).toEqual([200, 200, 200, 200, 200, 201]);
    expect(new Set(answers.map((res) => res.json().id)).size).toBe(1);
    expect(await listIds('name=raced-ds')).toEqual([answers[0].json().id]);
  });

  it('filters by name and labels, refuses bad ones with 400, relabels with PATCH', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await upload(
        arrays(),
        named(`set-${i % 2}`, { 'ds-filter': 'yes', split: i < 3 ? 'train' : 'eval' }),
      );
      expect(res.statusCode, res.body).toBe(201);
      ids.push(res.json().id);
    }
    expect(await listIds('label=ds-filter=yes&label=split=train')).toEqual([ids[2], ids[1], ids[0]]);
    expect(await listIds('label=ds-filter=yes&name=set-1')).toEqual([ids[3], ids[1]]);
    expect(await listIds('label=ds-filter&label=split=eval&name=set-0')).toEqual([ids[4]]);
    const page = await suite.app.inject({ url: '/v1/datasets?label=ds-filter=yes&limit=2', headers: alice });
    expect(page.json().items.map((d: { id: string }) => d.id)).toEqual([ids[4], ids[3]]);
    expect(page.json().nextCursor).toBe(ids[3]);

    const bad = await upload(arrays(), [{ field: 'labels', data: JSON.stringify({ 'Bad Key': 'x' }) }]);
    expect(bad.statusCode).toBe(400);
    expect(bad.headers['content-type']).toContain('application/problem+json');
    expectMatchesSpec('POST', '/v1/datasets', bad);
    expect(bad.json().type).toBe('urn:qaas:problem:invalid-request');

    const patched = await suite.app.inject({
      method: 'PATCH',
      url: `/v1/datasets/${ids[0]}`,
      payload: { labels: { split: 'eval' } },
      headers: alice,
    });
    expect(patched.statusCode, patched.body).toBe(200);
    expectMatchesSpec('PATCH', `/v1/datasets/${ids[0]}`, patched);
    expect(await listIds('label=ds-filter=yes&label=split=train')).toEqual([ids[2], ids[1]]);
    expect(await listIds('label=ds-filter=yes&label=split=eval')).toEqual([ids[4], ids[3], ids[0]]);
  });

  it('forgets a deleted dataset: the same arrays upload again as a new record', async () => {
    const parts = arrays();
    const first = (await upload(parts)).json().id;
    expect(
      (await suite.app.inject({ method: 'DELETE', url: `/v1/datasets/${first}`, headers: alice })).statusCode,
    ).toBe(204);
    const again = await upload(parts);
    expect(again.statusCode).toBe(201);
    expect(again.json().id).not.toBe(first);
  });
});

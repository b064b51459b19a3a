/**
 * Jobs' names and labels: given in the spec (the body of POST /v1/jobs), stored on the record rather than
 * in its spec, filtered by in GET /v1/jobs together with status and modelId, changed with PATCH.
 */
import { describe, expect, it } from 'vitest';
import { alice, bob } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

const suite = useTwoTenantApp();

function submit(extra: Record<string, unknown>, headers = alice) {
  return suite.app.inject({
    method: 'POST',
    url: '/v1/jobs',
    payload: { modelId: suite.modelId, method: { name: 'affine', bits: 8 }, ...extra },
    headers,
  });
}

async function listIds(query: string): Promise<string[]> {
  const res = await suite.app.inject({ url: `/v1/jobs?${query}`, headers: alice });
  expect(res.statusCode, res.body).toBe(200);
  expectMatchesSpec('GET', `/v1/jobs?${query}`, res);
  return res.json().items.map((j: { id: string }) => j.id);
}

describe('job names and labels', () => {
  it('stores them on the record, not in its spec', async () => {
    const res = await submit({ name: 'nightly 8-bit', labels: { pipeline: 'nightly', 'ci.example.com/run': '1234' } });
    expect(res.statusCode, res.body).toBe(202);
    expectMatchesSpec('POST', '/v1/jobs', res);
    const job = res.json();
    expect(job).toMatchObject({ name: 'nightly 8-bit', labels: { pipeline: 'nightly', 'ci.example.com/run': '1234' } });
    expect(job.spec.name).toBeUndefined();
    expect(job.spec.labels).toBeUndefined();
    const shown = await suite.app.inject({ url: `/v1/jobs/${job.id}`, headers: alice });
    expect(shown.json()).toMatchObject({ name: 'nightly 8-bit', labels: { pipeline: 'nightly' } });
    expect((await submit({})).json().labels).toEqual({});
  });

  it('filters by name and labels, ANDed with status and modelId', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await submit({ name: `sweep-${i % 2}`, labels: { sweep: 'bits', bits: String(2 + (i % 3) * 2) } });
      expect(res.statusCode, res.body).toBe(202);
      ids.push(res.json().id);
    }
    // bits: 2, 4, 6, 2, 4, 6
    expect(await listIds('label=sweep=bits&label=bits=4')).toEqual([ids[4], ids[1]]);
    expect(await listIds('label=sweep=bits&name=sweep-0')).toEqual([ids[4], ids[2], ids[0]]);
    expect(await suite.app.inject({ method: 'POST', url: `/v1/jobs/${ids[2]}/cancel`, headers: alice })).toMatchObject({
      statusCode: 200,
    });
    expect(await listIds('label=sweep=bits&status=cancelled')).toEqual([ids[2]]);
    expect(await listIds('label=sweep=bits&status=queued&name=sweep-0')).toEqual([ids[4], ids[0]]);
    expect(await listIds(`label=sweep=bits&modelId=${suite.modelId}&limit=4`)).toEqual([
      ids[5],
      ids[4],
      ids[3],
      ids[2],
    ]);
    const bobs = await suite.app.inject({ url: '/v1/jobs?label=sweep=bits', headers: bob });
    expect(bobs.json().items).toEqual([]);
  });

  it('answers 400 invalid-job-spec for bad labels, and PATCH relabels', async () => {
    const bad = await submit({ labels: { 'no spaces': 'x' } });
    expect(bad.statusCode).toBe(400);
    expectMatchesSpec('POST', '/v1/jobs', bad);
    expect(bad.json().type).toBe('urn:qaas:problem:invalid-job-spec');
    const long = await submit({ name: '' });
    expect(long.statusCode).toBe(400);
    expect(long.json().problems[0].path).toBe('/name');

    const { id } = (await submit({ name: 'draft', labels: { state: 'draft' } })).json();
    const patched = await suite.app.inject({
      method: 'PATCH',
      url: `/v1/jobs/${id}`,
      payload: { name: 'final', labels: { state: null, reviewed: 'yes' } },
      headers: alice,
    });
    expect(patched.statusCode, patched.body).toBe(200);
    expectMatchesSpec('PATCH', `/v1/jobs/${id}`, patched);
    expect(patched.json()).toMatchObject({ id, name: 'final', labels: { reviewed: 'yes' }, status: 'queued' });
    expect(await listIds('label=state')).toEqual([]);
    expect(await listIds('name=final&label=reviewed=yes')).toEqual([id]);
    const missing = await suite.app.inject({
      method: 'PATCH',
      url: '/v1/jobs/job_0000000000000000000000000',
      payload: { name: 'x' },
      headers: alice,
    });
    expect(missing.statusCode).toBe(404);
    expectMatchesSpec('PATCH', '/v1/jobs/job_0000000000000000000000000', missing);
  });
});

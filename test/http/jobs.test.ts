/**
 * The job API without workers: submission and validation, idempotency, cancel of a queued job (it leaves
 * the queue), tenant isolation, deleting a model an unfinished job needs, datasets.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import type { WebhookPayload } from '../../src/jobs/queue.js';
import { webhookProcessor } from '../../workers/webhook.js';
import { npy } from '../model/dataset/npy-fixture.js';
import { alice, bob, denseModel, filesAsParts, multipart } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

// The webhook test's receiver listens on loopback, which webhooks may reach only when allowed.
const suite = useTwoTenantApp({ QAAS_WEBHOOK_ALLOW: '127.0.0.1' });

function submit(spec: unknown, headers: Record<string, string> = alice) {
  return suite.app.inject({ method: 'POST', url: '/v1/jobs', payload: spec as object, headers });
}

describe('auth', () => {
  it('answers 401 without a known key, keeps health open', async () => {
    const res = await suite.app.inject({ url: '/v1/jobs' });
    expect(res.statusCode).toBe(401);
    expect(res.json().type).toBe('urn:qaas:problem:unauthorized');
    expect(res.headers['www-authenticate']).toBe('Bearer realm="qaas"');
    expect((await suite.app.inject({ url: '/v1/jobs', headers: { authorization: 'Bearer nope' } })).statusCode).toBe(
      401,
    );
    const health = await suite.app.inject({ url: '/healthz' });
    expect(health.statusCode).toBe(200);
    // The test config forces the cpu backend; health reports the one jobs run on.
    expect(health.json()).toMatchObject({ status: 'ok', backend: 'cpu' });
  });
});

describe('POST /v1/jobs', () => {
  it('queues a job and returns its record with defaults filled in', async () => {
    const res = await submit({ modelId: suite.modelId, method: { name: 'affine', bits: 8 } });
    expect(res.statusCode).toBe(202);
    expectMatchesSpec('POST', '/v1/jobs', res);
    const job = res.json();
    expect(job).toMatchObject({
      status: 'queued',
      stage: 'queued',
      progress: 0,
      modelId: suite.modelId,
      method: 'affine',
      startedAt: null,
      finishedAt: null,
      error: null,
      summary: null,
    });
    expect(job.spec.output.shardSizeBytes).toBe(4 * 1024 * 1024);
    const queued = await suite.app.services.queues.quantize.getJob(job.id);
    expect(queued?.data).toEqual({ tenant: 'alice', jobId: job.id });
  });

  it('checks a spec without queueing it with dryRun=true', async () => {
    const before = (await suite.app.inject({ url: '/v1/jobs?limit=100', headers: alice })).json().items.length;
    const spec = {
      modelId: suite.modelId,
      method: { name: 'pow2', bits: 4 },
      webhook: { url: 'https://hooks.example.com/q', secret: 'a-long-secret' },
    };
    const res = await suite.app.inject({ method: 'POST', url: '/v1/jobs?dryRun=true', payload: spec, headers: alice });
    expect(res.statusCode, res.body).toBe(200);
    expectMatchesSpec('POST', '/v1/jobs?dryRun=true', res);
    const resolved = res.json().spec;
    expect(resolved.kind).toBe('ptq');
    expect(resolved.method).toMatchObject({ name: 'pow2', bits: 4 });
    expect(resolved.webhook).toEqual({ url: 'https://hooks.example.com/q' });
    expect(res.body).not.toContain('a-long-secret');
    const missing = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs?dryRun=true',
      payload: { ...spec, modelId: 'mdl_0000000000000000000000000' },
      headers: alice,
    });
    expect(missing.statusCode).toBe(400);
    expect(missing.json().problems[0].path).toBe('/modelId');
    expect((await suite.app.inject({ url: '/v1/jobs?limit=100', headers: alice })).json().items.length).toBe(before);
  });

  it('answers 400 naming the allowed methods for an unknown one', async () => {
    const res = await submit({ modelId: suite.modelId, method: { name: 'int3' } });
    expect(res.statusCode).toBe(400);
    expectMatchesSpec('POST', '/v1/jobs', res);
    const body = res.json();
    expect(body.type).toBe('urn:qaas:problem:invalid-job-spec');
    expect(body.problems[0].path).toBe('/method/name');
    expect(body.problems[0].message).toContain('affine');
    expect(body.problems[0].message).toContain('kmeans');
  });

  it('answers 400 for a missing or unknown model', async () => {
    expect((await submit({ method: { name: 'affine' } })).json().problems[0].path).toBe('/modelId');
    expect((await submit({ modelId: suite.modelId, method: { name: 'affine' } }, bob)).statusCode).toBe(400);
  });

  it('keeps the webhook secret out of the record', async () => {
    const res = await submit({
      modelId: suite.modelId,
      method: { name: 'float16' },
      webhook: { url: 'https://hooks.example.com/hook', secret: 's3cret-value' },
    });
    expect(res.statusCode).toBe(202);
    expect(res.body).not.toContain('s3cret-value');
    expect(res.json().webhookUrl).toBe('https://hooks.example.com/hook');
  });
});

describe('idempotency', () => {
  it('returns the same job for the same key and body, 409 for another body', async () => {
    const key = { ...alice, 'idempotency-key': 'abc-123' };
    const first = await submit({ modelId: suite.modelId, method: { name: 'affine', bits: 4 } }, key);
    // Same body, keys in another order.
    const again = await submit({ method: { bits: 4, name: 'affine' }, modelId: suite.modelId }, key);
    expect(first.statusCode).toBe(202);
    expect(again.statusCode).toBe(202);
    expect(again.json().id).toBe(first.json().id);
    expect(again.headers['idempotent-replayed']).toBe('true');
    const other = await submit({ modelId: suite.modelId, method: { name: 'affine', bits: 2 } }, key);
    expect(other.statusCode).toBe(409);
    expectMatchesSpec('POST', '/v1/jobs', other);
    expect(other.json().type).toBe('urn:qaas:problem:idempotency-key-reused');
    // Keys are per tenant: bob may use the same key.
    expect(
      (
        await submit(
          { modelId: 'mdl_0000000000000000000000000', method: { name: 'affine' } },
          { ...bob, 'idempotency-key': 'abc-123' },
        )
      ).statusCode,
    ).toBe(400);
  });
});

describe('cancel, isolation, list', () => {
  it('cancels a queued job: record cancelled, BullMQ job removed, second cancel 409', async () => {
    const job = (await submit({ modelId: suite.modelId, method: { name: 'affine' } })).json();
    const res = await suite.app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: alice });
    expect(res.statusCode).toBe(200);
    expectMatchesSpec('POST', `/v1/jobs/${job.id}/cancel`, res);
    expect(res.json().status).toBe('cancelled');
    expect(res.json().finishedAt).not.toBeNull();
    expect(await suite.app.services.queues.quantize.getJob(job.id)).toBeUndefined();
    expect(
      (await suite.app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: alice })).statusCode,
    ).toBe(409);
    const report = await suite.app.inject({ url: `/v1/jobs/${job.id}/report`, headers: alice });
    expect(report.statusCode).toBe(409);
    expectMatchesSpec('GET', `/v1/jobs/${job.id}/report`, report);
    const shown = await suite.app.inject({ url: `/v1/jobs/${job.id}`, headers: alice });
    expectMatchesSpec('GET', `/v1/jobs/${job.id}`, shown);
  });

  it('deletes an ended job (409 before it ends, 404 for another tenant) and frees its Idempotency-Key', async () => {
    const key = { ...alice, 'idempotency-key': 'delete-me' };
    const job = (await submit({ modelId: suite.modelId, method: { name: 'binary' } }, key)).json();
    const early = await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}`, headers: alice });
    expect(early.statusCode).toBe(409);
    expectMatchesSpec('DELETE', `/v1/jobs/${job.id}`, early);
    expect(early.json().detail).toBe(`job ${job.id} is queued: cancel it first`);
    await suite.app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: alice });
    const counts = async () => (await suite.app.services.records.countByStatus('jobs')).cancelled ?? 0;
    const cancelledBefore = await counts();
    expect((await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}`, headers: bob })).statusCode).toBe(
      404,
    );
    const deleted = await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}`, headers: alice });
    expect(deleted.statusCode).toBe(204);
    expect(deleted.body).toBe('');
    expect((await suite.app.inject({ url: `/v1/jobs/${job.id}`, headers: alice })).statusCode).toBe(404);
    expect((await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}`, headers: alice })).statusCode).toBe(
      404,
    );
    expect(await counts()).toBe(cancelledBefore - 1);
    const listed = (await suite.app.inject({ url: '/v1/jobs?limit=100', headers: alice }))
      .json()
      .items.map((j: { id: string }) => j.id);
    expect(listed).not.toContain(job.id);
    // The same request again is a new job, not a replay of the deleted one.
    const again = await submit({ modelId: suite.modelId, method: { name: 'binary' } }, key);
    expect(again.statusCode).toBe(202);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(again.json().id).not.toBe(job.id);
    expect(again.json()).not.toHaveProperty('idempotencyKey');
  });

  it('shows a job without its tenant and Idempotency-Key everywhere: REST, SSE state and final, webhook body', async () => {
    const deliveries: string[] = [];
    const hook = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        deliveries.push(body);
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = hook.address() as AddressInfo;
      const spec = {
        modelId: suite.modelId,
        method: { name: 'affine' },
        webhook: { url: `http://127.0.0.1:${port}/h` },
      };
      const submitted = await submit(spec, { ...alice, 'idempotency-key': 'public-view' });
      const id = submitted.json().id;
      const stored = await suite.app.services.records.get('jobs', 'alice', id);
      // The record does keep both: what is checked is that no channel shows them.
      expect(stored).toMatchObject({ tenant: 'alice', idempotencyKey: expect.stringContaining(':idem:alice:') });
      await suite.app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: alice });

      const shown = [submitted.json(), (await suite.app.inject({ url: `/v1/jobs/${id}`, headers: alice })).json()];
      const events = await suite.app.inject({ url: `/v1/jobs/${id}/events`, headers: alice });
      const sse = events.body
        .split('\n\n')
        .filter((block) => block.startsWith('event: state') || block.startsWith('event: final'))
        .map((block) => JSON.parse(block.split('\ndata: ')[1]));
      expect(sse.map((job) => job.status)).toEqual(['cancelled', 'cancelled']);

      await webhookProcessor({ ...suite.app.services, allow: suite.config.webhooks.allow })({
        id: `webhook-${id}`,
        data: { tenant: 'alice', jobId: id },
      } as Job<WebhookPayload>);
      expect(deliveries).toHaveLength(1);
      const delivered = JSON.parse(deliveries[0]);
      expect(delivered.event).toBe('job.cancelled');

      for (const job of [...shown, ...sse, delivered.job]) {
        expect(job.id).toBe(id);
        expect(job).not.toHaveProperty('tenant');
        expect(job).not.toHaveProperty('idempotencyKey');
      }
      expect(deliveries[0]).not.toContain(':idem:');
    } finally {
      hook.close();
    }
  });

  it('hides one tenant from another with 404', async () => {
    const job = (await submit({ modelId: suite.modelId, method: { name: 'affine' } })).json();
    for (const url of [
      `/v1/jobs/${job.id}`,
      `/v1/models/${suite.modelId}`,
      `/v1/jobs/${job.id}/report`,
      `/v1/jobs/${job.id}/artifacts/report.json`,
    ]) {
      const res = await suite.app.inject({ url, headers: bob });
      expect(res.statusCode, url).toBe(404);
      expectMatchesSpec('GET', url, res);
    }
    expect(
      (await suite.app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: bob })).statusCode,
    ).toBe(404);
    expect((await suite.app.inject({ url: '/v1/jobs', headers: bob })).json().items).toEqual([]);
  });

  it("lists a model's jobs, with or without a status, and forgets a deleted one", async () => {
    const body = multipart(filesAsParts(await denseModel([4, 2])));
    const other = await suite.app.inject({
      method: 'POST',
      url: '/v1/models',
      payload: body.payload,
      headers: { ...body.headers, ...alice },
    });
    expect(other.statusCode, other.body).toBe(201);
    const otherId = other.json().id;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await submit({ modelId: otherId, method: { name: 'affine' } })).json().id);
    await submit({ modelId: suite.modelId, method: { name: 'affine' } });
    await suite.app.inject({ method: 'POST', url: `/v1/jobs/${ids[1]}/cancel`, headers: alice });

    const page = await suite.app.inject({ url: `/v1/jobs?modelId=${otherId}&limit=2`, headers: alice });
    expectMatchesSpec('GET', `/v1/jobs?modelId=${otherId}&limit=2`, page);
    expect(page.json().items.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
    const rest = await suite.app.inject({
      url: `/v1/jobs?modelId=${otherId}&limit=2&cursor=${page.json().nextCursor}`,
      headers: alice,
    });
    expect(rest.json()).toEqual({ items: [expect.objectContaining({ id: ids[0] })], nextCursor: null });
    const cancelled = await suite.app.inject({ url: `/v1/jobs?modelId=${otherId}&status=cancelled`, headers: alice });
    expect(cancelled.json().items.map((j: { id: string }) => j.id)).toEqual([ids[1]]);
    expect((await suite.app.inject({ url: `/v1/jobs?modelId=${otherId}`, headers: bob })).json().items).toEqual([]);
    expect((await suite.app.inject({ url: '/v1/jobs?modelId=nope', headers: alice })).statusCode).toBe(400);

    expect((await suite.app.inject({ method: 'DELETE', url: `/v1/jobs/${ids[1]}`, headers: alice })).statusCode).toBe(
      204,
    );
    const after = await suite.app.inject({ url: `/v1/jobs?modelId=${otherId}`, headers: alice });
    expect(after.json().items.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[0]]);
  });

  it('filters by status', async () => {
    const page = await suite.app.inject({ url: '/v1/jobs?status=cancelled', headers: alice });
    expectMatchesSpec('GET', '/v1/jobs?status=cancelled', page);
    const cancelled = page.json();
    expect(cancelled.items.length).toBeGreaterThan(0);
    expect(cancelled.items.every((j: { status: string }) => j.status === 'cancelled')).toBe(true);
    expect((await suite.app.inject({ url: '/v1/jobs?status=bogus', headers: alice })).statusCode).toBe(400);
  });

  it('refuses to delete a model while an unfinished job uses it', async () => {
    const res = await suite.app.inject({ method: 'DELETE', url: `/v1/models/${suite.modelId}`, headers: alice });
    expect(res.statusCode).toBe(409);
    expect(res.json().jobs.length).toBeGreaterThan(0);
  });
});

describe('POST /v1/datasets', () => {
  it('stores x.npy + y.npy and checks the sample count', async () => {
    const x = npy('<f4', [3, 4], new Uint8Array(48));
    const y = npy('<i4', [3], new Uint8Array(12));
    const body = multipart([
      { field: 'x', filename: 'x.npy', data: x },
      { field: 'y', filename: 'y.npy', data: y },
    ]);
    const res = await suite.app.inject({
      method: 'POST',
      url: '/v1/datasets',
      payload: body.payload,
      headers: { ...body.headers, ...alice },
    });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toMatchObject({
      samples: 3,
      x: { dtype: '<f4', shape: [3, 4] },
      y: { dtype: '<i4', shape: [3] },
    });

    const short = multipart([
      { field: 'x', filename: 'x.npy', data: x },
      { field: 'y', filename: 'y.npy', data: npy('<i4', [2], new Uint8Array(8)) },
    ]);
    const bad = await suite.app.inject({
      method: 'POST',
      url: '/v1/datasets',
      payload: short.payload,
      headers: { ...short.headers, ...alice },
    });
    expect(bad.statusCode).toBe(422);
    expect(bad.json().detail).toBe('x has 3 samples but y has 2');
  });

  it('stores a JSON {x, y} and rejects a ragged one', async () => {
    const good = multipart([
      {
        filename: 'data.json',
        data: JSON.stringify({
          x: [
            [1, 2],
            [3, 4],
          ],
          y: [0, 1],
        }),
      },
    ]);
    const res = await suite.app.inject({
      method: 'POST',
      url: '/v1/datasets',
      payload: good.payload,
      headers: { ...good.headers, ...alice },
    });
    expect(res.statusCode).toBe(201);
    expect(res.json().x.shape).toEqual([2, 2]);
    const ragged = multipart([{ filename: 'data.json', data: JSON.stringify({ x: [[1, 2], [3]] }) }]);
    const bad = await suite.app.inject({
      method: 'POST',
      url: '/v1/datasets',
      payload: ragged.payload,
      headers: { ...ragged.headers, ...alice },
    });
    expect(bad.statusCode).toBe(422);
    expect(bad.json().detail).toContain('/x/1');
  });
});

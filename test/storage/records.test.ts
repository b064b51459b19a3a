import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConflictError } from '../../src/errors.js';
import { deleteInput } from '../../src/jobs/inputs.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { RedisKeys } from '../../src/storage/keys.js';
import { RecordStore, isId, newId } from '../../src/storage/records.js';
import type { DatasetRecord, JobRecord, ModelRecord } from '../../src/storage/types.js';

const prefix = `test-${randomUUID()}`;
const keys = new RedisKeys(prefix);
let redis: Redis;
let records: RecordStore;

beforeAll(() => {
  redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  records = new RecordStore(redis, prefix);
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

function job(tenant: string, id = newId('jobs'), modelId = 'mdl_x'): JobRecord {
  return {
    id,
    tenant,
    status: 'queued',
    stage: 'queued',
    progress: 0,
    kind: 'ptq',
    modelId,
    method: 'affine',
    spec: {},
    webhookUrl: null,
    attempts: 0,
    createdAt: new Date().toISOString(),
    startedAt: null,
    finishedAt: null,
    error: null,
    summary: null,
    artifacts: [],
  };
}

function model(tenant: string): ModelRecord {
  return {
    id: newId('models'),
    tenant,
    format: 'layers-model',
    params: 1,
    bytes: 4,
    sha256: 'ab',
    tensors: [],
    files: [],
    createdAt: new Date().toISOString(),
  };
}

function dataset(tenant: string): DatasetRecord {
  const x = { dtype: '<f4', shape: [2, 3], sha256: 'cd', bytes: 24, encoding: 'npy' as const };
  return { id: newId('datasets'), tenant, samples: 2, x, y: null, bytes: 24, createdAt: new Date().toISOString() };
}

describe('ids', () => {
  it('sort by creation time and are recognised per kind', () => {
    const early = newId('jobs', 1_000);
    const late = newId('jobs', 2_000);
    expect(early < late).toBe(true);
    expect(isId('jobs', early)).toBe(true);
    expect(isId('models', early)).toBe(false);
    expect(isId('jobs', 'job_../../etc')).toBe(false);
  });
});

describe('RecordStore', () => {
  it('pages newest first with a cursor and filters by status', async () => {
    const ids = [1, 2, 3, 4, 5].map((t) => newId('jobs', 1_700_000_000_000 + t));
    for (const id of ids) await records.create('jobs', job('a', id));
    const page1 = await records.list('jobs', 'a', { limit: 2 });
    expect(page1.items.map((j) => j.id)).toEqual([ids[4], ids[3]]);
    const page2 = await records.list('jobs', 'a', { limit: 2, cursor: page1.nextCursor! });
    expect(page2.items.map((j) => j.id)).toEqual([ids[2], ids[1]]);
    const page3 = await records.list('jobs', 'a', { limit: 2, cursor: page2.nextCursor! });
    expect(page3.items.map((j) => j.id)).toEqual([ids[0]]);
    expect(page3.nextCursor).toBeNull();

    await records.update('jobs', 'a', ids[1], (j) => ({ ...j, status: 'running' }));
    const running = await records.list('jobs', 'a', { limit: 10, status: 'running' });
    expect(running.items.map((j) => j.id)).toEqual([ids[1]]);
    expect((await records.list('jobs', 'a', { limit: 10, status: 'queued' })).items).toHaveLength(4);
    expect(await records.countByStatus('jobs')).toEqual({ queued: 4, running: 1 });
  });

  it('keeps tenants apart', async () => {
    const mine = job('t1');
    await records.create('jobs', mine);
    expect(await records.get('jobs', 't2', mine.id)).toBeNull();
    expect((await records.list('jobs', 't2', { limit: 10 })).items).toHaveLength(0);
  });

  it('intersects filters into full pages, and one that runs out of budget hands back a cursor, never skipping', async () => {
    // 30 jobs, labelled even/odd and by i % 5; the even ones with i % 5 = 0 are i = 0, 10, 20.
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) {
      const record = {
        ...job('t9', newId('jobs', 1_000 + i)),
        labels: { parity: i % 2 ? 'odd' : 'even', five: `${i % 5}` },
      };
      await records.create('jobs', record);
      ids.push(record.id);
    }
    const want = [ids[20], ids[10], ids[0]];
    const filter = {
      labels: [
        { key: 'parity', value: 'even' },
        { key: 'five', value: '0' },
      ],
    };
    const full = await records.list('jobs', 't9', { ...filter, limit: 2 });
    expect(full.items.map((j) => j.id)).toEqual(want.slice(0, 2));
    expect(full.nextCursor).toBe(ids[10]);
    const rest = await records.list('jobs', 't9', { ...filter, limit: 2, cursor: full.nextCursor! });
    expect(rest).toEqual({ items: [expect.objectContaining({ id: ids[0] })], nextCursor: null });

    // 3 ids examined per call (the smallest index, five=0, holds 6): a page ends where its budget did, shorter
    // than the limit or even empty, with a cursor to go on from.
    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await records.list('jobs', 't9', { ...filter, limit: 2, budget: 3, ...(cursor ? { cursor } : {}) });
      sizes.push(page.items.length);
      seen.push(...page.items.map((j) => j.id));
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    expect(seen).toEqual(want);
    expect(sizes).toEqual([1, 2, 0]);
    // A key alone matches whatever the value: all 30 carry parity.
    expect((await records.list('jobs', 't9', { labels: [{ key: 'parity' }], limit: 100 })).items).toHaveLength(30);
  });

  it('never lets a late writer undo a terminal state', async () => {
    const lifecycle = new JobLifecycle(records, redis, prefix);
    const owner = model('t3');
    await records.create('models', owner);
    const record = job('t3', newId('jobs'), owner.id);
    expect(await lifecycle.create(record)).toBe(true);
    await lifecycle.start('t3', record.id, 1);
    const cancelled = await lifecycle.cancel('t3', record.id);
    expect(cancelled?.status).toBe('cancelled');
    expect(await lifecycle.isCancelRequested(record.id)).toBe(true);
    const after = await lifecycle.succeed('t3', record.id, {} as never, []);
    expect(after?.status).toBe('cancelled');
    expect((await records.get('jobs', 't3', record.id))?.status).toBe('cancelled');
  });

  it('serialises concurrent updates without losing one', async () => {
    const record = job('t4');
    await records.create('jobs', record);
    await Promise.all(
      Array.from({ length: 20 }, () =>
        records.update('jobs', 't4', record.id, (j) => ({ ...j, attempts: j.attempts + 1 })),
      ),
    );
    expect((await records.get('jobs', 't4', record.id))?.attempts).toBe(20);
  });

  it('creates a job only while its model exists, and a model is deleted only once its jobs ended', async () => {
    const lifecycle = new JobLifecycle(records, redis, prefix);
    const owner = model('t5');
    expect(await lifecycle.create(job('t5', newId('jobs'), owner.id))).toBe(false);
    expect((await records.list('jobs', 't5', { limit: 10 })).items).toHaveLength(0);
    expect(await redis.exists(keys.modelJobs('t5', owner.id))).toBe(0);

    await records.create('models', owner);
    const [first, second] = [job('t5', newId('jobs'), owner.id), job('t5', newId('jobs'), owner.id)];
    expect(await lifecycle.create(first)).toBe(true);
    expect(await lifecycle.create(second)).toBe(true);
    expect((await redis.smembers(keys.modelJobs('t5', owner.id))).sort()).toEqual([first.id, second.id].sort());

    const guard = { guards: [{ key: keys.modelJobs('t5', owner.id), expect: 'absent' as const }] };
    await lifecycle.fail('t5', first.id, { message: 'boom' });
    expect(await redis.smembers(keys.modelJobs('t5', owner.id))).toEqual([second.id]);
    expect(await records.delete('models', 't5', owner.id, guard)).toBe('guarded');
    expect(await records.get('models', 't5', owner.id)).not.toBeNull();

    await lifecycle.cancel('t5', second.id);
    expect(await redis.exists(keys.modelJobs('t5', owner.id))).toBe(0);
    expect(await records.delete('models', 't5', owner.id, guard)).toBe('deleted');
    expect(await records.delete('models', 't5', owner.id, guard)).toBe('missing');
    expect(await lifecycle.create(job('t5', newId('jobs'), owner.id))).toBe(false);
  });

  it('creates a job only while its datasets exist, and deletes a dataset only once its jobs ended', async () => {
    const lifecycle = new JobLifecycle(records, redis, prefix);
    const owner = model('t6');
    await records.create('models', owner);
    const [calibration, evaluation] = [dataset('t6'), dataset('t6')];
    await records.create('datasets', calibration);
    const naming = () => ({
      ...job('t6', newId('jobs'), owner.id),
      spec: { data: { calibration: calibration.id, evaluation: evaluation.id } },
    });
    // evaluation was never stored (or was deleted between the submission's check and this write).
    expect(await lifecycle.create(naming())).toBe(false);
    expect(await redis.exists(keys.datasetJobs('t6', calibration.id))).toBe(0);
    expect(await redis.exists(keys.modelJobs('t6', owner.id))).toBe(0);

    await records.create('datasets', evaluation);
    const first = naming();
    expect(await lifecycle.create(first)).toBe(true);
    for (const id of [calibration.id, evaluation.id])
      expect(await redis.smembers(keys.datasetJobs('t6', id))).toEqual([first.id]);
    const refused = deleteInput({ records, redis, keys }, 'datasets', 't6', calibration.id);
    await expect(refused).rejects.toBeInstanceOf(ConflictError);
    await expect(refused).rejects.toMatchObject({ problem: 'conflict', details: { jobs: [first.id] } });
    expect(await records.get('datasets', 't6', calibration.id)).not.toBeNull();

    await lifecycle.succeed('t6', first.id, null as never, []);
    expect(await redis.exists(keys.datasetJobs('t6', calibration.id))).toBe(0);
    await deleteInput({ records, redis, keys }, 'datasets', 't6', calibration.id);
    expect(await records.get('datasets', 't6', calibration.id)).toBeNull();
    await expect(deleteInput({ records, redis, keys }, 'datasets', 't6', calibration.id)).rejects.toMatchObject({
      problem: 'not-found',
    });
  });
});

describe('jobsWithStatus', () => {
  it('finds one status across tenants through the status indexes, and nothing of the others', async () => {
    const queued = [job('t-one'), job('t-two'), job('t-two')];
    const running = { ...job('t-one'), status: 'running' as const };
    for (const record of [...queued, running]) expect(await records.create('jobs', record)).toBe(true);
    const found = async (status: string) => {
      const ids: string[] = [];
      for await (const record of records.jobsWithStatus(status)) ids.push(`${record.tenant}/${record.id}`);
      return ids.sort();
    };
    const mine = (ids: string[], of: JobRecord[]) => ids.filter((id) => of.some((j) => id.endsWith(j.id)));
    expect(mine(await found('queued'), [...queued, running])).toEqual(queued.map((j) => `${j.tenant}/${j.id}`).sort());
    expect(mine(await found('running'), [...queued, running])).toEqual([`t-one/${running.id}`]);
  });
});

/**
 * Models' names and labels, list filters over them, and content dedup: the same tenant uploading the same
 * files gets its existing model back (200, same id), atomically even when the uploads race; another tenant
 * never does; a deleted model's content can be uploaded again as a new record.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisKeys } from '../../src/storage/keys.js';
import type { FileSet } from '../../src/model/types.js';
import { alice, bob, filesAsParts, multipart, tinyModel, type Part } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

const suite = useTwoTenantApp();
let redis: Redis;
let keys: RedisKeys;

beforeAll(() => {
  redis = new Redis(suite.config.redisUrl);
  keys = new RedisKeys(suite.config.redisPrefix);
});

afterAll(() => redis?.disconnect());

type Tenant = typeof alice;

function upload(files: FileSet, fields: Part[] = [], tenant: Tenant = alice) {
  const body = multipart([...filesAsParts(files), ...fields]);
  return suite.app.inject({
    method: 'POST',
    url: '/v1/models',
    payload: body.payload,
    headers: { ...body.headers, ...tenant },
  });
}

const named = (name: string, labels?: Record<string, string>): Part[] => [
  { field: 'name', data: name },
  ...(labels ? [{ field: 'labels', data: JSON.stringify(labels) }] : []),
];

async function list(
  query: string,
  tenant: Tenant = alice,
): Promise<{ items: { id: string }[]; nextCursor: string | null }> {
  const res = await suite.app.inject({ url: `/v1/models?${query}`, headers: tenant });
  expect(res.statusCode, res.body).toBe(200);
  expectMatchesSpec('GET', `/v1/models?${query}`, res);
  return res.json();
}

/** Every id a filtered list returns, following nextCursor page by page. */
async function walk(query: string, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await list(`${query}&limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    ids.push(...page.items.map((m) => m.id));
    cursor = page.nextCursor;
    pages++;
  } while (cursor && pages < 50);
  return { ids, pages };
}

describe('model names, labels and content dedup', () => {
  it('stores name and labels; the same files again answer 200 with the existing model, unchanged', async () => {
    const files = await tinyModel();
    const first = await upload(files, named('resnet-ish', { team: 'vision', 'qaas.dev/stage': 'dev' }));
    expect(first.statusCode, first.body).toBe(201);
    expectMatchesSpec('POST', '/v1/models', first);
    expect(first.json()).toMatchObject({ name: 'resnet-ish', labels: { team: 'vision', 'qaas.dev/stage': 'dev' } });

    const again = await upload(files, named('another-name', { team: 'audio' }));
    expect(again.statusCode, again.body).toBe(200);
    expectMatchesSpec('POST', '/v1/models', again);
    expect(again.json().id).toBe(first.json().id);
    expect(again.headers.location).toBe(`/v1/models/${first.json().id}`);
    // The existing record as it was: the re-upload's name and labels are not applied (PATCH does that).
    expect(again.json()).toMatchObject({ name: 'resnet-ish', labels: { team: 'vision', 'qaas.dev/stage': 'dev' } });
    expect((await list('label=team=audio')).items).toEqual([]);

    const plain = await upload(files);
    expect(plain.statusCode).toBe(200);
    expect(plain.json().id).toBe(first.json().id);
  });

  it("never answers with another tenant's model", async () => {
    const files = await tinyModel();
    const mine = await upload(files, [], alice);
    const theirs = await upload(files, [], bob);
    expect(mine.statusCode).toBe(201);
    expect(theirs.statusCode).toBe(201);
    expect(theirs.json().id).not.toBe(mine.json().id);
    expect(theirs.json().sha256).toBe(mine.json().sha256);
    const bobAgain = await upload(files, [], bob);
    expect(bobAgain.statusCode).toBe(200);
    expect(bobAgain.json().id).toBe(theirs.json().id);
  });

  it('ends concurrent identical uploads with one record: one 201, the rest 200 with its id', async () => {
    const files = await tinyModel();
    const answers = await Promise.all(Array.from({ length: 8 }, () => upload(files, named('raced'))));
    const statuses = answers.map((res) => res.statusCode).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    const ids = new Set(answers.map((res) => res.json().id));
    expect(ids.size).toBe(1);
    const [id] = ids;
    expect((await list('name=raced')).items.map((m) => m.id)).toEqual([id]);
    expect(await redis.get(keys.content('models', 'alice', answers[0].json().sha256))).toBe(id);
  });

  it('filters by name and labels (ANDed), paging through the matches in order', async () => {
    // 12 models: team a|b|c by i % 3, stage prod on even i, named "m-<i % 4>".
    const created: { id: string; i: number }[] = [];
    for (let i = 0; i < 12; i++) {
      const labels = { 'filter-test': 'yes', team: ['a', 'b', 'c'][i % 3], ...(i % 2 === 0 ? { stage: 'prod' } : {}) };
      const res = await upload(await tinyModel(), named(`m-${i % 4}`, labels));
      expect(res.statusCode, res.body).toBe(201);
      created.push({ id: res.json().id, i });
    }
    const newestFirst = (keep: (i: number) => boolean) =>
      created
        .filter(({ i }) => keep(i))
        .map(({ id }) => id)
        .reverse();

    expect((await list('label=filter-test=yes&limit=100')).items.map((m) => m.id)).toEqual(newestFirst(() => true));
    const teamA = newestFirst((i) => i % 3 === 0);
    expect(teamA).toHaveLength(4);
    expect((await list('label=team=a')).items.map((m) => m.id)).toEqual(teamA);
    // team a and prod: i in {0, 6}
    const teamAProd = newestFirst((i) => i % 3 === 0 && i % 2 === 0);
    expect(teamAProd).toHaveLength(2);
    expect((await list('label=team=a&label=stage=prod')).items.map((m) => m.id)).toEqual(teamAProd);
    // A key alone: any value. stage is set on the 6 even ones.
    expect((await list('label=filter-test&label=stage&limit=100')).items).toHaveLength(6);
    // name m-1: i in {1, 5, 9}; with team b (i % 3 = 1): i in {1}
    expect((await list('name=m-1')).items.map((m) => m.id)).toEqual(newestFirst((i) => i % 4 === 1));
    expect((await list('name=m-1&label=team=b')).items.map((m) => m.id)).toEqual(newestFirst((i) => i === 1));
    expect((await list('name=m-1&label=team=nope')).items).toEqual([]);
    expect((await list('name=m-1', bob)).items).toEqual([]);

    // Pages of 2 over the 6 prod models: full pages, every match once, in order, and a last page that ends it.
    const prod = newestFirst((i) => i % 2 === 0);
    const paged = await walk('label=filter-test=yes&label=stage=prod', 2);
    expect(paged.ids).toEqual(prod);
    expect(paged.pages).toBe(3);
    // One filter (one index walked as it is) pages the same way.
    const byName = await walk('name=m-0', 2);
    expect(byName.ids).toEqual(newestFirst((i) => i % 4 === 0));
    expect(byName.pages).toBe(2);
  });

  it('refuses bad names, labels and label filters with 400 problem+json', async () => {
    const files = await tinyModel();
    const tooMany = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']));
    const cases: [Part[], string][] = [
      [[{ field: 'labels', data: '{team: vision}' }], '/labels'],
      [[{ field: 'labels', data: '["team"]' }], '/labels'],
      [[{ field: 'labels', data: JSON.stringify({ '-team': 'x' }) }], '/labels'],
      [[{ field: 'labels', data: JSON.stringify({ 'a/b/c': 'x' }) }], '/labels'],
      [[{ field: 'labels', data: JSON.stringify({ ['k'.repeat(64)]: 'x' }) }], '/labels'],
      [[{ field: 'labels', data: JSON.stringify({ team: 'v'.repeat(257) }) }], '/labels/team'],
      [[{ field: 'labels', data: JSON.stringify({ team: 7 }) }], '/labels/team'],
      [[{ field: 'labels', data: JSON.stringify(tooMany) }], '/labels'],
      [[{ field: 'name', data: 'n'.repeat(129) }], '/name'],
      [[{ field: 'name', data: 'tab\there' }], '/name'],
      [named('twice').concat(named('twice')), '/name'],
      [[{ field: 'lables', data: '{"team":"vision"}' }], '/lables'],
    ];
    for (const [fields, path] of cases) {
      const res = await upload(files, fields);
      expect(res.statusCode, `${JSON.stringify(fields)}: ${res.body}`).toBe(400);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expectMatchesSpec('POST', '/v1/models', res);
      expect(res.json().type).toBe('urn:qaas:problem:invalid-request');
      const paths: string[] = res.json().problems.map((p: { path: string }) => p.path);
      expect(
        paths.some((at) => at.startsWith(path)),
        paths.join(', '),
      ).toBe(true);
    }
    // Nothing was stored by any of them: the same files are still new.
    expect((await upload(files)).statusCode).toBe(201);
    // Exactly at the limits is fine: 32 labels of 256-character values, a prefixed key, a 128-character name.
    const atLimits = Object.fromEntries(Array.from({ length: 31 }, (_, i) => [`k${i}`, 'v'.repeat(256)]));
    const okay = await upload(await tinyModel(), named('n'.repeat(128), { ...atLimits, 'example.com/k': 'v' }));
    expect(okay.statusCode, okay.body).toBe(201);
    expect(Object.keys(okay.json().labels)).toHaveLength(32);

    for (const query of ['label=-bad=x', `label=team=${'v'.repeat(257)}`, 'label=a/b/c', `name=${'n'.repeat(129)}`]) {
      const res = await suite.app.inject({ url: `/v1/models?${query}`, headers: alice });
      expect(res.statusCode, query).toBe(400);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expectMatchesSpec('GET', `/v1/models?${query}`, res);
    }
  });

  it('renames and relabels with PATCH (merge patch: null removes), and the filters follow', async () => {
    const files = await tinyModel();
    const { id } = (await upload(files, named('before', { keep: 'me', drop: 'me' }))).json();
    const patch = (body: unknown) =>
      suite.app.inject({ method: 'PATCH', url: `/v1/models/${id}`, payload: body as object, headers: alice });
    const res = await patch({ name: 'after', labels: { drop: null, added: 'yes' } });
    expect(res.statusCode, res.body).toBe(200);
    expectMatchesSpec('PATCH', `/v1/models/${id}`, res);
    expect(res.json()).toMatchObject({ id, name: 'after', labels: { keep: 'me', added: 'yes' } });
    expect(res.json().labels.drop).toBeUndefined();
    expect((await list('name=before')).items).toEqual([]);
    expect((await list('label=drop')).items).toEqual([]);
    expect((await list('name=after&label=added=yes&label=keep=me')).items.map((m) => m.id)).toEqual([id]);

    const unnamed = await patch({ name: null });
    expect(unnamed.json().name).toBeUndefined();
    expect((await list('name=after')).items).toEqual([]);
    // Still the same content: a re-upload finds it.
    expect((await upload(files)).json().id).toBe(id);

    const bad = await patch({ labels: { '-x': 'y' } });
    expect(bad.statusCode).toBe(400);
    expectMatchesSpec('PATCH', `/v1/models/${id}`, bad);
    const theirs = await suite.app.inject({
      method: 'PATCH',
      url: `/v1/models/${id}`,
      payload: { name: 'mine now' },
      headers: bob,
    });
    expect(theirs.statusCode).toBe(404);
    expectMatchesSpec('PATCH', `/v1/models/${id}`, theirs);
  });

  it('forgets a deleted model: its content, name and label keys go with it, and a re-upload is new', async () => {
    const files = await tinyModel();
    const first = (await upload(files, named('short-lived', { life: 'short' }))).json();
    const contentKey = keys.content('models', 'alice', first.sha256);
    expect(await redis.get(contentKey)).toBe(first.id);
    const del = await suite.app.inject({ method: 'DELETE', url: `/v1/models/${first.id}`, headers: alice });
    expect(del.statusCode).toBe(204);
    expect(await redis.exists(contentKey)).toBe(0);
    expect(await redis.exists(keys.nameIndex('models', 'alice', 'short-lived'))).toBe(0);
    expect(await redis.exists(keys.labelIndex('models', 'alice', 'life', 'short'))).toBe(0);
    expect(await redis.exists(keys.labelKeyIndex('models', 'alice', 'life'))).toBe(0);

    const again = await upload(files, named('short-lived'));
    expect(again.statusCode).toBe(201);
    expect(again.json().id).not.toBe(first.id);
    expect((await list('name=short-lived')).items.map((m) => m.id)).toEqual([again.json().id]);
  });
});

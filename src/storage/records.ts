/**
 * Records in Redis: `{prefix}:rec:{kind}:{tenant}:{id}` holds the JSON; `{prefix}:idx:{kind}:{tenant}` is a
 * sorted set of ids (all score 0, ordered lexicographically — ids start with their creation time, so that is
 * creation order) that cursor pagination walks; jobs also sit in one index per status, and a hash counts
 * records per status for the metrics. A record with a name or labels sits in one index per name, label and
 * label key (filtered lists intersect them), and a model or dataset holds its tenant's content key (its
 * sha256 → its id: an identical upload finds it). Every write is a compare-and-set of the whole document in one
 * Lua script that also moves the record between those indexes and keys, so the record and its indexes never
 * disagree and a late writer cannot undo a cancel.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RedisKeys } from './keys.js';
import type { RecordKind, RecordOf } from './types.js';

const idPrefixes: Record<RecordKind, string> = { models: 'mdl', datasets: 'ds', jobs: 'job' };

/** CSPRNG output drawn 4 KiB at a time: one call per 512 ids instead of one per id (a job submission's cost). */
let randomPool = Buffer.alloc(0);
let randomOffset = 0;

function random64Hex(): string {
  if (randomOffset + 8 > randomPool.length) {
    randomPool = randomBytes(4096);
    randomOffset = 0;
  }
  randomOffset += 8;
  return randomPool.toString('hex', randomOffset - 8, randomOffset);
}

/** `mdl_` + creation time (ms, base36, fixed width) + 64 random bits: sortable and unguessable. */
export function newId(kind: RecordKind, now = Date.now()): string {
  return `${idPrefixes[kind]}_${now.toString(36).padStart(9, '0')}${random64Hex()}`;
}

const idPattern = /^(mdl|ds|job)_[0-9a-z]{25}$/;
export function isId(kind: RecordKind, id: string): boolean {
  return idPattern.test(id) && id.startsWith(`${idPrefixes[kind]}_`);
}

// KEYS: record, index, old status index, new status index, counts hash, then `g` guard keys, `m` membership
//       sets, `x` sorted indexes and `c` content keys.
// ARGV: expected current JSON ('' = must not exist), new JSON ('' = delete), id, old status, new status, g, m,
//       x, c, then g guard expectations ('exists' | 'absent'), m membership ops ('add' | 'remove'), x index
//       ops ('add' | 'remove'), c content-key ops ('claim' | 'release').
// Returns 1 written, 0 the record was not as expected, -1 a guard failed, -2 a claimed content key holds
// another record's id.
const compareAndSet = `
local id = ARGV[3]
local g, m, x, c = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local guardKeys, memberKeys, indexKeys, contentKeys = 5, 5 + g, 5 + g + m, 5 + g + m + x
local guardArgs, memberArgs, indexArgs, contentArgs = 9, 9 + g, 9 + g + m, 9 + g + m + x
for i = 1, g do
  local exists = redis.call('EXISTS', KEYS[guardKeys + i]) == 1
  if (ARGV[guardArgs + i] == 'exists') ~= exists then return -1 end
end
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
for i = 1, c do
  if ARGV[contentArgs + i] == 'claim' then
    local holder = redis.call('GET', KEYS[contentKeys + i])
    if holder and holder ~= id then return -2 end
  end
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], id)
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 0, id)
end
if ARGV[4] ~= ARGV[5] or ARGV[1] == '' or ARGV[2] == '' then
  if ARGV[4] ~= '' and ARGV[1] ~= '' then
    redis.call('ZREM', KEYS[3], id)
    redis.call('HINCRBY', KEYS[5], ARGV[4], -1)
  end
  if ARGV[5] ~= '' and ARGV[2] ~= '' then
    redis.call('ZADD', KEYS[4], 0, id)
    redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
  end
end
for i = 1, m do
  if ARGV[memberArgs + i] == 'add' then redis.call('SADD', KEYS[memberKeys + i], id) end
  if ARGV[memberArgs + i] == 'remove' then redis.call('SREM', KEYS[memberKeys + i], id) end
end
for i = 1, x do
  if ARGV[indexArgs + i] == 'add' then redis.call('ZADD', KEYS[indexKeys + i], 0, id) end
  if ARGV[indexArgs + i] == 'remove' then redis.call('ZREM', KEYS[indexKeys + i], id) end
end
for i = 1, c do
  local key = KEYS[contentKeys + i]
  if ARGV[contentArgs + i] == 'claim' then redis.call('SET', key, id) end
  if ARGV[contentArgs + i] == 'release' and redis.call('GET', key) == id then redis.call('DEL', key) end
end
return 1
`;

// KEYS: the sorted indexes an id must be in. ARGV: where to start ('+' or '(' .. cursor), limit, budget (ids
// examined at most). Walks the smallest index newest first and keeps the ids every other one holds, until
// limit + 1 are found, the index ends or the budget is spent. Returns the resume cursor ('' when the index
// ended or limit + 1 were found), then the ids found.
const intersect = `
local walk, smallest = 1, redis.call('ZCARD', KEYS[1])
for i = 2, #KEYS do
  local n = redis.call('ZCARD', KEYS[i])
  if n < smallest then walk, smallest = i, n end
end
local start, limit, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local found = {''}
while budget > 0 do
  local ids = redis.call('ZREVRANGEBYLEX', KEYS[walk], start, '-', 'LIMIT', 0, math.min(budget, 256))
  if #ids == 0 then return found end
  for _, id in ipairs(ids) do
    budget = budget - 1
    local everywhere = true
    for i = 1, #KEYS do
      if i ~= walk and not redis.call('ZSCORE', KEYS[i], id) then
        everywhere = false
        break
      end
    end
    if everywhere then
      found[#found + 1] = id
      if #found > limit + 1 then return found end
    end
    start = '(' .. id
    if budget == 0 then break end
  end
end
found[1] = string.sub(start, 2)
return found
`;

/** Ids one filtered list call examines at most: a page of a rare combination ends early, with a cursor. */
const intersectBudget = 10_000;

// KEYS: a content key, the record key of the id it should hold. ARGV: that id. Deletes the content key if
// it still holds that id and the record is gone (written outside the store, or by hand).
const releaseStale = `
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

/**
 * What else a write checks or changes in the same atomic step: `guards` make it conditional on other keys
 * existing (a job's model and datasets) or being absent (a model's set of unfinished jobs); `memberships`
 * add the record's id to sets or remove it; `index` does the same for a sorted index that `list` can walk.
 * (A record's name, label and content keys need no effect: every write derives them from the record.)
 */
export interface WriteEffects {
  guards?: { key: string; expect: 'exists' | 'absent' }[];
  memberships?: { key: string; op: 'add' | 'remove' }[];
  /** Another index the id enters or leaves (see indexKey: a record's jobs by model, listed like the others). */
  index?: { key: string; op: 'add' | 'remove' };
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
  /** Ids on the page whose stored JSON does not parse: left out of `items`, named for the caller to report. */
  unreadable?: string[];
}

/** What a list keeps: every filter given must hold (AND). */
export interface ListFilter {
  cursor?: string;
  limit: number;
  status?: string;
  /** A field index (fieldIndex): jobs by model. */
  where?: { field: string; value: string };
  name?: string;
  /** `value` absent: any record carrying the key. */
  labels?: { key: string; value?: string }[];
  /** Ids a filtered call examines at most (default 10,000). */
  budget?: number;
}

/** Either the record just stored, or the tenant's record that already has its content. */
export type CreateOrFind<T> = { created: true; record: T } | { created: false; record: T };

/** A script as an ioredis command: sent once, then run by its SHA (EVALSHA). */
type Script<R> = (keyCount: number, ...keysThenArgs: string[]) => Promise<R>;

const scripts = { qaasCompareAndSet: compareAndSet, qaasIntersect: intersect, qaasReleaseStale: releaseStale };

export class RecordStore {
  private readonly compareAndSet: Script<number>;
  private readonly intersect: Script<string[]>;
  private readonly releaseStale: Script<number>;

  readonly keys: RedisKeys;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.keys = new RedisKeys(prefix);
    for (const [name, lua] of Object.entries(scripts)) if (!(name in redis)) redis.defineCommand(name, { lua });
    const commands = redis as unknown as Record<keyof typeof scripts, Script<never>>;
    this.compareAndSet = commands.qaasCompareAndSet.bind(redis);
    this.intersect = commands.qaasIntersect.bind(redis);
    this.releaseStale = commands.qaasReleaseStale.bind(redis);
  }

  private indexKey(kind: RecordKind, tenant: string, status?: string): string {
    return status ? this.keys.fieldIndex(kind, tenant, 'status', status) : this.keys.index(kind, tenant);
  }

  async get<K extends RecordKind>(kind: K, tenant: string, id: string): Promise<RecordOf[K] | null> {
    const json = await this.redis.get(this.keys.record(kind, tenant, id));
    return json === null ? null : (JSON.parse(json) as RecordOf[K]);
  }

  /** Stores a new record; false when `effects.guard` failed (nothing written). */
  async create<K extends RecordKind>(kind: K, record: RecordOf[K], effects: WriteEffects = {}): Promise<boolean> {
    const result = await this.write(kind, record.tenant, record.id, null, record, effects);
    if (result === 0) throw new Error(`${kind} record ${record.id} already exists`);
    if (result === -2) throw new Error(`the tenant has a ${kind} record with the content of ${record.id}`);
    return result === 1;
  }

  /**
   * Stores a new record unless the tenant already has one with the same content (its `sha256`), in one
   * atomic step: of two identical uploads at once, one stores and the other finds it. The existing record
   * is returned as it is.
   */
  async createOrFind<K extends 'models' | 'datasets'>(
    kind: K,
    record: RecordOf[K] & { sha256: string },
  ): Promise<CreateOrFind<RecordOf[K]>> {
    const contentKey = this.keys.content(kind, record.tenant, record.sha256);
    for (;;) {
      const result = await this.write(kind, record.tenant, record.id, null, record, {});
      if (result === 1) return { created: true, record };
      if (result !== -2) throw new Error(`${kind} record ${record.id} already exists`);
      const holder = await this.redis.get(contentKey);
      const existing = holder === null ? null : await this.get(kind, record.tenant, holder);
      if (existing) return { created: false, record: existing };
      // Deleted in between (its key went with it), or a key whose record was removed outside the store.
      if (holder !== null)
        await this.releaseStale(2, contentKey, this.keys.record(kind, record.tenant, holder), holder);
    }
  }

  /**
   * Applies `change` to the current record and stores the result if nobody wrote in between (else retries
   * with the newer record). `change` returns null to leave the record as it is. Null when there is no record.
   * `effects` says what else the write of a given new record does (WriteEffects); a guard must not fail here.
   */
  async update<K extends RecordKind>(
    kind: K,
    tenant: string,
    id: string,
    change: (current: RecordOf[K]) => RecordOf[K] | null,
    effects: (next: RecordOf[K]) => WriteEffects = () => ({}),
  ): Promise<RecordOf[K] | null> {
    for (;;) {
      const json = await this.redis.get(this.keys.record(kind, tenant, id));
      if (json === null) return null;
      const current = JSON.parse(json) as RecordOf[K];
      const next = change(structuredClone(current));
      if (next === null) return current;
      if ((await this.write(kind, tenant, id, json, next, effects(next))) === 1) return next;
    }
  }

  /** 'missing' when there is no such record, 'guarded' when `effects.guard` failed (nothing deleted). */
  async delete(
    kind: RecordKind,
    tenant: string,
    id: string,
    effects: WriteEffects = {},
  ): Promise<'deleted' | 'missing' | 'guarded'> {
    for (;;) {
      const json = await this.redis.get(this.keys.record(kind, tenant, id));
      if (json === null) return 'missing';
      const result = await this.write(kind, tenant, id, json, null, effects);
      if (result === 1) return 'deleted';
      if (result === -1) return 'guarded';
    }
  }

  /**
   * Newest first; `cursor` is the last id of the previous page. With one filter the page walks its index;
   * with several (a status, a field index, a name, labels) it walks the smallest and keeps the ids all the
   * others hold, so a page is full unless the list ends, or the 10,000 ids one call examines ran out first:
   * then it may hold fewer (even none) and `nextCursor` says where to go on.
   */
  async list<K extends RecordKind>(kind: K, tenant: string, filter: ListFilter): Promise<Page<RecordOf[K]>> {
    const indexes = this.filterIndexes(kind, tenant, filter);
    const start = filter.cursor ? `(${filter.cursor}` : '+';
    let pageIds: string[];
    let nextCursor: string | null;
    if (indexes.length === 1) {
      const ids = await this.redis.zrevrangebylex(indexes[0], start, '-', 'LIMIT', 0, filter.limit + 1);
      pageIds = ids.slice(0, filter.limit);
      nextCursor = ids.length > filter.limit ? pageIds[pageIds.length - 1] : null;
    } else {
      const [resume, ...ids] = await this.intersect(
        indexes.length,
        ...indexes,
        start,
        String(filter.limit),
        String(filter.budget ?? intersectBudget),
      );
      pageIds = ids.slice(0, filter.limit);
      nextCursor = ids.length > filter.limit ? pageIds[pageIds.length - 1] : resume || null;
    }
    const jsons =
      pageIds.length > 0 ? await this.redis.mget(pageIds.map((id) => this.keys.record(kind, tenant, id))) : [];
    const unreadable: string[] = [];
    const items = jsons.flatMap((json, i) => {
      if (json === null) return [];
      try {
        return [JSON.parse(json) as RecordOf[K]];
      } catch {
        unreadable.push(pageIds[i]);
        return [];
      }
    });
    return unreadable.length > 0 ? { items, nextCursor, unreadable } : { items, nextCursor };
  }

  private filterIndexes(kind: RecordKind, tenant: string, filter: ListFilter): string[] {
    const indexes = [
      ...(filter.status ? [this.indexKey(kind, tenant, filter.status)] : []),
      ...(filter.where ? [this.keys.fieldIndex(kind, tenant, filter.where.field, filter.where.value)] : []),
      ...(filter.name !== undefined ? [this.keys.nameIndex(kind, tenant, filter.name)] : []),
      ...(filter.labels ?? []).map(({ key, value }) =>
        value === undefined
          ? this.keys.labelKeyIndex(kind, tenant, key)
          : this.keys.labelIndex(kind, tenant, key, value),
      ),
    ];
    return indexes.length > 0 ? [...new Set(indexes)] : [this.indexKey(kind, tenant)];
  }

  /** Every record of `kind`, across tenants, in no particular order (SCAN: it does not block Redis). */
  async *scanAll<K extends RecordKind>(kind: K): AsyncGenerator<RecordOf[K]> {
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', this.keys.records(kind), 'COUNT', 1000);
      cursor = next;
      const jsons = keys.length > 0 ? await this.redis.mget(keys) : [];
      for (const json of jsons) if (json !== null) yield JSON.parse(json) as RecordOf[K];
    } while (cursor !== '0');
  }

  /**
   * The jobs of one status across tenants, read through the status indexes: a sweep for the few unfinished
   * jobs never reads the many ended records.
   */
  async *jobsWithStatus(status: string): AsyncGenerator<RecordOf['jobs']> {
    const pattern = this.keys.fieldIndex('jobs', '*', 'status', status);
    const [head, tail] = pattern.split('*');
    let cursor = '0';
    do {
      const [next, indexes] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      for (const index of indexes) {
        const tenant = index.slice(head.length, index.length - tail.length);
        for (const id of await this.redis.zrange(index, 0, -1)) {
          const job = await this.get('jobs', tenant, id);
          if (job?.status === status) yield job;
        }
      }
    } while (cursor !== '0');
  }

  /** Record counts per status (jobs), across tenants. */
  async countByStatus(kind: RecordKind): Promise<Record<string, number>> {
    const counts = await this.redis.hgetall(this.keys.counts(kind));
    return Object.fromEntries(Object.entries(counts).map(([status, n]) => [status, Number(n)]));
  }

  /** The name and label indexes a record sits in. */
  private metadataIndexes(kind: RecordKind, tenant: string, record: unknown): string[] {
    const { name, labels } = record as { name?: unknown; labels?: unknown };
    const indexes = typeof name === 'string' ? [this.keys.nameIndex(kind, tenant, name)] : [];
    if (labels && typeof labels === 'object') {
      for (const [key, value] of Object.entries(labels as Record<string, unknown>)) {
        if (typeof value !== 'string') continue;
        indexes.push(this.keys.labelIndex(kind, tenant, key, value), this.keys.labelKeyIndex(kind, tenant, key));
      }
    }
    return indexes;
  }

  /** The key that makes a record's content unique within its tenant: models and datasets, by `sha256`. */
  private contentKey(kind: RecordKind, tenant: string, record: unknown): string | null {
    if (kind === 'jobs') return null;
    const sha256 = (record as { sha256?: unknown }).sha256;
    return typeof sha256 === 'string' ? this.keys.content(kind, tenant, sha256) : null;
  }

  private async write(
    kind: RecordKind,
    tenant: string,
    id: string,
    currentJson: string | null,
    next: RecordOf[RecordKind] | null,
    { guards = [], memberships = [], index }: WriteEffects = {},
  ): Promise<number> {
    const current: unknown = currentJson ? JSON.parse(currentJson) : null;
    const oldStatus = current ? statusOf(current) : '';
    const newStatus = next ? statusOf(next) : '';
    const keys = [
      this.keys.record(kind, tenant, id),
      this.indexKey(kind, tenant),
      this.indexKey(kind, tenant, oldStatus || 'none'),
      this.indexKey(kind, tenant, newStatus || 'none'),
      this.keys.counts(kind),
    ];
    const indexes = changes(
      current ? this.metadataIndexes(kind, tenant, current) : [],
      next ? this.metadataIndexes(kind, tenant, next) : [],
    );
    if (index) indexes.push(index);
    const oldContent = current ? this.contentKey(kind, tenant, current) : null;
    const newContent = next ? this.contentKey(kind, tenant, next) : null;
    const contents = changes(oldContent ? [oldContent] : [], newContent ? [newContent] : []).map(({ key, op }) => ({
      key,
      op: op === 'add' ? 'claim' : 'release',
    }));
    keys.push(
      ...guards.map((g) => g.key),
      ...memberships.map((m) => m.key),
      ...indexes.map((x) => x.key),
      ...contents.map((c) => c.key),
    );
    return this.compareAndSet(
      keys.length,
      ...keys,
      currentJson ?? '',
      next ? JSON.stringify(next) : '',
      id,
      oldStatus,
      newStatus,
      String(guards.length),
      String(memberships.length),
      String(indexes.length),
      String(contents.length),
      ...guards.map((g) => g.expect),
      ...memberships.map((m) => m.op),
      ...indexes.map((x) => x.op),
      ...contents.map((c) => c.op),
    );
  }
}

/** The keys to leave (in `before` only) and to enter (in `after` only). */
function changes(before: string[], after: string[]): { key: string; op: 'add' | 'remove' }[] {
  const kept = new Set(after);
  const had = new Set(before);
  return [
    ...[...had].filter((key) => !kept.has(key)).map((key) => ({ key, op: 'remove' as const })),
    ...[...kept].filter((key) => !had.has(key)).map((key) => ({ key, op: 'add' as const })),
  ];
}

function statusOf(record: unknown): string {
  const status = (record as { status?: unknown }).status;
  return typeof status === 'string' ? status : '';
}

/**
 * Records in Redis: `{prefix}:rec:{kind}:{tenant}:{id}` holds the JSON; `{prefix}:idx:{kind}:{tenant}` is a
 * sorted set of ids (all score 0, ordered lexicographically — ids start with their creation time, so that is
 * creation order) that cursor pagination walks; jobs also sit in one index per status, and a hash counts
 * records per status for the metrics. Every write is a compare-and-set of the whole document in one Lua
 * script, so the record and its indexes never disagree and a late writer cannot undo a cancel.
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
//       sets and, when ARGV[8] is set, the extra index.
// ARGV: expected current JSON ('' = must not exist), new JSON ('' = delete), id, old status, new status, g, m,
//       extra index op ('' | 'add' | 'remove'), then g guard expectations ('exists' | 'absent'), then m
//       membership ops ('add' | 'remove').
// Returns 1 written, 0 the record was not as expected, -1 a guard failed.
const compareAndSet = `
local g = tonumber(ARGV[6])
local m = tonumber(ARGV[7])
for i = 1, g do
  local exists = redis.call('EXISTS', KEYS[5 + i]) == 1
  if (ARGV[8 + i] == 'exists') ~= exists then return -1 end
end
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
end
if ARGV[4] ~= ARGV[5] or ARGV[1] == '' or ARGV[2] == '' then
  if ARGV[4] ~= '' and ARGV[1] ~= '' then
    redis.call('ZREM', KEYS[3], ARGV[3])
    redis.call('HINCRBY', KEYS[5], ARGV[4], -1)
  end
  if ARGV[5] ~= '' and ARGV[2] ~= '' then
    redis.call('ZADD', KEYS[4], 0, ARGV[3])
    redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
  end
end
for i = 1, m do
  if ARGV[8 + g + i] == 'add' then redis.call('SADD', KEYS[5 + g + i], ARGV[3]) end
  if ARGV[8 + g + i] == 'remove' then redis.call('SREM', KEYS[5 + g + i], ARGV[3]) end
end
if ARGV[8] == 'add' then redis.call('ZADD', KEYS[6 + g + m], 0, ARGV[3]) end
if ARGV[8] == 'remove' then redis.call('ZREM', KEYS[6 + g + m], ARGV[3]) end
return 1
`;

/**
 * What else a write checks or changes in the same atomic step: `guards` make it conditional on other keys
 * existing (a job's model and datasets) or being absent (a model's set of unfinished jobs); `memberships`
 * add the record's id to sets or remove it; `index` does the same for a sorted index that `list` can walk.
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

/** The compare-and-set script as an ioredis command: sent once, then run by its SHA (EVALSHA). */
type CompareAndSet = (keyCount: number, ...keysThenArgs: string[]) => Promise<number>;

export class RecordStore {
  private readonly compareAndSet: CompareAndSet;

  readonly keys: RedisKeys;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.keys = new RedisKeys(prefix);
    if (!('qaasCompareAndSet' in redis)) redis.defineCommand('qaasCompareAndSet', { lua: compareAndSet });
    const command = (redis as unknown as { qaasCompareAndSet: CompareAndSet }).qaasCompareAndSet;
    this.compareAndSet = command.bind(redis);
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
    return result === 1;
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
   * Newest first; `cursor` is the last id of the previous page. `where` walks a field index (fieldIndexKey);
   * with `status` as well, the page keeps the records of that status, so it may hold fewer than `limit`.
   */
  async list<K extends RecordKind>(
    kind: K,
    tenant: string,
    options: { cursor?: string; limit: number; status?: string; where?: { field: string; value: string } },
  ): Promise<Page<RecordOf[K]>> {
    const { where, status } = options;
    const start = options.cursor ? `(${options.cursor}` : '+';
    const ids = await this.redis.zrevrangebylex(
      where ? this.keys.fieldIndex(kind, tenant, where.field, where.value) : this.indexKey(kind, tenant, status),
      start,
      '-',
      'LIMIT',
      0,
      options.limit + 1,
    );
    const pageIds = ids.slice(0, options.limit);
    const jsons =
      pageIds.length > 0 ? await this.redis.mget(pageIds.map((id) => this.keys.record(kind, tenant, id))) : [];
    const unreadable: string[] = [];
    const items = jsons
      .flatMap((json, i) => {
        if (json === null) return [];
        try {
          return [JSON.parse(json) as RecordOf[K]];
        } catch {
          unreadable.push(pageIds[i]);
          return [];
        }
      })
      .filter((record) => !where || !status || statusOf(record) === status);
    const nextCursor = ids.length > options.limit ? pageIds[pageIds.length - 1] : null;
    return unreadable.length > 0 ? { items, nextCursor, unreadable } : { items, nextCursor };
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

  /** Record counts per status (jobs), across tenants. */
  async countByStatus(kind: RecordKind): Promise<Record<string, number>> {
    const counts = await this.redis.hgetall(this.keys.counts(kind));
    return Object.fromEntries(Object.entries(counts).map(([status, n]) => [status, Number(n)]));
  }

  private async write(
    kind: RecordKind,
    tenant: string,
    id: string,
    currentJson: string | null,
    next: RecordOf[RecordKind] | null,
    { guards = [], memberships = [], index }: WriteEffects = {},
  ): Promise<number> {
    const oldStatus = currentJson ? statusOf(JSON.parse(currentJson)) : '';
    const newStatus = next ? statusOf(next) : '';
    const keys = [
      this.keys.record(kind, tenant, id),
      this.indexKey(kind, tenant),
      this.indexKey(kind, tenant, oldStatus || 'none'),
      this.indexKey(kind, tenant, newStatus || 'none'),
      this.keys.counts(kind),
    ];
    keys.push(...guards.map((g) => g.key), ...memberships.map((m) => m.key), ...(index ? [index.key] : []));
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
      index?.op ?? '',
      ...guards.map((g) => g.expect),
      ...memberships.map((m) => m.op),
    );
  }
}

function statusOf(record: unknown): string {
  const status = (record as { status?: unknown }).status;
  return typeof status === 'string' ? status : '';
}

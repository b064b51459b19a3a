/**
 * Records in Redis: `{prefix}:rec:{kind}:{tenant}:{id}` holds the JSON; `{prefix}:idx:{kind}:{tenant}` is a
 * sorted set of ids (all score 0, ordered lexicographically — ids start with their creation time, so that is
 * creation order) that cursor pagination walks; jobs also sit in one index per status, and a hash counts
 * records per status for the metrics. Every write is a compare-and-set of the whole document in one Lua
 * script, so the record and its indexes never disagree and a late writer cannot undo a cancel.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
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

// KEYS: record, index, old status index, new status index, counts hash, [guard key], [membership set],
//       [extra index].
// ARGV: expected current JSON ('' = must not exist), new JSON ('' = delete), id, old status, new status,
//       guard ('' | 'exists' | 'absent'), membership ('' | 'add' | 'remove'), extra index ('' | 'add' | 'remove').
// Returns 1 written, 0 the record was not as expected, -1 the guard failed.
const compareAndSet = `
if ARGV[6] == 'exists' and redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
if ARGV[6] == 'absent' and redis.call('EXISTS', KEYS[6]) == 1 then return -1 end
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
if ARGV[7] == 'add' then redis.call('SADD', KEYS[7], ARGV[3]) end
if ARGV[7] == 'remove' then redis.call('SREM', KEYS[7], ARGV[3]) end
if ARGV[8] == 'add' then redis.call('ZADD', KEYS[8], 0, ARGV[3]) end
if ARGV[8] == 'remove' then redis.call('ZREM', KEYS[8], ARGV[3]) end
return 1
`;

/**
 * What else a write checks or changes in the same atomic step: `guard` makes it conditional on another key
 * existing (a job's model) or being absent (a model's set of unfinished jobs); `membership` adds the
 * record's id to a set or removes it; `index` does the same for a sorted index that `list` can walk.
 */
export interface WriteEffects {
  guard?: { key: string; expect: 'exists' | 'absent' };
  membership?: { key: string; op: 'add' | 'remove' };
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

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    if (!('qaasCompareAndSet' in redis)) redis.defineCommand('qaasCompareAndSet', { lua: compareAndSet });
    const command = (redis as unknown as { qaasCompareAndSet: CompareAndSet }).qaasCompareAndSet;
    this.compareAndSet = command.bind(redis);
  }

  recordKey(kind: RecordKind, tenant: string, id: string): string {
    return `${this.prefix}:rec:${kind}:${tenant}:${id}`;
  }

  private indexKey(kind: RecordKind, tenant: string, status?: string): string {
    return status ? this.fieldIndexKey(kind, tenant, 'status', status) : `${this.prefix}:idx:${kind}:${tenant}`;
  }

  /** The index of a tenant's records whose `field` is `value`: kept here for status, by WriteEffects.index for others. */
  fieldIndexKey(kind: RecordKind, tenant: string, field: string, value: string): string {
    return `${this.prefix}:idx:${kind}:${tenant}:${field}:${value}`;
  }

  countsKey(kind: RecordKind): string {
    return `${this.prefix}:counts:${kind}`;
  }

  async get<K extends RecordKind>(kind: K, tenant: string, id: string): Promise<RecordOf[K] | null> {
    const json = await this.redis.get(this.recordKey(kind, tenant, id));
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
      const json = await this.redis.get(this.recordKey(kind, tenant, id));
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
      const json = await this.redis.get(this.recordKey(kind, tenant, id));
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
      where ? this.fieldIndexKey(kind, tenant, where.field, where.value) : this.indexKey(kind, tenant, status),
      start,
      '-',
      'LIMIT',
      0,
      options.limit + 1,
    );
    const pageIds = ids.slice(0, options.limit);
    const jsons =
      pageIds.length > 0 ? await this.redis.mget(pageIds.map((id) => this.recordKey(kind, tenant, id))) : [];
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
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}:rec:${kind}:*`, 'COUNT', 1000);
      cursor = next;
      const jsons = keys.length > 0 ? await this.redis.mget(keys) : [];
      for (const json of jsons) if (json !== null) yield JSON.parse(json) as RecordOf[K];
    } while (cursor !== '0');
  }

  /** Record counts per status (jobs), across tenants. */
  async countByStatus(kind: RecordKind): Promise<Record<string, number>> {
    const counts = await this.redis.hgetall(this.countsKey(kind));
    return Object.fromEntries(Object.entries(counts).map(([status, n]) => [status, Number(n)]));
  }

  private async write(
    kind: RecordKind,
    tenant: string,
    id: string,
    currentJson: string | null,
    next: RecordOf[RecordKind] | null,
    { guard, membership, index }: WriteEffects = {},
  ): Promise<number> {
    const oldStatus = currentJson ? statusOf(JSON.parse(currentJson)) : '';
    const newStatus = next ? statusOf(next) : '';
    const keys = [
      this.recordKey(kind, tenant, id),
      this.indexKey(kind, tenant),
      this.indexKey(kind, tenant, oldStatus || 'none'),
      this.indexKey(kind, tenant, newStatus || 'none'),
      this.countsKey(kind),
    ];
    // A slot left unused repeats the record key: the script reads a slot only when its ARGV asks for it.
    if (guard || membership || index)
      keys.push(guard?.key ?? keys[0], membership?.key ?? keys[0], index?.key ?? keys[0]);
    return this.compareAndSet(
      keys.length,
      ...keys,
      currentJson ?? '',
      next ? JSON.stringify(next) : '',
      id,
      oldStatus,
      newStatus,
      guard?.expect ?? '',
      membership?.op ?? '',
      index?.op ?? '',
    );
  }
}

function statusOf(record: unknown): string {
  const status = (record as { status?: unknown }).status;
  return typeof status === 'string' ? status : '';
}

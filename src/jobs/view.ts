/**
 * A job as its client sees it, wherever it is sent: REST responses, the SSE `state` and `final` events and
 * webhook bodies. The record's internal fields stay in Redis: the tenant that owns it (a client knows its
 * own) and the Redis key of the Idempotency-Key that created it.
 */
import type { JobRecord } from '../storage/types.js';

export type PublicJob = Omit<JobRecord, 'tenant' | 'idempotencyKey'>;

export function publicJob({ tenant: _tenant, idempotencyKey: _idempotencyKey, ...job }: JobRecord): PublicJob {
  return job;
}

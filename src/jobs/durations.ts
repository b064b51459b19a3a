/**
 * Job run times (start to end, by method and final status) as a histogram kept in Redis. The one write
 * that ends a job records its duration, wherever that write happens (a worker, or the API for a cancel),
 * so each job is counted once however many API replicas serve /metrics, and no replica has to read every
 * queue event to count them.
 */
import type { Redis } from 'ioredis';
import { RedisKeys } from '../storage/keys.js';

/** Upper bounds (seconds) of the histogram's buckets; the last, +Inf, is implied. */
export const jobDurationBuckets = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];

export interface DurationSeries {
  method: string;
  status: string;
  /** Observations per bucket, not cumulative; one more entry than jobDurationBuckets (for +Inf). */
  buckets: number[];
  sum: number;
}

export class JobDurations {
  private readonly key: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.key = new RedisKeys(prefix).jobDurations();
  }

  async record(method: string, status: string, seconds: number): Promise<void> {
    let bucket = jobDurationBuckets.findIndex((bound) => seconds <= bound);
    if (bucket === -1) bucket = jobDurationBuckets.length;
    const series = `${method}\t${status}`;
    await this.redis
      .multi()
      .hincrby(this.key, `${series}\t${bucket}`, 1)
      .hincrbyfloat(this.key, `${series}\tsum`, seconds)
      .exec();
  }

  async read(): Promise<DurationSeries[]> {
    const fields = await this.redis.hgetall(this.key);
    const bySeries = new Map<string, DurationSeries>();
    for (const [field, value] of Object.entries(fields)) {
      const [method, status, slot] = field.split('\t');
      const name = `${method}\t${status}`;
      let series = bySeries.get(name);
      if (!series) {
        series = { method, status, buckets: new Array<number>(jobDurationBuckets.length + 1).fill(0), sum: 0 };
        bySeries.set(name, series);
      }
      if (slot === 'sum') series.sum = Number(value);
      else series.buckets[Number(slot)] = Number(value);
    }
    return [...bySeries.values()];
  }
}

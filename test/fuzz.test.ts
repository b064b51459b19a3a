/**
 * A short seeded slice of the fuzz run (`npm run fuzz` sends 12,000): hostile uploads, specs, paths and
 * raw requests to a listening service with an embedded worker. The run itself checks what must hold.
 */
import { describe, expect, it } from 'vitest';
import { describeResult, runFuzz } from '../fuzz/fuzz.js';
import { redisUrl } from './http/helpers.js';

describe('fuzz slice', () => {
  it('answers 800 hostile requests without a 5xx, a crash, a write outside DATA_DIR or a changed record', async () => {
    const result = await runFuzz({
      seed: 20261203,
      count: 800,
      timeBudgetMs: 20_000,
      concurrency: 4,
      queuedJobs: 4,
      redisUrl,
    });
    const summary = describeResult(result);
    expect(result.sent, summary).toBeGreaterThan(200);
    expect(result.serverErrors, summary).toEqual([]);
    expect(result.crashes, summary).toEqual([]);
    expect(result.internalJobs, summary).toEqual([]);
    expect(result.outsideWrites, summary).toEqual([]);
    expect(result.changedRecords, summary).toEqual([]);
    // Most hostile input is refused as what it is: 4xx, not silence.
    const answered4xx = Object.entries(result.byStatus)
      .filter(([status]) => /^4/.test(status))
      .reduce((sum, [, n]) => sum + n, 0);
    expect(answered4xx / result.sent, summary).toBeGreaterThan(0.7);
  });
});

/**
 * `npm run fuzz [-- --seed N --count N --seconds N]`: the full fuzz run (fuzz.ts) against a service on
 * loopback, printing the counts by status and every finding; exit 1 when there is one.
 */
import { parseArgs } from 'node:util';
import { describeResult, failed, runFuzz } from './fuzz.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '1' },
    count: { type: 'string', default: '12000' },
    seconds: { type: 'string', default: '900' },
    concurrency: { type: 'string', default: '8' },
  },
});

const result = await runFuzz({
  seed: Number(values.seed),
  count: Number(values.count),
  timeBudgetMs: Number(values.seconds) * 1000,
  concurrency: Number(values.concurrency),
  redisUrl: process.env.REDIS_URL,
  log: (line) => console.log(line),
});
console.log(describeResult(result));
process.exit(failed(result) ? 1 : 0);

/**
 * `npm test` on a fresh machine: when nothing answers on REDIS_URL, start redis-server for the run (the
 * same way `qaas serve` does, data in a temp dir) and stop it afterwards. CI's .ci/run starts one itself.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { ensureRedis } from '../src/service.js';

export default async function setup(): Promise<() => Promise<void>> {
  const dataDir = await mkdtemp(join(tmpdir(), 'qaas-test-redis-'));
  const redis = await ensureRedis(loadConfig({ ...process.env, DATA_DIR: dataDir }));
  return async () => {
    if (redis && redis.exitCode === null) {
      redis.kill('SIGTERM');
      await new Promise((resolve) => redis.once('exit', resolve));
    }
    await rm(dataDir, { recursive: true, force: true });
  };
}

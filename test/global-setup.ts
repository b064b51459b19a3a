/**
 * `npm test` on a fresh machine: when nothing answers on REDIS_URL, start redis-server for the run (the
 * same way `qaas serve` does, data in a temp dir) and stop it afterwards; find the dashboard tests' chromium,
 * or install it (test/chromium.ts). CI's .ci/run starts Redis itself.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../src/config.js';
import { ensureRedis } from '../src/service.js';
import { ChromiumUnavailableError, ensureChromium } from './chromium.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The chromium executable, or why there is none (the browser tests fail with it; the others still run). */
    chromium: { path: string } | { error: string };
  }
}

function chromium(): { path: string } | { error: string } {
  try {
    return { path: ensureChromium() };
  } catch (error) {
    if (!(error instanceof ChromiumUnavailableError)) throw error;
    process.stderr.write(`test setup: ${error.message}\n`);
    return { error: error.message };
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  project.provide('chromium', chromium());
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

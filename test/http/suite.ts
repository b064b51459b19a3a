/** Per-file fixtures that register vitest hooks (kept apart from helpers.ts, which bench:api imports too). */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll } from 'vitest';
import type { Config } from '../../src/config.js';
import { cleanup, twoTenantApp } from './helpers.js';

/**
 * twoTenantApp for a whole test file: created before its tests, closed and cleaned after them. Read the
 * fields inside tests (they are set once beforeAll has run).
 */
export function useTwoTenantApp(env: Record<string, string> = {}): {
  config: Config;
  app: FastifyInstance;
  modelId: string;
} {
  const state = {} as { config: Config; app: FastifyInstance; modelId: string };
  beforeAll(async () => {
    Object.assign(state, await twoTenantApp(env));
  });
  afterAll(async () => {
    await state.app?.close();
    if (state.config) await cleanup(state.config);
  });
  return state;
}

/**
 * Service configuration (docs/operations.md), read once from the environment at start and passed down; nothing
 * else in the service reads `process.env`. API keys are kept only as sha256 hashes.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { parseAllowList, type WebhookAllowList } from './jobs/webhook-target.js';

export type BackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

export interface ApiKey {
  tenant: string;
  /** sha256 of the key, hex. */
  keyHash: string;
}

export interface Config {
  port: number;
  host: string;
  redisUrl: string;
  /** Prefix of every Redis key and BullMQ queue this service owns; tests give each run its own. */
  redisPrefix: string;
  dataDir: string;
  /** Empty: one local tenant, no auth. */
  apiKeys: ApiKey[];
  workers: number;
  tfBackend: BackendPreference;
  upload: {
    /** Per file (an archive counts as its expanded entries too). */
    maxFileBytes: number;
    maxFiles: number;
    maxTotalBytes: number;
    /** Expanded bytes ÷ archive bytes above which an archive is refused (zip bombs). */
    maxExpansionRatio: number;
  };
  rateLimit: { max: number; timeWindowMs: number };
  /**
   * How long a client may take, so slow clients cannot hold connections (slowloris): the headers, the
   * whole request (body included), and a connection's silence (idle, or between keep-alive requests).
   */
  timeouts: { headersMs: number; requestMs: number; idleMs: number; keepAliveMs: number };
  webhooks: {
    /** Addresses, ranges and host names that may receive webhooks though they are not global unicast. */
    allow: WebhookAllowList;
    /** A delivery's whole exchange, connecting to the last byte of the answer read. */
    timeoutMs: number;
  };
  /** Browser origins (scheme://host[:port]) whose pages may call the API; empty: none, `*`: any. */
  corsOrigins: string[];
  logLevel: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const GiB = 1024 ** 3;

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min)
    throw new ConfigError(`${name} must be an integer ≥ ${min}, got "${raw}"`);
  return value;
}

function parseApiKeys(raw: string | undefined): ApiKey[] {
  if (!raw?.trim()) return [];
  return raw.split(',').map((pair) => {
    const at = pair.indexOf(':');
    const tenant = pair.slice(0, at).trim();
    const key = pair.slice(at + 1).trim();
    if (at <= 0 || !key || !/^[A-Za-z0-9_.-]+$/.test(tenant)) {
      throw new ConfigError('QAAS_API_KEYS must be comma-separated tenant:key pairs (tenant of [A-Za-z0-9_.-])');
    }
    return { tenant, keyHash: hashApiKey(key) };
  });
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const apiKeys = parseApiKeys(env.QAAS_API_KEYS);
  const tfBackend = (env.QAAS_TF_BACKEND || 'auto') as BackendPreference;
  if (!['auto', 'tensorflow', 'wasm', 'cpu'].includes(tfBackend)) {
    throw new ConfigError(`QAAS_TF_BACKEND must be one of auto, tensorflow, wasm, cpu; got "${tfBackend}"`);
  }
  const maxFileBytes = integer(env, 'QAAS_MAX_UPLOAD_BYTES', GiB, 1);
  return {
    port: integer(env, 'PORT', 8080),
    // Without keys anyone who reaches the port is the tenant, so only the local machine may.
    host: env.HOST || (apiKeys.length > 0 ? '0.0.0.0' : '127.0.0.1'),
    redisUrl: env.REDIS_URL || 'redis://127.0.0.1:6379',
    redisPrefix: env.QAAS_REDIS_PREFIX || 'qaas',
    dataDir: resolve(env.DATA_DIR || './data'),
    apiKeys,
    workers: integer(env, 'QAAS_WORKERS', 1),
    tfBackend,
    upload: {
      maxFileBytes,
      maxFiles: integer(env, 'QAAS_MAX_UPLOAD_FILES', 1000, 1),
      maxTotalBytes: integer(env, 'QAAS_MAX_UPLOAD_TOTAL_BYTES', Math.max(maxFileBytes, 2 * GiB), 1),
      maxExpansionRatio: integer(env, 'QAAS_MAX_EXPANSION_RATIO', 100, 1),
    },
    rateLimit: {
      max: integer(env, 'QAAS_RATE_LIMIT_MAX', 600, 1),
      timeWindowMs: integer(env, 'QAAS_RATE_LIMIT_WINDOW_MS', 60_000, 1),
    },
    corsOrigins: parseOrigins(env.QAAS_CORS_ORIGINS),
    timeouts: {
      headersMs: integer(env, 'QAAS_HEADERS_TIMEOUT_MS', 10_000, 1),
      // An upload of QAAS_MAX_UPLOAD_BYTES must fit in it: 5 minutes is 1 GiB at 3.6 MB/s.
      requestMs: integer(env, 'QAAS_REQUEST_TIMEOUT_MS', 300_000, 1),
      // The event stream writes a heartbeat every 15 s, so an idle limit above that never cuts one.
      idleMs: integer(env, 'QAAS_IDLE_TIMEOUT_MS', 30_000, 1),
      keepAliveMs: integer(env, 'QAAS_KEEP_ALIVE_TIMEOUT_MS', 5_000, 1),
    },
    webhooks: {
      allow: webhookAllowList(env.QAAS_WEBHOOK_ALLOW),
      timeoutMs: integer(env, 'QAAS_WEBHOOK_TIMEOUT_MS', 10_000, 1),
    },
    logLevel: env.LOG_LEVEL || 'info',
  };
}

function webhookAllowList(raw: string | undefined): WebhookAllowList {
  try {
    return parseAllowList(raw);
  } catch (error) {
    throw new ConfigError(
      `QAAS_WEBHOOK_ALLOW must be comma-separated addresses, CIDR ranges or host names: ${(error as Error).message}`,
    );
  }
}

function parseOrigins(raw: string | undefined): string[] {
  if (!raw?.trim()) return [];
  const origins = raw.split(',').map((origin) => origin.trim());
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(
        `QAAS_CORS_ORIGINS must be comma-separated origins like https://dash.example.com (or *); got "${origin}"`,
      );
    }
  }
  return origins;
}

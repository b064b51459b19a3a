/**
 * Test fixtures for the service: a config on a temp DATA_DIR and a fresh Redis prefix, a tiny layers model
 * saved by stock tfjs, multipart bodies, and cleanup of every key the prefix owns.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { Redis } from 'ioredis';
import yazl from 'yazl';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import type { FileSet } from '../../src/model/types.js';

export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function testConfig(env: Record<string, string> = {}): Promise<Config> {
  const dataDir = await mkdtemp(join(tmpdir(), 'qaas-test-'));
  return loadConfig({
    REDIS_URL: redisUrl,
    DATA_DIR: dataDir,
    QAAS_REDIS_PREFIX: `test-${randomUUID()}`,
    QAAS_TF_BACKEND: 'cpu',
    LOG_LEVEL: 'warn',
    ...env,
  });
}

/** Deletes every Redis key under the config's prefix and its DATA_DIR. */
export async function cleanup(config: Config): Promise<void> {
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.redisPrefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  await rm(config.dataDir, { recursive: true, force: true });
}

/** A Dense(4→3) + Dense(3→2) layers model as stock tfjs saves it: model.json + one shard. */
export function tinyModel(): Promise<FileSet> {
  return denseModel([4, 3, 2]);
}

/** A stack of Dense layers with the given widths (first = input), saved by stock tfjs. */
export async function denseModel(widths: number[]): Promise<FileSet> {
  await tf.setBackend('cpu');
  const model = tf.sequential({
    layers: widths.slice(1).map((units, i) =>
      tf.layers.dense({
        ...(i === 0 ? { inputShape: [widths[0]] } : {}),
        units,
        activation: i < widths.length - 2 ? 'relu' : 'linear',
        name: `dense_${i + 1}`,
      }),
    ),
  });
  let files: FileSet = new Map();
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: 'layers-model',
        generatedBy: 'test',
        convertedBy: null,
        weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: artifacts.weightSpecs }],
      };
      files = new Map([
        ['model.json', new TextEncoder().encode(JSON.stringify(modelJson))],
        ['group1-shard1of1.bin', new Uint8Array(artifacts.weightData as ArrayBuffer)],
      ]);
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  model.dispose();
  return files;
}

export interface Part {
  field?: string;
  /** Absent: a text field (`name`, `labels`) rather than a file. */
  filename?: string;
  data: Uint8Array | string;
}

/** A multipart/form-data body for app.inject. */
export function multipart(parts: Part[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----qaas${randomUUID()}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.field ?? 'file'}"`;
    chunks.push(
      Buffer.from(
        part.filename === undefined
          ? `--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`
          : `--${boundary}\r\nContent-Disposition: ${disposition}; filename="${part.filename}"\r\n` +
              'Content-Type: application/octet-stream\r\n\r\n',
      ),
    );
    chunks.push(Buffer.from(part.data));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

export function filesAsParts(files: FileSet): Part[] {
  return [...files].map(([filename, data]) => ({ filename, data }));
}

export function zipOf(
  entries: [string, Uint8Array][],
  { compress = true, mtime }: { compress?: boolean; mtime?: Date } = {},
): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, data] of entries) zip.addBuffer(Buffer.from(data), name, { compress, ...(mtime ? { mtime } : {}) });
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (chunk: Buffer) => chunks.push(chunk));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

/** Replaces every occurrence of `from` with `to` (same length) in a buffer: forges archive entry names. */
export function patchBytes(buffer: Buffer, from: string, to: string): Buffer {
  const out = Buffer.from(buffer);
  let at = out.indexOf(from);
  while (at >= 0) {
    out.write(to, at);
    at = out.indexOf(from, at + 1);
  }
  return out;
}

export const alice = { authorization: 'Bearer alice-key' };
export const bob = { authorization: 'Bearer bob-key' };

/** An app with two tenants (alice, bob) and tinyModel uploaded by alice. */
export async function twoTenantApp(
  env: Record<string, string> = {},
): Promise<{ config: Config; app: FastifyInstance; modelId: string }> {
  const config = await testConfig({
    QAAS_API_KEYS: 'alice:alice-key,bob:bob-key',
    QAAS_RATE_LIMIT_MAX: '1000',
    ...env,
  });
  const app = await buildApp(config, { logger: false });
  const body = multipart(filesAsParts(await tinyModel()));
  const res = await app.inject({
    method: 'POST',
    url: '/v1/models',
    payload: body.payload,
    headers: { ...body.headers, ...alice },
  });
  if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
  return { config, app, modelId: res.json().id };
}

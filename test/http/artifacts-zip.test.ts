/**
 * GET /v1/jobs/:id/artifacts.zip over a real socket: the zip holds the artifact files byte for byte, is read
 * from disk only as fast as the client takes it, and a client that goes away or a job deleted mid-download
 * closes every file the stream had open without taking the server down.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, truncate, writeFile } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import type { JobSummary } from '../../src/storage/types.js';
import { alice } from './helpers.js';
import { expectMatchesSpec } from './spec-validator.js';
import { useTwoTenantApp } from './suite.js';

const suite = useTwoTenantApp();
let baseUrl = '';
let downloads = '';
const MiB = 1024 * 1024;

beforeAll(async () => {
  await suite.app.listen({ port: 0, host: '127.0.0.1' });
  baseUrl = `http://127.0.0.1:${(suite.app.server.address() as AddressInfo).port}`;
  downloads = await mkdtemp(join(tmpdir(), 'qaas-zip-'));
});

afterAll(async () => {
  await rm(downloads, { recursive: true, force: true });
});

/** Deterministic bytes that do not compress (sha256 in counter mode), so sizes and offsets are what they say. */
function seededBytes(bytes: number, seed: string): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let offset = 0, block = 0; offset < bytes; offset += 32, block++) {
    const digest = createHash('sha256').update(`${seed}:${block}`).digest();
    out.set(digest.subarray(0, Math.min(32, bytes - offset)), offset);
  }
  return out;
}

/** A succeeded job of alice's whose artifacts are `files`, plus `sparse` files of zeros made without writing them. */
async function succeededJob(files: Map<string, Uint8Array>, sparse: Map<string, number> = new Map()) {
  const { app, modelId } = suite;
  const submitted = await app.inject({
    method: 'POST',
    url: '/v1/jobs',
    payload: { modelId, method: { name: 'affine' } },
    headers: alice,
  });
  expect(submitted.statusCode).toBe(202);
  const id: string = submitted.json().id;
  await app.services.artifacts.write('alice', id, files);
  const dir = app.services.artifacts.dir('alice', id);
  for (const [path, bytes] of sparse) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), '');
    await truncate(join(dir, path), bytes);
  }
  await app.services.lifecycle.start('alice', id, 1);
  const artifacts = [...files.keys(), ...sparse.keys()].sort();
  await app.services.lifecycle.succeed('alice', id, {} as JobSummary, artifacts);
  return { id, dir, artifacts };
}

function download(id: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    get(`${baseUrl}/v1/jobs/${id}/artifacts.zip`, { headers: alice }, resolve).on('error', reject);
  });
}

/** The files the server process holds open under `dir`, with their read offsets (Linux /proc). */
async function openFilesUnder(dir: string): Promise<{ target: string; pos: number }[]> {
  const open: { target: string; pos: number }[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (!target.startsWith(`${dir}/`)) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    open.push({ target, pos: Number(/^pos:\s*(\d+)/m.exec(info)?.[1] ?? -1) });
  }
  return open;
}

/** Polls `read` until it returns the same value five times running (at most ~10 s), and returns that value. */
async function settled<T>(read: () => Promise<T>): Promise<T> {
  let last = JSON.stringify(await read());
  for (let same = 0, polls = 0; same < 5 && polls < 200; polls++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = JSON.stringify(await read());
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return JSON.parse(last) as T;
}

function unzipAll(file: string): Promise<Map<string, { bytes: Buffer; method: number; crc32: number }>> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, validateEntrySizes: true }, (error, zip) => {
      if (error || !zip) return reject(error ?? new Error('no zip'));
      const entries = new Map<string, { bytes: Buffer; method: number; crc32: number }>();
      zip.on('error', reject);
      zip.on('end', () => resolve(entries));
      zip.on('entry', (entry: yauzl.Entry) => {
        zip.openReadStream(entry, (streamError, stream) => {
          if (streamError || !stream) return reject(streamError ?? new Error('no stream'));
          const chunks: Buffer[] = [];
          stream.on('data', (chunk: Buffer) => chunks.push(chunk));
          stream.on('error', reject);
          stream.on('end', () => {
            entries.set(entry.fileName, {
              bytes: Buffer.concat(chunks),
              method: entry.compressionMethod,
              crc32: entry.crc32,
            });
            zip.readEntry();
          });
        });
      });
      zip.readEntry();
    });
  });
}

describe('GET /v1/jobs/:id/artifacts.zip', () => {
  it('streams a zip of every artifact, byte for byte, shards stored and text deflated', async () => {
    const files = new Map<string, Uint8Array>([
      ['model/model.json', new TextEncoder().encode(JSON.stringify({ format: 'layers-model', pad: 'x'.repeat(5000) }))],
      ['model/group1-shard1of2.bin', seededBytes(3 * MiB + 17, 'shard1')],
      ['model/group1-shard2of2.bin', seededBytes(MiB, 'shard2')],
      ['packed/manifest.json', new TextEncoder().encode('{"tensors":[]}')],
      ['packed/weights.bin', seededBytes(123_457, 'packed')],
      ['report.json', new TextEncoder().encode(JSON.stringify({ tensors: Array(200).fill({ mse: 0.001 }) }))],
      ['empty.bin', new Uint8Array(0)],
    ]);
    const { id, artifacts } = await succeededJob(files);
    const res = await download(id);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/zip');
    expect(res.headers['content-disposition']).toBe(`attachment; filename="${id}.zip"`);
    // Deflated entries make the length unknown until the end: chunked, never a guessed Content-Length.
    expect(res.headers['content-length']).toBeUndefined();
    expect(res.headers['transfer-encoding']).toBe('chunked');
    const saved = join(downloads, `${id}.zip`);
    await pipeline(res, createWriteStream(saved));

    const entries = await unzipAll(saved);
    expect([...entries.keys()]).toEqual(artifacts);
    for (const [path, bytes] of files) {
      const entry = entries.get(path)!;
      expect(Buffer.compare(entry.bytes, Buffer.from(bytes)), path).toBe(0);
      // 0: stored, 8: deflated.
      expect(entry.method, path).toBe(path.endsWith('.bin') ? 0 : 8);
      // The CRC-32 the zip records for the entry (yazl's, computed by zlib: src/storage/artifacts.ts).
      expect(entry.crc32, path).toBe(crc32(bytes));
    }
    const inject = await suite.app.inject({ url: `/v1/jobs/${id}/artifacts.zip`, headers: alice });
    expect(Buffer.compare(inject.rawPayload, await readFile(saved))).toBe(0);
  });

  it('answers 409 for a job that has not succeeded', async () => {
    const queued = await suite.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId: suite.modelId, method: { name: 'affine' } },
      headers: alice,
    });
    const url = `/v1/jobs/${queued.json().id}/artifacts.zip`;
    const res = await suite.app.inject({ url, headers: alice });
    expect(res.statusCode).toBe(409);
    expectMatchesSpec('GET', url, res);
  });

  it('reads a shard only as far as a paused client has taken, and closes it when the client goes away', async () => {
    const shardBytes = 64 * MiB;
    const { id, dir } = await succeededJob(
      new Map([['model/model.json', new TextEncoder().encode('{}')]]),
      new Map([['model/group1-shard1of1.bin', shardBytes]]),
    );
    const res = await download(id);
    expect(res.statusCode).toBe(200);
    await new Promise((resolve) => res.once('data', resolve));
    res.pause();
    const open = await settled(() => openFilesUnder(dir));
    expect(open).toHaveLength(1);
    expect(open[0].target).toBe(join(dir, 'model/group1-shard1of1.bin'));
    // Socket buffers and a few stream buffers' worth, not the shard: the zip is not built ahead of the client.
    expect(open[0].pos).toBeGreaterThan(0);
    expect(open[0].pos).toBeLessThan(shardBytes / 2);

    res.destroy();
    expect(await settled(() => openFilesUnder(dir))).toEqual([]);
    const after = await suite.app.inject({ url: `/v1/jobs/${id}`, headers: alice });
    expect(after.json().status).toBe('succeeded');
  });

  it('ends the response early when the files vanish mid-download, and leaves nothing open', async () => {
    const shardBytes = 16 * MiB;
    const { id, dir } = await succeededJob(
      new Map([['report.json', new TextEncoder().encode('{"model":{}}')]]),
      new Map([['model/group1-shard1of1.bin', shardBytes]]),
    );
    const res = await download(id);
    expect(res.statusCode).toBe(200);
    await new Promise((resolve) => res.once('data', resolve));
    res.pause();
    // The open shard stays readable once unlinked; report.json, not yet opened, is gone when its turn comes.
    await suite.app.services.artifacts.remove('alice', id);
    let received = 0;
    const counter = new Writable({
      write(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        done();
      },
    });
    await expect(pipeline(res, counter)).rejects.toThrow(/aborted|socket hang up|ECONNRESET/);
    expect(received).toBeGreaterThan(shardBytes / 2);
    expect(await settled(() => openFilesUnder(dir))).toEqual([]);
    expect((await suite.app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });
});

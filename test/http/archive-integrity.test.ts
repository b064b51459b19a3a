/**
 * Archives whose bytes are not what they say: zip entries whose CRC-32 does not match their data (the CRC
 * fields forged, or a stored entry's data changed under them) are 400, and a truncated `.tar.gz` is 400 with
 * nothing left behind in DATA_DIR/tmp.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/http/app.js';
import type { Config } from '../../src/config.js';
import type { FileSet } from '../../src/model/types.js';
import { cleanup, denseModel, multipart, testConfig, zipOf } from './helpers.js';

let config: Config;
let app: FastifyInstance;
let model: FileSet;

beforeAll(async () => {
  config = await testConfig({ QAAS_RATE_LIMIT_MAX: '100000' });
  app = await buildApp(config, { logger: false });
  // 64·64 + 64 + 64·8 + 8 weights: a shard of 18.5 kB, several chunks of every stream that carries it.
  model = await denseModel([64, 64, 8]);
});

afterAll(async () => {
  await app?.close();
  await cleanup(config);
});

function upload(filename: string, data: Buffer) {
  return app.inject({ method: 'POST', url: '/v1/models', ...multipart([{ filename, data }]) });
}

/** Offsets of each entry's local header and central directory record. */
function entries(zip: Buffer): { local: number; central: number; name: string }[] {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const found = [];
  let at = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < zip.readUInt16LE(eocd + 10); i++) {
    const nameLength = zip.readUInt16LE(at + 28);
    found.push({
      local: zip.readUInt32LE(at + 42),
      central: at,
      name: zip.toString('utf8', at + 46, at + 46 + nameLength),
    });
    at += 46 + nameLength + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return found;
}

async function tmpFiles(): Promise<string[]> {
  return readdir(join(config.dataDir, 'tmp')).catch(() => []);
}

describe('zip CRC-32', () => {
  it('refuses entries whose CRC-32 fields do not match their data', async () => {
    const good = await zipOf([...model]);
    expect((await upload('m.zip', good)).statusCode).toBe(201);
    for (const entry of entries(good)) {
      const forged = Buffer.from(good);
      const crc = forged.readUInt32LE(entry.central + 16);
      forged.writeUInt32LE((crc ^ 0x00010000) >>> 0, entry.central + 16);
      forged.writeUInt32LE((crc ^ 0x00010000) >>> 0, entry.local + 14);
      const res = await upload('m.zip', forged);
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().type).toBe('urn:qaas:problem:invalid-upload');
      expect(res.json().detail).toContain(`${entry.name}: CRC-32`);
    }
  });

  it('refuses a stored (uncompressed) entry whose weight bytes were changed', async () => {
    const stored = await zipOf([...model], { compress: false });
    const shard = entries(stored).find((entry) => entry.name.endsWith('.bin'))!;
    const dataStart = shard.local + 30 + stored.readUInt16LE(shard.local + 26) + stored.readUInt16LE(shard.local + 28);
    const changed = Buffer.from(stored);
    // One weight's low mantissa byte: the model stays valid, only the CRC can tell.
    changed[dataStart + 4000] ^= 0x01;
    const res = await upload('m.zip', changed);
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().detail).toMatch(/group1-shard1of1\.bin: CRC-32 is [0-9a-f]{8}, the archive says [0-9a-f]{8}/);
    expect(await tmpFiles()).toEqual([]);
  });
});

describe('truncated .tar.gz', () => {
  it('is a 400 that leaves no staged file in DATA_DIR/tmp', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qaas-tar-'));
    try {
      await mkdir(join(dir, 'm'));
      // Fresh weights: the zip tests stored `model` already, and the same files again would answer 200.
      for (const [name, data] of await denseModel([64, 64, 8])) await writeFile(join(dir, 'm', name), data);
      await tar.c({ gzip: true, file: join(dir, 'm.tar.gz'), cwd: dir }, ['m']);
      const whole = await readFile(join(dir, 'm.tar.gz'));
      expect((await upload('m.tar.gz', whole)).statusCode).toBe(201);
      const left: Record<string, number> = {};
      for (let cut = 0.05; cut < 1; cut += 0.05) {
        const res = await upload('m.tar.gz', whole.subarray(0, Math.floor(whole.length * cut)));
        expect(res.statusCode, `${cut}: ${res.body}`).toBe(400);
        left[cut.toFixed(2)] = (await tmpFiles()).length;
      }
      console.log('staged files left after each truncated .tar.gz', left);
      expect(Object.values(left).every((count) => count === 0)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

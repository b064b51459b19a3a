import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStore } from '../../src/storage/blobs.js';
import { isSafeRelativePath, listTree, writeTreeAtomically } from '../../src/storage/tree.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-tree-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const bytes = (s: string) => new TextEncoder().encode(s);

describe('writeTreeAtomically', () => {
  it('writes nested files and replaces an existing tree whole', async () => {
    const target = join(dir, 'out');
    await writeTreeAtomically(
      target,
      new Map([
        ['model/model.json', bytes('{"a":1}')],
        ['report.json', bytes('r1')],
        ['old.txt', bytes('x')],
      ]),
    );
    expect(await listTree(target)).toEqual(['model/model.json', 'old.txt', 'report.json']);
    await writeTreeAtomically(
      target,
      new Map([
        ['model/model.json', bytes('{"a":2}')],
        ['report.json', bytes('r2')],
      ]),
    );
    expect(await listTree(target)).toEqual(['model/model.json', 'report.json']);
    expect(await readFile(join(target, 'report.json'), 'utf8')).toBe('r2');
    // No temp or moved-aside siblings left behind.
    expect(await readdir(dir)).toEqual(['out']);
  });

  it('refuses paths that leave the directory and leaves nothing behind', async () => {
    const target = join(dir, 'evil');
    await expect(
      writeTreeAtomically(
        target,
        new Map([
          ['ok.txt', bytes('1')],
          ['../escape.txt', bytes('2')],
        ]),
      ),
    ).rejects.toThrow('unsafe artifact path');
    expect((await readdir(dir)).sort()).toEqual(['out']);
  });

  it('classifies relative paths', () => {
    for (const bad of ['../a', 'a/../../b', '/etc/passwd', 'C:/x', 'a\\..\\b', '', 'a/..'])
      expect(isSafeRelativePath(bad)).toBe(false);
    for (const good of ['a', 'model/model.json', 'a..b/c']) expect(isSafeRelativePath(good)).toBe(true);
  });
});

describe('BlobStore', () => {
  it('addresses by sha256 and stores a stream and bytes identically', async () => {
    const store = new BlobStore(join(dir, 'data'));
    const fromBytes = await store.putBytes(bytes('hello'));
    expect(fromBytes.sha256).toBe('2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
    const fromStream = await store.putStream(Readable.from([Buffer.from('hel'), Buffer.from('lo')]));
    expect(fromStream).toEqual({ sha256: fromBytes.sha256, bytes: 5 });
    expect((await store.read(fromBytes.sha256)).toString()).toBe('hello');
    expect(await readdir(store.tmpDir)).toEqual([]);
  });
});

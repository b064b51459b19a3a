import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArtifactStore } from '../../src/storage/artifacts.js';
import { BlobStore } from '../../src/storage/blobs.js';
import { writeDirAtomically, isSafeRelativePath, listTree, writeTreeAtomically } from '../../src/storage/tree.js';

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

describe('writeDirAtomically', () => {
  it('lets a writer fill the new tree in place while readers still see the old one, then swaps it whole', async () => {
    const target = join(dir, 'filled');
    await writeTreeAtomically(target, new Map([['report.json', bytes('old')]]));
    const result = await writeDirAtomically(target, async (temp) => {
      // The writer is given a path to create, as the streaming engine expects.
      await expect(stat(temp)).rejects.toThrow(/ENOENT/);
      await mkdir(join(temp, 'model'), { recursive: true });
      await writeFile(join(temp, 'model', 'group1-shard1of1.bin'), bytes('shard'));
      await writeFile(join(temp, 'report.json'), bytes('new'));
      // Half-written: the target is still the old tree.
      expect(await listTree(target)).toEqual(['report.json']);
      expect(await readFile(join(target, 'report.json'), 'utf8')).toBe('old');
      return 42;
    });
    expect(result).toBe(42);
    expect(await listTree(target)).toEqual(['model/group1-shard1of1.bin', 'report.json']);
    expect(await readFile(join(target, 'report.json'), 'utf8')).toBe('new');
    expect((await readdir(dir)).filter((name) => name.includes('filled'))).toEqual(['filled']);
  });

  it('keeps the old tree and removes the partial one when the writer throws', async () => {
    const target = join(dir, 'kept');
    await writeTreeAtomically(target, new Map([['report.json', bytes('old')]]));
    await expect(
      writeDirAtomically(target, async (temp) => {
        await mkdir(temp);
        await writeFile(join(temp, 'half.bin'), bytes('x'));
        throw new Error('engine failed');
      }),
    ).rejects.toThrow('engine failed');
    expect(await listTree(target)).toEqual(['report.json']);
    expect((await readdir(dir)).filter((name) => name.includes('kept'))).toEqual(['kept']);
  });

  it('stores a job the writer filled as its artifacts, listing their paths', async () => {
    const store = new ArtifactStore(join(dir, 'data'));
    const { result, paths } = await store.fill('t1', 'job_1', async (temp) => {
      await mkdir(join(temp, 'packed'), { recursive: true });
      await writeFile(join(temp, 'packed', 'manifest.json'), bytes('{}'));
      await writeFile(join(temp, 'report.json'), bytes('{"ok":true}'));
      return 'done';
    });
    expect({ result, paths }).toEqual({ result: 'done', paths: ['packed/manifest.json', 'report.json'] });
    expect(await store.readReport('t1', 'job_1')).toBe('{"ok":true}');
    // An earlier attempt killed mid-write left its temp tree; the next attempt's store removes it.
    const abandoned = join(dir, 'data', 'artifacts', 't1', '.job_1.tmp-dead');
    await mkdir(abandoned, { recursive: true });
    await writeFile(join(abandoned, 'half.bin'), bytes('x'));
    await store.fill('t1', 'job_1', async (temp) => {
      await mkdir(temp);
      await writeFile(join(temp, 'report.json'), bytes('{}'));
    });
    expect(await readdir(join(dir, 'data', 'artifacts', 't1'))).toEqual(['job_1']);
    expect(await store.readReport('t1', 'job_1')).toBe('{}');
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

  it('links blobs into a directory under their paths, sharing their bytes, and refuses paths that leave it', async () => {
    const store = new BlobStore(join(dir, 'linked'));
    const json = await store.putBytes(bytes('{"m":1}'));
    const shard = await store.putBytes(bytes('weights'));
    const linked = await store.linkDir([
      { path: 'model.json', sha256: json.sha256 },
      { path: 'sub/group1-shard1of1.bin', sha256: shard.sha256 },
    ]);
    expect(await listTree(linked)).toEqual(['model.json', 'sub/group1-shard1of1.bin']);
    const [linkedStat, blobStat] = await Promise.all([
      stat(join(linked, 'sub/group1-shard1of1.bin')),
      stat(store.pathOf(shard.sha256)),
    ]);
    expect(linkedStat.ino).toBe(blobStat.ino);
    expect(blobStat.nlink).toBe(2);
    await rm(linked, { recursive: true });
    await expect(store.linkDir([{ path: '../escape', sha256: json.sha256 }])).rejects.toThrow('unsafe path');
    expect(await readdir(store.tmpDir)).toEqual([]);
  });
});

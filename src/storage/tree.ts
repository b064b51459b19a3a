/**
 * Writing a directory of files so that readers see either the old tree or the complete new one, never a
 * partial one: the files go to a sibling temp dir that is then renamed over the target. A worker killed
 * mid-write leaves only a `.tmp-*` sibling, and a retried job replaces the tree once.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { basename, dirname, isAbsolute, join, normalize, sep } from 'node:path';
import type { FileSet } from '../model/types.js';

/** True when `path` is relative and stays inside its root (no `..`, no absolute or drive paths). */
export function isSafeRelativePath(path: string): boolean {
  if (!path || path.includes('\0') || path.includes('\\') || isAbsolute(path) || /^[A-Za-z]:/.test(path)) return false;
  const normal = normalize(path);
  return normal !== '..' && !normal.startsWith(`..${sep}`) && !path.split('/').includes('..');
}

/** A file's bytes, or a function that opens a stream of them (written without holding the file in memory). */
export type TreeFile = Uint8Array | (() => Promise<AsyncIterable<Uint8Array>>);

export function writeTreeAtomically(dir: string, files: FileSet | Map<string, TreeFile>): Promise<void> {
  return writeDirAtomically(dir, async (temp) => {
    await mkdir(temp);
    for (const [path, content] of files) {
      if (!isSafeRelativePath(path)) throw new Error(`unsafe artifact path: ${path}`);
      const target = join(temp, path);
      await mkdir(dirname(target), { recursive: true });
      if (content instanceof Uint8Array) await writeFile(target, content);
      else await pipeline(await content(), createWriteStream(target));
    }
  });
}

/**
 * writeTreeAtomically for files written by `fill` into the directory it is given, one by one as it makes
 * them (the streaming engine): a temp sibling of `dir`, not yet created, that is renamed over `dir` once
 * `fill` resolves and removed when it throws. Returns what `fill` returns.
 */
export async function writeDirAtomically<T>(dir: string, fill: (temp: string) => Promise<T>): Promise<T> {
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  const temp = join(parent, `.${basename(dir)}.tmp-${randomUUID()}`);
  try {
    const result = await fill(temp);
    await replaceDir(temp, dir);
    return result;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/** rename(2) replaces only an empty directory; a full one is moved aside first and removed after. */
async function replaceDir(source: string, target: string): Promise<void> {
  try {
    await rename(source, target);
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
  }
  const old = join(dirname(target), `.${basename(target)}.old-${randomUUID()}`);
  await rename(target, old);
  await rename(source, target);
  await rm(old, { recursive: true, force: true });
}

/** Every file under `dir`, as `/`-separated relative paths, sorted. */
export async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) =>
      join(entry.parentPath, entry.name)
        .slice(dir.length + 1)
        .split(sep)
        .join('/'),
    )
    .sort();
}

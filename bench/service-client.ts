/**
 * What the service benches share: a multipart model upload streamed from disk, and a process's RSS from /proc,
 * as a peak over a stretch of work (VmHWM reset through clear_refs where the kernel lets us, and VmRSS
 * sampled), so a bench measures the server's memory without holding the payload itself.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';

/** POSTs the files as multipart/form-data parts, streamed from disk with a known Content-Length. */
export async function streamUpload(
  url: string,
  dir: string,
  names: string[],
): Promise<{ status: number; body: string }> {
  const boundary = `----qaasbench${randomUUID()}`;
  const heads = names.map((name) =>
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
  );
  const tail = Buffer.from(`--${boundary}--\r\n`);
  let length = tail.length;
  for (const [i, name] of names.entries()) length += heads[i].length + (await stat(join(dir, name))).size + 2;
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v1/models`,
      {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': length },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    (async () => {
      for (const [i, name] of names.entries()) {
        if (!req.write(heads[i])) await new Promise((r) => req.once('drain', r));
        for await (const chunk of createReadStream(join(dir, name))) {
          if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        }
        req.write('\r\n');
      }
      req.end(tail);
    })().catch(reject);
  });
}

export function procStatus(pid: number): Promise<Record<string, number>> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((text) => {
    const out: Record<string, number> = {};
    for (const match of text.matchAll(/^(VmRSS|VmHWM):\s+(\d+) kB$/gm)) out[match[1]] = Number(match[2]) * 1024;
    return out;
  });
}

/** The processes whose parent is `pid`, and theirs (/proc/<pid>/task/<tid>/children, every thread's). */
export async function descendants(pid: number): Promise<number[]> {
  const found: number[] = [];
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => []);
  for (const task of tasks) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of text.split(' ').filter(Boolean).map(Number)) found.push(child, ...(await descendants(child)));
  }
  return found;
}

export interface PeakRss {
  /** VmRSS when the stretch began (0 for a process born during it). */
  before: number;
  /** The most it held during the stretch. */
  peak: number;
}

/**
 * Each process's peak RSS while `work` runs, for the processes `pids()` lists (polled every `everyMs`, so a
 * child forked for the work is found too): VmHWM, which the kernel keeps exactly, reset first through
 * /proc/<pid>/clear_refs for the processes already running (a child born during the work has its own fresh
 * one), read at every poll while the process lives; and VmRSS at every poll, for when the reset is refused.
 */
export async function measurePeakRss<T>(
  pids: () => Promise<number[]>,
  work: () => Promise<T>,
  everyMs = 20,
): Promise<{ result: T; rss: Map<number, PeakRss> }> {
  const rss = new Map<number, PeakRss>();
  const trusted = new Set<number>();
  for (const pid of await pids()) {
    const status = await procStatus(pid).catch(() => null);
    if (!status) continue;
    rss.set(pid, { before: status.VmRSS, peak: status.VmRSS });
    const reset = await writeFile(`/proc/${pid}/clear_refs`, '5').then(
      () => true,
      () => false,
    );
    if (reset) trusted.add(pid);
  }
  const poll = async () => {
    for (const pid of await pids().catch(() => [])) {
      const status = await procStatus(pid).catch(() => null);
      if (!status) continue;
      let entry = rss.get(pid);
      if (!entry) {
        entry = { before: 0, peak: 0 };
        rss.set(pid, entry);
        trusted.add(pid);
      }
      entry.peak = Math.max(entry.peak, status.VmRSS, trusted.has(pid) ? status.VmHWM : 0);
    }
  };
  // A poll slower than the interval (a loaded machine) skips the ticks it overlaps instead of queueing them.
  let polling: Promise<void> | null = null;
  const timer = setInterval(() => {
    polling ??= poll().finally(() => (polling = null));
  }, everyMs);
  try {
    const result = await work();
    clearInterval(timer);
    await polling;
    await poll();
    return { result, rss };
  } finally {
    clearInterval(timer);
  }
}

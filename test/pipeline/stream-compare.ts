import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModelDir } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import { streamQuantize } from '../../src/pipeline/stream.js';

/**
 * The streaming path (src/pipeline/stream.ts) against the in-memory one (runJob, what the CLI and the worker
 * run when streaming refuses a job) on one model directory and spec: test/pipeline/stream*.test.ts.
 */

export async function inMemory(modelDir: string, raw: Record<string, unknown>): Promise<FileSet> {
  const { files } = await runJob(await readModelDir(modelDir), parseJobSpec(raw), {}, { backend: 'cpu' });
  return files;
}

export async function readTree(root: string): Promise<FileSet> {
  const files: FileSet = new Map();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    files.set(full.slice(root.length + 1), new Uint8Array(await readFile(full)));
  }
  return files;
}

/** The streamed artifacts, written into a fresh directory under `outRoot`. */
export async function streamedInto(
  outRoot: string,
  modelDir: string,
  raw: Record<string, unknown>,
  threads?: number,
): Promise<FileSet> {
  const out = join(await mkdtemp(join(outRoot, 'streamed-')), 'out');
  await streamQuantize(modelDir, parseJobSpec(raw), out, { threads });
  return readTree(out);
}

/**
 * report.json with the fields that are inherently different replaced: `timings` (what was timed differs
 * between the two flows: streaming adds readMs, in-memory has ptqMs) and `model.backend` (the in-memory path
 * names the tfjs backend it loaded; streaming loads none and says `none`). Everything else, key order
 * included, must be the same text.
 */
export function normalisedReport(bytes: Uint8Array): string {
  const report = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown> & {
    model: Record<string, unknown>;
  };
  report.timings = 'differs';
  report.model.backend = 'differs';
  return JSON.stringify(report, null, 2);
}

/**
 * Every artifact byte for byte and report.json but for timings and backend, streamed on each of
 * `threadCounts` (undefined: the engine's own choice, the main thread for models this small). Returns the
 * in-memory artifacts.
 */
export async function expectStreamedAsInMemory(
  outRoot: string,
  modelDir: string,
  raw: Record<string, unknown>,
  threadCounts: (number | undefined)[],
): Promise<FileSet> {
  const expected = await inMemory(modelDir, raw);
  for (const threads of threadCounts) {
    const actual = await streamedInto(outRoot, modelDir, raw, threads);
    expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [path, bytes] of expected) {
      if (path === 'report.json') continue;
      expect(Buffer.compare(Buffer.from(actual.get(path)!), Buffer.from(bytes)), `${path}, threads ${threads}`).toBe(0);
    }
    expect(normalisedReport(actual.get('report.json')!)).toBe(normalisedReport(expected.get('report.json')!));
    const report = JSON.parse(new TextDecoder().decode(actual.get('report.json')!)) as {
      model: { backend: string };
      timings: Record<string, number>;
    };
    // The streaming engine wrote it: it loads no tfjs backend and times its reads.
    expect(report.model.backend).toBe('none');
    expect(Object.keys(report.timings)).toEqual(['quantizeMs', 'writeMs', 'packMs', 'reportMs', 'totalMs', 'readMs']);
  }
  return expected;
}

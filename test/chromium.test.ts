/**
 * How `npm test` finds or installs the dashboard tests' browser (test/chromium.ts), on PATHs built for each case:
 * an empty one (a fresh machine without Chromium), one holding a chromium, and one whose apt-get installs it.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CHROMIUM_ENV, ChromiumUnavailableError, ensureChromium, locateChromium } from './chromium.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qaas-chromium-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function script(path: string, body: string): Promise<string> {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

describe('locateChromium', () => {
  it('finds nothing on an empty PATH with no fallback paths', () => {
    expect(locateChromium({ env: { PATH: dir }, absolute: [] })).toBeNull();
  });

  it('takes chromium before chromium-browser, in PATH order, and skips files that are not executable', async () => {
    const first = join(dir, 'a');
    const second = join(dir, 'b');
    await mkdir(first);
    await mkdir(second);
    await writeFile(join(first, 'chromium'), 'not executable');
    const browser = await script(join(first, 'chromium-browser'), 'exit 0');
    expect(locateChromium({ env: { PATH: `${first}:${second}` }, absolute: [] })).toBe(browser);
    const chromium = await script(join(second, 'chromium'), 'exit 0');
    expect(locateChromium({ env: { PATH: `${first}:${second}` }, absolute: [] })).toBe(chromium);
  });

  it('falls back to the absolute paths when PATH has none', async () => {
    const fallback = await script(join(dir, 'chrome'), 'exit 0');
    expect(locateChromium({ env: { PATH: '' }, absolute: [join(dir, 'missing'), fallback] })).toBe(fallback);
  });

  it(`prefers ${CHROMIUM_ENV}, and refuses one that is not an executable file`, async () => {
    const chosen = await script(join(dir, 'my-chrome'), 'exit 0');
    await script(join(dir, 'chromium'), 'exit 0');
    expect(locateChromium({ env: { PATH: dir, [CHROMIUM_ENV]: chosen }, absolute: [] })).toBe(chosen);
    expect(() => locateChromium({ env: { PATH: dir, [CHROMIUM_ENV]: join(dir, 'nope') }, absolute: [] })).toThrow(
      `${CHROMIUM_ENV}=${join(dir, 'nope')} is not an executable file`,
    );
  });
});

describe('ensureChromium', () => {
  it('says what to do when there is none and it may not install one', async () => {
    const attempt = (uid: number) => () => ensureChromium({ env: { PATH: dir }, absolute: [], uid, log: () => {} });
    expect(attempt(1000)).toThrow(ChromiumUnavailableError);
    expect(attempt(1000)).toThrow(
      `the dashboard tests need Chromium and none was found (not running as root, so it was not installed): install it (Debian/Ubuntu: \`apt-get install chromium\`) or set ${CHROMIUM_ENV}`,
    );
    expect(attempt(0)).toThrow('(apt-get is not on PATH, so it was not installed)');
  });

  it('as root, installs chromium with apt-get update + install and returns the installed executable', async () => {
    // An apt-get that records its arguments and "installs" a chromium into the same PATH directory.
    const calls = join(dir, 'calls');
    await script(
      join(dir, 'apt-get'),
      `echo "$DEBIAN_FRONTEND $*" >> ${calls}\n[ "$1" = install ] && printf '#!/bin/sh\\n' > ${dir}/chromium && /bin/chmod +x ${dir}/chromium\nexit 0`,
    );
    const lines: string[] = [];
    const path = ensureChromium({
      env: { PATH: dir },
      absolute: [],
      uid: 0,
      log: (l) => lines.push(l),
    });
    expect(path).toBe(join(dir, 'chromium'));
    expect((await readFile(calls, 'utf8')).trim().split('\n')).toEqual([
      'noninteractive update -qq',
      'noninteractive install -y -qq chromium',
    ]);
    expect(lines[lines.length - 1]).toBe(`test setup: using ${path}`);
  });

  it('reports a failing apt-get with its last error lines', async () => {
    await script(join(dir, 'apt-get'), 'echo "E: Could not resolve deb.debian.org" >&2\nexit 100');
    expect(() => ensureChromium({ env: { PATH: dir }, absolute: [], uid: 0, log: () => {} })).toThrow(
      '`apt-get update -qq` failed (E: Could not resolve deb.debian.org): install it',
    );
  });
});

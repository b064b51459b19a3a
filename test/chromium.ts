/**
 * The browser the dashboard's tests drive, found or installed by `npm test` itself so the README's test command
 * passes on a fresh machine. Debian's chromium is used rather than playwright's own download, which needs a CDN
 * this kind of machine does not reach; on Debian running as root, a missing chromium is installed with apt-get.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** The environment variable that names the browser to use, overriding the search. */
export const CHROMIUM_ENV = 'QAAS_CHROMIUM';

/** Executable names searched on PATH, in order: Debian's, then Ubuntu's and Fedora's. */
const NAMES = ['chromium', 'chromium-browser'];
/** Where Debian's package puts it, for a PATH that lacks /usr/bin. */
const ABSOLUTE = ['/usr/bin/chromium'];

export interface LocateOptions {
  env?: NodeJS.ProcessEnv;
  /** Absolute paths tried after PATH; a test passes [] to see the search fail. */
  absolute?: string[];
}

export class ChromiumUnavailableError extends Error {
  override name = 'ChromiumUnavailableError';
}

function executable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The chromium to drive: `$QAAS_CHROMIUM` (which must be executable), else the first found; null when none. */
export function locateChromium({ env = process.env, absolute = ABSOLUTE }: LocateOptions = {}): string | null {
  const override = env[CHROMIUM_ENV];
  if (override) {
    if (!isAbsolute(override) || !executable(override)) {
      throw new ChromiumUnavailableError(
        `${CHROMIUM_ENV}=${override} is not an executable file (give its absolute path)`,
      );
    }
    return override;
  }
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const name of NAMES) {
    for (const dir of dirs) if (executable(join(dir, name))) return join(dir, name);
  }
  return absolute.find(executable) ?? null;
}

export interface EnsureOptions extends LocateOptions {
  /** The effective user id; only root may install packages. */
  uid?: number;
  /** Where progress lines go. */
  log?: (line: string) => void;
}

/**
 * The chromium to drive, installing Debian's package with apt-get when none is found and this process is root.
 * Throws ChromiumUnavailableError with what to do when there is none and it cannot install one.
 */
export function ensureChromium(options: EnsureOptions = {}): string {
  const {
    env = process.env,
    uid = process.getuid?.() ?? -1,
    log = (line) => process.stderr.write(`${line}\n`),
  } = options;
  const found = locateChromium(options);
  if (found) return found;
  const advice = `install it (Debian/Ubuntu: \`apt-get install chromium\`) or set ${CHROMIUM_ENV} to a Chromium or Chrome executable`;
  const hasAptGet = (env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .some((dir) => executable(join(dir, 'apt-get')));
  if (uid !== 0 || !hasAptGet) {
    const why = uid !== 0 ? 'not running as root' : 'apt-get is not on PATH';
    throw new ChromiumUnavailableError(
      `the dashboard tests need Chromium and none was found (${why}, so it was not installed): ${advice}`,
    );
  }
  log('test setup: no chromium found; installing Debian’s chromium with apt-get (once per machine)…');
  const apt = (args: string[]) =>
    spawnSync('apt-get', args, {
      env: { ...env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: ['ignore', 'ignore', 'pipe'],
      encoding: 'utf8',
    });
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', 'chromium'],
  ]) {
    const run = apt(args);
    if (run.status !== 0) {
      const detail = (run.stderr || run.error?.message || `exit ${run.status}`)
        .trim()
        .split('\n')
        .slice(-3)
        .join(' | ');
      throw new ChromiumUnavailableError(`\`apt-get ${args.join(' ')}\` failed (${detail}): ${advice}`);
    }
  }
  const installed = locateChromium(options);
  if (!installed) throw new ChromiumUnavailableError(`apt-get installed chromium but it is not on PATH: ${advice}`);
  log(`test setup: using ${installed}`);
  return installed;
}

#!/usr/bin/env node
/**
 * The `qaas` executable. It turns on Node's module compile cache before anything else is loaded, then runs
 * the command line (cli/main.ts). The cache keeps V8's compiled code of every module the CLI loads (TypeBox
 * alone is ~250 of them), so a later start skips compiling them. ESM loads a module's static imports before
 * its body runs, so the commands are imported only once the cache is on.
 */
import { enableCompileCache } from 'node:module';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/**
 * Where the cache lives: NODE_COMPILE_CACHE when set (Node then enabled it already, and this call changes
 * nothing), else the user's cache directory. A cache that cannot be written is skipped without a word:
 * enableCompileCache reports failure in its result, never by throwing.
 */
function compileCacheDir(): string | undefined {
  if (process.env.NODE_COMPILE_CACHE) return undefined;
  const { XDG_CACHE_HOME, LOCALAPPDATA } = process.env;
  if (process.platform === 'win32' && LOCALAPPDATA) return join(LOCALAPPDATA, 'qaas', 'compile-cache');
  try {
    const home = homedir();
    if (process.platform === 'darwin') return join(home, 'Library', 'Caches', 'qaas', 'compile-cache');
    // XDG: a relative XDG_CACHE_HOME is to be ignored.
    const cacheHome = XDG_CACHE_HOME && isAbsolute(XDG_CACHE_HOME) ? XDG_CACHE_HOME : join(home, '.cache');
    return join(cacheHome, 'qaas', 'compile-cache');
  } catch {
    // No home directory (homedir throws for a user without one): Node's default, under the temp directory.
    return undefined;
  }
}

enableCompileCache(compileCacheDir());

// Not a top-level await: a command whose work ends while a promise is still pending exits with its exit code
// as before, not with 13 and a warning about an unsettled top-level await.
void import('./cli/main.js').then(({ run }) => run(process.argv.slice(2)));

/** The package version, read once from package.json (two levels up from both src/ and dist/src/). */
import { readFileSync } from 'node:fs';

function findPackageJson(): { version: string } {
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      return JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { version: string };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new Error('package.json not found beside src/ or dist/src/');
}

export const packageVersion: string = findPackageJson().version;

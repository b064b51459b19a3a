/**
 * The three files of a `.keras` archive (a zip) read from bytes in memory, for callers that hold the file
 * whole (the CLI's local models). Uploads do not come through here: the service expands a `.keras` like
 * any zip, streamed to disk under its upload limits (src/http/upload.ts). Only the entries a model needs
 * are inflated, each refused past `maxEntryBytes` (sizes are checked as bytes arrive, since a zip's
 * declared sizes can lie).
 */
import yauzl from 'yauzl';
import { ModelError } from '../errors.js';
import { KERAS_ARCHIVE_FILES, type KerasArchiveFiles } from './convert.js';

export const DEFAULT_MAX_ENTRY_BYTES = 1 << 30;

const wanted = new Set<string>(KERAS_ARCHIVE_FILES);

function openZip(bytes: Uint8Array): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      { lazyEntries: true, validateEntrySizes: true },
      (error, zip) => (error || !zip ? reject(error ?? new Error('no zip')) : resolve(zip)),
    );
  });
}

function inflate(zip: yauzl.ZipFile, entry: yauzl.Entry, maxBytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (error, stream) => {
      if (error || !stream) return reject(error ?? new Error('no stream'));
      const chunks: Buffer[] = [];
      let total = 0;
      stream.on('data', (chunk: Buffer) => {
        total += chunk.length;
        if (total > maxBytes) {
          stream.destroy(new Error(`${entry.fileName} expands beyond ${maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      stream.on('error', reject);
      stream.on('end', () => resolve(new Uint8Array(Buffer.concat(chunks))));
    });
  });
}

export async function readKerasArchive(
  bytes: Uint8Array,
  label = 'the .keras archive',
  maxEntryBytes = DEFAULT_MAX_ENTRY_BYTES,
): Promise<KerasArchiveFiles> {
  let zip: yauzl.ZipFile;
  try {
    zip = await openZip(bytes);
  } catch (error) {
    throw new ModelError('malformed-file', `${label} is not a readable zip: ${(error as Error).message}`, {
      file: label,
    });
  }
  const found = new Map<string, Uint8Array>();
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('error', reject);
      zip.on('end', () => resolve());
      zip.on('entry', (entry: yauzl.Entry) => {
        if (!wanted.has(entry.fileName)) return zip.readEntry();
        inflate(zip, entry, maxEntryBytes).then((data) => {
          found.set(entry.fileName, data);
          zip.readEntry();
        }, reject);
      });
      zip.readEntry();
    });
  } catch (error) {
    throw new ModelError('malformed-file', `${label}: ${(error as Error).message}`, { file: label });
  } finally {
    zip.close();
  }
  const missing = KERAS_ARCHIVE_FILES.filter((name) => !found.has(name));
  if (missing.length > 0) {
    throw new ModelError('missing-file', `${label} has no ${missing.join(', ')}: not a Keras 3 model archive`, {
      file: missing[0],
    });
  }
  return Object.fromEntries(found) as unknown as KerasArchiveFiles;
}

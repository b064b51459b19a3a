/**
 * Reading multipart uploads into a validated file set without buffering a file in memory: plain parts
 * stream to a staged file in DATA_DIR/tmp (hashed while they stream); `.zip` (yauzl) and `.tar.gz` (tar)
 * parts stream to disk too and are then expanded entry by entry, each entry streamed to its own staged
 * file, under the upload limits (per-file and total bytes, file count, expansion ratio), refusing entries
 * that point outside the archive. Nothing reaches the blob store until the caller has validated the staged
 * files and calls `commit`.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, rm, mkdir } from 'node:fs/promises';
import { dirname, posix } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32, createGunzip } from 'node:zlib';
import type { MultipartFile } from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import { Parser as TarParser, type ReadEntry } from 'tar';
import yauzl from 'yauzl';
import type { Config } from '../config.js';
import type { BlobStore } from '../storage/blobs.js';
import { isSafeRelativePath } from '../storage/tree.js';
import { ApiProblem } from './errors.js';

type Limits = Config['upload'];

/** A text field's largest value (`labels` at its limits is under 20 KiB): fields are held in memory. */
export const maxFieldBytes = 64 * 1024;

/** One uploaded file, staged on disk. */
export interface UploadedFile {
  /** Path inside the upload (archive entry path or the part's file name). */
  path: string;
  /** Multipart field name (`x`, `y` for datasets). */
  field: string;
  sha256: string;
  bytes: number;
  stagedPath: string;
}

export class Upload {
  readonly files: UploadedFile[] = [];
  /** The text fields (not files) by name, in the order sent: `name` and `labels` (jobs/metadata.ts). */
  readonly fields = new Map<string, string[]>();
  totalBytes = 0;
  private readonly staged: string[] = [];

  constructor(
    private readonly blobs: BlobStore,
    private readonly limits: Limits,
  ) {}

  /** The whole file in memory: for small documents (dataset JSON, .npy headers), never for model shards. */
  async contents(file: UploadedFile): Promise<Buffer> {
    return readFile(file.stagedPath);
  }

  /** Moves `files` (by default all) into the blob store; `discard` then removes whatever is left staged. */
  async commit(files: UploadedFile[] = this.files): Promise<void> {
    const done = new Set<string>();
    for (const file of files) {
      if (done.has(file.sha256)) continue;
      done.add(file.sha256);
      const target = this.blobs.pathOf(file.sha256);
      await mkdir(dirname(target), { recursive: true });
      await rename(file.stagedPath, target);
    }
  }

  async discard(): Promise<void> {
    await Promise.allSettled(this.staged.map((path) => rm(path, { force: true })));
  }

  /** Streams one multipart file part to a staged file, counting it against the limits. */
  async stagePart(part: MultipartFile): Promise<{ stagedPath: string; sha256: string; bytes: number }> {
    const limits = this.limits;
    // A part's stream fails (maybe before we listen: see `errored`) when the body is not a whole multipart document.
    let bodyError: unknown = null;
    part.file.once('error', (error) => (bodyError = error));
    // busboy would read (and drop) the rest of an oversized part before ending its stream: answer now.
    const tooLarge = new ApiProblem(
      'upload-too-large',
      `${part.filename} exceeds the ${limits.maxFileBytes}-byte file limit`,
    );
    part.file.once('limit', () => part.file.destroy(tooLarge));
    const staged = await this.stage(part.file, (chunkBytes) => {
      this.totalBytes += chunkBytes;
      return this.totalBytes > limits.maxTotalBytes
        ? new ApiProblem('upload-too-large', `the upload exceeds ${limits.maxTotalBytes} bytes in total`)
        : null;
    }).catch((error: unknown) => {
      throw bodyError === null && !part.file.errored ? error : malformedBody(error);
    });
    if (part.file.truncated) {
      throw new ApiProblem('upload-too-large', `${part.filename} exceeds the ${limits.maxFileBytes}-byte file limit`);
    }
    return staged;
  }

  /**
   * Streams `source` to a new staged file, hashing it; `overLimit(chunk's bytes, file's bytes so far)`
   * sees every chunk and returns the problem to abort with once a limit is passed.
   */
  private async stage(
    source: Readable,
    overLimit: (chunkBytes: number, bytes: number) => ApiProblem | null,
  ): Promise<{ stagedPath: string; sha256: string; bytes: number }> {
    const path = await this.blobs.tempPath();
    this.staged.push(path);
    const hash = createHash('sha256');
    let bytes = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        bytes += chunk.length;
        const problem = overLimit(chunk.length, bytes);
        if (problem) {
          done(problem);
          return;
        }
        hash.update(chunk);
        done(null, chunk);
      },
    });
    await pipeline(source, meter, createWriteStream(path));
    return { stagedPath: path, sha256: hash.digest('hex'), bytes };
  }

  async addPart(part: MultipartFile): Promise<void> {
    const name = part.filename || part.fieldname;
    const staged = await this.stagePart(part);
    // A Keras 3 `.keras` is a zip (config.json, metadata.json, model.weights.h5): the same limits apply.
    if (/\.(zip|keras)$/i.test(name)) {
      await this.expand(name, staged.bytes, (onEntry) => readZip(staged.stagedPath, onEntry));
    } else if (/\.(tar\.gz|tgz)$/i.test(name)) {
      await this.expand(name, staged.bytes, (onEntry) => readTarGz(staged.stagedPath, onEntry));
    } else {
      this.addFile({ path: posix.basename(name), field: part.fieldname, ...staged });
    }
  }

  private addFile(file: UploadedFile): void {
    if (this.files.length >= this.limits.maxFiles) {
      throw new ApiProblem('upload-too-large', `more than ${this.limits.maxFiles} files`);
    }
    this.files.push(file);
  }

  private async expand(
    archiveName: string,
    archiveBytes: number,
    read: (onEntry: (path: string, declaredBytes: number, stream: Readable) => Promise<void>) => Promise<void>,
  ): Promise<void> {
    const maxExpanded = Math.min(this.limits.maxTotalBytes, archiveBytes * this.limits.maxExpansionRatio);
    let expanded = 0;
    await read(async (path, declaredBytes, stream) => {
      // A refused entry's stream is left unread: the archive readers destroy or drain it.
      if (!isSafeRelativePath(path)) {
        throw new ApiProblem(
          'unsafe-archive-entry',
          `${archiveName}: entry "${path}" is absolute or leaves the archive`,
        );
      }
      const tooBig = () =>
        new ApiProblem(
          'upload-too-large',
          `${archiveName} expands beyond ${maxExpanded} bytes (limit: ${this.limits.maxExpansionRatio}× its size, ${this.limits.maxTotalBytes} in total)`,
        );
      if (declaredBytes > this.limits.maxFileBytes || expanded + declaredBytes > maxExpanded) throw tooBig();
      const staged = await this.stage(stream, (chunkBytes, bytes) => {
        // Declared sizes can lie; the bytes actually produced are what count.
        expanded += chunkBytes;
        return bytes > this.limits.maxFileBytes || expanded > maxExpanded ? tooBig() : null;
      });
      this.addFile({ path, field: 'archive', ...staged });
    });
  }
}

function readZip(
  file: string,
  onEntry: (path: string, declaredBytes: number, stream: Readable) => Promise<void>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.open(
      file,
      { lazyEntries: true, decodeStrings: true, validateEntrySizes: true, strictFileNames: false },
      (openError, zip) => {
        if (openError || !zip) {
          reject(new ApiProblem('invalid-upload', `not a readable zip archive: ${openError?.message ?? 'unknown'}`));
          return;
        }
        let settled = false;
        const fail = (error: unknown) => {
          if (settled) return;
          settled = true;
          zip.close();
          const message = (error as Error).message;
          // yauzl refuses `..` and absolute names itself, before we see the entry.
          if (/invalid relative path|absolute path/i.test(message)) {
            reject(new ApiProblem('unsafe-archive-entry', `zip entry refused: ${message}`));
            return;
          }
          reject(error instanceof ApiProblem ? error : new ApiProblem('invalid-upload', `bad zip archive: ${message}`));
        };
        zip.on('error', fail);
        zip.on('end', () => {
          settled = true;
          resolve();
        });
        zip.on('entry', (entry: yauzl.Entry) => {
          if (entry.fileName.endsWith('/')) {
            zip.readEntry();
            return;
          }
          if (/(^|\/)\.\.(\/|$)/.test(entry.fileName) || entry.fileName.startsWith('/')) {
            fail(
              new ApiProblem('unsafe-archive-entry', `zip entry "${entry.fileName}" is absolute or leaves the archive`),
            );
            return;
          }
          zip.openReadStream(entry, (streamError, stream) => {
            if (streamError || !stream) return fail(streamError);
            // yauzl reports a size that lies or bad deflate data by emitting 'error' on the entry stream, even
            // on one nobody reads (it checks the byte count as inflate ends) and before anyone reads it; unheard,
            // that ends the process, and a plain emit leaves a later reader waiting forever. Piped into the CRC
            // check, every error destroys what onEntry reads, whenever it comes; once onEntry has consumed or
            // refused the entry, the check is destroyed and the pipeline with it.
            const entryStream = crcChecked(entry);
            let entryError: Error | null = null;
            stream.on('error', (error: Error) => (entryError ??= error));
            pipeline(stream, entryStream).catch(() => undefined);
            onEntry(entry.fileName, entry.uncompressedSize, entryStream)
              .then(() => {
                if (entryError) throw entryError;
                zip.readEntry();
              })
              .catch(fail)
              .finally(() => entryStream.destroy());
          });
        });
        zip.readEntry();
      },
    );
  });
}

/**
 * A pass-through that fails at the end of an entry whose bytes do not hash to the CRC-32 its zip headers
 * give (yauzl checks sizes, not CRCs): a damaged or tampered archive is refused, not stored.
 */
function crcChecked(entry: yauzl.Entry): Transform {
  let crc = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      crc = crc32(chunk, crc);
      done(null, chunk);
    },
    flush(done) {
      const hex = (value: number) => (value >>> 0).toString(16).padStart(8, '0');
      done(
        crc >>> 0 === entry.crc32 >>> 0
          ? null
          : new ApiProblem(
              'invalid-upload',
              `${entry.fileName}: CRC-32 is ${hex(crc)}, the archive says ${hex(entry.crc32)}: the zip is damaged`,
            ),
      );
    },
  });
}

async function readTarGz(
  file: string,
  onEntry: (path: string, declaredBytes: number, stream: Readable) => Promise<void>,
): Promise<void> {
  const parser = new TarParser({ strict: true });
  let failure: unknown = null;
  const pending: Promise<void>[] = [];
  const reading = new Set<Readable>();
  parser.on('entry', (entry: ReadEntry) => {
    if (failure !== null || entry.type === 'Directory') return entry.resume();
    if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
      failure = new ApiProblem(
        'unsafe-archive-entry',
        `tar entry "${entry.path}" is a ${entry.type}, only files are allowed`,
      );
      return entry.resume();
    }
    // ReadEntry is a minipass stream; a node Readable over it lets onEntry treat both archive kinds alike.
    const stream = Readable.from(entry as AsyncIterable<Buffer>);
    // Its errors reach onEntry through the pipeline that reads it; one emitted when no pipeline listens any
    // more (onEntry refused the entry first, or the destroy below) must not become an uncaught exception.
    stream.on('error', () => undefined);
    reading.add(stream);
    pending.push(
      onEntry(entry.path.replace(/^\.\//, ''), entry.size ?? 0, stream)
        .catch((error) => {
          failure ??= error;
          entry.resume();
        })
        .finally(() => reading.delete(stream)),
    );
  });
  const done = new Promise<void>((resolve, reject) => {
    parser.on('end', () => resolve());
    parser.on('error', reject);
    parser.on('abort', reject);
  });
  const source = createReadStream(file).pipe(createGunzip());
  source.on('error', (error) => parser.emit('error', error));
  source.pipe(parser as unknown as Writable);
  try {
    await done;
  } catch (error) {
    failure ??= new ApiProblem('invalid-upload', `not a readable .tar.gz archive: ${(error as Error).message}`);
    // A truncated archive ends mid-entry: that entry's stream would never end, and the file it is being
    // staged to would outlive the upload's discard. Ending it first lets every staging settle.
    for (const stream of reading) stream.destroy(failure as Error);
  }
  await Promise.all(pending);
  if (failure !== null) throw failure;
}

/**
 * What the multipart parser (or a part's stream) throws for a body that is not a whole multipart document:
 * a 400. Its limit errors (413) are Fastify errors with their own status and pass through as they are.
 */
function malformedBody(error: unknown): unknown {
  if (error instanceof ApiProblem) return error;
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return error;
  return new ApiProblem('invalid-request', `malformed multipart body: ${(error as Error)?.message ?? String(error)}`);
}

/** RFC 2046 §5.1.1: 1–70 characters from a small set, quoted when they include a space or other specials. */
const boundaryPattern =
  /;\s*boundary=(?:"([0-9A-Za-z'()+_,\-./:=? ]{1,70})"|([0-9A-Za-z'()+_,\-./:=?]{1,70}))\s*(?:;|$)/i;

function checkBoundary(contentType: string | undefined): void {
  if (contentType && boundaryPattern.test(contentType)) return;
  const given = /;\s*boundary=/i.test(contentType ?? '');
  throw new ApiProblem(
    'invalid-request',
    given
      ? "the multipart boundary must be 1–70 characters of letters, digits and '()+_,-./:=? (RFC 2046)"
      : 'multipart/form-data needs a boundary parameter (RFC 2046)',
  );
}

/** Room for one part's boundary and headers beside its bytes. */
const multipartOverheadBytes = 1024;

/** Collects every file part of a multipart request into an Upload; any failure discards what was staged. */
export async function receiveUpload(request: FastifyRequest, blobs: BlobStore, limits: Limits): Promise<Upload> {
  if (!request.isMultipart()) {
    throw new ApiProblem('unsupported-media-type', 'send multipart/form-data with the files as parts');
  }
  checkBoundary(request.headers['content-type']);
  // A declared length over what the limits can ever take is refused before a byte of the body is read.
  const declared = Number(request.headers['content-length']);
  const largest = limits.maxTotalBytes + (limits.maxFiles + 20) * multipartOverheadBytes;
  if (declared > largest) {
    throw new ApiProblem(
      'upload-too-large',
      `the body is ${declared} bytes; uploads take at most ${limits.maxTotalBytes}`,
    );
  }
  const upload = new Upload(blobs, limits);
  try {
    const parts = request.parts();
    for (;;) {
      const next = await parts.next().catch((error: unknown) => {
        throw malformedBody(error);
      });
      if (next.done) break;
      const part = next.value;
      if (part.type === 'file') {
        await upload.addPart(part);
      } else {
        if (part.valueTruncated) {
          throw new ApiProblem('upload-too-large', `field ${part.fieldname} exceeds ${maxFieldBytes} bytes`);
        }
        upload.fields.set(part.fieldname, [...(upload.fields.get(part.fieldname) ?? []), String(part.value)]);
      }
    }
    return upload;
  } catch (error) {
    await upload.discard();
    throw error;
  }
}

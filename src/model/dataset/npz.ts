/**
 * NumPy `.npz` archives (`np.savez` / `np.savez_compressed`: a zip of `.npy` files, stored or deflated),
 * read with yauzl without extracting them. Which arrays are the dataset: `x.npy` and, if present, `y.npy`;
 * an archive without an `x.npy` (e.g. `np.savez(f, images, labels)` → `arr_0.npy`, `arr_1.npy`) gives its
 * first array as x and its second, if any, as y, in archive order — more than two unnamed arrays is
 * ambiguous and refused. An archive of named arrays without an `x.npy` (`np.savez(f, tokens=t, mask=m, y=l)`)
 * holds one array per model input, named by it, and `y.npy` as the labels if present.
 *
 * Stored entries are read at byte offsets like a plain .npy; deflated ones are inflated from the entry's
 * start and the rows before the requested range skipped, so either way only a batch is held at a time.
 */
import yauzl from 'yauzl';
import { NpyError, npyHeaderLength, parseNpyHeader, type NpyHeader } from './npy.js';

export interface NpzArray {
  /** Entry name in the archive, e.g. `x.npy`. */
  entry: string;
  header: NpyHeader;
}

/** Reads exact byte counts from a stream of chunks. */
export class ChunkReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private readonly iterator: AsyncIterator<Buffer>;

  constructor(
    stream: AsyncIterable<Buffer>,
    private readonly what: string,
  ) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.buffered < n) {
      // The stream is an archive entry's bytes: when they do not inflate or end early, the archive is bad.
      const next = await this.iterator.next().catch((error: unknown) => {
        throw error instanceof NpyError ? error : new NpyError(`${this.what}: ${(error as Error).message}`);
      });
      if (next.done) throw new NpyError(`${this.what} ends ${n - this.buffered} bytes early`);
      this.chunks.push(next.value);
      this.buffered += next.value.length;
    }
  }

  /** The next `n` bytes, in a fresh buffer the caller may modify. */
  async read(n: number): Promise<Uint8Array> {
    await this.fill(n);
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const chunk = this.chunks[0];
      const take = Math.min(chunk.length, n - at);
      out.set(chunk.subarray(0, take), at);
      at += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    this.buffered -= n;
    return out;
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.chunks.length === 0) await this.fill(1);
      const chunk = this.chunks[0];
      const take = Math.min(chunk.length, left);
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
      this.buffered -= take;
      left -= take;
    }
  }

  /** Stops the underlying stream (an early return from a batch loop must not leave it open). */
  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}

export class NpzFile {
  private constructor(
    private readonly zip: yauzl.ZipFile,
    private readonly entries: Map<string, yauzl.Entry>,
    readonly x: NpzArray,
    readonly y: NpzArray | null,
    /** The arrays of named inputs, x the first; null when x is the only input. */
    readonly inputs: NpzArray[] | null,
  ) {}

  static async open(path: string): Promise<NpzFile> {
    let zip: yauzl.ZipFile;
    try {
      zip = await openZip(path);
    } catch (error) {
      throw new NpyError(`not a readable .npz (zip) file: ${(error as Error).message}`);
    }
    try {
      const entries = await readEntries(zip);
      const arrays = [...entries.keys()].filter((name) => name.endsWith('.npy'));
      const namedInputs = arrays.filter((name) => name !== 'y.npy');
      const named =
        !entries.has('x.npy') && namedInputs.length > 0 && !namedInputs.every((n) => /^arr_\d+\.npy$/.test(n));
      let names: string[];
      if (named) names = entries.has('y.npy') ? [...namedInputs, 'y.npy'] : namedInputs;
      else if (entries.has('x.npy')) names = entries.has('y.npy') ? ['x.npy', 'y.npy'] : ['x.npy'];
      else if (arrays.length === 0) throw new NpyError('the .npz holds no .npy arrays');
      else if (arrays.length > 2) {
        throw new NpyError(
          `the .npz holds ${arrays.length} arrays (${arrays.join(', ')}) and none is named x; save them as x= and y=`,
        );
      } else names = arrays;
      for (const name of names) {
        const entry = entries.get(name)!;
        if (entry.isEncrypted() || !entry.canDecodeFileData()) {
          throw new NpyError(
            `${name}: encrypted or unsupported compression (method ${entry.compressionMethod}); use np.savez or np.savez_compressed`,
          );
        }
      }
      const headers = await Promise.all(names.map((name) => readHeader(zip, entries.get(name)!)));
      const read = names.map((entry, i) => ({ entry, header: headers[i] }));
      if (named) {
        const inputs = read.filter((array) => array.entry !== 'y.npy');
        return new NpzFile(zip, entries, inputs[0], read.find((array) => array.entry === 'y.npy') ?? null, inputs);
      }
      return new NpzFile(zip, entries, read[0], read[1] ?? null, null);
    } catch (error) {
      zip.close();
      throw error;
    }
  }

  /**
   * A reader positioned at byte `offset` of the array's data. Stored entries start there directly;
   * deflated ones inflate and discard what comes before.
   */
  async dataReader(array: NpzArray, offset: number): Promise<ChunkReader> {
    const entry = this.entries.get(array.entry)!;
    const start = array.header.dataOffset + offset;
    if (entry.compressionMethod === 0) {
      if (start >= entry.uncompressedSize) return new ChunkReader(nothing(), array.entry);
      const stream = await this.zip.openReadStreamPromise(entry, {
        decodeFileData: false,
        start,
        end: entry.uncompressedSize,
      });
      return new ChunkReader(stream, array.entry);
    }
    const reader = new ChunkReader(await this.zip.openReadStreamPromise(entry), array.entry);
    await reader.skip(start);
    return reader;
  }

  close(): void {
    this.zip.close();
  }
}

async function* nothing(): AsyncGenerator<Buffer> {}

/** An entry's .npy header, inflating only its first bytes. */
async function readHeader(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<NpyHeader> {
  const stream = await zip.openReadStreamPromise(entry).catch((error: unknown) => {
    throw new NpyError(`${entry.fileName}: bad .npz entry: ${(error as Error).message}`);
  });
  const reader = new ChunkReader(stream, entry.fileName);
  try {
    const start = await reader.read(Math.min(12, entry.uncompressedSize));
    const length = npyHeaderLength(start);
    const prefix = new Uint8Array(Math.min(length, entry.uncompressedSize));
    prefix.set(start);
    if (prefix.length > start.length) prefix.set(await reader.read(prefix.length - start.length), start.length);
    return parseNpyHeader(prefix, entry.uncompressedSize);
  } catch (error) {
    if (error instanceof NpyError) throw new NpyError(`${entry.fileName}: ${error.message}`);
    throw error;
  } finally {
    await reader.close();
  }
}

function openZip(path: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    // autoClose off: batches open entry streams long after the central directory was read.
    yauzl.open(
      path,
      { lazyEntries: true, autoClose: false, decodeStrings: true, validateEntrySizes: true },
      (error, zip) => (error || !zip ? reject(error ?? new Error('no zip')) : resolve(zip)),
    );
  });
}

function readEntries(zip: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, yauzl.Entry>();
    zip.on('entry', (entry: yauzl.Entry) => {
      if (!entry.fileName.endsWith('/')) entries.set(entry.fileName, entry);
      zip.readEntry();
    });
    zip.once('end', () => resolve(entries));
    zip.once('error', (error: Error) => reject(new NpyError(`bad .npz archive: ${error.message}`)));
    zip.readEntry();
  });
}

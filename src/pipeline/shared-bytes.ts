/**
 * Bytes as the streaming export's threads pass them (export-pool.ts, export-worker.ts). A structured clone
 * keeps a typed array's length only modulo 2^32 bytes (V8's serializer writes it as a uint32), so a view of
 * 4 GiB or more arrives cut short, and a plain ArrayBuffer that large cannot be cloned at all; a
 * SharedArrayBuffer keeps its length. So a view is sent as its shared buffer, offset and length.
 */
export interface SharedBytes {
  buffer: SharedArrayBuffer;
  byteOffset: number;
  byteLength: number;
}

/** `bytes` as SharedBytes: shared where they lie, or copied into a SharedArrayBuffer (the one copy a clone makes). */
export function toShared(bytes: ArrayBufferView): SharedBytes {
  const { buffer, byteOffset, byteLength } = bytes;
  if (buffer instanceof SharedArrayBuffer) return { buffer, byteOffset, byteLength };
  const copy = new SharedArrayBuffer(byteLength);
  new Uint8Array(copy).set(new Uint8Array(buffer, byteOffset, byteLength));
  return { buffer: copy, byteOffset: 0, byteLength };
}

export function bytesOfShared({ buffer, byteOffset, byteLength }: SharedBytes): Uint8Array {
  return new Uint8Array(buffer, byteOffset, byteLength);
}

export function floatsOfShared({ buffer, byteOffset, byteLength }: SharedBytes): Float32Array {
  return new Float32Array(buffer, byteOffset, byteLength / 4);
}

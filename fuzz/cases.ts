/**
 * Hostile requests for the fuzz run (fuzz.ts), drawn from a seeded generator so a failing case can be
 * replayed by its seed and index: model and dataset uploads (mutated model.json, truncated shards,
 * corrupted zips and tar.gz with escaping entry names, malformed multipart bodies), job specs (mutated
 * fields, prototype keys, deep nesting, garbage bodies) and paths (traversal, odd ids, odd methods).
 * Mutations replace a random place of a valid document with a value chosen to break a careless reader:
 * fractions and overflowing numbers where sizes go, Object.prototype's names, deep nesting, long strings.
 */
import { deflateRawSync, gzipSync } from 'node:zlib';
import type { Rng } from '../src/quant/rng.js';

export type CaseKind = 'model' | 'dataset' | 'spec' | 'path' | 'raw';

export interface FuzzCase {
  kind: CaseKind;
  /** What the case is, to name it in the report. */
  label: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  /** A raw request written to the socket as it is (malformed HTTP); method/path/headers unused. */
  raw?: Buffer;
  /** The spec submitted for real (queued and run by the worker), not as a dry run. */
  queued?: boolean;
}

/** What the generator builds on: valid documents of the running service. */
export interface Material {
  /** A valid layers model: model.json text and its shard. */
  layersJson: string;
  layersShard: Buffer;
  /** A valid graph model. */
  graphJson: string;
  graphShard: Buffer;
  /** Ids that exist (GET them freely; never DELETE them: the run checks they are unchanged). */
  modelId: string;
  datasetId: string;
  jobId: string;
  /** A path outside DATA_DIR that hostile archive entries aim at; it must not exist after the run. */
  escapeName: string;
}

const pick = <T>(rng: Rng, items: readonly T[]): T => items[rng.int(items.length)];

/** Text pasted into a JSON document in place of a marker: values JSON.stringify cannot write. */
function rawValue(rng: Rng): string {
  const depth = pick(rng, [40, 300, 3000, 20_000]);
  return pick(rng, [
    '1e309',
    '-1e309',
    '2.5',
    '-0',
    '9007199254740993',
    '1e-400',
    '[]'.repeat(1).padStart(2),
    '['.repeat(depth) + '1' + ']'.repeat(depth),
    '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
  ]);
}

/** A value as text, whatever it is (String() throws on a null-prototype object). */
const text = (value: unknown): string => (typeof value === 'string' ? value : (JSON.stringify(value) ?? 'undefined'));

function hostileValue(rng: Rng): unknown {
  return pick(rng, [
    () => pick(rng, ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'prototype']),
    () => pick(rng, ['2.5', '1e309', '-1', 'NaN', 'Infinity', '', ' ', '\u0000', '../../etc/passwd', '%2e%2e/']),
    () => pick(rng, [-1, 0, 2.5, -2.5, 2 ** 31, 2 ** 53 + 2, 1e300, -1e300, Number.MAX_SAFE_INTEGER]),
    () => pick(rng, [null, true, false, [], {}, [null], [[]], { __proto__: null }]),
    () => 'x'.repeat(pick(rng, [256, 4096, 70_000])),
    () => '\u{1F600}\u202e\uFFFF'.repeat(rng.int(50) + 1),
    () => ({ constructor: { prototype: { polluted: 1 } } }),
    () => Array.from({ length: rng.int(5) + 1 }, () => rng.int(2 ** 20) - 2 ** 19),
    () => `\u0000RAW\u0000`,
  ])();
}

/**
 * A JSON text of `document` with one to three random places replaced by hostile values (or keys added);
 * `\u0000RAW\u0000` markers become raw text (numbers JSON cannot hold, nesting JSON.stringify cannot write).
 */
export function mutateJson(rng: Rng, document: unknown): string {
  const copy = JSON.parse(JSON.stringify(document)) as unknown;
  let root: unknown = copy;
  const mutations = rng.int(3) + 1;
  for (let m = 0; m < mutations; m++) {
    // Walk down a random path, then change what is there.
    let parent: Record<string, unknown> | unknown[] | null = null;
    let key: string | number | null = null;
    let node: unknown = root;
    const steps = rng.int(8);
    for (let s = 0; s < steps && node !== null && typeof node === 'object'; s++) {
      const keys: (string | number)[] = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
      if (keys.length === 0) break;
      parent = node as Record<string, unknown>;
      key = pick(rng, keys);
      node = (node as Record<string | number, unknown>)[key];
    }
    const value = hostileValue(rng);
    if (parent === null || key === null) {
      if (root !== null && typeof root === 'object' && !Array.isArray(root) && rng.next() < 0.7) {
        (root as Record<string, unknown>)[String(pick(rng, ['__proto__', 'constructor', 'extra', 'toString']))] = value;
      } else {
        root = value;
      }
    } else if (rng.next() < 0.2 && !Array.isArray(parent)) {
      Object.defineProperty(parent, pick(rng, ['__proto__', 'constructor', 'hasOwnProperty']), {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else if (rng.next() < 0.1) {
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key as string];
    } else {
      (parent as Record<string | number, unknown>)[key] = value;
    }
  }
  return JSON.stringify(root).replace(/"\\u0000RAW\\u0000"/g, () => rawValue(rng));
}

// ---- archives ------------------------------------------------------------------------------------------

function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * A stored (uncompressed) zip of `entries`, written by hand so a case can lie about what it holds: an
 * entry's declared size can differ from its bytes and its name can leave the archive.
 */
export function zipOf(entries: { name: string; data: Buffer; declaredSize?: number; deflate?: boolean }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name);
    const stored = entry.deflate ? deflateRawSync(entry.data) : entry.data;
    const size = entry.declaredSize ?? entry.data.length;
    const crc = crc32(entry.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(entry.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(stored.length, 18);
    local.writeUInt32LE(size >>> 0, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(entry.deflate ? 8 : 0, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(stored.length, 20);
    central.writeUInt32LE(size >>> 0, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, stored);
    centrals.push(central, name);
    offset += local.length + name.length + stored.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

/** A ustar archive, gzipped; `type` '2' is a symbolic link to `link`. */
export function tarGzOf(entries: { name: string; data: Buffer; type?: string; link?: string }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const header = Buffer.alloc(512);
    header.write(entry.name.slice(0, 100), 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(entry.data.length.toString(8).padStart(11, '0') + '\0', 124);
    header.write('00000000000\0', 136);
    header.write('        ', 148);
    header.write(entry.type ?? '0', 156);
    if (entry.link) header.write(entry.link.slice(0, 100), 157);
    header.write('ustar\u000000', 257);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(header, entry.data, Buffer.alloc((512 - (entry.data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** `buffer` with a few bytes overwritten, cut short, or both. */
function corrupt(rng: Rng, buffer: Buffer): Buffer {
  const out = Buffer.from(buffer);
  const flips = rng.int(6);
  for (let i = 0; i < flips && out.length > 0; i++) out[rng.int(out.length)] = rng.int(256);
  return rng.next() < 0.4 ? out.subarray(0, rng.int(out.length + 1)) : out;
}

// ---- multipart -----------------------------------------------------------------------------------------

interface Part {
  field: string;
  filename: string;
  data: Buffer;
}

function multipartBody(parts: Part[], boundary: string): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${part.field}"; filename="${part.filename}"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      ),
      part.data,
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

/** A multipart request of `parts`, sometimes malformed as a whole (cut short, no or bad boundary). */
function multipartCase(rng: Rng, kind: CaseKind, path: string, label: string, parts: Part[]): FuzzCase {
  const boundary = `qaasfuzz${rng.int(1e9)}`;
  let body = multipartBody(parts, boundary);
  let contentType = `multipart/form-data; boundary=${boundary}`;
  const form = rng.next();
  if (form < 0.06) {
    body = body.subarray(0, rng.int(body.length));
    label += ', body cut short';
  } else if (form < 0.09) {
    contentType = 'multipart/form-data';
    label += ', no boundary';
  } else if (form < 0.12) {
    const long = 'b'.repeat(pick(rng, [71, 257, 1000]));
    body = multipartBody(parts, long);
    contentType = `multipart/form-data; boundary=${long}`;
    label += ', long boundary';
  } else if (form < 0.14) {
    contentType = pick(rng, ['application/json', 'text/plain', 'multipart/mixed; boundary=x', 'application/zip']);
    label += `, sent as ${contentType}`;
  } else if (form < 0.16) {
    body = corrupt(rng, body);
    label += ', body corrupted';
  }
  return { kind, label, method: 'POST', path, headers: { 'content-type': contentType }, body };
}

const hostileNames = (m: Material) => [
  `../../${m.escapeName}`,
  `/tmp/${m.escapeName}`,
  `a/../../${m.escapeName}`,
  `..\\..\\${m.escapeName}`,
  'model.json\u0000.bin',
  '.',
  '',
  'x'.repeat(300),
];

// ---- generators ----------------------------------------------------------------------------------------

function modelCase(rng: Rng, m: Material): FuzzCase {
  const graph = rng.next() < 0.35;
  const json = graph ? m.graphJson : m.layersJson;
  const shard = graph ? m.graphShard : m.layersShard;
  const modelJson = () => (rng.next() < 0.85 ? mutateJson(rng, JSON.parse(json)) : json);
  const shardBytes = () => (rng.next() < 0.3 ? corrupt(rng, shard) : shard);
  const form = rng.int(6);
  const which = graph ? 'graph' : 'layers';
  if (form <= 2) {
    const parts: Part[] = [
      { field: 'f', filename: 'model.json', data: Buffer.from(modelJson()) },
      { field: 'f', filename: 'group1-shard1of1.bin', data: shardBytes() },
    ];
    if (rng.next() < 0.1) parts.push({ field: 'f', filename: pick(rng, hostileNames(m)), data: shard });
    return multipartCase(rng, 'model', '/v1/models', `${which} model.json mutated`, parts);
  }
  if (form === 3) {
    const entries = [
      { name: rng.next() < 0.2 ? pick(rng, hostileNames(m)) : 'model.json', data: Buffer.from(modelJson()) },
      { name: 'group1-shard1of1.bin', data: shardBytes() },
    ]
      .map((entry) => ({ ...entry, deflate: rng.next() < 0.5 }))
      .map((entry) =>
        rng.next() < 0.15
          ? { ...entry, declaredSize: pick(rng, [10 * 1024 * 1024, 2 ** 30, 2 ** 32 - 1, 0, entry.data.length + 1]) }
          : entry,
      );
    let zip = zipOf(entries);
    if (rng.next() < 0.4) zip = corrupt(rng, zip);
    return multipartCase(rng, 'model', '/v1/models', `${which} model as a hostile zip`, [
      { field: 'f', filename: 'model.zip', data: zip },
    ]);
  }
  if (form === 4) {
    const entries: { name: string; data: Buffer; type?: string; link?: string }[] = [
      { name: rng.next() < 0.2 ? pick(rng, hostileNames(m)) : 'model.json', data: Buffer.from(modelJson()) },
      { name: 'group1-shard1of1.bin', data: shardBytes() },
    ];
    if (rng.next() < 0.2)
      entries.push({ name: 'link', data: Buffer.alloc(0), type: '2', link: `/tmp/${m.escapeName}` });
    let archive = tarGzOf(entries);
    if (rng.next() < 0.4) archive = corrupt(rng, archive);
    return multipartCase(rng, 'model', '/v1/models', `${which} model as a hostile tar.gz`, [
      { field: 'f', filename: 'model.tar.gz', data: archive },
    ]);
  }
  const parts: Part[] = Array.from({ length: rng.int(4) }, () => ({
    field: text(hostileValue(rng)).slice(0, 50),
    filename: pick(rng, [...hostileNames(m), 'model.json', 'a.zip', 'b.tar.gz', 'x.npy']),
    data: corrupt(rng, Buffer.from(json)),
  }));
  return multipartCase(rng, 'model', '/v1/models', 'parts with odd names and fields', parts);
}

function npy(descr: string, shape: string, data: Buffer): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]);
}

function datasetCase(rng: Rng, m: Material): FuzzCase {
  const form = rng.int(4);
  if (form <= 1) {
    const x = Array.from({ length: 4 }, () => [1, 2, 3, 4]);
    const document = rng.next() < 0.5 ? { x, y: [0, 1, 2, 0] } : { x };
    return multipartCase(rng, 'dataset', '/v1/datasets', 'dataset JSON mutated', [
      { field: 'data', filename: 'data.json', data: Buffer.from(mutateJson(rng, document)) },
    ]);
  }
  if (form === 2) {
    const descr = pick(rng, ['<f4', '<f8', '|u1', '<i8', '<constructor', '|O', '<U10', '>f4', 'toString']);
    const shape = pick(rng, ['(4, 4)', '(-1, 4)', '(1099511627776, 4)', '()', '(4,)', '(4, 0)', '("a",)', '(2.5, 4)']);
    const data = corrupt(rng, Buffer.alloc(64, 1));
    const x = npy(descr, shape, data);
    const parts: Part[] = [{ field: 'x', filename: 'x.npy', data: rng.next() < 0.3 ? corrupt(rng, x) : x }];
    if (rng.next() < 0.5) parts.push({ field: 'y', filename: 'y.npy', data: npy('<i8', '(4,)', Buffer.alloc(32)) });
    return multipartCase(rng, 'dataset', '/v1/datasets', `npy ${descr} ${shape}`, parts);
  }
  const x = npy('<f4', '(4, 4)', Buffer.alloc(64));
  const entries = [
    { name: rng.next() < 0.2 ? pick(rng, hostileNames(m)) : 'x.npy', data: x },
    { name: 'y.npy', data: npy('<i8', '(4,)', Buffer.alloc(32)), deflate: rng.next() < 0.5 },
  ];
  let npz = zipOf(entries);
  if (rng.next() < 0.5) npz = corrupt(rng, npz);
  return multipartCase(rng, 'dataset', '/v1/datasets', 'npz corrupted', [
    { field: 'data', filename: 'data.npz', data: npz },
  ]);
}

function specCase(rng: Rng, m: Material, queueAllowed: boolean): FuzzCase {
  const base = {
    modelId: m.modelId,
    kind: pick(rng, ['ptq', 'ptq', 'qat', 'auto', 'analyze']),
    method: { name: pick(rng, ['affine', 'float16', 'binary', 'ternary', 'pow2', 'kmeans', 'pq', 'lab', 'admm']) },
    layers: { skip: [], overrides: { 'd/*': { bits: 4 } } },
    data: { calibration: m.datasetId, evaluation: m.datasetId, training: m.datasetId },
    activations: { bits: 8 },
    target: { maxDrop: 0.1 },
    webhook: { url: pick(rng, ['https://hooks.example.com/x', 'http://127.0.0.1:6379/', 'http://0x7f000001/']) },
  };
  const queued = queueAllowed && rng.next() < 0.5;
  const form = rng.next();
  let body: string;
  let label = 'spec mutated';
  if (form < 0.85) body = mutateJson(rng, base);
  else if (form < 0.9) {
    body = corrupt(rng, Buffer.from(JSON.stringify(base))).toString('latin1');
    label = 'spec bytes corrupted';
  } else if (form < 0.95) {
    const depth = pick(rng, [1000, 20_000, 100_000]);
    body = '['.repeat(depth) + ']'.repeat(depth);
    label = `spec nested ${depth} deep`;
  } else {
    body = JSON.stringify({ ...base, method: { name: hostileValue(rng) } });
    label = 'hostile method name';
  }
  const headers: Record<string, string> = {
    'content-type':
      rng.next() < 0.95 ? 'application/json' : pick(rng, ['text/plain', 'application/x-www-form-urlencoded']),
  };
  if (rng.next() < 0.2)
    headers['idempotency-key'] = text(hostileValue(rng))
      .slice(0, 300)
      .replace(/[^\x20-\x7e]/g, '?');
  return {
    kind: 'spec',
    label: queued ? `${label}, queued` : label,
    method: 'POST',
    path: queued ? '/v1/jobs' : '/v1/jobs?dryRun=true',
    headers,
    body: Buffer.from(body),
    queued,
  };
}

function pathCase(rng: Rng, m: Material): FuzzCase {
  const segment = () =>
    pick(rng, [
      m.modelId,
      m.datasetId,
      m.jobId,
      'mdl_0000000000000000000000000',
      'constructor',
      '__proto__',
      '%00',
      '%2e%2e',
      '..',
      '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      'a'.repeat(pick(rng, [10, 2000, 9000])),
      '%F0%9F%98%80',
      '%ZZ',
      '',
    ]);
  const template = pick(rng, [
    () => `/v1/models/${segment()}`,
    () => `/v1/datasets/${segment()}`,
    () => `/v1/jobs/${segment()}`,
    () => `/v1/jobs/${segment()}/report`,
    () => `/v1/jobs/${segment()}/log`,
    () =>
      `/v1/jobs/${segment()}/artifacts/${pick(rng, ['../../../../etc/passwd', '..%2f..%2fpackage.json', 'model/../../x', '%00', 'report.json', 'artifacts.zip'])}`,
    () => `/v1/jobs/${m.jobId}/events`,
    () => `/v1/${segment()}`,
    () =>
      `/${pick(rng, ['..%2f..%2fpackage.json', '%2e%2e/%2e%2e/etc/passwd', 'app.js', 'docs/../..', 'docs/json', 'metrics', 'readyz'])}`,
    () => `/v1/models?limit=${pick(rng, ['-1', '0', '1e3', 'abc', '100', '%00'])}&cursor=${segment()}`,
    () => `/v1/jobs?status=${pick(rng, ['__proto__', 'running', 'x', ''])}&modelId=${segment()}`,
  ])();
  const safe = [m.modelId, m.datasetId, m.jobId].some((id) => template.includes(id));
  // Existing records may be read, never deleted or cancelled: the run checks they are unchanged.
  const method = safe
    ? pick(rng, ['GET', 'HEAD', 'OPTIONS'])
    : pick(rng, ['GET', 'GET', 'DELETE', 'POST', 'PUT', 'PATCH', 'HEAD', 'OPTIONS']);
  const headers: Record<string, string> = {};
  if (rng.next() < 0.2)
    headers.authorization = pick(rng, ['Bearer ', 'Bearer x', 'Basic abc', 'Bearer ' + 'k'.repeat(5000)]);
  if (method === 'POST' && rng.next() < 0.5) headers['content-type'] = 'application/json';
  return {
    kind: 'path',
    label: `${method} ${template.slice(0, 80)}`,
    method,
    path: template,
    headers,
    body: method === 'POST' ? Buffer.from('{}') : undefined,
  };
}

function rawCase(rng: Rng): FuzzCase {
  const raw = pick(rng, [
    () => 'GET / HTTP/1.1\r\nHost: x\r\nX: ' + 'a'.repeat(20_000) + '\r\n\r\n',
    () => 'BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n',
    () => 'GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n',
    () => 'GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
    () => 'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    () =>
      'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n',
    () => 'GET /\u0000 HTTP/1.1\r\n\r\n',
    () => '\r\n\r\n\r\n',
    () =>
      'POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=z\r\nContent-Length: 20\r\n\r\n--z\r\nbroken',
  ])();
  return {
    kind: 'raw',
    label: JSON.stringify(raw.slice(0, 60)),
    method: '',
    path: '',
    headers: {},
    raw: Buffer.from(raw, 'latin1'),
  };
}

/** The `index`-th case of a run: the same seed and index always give the same request. */
export function makeCase(rng: Rng, m: Material, queueAllowed: boolean): FuzzCase {
  const roll = rng.next();
  if (roll < 0.3) return modelCase(rng, m);
  if (roll < 0.45) return datasetCase(rng, m);
  if (roll < 0.75) return specCase(rng, m, queueAllowed);
  if (roll < 0.97) return pathCase(rng, m);
  return rawCase(rng);
}

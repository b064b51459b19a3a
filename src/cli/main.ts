/**
 * `qaas` command line: `serve` (API + embedded workers), `worker` (workers only), `quantize` (the engine on
 * local files, no Redis — the offline path) and `submit` (the same job through a running service). Bad
 * input ends with exit code 2 and one line. Started by ../cli.ts.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { parseArgs } from 'node:util';
import type { SingleBar } from 'cli-progress';
import { closestFlag, commandUsage, parseCommand, UsageError, type Command, type Flags } from './args.js';
import type { QaasClient, RemoteJob } from '../client/index.js';
import { InputError } from '../errors.js';
import type { JobSpec } from '../jobs/spec.js';
import type { LoadedModel } from '../model/types.js';
import type { Dataset } from '../model/dataset/index.js';
import type { JobDatasets, JobReport } from '../pipeline/types.js';
import { methodNames } from '../quant/methods/names.js';
import { EXACT_SQNR_DB } from '../quant/metrics.js';
import { terminalStatuses } from '../storage/types.js';
import { writeDirAtomically, writeTreeAtomically } from '../storage/tree.js';
import { packageVersion } from '../version.js';

/** The job spec's fields as flags, shared by `quantize` and `submit`; they override the --spec file's fields. */
const specFlags = {
  spec: { type: 'string', arg: 'file', help: 'job spec JSON (its method, layers and output fields)' },
  method: { type: 'string', short: 'm', arg: 'name', help: methodNames.join(' | ') },
  bits: { type: 'string', short: 'b', arg: 'n', help: 'bits per code' },
  symmetric: { type: 'boolean', help: 'affine: zero point 0' },
  asymmetric: { type: 'boolean', help: 'affine: a zero point from the range' },
  granularity: { type: 'string', arg: 'g', help: 'per-tensor | per-channel' },
  rounding: { type: 'string', arg: 'r', help: 'nearest | stochastic' },
  range: { type: 'string', arg: 'r', help: 'affine clipping range: minmax | percentile | mse' },
  percentile: { type: 'string', arg: 'p', help: 'with --range percentile' },
  init: { type: 'string', arg: 'i', help: 'kmeans init: linear | density | kmeans++' },
  'subvector-length': { type: 'string', arg: 'd', help: 'pq sub-vector length' },
  codebooks: {
    type: 'string',
    arg: 'c',
    help: 'pq: per-block | shared (one codebook for the whole tensor: ~bits/d bits per weight)',
  },
  stochastic: { type: 'boolean', help: 'stochastic binarization' },
  seed: { type: 'string', arg: 'n', help: 'seed of every random choice' },
  skip: { type: 'string', multiple: true, arg: 'glob', help: 'leave matching weights in float32 (repeatable)' },
  'shard-size': { type: 'string', arg: 'bytes', help: 'model/ shard size (default 4 MiB)' },
  kind: {
    type: 'string',
    arg: 'k',
    help: 'ptq (default) | qat (needs --train) | analyze (needs --eval) | auto (--eval and a target)',
  },
  'max-drop': { type: 'string', arg: 'd', help: 'auto target: the largest metric drop allowed (e.g. 0.01)' },
  'max-bytes': { type: 'string', arg: 'n', help: 'auto target: the largest packed size' },
  data: { type: 'string', arg: 'ref', help: 'one dataset for calibration, evaluation and training (unless given)' },
  calibration: {
    type: 'string',
    arg: 'ref',
    help: 'activation ranges; a ref is data.npz, data.json {x, y}, x.npy or x.npy,y.npy',
  },
  eval: { type: 'string', arg: 'ref', help: 'metrics of the float and the exported model (accuracy, agreement, ...)' },
  train: { type: 'string', arg: 'ref', help: 'quantization-aware training' },
  verify: {
    type: 'string',
    arg: 'ref',
    help: 'auto: held-out data every trial must keep the target on (default: half of --eval, seeded)',
  },
  'activation-bits': { type: 'string', arg: 'n', help: 'simulate n-bit integer activations (needs calibration data)' },
  'activation-calibration': { type: 'string', arg: 'c', help: 'minmax | percentile | mse | kl' },
  scale: { type: 'string', arg: 's', help: 'preprocess: x * scale + offset (0.00392156862 for raw pixels)' },
  offset: { type: 'string', arg: 'o', help: 'preprocess: x * scale + offset' },
  quiet: { type: 'boolean', short: 'q', help: 'no progress bar or table' },
} as const satisfies Flags;

const serviceFlags = {
  api: { type: 'string', arg: 'url', help: 'the service (default $QAAS_API_URL, else http://127.0.0.1:8080)' },
  'api-key': { type: 'string', arg: 'key', help: 'bearer key (default $QAAS_API_KEY)' },
} as const satisfies Flags;

const outFlag = {
  out: { type: 'string', short: 'o', arg: 'outDir', help: 'where model/, packed/ and report.json are written' },
} as const satisfies Flags;

const commands = {
  serve: {
    name: 'serve',
    synopsis: 'serve',
    about:
      'The API and QAAS_WORKERS embedded workers until SIGTERM/SIGINT. Configured by the environment: PORT, HOST,\n' +
      'REDIS_URL, DATA_DIR, QAAS_WORKERS, QAAS_API_KEYS, ... (README, Configuration).',
    flags: {},
  },
  worker: {
    name: 'worker',
    synopsis: 'worker',
    about: 'Workers only (QAAS_WORKERS at a time), on the same REDIS_URL and DATA_DIR as the API, until SIGTERM.',
    flags: {},
  },
  quantize: {
    name: 'quantize',
    synopsis: 'quantize <modelDir | model.keras | model.h5> --out <outDir> [options]',
    about:
      'Runs the job on local files with no service or Redis (the offline path); a Keras .keras / .h5 is\n' +
      'converted to a TF.js layers model first.',
    flags: { ...outFlag, ...specFlags },
  },
  submit: {
    name: 'submit',
    synopsis: 'submit <modelDir | archive | model.keras | model.h5 | modelId> [--out <outDir>] [options]',
    about:
      'The same job through a running service: uploads the model and the local datasets (a dataset ref may\n' +
      "also be a ds_ id), submits, follows the job's events and downloads its artifacts. Exit 0 when the job\n" +
      'succeeded, 1 when it failed or was cancelled, 2 on bad input.',
    flags: {
      ...outFlag,
      ...serviceFlags,
      priority: { type: 'string', arg: 'n', help: 'queue order: 0 (default) first, larger numbers later' },
      name: { type: 'string', arg: 'text', help: "the job's name (GET /v1/jobs?name=)" },
      label: {
        type: 'string',
        multiple: true,
        arg: 'key=value',
        help: 'a label of the job (repeatable; GET /v1/jobs?label=key=value)',
      },
      detach: { type: 'boolean', help: 'print the job id once it is queued and exit' },
      ...specFlags,
    },
  },
  fetch: {
    name: 'fetch',
    synopsis: 'fetch <jobId> [--out <outDir>]',
    about: 'Waits for a job (e.g. one submitted with --detach) and downloads it; exit codes as submit.',
    flags: { ...outFlag, ...serviceFlags, quiet: specFlags.quiet },
  },
  sweep: {
    name: 'sweep',
    synopsis: 'sweep [--grace-minutes <n>] [--dry-run]',
    about:
      'Removes the blobs no model or dataset names any more once older than the grace period, the temp files\n' +
      'of uploads that died and the artifacts of deleted jobs (REDIS_URL, DATA_DIR).',
    flags: {
      'grace-minutes': { type: 'string', arg: 'n', help: 'age before an unreferenced blob goes (default 60)' },
      'dry-run': { type: 'boolean', help: 'only count what would be removed' },
    },
  },
} as const satisfies Record<string, Command<Flags>>;

const usage = `qaas ${packageVersion} — quantization as a service

Usage: qaas <command> [options]     (qaas <command> --help lists its options)

${Object.values(commands)
  .map((command) => `  qaas ${command.synopsis}\n${command.about.replace(/^/gm, '      ')}`)
  .join('\n')}
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'quantize':
      return quantize(rest);
    case 'submit':
      return submit(rest);
    case 'fetch':
      return fetchJob(rest);
    case 'sweep':
      return sweep(rest);
    case 'serve':
    case 'worker': {
      const parsed = parseCommand(commands[command], rest);
      if (!parsed) return 0;
      if (parsed.positionals.length > 0)
        throw new UsageError(`${command} takes no arguments; run qaas ${command} --help`);
      const { loadConfig } = await import('../config.js');
      const { serve, runWorkers } = await import('../service.js');
      await (command === 'serve' ? serve(loadConfig()) : runWorkers(loadConfig()));
      return 0;
    }
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(usage);
      return 0;
    case 'help': {
      const topic = rest[0];
      if (topic === undefined) process.stdout.write(usage);
      else if (Object.hasOwn(commands, topic))
        process.stdout.write(commandUsage(commands[topic as keyof typeof commands]));
      else throw new UsageError(`unknown command "${topic}"; run qaas --help`);
      return 0;
    }
    case '--version':
      process.stdout.write(`${packageVersion}\n`);
      return 0;
    default: {
      const suggestion = closestFlag(command, Object.keys(commands));
      throw new UsageError(
        `unknown command "${command}"${suggestion ? ` (did you mean ${suggestion}?)` : ''}; run qaas --help`,
      );
    }
  }
}

type SpecFlags = ReturnType<typeof parseArgs<{ options: typeof specFlags }>>['values'];

/** The spec the flags describe, over the --spec file's fields; not yet validated (parseJobSpec does that). */
async function specFromFlags(values: SpecFlags): Promise<Record<string, unknown>> {
  const fileSpec = values.spec ? await readSpecFile(values.spec) : {};
  const flags: Record<string, unknown> = {
    bits: numberFlag('bits', values.bits),
    symmetric: values.symmetric ? true : values.asymmetric ? false : undefined,
    granularity: values.granularity,
    rounding: values.rounding,
    range: values.range,
    percentile: numberFlag('percentile', values.percentile),
    init: values.init,
    subvectorLength: numberFlag('subvector-length', values['subvector-length']),
    codebooks: values.codebooks,
    stochastic: values.stochastic,
    seed: numberFlag('seed', values.seed),
  };
  const baseMethod = (fileSpec.method ?? {}) as Record<string, unknown>;
  const methodName = values.method ?? (baseMethod.name as string | undefined) ?? 'affine';
  const method = { ...(methodName === baseMethod.name ? baseMethod : {}), name: methodName, ...definedOnly(flags) };
  const layers = (fileSpec.layers ?? {}) as { skip?: string[] };
  const data = {
    ...(fileSpec.data as object),
    ...definedOnly({
      calibration: values.calibration ?? values.data,
      evaluation: values.eval ?? values.data,
      training: values.train ?? values.data,
      verification: values.verify,
    }),
  };
  const activationFlags = definedOnly({
    bits: numberFlag('activation-bits', values['activation-bits']),
    calibration: values['activation-calibration'],
  });
  const targetFlags = definedOnly({
    maxDrop: numberFlag('max-drop', values['max-drop']),
    maxBytes: numberFlag('max-bytes', values['max-bytes']),
  });
  return {
    ...fileSpec,
    ...definedOnly({ kind: values.kind }),
    ...(Object.keys(targetFlags).length > 0 ? { target: { ...(fileSpec.target as object), ...targetFlags } } : {}),
    method,
    layers: { ...layers, skip: [...(layers.skip ?? []), ...(values.skip ?? [])] },
    data,
    ...(Object.keys(activationFlags).length > 0
      ? { activations: { ...(fileSpec.activations as object), ...activationFlags } }
      : {}),
    preprocess: {
      ...(fileSpec.preprocess as object),
      ...definedOnly({ scale: numberFlag('scale', values.scale), offset: numberFlag('offset', values.offset) }),
    },
    output: {
      ...(fileSpec.output as object),
      ...definedOnly({ shardSizeBytes: numberFlag('shard-size', values['shard-size']) }),
    },
  };
}

/** A bar on a terminal, unless --quiet; cli-progress loads only then. */
async function progressBar(quiet: boolean | undefined): Promise<SingleBar | undefined> {
  if (!process.stderr.isTTY || quiet) return undefined;
  const { default: cliProgress } = await import('cli-progress');
  return new cliProgress.SingleBar(
    { format: '{bar} {percentage}% | {stage}: {message}', hideCursor: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
}

/**
 * A TF.js model directory, or a Keras `.keras` / `.h5` file converted as the service converts uploads. The
 * in-memory path's modules (tfjs among them) load only when it runs.
 */
async function readLocalModel(path: string): Promise<LoadedModel> {
  const { convertKerasBytes, isKerasPath } = await import('../model/keras/index.js');
  const { readModel, readModelDir } = await import('../model/read.js');
  if (!isKerasPath(path)) return readModelDir(path);
  const { files } = await convertKerasBytes(new Uint8Array(await readFile(path)), basename(path));
  return readModel(files);
}

async function quantize(args: string[]): Promise<number> {
  const parsed = parseCommand(commands.quantize, args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals.length !== 1)
    throw new UsageError('quantize takes one model directory or Keras file; run qaas quantize --help');
  if (!values.out) throw new UsageError('quantize needs --out <outDir>; run qaas quantize --help');
  const { parseJobSpec } = await import('../jobs/spec.js');
  const spec = parseJobSpec(await specFromFlags(values));
  const modelPath = resolve(positionals[0]);
  const outDir = resolve(values.out);
  const done = (report: JobReport): number => {
    if (!values.quiet) process.stdout.write(`${formatSummary(report)}\nwrote ${outDir}/{model,packed,report.json}\n`);
    return 0;
  };

  // Plain PTQ of a model directory (not a Keras file) streams the model tensor by tensor in bounded memory,
  // with the same artifacts.
  const { NotStreamable, streamingBlocker, streamQuantize } = await import('../pipeline/stream.js');
  if (!/\.(keras|h5|hdf5)$/i.test(modelPath) && streamingBlocker(spec) === undefined) {
    const bar = await progressBar(values.quiet);
    bar?.start(100, 0, { stage: 'load', message: '' });
    try {
      let report: JobReport | undefined;
      await writeDirAtomically(outDir, async (dir) => {
        report = await streamQuantize(modelPath, spec, dir, {
          onProgress: (p) => bar?.update(p.progress, { stage: p.stage, message: p.message }),
        });
      });
      return done(report!);
    } catch (error) {
      if (!(error instanceof NotStreamable)) throw error;
    } finally {
      bar?.stop();
    }
  }

  const { loadConfig } = await import('../config.js');
  const { selectBackend } = await import('../model/backend.js');
  const { runJob } = await import('../pipeline/run.js');
  const backend = await selectBackend(loadConfig().tfBackend);
  const model = await readLocalModel(modelPath);
  const datasets = await openDatasets(spec);
  const bar = await progressBar(values.quiet);
  bar?.start(100, 0, { stage: 'load', message: '' });
  const { files, report } = await runJob(model, spec, datasets, {
    backend,
    onProgress: (p) => bar?.update(p.progress, { stage: p.stage, message: p.message }),
  }).finally(async () => {
    bar?.stop();
    await Promise.all(Object.values(datasets).map((d) => d.close()));
  });
  await writeTreeAtomically(outDir, files);
  return done(report);
}

async function submit(args: string[]): Promise<number> {
  const parsed = parseCommand(commands.submit, args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals.length !== 1)
    throw new UsageError('submit takes one model directory, archive or model id; run qaas submit --help');
  const [model] = positionals;
  const fileSpec = await specFromFlags(values);
  const labels = labelFlags(values.label);
  const raw = {
    ...fileSpec,
    ...definedOnly({ priority: numberFlag('priority', values.priority), name: values.name }),
    ...(labels ? { labels: { ...(fileSpec.labels as Record<string, string> | undefined), ...labels } } : {}),
  };
  // Checked here first: a bad spec ends before anything is uploaded.
  const { parseJobSpec } = await import('../jobs/spec.js');
  const spec = parseJobSpec(raw);
  const { isId } = await import('../storage/records.js');
  const client = await serviceClient(values);
  const say = (line: string) => values.quiet || process.stderr.write(`${line}\n`);

  const modelId = isId('models', model) && !existsSync(model) ? model : (await client.uploadModel(resolve(model))).id;
  say(`model ${modelId}`);
  const uploaded = new Map<string, Promise<string>>();
  const datasetId = (ref: string) => {
    if (isId('datasets', ref)) return Promise.resolve(ref);
    if (!uploaded.has(ref))
      uploaded.set(
        ref,
        client.uploadDataset(resolveDatasetRef(ref)).then(({ id }) => id),
      );
    return uploaded.get(ref)!;
  };
  const roles = Object.entries(spec.data).filter((entry): entry is [string, string] => typeof entry[1] === 'string');
  const data = Object.fromEntries(
    await Promise.all(roles.map(async ([role, ref]) => [role, await datasetId(ref)] as const)),
  );
  for (const [role, id] of Object.entries(data)) say(`data.${role} ${id}`);

  const queued = await client.submitJob({ ...raw, modelId, data }, randomUUID());
  say(`job ${queued.id} ${queued.status}`);
  if (values.detach) {
    process.stdout.write(`${queued.id}\n`);
    return 0;
  }
  return awaitJob(client, queued, values);
}

/** `qaas fetch <jobId>`: waits for a job submitted earlier (say with --detach) and downloads it like submit. */
async function fetchJob(args: string[]): Promise<number> {
  const parsed = parseCommand(commands.fetch, args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const { isId } = await import('../storage/records.js');
  if (positionals.length !== 1 || !isId('jobs', positionals[0]))
    throw new UsageError('fetch takes one job id (job_…); run qaas fetch --help');
  const client = await serviceClient(values);
  return awaitJob(client, await client.job(positionals[0]), values);
}

async function serviceClient(values: { api?: string; 'api-key'?: string }): Promise<QaasClient> {
  const { QaasClient } = await import('../client/index.js');
  return new QaasClient(
    values.api ?? process.env.QAAS_API_URL ?? 'http://127.0.0.1:8080',
    values['api-key'] ?? process.env.QAAS_API_KEY,
  );
}

/** Follows the job to its end; when it succeeded, writes its artifacts to `out` and prints the summary. */
async function awaitJob(
  client: QaasClient,
  queued: RemoteJob,
  values: { out?: string; quiet?: boolean },
): Promise<number> {
  const job = terminalStatuses.includes(queued.status)
    ? queued
    : await follow(client, queued, await progressBar(values.quiet));
  if (job.status !== 'succeeded') {
    process.stderr.write(`qaas: job ${job.id} ${job.status}${job.error ? `: ${job.error.message}` : ''}\n`);
    return 1;
  }
  const report = (await client.report(job.id)) as JobReport;
  if (values.out) {
    const outDir = resolve(values.out);
    await writeTreeAtomically(
      outDir,
      new Map(job.artifacts.map((path) => [path, () => client.artifact(job.id, path)])),
    );
    if (!values.quiet) process.stderr.write(`wrote ${outDir}/{model,packed,report.json}\n`);
  }
  if (!values.quiet) process.stdout.write(`${formatSummary(report)}\n`);
  return 0;
}

/** The job's events until its `final` one (a stream that ends early is read again), as a progress bar. */
async function follow(client: QaasClient, queued: RemoteJob, bar: SingleBar | undefined): Promise<RemoteJob> {
  bar?.start(100, queued.progress, { stage: queued.stage, message: '' });
  try {
    for (;;) {
      for await (const { event, data } of client.events(queued.id)) {
        if (event === 'final') {
          const job = data as unknown as RemoteJob;
          bar?.update(job.progress, { stage: job.stage });
          return job;
        }
        if (event === 'progress') bar?.update(data.progress as number, { stage: data.stage });
        if (event === 'log') bar?.update({ message: data.message });
      }
      const job = await client.job(queued.id);
      if (terminalStatuses.includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } finally {
    bar?.stop();
  }
}

async function sweep(args: string[]): Promise<number> {
  const parsed = parseCommand(commands.sweep, args);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals.length > 0) throw new UsageError('sweep takes no arguments; run qaas sweep --help');
  const graceMinutes = numberFlag('grace-minutes', values['grace-minutes']) ?? 60;
  if (graceMinutes < 0) throw new UsageError('--grace-minutes must be ≥ 0');
  const { loadConfig } = await import('../config.js');
  const config = loadConfig();
  // Only `sweep` talks to Redis directly: its client and the stores load here, not at every start.
  const { Redis } = await import('ioredis');
  const { BlobStore } = await import('../storage/blobs.js');
  const { RecordStore } = await import('../storage/records.js');
  const { sweepBlobs } = await import('../storage/sweep.js');
  const redis = new Redis(config.redisUrl, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: () => null,
  });
  let connectError: Error | undefined;
  redis.on('error', (error: Error) => (connectError = error));
  try {
    await redis.connect().catch((error: Error) => {
      throw new Error(`cannot reach Redis at ${config.redisUrl}: ${(connectError ?? error).message}`);
    });
    const result = await sweepBlobs(new RecordStore(redis, config.redisPrefix), new BlobStore(config.dataDir), {
      graceMs: graceMinutes * 60_000,
      dryRun: values['dry-run'],
    });
    process.stdout.write(
      `${values['dry-run'] ? 'would remove' : 'removed'} ${result.removed} unreferenced blobs (${result.removedBytes} B); ` +
        `kept ${result.referenced} referenced and ${result.young} younger than ${graceMinutes} min; ` +
        `${result.staleTemp} stale temp files and ${result.artifacts} orphaned artifact directories removed\n`,
    );
    return 0;
  } finally {
    redis.disconnect();
  }
}

async function readSpecFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read spec file ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new UsageError(`spec file ${path} is not JSON: ${(error as Error).message}`);
  }
}

/** The datasets a spec names, opened once each (one file may serve several roles). */
async function openDatasets(spec: JobSpec): Promise<JobDatasets> {
  const { datasetFiles, openDataset } = await import('../model/dataset/index.js');
  const opened = new Map<string, Promise<Dataset>>();
  const open = (ref: string | undefined) => {
    if (ref === undefined) return undefined;
    if (!opened.has(ref)) opened.set(ref, openDataset(datasetFiles(resolveDatasetRef(ref))));
    return opened.get(ref);
  };
  const [calibration, evaluation, training, verification] = await Promise.all([
    open(spec.data.calibration),
    open(spec.data.evaluation),
    open(spec.data.training),
    open(spec.data.verification),
  ]);
  return definedOnly({ calibration, evaluation, training, verification });
}

function resolveDatasetRef(ref: string): string {
  return ref
    .split(',')
    .map((path) => resolve(path))
    .join(',');
}

function definedOnly<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `--label key=value` flags as labels (the spec's checks then apply to them); undefined when none. */
function labelFlags(raw: string[] | undefined): Record<string, string> | undefined {
  if (!raw || raw.length === 0) return undefined;
  return Object.fromEntries(
    raw.map((pair) => {
      const at = pair.indexOf('=');
      if (at <= 0) throw new UsageError(`--label takes key=value, got "${pair}"`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
}

function numberFlag(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got "${raw}"`);
  return value;
}

/** The per-tensor table and the totals, as fixed-width text. */
function formatSummary(report: JobReport): string {
  const header = ['tensor', 'shape', 'method', 'bits/w', 'stored', 'SQNR dB', 'cosine'];
  const rows = report.tensors.map((t) => [
    t.name,
    `[${t.shape.join(',')}]`,
    t.method,
    t.bitsPerWeight.toFixed(2),
    t.storedAs,
    t.sqnrDb >= EXACT_SQNR_DB ? 'exact' : t.sqnrDb.toFixed(1),
    t.cosine.toFixed(4),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  const m = report.model;
  return [
    line(header),
    ...rows.map(line),
    '',
    `${report.tensors.length} tensors quantized, ${report.skipped.length} skipped; ` +
      `weights ${m.bytesBefore} B → model/ ${m.bytesAfter} B (${m.stockCompressionRatio.toFixed(2)}×), ` +
      `packed ${m.packedBytes} B (${m.compressionRatio.toFixed(2)}×, ${m.bitsPerWeight.toFixed(2)} bits/weight); backend ${m.backend}`,
    ...(report.warnings ?? []).map((warning) => `warning: ${warning}`),
    ...Object.entries(m.metrics).map(
      ([stage, metrics]) =>
        `${stage}: ` +
        Object.entries(metrics)
          .map(
            ([name, value]) =>
              `${name} ${typeof value === 'number' && !Number.isInteger(value) ? value.toFixed(4) : value}`,
          )
          .join(', '),
    ),
    ...worstLayers(report),
  ].join('\n');
}

/** The diagnosis's worst layers (at most 3), one line each: its own SQNRs and the suggestion. */
function worstLayers(report: JobReport): string[] {
  const diagnosis = report.diagnosis;
  if (!diagnosis) return [];
  if (diagnosis.worst.length === 0) return [`diagnosis: every layer's own SQNR is at least ${diagnosis.healthyDb} dB`];
  const db = (value: number | undefined) =>
    value === undefined ? '–' : value >= EXACT_SQNR_DB ? 'exact' : `${value.toFixed(1)} dB`;
  return diagnosis.worst.slice(0, 3).map((name) => {
    const layer = diagnosis.layers.find((l) => l.name === name)!;
    const own = layer.localSqnrDb;
    return (
      `worst layer ${layer.rank}: ${layer.name} (${layer.op}), own SQNR weights ${db(own.weights)}, ` +
      `activations ${db(own.activations)} → ${layer.suggestion}: ${layer.reason}`
    );
  });
}

/** Runs one command line and sets the exit code: 0, 1 when it failed, 2 on bad input. */
export async function run(argv: string[]): Promise<void> {
  try {
    process.exitCode = await main(argv);
  } catch (error) {
    process.stderr.write(`qaas: ${await describeFailure(error)}\n`);
    process.exitCode = (await isBadInput(error)) ? 2 : 1;
  }
}

/*
 * The error classes of the client and the spec are imported only once something failed, so that a command
 * that needs neither does not load them (the spec's module brings TypeBox).
 */

async function isBadInput(error: unknown): Promise<boolean> {
  const { ApiError } = await import('../client/index.js');
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? '';
  return (
    error instanceof UsageError ||
    error instanceof InputError ||
    (error instanceof ApiError && error.status < 500) ||
    code === 'ENOENT' ||
    code.startsWith('ERR_PARSE_ARGS')
  );
}

async function describeFailure(error: unknown): Promise<string> {
  // Every SpecError says so in its problem type.
  if (error instanceof InputError && error.problem === 'invalid-job-spec') {
    const { SpecError } = await import('../jobs/spec.js');
    if (error instanceof SpecError) return `invalid spec: ${error.message}`;
  }
  if (error instanceof Error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      return `not found: ${(error as NodeJS.ErrnoException).path}`;
    return error.message;
  }
  return String(error);
}

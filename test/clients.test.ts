/**
 * The clients for pipelines, against a listening service with a sandboxed worker: the single-file Python
 * client (clients/python/qaas_client.py, run by python3 as a user would) uploads, submits, follows and
 * downloads a model/ that stock tfjs loads; its library follows a job over SSE, and by polling through a
 * proxy that refuses the event stream; and the TypeScript client is a package entry (`qaas/client`) that a
 * consumer project imports and type-checks against.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import { buildApp } from '../src/http/app.js';
import { createRng } from '../src/quant/rng.js';
import { startWorkers, type Closable } from '../src/service.js';
import { readFileSetFromDir } from '../src/model/read.js';
import { writeTreeAtomically } from '../src/storage/tree.js';
import { loadStockLayers } from './fixtures/models.js';
import { cleanup, denseModel, testConfig } from './http/helpers.js';
import { npyOf } from './model/dataset/npy-fixture.js';

const run = promisify(execFile);
const repo = new URL('..', import.meta.url).pathname;
const pythonClient = join(repo, 'clients/python/qaas_client.py');

let config: Config;
let app: FastifyInstance;
let workers: Closable;
let baseUrl: string;
let dir: string;

async function exec(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(command, args, { ...options, maxBuffer: 16 << 20 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Three classes told apart by which of the first three of four features is largest. */
function classification(samples: number): { x: number[]; y: number[] } {
  const rng = createRng(5);
  const x: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < samples; i++) {
    const row = [rng.next(), rng.next(), rng.next(), rng.next()];
    x.push(...row);
    y.push(row.slice(0, 3).indexOf(Math.max(...row.slice(0, 3))));
  }
  return { x, y };
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  config = await testConfig({ QAAS_RATE_LIMIT_MAX: '100000' });
  app = await buildApp(config, { logger: false });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  workers = startWorkers(config, { concurrency: 1 });
  dir = await mkdtemp(join(tmpdir(), 'qaas-clients-'));
  await writeTreeAtomically(join(dir, 'model'), await denseModel([4, 16, 3]));
  const { x, y } = classification(64);
  await writeFile(join(dir, 'x.npy'), npyOf('<f4', [64, 4], x));
  await writeFile(join(dir, 'y.npy'), npyOf('<i8', [64], y));
});

afterAll(async () => {
  await workers?.close();
  await app?.close();
  if (config) await cleanup(config);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the Python client', () => {
  it('quantize: uploads the model and the spec’s local data, follows the job, downloads a model/ stock tfjs loads', async () => {
    const spec = join(dir, 'spec.json');
    await writeFile(
      spec,
      JSON.stringify({
        method: { name: 'affine', bits: 8, granularity: 'per-channel' },
        data: { evaluation: `${join(dir, 'x.npy')},${join(dir, 'y.npy')}` },
      }),
    );
    const out = join(dir, 'out');
    const result = await exec('python3', [
      pythonClient,
      'quantize',
      join(dir, 'model'),
      '--spec',
      spec,
      '--out',
      out,
      '--api',
      baseUrl,
    ]);
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^model mdl_\w+$/);
    expect(lines[1]).toMatch(/^data\.evaluation ds_\w+$/);
    expect(lines[2]).toMatch(/^job job_\w+ queued$/);
    expect(lines.filter((line) => /^\[100\.0%\] \w+$/.test(line))).toHaveLength(1);
    expect(lines.at(-1)).toBe(`wrote ${out}/{model,packed,report.json}`);
    expect(result.stdout).toMatch(/^2 tensors quantized, 0 skipped; packed \d+ B/);

    // What was downloaded is what the service stores, byte for byte, and it loads in stock tfjs.
    const jobId = lines[2].split(' ')[1];
    const served = await app.inject({ url: `/v1/jobs/${jobId}/artifacts/model/model.json` });
    expect(await readFile(join(out, 'model', 'model.json'), 'utf8')).toBe(served.body);
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(report.model.metrics.ptq.samples).toBe(64);
    const printedLines = result.stdout.trimEnd().split('\n');
    // The diagnosis closes the summary: 8-bit per-channel weights leave every layer healthy.
    expect(report.diagnosis.worst).toEqual([]);
    expect(printedLines.at(-1)).toBe("diagnosis: every layer's own SQNR is at least 30 dB");
    // A ranked layer prints as the TypeScript CLI prints it: the summary of this report with one named worst.
    const layer = report.diagnosis.layers[0];
    const ranked = join(dir, 'ranked-report.json');
    await writeFile(ranked, JSON.stringify({ ...report, diagnosis: { ...report.diagnosis, worst: [layer.name] } }));
    const summary = await exec('python3', [
      '-c',
      'import json, sys; sys.path.insert(0, sys.argv[1]); import qaas_client; ' +
        'print(qaas_client._summary(json.load(open(sys.argv[2]))))',
      dirname(pythonClient),
      ranked,
    ]);
    const own = (db: number) => (db >= 144.49 ? 'exact' : `${db.toFixed(1)} dB`);
    expect(summary.stdout.trimEnd().split('\n').at(-1)).toBe(
      `worst layer ${layer.rank}: ${layer.name} (${layer.op}), own SQNR weights ${own(layer.localSqnrDb.weights)}, ` +
        `activations - -> ${layer.suggestion}: ${layer.reason}`,
    );
    // The summary's ptq line is the report's ptq metrics to 4 decimals (Python rounds a tie such as
    // accuracy 18/64 = 0.28125 to even, so the printed value is within half a unit of the 4th decimal).
    const ptqLine = printedLines.find((line) => line.startsWith('ptq: '))!;
    expect(ptqLine).toMatch(/^ptq: samples 64, accuracy /);
    const printed = ptqLine
      .slice('ptq: '.length)
      .split(', ')
      .map((pair) => pair.split(' '));
    const metrics = report.model.metrics.ptq as Record<string, number>;
    expect(printed.map(([name]) => name)).toEqual(Object.keys(metrics));
    for (const [name, value] of printed) {
      expect(Math.abs(Number(value) - metrics[name]), `${name} ${value}`).toBeLessThanOrEqual(0.5e-4 + 1e-12);
    }
    const source = await loadStockLayers(await readFileSetFromDir(join(dir, 'model')));
    const quantized = await loadStockLayers(await readFileSetFromDir(join(out, 'model')));
    const input = tf.tensor2d(classification(8).x, [8, 4]);
    const [expected, actual] = [source, quantized].map((m) => m.predict(input) as tf.Tensor);
    expect(actual.shape).toEqual([8, 3]);
    // 8-bit per-channel weights: the outputs move, by far less than the outputs themselves.
    const error = tf.tidy(() => tf.max(tf.abs(tf.sub(expected, actual))).dataSync()[0]);
    expect(error).toBeGreaterThan(0);
    expect(error).toBeLessThan(0.05);
    tf.dispose([input, expected, actual]);
    source.dispose();
    quantized.dispose();
  });

  it('quantize: exit 2 with the service’s message on a bad spec, 2 on a missing model, 2 on a usage error', async () => {
    const spec = join(dir, 'bad-spec.json');
    await writeFile(spec, JSON.stringify({ method: { name: 'int3' } }));
    const bad = await exec('python3', [
      pythonClient,
      'quantize',
      join(dir, 'model'),
      '--spec',
      spec,
      '--out',
      join(dir, 'bad'),
      '--api',
      baseUrl,
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^model mdl_\w+\nqaas: 400 .*int3.*affine, float16, binary/s);
    const missing = await exec('python3', [
      pythonClient,
      'quantize',
      join(dir, 'nope'),
      '--spec',
      spec,
      '--out',
      join(dir, 'bad'),
      '--api',
      baseUrl,
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(`qaas: not found: ${join(dir, 'nope')}\n`);
    const usage = await exec('python3', [pythonClient, 'quantize', join(dir, 'model')]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('the following arguments are required: --spec, --out');
  });

  it('the library: idempotent submit, wait over SSE, and wait by polling where the event stream is refused', async () => {
    // A proxy in front of the service that answers 404 to every event stream, as a gateway without SSE might.
    const script = `
import json, sys, threading, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
sys.path.insert(0, ${JSON.stringify(join(repo, 'clients/python'))})
from qaas_client import Client, ApiError
api = sys.argv[1]

class Proxy(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def forward(self):
        if self.path.endswith("/events"):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(api + self.path, data=body, headers=headers, method=self.command)
        try:
            response = urllib.request.urlopen(request)
        except urllib.error.HTTPError as error:
            response = error
        data = response.read()
        self.send_response(response.status if hasattr(response, "status") else response.code)
        self.send_header("Content-Type", response.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = forward

proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
threading.Thread(target=proxy.serve_forever, daemon=True).start()

client = Client(api)
model = client.upload_model(${JSON.stringify(join(dir, 'model'))})
data = client.upload_dataset([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], [2, 0])
spec = {"modelId": model["id"], "method": {"name": "affine", "bits": 4}, "data": {"evaluation": data["id"]}}
first = client.submit(spec, idempotency_key="clients-test-" + model["id"])
again = client.submit(spec, idempotency_key="clients-test-" + model["id"])
sse = []
done = client.wait(first["id"], on_event=lambda event, payload: sse.append(event))
polled = []
other = client.submit(dict(spec, method={"name": "ternary"}))
via_proxy = Client("http://127.0.0.1:%d" % proxy.server_port).wait(other["id"], on_event=lambda e, p: polled.append(e), poll_seconds=0.2)
try:
    client.report("job_doesnotexist")
    missing = None
except ApiError as error:
    missing = [error.status, error.problem["type"]]
print(json.dumps({"same": first["id"] == again["id"], "status": done["status"], "sse": sse,
                  "proxied": via_proxy["status"], "polled": polled, "report": client.report(other["id"])["spec"]["method"]["name"],
                  "dataset": data["id"], "missing": missing}))
proxy.shutdown()
`;
    const result = await exec('python3', ['-c', script, baseUrl]);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.same).toBe(true);
    expect(out.status).toBe('succeeded');
    expect(out.dataset).toMatch(/^ds_/);
    // SSE: the record, progress, and the final record last.
    expect(out.sse).toContain('state');
    expect(out.sse.at(-1)).toBe('final');
    expect(out.sse).toContain('progress');
    // Through the proxy: no stream, so no `state`; progress from polling, then the final record.
    expect(out.proxied).toBe('succeeded');
    expect(out.polled).not.toContain('state');
    expect(out.polled.at(-1)).toBe('final');
    expect(out.report).toBe('ternary');
    expect(out.missing).toEqual([404, 'urn:qaas:problem:not-found']);
  });
});

describe('the Python client with names and labels', () => {
  it('names and labels uploads and jobs, finds them by label, and gets the stored model back for the same files', async () => {
    const modelDir = join(dir, 'labelled-model');
    await writeTreeAtomically(modelDir, await denseModel([4, 5, 3]));
    const script = `
import json, sys
sys.path.insert(0, ${JSON.stringify(join(repo, 'clients/python'))})
from qaas_client import Client, ApiError
client = Client(sys.argv[1])
first = client.upload_model(sys.argv[2], name="labelled", labels={"team": "vision", "qaas.dev/stage": "dev"})
again = client.upload_model(sys.argv[2], name="other name")
data = client.upload_dataset([[0.5, 0.1, 0.2, 0.3], [0.9, 0.8, 0.7, 0.6]], [0, 1], name="eval set", labels={"split": "eval"})
job = client.submit({"modelId": first["id"], "method": {"name": "affine"}, "name": "py job", "labels": {"team": "vision"}})
try:
    client.upload_model(sys.argv[2], labels={"bad key": "x"})
    bad = None
except ApiError as error:
    bad = [error.status, error.problem["type"]]
print(json.dumps({
    "first": first, "again": again, "dataset": data, "job": job, "bad": bad,
    "models": [m["id"] for m in client.models(labels={"team": "vision", "qaas.dev/stage": "dev"})],
    "named": [m["id"] for m in client.models(name="labelled")],
    "datasets": [d["id"] for d in client.datasets(labels={"split": "eval"})],
    "jobs": [j["id"] for j in client.jobs(labels={"team": "vision"})],
}))
`;
    const result = await exec('python3', ['-c', script, baseUrl, modelDir]);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.first).toMatchObject({ name: 'labelled', labels: { team: 'vision', 'qaas.dev/stage': 'dev' } });
    // The same files: the stored model as it was, not renamed.
    expect(out.again.id).toBe(out.first.id);
    expect(out.again.name).toBe('labelled');
    expect(out.dataset).toMatchObject({ name: 'eval set', labels: { split: 'eval' }, samples: 2 });
    expect(out.job).toMatchObject({ name: 'py job', labels: { team: 'vision' }, modelId: out.first.id });
    expect(out.bad).toEqual([400, 'urn:qaas:problem:invalid-request']);
    expect(out.models).toEqual([out.first.id]);
    expect(out.named).toEqual([out.first.id]);
    expect(out.datasets).toEqual([out.dataset.id]);
    expect(out.jobs).toEqual([out.job.id]);
  });
});

describe('the TypeScript client as the package entry qaas/client', () => {
  it('is imported by name from a consumer project, with types that tsc checks', async () => {
    const consumer = await mkdtemp(join(tmpdir(), 'qaas-consumer-'));
    try {
      await mkdir(join(consumer, 'node_modules', '@types'), { recursive: true });
      // As `npm install /path/to/qaas` links it.
      await symlink(repo, join(consumer, 'node_modules', 'qaas'));
      await symlink(join(repo, 'node_modules', '@types', 'node'), join(consumer, 'node_modules', '@types', 'node'));
      await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module' }));
      const tsconfig = {
        compilerOptions: {
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          lib: ['ES2022', 'DOM'],
        },
      };
      await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({ ...tsconfig, files: ['good.ts', 'bad.ts'] }));
      await writeFile(
        join(consumer, 'good.ts'),
        `import { ApiError, QaasClient, type RemoteJob } from 'qaas/client';
const client = new QaasClient(process.argv[2]);
const model: { id: string } = await client.uploadModel(process.argv[3]);
const named: { created: boolean; name?: string } = await client.uploadModel(process.argv[3], { name: 'n', labels: { a: 'b' } });
const done = (job: RemoteJob): boolean => job.status === 'succeeded';
try {
  await client.job('job_none');
} catch (error) {
  if (error instanceof ApiError) console.log(JSON.stringify({ model: model.id, status: error.status, done: typeof done }));
}
`,
      );
      await writeFile(
        join(consumer, 'bad.ts'),
        `import { QaasClient } from 'qaas/client';\nconst id: number = (await new QaasClient('http://x').uploadModel('m')).id;\nexport { id };\n`,
      );
      const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
      // One run over both files: good.ts type-checks against the exported declarations, bad.ts is caught by them.
      const checked = await exec(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: consumer });
      expect(checked.code).toBe(2);
      expect(checked.stdout.trim().split('\n')).toEqual([
        "bad.ts(2,7): error TS2322: Type 'string' is not assignable to type 'number'.",
      ]);

      // Run as JavaScript: the same import resolves through package.json "exports" to dist/.
      await writeFile(
        join(consumer, 'good.mjs'),
        `import { ApiError, QaasClient } from 'qaas/client';
const client = new QaasClient(process.argv[2]);
const model = await client.uploadModel(process.argv[3]);
const again = await client.uploadModel(process.argv[3], { name: 'renamed?', labels: { via: 'ts' } });
try {
  await client.job('job_none');
} catch (error) {
  if (error instanceof ApiError)
    console.log(JSON.stringify({ model: model.id, again, status: error.status }));
}
`,
      );
      const ran = await exec(process.execPath, [join(consumer, 'good.mjs'), baseUrl, join(dir, 'model')], {
        cwd: consumer,
      });
      expect(ran.stderr).toBe('');
      const printed = JSON.parse(ran.stdout);
      expect(printed.model).toMatch(/^mdl_/);
      // The same files again: the stored model, not a new one, and not renamed by the second upload.
      expect(printed.again).toMatchObject({ id: printed.model, created: false });
      expect(printed.again.name).not.toBe('renamed?');
      expect(printed.again.labels?.via).toBeUndefined();
      expect(printed.status).toBe(404);
      // Only the declared entry is public: a deep import is refused by "exports".
      const deep = await exec(
        process.execPath,
        ['--input-type=module', '-e', "await import('qaas/dist/src/config.js')"],
        { cwd: consumer },
      );
      expect(deep.code).toBe(1);
      expect(deep.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');
    } finally {
      await rm(consumer, { recursive: true, force: true });
    }
  });
});

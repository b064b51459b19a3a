/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real server with
 * a sandboxed worker: upload the layers fixture through the UI, get a server validation error shown next to
 * its field, create a job from the generated form, watch its progress bar reach 100% from SSE (no polling),
 * read the report's charts, and run "try it" — its printed outputs must match stock tfjs in Node within
 * 1e-5. Screenshots land in test/artifacts/. Also: names and labels in the tables and on the job page, the
 * filter box (labels and names, kept in the hash), user-given strings shown as text; the models and datasets
 * pages (rows, links to a model's jobs and to a new job of it, deletes, the 409 of a record a job holds, the
 * jobs list's filter box); the dashboard's own API routes, and the key prompt.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { sharedHistogram } from '../../src/http/dashboard/api.js';
import { buildApp } from '../../src/http/app.js';
import type { FileSet } from '../../src/model/types.js';
import { startWorkers, type Closable } from '../../src/service.js';
import { buildLayersModel, LAYERS_QUANTIZABLE, loadStockLayers } from '../fixtures/models.js';
import {
  cleanup,
  denseModel,
  filesAsParts,
  multipart,
  testConfig,
  tinyModel,
  zipOf,
  type Part,
} from '../http/helpers.js';
import { npy } from '../model/dataset/npy-fixture.js';

const artifacts = new URL('../artifacts/', import.meta.url).pathname;
let config: Config;
let app: FastifyInstance;
let workers: Closable & { quantize: { pause(): Promise<void>; resume(): void } };
let baseUrl: string;
let browser: Browser;
let modelDir: string;
let source: FileSet;
let longNames: string[] = [];

/** What the test reads of a Chart.js chart in the page. */
interface ChartLike {
  data: { labels: string[] };
  options: { plugins: { tooltip: { callbacks: { title(items: { dataIndex: number }[]): string } } } };
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  config = await testConfig({ QAAS_RATE_LIMIT_MAX: '100000' });
  app = await buildApp(config, { logger: false });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  workers = startWorkers(config, { concurrency: 1 });
  source = await buildLayersModel();
  modelDir = await mkdtemp(join(tmpdir(), 'qaas-dashboard-model-'));
  for (const [path, bytes] of source) await writeFile(join(modelDir, path), bytes);
  await mkdir(artifacts, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await workers?.close();
  await app?.close();
  if (config) await cleanup(config);
  if (modelDir) await rm(modelDir, { recursive: true, force: true });
});

/** Pixels of a canvas that are drawn (alpha > 0) and how many distinct colours they use. */
/**
 * A fresh 1280×800 page that collects uncaught page errors and, given `answer`, answers every dialog so,
 * keeping its message.
 */
async function openPage(answer?: 'accept' | 'dismiss') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  const dialogs: string[] = [];
  if (answer !== undefined) {
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog[answer]();
    });
  }
  return { context, page, pageErrors, dialogs };
}

/** A models or datasets page's rows (records.js): one by id, and the ids shown, in order. */
function recordRows(page: Page) {
  return {
    row: (id: string) => page.locator(`tr[data-record="${id}"]`),
    shown: () =>
      page.locator('tbody tr[data-record]').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.record)),
  };
}

async function inked(page: Page, selector: string): Promise<{ drawn: number; colours: number }> {
  return page.$eval(selector, (canvas) => {
    const c = canvas as HTMLCanvasElement;
    const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let drawn = 0;
    const colours = new Set<number>();
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] === 0) continue;
      drawn++;
      colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    return { drawn, colours: colours.size };
  });
}

function numbers(text: string): number[] {
  return text.split(',').map((s) => Number(s.trim()));
}

describe('sharedHistogram', () => {
  it('counts both sets over the same equal-width bins, the top edge in the last bin', () => {
    const before = new Float32Array([-1, -0.5, 0, 0.25, 1]);
    const after = new Float32Array([-1, -0.5, 0, 0, 1]);
    const h = sharedHistogram(before, after, 4);
    expect(h.edges).toEqual([-1, -0.5, 0, 0.5, 1]);
    expect(h.before).toEqual([1, 1, 2, 1]);
    expect(h.after).toEqual([1, 1, 2, 1]);
    const shifted = sharedHistogram(new Float32Array([0, 0.1, 0.2]), new Float32Array([0.4]), 2);
    expect(shifted.edges.map((e) => Number(e.toFixed(6)))).toEqual([0, 0.2, 0.4]);
    expect(shifted.before).toEqual([2, 1]);
    expect(shifted.after).toEqual([0, 1]);
    expect(sharedHistogram(new Float32Array([3, 3]), new Float32Array([3]), 2)).toEqual({
      edges: [2.5, 3, 3.5],
      before: [0, 2],
      after: [0, 1],
    });
  });
});

describe('dashboard routes', () => {
  it('serves the page, its modules and the two libraries from node_modules, nothing else', async () => {
    const page = await app.inject({ url: '/' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.body).toContain('/dashboard/app.js');
    const chart = await app.inject({ url: '/dashboard/vendor/chart.umd.js' });
    expect(chart.statusCode).toBe(200);
    expect(chart.body).toContain('Chart');
    const tfjs = await app.inject({ url: '/dashboard/vendor/tf.min.js' });
    expect(tfjs.statusCode).toBe(200);
    expect(tfjs.body.length).toBeGreaterThan(500_000);
    expect((await app.inject({ url: '/dashboard/app.js' })).headers['content-type']).toContain('javascript');
    for (const url of [
      '/dashboard/../../package.json',
      '/dashboard/vendor/other.js',
      '/dashboard/index.ts',
      '/dashboard/nope.js',
    ]) {
      const res = await app.inject({ url });
      expect(res.statusCode, url).toBe(404);
    }
  });

  it('serves an uploaded model’s own files, byte for byte', async () => {
    const files = await tinyModel();
    const upload = multipart(filesAsParts(files));
    const model = (await app.inject({ method: 'POST', url: '/v1/models', ...upload })).json();
    for (const [path, bytes] of files) {
      const res = await app.inject({ url: `/v1/models/${model.id}/files/${path}` });
      expect(res.statusCode, path).toBe(200);
      expect(new Uint8Array(res.rawPayload)).toEqual(bytes);
    }
    expect((await app.inject({ url: `/v1/models/${model.id}/files/model.json` })).headers['content-type']).toContain(
      'application/json',
    );
    expect((await app.inject({ url: `/v1/models/${model.id}/files/other.bin` })).statusCode).toBe(404);
    expect((await app.inject({ url: '/v1/models/mdl_nope/files/model.json' })).statusCode).toBe(404);
    expect((await app.inject({ url: '/v1/jobs/job_nope/tensors/x/histogram' })).statusCode).toBe(404);
  });

  it('exposes the job spec schema with every method’s params schema', async () => {
    const res = await app.inject({ url: '/v1/schema/job-spec' });
    expect(res.statusCode).toBe(200);
    const { spec, methods, trainingMethods } = res.json();
    expect(spec.properties.method.properties.name).toBeDefined();
    expect(Object.keys(methods)).toEqual([
      'affine',
      'float16',
      'binary',
      'ternary',
      'pow2',
      'kmeans',
      'pq',
      'lab',
      'admm',
      'inq',
      'ttq',
    ]);
    expect(trainingMethods).toEqual(['lab', 'admm', 'inq', 'ttq']);
    expect(methods.affine.properties.bits).toMatchObject({ type: 'integer', minimum: 2, maximum: 16, default: 8 });
  });
});

describe('the dashboard in chromium', () => {
  beforeAll(async () => {
    // Found or installed by test/global-setup.ts; without one only these tests fail, with its reason.
    const found = inject('chromium');
    if ('error' in found) throw new Error(found.error);
    browser = await chromium.launch({
      executablePath: found.path,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
      ],
    });
  });

  it('uploads, validates, creates a job, follows it by SSE, draws the report and runs the model', async () => {
    const { context, page, pageErrors } = await openPage();
    const requests: string[] = [];
    page.on('request', (request) => requests.push(new URL(request.url()).pathname + new URL(request.url()).search));

    await page.goto(`${baseUrl}/`);
    await page.getByText('No jobs yet.').waitFor();

    // Upload through the UI.
    await page.getByRole('link', { name: 'Upload & new job' }).click();
    await page.setInputFiles(
      '#model-files',
      [...source.keys()].map((path) => join(modelDir, path)),
    );
    await page.click('#model-upload');
    const modelId = (await page.locator('#model-id').textContent())!;
    expect(modelId).toMatch(/^mdl_/);
    // What a dataset must fit, from the model's own record.
    const { inputs, outputs } = (await app.inject({ url: `/v1/models/${modelId}` })).json();
    const shapes = (list: { name: string; shape: (number | null)[] }[]) =>
      list.map((t) => `${t.name} [${t.shape.map((d) => d ?? 'n').join(', ')}] float32`).join('; ');
    expect(await page.locator('#model-signature').textContent()).toBe(
      `Inputs: ${shapes(inputs)}. Outputs: ${shapes(outputs)}. Datasets must fit these (n: any batch size).`,
    );
    expect(inputs[0].shape).toEqual([null, 12]);
    await expect.poll(() => page.locator('#field-modelId').inputValue()).toBe(modelId);

    // Another model dropped on the drop zone as one zip is a second upload (the same files again would be the
    // stored model, answered as it is): one weight's lowest mantissa bit differs.
    const otherFiles = new Map(source);
    const shardPath = [...source.keys()].find((path) => path.endsWith('.bin'))!;
    const shard = Uint8Array.from(source.get(shardPath)!);
    shard[0] ^= 1;
    otherFiles.set(shardPath, shard);
    const zip = (await zipOf([...otherFiles])).toString('base64');
    const dropped = await page.evaluateHandle((base64) => {
      const transfer = new DataTransfer();
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], 'model.zip', { type: 'application/zip' }));
      return transfer;
    }, zip);
    await page.dispatchEvent('#model-drop', 'drop', { dataTransfer: dropped });
    expect(await page.locator('.file-list li').allTextContents()).toEqual([expect.stringMatching(/^model\.zip /)]);
    await page.click('#model-upload');
    await expect.poll(() => page.locator('#model-id').textContent()).not.toBe(modelId);
    const zippedId = (await page.locator('#model-id').textContent())!;
    expect(zippedId).toMatch(/^mdl_/);
    await expect.poll(() => page.locator('#field-modelId').inputValue()).toBe(zippedId);

    // A value only the server rejects shows up next to its field.
    await page.selectOption('#field-method-name', 'affine');
    await page.fill('#field-method-bits', '40');
    await page.click('#job-submit');
    const bitsError = page.locator('#field-method-bits-error');
    await bitsError.waitFor();
    expect(await bitsError.textContent()).toMatch(/16/);
    expect(await page.getAttribute('#field-method-bits', 'aria-invalid')).toBe('true');

    // The form shows the blocks the chosen kind reads, and offers the uploaded datasets by name.
    const blocks = async () =>
      page.$$eval('#job-form [data-field-path]', (nodes) =>
        nodes.filter((n) => !(n as HTMLElement).closest('[hidden]')).map((n) => (n as HTMLElement).dataset.fieldPath),
      );
    expect(await blocks()).toEqual(expect.arrayContaining(['/activations', '/data/calibration', '/layers']));
    expect(await blocks()).not.toEqual(expect.arrayContaining(['/qat']));
    expect(await blocks()).not.toContain('/search');
    expect(await blocks()).not.toContain('/data/training');
    expect(await blocks()).not.toContain('/data/verification');
    await page.selectOption('#field-kind', 'auto');
    // auto takes calibration data for its learned-rounding candidates and a held-out verification set.
    expect(await blocks()).toEqual(
      expect.arrayContaining([
        '/search',
        '/target',
        '/qat',
        '/data/training',
        '/data/calibration',
        '/data/verification',
      ]),
    );
    expect(await blocks()).not.toContain('/activations');
    await page.selectOption('#field-kind', 'ptq');
    expect(await page.locator('#field-data-evaluation').evaluate((n) => n.tagName)).toBe('SELECT');
    const npyDir = await mkdtemp(join(tmpdir(), 'qaas-dashboard-data-'));
    await writeFile(join(npyDir, 'x.npy'), npy('<f4', [5, 12], new Uint8Array(new Float32Array(60).buffer)));
    await page.setInputFiles('#dataset-x', join(npyDir, 'x.npy'));
    await page.getByRole('button', { name: 'Upload dataset' }).click();
    const datasetId = (await page.locator('#dataset-id').textContent())!;
    expect(datasetId).toMatch(/^ds_/);
    await rm(npyDir, { recursive: true, force: true });
    expect(await page.locator('#field-data-evaluation option').allTextContents()).toEqual([
      'None',
      `${datasetId} (5 samples, x 5×12)`,
    ]);
    await page.screenshot({ path: join(artifacts, 'dashboard-new-job.png'), fullPage: true, animations: 'disabled' });

    // Hold the worker so the jobs page is open before any progress happens.
    await workers.quantize.pause();
    await page.fill('#field-method-bits', '8');
    await page.click('#job-submit');
    const jobId = (await page.locator('#new-job-link').textContent())!;
    expect(jobId).toMatch(/^job_/);
    expect(await bitsError.isHidden()).toBe(true);

    await page.getByRole('link', { name: 'Watch it on the jobs page.' }).click();
    const bar = page.locator(`tr[data-job="${jobId}"] [role=progressbar]`);
    await expect.poll(() => bar.getAttribute('data-source')).toBe('sse');
    const listRequests = requests.filter((r) => r.startsWith('/v1/jobs?')).length;
    await bar.evaluate((node) => {
      const seen: number[] = [];
      (window as unknown as { seenProgress: number[] }).seenProgress = seen;
      new MutationObserver(() => seen.push(Number(node.getAttribute('aria-valuenow')))).observe(node, {
        attributeFilter: ['aria-valuenow'],
      });
    });
    workers.quantize.resume();
    await expect.poll(() => bar.getAttribute('aria-valuenow'), { timeout: 30_000 }).toBe('100');
    const seen = await page.evaluate(() => (window as unknown as { seenProgress: number[] }).seenProgress);
    expect(seen.some((v) => v > 0 && v < 100)).toBe(true);
    expect(await bar.getAttribute('data-source')).toBe('sse');
    // Live updates came from the stream: the list was fetched once, never polled, and no job was polled.
    expect(requests.filter((r) => r.startsWith('/v1/jobs?')).length).toBe(listRequests);
    expect(requests.filter((r) => r === `/v1/jobs/${jobId}`)).toEqual([]);
    expect(requests).toContain(`/v1/jobs/${jobId}/events`);
    await page.locator(`tr[data-job="${jobId}"] .badge.succeeded`).waitFor();
    // Precision and result size tell jobs apart: the live row got the summary from the stream's final event.
    const { summary, spec: uiSpec } = (await app.inject({ url: `/v1/jobs/${jobId}` })).json();
    expect(uiSpec.method).toMatchObject({ bits: 8, granularity: 'per-tensor' });
    const rowText = await page.locator(`tr[data-job="${jobId}"]`).innerText();
    expect(rowText).toContain('8-bit · per-tensor');
    expect(rowText).toContain(`(${summary.compressionRatio.toFixed(1)}×)`);
    const fourBit = (
      await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId, method: { name: 'affine', bits: 4 } },
      })
    ).json().id;
    await page.reload();
    await page.locator(`tr[data-job="${fourBit}"] .badge.succeeded`).waitFor({ timeout: 30_000 });
    const fourBitSummary = (await app.inject({ url: `/v1/jobs/${fourBit}` })).json().summary;
    expect(fourBitSummary.packedBytes).toBeLessThan(summary.packedBytes);
    expect(await page.locator(`tr[data-job="${fourBit}"]`).innerText()).toContain('4-bit · per-tensor');
    await page.screenshot({ path: join(artifacts, 'dashboard-jobs.png'), animations: 'disabled' });

    // The report as pictures.
    await page.click(`a[href="#/jobs/${jobId}"]`);
    await page.locator('#chart-histogram[data-tensor]').waitFor();
    const report = (await app.inject({ url: `/v1/jobs/${jobId}/report` })).json();
    expect(report.tensors.map((t: { name: string }) => t.name)).toEqual(LAYERS_QUANTIZABLE);
    expect(await page.locator('#tensor-table tbody tr').count()).toBe(LAYERS_QUANTIZABLE.length);
    for (const id of ['chart-sqnr', 'chart-bytes', 'chart-totals', 'chart-histogram']) {
      const { drawn, colours } = await inked(page, `#${id}`);
      expect(drawn, id).toBeGreaterThan(2000);
      expect(colours, id).toBeGreaterThan(3);
    }
    await page.selectOption('#histogram-tensor', 'dense/kernel');
    await expect.poll(() => page.getAttribute('#chart-histogram', 'data-tensor')).toBe('dense/kernel');
    // dense/kernel is 6×10; 8-bit affine leaves at most 256 distinct values.
    const levels = Number(
      /^6×10 weights; (\d+) distinct values/.exec((await page.locator('#histogram-note').textContent())!)?.[1],
    );
    expect(levels).toBeGreaterThan(1);
    expect(levels).toBeLessThanOrEqual(256);
    const histogram = (
      await app.inject({ url: `/v1/jobs/${jobId}/tensors/${encodeURIComponent('dense/kernel')}/histogram?bins=16` })
    ).json();
    expect(histogram.edges).toHaveLength(17);
    const total = (counts: number[]) => counts.reduce((a, b) => a + b, 0);
    expect([total(histogram.before), total(histogram.after)]).toEqual([60, 60]);
    expect(histogram.levelsAfter).toBe(levels);
    expect((await app.inject({ url: `/v1/jobs/${jobId}/tensors/nope/histogram` })).statusCode).toBe(404);
    const downloads = await page
      .locator('.downloads a')
      .evaluateAll((links) => links.map((a) => a.getAttribute('href')));
    expect(downloads).toContain(`/v1/jobs/${jobId}/artifacts.zip`);
    expect(downloads).toContain(`/v1/jobs/${jobId}/artifacts/model/model.json`);

    // Try it: stock TF.js in the page against stock tfjs in Node.
    await page.click('#tryit-load');
    await page.locator('#tryit-status[data-ready]').waitFor({ timeout: 30_000 });
    await page.click('#tryit-run');
    await page.locator('#tryit-run[data-runs="1"]').waitFor();
    const sample = JSON.parse(await page.inputValue('#tryit-sample')) as number[];
    const inBrowser = {
      float: numbers((await page.locator('#tryit-float').textContent())!),
      quantized: numbers((await page.locator('#tryit-quantized').textContent())!),
    };
    const artifactFiles: FileSet = new Map();
    for (const path of report.spec ? ['model.json', 'group1-shard1of1.bin'] : []) {
      const res = await app.inject({ url: `/v1/jobs/${jobId}/artifacts/model/${path}` });
      expect(res.statusCode).toBe(200);
      artifactFiles.set(path, new Uint8Array(res.rawPayload));
    }
    const [floatModel, quantizedModel] = await Promise.all([loadStockLayers(source), loadStockLayers(artifactFiles)]);
    const x = tf.tensor2d(sample, [1, sample.length]);
    const inNode = {
      float: Array.from((floatModel.predict(x) as tf.Tensor).dataSync()),
      quantized: Array.from((quantizedModel.predict(x) as tf.Tensor).dataSync()),
    };
    x.dispose();
    for (const which of ['float', 'quantized'] as const) {
      expect(inBrowser[which]).toHaveLength(4);
      inBrowser[which].forEach((v, i) => expect(Math.abs(v - inNode[which][i]), which).toBeLessThan(1e-5));
    }
    // Quantized weights change the output a little, not completely.
    expect(inBrowser.quantized).not.toEqual(inBrowser.float);

    // A row of a local .npy dataset as the sample: the page parses the file and takes row 2 itself.
    const rows = Float32Array.from({ length: 3 * 12 }, (_, i) => (i * 7) % 16);
    const datasetDir = await mkdtemp(join(tmpdir(), 'qaas-tryit-'));
    const npyPath = join(datasetDir, 'rows.npy');
    await writeFile(npyPath, npy('<f4', [3, 12], new Uint8Array(rows.buffer)));
    await page.fill('#tryit-row', '2');
    await page.setInputFiles('#tryit-dataset', npyPath);
    const row = Array.from(rows.slice(24, 36));
    await expect.poll(async () => JSON.parse(await page.inputValue('#tryit-sample'))).toEqual(row);
    await page.click('#tryit-run');
    await page.locator('#tryit-run[data-runs="2"]').waitFor();
    const rowInBrowser = numbers((await page.locator('#tryit-quantized').textContent())!);
    const rowTensor = tf.tensor2d(row, [1, 12]);
    const rowInNode = Array.from((quantizedModel.predict(rowTensor) as tf.Tensor).dataSync());
    rowTensor.dispose();
    rowInBrowser.forEach((v, i) => expect(Math.abs(v - rowInNode[i])).toBeLessThan(1e-5));
    await rm(datasetDir, { recursive: true, force: true });
    await page.screenshot({ path: join(artifacts, 'dashboard-job.png'), fullPage: true, animations: 'disabled' });

    // A job page opened before its job runs: timeline, log lines and then the report, all from the stream.
    await workers.quantize.pause();
    const second = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId, method: { name: 'ternary' } } })
    ).json();
    await page.goto(`${baseUrl}/#/jobs/${second.id}`);
    await expect.poll(() => page.locator('.timeline [aria-current=step]').textContent()).toBe('queued');
    await expect.poll(() => page.getAttribute('[role=progressbar]', 'data-source')).toBe('sse');
    workers.quantize.resume();
    await page.locator('#chart-sqnr').waitFor({ timeout: 30_000 });
    expect(await page.locator('.log li').count()).toBeGreaterThan(2);
    expect(await page.locator('.log li').allTextContents()).toContainEqual(
      expect.stringMatching(/quantizing dense\/kernel \(ternary\)/),
    );
    expect(await page.locator('.timeline li.done').count()).toBe(await page.locator('.timeline li').count());
    expect((await inked(page, '#chart-sqnr')).drawn).toBeGreaterThan(2000);
    expect(requests.filter((r) => r === `/v1/jobs/${second.id}`)).toHaveLength(1);

    // Sections for reports the accuracy and auto work will produce: metrics per stage, frontier, sensitivity.
    await page.route(`**/v1/jobs/${second.id}/report`, async (route) => {
      const real = await (await route.fetch()).json();
      real.model.metrics = {
        float: { accuracy: 0.91, top5: 1 },
        ptq: { accuracy: 0.88, top5: 0.99 },
        qat: { accuracy: 0.9, top5: 1 },
      };
      real.frontier = [
        { bytes: 3000, metrics: { accuracy: 0.91 } },
        { bytes: 1200, metrics: { accuracy: 0.9 }, chosen: true },
        { bytes: 700, metrics: { accuracy: 0.7 } },
      ];
      // MobileNet-like names, alike at both ends: the axis must still tell them apart.
      longNames = real.tensors.map(
        (_: unknown, i: number) => `MobilenetV2/expanded_conv_${i + 1}/depthwise/depthwise_weights`,
      );
      real.tensors.forEach((t: { name: string }, i: number) => (t.name = longNames[i]));
      real.sensitivity = [
        { name: 'dense/kernel', bits: 4, drop: 0.012 },
        { name: 'logits/kernel', bits: 4, drop: 0.08 },
      ];
      await route.fulfill({ json: real });
    });
    await page.reload();
    await page.locator('#chart-frontier').waitFor();
    for (const id of ['chart-metrics', 'chart-frontier'])
      expect((await inked(page, `#${id}`)).drawn, id).toBeGreaterThan(1000);
    expect(await page.getByRole('row', { name: /logits\/kernel 4 0\.08/ }).count()).toBe(1);
    const axis = () =>
      page.$eval('#chart-sqnr', (canvas) => {
        const chart = (window as unknown as { Chart: { getChart(c: Element): ChartLike } }).Chart.getChart(canvas);
        return {
          labels: chart.data.labels,
          hover: chart.data.labels.map((_, i) => chart.options.plugins.tooltip.callbacks.title([{ dataIndex: i }])),
        };
      });
    // Long names get the chart a row of its own, with room for them whole.
    expect((await axis()).labels).toEqual(longNames);
    await page.screenshot({ path: join(artifacts, 'dashboard-job-long-names.png'), fullPage: true });
    // Too narrow for them: the distinguishing segment stays, the full name is on hover.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator('#chart-frontier').waitFor();
    const narrow = await axis();
    narrow.labels.forEach((label, i) => expect(label).toMatch(new RegExp(`^expanded_conv_${i + 1}/…$`)));
    expect(narrow.hover).toEqual(longNames);
    await page.screenshot({ path: join(artifacts, 'dashboard-job-long-names-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.unroute(`**/v1/jobs/${second.id}/report`);

    // An ended job can be deleted from its page, after a confirmation; the list no longer has it.
    expect(await page.locator('dt:text-is("Priority") + dd').textContent()).toBe('0');
    await page.locator('#job-spec summary').click();
    const shownSpec = JSON.parse((await page.locator('#job-spec pre').textContent())!);
    expect(shownSpec).toMatchObject({ kind: 'ptq', method: { name: 'ternary' }, priority: 0 });
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Delete job' }).click();
    await page.waitForURL(/#\/jobs$/);
    await page.locator(`tr[data-job="${jobId}"]`).waitFor();
    expect(await page.locator(`tr[data-job="${second.id}"]`).count()).toBe(0);
    expect((await app.inject({ url: `/v1/jobs/${second.id}` })).statusCode).toBe(404);

    // A model id in the list links to that model's jobs.
    const other = multipart(filesAsParts(await denseModel([12, 4])));
    const otherModel = (await app.inject({ method: 'POST', url: '/v1/models', ...other })).json().id;
    const otherJob = (
      await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId: otherModel, method: { name: 'float16' } },
      })
    ).json().id;
    await page.reload();
    await page.locator(`tr[data-job="${otherJob}"]`).waitFor();
    const modelLink = page.locator(`tr[data-job="${jobId}"] a[href^="#/jobs?modelId="]`);
    const jobModel = (await modelLink.getAttribute('href'))!.slice('#/jobs?modelId='.length);
    await modelLink.click();
    await page.locator('#model-filter').waitFor();
    await page.locator(`tr[data-job="${jobId}"]`).waitFor();
    expect(await page.locator(`tr[data-job="${otherJob}"]`).count()).toBe(0);
    expect(page.url()).toContain(`#/jobs?modelId=${jobModel}`);

    // Phone width: the page reflows instead of scrolling sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${baseUrl}/#/jobs`);
    await page.locator(`tr[data-job="${jobId}"]`).waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: join(artifacts, 'dashboard-jobs-phone.png'), animations: 'disabled' });
    await page.goto(`${baseUrl}/#/jobs/${jobId}`);
    await page.locator('#chart-histogram[data-tensor]').waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.screenshot({ path: join(artifacts, 'dashboard-job-phone.png'), fullPage: true, animations: 'disabled' });
    expect(pageErrors).toEqual([]);
    await context.close();
  });

  it('charts the diagnosis of a job with evaluation data: a bar pair per layer, the worst layers in red', async () => {
    const upload = multipart(filesAsParts(source));
    const modelId = (await app.inject({ method: 'POST', url: '/v1/models', ...upload })).json().id;
    // Token ids of the layers fixture (vocabulary 16, 12 per sample), as float32 as the model takes them.
    const tokens = Float32Array.from({ length: 24 * 12 }, (_, i) => (i * 7 + Math.floor(i / 12) * 3) % 16);
    const data = multipart([
      { field: 'x', filename: 'x.npy', data: npy('<f4', [24, 12], new Uint8Array(tokens.buffer)) },
    ]);
    const datasetId = (await app.inject({ method: 'POST', url: '/v1/datasets', ...data })).json().id;
    const submitted = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: {
        modelId,
        method: { name: 'affine', bits: 3, granularity: 'per-channel' },
        data: { calibration: datasetId, evaluation: datasetId },
        activations: { bits: 8 },
      },
    });
    expect(submitted.statusCode, submitted.body).toBe(202);
    const jobId = submitted.json().id;
    await expect
      .poll(async () => (await app.inject({ url: `/v1/jobs/${jobId}` })).json().status, { timeout: 60_000 })
      .toBe('succeeded');
    const { diagnosis } = (await app.inject({ url: `/v1/jobs/${jobId}/report` })).json();
    expect(diagnosis.layers.length).toBeGreaterThanOrEqual(7);
    // 3-bit weights leave every quantized layer below the healthy level: there are worst layers to show.
    expect(diagnosis.worst.length).toBeGreaterThanOrEqual(3);

    const { context, page, pageErrors } = await openPage();
    await page.goto(`${baseUrl}/#/jobs/${jobId}`);
    await page.locator('#chart-diagnosis').waitFor({ timeout: 30_000 });
    const chart = await page.$eval('#chart-diagnosis', (canvas) => {
      type Colour = (context: { dataIndex?: number }) => string;
      const c = (
        window as unknown as {
          Chart: {
            getChart(c: Element): {
              data: { labels: string[]; datasets: { label: string; data: number[]; backgroundColor: Colour }[] };
            };
          };
        }
      ).Chart.getChart(canvas);
      return {
        labels: c.data.labels,
        datasets: c.data.datasets.map((d) => ({
          label: d.label,
          data: d.data,
          colours: d.data.map((_, i) => d.backgroundColor({ dataIndex: i })),
          legend: d.backgroundColor({}),
        })),
      };
    });
    const names = diagnosis.layers.map((l: { name: string }) => l.name);
    expect(chart.labels).toEqual(names);
    expect(chart.datasets.map((d) => d.label)).toEqual(['weights quantized', 'activations quantized']);
    for (const d of chart.datasets) expect(d.data).toHaveLength(names.length);
    expect(chart.datasets[0].data).toEqual(
      diagnosis.layers.map((l: { localSqnrDb: { weights: number } }) => Math.min(80, l.localSqnrDb.weights)),
    );
    // The three worst layers, and only they, drawn in the highlight colour; the legend in the usual one.
    const red = names.filter((_: string, i: number) => chart.datasets[0].colours[i] === '#d92d20');
    expect(red.sort()).toEqual(diagnosis.worst.slice(0, 3).sort());
    expect(chart.datasets.map((d) => d.legend)).toEqual(['#2357c6', '#1b7f3b']);
    const { drawn, colours } = await inked(page, '#chart-diagnosis');
    expect(drawn).toBeGreaterThan(2000);
    expect(colours).toBeGreaterThan(3);
    expect(await page.locator('#diagnosis-table tbody tr').count()).toBe(names.length);
    expect(await page.locator('#diagnosis-table tbody tr.worst').count()).toBe(3);
    expect(await page.locator('#diagnosis-table tbody tr').first().locator('th').textContent()).toBe(
      diagnosis.worst[0],
    );
    await page.screenshot({
      path: join(artifacts, 'dashboard-job-diagnosis.png'),
      fullPage: true,
      animations: 'disabled',
    });
    expect(pageErrors).toEqual([]);
    await context.close();
  });

  it('shows names and labels, filters by them through the hash, and shows a name as text, never markup', async () => {
    const hostile = '<img src=x onerror=alert(1)>';
    const namesDir = await mkdtemp(join(tmpdir(), 'qaas-dashboard-names-'));
    // A model of its own: files already stored would answer with that model, unnamed.
    const modelFiles = await denseModel([12, 5]);
    const upload = multipart([
      { field: 'name', data: 'vision-net' },
      { field: 'labels', data: JSON.stringify({ team: 'vision' }) },
      ...filesAsParts(modelFiles),
    ]);
    const model = (await app.inject({ method: 'POST', url: '/v1/models', ...upload })).json();
    expect(model).toMatchObject({ name: 'vision-net', labels: { team: 'vision' } });
    const data = multipart([
      { field: 'name', data: 'calib-set' },
      { field: 'labels', data: JSON.stringify({ split: 'cal' }) },
      // Arrays of their own too (the first test stored zeros of this shape).
      { field: 'x', filename: 'x.npy', data: npy('<f4', [5, 12], new Uint8Array(new Float32Array(60).fill(3).buffer)) },
    ]);
    const dataset = (await app.inject({ method: 'POST', url: '/v1/datasets', ...data })).json();
    expect(dataset.name).toBe('calib-set');
    const submit = async (extra: Record<string, unknown>) => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId: model.id, method: { name: 'float16' }, ...extra },
      });
      expect(res.statusCode, res.body).toBe(202);
      return res.json().id as string;
    };
    const int8 = await submit({
      name: 'resnet int8',
      labels: { team: 'vision', stage: 'prod' },
      data: { evaluation: dataset.id },
    });
    const int4 = await submit({ name: 'resnet int4', labels: { team: 'vision', stage: 'dev' } });
    const evil = await submit({ name: hostile, labels: { team: 'audio', note: '<b>bold</b>' } });
    const unnamed = await submit({});
    const total = (await app.inject({ url: '/v1/jobs?limit=100' })).json().items.length;

    const { context, page, pageErrors, dialogs } = await openPage('dismiss');
    const requests: string[] = [];
    page.on('request', (request) => requests.push(new URL(request.url()).pathname + new URL(request.url()).search));
    const jobRows = page.locator('tbody tr[data-job]');
    const shownJobs = () => jobRows.evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.job));
    const row = (id: string) => page.locator(`tr[data-job="${id}"]`);

    await page.goto(`${baseUrl}/#/jobs`);
    await row(unnamed).waitFor();
    expect(await jobRows.count()).toBe(Math.min(25, total));
    // Name, id line and labels in the first cell; the model by its name once its record is in.
    expect(await row(int8).locator('.name-cell a').textContent()).toBe('resnet int8');
    expect(await row(int8).locator('.name-cell .id-line').textContent()).toBe(int8);
    expect(await row(int8).locator('.name-cell .chip').allTextContents()).toEqual(['team=vision', 'stage=prod']);
    const modelCell = row(int8).locator('a[href^="#/jobs?modelId="]');
    await expect.poll(() => modelCell.textContent()).toBe('vision-net');
    expect(await modelCell.getAttribute('title')).toContain(model.id);
    // No name: the short id, still distinct from its neighbours' (their ids share the time-based head).
    expect(await row(unnamed).locator('.name-cell a').textContent()).toBe(`job_…${unnamed.slice(-8)}`);
    expect(await row(unnamed).locator('.name-cell .chip').count()).toBe(0);
    // Every row of one model asked for the model's record once.
    expect(requests.filter((r) => r === `/v1/models/${model.id}`)).toHaveLength(1);
    // User input is text: the tags are in the text, no element was made from them, nothing ran.
    expect(await row(evil).locator('.name-cell a').textContent()).toBe(hostile);
    expect(await row(evil).locator('.chip').allTextContents()).toEqual(['team=audio', 'note=<b>bold</b>']);
    expect(await page.locator('img').count()).toBe(0);
    expect(await page.locator('.jobs-table b').count()).toBe(0);
    await page.screenshot({ path: join(artifacts, 'dashboard-jobs-names.png'), animations: 'disabled' });

    // The filter box: a label, two labels ANDed, an exact name, a quoted name with = in it, no match.
    const filterBy = async (text: string, expected: string[]) => {
      await page.fill('#job-filter', text);
      await expect.poll(shownJobs).toEqual(expected);
    };
    await filterBy('team=vision', [int4, int8]);
    await filterBy('team=vision stage=prod', [int8]);
    expect(new URL(page.url()).hash).toBe('#/jobs?label=team%3Dvision&label=stage%3Dprod');
    await page.reload();
    await expect.poll(shownJobs).toEqual([int8]);
    expect(await page.inputValue('#job-filter')).toBe('team=vision stage=prod');
    await filterBy('resnet int4', [int4]);
    expect(new URL(page.url()).hash).toBe('#/jobs?name=resnet+int4');
    await filterBy('stage=*', [int4, int8]);
    await filterBy(`"${hostile}"`, [evil]);
    await page.reload();
    await expect.poll(shownJobs).toEqual([evil]);
    expect(await page.inputValue('#job-filter')).toBe(`"${hostile}"`);
    // A key the server refuses: its problem is shown, and no rows of an earlier filter stay.
    await filterBy('team_=x', []);
    expect(await page.locator('.error-box').textContent()).toMatch(/not a label key/);
    await page.fill('#job-filter', 'team=nobody');
    await expect.poll(() => page.locator('td.empty').textContent()).toBe('No jobs matching “team=nobody”.');
    expect(await page.locator('.error-box').count()).toBe(0);
    expect(await jobRows.count()).toBe(0);
    await page.fill('#job-filter', '');
    await expect.poll(() => jobRows.count()).toBe(Math.min(25, total));
    expect(new URL(page.url()).hash).toBe('#/jobs');
    // A label chip clicked joins the filter; two chips of one row, ANDed, still find that row.
    await row(int4).locator('.chip', { hasText: 'stage=dev' }).click();
    await expect.poll(shownJobs).toEqual([int4]);
    await row(int4).locator('.chip', { hasText: 'team=vision' }).click();
    expect(await page.inputValue('#job-filter')).toBe('stage=dev team=vision');
    await expect.poll(() => new URL(page.url()).hash).toBe('#/jobs?label=stage%3Ddev&label=team%3Dvision');
    // The second click reloads the list: poll, since it is empty while the filtered page is fetched.
    await expect.poll(shownJobs).toEqual([int4]);

    // The job page: its name, id and labels, the model and the dataset by their names, each asked for once.
    const modelRequests = () => requests.filter((r) => r === `/v1/models/${model.id}`).length;
    const listViewsAsked = modelRequests();
    await page.goto(`${baseUrl}/#/jobs/${int8}`);
    expect(await page.locator('#job-name').textContent()).toBe('resnet int8');
    expect(await page.locator('#job-id').textContent()).toBe(int8);
    expect(await page.locator('.job-ids .chip').allTextContents()).toEqual(['team=vision', 'stage=prod']);
    const modelDd = page.locator('dt:text-is("Model") + dd');
    await expect.poll(() => modelDd.locator('a').textContent()).toBe('vision-net');
    expect(await modelDd.locator('.id-line').textContent()).toBe(model.id);
    const datasetDd = page.locator('dt:text-is("Data: evaluation") + dd');
    await expect.poll(() => datasetDd.locator('span').first().textContent()).toBe('calib-set');
    await page.locator('.badge.succeeded, .badge.failed').waitFor({ timeout: 30_000 });
    expect(modelRequests()).toBe(listViewsAsked + 1);
    expect(requests.filter((r) => r === `/v1/datasets/${dataset.id}`)).toHaveLength(1);
    // Renamed and relabelled from the page: a merge patch that drops the label taken out, then the name.
    await page.getByRole('button', { name: 'Edit name & labels' }).click();
    expect(await page.inputValue('#job-edit-labels')).toBe('team=vision, stage=prod');
    await page.fill('#job-edit-name', 'resnet int8 v2');
    await page.fill('#job-edit-labels', 'team=vision, owner=ana');
    await page.click('#job-edit-save');
    await expect.poll(() => page.locator('#job-name').textContent()).toBe('resnet int8 v2');
    expect(await page.locator('.job-ids .chip').allTextContents()).toEqual(['team=vision', 'owner=ana']);
    await page.screenshot({ path: join(artifacts, 'dashboard-job-names.png'), animations: 'disabled' });
    expect((await app.inject({ url: `/v1/jobs/${int8}` })).json()).toMatchObject({
      name: 'resnet int8 v2',
      labels: { team: 'vision', owner: 'ana' },
    });
    expect((await app.inject({ url: `/v1/jobs/${int8}` })).json().labels).not.toHaveProperty('stage');
    await page.getByRole('button', { name: 'Edit name & labels' }).click();
    await page.fill('#job-edit-name', '');
    await page.fill('#job-edit-labels', 'Bad Key=x');
    await page.click('#job-edit-save');
    expect(await page.locator('#job-edit .error-box').textContent()).toMatch(/labels/);
    await page.fill('#job-edit-labels', '');
    await page.click('#job-edit-save');
    await expect.poll(() => page.locator('#job-name').textContent()).toBe(`Job job_…${int8.slice(-8)}`);
    expect(await page.locator('.job-ids .chip').count()).toBe(0);
    const cleared = (await app.inject({ url: `/v1/jobs/${int8}` })).json();
    expect(cleared.name).toBeUndefined();
    expect(cleared.labels).toEqual({});
    await page.goto(`${baseUrl}/#/jobs/${evil}`);
    await expect.poll(() => page.locator('#job-name').textContent()).toBe(hostile);
    expect(await page.locator('img').count()).toBe(0);

    // The new-job form takes a name and labels as key=value, and the uploads theirs.
    await page.goto(`${baseUrl}/#/new`);
    await page.locator('#field-labels').waitFor();
    expect(await page.locator('#field-data-evaluation option').allTextContents()).toContainEqual(
      `calib-set · ${dataset.id} (5 samples, x 5×12) [split=cal]`,
    );
    const otherFiles = await denseModel([12, 6]);
    for (const [path, bytes] of otherFiles) await writeFile(join(namesDir, path), bytes);
    await page.setInputFiles(
      '#model-files',
      [...otherFiles.keys()].map((path) => join(namesDir, path)),
    );
    await page.fill('#model-name', 'uploaded-in-ui');
    await page.fill('#model-labels', 'team=vision, origin=ui');
    await page.click('#model-upload');
    const uploadedId = (await page.locator('#model-id').textContent())!;
    expect((await app.inject({ url: `/v1/models/${uploadedId}` })).json()).toMatchObject({
      name: 'uploaded-in-ui',
      labels: { team: 'vision', origin: 'ui' },
    });
    await expect.poll(() => page.locator('#field-modelId').inputValue()).toBe(uploadedId);
    await page.selectOption('#field-method-name', 'float16');
    await page.fill('#field-labels', 'team');
    await page.click('#job-submit');
    await page.locator('#field-labels-error').waitFor();
    expect(await page.locator('#field-labels-error').textContent()).toMatch(/object/);
    await page.fill('#field-name', 'from the form');
    await page.fill('#field-labels', 'team=vision, origin = ui');
    await page.click('#job-submit');
    const formJob = (await page.locator('#new-job-link').textContent())!;
    expect((await app.inject({ url: `/v1/jobs/${formJob}` })).json()).toMatchObject({
      name: 'from the form',
      labels: { team: 'vision', origin: 'ui' },
      modelId: uploadedId,
    });
    expect(dialogs).toEqual([]);
    expect(pageErrors).toEqual([]);
    await context.close();
    await rm(namesDir, { recursive: true, force: true });
  });

  it('lists the models: names as text, ids, sizes, links to their jobs and a new job, a delete refused while a job holds one', async () => {
    const hostile = '<img src=x onerror=alert(2)>';
    // Models of their own (files already stored would answer with that model, under its first name).
    const uploadModel = async (name: string, widths: number[]) => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/models',
        ...multipart([{ field: 'name', data: name }, ...filesAsParts(await denseModel(widths))]),
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json() as { id: string; bytes: number };
    };
    // More than a page of models (25), whatever the tests before stored, so that "Load more" has a page to load.
    const stored = (await app.inject({ url: '/v1/models?limit=100' })).json().items.length;
    for (let i = 0; i < 25 - stored; i++) await uploadModel(`filler ${i}`, [12, 20 + i]);
    const held = await uploadModel('listed-net', [12, 7]);
    const evil = await uploadModel(hostile, [12, 9]);
    // What formatBytes shows for these few KiB: two decimals below 10 KiB.
    for (const model of [held, evil]) expect(model.bytes).toBeGreaterThan(1024);
    for (const model of [held, evil]) expect(model.bytes).toBeLessThan(10240);
    const kib = (bytes: number) => `${(bytes / 1024).toFixed(2)} KiB`;
    const short = (id: string) => `mdl_…${id.slice(-8)}`;
    // A job that stays queued while the worker is paused holds its model: the delete must be refused.
    await workers.quantize.pause();
    const heldJob = (
      await app.inject({ method: 'POST', url: '/v1/jobs', payload: { modelId: held.id, method: { name: 'float16' } } })
    ).json().id as string;
    const total = (await app.inject({ url: '/v1/models?limit=100' })).json().items.length;
    expect(total).toBeGreaterThanOrEqual(27);

    const { context, page, pageErrors, dialogs } = await openPage('accept');
    const { row, shown: shownModels } = recordRows(page);
    const cells = (id: string) => row(id).locator('td').allTextContents();
    try {
      await page.goto(`${baseUrl}/`);
      await page.getByRole('link', { name: 'Models', exact: true }).click();
      await row(held.id).waitFor();
      expect(page.url()).toMatch(/#\/models$/);
      expect(await page.locator('[data-nav=models]').getAttribute('aria-current')).toBe('page');
      expect(await page.locator('tbody tr[data-record]').count()).toBe(25);
      // Newest first: the last one uploaded heads the list.
      expect(await page.locator('tbody tr[data-record]').first().getAttribute('data-record')).toBe(evil.id);
      const [name, id, format, inputs, params, size, created, links] = await cells(held.id);
      expect({ name, id, format, inputs, size, links }).toEqual({
        name: 'listed-net',
        id: short(held.id),
        format: 'layers-model',
        inputs: 'dense_1_input ?×12 float32',
        size: kib(held.bytes),
        links: 'JobsNew job',
      });
      expect(params).toBe(String(12 * 7 + 7));
      expect(created).toMatch(/\d{1,2}:\d{2}:\d{2}/);
      expect(await row(held.id).locator('td').nth(1).getAttribute('title')).toBe(held.id);
      // The hostile name is text: the tags are in it, no element was made from them.
      expect(await row(evil.id).locator('.record-name').textContent()).toBe(hostile);
      expect(await row(evil.id).locator('td').nth(5).textContent()).toBe(kib(evil.bytes));
      expect(await page.locator('img').count()).toBe(0);
      await page.screenshot({ path: join(artifacts, 'dashboard-models.png'), animations: 'disabled' });
      // Phone width: rows reflow as the jobs list's do, no sideways scroll.
      await page.setViewportSize({ width: 390, height: 844 });
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
      await page.screenshot({ path: join(artifacts, 'dashboard-models-phone.png'), animations: 'disabled' });
      await page.setViewportSize({ width: 1280, height: 800 });
      // The next page after the first 25, each model once, in the server's order.
      const firstPage = await shownModels();
      await page.getByRole('button', { name: 'Load more' }).click();
      await expect.poll(() => page.locator('tbody tr[data-record]').count()).toBe(Math.min(50, total));
      const listed = (await app.inject({ url: `/v1/models?limit=${Math.min(50, total)}` })).json().items;
      expect(await shownModels()).toEqual(listed.map((m: { id: string }) => m.id));
      expect((await shownModels()).slice(0, 25)).toEqual(firstPage);
      expect(await page.getByRole('button', { name: 'Load more' }).isHidden()).toBe(total <= 50);

      // Delete of a model a queued job holds: the server's 409 detail is shown and the row stays.
      await row(held.id).getByRole('button', { name: 'Delete model listed-net' }).click();
      await expect
        .poll(() => page.locator('.error-box').textContent())
        .toContain(`model ${held.id} is used by unfinished jobs: ${heldJob}`);
      expect(await row(held.id).count()).toBe(1);
      expect((await app.inject({ url: `/v1/models/${held.id}` })).statusCode).toBe(200);
      // Delete of one no job holds: its row goes, and so does the model.
      await row(evil.id)
        .getByRole('button', { name: `Delete model ${hostile}` })
        .click();
      await expect.poll(() => row(evil.id).count()).toBe(0);
      expect(await page.locator('.error-box').count()).toBe(0);
      expect((await app.inject({ url: `/v1/models/${evil.id}` })).statusCode).toBe(404);
      expect(dialogs).toEqual([`Delete model listed-net (${held.id})?`, `Delete model ${hostile} (${evil.id})?`]);

      // The jobs link: the jobs page filtered to that model, its queued job the only row.
      await row(held.id).getByRole('link', { name: 'Jobs' }).click();
      await expect
        .poll(() =>
          page.locator('tbody tr[data-job]').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.job)),
        )
        .toEqual([heldJob]);
      expect(new URL(page.url()).hash).toBe(`#/jobs?modelId=${held.id}`);
      await expect.poll(() => page.locator('#model-filter > span').textContent()).toBe('listed-net');
      // "New job": the form with that model chosen.
      await page.goBack();
      await row(held.id).getByRole('link', { name: 'New job' }).click();
      await expect.poll(() => page.locator('#field-modelId').inputValue()).toBe(held.id);
      expect(new URL(page.url()).hash).toBe(`#/new?modelId=${held.id}`);

      // The list's errors are the server's problem detail, with a retry; an empty list says what to do.
      await page.route('**/v1/models?*', (route) =>
        route.fulfill({
          status: 503,
          contentType: 'application/problem+json',
          body: JSON.stringify({ title: 'Unavailable', status: 503, detail: 'redis is not answering' }),
        }),
      );
      await page.goto(`${baseUrl}/#/models`);
      await expect.poll(() => page.locator('.error-box').textContent()).toBe('redis is not answering' + 'Retry');
      await page.unroute('**/v1/models?*');
      await page.route('**/v1/models?*', (route) => route.fulfill({ json: { items: [], nextCursor: null } }));
      await page.locator('.error-box button', { hasText: 'Retry' }).click();
      await expect.poll(() => page.locator('td.empty').textContent()).toBe('No models yet. Upload a model.');
      expect(await page.locator('.error-box').count()).toBe(0);
      expect(pageErrors).toEqual([]);
    } finally {
      await context.close();
      await app.inject({ method: 'POST', url: `/v1/jobs/${heldJob}/cancel` });
      workers.quantize.resume();
    }
  });

  it('lists the datasets: names as text, ids, samples, arrays and sizes, a delete refused while a job holds one', async () => {
    const hostile = '<b onmouseover=alert(3)>held</b>';
    const f4 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);
    // Arrays of their own: an upload of arrays already stored answers with that dataset, under its first name.
    const uploadDataset = async (name: string, parts: Part[]) => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/datasets',
        ...multipart([{ field: 'name', data: name }, ...parts]),
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json() as { id: string; bytes: number };
    };
    const labelled = await uploadDataset('eval-set', [
      { field: 'x', filename: 'x.npy', data: npy('<f4', [6, 12], f4(new Array(72).fill(7))) },
      { field: 'y', filename: 'y.npy', data: npy('<i4', [6], new Uint8Array(new Int32Array(6).fill(2).buffer)) },
    ]);
    const held = await uploadDataset(hostile, [
      { field: 'x', filename: 'x.npy', data: npy('<f4', [4, 12], f4(new Array(48).fill(8))) },
    ]);
    // .npy files this small: a 128-byte header each and the values, shown in bytes.
    expect(labelled.bytes).toBe(128 + 6 * 12 * 4 + 128 + 6 * 4);
    expect(held.bytes).toBe(128 + 4 * 12 * 4);
    const modelId = (
      await app.inject({ method: 'POST', url: '/v1/models', ...multipart(filesAsParts(await denseModel([12, 11]))) })
    ).json().id as string;
    // A job that stays queued while the worker is paused holds its calibration data.
    await workers.quantize.pause();
    const submitted = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'float16' }, data: { calibration: held.id } },
    });
    expect(submitted.statusCode, submitted.body).toBe(202);
    const heldJob = submitted.json().id as string;
    const total = (await app.inject({ url: '/v1/datasets?limit=100' })).json().items.length;

    const { context, page, pageErrors, dialogs } = await openPage('accept');
    const { row } = recordRows(page);
    try {
      await page.goto(`${baseUrl}/`);
      await page.getByRole('link', { name: 'Datasets', exact: true }).click();
      await row(labelled.id).waitFor();
      expect(page.url()).toMatch(/#\/datasets$/);
      expect(await page.locator('[data-nav=datasets]').getAttribute('aria-current')).toBe('page');
      expect(await page.locator('tbody tr[data-record]').count()).toBe(Math.min(25, total));
      expect(await page.locator('button', { hasText: 'Load more' }).isHidden()).toBe(total <= 25);
      expect(await page.locator('thead th').allTextContents()).toEqual([
        'Name',
        'Id',
        'Samples',
        'Arrays',
        'Size',
        'Created',
        'Delete',
      ]);
      expect(await page.locator('tbody tr[data-record]').first().getAttribute('data-record')).toBe(held.id);
      const [name, id, samples, arrays, size] = await row(labelled.id).locator('td').allTextContents();
      expect({ name, id, samples, arrays, size }).toEqual({
        name: 'eval-set',
        id: `ds_…${labelled.id.slice(-8)}`,
        samples: '6',
        arrays: 'x 6×12, y 6',
        size: `${labelled.bytes} B`,
      });
      expect(await row(labelled.id).locator('td').nth(3).getAttribute('title')).toBe('x <f4, y <i4');
      expect(await row(held.id).locator('td').allTextContents()).toEqual([
        hostile,
        `ds_…${held.id.slice(-8)}`,
        '4',
        'x 4×12',
        `${held.bytes} B`,
        expect.stringMatching(/\d{1,2}:\d{2}:\d{2}/),
        'Delete',
      ]);
      // The hostile name is text: no element was made from its tags.
      expect(await page.locator('.records-table b').count()).toBe(0);
      await page.screenshot({ path: join(artifacts, 'dashboard-datasets.png'), animations: 'disabled' });

      // A dataset a queued job holds: the 409 detail, the row kept. One no job holds: gone, row and record.
      await row(held.id)
        .getByRole('button', { name: `Delete dataset ${hostile}` })
        .click();
      await expect
        .poll(() => page.locator('.error-box').textContent())
        .toContain(`dataset ${held.id} is used by unfinished jobs: ${heldJob}`);
      expect(await row(held.id).count()).toBe(1);
      await row(labelled.id).getByRole('button', { name: 'Delete dataset eval-set' }).click();
      await expect.poll(() => row(labelled.id).count()).toBe(0);
      expect(await page.locator('.error-box').count()).toBe(0);
      expect((await app.inject({ url: `/v1/datasets/${labelled.id}` })).statusCode).toBe(404);
      expect((await app.inject({ url: `/v1/datasets/${held.id}` })).statusCode).toBe(200);
      expect(dialogs).toEqual([`Delete dataset ${hostile} (${held.id})?`, `Delete dataset eval-set (${labelled.id})?`]);

      // An empty list says what to do.
      await page.route('**/v1/datasets?*', (route) => route.fulfill({ json: { items: [], nextCursor: null } }));
      await page.reload();
      await expect.poll(() => page.locator('td.empty').textContent()).toBe('No datasets yet. Upload a dataset.');
      expect(pageErrors).toEqual([]);
    } finally {
      await context.close();
      await app.inject({ method: 'POST', url: `/v1/jobs/${heldJob}/cancel` });
      workers.quantize.resume();
    }
  });

  it('filters the models and datasets pages as the jobs list: labels ANDed, an exact name, kept in the hash, chips that join', async () => {
    const f4 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);
    const upload = async (
      kind: 'models' | 'datasets',
      name: string,
      labels: Record<string, string>,
      content: Part[],
    ) => {
      const res = await app.inject({
        method: 'POST',
        url: `/v1/${kind}`,
        ...multipart([{ field: 'name', data: name }, { field: 'labels', data: JSON.stringify(labels) }, ...content]),
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json().id as string;
    };
    // Files and arrays of their own (stored ones would answer with their first name and labels), and a label key
    // (`zoo`) no other test uses, so that what each filter finds is these three and nothing else.
    const three = async (kind: 'models' | 'datasets', content: (i: number) => Promise<Part[]>) => ({
      a: await upload(kind, 'filter-a', { zoo: 'cv', stage: 'prod' }, await content(0)),
      b: await upload(kind, 'filter-b', { zoo: 'cv', stage: 'dev' }, await content(1)),
      c: await upload(kind, 'filter c', { zoo: 'nlp' }, await content(2)),
    });
    const models = await three('models', async (i) => filesAsParts(await denseModel([12, 50 + i])));
    const datasets = await three('datasets', async (i) => [
      { field: 'x', filename: 'x.npy', data: npy('<f4', [3, 12], f4(new Array(36).fill(21 + i))) },
    ]);

    const { context, page, pageErrors } = await openPage();
    const { row, shown } = recordRows(page);
    const hash = () => new URL(page.url()).hash;
    // Each change re-lists after a pause in typing, the old rows shown until then: poll for what comes after.
    const filterBy = async (text: string, expected: string[]) => {
      await page.fill('#record-filter', text);
      await expect.poll(shown).toEqual(expected);
    };
    try {
      for (const [kind, { a, b, c }] of [
        ['models', models],
        ['datasets', datasets],
      ] as const) {
        await page.goto(`${baseUrl}/#/${kind}`);
        await row(c).waitFor();
        // A label: both cv records, newest first; two labels ANDed: the one that has both.
        await filterBy('zoo=cv', [b, a]);
        await expect.poll(hash).toBe(`#/${kind}?label=zoo%3Dcv`);
        await filterBy('zoo=cv stage=prod', [a]);
        await expect.poll(hash).toBe(`#/${kind}?label=zoo%3Dcv&label=stage%3Dprod`);
        // A reload empties the list while the page is fetched: the same filter, box and rows, from the hash.
        await page.reload();
        await expect.poll(shown).toEqual([a]);
        expect(await page.inputValue('#record-filter')).toBe('zoo=cv stage=prod');
        expect(hash()).toBe(`#/${kind}?label=zoo%3Dcv&label=stage%3Dprod`);
        // Other words are the exact name: "filter c" finds it, "filter" (a prefix of all three) finds none.
        await filterBy('filter c', [c]);
        await expect.poll(hash).toBe(`#/${kind}?name=filter+c`);
        await filterBy('filter', []);
        await expect.poll(() => page.locator('td.empty').textContent()).toBe(`No ${kind} matching “filter”.`);
        await filterBy('zoo=* filter-b', [b]);
        // A key the server refuses: its problem detail, no rows of the filter before.
        await filterBy('zoo_=x', []);
        await expect.poll(() => page.locator('.error-box').textContent()).toMatch(/not a label key/);
        await page.fill('#record-filter', 'zoo=nobody');
        await expect.poll(() => page.locator('td.empty').textContent()).toBe(`No ${kind} matching “zoo=nobody”.`);
        expect(await page.locator('.error-box').count()).toBe(0);
        // Cleared: the whole list and a bare hash again.
        await page.fill('#record-filter', '');
        await row(c).waitFor();
        await expect.poll(hash).toBe(`#/${kind}`);
        // A chip clicked joins the filter; a second chip of the same row, ANDed, still finds that row, and a
        // reload keeps both.
        await row(a).locator('button.chip', { hasText: 'stage=prod' }).click();
        await expect.poll(shown).toEqual([a]);
        await row(a).locator('button.chip', { hasText: 'zoo=cv' }).click();
        await expect.poll(() => page.inputValue('#record-filter')).toBe('stage=prod zoo=cv');
        await expect.poll(hash).toBe(`#/${kind}?label=stage%3Dprod&label=zoo%3Dcv`);
        await expect.poll(shown).toEqual([a]);
        await page.reload();
        await expect.poll(shown).toEqual([a]);
        expect(await page.inputValue('#record-filter')).toBe('stage=prod zoo=cv');
      }
      await page.screenshot({ path: join(artifacts, 'dashboard-datasets-filter.png'), animations: 'disabled' });
      expect(pageErrors).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('asks for the API key when the server has keys, keeps it, and sends it', async () => {
    const keyed = await testConfig({ QAAS_API_KEYS: 'ui:ui-secret-key' });
    const keyedApp = await buildApp(keyed, { logger: false });
    try {
      const url = await keyedApp.listen({ port: 0, host: '127.0.0.1' });
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${url}/`);
      await page.locator('#key-dialog[open]').waitFor();
      await page.getByRole('textbox', { name: 'Key' }).fill('ui-secret-key');
      await page.getByRole('button', { name: 'Save' }).click();
      await page.getByText('No jobs yet.').waitFor();
      expect(await page.evaluate(() => localStorage.getItem('qaas.apiKey'))).toBe('ui-secret-key');

      // With a key, EventSource (which cannot send headers) gives way to a fetch-read stream that can.
      const auth = { authorization: 'Bearer ui-secret-key' };
      const upload = multipart(filesAsParts(await tinyModel()));
      const modelId = (
        await keyedApp.inject({
          method: 'POST',
          url: '/v1/models',
          payload: upload.payload,
          headers: { ...upload.headers, ...auth },
        })
      ).json().id;
      // No worker serves this server's queue: the job stays queued until it is cancelled.
      const job = (
        await keyedApp.inject({
          method: 'POST',
          url: '/v1/jobs',
          payload: { modelId, method: { name: 'float16' } },
          headers: auth,
        })
      ).json();
      const requests: string[] = [];
      page.on('request', (request) => requests.push(new URL(request.url()).pathname));
      await page.reload();
      expect(await page.locator('#key-dialog[open]').count()).toBe(0);
      const row = page.locator(`tr[data-job="${job.id}"]`);
      await expect.poll(() => row.locator('[role=progressbar]').getAttribute('data-source')).toBe('sse');
      expect(
        (await keyedApp.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: auth })).statusCode,
      ).toBe(200);
      await row.locator('.badge.cancelled').waitFor();
      expect(requests).toContain(`/v1/jobs/${job.id}/events`);
      expect(requests).not.toContain(`/v1/jobs/${job.id}`);
      await context.close();
    } finally {
      await keyedApp.close();
      await cleanup(keyed);
    }
  });
});

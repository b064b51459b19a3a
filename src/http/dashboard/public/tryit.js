/**
 * "Try it in the browser": stock TF.js (served from node_modules as /dashboard/vendor/tf.min.js, loaded on
 * first use) loads the job's `model/` artifact and the uploaded float model straight from their API URLs
 * and runs both on one sample: random values of the input's shape (token ids for an Embedding input), an
 * image scaled to the input's height × width, a row of a local .npy / JSON dataset, or values typed in.
 * The CPU backend is used so the printed numbers match TF.js in Node.
 */
import { authHeaders, el, errorBox } from './lib.js';

let tfLoading = null;

function loadTf() {
  tfLoading ??= new Promise((resolve, reject) => {
    if (window.tf) return resolve(window.tf);
    const script = el('script', { src: '/dashboard/vendor/tf.min.js' });
    script.onload = () => resolve(window.tf);
    script.onerror = () => reject(new Error('could not load TF.js'));
    document.head.append(script);
  }).then(async (tf) => {
    await tf.setBackend('cpu');
    return tf;
  });
  return tfLoading;
}

async function loadModel(tf, format, url) {
  const options = { requestInit: { headers: authHeaders() } };
  return format === 'graph-model' ? tf.loadGraphModel(url, options) : tf.loadLayersModel(url, options);
}

/** The first input's shape without the batch axis, unknown sizes as 1, and its dtype. */
function inputOf(model) {
  const input = model.inputs[0];
  const shape = (input.shape ?? []).slice(1).map((size) => (size === null || size < 0 ? 1 : size));
  const firstLayer = model.layers?.find((layer) => layer.getClassName() !== 'InputLayer');
  const vocabulary = firstLayer?.getClassName() === 'Embedding' ? firstLayer.getConfig().inputDim : null;
  return { shape, dtype: input.dtype ?? 'float32', vocabulary };
}

function randomSample({ shape, vocabulary }) {
  const size = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: size }, () =>
    vocabulary ? Math.floor(Math.random() * vocabulary) : Number((Math.random() * 2 - 1).toFixed(4)),
  );
}

/** Parses a little-endian .npy (v1–v3) into { shape, values }. */
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const data = buffer.slice(start + headerLength);
  const arrays = {
    '<f4': Float32Array,
    '<f8': Float64Array,
    '<i4': Int32Array,
    '|u1': Uint8Array,
    '<i8': BigInt64Array,
  };
  const Type = arrays[descr];
  if (!Type) throw new Error(`unsupported .npy dtype ${descr}`);
  return { shape, values: Array.from(new Type(data), Number) };
}

async function datasetRow(file, row) {
  if (file.name.toLowerCase().endsWith('.npy')) {
    const { shape, values } = parseNpy(await file.arrayBuffer());
    const rowSize = shape.slice(1).reduce((a, b) => a * b, 1);
    if (row >= shape[0]) throw new Error(`the dataset has ${shape[0]} rows`);
    return values.slice(row * rowSize, (row + 1) * rowSize);
  }
  const json = JSON.parse(await file.text());
  const rows = Array.isArray(json) ? json : json.x;
  if (!Array.isArray(rows) || row >= rows.length) throw new Error(`the dataset has ${rows?.length ?? 0} rows`);
  return [rows[row]].flat(Infinity);
}

async function imageSample(file, [height, width, channels]) {
  const bitmap = await createImageBitmap(file);
  const canvas = el('canvas', { width, height });
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height).data;
  const values = [];
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2]];
    if (channels === 1) values.push((0.299 * r + 0.587 * g + 0.114 * b) / 255);
    else for (const v of [r, g, b].slice(0, channels)) values.push(v / 255);
  }
  return values;
}

async function predict(tf, model, values, input) {
  const x = tf.tensor(values, [1, ...input.shape], input.dtype === 'int32' ? 'int32' : 'float32');
  try {
    const output = model.predict ? model.predict(x) : model.execute(x);
    const first = Array.isArray(output) ? output[0] : output;
    const result = Array.from(await first.data());
    (Array.isArray(output) ? output : [output]).forEach((t) => t.dispose());
    return result;
  } finally {
    x.dispose();
  }
}

const printed = (values) => values.map((v) => Number(v.toPrecision(7))).join(', ');
const argmax = (values) => values.reduce((best, v, i) => (v > values[best] ? i : best), 0);

export function renderTryIt(job, records) {
  const status = el(
    'p',
    { class: 'muted', id: 'tryit-status' },
    'Loads both models with stock TF.js in this page (CPU backend).',
  );
  const loadButton = el('button', { type: 'button', id: 'tryit-load' }, 'Load both models');
  const sample = el('textarea', {
    id: 'tryit-sample',
    rows: 3,
    disabled: true,
    'aria-describedby': 'tryit-sample-hint',
  });
  const sampleHint = el('p', { class: 'hint', id: 'tryit-sample-hint' });
  const randomButton = el(
    'button',
    { type: 'button', class: 'secondary', id: 'tryit-random', disabled: true },
    'Random sample',
  );
  const imageInput = el('input', { type: 'file', id: 'tryit-image', accept: 'image/*', disabled: true });
  const datasetInput = el('input', { type: 'file', id: 'tryit-dataset', accept: '.npy,.json', disabled: true });
  const rowInput = el('input', { type: 'number', id: 'tryit-row', min: 0, value: 0, disabled: true });
  const runButton = el('button', { type: 'button', id: 'tryit-run', disabled: true }, 'Run both');
  const floatOut = el('pre', { id: 'tryit-float', 'aria-live': 'polite' }, '–');
  const quantOut = el('pre', { id: 'tryit-quantized', 'aria-live': 'polite' }, '–');
  const comparison = el('p', { id: 'tryit-compare' });
  const message = el('div');
  let state = null;

  const setSample = (values) => {
    sample.value = JSON.stringify(values);
  };

  loadButton.addEventListener('click', async () => {
    loadButton.disabled = true;
    message.replaceChildren();
    status.textContent = 'Loading TF.js and both models…';
    try {
      const tf = await loadTf();
      const source = await records('models', job.modelId);
      const [float, quantized] = await Promise.all([
        loadModel(tf, source.format, `/v1/models/${job.modelId}/files/model.json`),
        loadModel(tf, source.format, `/v1/jobs/${job.id}/artifacts/model/model.json`),
      ]);
      const input = inputOf(float);
      state = { tf, float, quantized, input };
      for (const control of [sample, randomButton, datasetInput, rowInput, runButton]) control.disabled = false;
      imageInput.disabled = input.shape.length !== 3;
      sampleHint.textContent =
        `A JSON array of ${input.shape.reduce((a, b) => a * b, 1)} numbers: input shape [${input.shape.join(', ')}]` +
        (input.vocabulary ? `, token ids below ${input.vocabulary}.` : '.');
      setSample(randomSample(input));
      status.textContent = `Loaded: ${source.format}, TF.js ${tf.version.tfjs}, backend ${tf.getBackend()}.`;
      status.dataset.ready = 'true';
    } catch (error) {
      loadButton.disabled = false;
      status.textContent = '';
      message.replaceChildren(errorBox(error));
    }
  });
  randomButton.addEventListener('click', () => setSample(randomSample(state.input)));
  imageInput.addEventListener('change', async () => {
    if (imageInput.files[0]) setSample(await imageSample(imageInput.files[0], state.input.shape));
  });
  const fromDataset = async () => {
    if (!datasetInput.files[0]) return;
    try {
      setSample(await datasetRow(datasetInput.files[0], Number(rowInput.value) || 0));
      message.replaceChildren();
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  };
  datasetInput.addEventListener('change', fromDataset);
  rowInput.addEventListener('change', fromDataset);

  runButton.addEventListener('click', async () => {
    message.replaceChildren();
    try {
      const values = JSON.parse(sample.value);
      const size = state.input.shape.reduce((a, b) => a * b, 1);
      if (!Array.isArray(values) || values.length !== size || !values.every(Number.isFinite)) {
        throw new Error(`the sample must be a JSON array of ${size} numbers`);
      }
      const [a, b] = await Promise.all([
        predict(state.tf, state.float, values, state.input),
        predict(state.tf, state.quantized, values, state.input),
      ]);
      floatOut.textContent = printed(a);
      quantOut.textContent = printed(b);
      const maxDiff = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
      comparison.textContent = `argmax: float ${argmax(a)}, quantized ${argmax(b)}; max |difference| ${maxDiff.toExponential(3)}.`;
      runButton.dataset.runs = String(Number(runButton.dataset.runs ?? 0) + 1);
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  });

  return el(
    'section',
    { class: 'panel', 'aria-labelledby': 'tryit-title' },
    el('h2', { id: 'tryit-title' }, 'Try it in the browser'),
    status,
    loadButton,
    message,
    el(
      'div',
      { class: 'form-grid', style: 'margin-top:12px' },
      el('div', { class: 'field' }, el('label', { for: 'tryit-image' }, 'Sample from an image'), imageInput),
      el(
        'div',
        { class: 'field' },
        el('label', { for: 'tryit-dataset' }, 'Sample from a dataset file (.npy or JSON)'),
        datasetInput,
      ),
      el('div', { class: 'field' }, el('label', { for: 'tryit-row' }, 'Dataset row'), rowInput),
    ),
    el('div', { class: 'field' }, el('label', { for: 'tryit-sample' }, 'Sample values'), sample, sampleHint),
    el('div', { class: 'toolbar' }, randomButton, runButton),
    el(
      'div',
      { class: 'outputs' },
      el('div', {}, el('h3', {}, 'Float model (uploaded)'), floatOut),
      el('div', {}, el('h3', {}, 'Quantized model (artifact)'), quantOut),
    ),
    comparison,
  );
}

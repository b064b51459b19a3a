/**
 * One job: its name, labels (both editable: a merge patch of the record) and record (the model and datasets
 * by their names, each record fetched once per view), the stage timeline, live progress and log lines (SSE), and once it succeeded the
 * report as pictures (per-tensor SQNR, bytes per tensor and in total, metrics per stage, a chosen tensor's
 * histogram before and after, sensitivity, the size/metric frontier and the layer-by-layer diagnosis when the
 * job measured them), the artifact downloads, and "try it in the browser".
 */
import { barChart, chartBox, frontierChart, histogramChart } from './charts.js';
import {
  api,
  apiKey,
  download,
  el,
  errorBox,
  followJob,
  formatBytes,
  formatDate,
  formatDuration,
  formatLabels,
  isTerminal,
  jobDuration,
  labelChips,
  parseLabels,
  progressBar,
  recordCache,
  recordLink,
  shortId,
  statusBadge,
} from './lib.js';
import { renderTryIt } from './tryit.js';

const knownStages = ['queued', 'load', 'quantize', 'write', 'pack', 'report', 'store', 'done'];
const stageNames = {
  queued: 'queued',
  load: 'load model',
  quantize: 'quantize',
  write: 'write model',
  pack: 'pack',
  report: 'report',
  store: 'store',
  done: 'done',
};

export function renderJob(view, id) {
  const stages = [...knownStages];
  const charts = [];
  const records = recordCache();
  let stopFollowing = () => {};
  let left = false;
  const header = el('div');
  // A record without a name or labels leaves them out: absent from the answer, they are gone from the page too.
  const editor = nameEditor((updated) => showJob({ name: undefined, labels: {}, ...updated }));
  const meta = el('dl', { class: 'meta' });
  const specText = el('pre', { class: 'mono' });
  const specView = el(
    'details',
    { id: 'job-spec' },
    el('summary', {}, 'Spec as it runs (defaults filled in)'),
    specText,
  );
  const timeline = el('ol', { class: 'timeline', 'aria-label': 'Stages' });
  const progress = progressBar(`Progress of job ${id}`);
  const log = el('ol', { class: 'log', 'aria-live': 'polite', 'aria-label': 'Log', hidden: true });
  const logEmpty = el('p', { class: 'muted' }, 'Log lines appear here while the job runs.');
  const failure = el('div');
  const report = el('section', { 'aria-label': 'Report' });
  view.append(
    header,
    editor.root,
    el(
      'section',
      { class: 'panel', 'aria-labelledby': 'progress-title' },
      el('h2', { id: 'progress-title' }, 'Progress'),
      timeline,
      progress.root,
      failure,
      el('h2', { style: 'margin-top:14px' }, 'Log'),
      logEmpty,
      log,
    ),
    el('section', { class: 'panel', 'aria-label': 'Job details' }, meta, specView),
    report,
  );

  let job = null;
  function showJob(next, source) {
    job = { ...(job ?? {}), ...next };
    header.replaceChildren(
      el(
        'div',
        { class: 'toolbar' },
        el('h1', { id: 'job-name' }, job.name ?? ['Job ', el('span', { class: 'mono' }, shortId(job.id))]),
        statusBadge(job.status),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', class: 'secondary', onclick: () => editor.open(job) }, 'Edit name & labels'),
        isTerminal(job)
          ? el('button', { type: 'button', class: 'secondary', onclick: remove }, 'Delete job')
          : el('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Cancel job'),
        el('a', { href: '#/jobs' }, '← All jobs'),
      ),
      el(
        'p',
        { class: 'job-ids' },
        el('span', { class: 'id-line mono', id: 'job-id' }, job.id),
        labelChips(job.labels),
      ),
    );
    const rows = [
      ['Kind', job.kind],
      ['Method', job.method],
      [
        'Model',
        job.modelId && [
          recordLink(records, 'models', job.modelId, `#/jobs?modelId=${job.modelId}`, 'This model’s jobs'),
          el('span', { class: 'id-line mono' }, job.modelId),
        ],
      ],
      ...Object.entries(job.spec?.data ?? {})
        .filter(([, datasetId]) => typeof datasetId === 'string')
        .map(([role, datasetId]) => [
          `Data: ${role}`,
          [recordLink(records, 'datasets', datasetId), el('span', { class: 'id-line mono' }, datasetId)],
        ]),
      ['Created', formatDate(job.createdAt)],
      ['Started', formatDate(job.startedAt)],
      ['Finished', formatDate(job.finishedAt)],
      ['Duration', formatDuration(jobDuration(job))],
      ['Attempts', job.attempts],
      ['Priority', job.spec?.priority ?? 0],
      [
        'Method params',
        Object.entries(job.spec?.method ?? {})
          .filter(([k]) => k !== 'name')
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
      ],
    ];
    meta.replaceChildren(
      ...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, Array.isArray(v) ? v : String(v ?? '–'))]),
    );
    specText.textContent = JSON.stringify(job.spec ?? {}, null, 2);
    drawTimeline(job.stage, job.status);
    progress.set(job, source);
    failure.replaceChildren(
      job.error && job.status !== 'succeeded'
        ? el('div', { class: 'error-box', role: 'alert' }, `${job.status}: ${job.error.message}`)
        : '',
    );
  }

  function drawTimeline(stage, status) {
    // Stages this page does not know yet (qat's training, say) take their place before storing.
    if (stage && !stages.includes(stage) && !['failed', 'cancelled', 'retrying'].includes(stage))
      stages.splice(stages.indexOf('store'), 0, stage);
    const at = status === 'succeeded' ? stages.length - 1 : stages.indexOf(stage);
    timeline.replaceChildren(
      ...stages.map((name, i) => {
        const current = i === at && status !== 'succeeded';
        const failed = current && (status === 'failed' || status === 'cancelled');
        const cls = failed ? 'failed' : current ? 'current' : i <= at ? 'done' : '';
        return el('li', { class: cls, 'aria-current': current ? 'step' : null }, stageNames[name] ?? name);
      }),
    );
    if (status === 'failed' || status === 'cancelled') {
      if (at < 0) timeline.append(el('li', { class: 'failed', 'aria-current': 'step' }, status));
    }
  }

  function addLog(message, at) {
    logEmpty.hidden = true;
    log.hidden = false;
    log.append(el('li', {}, `${(at ? new Date(at) : new Date()).toLocaleTimeString()}  ${message}`));
    log.scrollTop = log.scrollHeight;
  }

  async function cancel() {
    try {
      showJob(await api(`/v1/jobs/${id}/cancel`, { method: 'POST' }));
    } catch (error) {
      failure.replaceChildren(errorBox(error));
    }
  }

  async function remove() {
    if (!window.confirm(`Delete job ${id}, its log and its artifacts?`)) return;
    try {
      await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
      location.hash = '#/jobs';
    } catch (error) {
      failure.replaceChildren(errorBox(error));
    }
  }

  async function start() {
    try {
      showJob(await api(`/v1/jobs/${encodeURIComponent(id)}`));
    } catch (error) {
      header.replaceChildren(
        el('h1', {}, 'Job ', el('span', { class: 'mono' }, id)),
        errorBox(error, () => {
          view.replaceChildren();
          renderJob(view, id);
        }),
      );
      return;
    }
    if (isTerminal(job)) {
      try {
        const { lines } = await api(`/v1/jobs/${encodeURIComponent(id)}/log`);
        for (const line of lines) addLog(line.message, line.at);
        if (lines.length === 0) logEmpty.textContent = 'This job logged nothing.';
      } catch (error) {
        failure.replaceChildren(errorBox(error));
      }
      return finished();
    }
    let source = 'sse';
    stopFollowing = followJob(id, {
      source: (s) => (source = s),
      state: (j) => showJob(j, source),
      stage: ({ stage }) => showJob({ stage, status: 'running' }, source),
      progress: (p) => showJob({ status: 'running', stage: p.stage, progress: p.progress }, source),
      log: ({ message, at }) => addLog(message, at),
      final: (j) => {
        showJob(j, source);
        addLog(`job ${j.status}`);
        stopFollowing();
        finished();
      },
    });
  }

  async function finished() {
    if (left || job.status !== 'succeeded') return;
    try {
      const data = await api(`/v1/jobs/${encodeURIComponent(id)}/report`);
      if (!left) renderReport(report, job, data, charts, records);
    } catch (error) {
      report.replaceChildren(errorBox(error, finished));
    }
  }

  start();
  return () => {
    left = true;
    stopFollowing();
    for (const chart of charts) chart.destroy();
  };
}

/**
 * The name and labels form: saved as a JSON merge patch, an emptied name sent as null (removed) and every
 * label taken out as null. `saved(job)` gets the record the server answers.
 */
function nameEditor(saved) {
  const name = el('input', { type: 'text', id: 'job-edit-name', autocomplete: 'off' });
  const labels = el('input', {
    type: 'text',
    id: 'job-edit-labels',
    placeholder: 'team=vision, stage=prod',
    autocomplete: 'off',
  });
  const message = el('div');
  let editing = null;
  const root = el(
    'form',
    { id: 'job-edit', class: 'panel', hidden: true, 'aria-label': 'Name and labels' },
    el('div', { class: 'field' }, el('label', { for: name.id }, 'Name'), name),
    el('div', { class: 'field' }, el('label', { for: labels.id }, 'Labels'), labels),
    message,
    el(
      'div',
      { class: 'actions' },
      el('button', { type: 'submit', id: 'job-edit-save' }, 'Save'),
      el('button', { type: 'button', class: 'secondary', onclick: () => (root.hidden = true) }, 'Cancel'),
    ),
  );
  root.addEventListener('submit', async (event) => {
    event.preventDefault();
    const given = parseLabels(labels.value) ?? {};
    const removed = Object.keys(editing.labels ?? {}).filter((key) => typeof given !== 'object' || !(key in given));
    const patch = {
      name: name.value.trim() || null,
      // Text that is not key=value pairs goes as it is: the server's problem says what is wrong with it.
      labels: typeof given === 'object' ? { ...Object.fromEntries(removed.map((k) => [k, null])), ...given } : given,
    };
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(editing.id)}`, { method: 'PATCH', body: patch });
      root.hidden = true;
      saved(job);
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  });
  return {
    root,
    open(job) {
      editing = job;
      name.value = job.name ?? '';
      labels.value = formatLabels(job.labels);
      message.replaceChildren();
      root.hidden = false;
      name.focus();
    },
  };
}

function card(label, value) {
  return el('div', { class: 'card' }, el('div', { class: 'value' }, value), el('div', { class: 'label' }, label));
}

function fixed(value, digits = 2) {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value ?? '–');
}

function renderReport(root, job, report, charts, records) {
  const model = report.model ?? {};
  const tensors = report.tensors ?? [];
  root.replaceChildren();
  root.append(
    el(
      'div',
      { class: 'cards' },
      card('weights before', formatBytes(model.bytesBefore)),
      card('stock TF.js model after', formatBytes(model.bytesAfter)),
      card('packed', formatBytes(model.packedBytes)),
      card('compression (packed)', `${fixed(model.compressionRatio)}×`),
      card('bits per weight', fixed(model.bitsPerWeight)),
      card('quantized params', `${model.quantizedParams ?? '–'} / ${model.params ?? '–'}`),
    ),
  );
  const warnings = report.warnings ?? [];
  if (warnings.length > 0) {
    root.append(
      el('ul', { class: 'warnings', 'aria-label': 'warnings' }, ...warnings.map((warning) => el('li', {}, warning))),
    );
  }

  const height = Math.max(160, 34 + tensors.length * 26);
  // Long tensor names get the per-tensor charts a row each, room for their labels.
  const wide = tensors.some((t) => t.name.length > 24) ? ' wide' : '';
  const [sqnrBox, sqnrCanvas] = chartBox('chart-sqnr', 'SQNR in dB per tensor', height);
  const [bytesBox, bytesCanvas] = chartBox('chart-bytes', 'Bytes before and after per tensor', height);
  const [totalBox, totalCanvas] = chartBox('chart-totals', 'Model bytes in total', 220);
  const grid = el(
    'div',
    { class: 'grid' },
    el('section', { class: `panel${wide}` }, el('h2', {}, 'SQNR per tensor (dB)'), sqnrBox),
    el('section', { class: `panel${wide}` }, el('h2', {}, 'Bytes per tensor: float vs packed'), bytesBox),
    el('section', { class: 'panel' }, el('h2', {}, 'Model bytes in total'), totalBox),
  );
  root.append(grid);
  const names = tensors.map((t) => t.name);
  charts.push(
    barChart(sqnrCanvas, {
      labels: names,
      horizontal: true,
      xTitle: 'SQNR (dB)',
      datasets: [{ label: 'SQNR (dB)', data: tensors.map((t) => t.sqnrDb), color: '#2357c6' }],
    }),
  );
  charts.push(
    barChart(bytesCanvas, {
      labels: names,
      horizontal: true,
      xTitle: 'bytes',
      datasets: [
        { label: 'before', data: tensors.map((t) => t.bytesBefore) },
        { label: 'after (packed)', data: tensors.map((t) => t.bytesAfter) },
      ],
    }),
  );
  charts.push(
    barChart(totalCanvas, {
      labels: ['float', 'stock TF.js', 'packed', 'gzip float', 'gzip stock'],
      yTitle: 'bytes',
      datasets: [
        {
          label: 'bytes',
          data: [model.bytesBefore, model.bytesAfter, model.packedBytes, model.gzipBytesBefore, model.gzipBytesAfter],
          backgroundColor: ['#8a94a8', '#2357c6', '#1b7f3b', '#b9c0cc', '#7d9be0'],
        },
      ],
    }),
  );

  if (model.metrics && Object.keys(model.metrics).length > 0) grid.append(metricsPanel(model.metrics, charts));
  if (tensors.length > 0) grid.append(histogramPanel(job, tensors, charts));
  const frontier = frontierPanel(report, charts);
  if (frontier) grid.append(frontier);

  const diagnosis = diagnosisPanel(report.diagnosis, charts);
  if (diagnosis) root.append(diagnosis);
  root.append(tensorTable(tensors));
  const sensitivity = sensitivityTable(report);
  if (sensitivity) root.append(sensitivity);
  root.append(downloadsPanel(job));
  root.append(renderTryIt(job, records));
}

function metricsPanel(metrics, charts) {
  const stageOrder = ['float', 'ptq', 'qat'];
  const stagesPresent = [
    ...stageOrder.filter((s) => s in metrics),
    ...Object.keys(metrics).filter((s) => !stageOrder.includes(s)),
  ];
  const metricNames = [...new Set(stagesPresent.flatMap((s) => Object.keys(metrics[s] ?? {})))].filter((name) =>
    stagesPresent.some((s) => Number.isFinite(metrics[s]?.[name])),
  );
  const [box, canvas] = chartBox('chart-metrics', 'Metrics per stage', 240);
  const table = el(
    'table',
    {},
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th', { scope: 'col' }, 'metric'),
        stagesPresent.map((s) => el('th', { scope: 'col', class: 'num' }, s)),
      ),
    ),
    el(
      'tbody',
      {},
      metricNames.map((name) =>
        el(
          'tr',
          {},
          el('th', { scope: 'row' }, name),
          stagesPresent.map((s) =>
            el('td', { class: 'num' }, Number.isFinite(metrics[s]?.[name]) ? metrics[s][name].toPrecision(4) : '–'),
          ),
        ),
      ),
    ),
  );
  const panel = el(
    'section',
    { class: 'panel' },
    el('h2', {}, 'Metrics per stage'),
    box,
    el('details', {}, el('summary', {}, 'As a table'), table),
  );
  charts.push(
    barChart(canvas, {
      labels: metricNames,
      datasets: stagesPresent.map((s) => ({ label: s, data: metricNames.map((name) => metrics[s]?.[name] ?? null) })),
    }),
  );
  return panel;
}

function histogramPanel(job, tensors, charts) {
  const select = el(
    'select',
    { id: 'histogram-tensor' },
    tensors.map((t) => el('option', { value: t.name }, t.name)),
  );
  const note = el('p', { class: 'muted', id: 'histogram-note' });
  const [box, canvas] = chartBox('chart-histogram', 'Weight histogram before and after quantization', 240);
  let chart = null;
  async function draw() {
    note.textContent = 'Loading…';
    try {
      const histogram = await api(`/v1/jobs/${job.id}/tensors/${encodeURIComponent(select.value)}/histogram?bins=64`);
      chart?.destroy();
      chart = histogramChart(canvas, histogram);
      note.textContent = `${histogram.shape.join('×')} weights; ${histogram.levelsAfter} distinct values after quantization.`;
      canvas.dataset.tensor = histogram.name;
    } catch (error) {
      note.textContent = `Could not load the histogram: ${error.message}`;
    }
  }
  select.addEventListener('change', draw);
  charts.push({ destroy: () => chart?.destroy() });
  queueMicrotask(draw);
  return el(
    'section',
    { class: 'panel wide' },
    el('h2', {}, 'Weight histogram'),
    el('div', { class: 'field' }, el('label', { for: 'histogram-tensor' }, 'Tensor'), select),
    box,
    note,
  );
}

/** `report.frontier` (auto jobs): configs with bytes and metrics; the chosen one flagged or named by index. */
function frontierPanel(report, charts) {
  const frontier = Array.isArray(report.frontier) ? report.frontier : null;
  if (!frontier || frontier.length === 0) return null;
  const metricName = report.spec?.target?.metric ?? Object.keys(frontier[0].metrics ?? {})[0] ?? 'metric';
  const points = frontier.map((entry, i) => ({
    x: entry.bytes ?? entry.packedBytes ?? entry.bytesAfter,
    y: entry.metrics?.[metricName] ?? entry.metric ?? entry[metricName],
    chosen: Boolean(entry.chosen) || report.chosen === i,
  }));
  const [box, canvas] = chartBox('chart-frontier', `Size against ${metricName} for every config tried`, 260);
  charts.push(frontierChart(canvas, points, metricName));
  return el('section', { class: 'panel' }, el('h2', {}, `Size / ${metricName} frontier`), box);
}

/** SQNR above this draws as this: exact layers (144.5 dB) would squeeze every other bar to nothing. */
const DIAGNOSIS_CEILING_DB = 80;
/** The worst layers (with a suggestion) drawn in these instead of the usual colours. */
const WORST_HIGHLIGHTED = 3;

/**
 * `report.diagnosis`: each layer's own SQNR from its weights and from its activations (bars, model order),
 * the worst layers highlighted, and the ranking with each layer's suggestion as a table.
 */
function diagnosisPanel(diagnosis, charts) {
  const layers = diagnosis?.layers ?? [];
  if (layers.length === 0) return null;
  const worst = new Set((diagnosis.worst ?? []).slice(0, WORST_HIGHLIGHTED));
  const split = layers.some((l) => Number.isFinite(l.localSqnrDb?.activations));
  const clip = (v) => (Number.isFinite(v) ? Math.min(v, DIAGNOSIS_CEILING_DB) : null);
  // Scriptable, not an array: the legend (asked without a bar) then shows the usual colour.
  const colours = (usual, highlight) => (context) => (worst.has(layers[context.dataIndex]?.name) ? highlight : usual);
  const datasets = [
    {
      label: 'weights quantized',
      data: layers.map((l) => clip(l.localSqnrDb?.weights)),
      backgroundColor: colours('#2357c6', '#d92d20'),
    },
  ];
  if (split) {
    datasets.push({
      label: 'activations quantized',
      data: layers.map((l) => clip(l.localSqnrDb?.activations)),
      backgroundColor: colours('#1b7f3b', '#c26d00'),
    });
  }
  const [box, canvas] = chartBox(
    'chart-diagnosis',
    `Each layer's own SQNR in dB, weights${split ? ' and activations' : ''} quantized; worst layers in red`,
    Math.max(160, 34 + layers.length * (split ? 34 : 26)),
  );
  canvas.dataset.layers = String(layers.length);
  canvas.dataset.worst = [...worst].join(',');
  charts.push(
    barChart(canvas, {
      labels: layers.map((l) => l.name),
      horizontal: true,
      xTitle: `own SQNR (dB; exact drawn at ${DIAGNOSIS_CEILING_DB})`,
      max: DIAGNOSIS_CEILING_DB,
      datasets,
    }),
  );
  const db = (v) => (Number.isFinite(v) ? v.toFixed(1) : '–');
  const ranked = [...layers].sort((a, b) => a.rank - b.rank);
  const table = el(
    'table',
    { id: 'diagnosis-table' },
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        ['rank', 'layer', 'op', 'own W', 'own A', 'own W+A', 'at output W+A', 'suggestion', 'why'].map((h, i) =>
          el('th', { scope: 'col', class: i >= 3 && i <= 6 ? 'num' : null }, h),
        ),
      ),
    ),
    el(
      'tbody',
      {},
      ranked.map((l) =>
        el(
          'tr',
          { class: worst.has(l.name) ? 'worst' : null },
          el('td', {}, String(l.rank)),
          el('th', { scope: 'row', class: 'mono' }, l.name),
          el('td', {}, l.op),
          el('td', { class: 'num' }, db(l.localSqnrDb?.weights)),
          el('td', { class: 'num' }, db(l.localSqnrDb?.activations)),
          el('td', { class: 'num' }, db(l.localSqnrDb?.both)),
          el('td', { class: 'num' }, db(l.sqnrDb?.both)),
          el('td', {}, l.suggestion),
          el('td', {}, l.reason),
        ),
      ),
    ),
  );
  return el(
    'section',
    { class: 'panel', 'aria-labelledby': 'diagnosis-title' },
    el('h2', { id: 'diagnosis-title' }, 'Layer by layer: where the error comes from'),
    el('p', { class: 'muted' }, diagnosis.measured ?? ''),
    box,
    el(
      'details',
      { open: worst.size > 0 },
      el('summary', {}, 'Ranking and suggestions'),
      el('div', { class: 'table-wrap' }, table),
    ),
  );
}

function sensitivityTable(report) {
  const rows = Array.isArray(report.sensitivity)
    ? report.sensitivity
    : (report.tensors ?? [])
        .filter((t) => t.sensitivity !== undefined)
        .map((t) => ({ name: t.name, sensitivity: t.sensitivity }));
  if (rows.length === 0) return null;
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const show = (v) =>
    typeof v === 'number'
      ? Number.isInteger(v)
        ? String(v)
        : v.toPrecision(4)
      : typeof v === 'object'
        ? JSON.stringify(v)
        : String(v);
  return el(
    'section',
    { class: 'panel table-wrap' },
    el('h2', {}, 'Sensitivity per layer'),
    el(
      'table',
      {},
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          columns.map((c) => el('th', { scope: 'col' }, c)),
        ),
      ),
      el(
        'tbody',
        {},
        rows.map((r) =>
          el(
            'tr',
            {},
            columns.map((c) => el('td', {}, r[c] === undefined ? '–' : show(r[c]))),
          ),
        ),
      ),
    ),
  );
}

function tensorTable(tensors) {
  const head = [
    'tensor',
    'shape',
    'method',
    'bits',
    'stored as',
    'SQNR dB',
    'cosine',
    'max |error|',
    'before',
    'after',
  ];
  return el(
    'section',
    { class: 'panel table-wrap' },
    el('h2', {}, 'Tensors'),
    el(
      'table',
      { id: 'tensor-table' },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          head.map((h, i) => el('th', { scope: 'col', class: i >= 5 ? 'num' : null }, h)),
        ),
      ),
      el(
        'tbody',
        {},
        tensors.map((t) =>
          el(
            'tr',
            {},
            el('th', { scope: 'row', class: 'mono' }, t.name),
            el('td', {}, (t.shape ?? []).join('×')),
            el('td', {}, t.method),
            el('td', {}, t.bits),
            el('td', {}, t.storedAs ?? '–'),
            el('td', { class: 'num' }, fixed(t.sqnrDb, 1)),
            el('td', { class: 'num' }, fixed(t.cosine, 5)),
            el('td', { class: 'num' }, Number.isFinite(t.maxAbsError) ? t.maxAbsError.toExponential(2) : '–'),
            el('td', { class: 'num' }, formatBytes(t.bytesBefore)),
            el('td', { class: 'num' }, formatBytes(t.bytesAfter)),
          ),
        ),
      ),
    ),
  );
}

function downloadsPanel(job) {
  const link = (path, label) => {
    const href = `/v1/jobs/${job.id}/${path}`;
    const filename = path.split('/').pop();
    return el(
      'a',
      {
        class: 'button secondary',
        href,
        download: filename,
        // A plain link cannot carry the API key; with one, fetch the file and save it.
        onclick: (event) => {
          if (!apiKey()) return;
          event.preventDefault();
          download(href, filename);
        },
      },
      label,
    );
  };
  return el(
    'section',
    { class: 'panel' },
    el('h2', {}, 'Downloads'),
    el(
      'div',
      { class: 'downloads' },
      link('artifacts.zip', 'All artifacts (.zip)'),
      (job.artifacts ?? []).map((a) => link(`artifacts/${a}`, a)),
    ),
  );
}

/**
 * The jobs page: newest first, each job by its name and labels, filtered by status, by model (a model in the
 * table links to its jobs) and by the filter box (`team=vision` a label, other words the exact name: the
 * list's `?label=` and `?name=`; a label chip clicked adds its label), the filters kept in the hash so a
 * reload or a shared link keeps them;
 * one live progress bar per unfinished job. Up to `maxStreams` unfinished jobs follow their SSE stream (a
 * browser allows only a few connections per host); the list is polled only for the jobs beyond that.
 */
import {
  api,
  el,
  errorBox,
  filterBox,
  followJob,
  formatBytes,
  formatDate,
  formatDuration,
  isTerminal,
  jobDuration,
  labelChips,
  progressBar,
  recordCache,
  recordLink,
  shortId,
  statusBadge,
} from './lib.js';

const statuses = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const maxStreams = 4;

export function renderJobs(view) {
  const streams = new Map();
  let pollTimer = null;
  let cursor = null;
  // Bumped by every new list: a page that arrives after the filters changed again is dropped.
  let generation = 0;
  const rows = new Map();
  const records = recordCache();

  const filter = el(
    'select',
    { id: 'status-filter', onchange: () => load(true) },
    el('option', { value: '' }, 'All statuses'),
    statuses.map((s) => el('option', { value: s }, s)),
  );
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  filter.value = params.get('status') ?? '';
  const modelId = params.get('modelId');
  const search = filterBox('job-filter', params, () => load(true));
  /** The list's query: the filters, without paging. */
  const filters = () => {
    const query = new URLSearchParams();
    if (filter.value) query.set('status', filter.value);
    if (modelId) query.set('modelId', modelId);
    return search.apply(query);
  };
  const body = el('tbody');
  const table = el(
    'table',
    { class: 'jobs-table' },
    el('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th', { scope: 'col' }, 'Name'),
        el('th', { scope: 'col' }, 'Status'),
        el('th', { scope: 'col', class: 'opt' }, 'Kind'),
        el('th', { scope: 'col' }, 'Method'),
        el('th', { scope: 'col' }, 'Bits'),
        el('th', { scope: 'col', class: 'num' }, 'Result'),
        el('th', { scope: 'col', class: 'opt' }, 'Model'),
        el('th', { scope: 'col', class: 'opt' }, 'Created'),
        el('th', { scope: 'col', class: 'num opt' }, 'Duration'),
        el('th', { scope: 'col' }, 'Progress'),
      ),
    ),
    body,
  );
  const more = el(
    'button',
    { type: 'button', class: 'secondary', hidden: true, onclick: () => load(false) },
    'Load more',
  );
  const message = el('div');
  view.append(
    el(
      'div',
      { class: 'toolbar' },
      el('h1', {}, 'Jobs'),
      el('span', { class: 'spacer' }),
      modelId
        ? el(
            'span',
            { id: 'model-filter' },
            'Model ',
            recordLink(records, 'models', modelId),
            ' ',
            el('a', { href: '#/jobs' }, 'all models'),
          )
        : null,
      search.root,
      el('div', {}, el('label', { for: 'status-filter' }, 'Status'), filter),
      el('a', { class: 'button', href: '#/new' }, 'New job'),
    ),
    message,
    el('div', { class: 'panel table-wrap' }, table, more),
  );

  function updateRow(job, source) {
    const row = rows.get(job.id);
    if (!row) return;
    Object.assign(row.job, job);
    row.status.replaceChildren(statusBadge(row.job.status));
    row.duration.textContent = formatDuration(jobDuration(row.job));
    row.result.replaceChildren(resultSize(row.job));
    row.progress.set(row.job, source);
    if (isTerminal(row.job)) streams.get(job.id)?.();
  }

  function rowFor(job) {
    const progress = progressBar(`Progress of job ${job.id}`);
    progress.set(job);
    const status = el('td', {}, statusBadge(job.status));
    const duration = el('td', { class: 'num opt' }, formatDuration(jobDuration(job)));
    const result = el('td', { class: 'num nowrap' }, resultSize(job));
    const tr = el(
      'tr',
      { dataset: { job: job.id } },
      el(
        'td',
        { class: 'name-cell' },
        el(
          'a',
          { href: `#/jobs/${job.id}`, class: job.name ? null : 'mono', title: job.id },
          job.name ?? shortId(job.id),
        ),
        el('span', { class: 'id-line mono' }, job.id),
        labelChips(job.labels, search.pick),
      ),
      status,
      el('td', { class: 'opt' }, job.kind),
      el('td', {}, job.method),
      el('td', { class: 'nowrap' }, precision(job.spec)),
      result,
      el(
        'td',
        { class: 'opt' },
        recordLink(records, 'models', job.modelId, `#/jobs?modelId=${job.modelId}`, 'This model’s jobs'),
      ),
      el('td', { class: 'opt' }, formatDate(job.createdAt)),
      duration,
      el('td', {}, progress.root),
    );
    rows.set(job.id, { job: { ...job }, status, duration, result, progress });
    return tr;
  }

  function follow(job) {
    if (isTerminal(job) || streams.has(job.id) || streams.size >= maxStreams) return;
    let source = 'sse';
    const stop = followJob(job.id, {
      source: (s) => (source = s),
      state: (j) => updateRow(j, source),
      progress: (p) => updateRow({ id: job.id, status: 'running', progress: p.progress }, source),
      final: (j) => {
        updateRow(j, source);
        stop();
        streams.delete(job.id);
        schedule();
      },
    });
    streams.set(job.id, () => {
      stop();
      streams.delete(job.id);
    });
  }

  /** Polls the list only while some unfinished job has no stream of its own. */
  function schedule() {
    clearTimeout(pollTimer);
    const unwatched = [...rows.values()].some(({ job }) => !isTerminal(job) && !streams.has(job.id));
    if (!unwatched) return;
    pollTimer = setTimeout(async () => {
      try {
        const query = filters();
        query.set('limit', '100');
        const page = await api(`/v1/jobs?${query}`);
        for (const job of page.items) if (!streams.has(job.id)) updateRow(job, 'poll');
        for (const job of page.items) follow(job);
      } catch {
        // The next round retries; the table keeps the last known state.
      }
      schedule();
    }, 3000);
  }

  async function load(reset) {
    if (reset) {
      generation++;
      for (const stop of [...streams.values()]) stop();
      rows.clear();
      body.replaceChildren();
      cursor = null;
      const query = String(filters());
      history.replaceState(null, '', `#/jobs${query ? `?${query}` : ''}`);
    }
    message.replaceChildren();
    const current = generation;
    try {
      const query = filters();
      query.set('limit', '25');
      if (cursor) query.set('cursor', cursor);
      const page = await api(`/v1/jobs?${query}`);
      if (current !== generation) return;
      const jobs = [...page.items].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
      for (const job of jobs) body.append(rowFor(job));
      for (const job of jobs) follow(job);
      cursor = page.nextCursor;
      more.hidden = !cursor;
      if (rows.size === 0) {
        const filtered = filter.value || modelId || search.text();
        const matching = search.text() ? ` matching “${search.text()}”` : '';
        body.append(
          el(
            'tr',
            {},
            el(
              'td',
              { colspan: 10, class: 'empty' },
              filtered
                ? `No ${filter.value ? `${filter.value} ` : ''}jobs${modelId ? ' of this model' : ''}${matching}.`
                : 'No jobs yet. ',
              filtered ? null : el('a', { href: '#/new' }, 'Upload a model and create one.'),
            ),
          ),
        );
      }
      schedule();
    } catch (error) {
      if (current === generation) message.replaceChildren(errorBox(error, () => load(true)));
    }
  }

  load(true);
  return () => {
    clearTimeout(pollTimer);
    for (const stop of [...streams.values()]) stop();
  };
}

/** The weights' precision the spec asked for: bits and granularity, what tells an 8-bit job from a 4-bit one. */
function precision(spec) {
  const method = spec?.method ?? {};
  const bits = method.bits ?? (method.name === 'float16' ? 16 : method.name === 'binary' ? 1 : undefined);
  const parts = [
    bits === undefined ? (method.name === 'ternary' ? 'ternary' : null) : `${bits}-bit`,
    method.granularity ?? null,
  ].filter(Boolean);
  const overrides = Object.keys(spec?.layers?.overrides ?? {}).length;
  if (overrides > 0) parts.push(`+${overrides} override${overrides > 1 ? 's' : ''}`);
  return parts.join(' · ') || '–';
}

/** The packed result's size and how much smaller it is, once the job has one. */
function resultSize(job) {
  const summary = job.summary;
  if (!summary) return '–';
  return el(
    'span',
    { title: `stock TF.js model ${formatBytes(summary.bytesAfter)}; packed ${formatBytes(summary.packedBytes)}` },
    `${formatBytes(summary.packedBytes)} (${summary.compressionRatio.toFixed(1)}×)`,
  );
}

/**
 * What every view shares: the API client (API key from localStorage as a Bearer header, problem+json
 * errors as ApiError), job event streams (SSE; a polling loop only when the stream fails), a tiny DOM
 * builder (text only: names, labels and every other user-given string become text nodes, never markup),
 * records fetched once per view, and number/time formatting.
 */

const keyStorage = 'qaas.apiKey';

export function apiKey() {
  return localStorage.getItem(keyStorage) ?? '';
}

export function setApiKey(key) {
  if (key) localStorage.setItem(keyStorage, key);
  else localStorage.removeItem(keyStorage);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** A problem+json answer (RFC 9457): `problem.problems` lists spec errors with their JSON paths. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem ?? {};
  }
}

/** Fired when the server answers 401, so the shell can ask for a key. */
export const events = new EventTarget();

export async function api(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers ?? {}) };
  let body = options.body;
  if (body !== undefined && !(body instanceof FormData) && typeof body !== 'string') {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers, body });
  } catch (error) {
    throw new ApiError(0, {
      title: 'The server did not answer',
      detail: `The server did not answer (${error.message}).`,
    });
  }
  if (response.status === 401) events.dispatchEvent(new Event('unauthorized'));
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ title: response.statusText }));
    throw new ApiError(response.status, problem);
  }
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') ?? '';
  return type.includes('json') ? response.json() : response;
}

/** Saves a file the API serves (through fetch, so the key is sent) under its own name. */
export async function download(path, filename) {
  const response = await api(path);
  const url = URL.createObjectURL(await response.blob());
  const link = el('a', { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function parseSse(text, onEvent) {
  for (const block of text.split('\n\n')) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
    }
    if (data.length > 0) onEvent(event, JSON.parse(data.join('\n')));
  }
}

const terminal = new Set(['succeeded', 'failed', 'cancelled']);
export const isTerminal = (job) => terminal.has(job.status);

/**
 * Follows one job: `handlers.state(job)` for a whole record, `progress({stage, progress})`, `stage({stage})`,
 * `log({message})`, `final(job)`, and `source('sse' | 'poll')` saying where updates come from. EventSource
 * cannot send an Authorization header, so with a key the same stream is read through fetch. When the stream
 * breaks before the end, the job record is polled instead. Returns a function that stops following.
 */
export function followJob(id, handlers) {
  const url = `/v1/jobs/${encodeURIComponent(id)}/events`;
  let stopped = false;
  let ended = false;
  let cleanup = () => {};
  const dispatch = (event, data) => {
    if (stopped) return;
    if (event === 'final') ended = true;
    handlers[event]?.(data);
  };
  const fallback = () => {
    if (stopped || ended) return;
    handlers.source?.('poll');
    const timer = setInterval(async () => {
      try {
        const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
        handlers.state?.(job);
        if (isTerminal(job)) {
          clearInterval(timer);
          dispatch('final', job);
        }
      } catch {
        // Keep polling through transient errors; the view shows the last known state.
      }
    }, 2000);
    cleanup = () => clearInterval(timer);
  };

  if (!apiKey() && 'EventSource' in window) {
    const source = new EventSource(url);
    handlers.source?.('sse');
    for (const name of ['state', 'progress', 'stage', 'log', 'final']) {
      source.addEventListener(name, (message) => dispatch(name, JSON.parse(message.data)));
    }
    source.addEventListener('final', () => source.close());
    source.onerror = () => {
      source.close();
      fallback();
    };
    cleanup = () => source.close();
  } else {
    const controller = new AbortController();
    cleanup = () => controller.abort();
    handlers.source?.('sse');
    (async () => {
      const response = await fetch(url, { headers: authHeaders(), signal: controller.signal });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        const end = buffered.lastIndexOf('\n\n');
        if (end >= 0) {
          parseSse(buffered.slice(0, end), dispatch);
          buffered = buffered.slice(end + 2);
        }
      }
    })().then(
      () => !ended && fallback(),
      () => !controller.signal.aborted && fallback(),
    );
  }
  return () => {
    stopped = true;
    cleanup();
  };
}

/** `el('a', { href, class: 'x', onclick }, 'text', child)`: attributes, listeners (on*), children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'dataset')
      Object.assign(
        node.dataset,
        Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined && v !== null)),
      );
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

/**
 * An id short enough for a table cell: its kind and its last 8 characters. The head of an id is its creation
 * time, alike for ids made close together; the tail is random and tells them apart.
 */
export function shortId(id) {
  const kind = id.indexOf('_');
  return id.length > kind + 10 ? `${id.slice(0, kind + 1)}…${id.slice(-8)}` : id;
}

/**
 * A record's labels as `key=value` chips, or null when it has none. With `pick(key, value)` each chip is a
 * button (a list's filter box takes the label clicked: filterBox's `pick`).
 */
export function labelChips(labels, pick) {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return null;
  return el(
    'span',
    { class: 'labels', 'aria-label': 'Labels' },
    entries.map(([key, value]) =>
      pick
        ? el(
            'button',
            { type: 'button', class: 'chip', title: `Filter by ${key}=${value}`, onclick: () => pick(key, value) },
            `${key}=${value}`,
          )
        : el('span', { class: 'chip', title: `label ${key}=${value}` }, `${key}=${value}`),
    ),
  );
}

const filterHint =
  'key=value terms filter by label (key=* any value; quote a value with spaces); the other words are the exact name';

/**
 * The filter box of the jobs, models and datasets lists, the same syntax for all three (parseFilter), starting
 * from the hash's `name` and `label`s (`params`). `change()` runs 300 ms after typing stops, or at once on
 * Enter. Returns the box (`root`), its trimmed `text()`, `apply(query)` that adds its `name` and `label`s to a
 * list's query, and `pick(key, value)` for labelChips: the label clicked joins the terms (once) and the list
 * changes.
 */
export function filterBox(id, params, change) {
  const input = el('input', {
    type: 'search',
    id,
    value: formatFilter(params.get('name'), params.getAll('label')),
    placeholder: 'team=vision or a name',
    autocomplete: 'off',
    spellcheck: 'false',
    title: filterHint,
    'aria-describedby': `${id}-hint`,
  });
  let typing = null;
  input.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(change, 300);
  });
  input.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter') return;
    clearTimeout(typing);
    change();
  });
  return {
    root: el(
      'div',
      {},
      el('label', { for: id }, 'Filter'),
      input,
      el('span', { id: `${id}-hint`, class: 'visually-hidden' }, filterHint),
    ),
    text: () => input.value.trim(),
    apply(query) {
      const { name, labels } = parseFilter(input.value);
      if (name) query.set('name', name);
      for (const label of labels) query.append('label', label);
      return query;
    },
    pick(key, value) {
      if (parseFilter(input.value).labels.includes(`${key}=${value}`)) return;
      input.value = [input.value.trim(), formatFilter(null, [`${key}=${value}`])].filter(Boolean).join(' ');
      change();
    },
  };
}

/**
 * The filter box's text as list filters: `key=value` terms are label selectors (`key="a b"` for a value with
 * spaces, `key=*` for any value), the other words, joined by single spaces, the exact name (`"a=b"` quoted
 * keeps an = in it).
 */
function parseFilter(text) {
  const labels = [];
  const words = [];
  for (const [, key, quoted, value, word, bare] of text.matchAll(
    /([A-Za-z0-9][-\w./]*)=(?:"([^"]*)"|(\S*))|"([^"]*)"|(\S+)/g,
  )) {
    if (key !== undefined) labels.push(quoted === undefined && value === '*' ? key : `${key}=${quoted ?? value}`);
    else words.push(word ?? bare);
  }
  return { name: words.join(' ').trim(), labels };
}

/** The filter box's text for a name and label selectors (from the hash): parseFilter reads it back. */
function formatFilter(name, labels) {
  const terms = labels.map((label) => {
    const at = label.indexOf('=');
    if (at < 0) return `${label}=*`;
    const value = label.slice(at + 1);
    return `${label.slice(0, at)}=${/\s/.test(value) || value === '*' ? `"${value}"` : value}`;
  });
  // Quoted only when the words alone would read back as something else (labels, or other spacing).
  const plain = name && parseFilter(name);
  if (name) terms.push(plain.name === name && plain.labels.length === 0 ? name : `"${name}"`);
  return terms.join(' ');
}

/**
 * `team=vision, stage=prod` as labels; undefined when empty. Text that is not such a list is returned as it
 * is, for the server to refuse next to the field (the form checks nothing itself).
 */
export function parseLabels(text) {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) return undefined;
  if (!items.every((item) => item.includes('='))) return text;
  return Object.fromEntries(
    items.map((item) => [item.slice(0, item.indexOf('=')).trim(), item.slice(item.indexOf('=') + 1).trim()]),
  );
}

/** Labels as the text parseLabels reads: `team=vision, stage=prod`. */
export function formatLabels(labels) {
  return Object.entries(labels ?? {})
    .map(([key, value]) => `${key}=${value}`)
    .join(', ');
}

/**
 * Models and datasets as the server has them, each asked for once per view however often it is shown:
 * `records('models', id)` is the promise of the record (rejected with the ApiError, as `api`, when it cannot
 * be read).
 */
export function recordCache() {
  const cache = new Map();
  return (kind, id) => {
    const path = `/v1/${kind}/${encodeURIComponent(id)}`;
    if (!cache.has(path)) cache.set(path, api(path));
    return cache.get(path);
  };
}

/**
 * A model or dataset by its name, a link when it has a page (`href`): the short id until its record arrives
 * (and for good when it has no name); the full id in the title, to hover and copy.
 */
export function recordLink(records, kind, id, href, title) {
  const link = el(href ? 'a' : 'span', { href, class: 'mono', title: title ? `${title} (${id})` : id }, shortId(id));
  records(kind, id).then(
    (record) => {
      if (!record?.name) return;
      link.textContent = record.name;
      link.classList.remove('mono');
    },
    // A model deleted since, say: the short id stays, and the link still leads to what is left of it.
    () => {},
  );
  return link;
}

/** A dataset's input arrays and their shapes: its x, or one array per model input. */
export function arraysOf(dataset) {
  const arrays = dataset.inputs ?? [{ name: 'x', ...dataset.x }];
  return arrays.map((a) => `${a.name} ${a.shape.join('×')}`).join(', ');
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatDate(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : '–';
}

/** How long a job ran (or has been running). */
export function jobDuration(job) {
  if (!job.startedAt) return NaN;
  const end = job.finishedAt ? Date.parse(job.finishedAt) : Date.now();
  return end - Date.parse(job.startedAt);
}

export function statusBadge(status) {
  return el('span', { class: `badge ${status}` }, status);
}

/** A labelled progress bar; `set(job-like)` updates it. */
export function progressBar(label) {
  const fill = el('span', { style: 'width:0%' });
  const bar = el(
    'div',
    {
      class: 'bar',
      role: 'progressbar',
      'aria-label': label,
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': 0,
    },
    fill,
  );
  const pct = el('span', { class: 'pct' }, '0%');
  const root = el('div', { class: 'progress-cell' }, bar, pct);
  return {
    root,
    bar,
    set({ progress, status }, source) {
      const value = Math.max(0, Math.min(100, Number(progress) || 0));
      fill.style.width = `${value}%`;
      bar.setAttribute('aria-valuenow', String(value));
      pct.textContent = `${Math.round(value)}%`;
      bar.classList.toggle('done', status === 'succeeded');
      bar.classList.toggle('failed', status === 'failed' || status === 'cancelled');
      if (source) bar.dataset.source = source;
    },
  };
}

export function errorBox(error, retry) {
  const detail = error instanceof ApiError ? error.message : String(error?.message ?? error);
  return el(
    'div',
    { class: 'error-box', role: 'alert' },
    detail,
    retry ? el('button', { type: 'button', class: 'secondary', onclick: retry }, 'Retry') : null,
  );
}

export function announce(text) {
  const line = document.getElementById('status-line');
  if (line) line.textContent = text;
}

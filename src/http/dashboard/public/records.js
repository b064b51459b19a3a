/**
 * The models and datasets pages: what the tenant uploaded, newest first as the server lists it, each by its
 * name (text: user input) and labels, short id (the full one on hover), what it holds (a model's format,
 * inputs and params; a dataset's samples and arrays), size and upload time; a model's row links to its jobs
 * and to a new job of it. A delete asks first; the server refuses it (409, its detail shown, the row kept)
 * while an unfinished job still holds the record. Paged as the jobs list: 25 a page, "Load more" while the
 * server gives a next cursor. Filtered by the same box as the jobs list (`team=vision` a label, other words the
 * exact name: the list's `?label=` and `?name=`; a label chip clicked adds its label), kept in the hash
 * (`#/models?label=team%3Dvision`) so a reload or a shared link keeps it.
 */
import {
  announce,
  api,
  arraysOf,
  el,
  errorBox,
  filterBox,
  formatBytes,
  formatDate,
  labelChips,
  shortId,
} from './lib.js';

const pageSize = 25;

export function renderModels(view) {
  return renderList(view, {
    kind: 'models',
    title: 'Models',
    what: 'model',
    headings: ['Format', 'Inputs', 'Params'],
    cells: (model) => [
      el('td', { class: 'nowrap' }, model.format),
      el('td', { class: 'mono' }, signatures(model.inputs)),
      el('td', { class: 'num opt' }, model.params.toLocaleString('en-US')),
    ],
    links: (model) => [
      el('a', { href: `#/jobs?modelId=${encodeURIComponent(model.id)}` }, 'Jobs'),
      el('a', { href: `#/new?modelId=${encodeURIComponent(model.id)}` }, 'New job'),
    ],
  });
}

export function renderDatasets(view) {
  return renderList(view, {
    kind: 'datasets',
    title: 'Datasets',
    what: 'dataset',
    headings: ['Samples', 'Arrays'],
    cells: (dataset) => [
      el('td', { class: 'num' }, String(dataset.samples)),
      el(
        'td',
        { class: 'mono', title: dtypes(dataset) },
        arraysOf(dataset),
        dataset.y ? `, y ${shape(dataset.y)}` : '',
      ),
    ],
    // No jobs column: the jobs list filters by model only, so a dataset has no list of its jobs to link to.
  });
}

/** Each array's dtype as stored (`<f4`, `|u1`… from .npy and .npz, `float64` from JSON), for the cell's hover. */
function dtypes(dataset) {
  const arrays = [
    ...(dataset.inputs ?? [{ name: 'x', ...dataset.x }]),
    ...(dataset.y ? [{ name: 'y', ...dataset.y }] : []),
  ];
  return arrays.map((a) => `${a.name} ${a.dtype}`).join(', ');
}

/** A model's inputs as `name ?×12 float32`. */
function signatures(inputs) {
  if (!inputs?.length) return '–';
  return inputs.map((input) => `${input.name} ${shape(input)} ${input.dtype}`).join(', ');
}

/** `?×12`: `?` for a size (or a whole shape) a model leaves open. */
function shape({ shape: dims }) {
  return dims ? dims.map((d) => d ?? '?').join('×') : '?';
}

/**
 * One page of records of `kind` ('models' | 'datasets'): `headings` and `cells(record)` are the columns of
 * what the kind holds, `links(record)` (optional, a Jobs column) what leads on from a row. Returns the view's
 * cleanup.
 */
function renderList(view, { kind, title, what, headings, cells, links }) {
  let cursor = null;
  // Bumped by every new list and by leaving the view: a page that arrives after that is dropped.
  let generation = 0;
  const rows = new Map();
  const body = el('tbody');
  const colspan = headings.length + (links ? 6 : 5);
  const search = filterBox('record-filter', new URLSearchParams(location.hash.split('?')[1] ?? ''), () => load(true));
  const table = el(
    'table',
    { class: 'records-table' },
    el('caption', { class: 'visually-hidden' }, `${title}, newest first`),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th', { scope: 'col' }, 'Name'),
        el('th', { scope: 'col' }, 'Id'),
        headings.map((heading) => el('th', { scope: 'col' }, heading)),
        el('th', { scope: 'col', class: 'num' }, 'Size'),
        el('th', { scope: 'col', class: 'opt' }, 'Created'),
        links ? el('th', { scope: 'col' }, 'Jobs') : null,
        el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Delete')),
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
      el('h1', {}, title),
      el('span', { class: 'spacer' }),
      search.root,
      el('a', { class: 'button', href: '#/new' }, `Upload a ${what}`),
    ),
    message,
    el('div', { class: 'panel table-wrap' }, table, more),
  );

  function rowFor(record) {
    const label = record.name ?? shortId(record.id);
    const tr = el(
      'tr',
      { dataset: { record: record.id } },
      el(
        'td',
        { class: 'name-cell' },
        el('span', { class: record.name ? 'record-name' : 'record-name muted' }, record.name ?? 'unnamed'),
        labelChips(record.labels, search.pick),
      ),
      el('td', { class: 'mono nowrap', title: record.id }, shortId(record.id)),
      cells(record),
      el('td', { class: 'num nowrap' }, formatBytes(record.bytes)),
      el('td', { class: 'opt' }, formatDate(record.createdAt)),
      links ? el('td', { class: 'links' }, links(record)) : null,
      el(
        'td',
        {},
        el(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'aria-label': `Delete ${what} ${label}`,
            onclick: () => remove(record, label),
          },
          'Delete',
        ),
      ),
    );
    rows.set(record.id, tr);
    return tr;
  }

  function showEmpty() {
    const filtered = search.text();
    body.append(
      el(
        'tr',
        {},
        el(
          'td',
          { colspan, class: 'empty' },
          filtered ? `No ${kind} matching “${filtered}”.` : `No ${kind} yet. `,
          filtered ? null : el('a', { href: '#/new' }, `Upload a ${what}.`),
        ),
      ),
    );
  }

  async function remove(record, label) {
    if (!window.confirm(`Delete ${what} ${label} (${record.id})?`)) return;
    message.replaceChildren();
    try {
      await api(`/v1/${kind}/${encodeURIComponent(record.id)}`, { method: 'DELETE' });
    } catch (error) {
      // A 409 names the unfinished jobs that hold it: shown, and the row stays. A 404 means it is gone already.
      message.replaceChildren(errorBox(error));
      if (error.status !== 404) return;
    }
    rows.get(record.id)?.remove();
    rows.delete(record.id);
    if (rows.size === 0 && !cursor) showEmpty();
    announce(`Deleted ${what} ${label}`);
  }

  async function load(reset) {
    if (reset) {
      generation++;
      rows.clear();
      body.replaceChildren();
      cursor = null;
      const query = String(search.apply(new URLSearchParams()));
      history.replaceState(null, '', `#/${kind}${query ? `?${query}` : ''}`);
    }
    message.replaceChildren();
    const current = generation;
    // One page at a time: a second click while one is on its way would fetch the same cursor twice.
    more.disabled = true;
    try {
      const query = search.apply(new URLSearchParams({ limit: String(pageSize) }));
      if (cursor) query.set('cursor', cursor);
      const page = await api(`/v1/${kind}?${query}`);
      if (current !== generation) return;
      for (const record of page.items) body.append(rowFor(record));
      cursor = page.nextCursor;
      more.hidden = !cursor;
      if (rows.size === 0) showEmpty();
    } catch (error) {
      if (current === generation) message.replaceChildren(errorBox(error, () => load(true)));
    } finally {
      more.disabled = false;
    }
  }

  load(true);
  return () => generation++;
}

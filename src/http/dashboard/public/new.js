/**
 * Upload a model (drop model.json + shards or one archive, or pick them) and a dataset, each with an
 * optional name and labels, then create a job from a form generated from `GET /v1/schema/job-spec`, the
 * schemas the server validates with (the job's name and labels among them). Labels are typed as
 * `key=value, key=value`. The form does no validation of its own: the server's problem+json `problems` are
 * shown next to the fields their JSON paths name.
 */
import { ApiError, api, arraysOf, el, errorBox, formatBytes, parseLabels } from './lib.js';

export function renderNew(view) {
  const jobSection = el(
    'section',
    { class: 'panel', 'aria-labelledby': 'job-title' },
    el('h2', { id: 'job-title' }, 'New job'),
    el('p', { class: 'muted' }, 'Loading the job spec schema…'),
  );
  const modelsChanged = [];
  const datasetsChanged = [];
  view.append(
    el('h1', {}, 'Upload & new job'),
    el(
      'div',
      { class: 'grid' },
      modelUpload((model) => modelsChanged.forEach((f) => f(model))),
      datasetUpload((dataset) => datasetsChanged.forEach((f) => f(dataset))),
    ),
    jobSection,
  );
  jobForm(jobSection, modelsChanged, datasetsChanged);
}

/** A record's labels as text for an option (which can hold no markup): ` [team=vision, stage=prod]`. */
function labelsText(labels) {
  const entries = Object.entries(labels ?? {});
  return entries.length ? ` [${entries.map(([k, v]) => `${k}=${v}`).join(', ')}]` : '';
}

/** Name and labels fields of an upload form, and `append(body)` adding the filled ones as text parts. */
function metadataFields(prefix) {
  const name = el('input', { type: 'text', id: `${prefix}-name`, autocomplete: 'off' });
  const labels = el('input', {
    type: 'text',
    id: `${prefix}-labels`,
    placeholder: 'team=vision, stage=prod',
    autocomplete: 'off',
  });
  return {
    root: el(
      'div',
      { class: 'form-grid' },
      el('div', { class: 'field' }, el('label', { for: name.id }, 'Name (optional)'), name),
      el('div', { class: 'field' }, el('label', { for: labels.id }, 'Labels (optional)'), labels),
    ),
    append(body) {
      if (name.value.trim()) body.append('name', name.value.trim());
      const parsed = parseLabels(labels.value);
      if (parsed !== undefined) body.append('labels', typeof parsed === 'string' ? parsed : JSON.stringify(parsed));
    },
  };
}

function filesField(id, label, accept) {
  const input = el('input', { type: 'file', id, multiple: true, accept });
  return [el('div', { class: 'field' }, el('label', { for: id }, label), input), input];
}

function modelUpload(onUploaded) {
  const [field, input] = filesField('model-files', 'Or choose files', '.json,.bin,.zip,.tar.gz,.tgz,.keras,.h5');
  const list = el('ul', { class: 'file-list', 'aria-label': 'Chosen files' });
  const result = el('div', { id: 'model-result', role: 'status' });
  const button = el('button', { type: 'submit', id: 'model-upload', disabled: true }, 'Upload model');
  const metadata = metadataFields('model');
  let files = [];
  const choose = (chosen) => {
    files = [...chosen];
    list.replaceChildren(...files.map((f) => el('li', {}, `${f.name} (${formatBytes(f.size)})`)));
    button.disabled = files.length === 0;
  };
  const zone = el(
    'div',
    {
      class: 'dropzone',
      id: 'model-drop',
      tabindex: 0,
      role: 'button',
      'aria-label':
        'Drop model.json and its weight shards, one zip, or a Keras .keras or .h5 here; Enter to choose files',
    },
    el('strong', {}, 'Drop model.json + weight shards, one .zip / .tar.gz, or a Keras .keras / .h5'),
    el('br'),
    el('span', { class: 'muted' }, 'or press Enter to choose files'),
  );
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    choose(event.dataTransfer.files);
  });
  zone.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      input.click();
    }
  });
  input.addEventListener('change', () => choose(input.files));
  const form = el(
    'form',
    { class: 'panel', 'aria-labelledby': 'upload-model-title' },
    el('h2', { id: 'upload-model-title' }, 'Upload a model'),
    zone,
    list,
    field,
    metadata.root,
    button,
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = new FormData();
    metadata.append(body);
    for (const file of files) body.append('file', file, file.name);
    button.disabled = true;
    result.replaceChildren(el('p', { class: 'muted' }, 'Uploading…'));
    try {
      const model = await api('/v1/models', { method: 'POST', body });
      const signature = (list) =>
        (list ?? [])
          .map((t) => `${t.name} [${t.shape === null ? '?' : t.shape.map((d) => d ?? 'n').join(', ')}] ${t.dtype}`)
          .join('; ');
      result.replaceChildren(
        el(
          'p',
          {},
          'Stored ',
          model.name ? `${model.name} · ` : null,
          el('span', { class: 'mono', id: 'model-id' }, model.id),
          `: ${model.format}, ${model.params} params, ${formatBytes(model.bytes)}` +
            (model.source ? `, converted from Keras ${model.source.kerasVersion} (.${model.source.format}).` : '.'),
        ),
        el(
          'p',
          { class: 'muted', id: 'model-signature' },
          `Inputs: ${signature(model.inputs) || '–'}. Outputs: ${signature(model.outputs) || '–'}. Datasets must fit these (n: any batch size).`,
        ),
      );
      onUploaded(model);
    } catch (error) {
      const where =
        error instanceof ApiError
          ? ['weight', 'file', 'layer']
              .filter((k) => error.problem[k])
              .map((k) => ` (${k} ${error.problem[k]})`)
              .join('')
          : '';
      result.replaceChildren(errorBox(`${error.message}${where}`));
    } finally {
      button.disabled = files.length === 0;
    }
  });
  return form;
}

function datasetUpload(onUploaded) {
  const x = el('input', { type: 'file', id: 'dataset-x', accept: '.npy' });
  const y = el('input', { type: 'file', id: 'dataset-y', accept: '.npy' });
  const json = el('input', { type: 'file', id: 'dataset-json', accept: '.json' });
  const result = el('div', { id: 'dataset-result', role: 'status' });
  const metadata = metadataFields('dataset');
  const form = el(
    'form',
    { class: 'panel', 'aria-labelledby': 'upload-dataset-title' },
    el('h2', { id: 'upload-dataset-title' }, 'Upload a dataset'),
    el(
      'p',
      { class: 'muted' },
      'For calibration, evaluation or fine-tuning: x (and optionally y) as .npy, or one JSON file {"x": [...], "y": [...]}.',
    ),
    el(
      'div',
      { class: 'form-grid' },
      el('div', { class: 'field' }, el('label', { for: 'dataset-x' }, 'x (.npy)'), x),
      el('div', { class: 'field' }, el('label', { for: 'dataset-y' }, 'y (.npy, optional)'), y),
    ),
    el('div', { class: 'field' }, el('label', { for: 'dataset-json' }, 'Or one JSON file'), json),
    metadata.root,
    el('button', { type: 'submit' }, 'Upload dataset'),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = new FormData();
    metadata.append(body);
    if (json.files[0]) body.append('file', json.files[0], json.files[0].name);
    else {
      if (x.files[0]) body.append('x', x.files[0], 'x.npy');
      if (y.files[0]) body.append('y', y.files[0], 'y.npy');
    }
    try {
      const dataset = await api('/v1/datasets', { method: 'POST', body });
      result.replaceChildren(
        el(
          'p',
          {},
          'Stored ',
          dataset.name ? `${dataset.name} · ` : null,
          el('span', { class: 'mono', id: 'dataset-id' }, dataset.id),
          `: ${dataset.samples} samples, ${arraysOf(dataset)}.`,
        ),
      );
      onUploaded(dataset);
    } catch (error) {
      result.replaceChildren(errorBox(error));
    }
  });
  return form;
}

/* ---- the job form, generated from JSON schema ---- */

const fieldId = (path) => `field${path.replace(/[^\w]+/g, '-')}`;

function literals(schema) {
  const options = schema.anyOf ?? (schema.const !== undefined ? [schema] : null);
  return options && options.every((s) => s.const !== undefined) ? options.map((s) => s.const) : null;
}

/** One control for a leaf schema, tagged with its JSON path and kind so values can be read back. */
function control(given, path, label) {
  // A nullable field (`anyOf: [{type}, {type: 'null'}]`) is edited as its non-null type; empty means unset.
  const member = literals(given) ? null : given.anyOf?.find((s) => s.type && s.type !== 'null');
  const schema = member
    ? { ...member, description: given.description ?? member.description, default: given.default ?? member.default }
    : given;
  const id = fieldId(path);
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const described = `${schema.description ? hintId : ''} ${errorId}`.trim();
  const options = literals(schema);
  let input;
  let kind;
  if (options) {
    input = el(
      'select',
      { id, 'aria-describedby': described },
      options.map((o) => el('option', { value: String(o) }, String(o))),
    );
    if (schema.default !== undefined) input.value = String(schema.default);
    kind = typeof options[0] === 'number' ? 'number' : 'string';
  } else if (schema.type === 'integer' || schema.type === 'number') {
    input = el('input', {
      type: 'number',
      id,
      step: schema.type === 'integer' ? 1 : 'any',
      value: schema.default,
      'aria-describedby': described,
    });
    kind = 'number';
  } else if (schema.type === 'boolean' && schema.default === undefined) {
    // No default: leaving it unset lets the server decide, which a checkbox cannot say.
    input = el(
      'select',
      { id, 'aria-describedby': described },
      el('option', { value: '' }, '(server default)'),
      el('option', { value: 'true' }, 'true'),
      el('option', { value: 'false' }, 'false'),
    );
    kind = 'optional-boolean';
  } else if (schema.type === 'boolean') {
    input = el('input', { type: 'checkbox', id, checked: schema.default === true, 'aria-describedby': described });
    kind = 'boolean';
  } else if (schema.type === 'array' && schema.items?.type !== 'object') {
    input = el('input', {
      type: 'text',
      id,
      value: (schema.default ?? []).join(', '),
      placeholder: 'comma separated',
      'aria-describedby': described,
    });
    kind = 'list';
  } else if (schema.type === 'object' && isStringRecord(schema)) {
    // Labels: `key=value, key=value`, as a person writes them, sent as their object.
    input = el('input', { type: 'text', id, placeholder: 'team=vision, stage=prod', 'aria-describedby': described });
    kind = 'labels';
  } else if (schema.type === 'object' || schema.type === 'array') {
    // Objects, and lists of objects (e.g. search candidates), are edited as JSON.
    input = el('textarea', {
      id,
      rows: 2,
      placeholder: schema.type === 'array' ? '[]' : '{}',
      'aria-describedby': described,
    });
    kind = 'json';
  } else {
    input = el('input', {
      type: schema.format === 'uri' ? 'url' : 'text',
      id,
      value: schema.default,
      'aria-describedby': described,
    });
    kind = 'string';
  }
  input.dataset.path = path;
  input.dataset.kind = kind;
  const wrapper = el(
    'div',
    { class: `field${kind === 'boolean' ? ' check' : ''}`, dataset: { fieldPath: path, kinds: kindsOf(given) } },
    kind === 'boolean' ? [input, el('label', { for: id }, label)] : [el('label', { for: id }, label), input],
    schema.description ? el('p', { class: 'hint', id: hintId }, schema.description) : null,
    el('p', { class: 'field-error', id: errorId, hidden: true }),
  );
  return wrapper;
}

/** An object of free keys, each a string (labels). */
function isStringRecord(schema) {
  const values = Object.values(schema.patternProperties ?? {});
  return !schema.properties && values.length > 0 && values.every((value) => value.type === 'string');
}

/** An optional group is sent only when its checkbox (in the legend, so never disabled with it) is on. */
function includeToggle(path, name) {
  const id = `${fieldId(path)}-include`;
  const box = el('input', { type: 'checkbox', id, onchange: () => (box.closest('fieldset').disabled = !box.checked) });
  return el('span', {}, box, el('label', { for: id, style: 'display:inline;margin-left:6px' }, `${name} (optional)`));
}

/** The job kinds a schema's block applies to (its `x-kinds`, space separated), or undefined for all. */
function kindsOf(schema) {
  return schema['x-kinds']?.join(' ');
}

/** Shows the blocks and fields that apply to `kind`; hidden ones are not sent (see collect). */
function showKind(form, kind) {
  for (const block of form.querySelectorAll('[data-kinds]'))
    block.hidden = !block.dataset.kinds.split(' ').includes(kind);
}

/** An object schema as a fieldset of its properties (nested objects with properties recurse). */
function objectFields(schema, path, skip = []) {
  return Object.entries(schema.properties ?? {})
    .filter(([name]) => !skip.includes(name))
    .map(([name, property]) => {
      const childPath = `${path}/${name}`;
      if (property.type === 'object' && property.properties) {
        const optional = !(schema.required ?? []).includes(name);
        const fieldset = el(
          'fieldset',
          { dataset: { fieldPath: childPath, kinds: kindsOf(property) }, disabled: optional },
          el('legend', {}, optional ? includeToggle(childPath, name) : name),
          property.description ? el('p', { class: 'hint' }, property.description) : null,
          el('div', { class: 'form-grid' }, objectFields(property, childPath)),
        );
        return fieldset;
      }
      return control(property, childPath, name);
    });
}

function readValue(input) {
  switch (input.dataset.kind) {
    case 'boolean':
      return input.checked;
    case 'optional-boolean':
      return input.value === '' ? undefined : input.value === 'true';
    case 'number':
      return input.value === '' ? undefined : Number(input.value);
    case 'list': {
      // Empty means unset: the server fills its default (and a list with a minimum length is not sent empty).
      const items = input.value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      return items.length > 0 ? items : undefined;
    }
    case 'labels':
      return parseLabels(input.value);
    case 'json':
      if (input.value.trim() === '') return undefined;
      try {
        return JSON.parse(input.value);
      } catch {
        return input.value;
      }
    default:
      return input.value === '' ? undefined : input.value;
  }
}

function setAt(target, path, value) {
  const keys = path.split('/').slice(1);
  let node = target;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys[keys.length - 1]] = value;
}

/**
 * The spec the form describes: every enabled, shown field with a value; empty fields take the server's
 * defaults, and a block hidden because the kind does not read it is not sent.
 */
function collect(form) {
  const spec = {};
  for (const input of form.querySelectorAll('[data-path]')) {
    const value = readValue(input);
    if (value !== undefined && !input.matches(':disabled') && !input.closest('[hidden]'))
      setAt(spec, input.dataset.path, value);
  }
  return spec;
}

/** A dataset as an option: its id, size and x shape (what has to fit the model's input). */
function datasetOption(dataset) {
  return el(
    'option',
    { value: dataset.id },
    `${dataset.name ? `${dataset.name} · ` : ''}${dataset.id} (${dataset.samples} samples, ${arraysOf(dataset)}${dataset.y ? ', with y' : ''})${labelsText(dataset.labels)}`,
  );
}

/** A select of the uploaded datasets in place of a free-text dataset id field. */
function datasetSelect(input, datasets) {
  const select = el(
    'select',
    { id: input.id, 'aria-describedby': input.getAttribute('aria-describedby') },
    el('option', { value: '' }, datasets.length ? 'None' : 'None (no datasets yet: upload one above)'),
    datasets.map(datasetOption),
  );
  select.dataset.path = input.dataset.path;
  select.dataset.kind = 'string';
  input.replaceWith(select);
  return select;
}

function showProblems(form, problems, general) {
  for (const wrapper of form.querySelectorAll('.field.invalid')) wrapper.classList.remove('invalid');
  for (const slot of form.querySelectorAll('.field-error')) {
    slot.hidden = true;
    slot.textContent = '';
  }
  const unplaced = [];
  let first = null;
  for (const problem of problems) {
    // The deepest field whose path is a prefix of the problem's (`/layers/overrides/x` → the overrides box).
    const inputs = [...form.querySelectorAll('[data-path]')].filter(
      (i) => problem.path === i.dataset.path || problem.path.startsWith(`${i.dataset.path}/`),
    );
    const input = inputs.sort((a, b) => b.dataset.path.length - a.dataset.path.length)[0];
    if (!input) {
      unplaced.push(problem);
      continue;
    }
    const slot = document.getElementById(`${input.id}-error`);
    slot.hidden = false;
    slot.textContent = slot.textContent ? `${slot.textContent}; ${problem.message}` : problem.message;
    input.closest('.field').classList.add('invalid');
    input.setAttribute('aria-invalid', 'true');
    first ??= input;
  }
  general.replaceChildren(
    ...unplaced.map((p) => el('div', { class: 'error-box', role: 'alert' }, `${p.path || '/'}: ${p.message}`)),
  );
  first?.focus();
}

async function jobForm(section, modelsChanged, datasetsChanged) {
  let schemas;
  let models;
  let datasets;
  try {
    [schemas, models, datasets] = await Promise.all([
      api('/v1/schema/job-spec'),
      api('/v1/models?limit=100'),
      api('/v1/datasets?limit=100'),
    ]);
  } catch (error) {
    section.replaceChildren(
      el('h2', { id: 'job-title' }, 'New job'),
      errorBox(error, () => jobForm(section, modelsChanged, datasetsChanged)),
    );
    return;
  }
  const spec = schemas.spec;
  const modelSelect = el('select', { id: fieldId('/modelId'), 'aria-describedby': `${fieldId('/modelId')}-error` });
  modelSelect.dataset.path = '/modelId';
  modelSelect.dataset.kind = 'string';
  const fillModels = (selected) => {
    modelSelect.replaceChildren(
      el('option', { value: '' }, models.items.length ? 'Choose a model' : 'No models yet: upload one above'),
      ...models.items.map((m) =>
        el(
          'option',
          { value: m.id },
          `${m.name ? `${m.name} · ` : ''}${m.id} (${m.format}, ${m.params} params)${labelsText(m.labels)}`,
        ),
      ),
    );
    if (selected) modelSelect.value = selected;
  };
  // `#/new?modelId=…` (a model's "New job" link) picks that model when it is among the newest 100 listed.
  const wanted = new URLSearchParams(location.hash.split('?')[1] ?? '').get('modelId');
  fillModels(models.items.some((m) => m.id === wanted) ? wanted : models.items[0]?.id);
  modelsChanged.push((model) => {
    // An upload of files already stored answers with that model: it moves to the top, not in twice.
    models.items = [model, ...models.items.filter((m) => m.id !== model.id)];
    fillModels(model.id);
  });

  const methodNames = Object.keys(schemas.methods);
  const methodSelect = el(
    'select',
    { id: fieldId('/method/name') },
    methodNames.map((n) => el('option', { value: n }, n)),
  );
  methodSelect.dataset.path = '/method/name';
  methodSelect.dataset.kind = 'string';
  const methodParams = el('div', { class: 'form-grid', id: 'method-params' });
  const drawMethod = () =>
    methodParams.replaceChildren(...objectFields(schemas.methods[methodSelect.value], '/method', ['name']));
  methodSelect.addEventListener('change', drawMethod);
  drawMethod();

  const groups = Object.entries(spec.properties)
    .filter(([name, p]) => name !== 'method' && p.type === 'object' && p.properties)
    .map(([name]) => name);
  const general = el('div', { id: 'form-problems' });
  const result = el('div', { id: 'job-result', role: 'status' });
  const submit = el('button', { type: 'submit', id: 'job-submit' }, 'Create job');
  const errorSlot = (path) => el('p', { class: 'field-error', id: `${fieldId(path)}-error`, hidden: true });
  const form = el(
    'form',
    { id: 'job-form', novalidate: true },
    el(
      'div',
      { class: 'form-grid' },
      el(
        'div',
        { class: 'field', dataset: { fieldPath: '/modelId' } },
        el('label', { for: modelSelect.id }, 'Model'),
        modelSelect,
        errorSlot('/modelId'),
      ),
      el(
        'div',
        { class: 'field', dataset: { fieldPath: '/method/name' } },
        el('label', { for: methodSelect.id }, 'Method'),
        methodSelect,
        errorSlot('/method/name'),
      ),
      ...objectFields(spec, '', ['modelId', 'method', ...groups]),
    ),
    el('fieldset', {}, el('legend', {}, 'Method parameters'), methodParams),
    ...objectFields(
      spec,
      '',
      Object.keys(spec.properties).filter((n) => !groups.includes(n)),
    ),
    general,
    submit,
    result,
  );
  // Wherever the spec asks for a dataset, the uploaded ones are offered, a new upload among them at once.
  const datasetSelects = [...form.querySelectorAll('[data-path^="/data/"]')].map((input) =>
    datasetSelect(input, datasets.items),
  );
  datasetsChanged.push((dataset) => {
    for (const select of datasetSelects) {
      select.options[0].textContent = 'None';
      // The same arrays uploaded again are the stored dataset: offered once.
      for (const option of [...select.options]) if (option.value === dataset.id) option.remove();
      select.options[0].after(datasetOption(dataset));
    }
  });
  const kindSelect = form.querySelector('[data-path="/kind"]');
  kindSelect.addEventListener('change', () => showKind(form, kindSelect.value));
  showKind(form, kindSelect.value);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    result.replaceChildren();
    try {
      const job = await api('/v1/jobs', { method: 'POST', body: collect(form) });
      showProblems(form, [], general);
      result.replaceChildren(
        el(
          'p',
          {},
          'Job ',
          el('a', { href: `#/jobs/${job.id}`, id: 'new-job-link' }, job.id),
          ' queued. ',
          el('a', { href: '#/jobs' }, 'Watch it on the jobs page.'),
        ),
      );
    } catch (error) {
      const problems = error instanceof ApiError ? error.problem.problems : null;
      if (problems?.length) showProblems(form, problems, general);
      else general.replaceChildren(errorBox(error));
    } finally {
      submit.disabled = false;
    }
  });
  section.replaceChildren(
    el('h2', { id: 'job-title' }, 'New job'),
    el(
      'p',
      { class: 'muted' },
      'Generated from the server’s job spec schema; the server checks every field and its errors appear next to them.',
    ),
    form,
  );
}

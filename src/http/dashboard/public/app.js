/**
 * The dashboard shell: a hash router (`#/jobs`, `#/jobs/{id}`, `#/new`, `#/models`, `#/datasets`) over views
 * that each return a cleanup function (a view reads its own `?query` from the hash), and the API key dialog,
 * opened whenever the server answers 401.
 */
import { apiKey, events, setApiKey } from './lib.js';
import { renderJobs } from './jobs.js';
import { renderJob } from './job.js';
import { renderNew } from './new.js';
import { renderDatasets, renderModels } from './records.js';

const view = document.getElementById('view');
const keyDialog = document.getElementById('key-dialog');
const keyButton = document.getElementById('key-button');
let leave = () => {};
/** The pages at a fixed path; any other hash is the jobs list (`#/jobs?modelId=…` included). */
const pages = { '/new': renderNew, '/models': renderModels, '/datasets': renderDatasets };

function route() {
  leave();
  view.replaceChildren();
  const path = (location.hash.replace(/^#/, '') || '/jobs').split('?')[0];
  const job = /^\/jobs\/([\w-]+)$/.exec(path);
  const page = pages[path];
  const name = job ? 'job' : page ? path.slice(1) : 'jobs';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === (name === 'job' ? 'jobs' : name)) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  leave = (job ? renderJob(view, job[1]) : (page ?? renderJobs)(view)) ?? (() => {});
  view.focus({ preventScroll: true });
}

function askForKey() {
  keyButton.hidden = false;
  if (!keyDialog.open) {
    keyDialog.querySelector('#key-input').value = apiKey();
    keyDialog.showModal();
  }
}

keyDialog.addEventListener('close', () => {
  if (keyDialog.returnValue === 'save') setApiKey(keyDialog.querySelector('#key-input').value.trim());
  if (keyDialog.returnValue === 'clear') setApiKey('');
  if (keyDialog.returnValue) route();
});
keyButton.addEventListener('click', askForKey);
events.addEventListener('unauthorized', askForKey);
if (apiKey()) keyButton.hidden = false;

window.addEventListener('hashchange', route);
route();

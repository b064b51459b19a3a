/**
 * The tfjs backend choice (docs/architecture.md): `tensorflow` (native, from the optional @tensorflow/tfjs-node)
 * when it loads, else `wasm` (XNNPACK, 5–16× faster than cpu here, plus the gradient kernels it lacks from
 * ./wasm-kernels), else `cpu` (pure JS, always there). A forced choice that cannot load is an error, not a
 * silent fallback: whoever forced it wants to know.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { registerWasmGradientKernels } from './wasm-kernels/index.js';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendPreference = 'auto' | BackendName;

const AUTO_ORDER: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu'];

/** Not a literal, so TypeScript does not insist that the optional package be installed. */
const TFJS_NODE = '@tensorflow/tfjs-node';

/** Each backend's one-time loading (import + registration), remembered so a second call costs nothing. */
const loading = new Map<BackendName, Promise<void>>();
let autoChoice: Promise<BackendName> | undefined;

async function loadTensorflow(): Promise<void> {
  await import(TFJS_NODE);
  if (!tf.engine().registryFactory.tensorflow) {
    throw new Error(`${TFJS_NODE} loaded but registered its backend on another @tensorflow/tfjs-core instance`);
  }
}

async function loadWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // The .wasm binaries sit beside the package's entry file; point the loader there so it never depends
  // on how the bundle guesses its own location.
  const distDir = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm'));
  if (existsSync(join(distDir, 'tfjs-backend-wasm.wasm'))) wasm.setWasmPaths(distDir + '/');
  registerWasmGradientKernels();
}

function load(name: BackendName): Promise<void> {
  let pending = loading.get(name);
  if (!pending) {
    pending = name === 'tensorflow' ? loadTensorflow() : name === 'wasm' ? loadWasm() : Promise.resolve();
    loading.set(name, pending);
  }
  return pending;
}

async function activate(name: BackendName): Promise<void> {
  if (tf.getBackend() === name && tf.engine().registry[name]) return;
  try {
    await load(name);
  } catch (err) {
    throw new Error(`tfjs backend '${name}' cannot load: ${(err as Error).message}`, { cause: err });
  }
  const previous = tf.getBackend();
  if (!(await tf.setBackend(name))) {
    if (previous && previous !== name && tf.engine().registry[previous]) await tf.setBackend(previous);
    throw new Error(`tfjs backend '${name}' failed to initialise`);
  }
}

async function firstAvailable(): Promise<BackendName> {
  for (const name of AUTO_ORDER) {
    try {
      await activate(name);
      return name;
    } catch {
      // Falling through to the next backend is the point of 'auto'.
    }
  }
  throw new Error('no tfjs backend could be initialised (tried tensorflow, wasm, cpu)');
}

/**
 * Makes the preferred backend the active one and returns its name. 'auto' tries tensorflow, wasm, cpu in
 * that order (decided once per process); a named backend that cannot load throws an Error naming it.
 */
export async function selectBackend(preference: BackendPreference = 'auto'): Promise<BackendName> {
  if (preference === 'auto') {
    autoChoice ??= firstAvailable();
    const name = await autoChoice;
    await activate(name);
    return name;
  }
  if (!AUTO_ORDER.includes(preference)) {
    throw new Error(`unknown tfjs backend '${String(preference)}'; expected one of auto, ${AUTO_ORDER.join(', ')}`);
  }
  await activate(preference);
  return preference;
}

/** The active backend, for reports. */
export function backendName(): BackendName {
  const name = tf.getBackend();
  if (!(AUTO_ORDER as readonly string[]).includes(name)) {
    throw new Error(`the active tfjs backend '${name}' is not one qaas selects; call selectBackend() first`);
  }
  return name as BackendName;
}

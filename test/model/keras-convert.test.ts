/**
 * The Keras converter on files Keras itself saved (test/fixtures/keras/make_fixtures.py): each converted
 * model, loaded by stock tf.loadLayersModel, must give Keras's own outputs on the saved inputs.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelError } from '../../src/model/errors.js';
import { convertKerasArchive, convertKerasH5 } from '../../src/model/keras/convert.js';
import { readKerasArchive } from '../../src/model/keras/archive.js';
import { loadRunnable } from '../../src/model/load.js';
import type { FileSet } from '../../src/model/types.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/keras');

interface SavedArray {
  dtype: string;
  shape: number[];
  values: number[];
}

interface Expected {
  keras_version: string;
  /** The input, or the list of inputs of a multi-input model. */
  x: SavedArray | SavedArray[];
  y: SavedArray;
}

async function fixture(name: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(path.join(FIXTURES, name)));
}

async function expected(name: string): Promise<Expected> {
  return JSON.parse(await readFile(path.join(FIXTURES, `${name}.expected.json`), 'utf8')) as Expected;
}

/** Largest |tfjs − Keras| over the fixture's saved input, with the model loaded by stock tfjs. */
async function maxAbsError(files: FileSet, saved: Expected): Promise<number> {
  const model = (await loadRunnable(files)) as tf.LayersModel;
  try {
    const x = (Array.isArray(saved.x) ? saved.x : [saved.x]).map((input) =>
      tf.tensor(input.values, input.shape, input.dtype === 'int32' ? 'int32' : 'float32'),
    );
    const y = model.predict(x.length === 1 ? x[0] : x) as tf.Tensor;
    expect(y.shape).toEqual(saved.y.shape);
    const got = await y.data();
    tf.dispose([...x, y]);
    return saved.y.values.reduce((worst, want, i) => Math.max(worst, Math.abs(got[i] - want)), 0);
  } finally {
    model.dispose();
  }
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const MODELS = ['sequential_cnn', 'functional_skip_bn', 'lstm', 'zoo'];

describe('Keras 3 .keras archives', () => {
  it.each(MODELS)('%s: outputs match Keras within 1e-5', async (name) => {
    const archive = await readKerasArchive(await fixture(`${name}.keras`));
    const saved = await expected(name);
    const { files, kerasVersion } = await convertKerasArchive(archive);
    expect(kerasVersion).toBe(saved.keras_version);
    const error = await maxAbsError(files, saved);
    console.log(`${name}.keras max abs error ${error.toExponential(2)}`);
    expect(error).toBeLessThan(1e-5);
  });
});

describe('resources', () => {
  it('a conversion leaves no tensors behind (the model tfjs builds to learn the weights is disposed)', async () => {
    const archive = await readKerasArchive(await fixture('zoo.keras'));
    const before = tf.memory().numTensors;
    await convertKerasArchive(archive);
    await convertKerasH5(await fixture('zoo.h5'), 'zoo.h5');
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('legacy .h5 files', () => {
  it.each(MODELS)('%s: outputs match Keras within 1e-5', async (name) => {
    const saved = await expected(name);
    const { files, kerasVersion } = await convertKerasH5(await fixture(`${name}.h5`), `${name}.h5`);
    expect(kerasVersion).toBe(saved.keras_version);
    const error = await maxAbsError(files, saved);
    console.log(`${name}.h5 max abs error ${error.toExponential(2)}`);
    expect(error).toBeLessThan(1e-5);
  });
});

describe('layers tfjs-layers cannot represent', () => {
  it('a class tfjs-layers lacks is refused with the layer named', async () => {
    const archive = await readKerasArchive(await fixture('unsupported_layer.keras'));
    const error = await convertKerasArchive(archive).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect((error as ModelError).code).toBe('unknown-layer');
    expect((error as ModelError).layer).toBe('groups');
    expect((error as ModelError).message).toMatch(/groups: GroupNormalization is not a tf\.layers class/);
  });

  it('an option tfjs-layers lacks (GRU reset_after) is refused, not dropped', async () => {
    const archive = await readKerasArchive(await fixture('gru_reset_after.keras'));
    const error = await convertKerasArchive(archive).catch((e: unknown) => e);
    expect((error as ModelError).code).toBe('unknown-layer');
    expect((error as ModelError).layer).toBe('gru_after');
    expect((error as ModelError).message).toMatch(/gru_after: GRU reset_after=True/);
  });
});

describe('damaged Keras files', () => {
  it('a truncated or corrupted .h5 is a malformed-file ModelError naming it, never a crash', async () => {
    const whole = await fixture('lstm.h5');
    const cut = await convertKerasH5(whole.slice(0, 8000), 'cut.h5').catch((e: unknown) => e);
    expect(cut).toMatchObject({ code: 'malformed-file', file: 'cut.h5' });
    expect((cut as ModelError).message).toMatch(/cut\.h5 is not a readable HDF5 file: truncated file/);
    const flipped = whole.slice();
    for (let i = 4000; i < 9000; i += 7) flipped[i] ^= 0xff;
    const corrupt = await convertKerasH5(flipped, 'corrupt.h5').catch((e: unknown) => e);
    expect(corrupt).toMatchObject({ code: 'malformed-file', file: 'corrupt.h5' });
  });
});

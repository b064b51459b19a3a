/**
 * Keras models to TF.js layers models, in memory and without Python: the conversion
 * `tensorflowjs_converter --input_format keras` does. Bytes in (a Keras 3 `.keras` archive's three
 * files, or a legacy `.h5`), a TF.js FileSet out: model.json whose `modelTopology` is
 * `{keras_version, backend, model_config}` with the config in tfjs-layers' Keras-JSON form (topology.ts),
 * and weight shards whose manifest names each weight as tfjs-layers names it, so stock
 * `tf.loadLayersModel` binds every value (weights.ts).
 *
 * tfjs-layers itself builds the translated topology before any weight is read: what it cannot build is
 * refused here, with the layer named, rather than by the user's browser later.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from '../errors.js';
import { isObject, readLayersTopology } from '../topology.js';
import type { FileSet, LoadedModel } from '../types.js';
import { writeModel, type WriteOptions } from '../write.js';
import { groupAt, stringAttribute, withHdf5 } from './hdf5.js';
import { toTfjsModelConfig, type KerasModelConfig } from './topology.js';
import { weightsFromLegacyH5, weightsFromV3 } from './weights.js';

/** The three files of a Keras 3 `.keras` archive. */
export interface KerasArchiveFiles {
  'config.json': Uint8Array;
  'metadata.json': Uint8Array;
  'model.weights.h5': Uint8Array;
}

export const KERAS_ARCHIVE_FILES = ['config.json', 'metadata.json', 'model.weights.h5'] as const;

export interface ConvertedKerasModel {
  /** model.json + shards, as writeModel writes any model. */
  files: FileSet;
  /** The Keras version that saved the model (metadata.json's, or the .h5's `keras_version`). */
  kerasVersion: string;
}

function parseJson(bytes: Uint8Array, label: string): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new ModelError('malformed-json', `${label} is not valid JSON: ${(error as Error).message}`, { file: label });
  }
}

/**
 * `value` with every `*_initializer` as Zeros and LSTM's `unit_forget_bias` off: the model is built only to
 * learn its weights' names and shapes. tfjs's Orthogonal initializer alone takes seconds for an LSTM(64) (a
 * QR decomposition in JS), and its unit-forget-bias initializer leaves four tensors behind per LSTM.
 */
function shapesOnly(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shapesOnly);
  if (!isObject(value)) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, item]) => {
      if (key.endsWith('_initializer') && isObject(item)) return [key, { class_name: 'Zeros', config: {} }];
      if (key === 'unit_forget_bias') return [key, false];
      return [key, shapesOnly(item)];
    }),
  );
}

/** tfjs-layers builds the model; its complaint (an option it rejects, shapes that do not fit) becomes a 422. */
async function buildInTfjs(modelTopology: Record<string, unknown>): Promise<tf.LayersModel> {
  try {
    return await tf.models.modelFromJSON({
      modelTopology: shapesOnly(modelTopology),
    } as unknown as tf.io.ModelJSON);
  } catch (error) {
    const message = (error as Error).message;
    throw new ModelError('bad-topology', `tfjs-layers cannot build the converted topology: ${message}`);
  }
}

async function convert(
  kerasConfig: unknown,
  kerasVersion: string,
  backend: string | undefined,
  readWeights: (model: tf.LayersModel, config: KerasModelConfig) => Promise<LoadedModel['weights']>,
  options: WriteOptions,
): Promise<ConvertedKerasModel> {
  const modelConfig = toTfjsModelConfig(kerasConfig, kerasVersion);
  const modelTopology = { keras_version: kerasVersion, ...(backend && { backend }), model_config: modelConfig };
  // The bounds every model.json meets (nesting, path length) before tfjs-layers recurses through it.
  readLayersTopology(modelTopology);
  const built = await buildInTfjs(modelTopology);
  let weights: LoadedModel['weights'];
  try {
    weights = await readWeights(
      built,
      isObject(kerasConfig) ? (kerasConfig as unknown as KerasModelConfig) : modelConfig,
    );
  } finally {
    built.dispose();
  }
  const model: LoadedModel = {
    format: 'layers-model',
    modelJson: { format: 'layers-model', generatedBy: `keras v${kerasVersion}`, modelTopology },
    weights,
  };
  return { files: writeModel(model, new Map(), options), kerasVersion };
}

/** A Keras 3 `.keras` model (its three files, already out of the zip) as a TF.js layers model. */
export async function convertKerasArchive(
  archive: KerasArchiveFiles,
  options: WriteOptions = {},
): Promise<ConvertedKerasModel> {
  const metadata = parseJson(archive['metadata.json'], 'metadata.json');
  const kerasVersion = isObject(metadata) && typeof metadata.keras_version === 'string' ? metadata.keras_version : '';
  if (!/^3\./.test(kerasVersion)) {
    throw new ModelError(
      'bad-topology',
      `metadata.json names Keras ${kerasVersion || 'no version'}; a .keras archive is Keras 3`,
      {
        file: 'metadata.json',
      },
    );
  }
  const config = parseJson(archive['config.json'], 'config.json');
  return withHdf5(archive['model.weights.h5'], 'model.weights.h5', (root) =>
    convert(config, kerasVersion, undefined, async (model, raw) => weightsFromV3(model, raw, root), options),
  );
}

/** A legacy Keras `.h5` (`model.save('x.h5')`: `model_config` and `model_weights`) as a TF.js layers model. */
export async function convertKerasH5(
  bytes: Uint8Array,
  label: string,
  options: WriteOptions = {},
): Promise<ConvertedKerasModel> {
  return withHdf5(bytes, label, (root) => {
    const configText = stringAttribute(root, 'model_config');
    const modelWeights = groupAt(root, 'model_weights');
    if (configText === undefined || modelWeights === undefined) {
      throw new ModelError(
        'bad-topology',
        `${label} has no model_config or model_weights: save the whole model (model.save), not only its weights`,
        { file: label },
      );
    }
    const kerasVersion =
      stringAttribute(root, 'keras_version') ?? stringAttribute(modelWeights, 'keras_version') ?? '2';
    const backend = stringAttribute(root, 'backend') ?? 'tensorflow';
    const config = parseJson(new TextEncoder().encode(configText), `${label} model_config`);
    return convert(config, kerasVersion, backend, async (model) => weightsFromLegacyH5(model, modelWeights), options);
  });
}

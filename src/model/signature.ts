/**
 * A model's inputs and outputs (name, shape with the batch dimension first, dtype), read from model.json
 * alone — no weights, no tfjs model built — so the API can check a dataset against a model at job
 * submission.
 *
 * Layers models: inputs from `input_layers` (functional) or the InputLayer / first layer's
 * `batch_input_shape` (Sequential, also when the first layer is itself a Sequential); output shapes by
 * folding each layer's shape rule over the topology (Dense, Conv*, pooling, recurrent, Reshape, Flatten,
 * merges, nested models and the shape-preserving layers). A layer without a rule makes its output shape
 * unknown (`null`) rather than wrong. Graph models: `signature.inputs/outputs` when the converter wrote
 * them, else Placeholder nodes and the nodes nothing consumes.
 */

/** `null` dimensions are free (batch, variable length); a `null` shape is of unknown rank. */
export type Shape = (number | null)[] | null;

export interface TensorSignature {
  name: string;
  shape: Shape;
  dtype: string;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const isSize = (d: unknown): d is number => Number.isSafeInteger(d) && (d as number) >= 0;

function asShape(value: unknown): Shape {
  if (!Array.isArray(value)) return null;
  return value.map((d) => (isSize(d) ? d : null));
}

/** A shape folded from config arithmetic may hold fractions or overflow; those sizes are unknown, not wrong. */
function sized(signatures: TensorSignature[]): TensorSignature[] {
  return signatures.map((s) => ({ ...s, shape: s.shape && s.shape.map((d) => (isSize(d) ? d : null)) }));
}

/** The `{class_name, config}` of a layers model, wherever the writer put it. */
function layersTopology(modelJson: Json): Json | null {
  const topology = modelJson.modelTopology;
  if (!isObject(topology)) return null;
  const inner = isObject(topology.model_config) ? topology.model_config : topology;
  return typeof inner.class_name === 'string' ? inner : null;
}

function isGraph(modelJson: Json): boolean {
  const topology = modelJson.modelTopology;
  return modelJson.format === 'graph-model' || (isObject(topology) && Array.isArray(topology.node));
}

function layerList(model: Json): Json[] {
  const config = model.config;
  // Old Keras wrote a Sequential's config as the bare layer list.
  const layers = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
  return Array.isArray(layers) ? layers.filter(isObject) : [];
}

const configOf = (layer: Json): Json => (isObject(layer.config) ? layer.config : {});
const nameOf = (layer: Json): string => String(layer.name ?? configOf(layer).name ?? layer.class_name);
const isModel = (layer: Json): boolean => ['Sequential', 'Model', 'Functional'].includes(String(layer.class_name));

/** A Sequential's input: its InputLayer, or the batch_input_shape of its first layer (recursing into models). */
function sequentialInput(model: Json): TensorSignature | null {
  const first = layerList(model)[0];
  if (!first) return null;
  if (first.class_name === 'Sequential') return sequentialInput(first);
  if (isModel(first)) return functionalInputs(first)[0] ?? null;
  const config = configOf(first);
  const shape = asShape(config.batch_input_shape ?? config.batch_shape);
  if (shape === null && first.class_name !== 'InputLayer') return null;
  const dtype = typeof config.dtype === 'string' ? config.dtype : 'float32';
  // tfjs names a Sequential's implicit input after its first layer.
  return { name: first.class_name === 'InputLayer' ? nameOf(first) : `${nameOf(first)}_input`, shape, dtype };
}

function functionalInputs(model: Json): TensorSignature[] {
  const config = configOf(model);
  const byName = new Map(layerList(model).map((layer) => [nameOf(layer), layer]));
  const refs = Array.isArray(config.input_layers) ? config.input_layers : [];
  return refs.map((ref) => {
    const name = String(Array.isArray(ref) ? ref[0] : ref);
    const layerConfig = configOf(byName.get(name) ?? {});
    return {
      name,
      shape: asShape(layerConfig.batch_input_shape ?? layerConfig.batch_shape),
      dtype: typeof layerConfig.dtype === 'string' ? layerConfig.dtype : 'float32',
    };
  });
}

// ---- output shape inference ------------------------------------------------------------------------

const passThrough = new Set([
  'Activation',
  'ActivityRegularization',
  'AlphaDropout',
  'BatchNormalization',
  'Dropout',
  'ELU',
  'GaussianDropout',
  'GaussianNoise',
  'LayerNormalization',
  'LeakyReLU',
  'Masking',
  'Normalization',
  'PReLU',
  'ReLU',
  'Rescaling',
  'Softmax',
  'SpatialDropout1D',
  'SpatialDropout2D',
  'SpatialDropout3D',
  'ThresholdedReLU',
  'UnitNormalization',
]);

const num = (value: unknown, fallback: number): number => (typeof value === 'number' ? value : fallback);
const nums = (value: unknown, rank: number, fallback: number): number[] =>
  Array.isArray(value) ? value.map((v) => num(v, fallback)) : Array.from({ length: rank }, () => num(value, fallback));

function product(dims: (number | null)[]): number | null {
  return dims.some((d) => d === null) ? null : (dims as number[]).reduce((a, b) => a * b, 1);
}

/** Spatial length after a conv or pool window. */
function windowed(
  length: number | null,
  kernel: number,
  stride: number,
  dilation: number,
  padding: string,
): number | null {
  if (length === null) return null;
  if (padding === 'same' || padding === 'causal') return Math.ceil(length / stride);
  return Math.ceil((length - (kernel - 1) * dilation) / stride);
}

function convLike(layer: Json, config: Json, shape: (number | null)[]): Shape {
  const rank = shape.length - 2;
  const channelsFirst = config.data_format === 'channels_first';
  const spatial = channelsFirst ? shape.slice(2) : shape.slice(1, -1);
  const channels = channelsFirst ? shape[1] : shape[shape.length - 1];
  const pool = /Pooling/.test(String(layer.class_name));
  const kernel = nums(pool ? (config.pool_size ?? 2) : config.kernel_size, rank, 1);
  const strides = nums(config.strides ?? (pool ? kernel : 1), rank, 1);
  const dilation = nums(config.dilation_rate ?? 1, rank, 1);
  const padding = String(config.padding ?? 'valid');
  const transpose = /Transpose/.test(String(layer.class_name));
  const out = spatial.map((n, i) =>
    transpose
      ? n === null
        ? null
        : padding === 'same'
          ? n * strides[i]
          : (n - 1) * strides[i] + kernel[i]
      : windowed(n, kernel[i], strides[i], dilation[i], padding),
  );
  let outChannels: number | null;
  if (pool) outChannels = channels;
  else if (layer.class_name === 'DepthwiseConv2D')
    outChannels = channels === null ? null : channels * num(config.depth_multiplier, 1);
  else outChannels = num(config.filters, Number.NaN);
  if (Number.isNaN(outChannels)) return null;
  return channelsFirst ? [shape[0], outChannels, ...out] : [shape[0], ...out, outChannels];
}

/** Output shape of one layer given its input shapes; null when no rule applies. */
function layerOutput(layer: Json, inputs: Shape[]): Shape {
  const type = String(layer.class_name);
  const config = configOf(layer);
  if (isModel(layer)) return modelOutputShapes(layer, inputs)[0] ?? null;
  if (type === 'InputLayer') return asShape(config.batch_input_shape ?? config.batch_shape);
  if (inputs.some((s) => s === null) || inputs.length === 0) return null;
  const shapes = inputs as (number | null)[][];
  const [shape] = shapes;
  if (passThrough.has(type)) return shape;
  switch (type) {
    case 'Add':
    case 'Subtract':
    case 'Multiply':
    case 'Average':
    case 'Maximum':
    case 'Minimum':
      return shape;
    case 'Concatenate': {
      const axis = num(config.axis, -1);
      const at = axis < 0 ? shape.length + axis : axis;
      const sizes = shapes.map((s) => s[at]);
      const total = sizes.some((d) => d === null) ? null : (sizes as number[]).reduce((a, b) => a + b, 0);
      return shape.map((d, i) => (i === at ? total : d));
    }
    case 'Dense':
      return [...shape.slice(0, -1), num(config.units, 0)];
    case 'Embedding':
      return [...shape, num(config.output_dim, 0)];
    case 'Flatten':
      return [shape[0], product(shape.slice(1))];
    case 'Reshape': {
      const target = asShape(config.target_shape);
      if (target === null) return null;
      const known = product(target.filter((d) => d !== null));
      const total = product(shape.slice(1));
      return [shape[0], ...target.map((d) => (d === null ? (total === null || !known ? null : total / known) : d))];
    }
    case 'RepeatVector':
      return [shape[0], num(config.n, 0), ...shape.slice(1)];
    case 'Permute': {
      const dims = nums(config.dims, 0, 1);
      return [shape[0], ...dims.map((d) => shape[d])];
    }
    case 'GlobalAveragePooling1D':
    case 'GlobalMaxPooling1D':
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
      return config.data_format === 'channels_first' ? [shape[0], shape[1]] : [shape[0], shape[shape.length - 1]];
    case 'LSTM':
    case 'GRU':
    case 'SimpleRNN': {
      const units = num(config.units, 0);
      return config.return_sequences ? [shape[0], shape[1], units] : [shape[0], units];
    }
    case 'Bidirectional': {
      const inner = isObject(config.layer) ? config.layer : {};
      const one = layerOutput(inner, [shape]);
      if (one === null) return null;
      const mode = config.merge_mode ?? 'concat';
      const last = one[one.length - 1];
      return mode === 'concat' ? [...one.slice(0, -1), last === null ? null : last * 2] : one;
    }
    case 'TimeDistributed': {
      const inner = isObject(config.layer) ? config.layer : {};
      const one = layerOutput(inner, [[shape[0], ...shape.slice(2)]]);
      return one === null ? null : [one[0], shape[1], ...one.slice(1)];
    }
    case 'ZeroPadding2D': {
      const padding = Array.isArray(config.padding) ? config.padding : [config.padding ?? 1, config.padding ?? 1];
      const extra = padding.map((p) => (Array.isArray(p) ? num(p[0], 0) + num(p[1], 0) : 2 * num(p, 1)));
      return [shape[0], ...shape.slice(1, 3).map((d, i) => (d === null ? null : d + extra[i])), shape[3]];
    }
    case 'UpSampling2D': {
      const size = nums(config.size ?? 2, 2, 2);
      return [shape[0], ...shape.slice(1, 3).map((d, i) => (d === null ? null : d * size[i])), shape[3]];
    }
  }
  if (/^(Conv[123]D|Conv[23]DTranspose|DepthwiseConv2D|SeparableConv[12]D|(Max|Average)Pooling[123]D)$/.test(type)) {
    return convLike(layer, config, shape);
  }
  return null;
}

/** Output shapes of a (possibly nested) model, given its input shapes (default: its own). */
function modelOutputShapes(model: Json, inputs?: Shape[]): Shape[] {
  const layers = layerList(model);
  if (model.class_name === 'Sequential') {
    let shape: Shape = inputs?.[0] ?? sequentialInput(model)?.shape ?? null;
    for (const layer of layers) if (layer.class_name !== 'InputLayer') shape = layerOutput(layer, [shape]);
    return [shape];
  }
  const config = configOf(model);
  const byName = new Map(layers.map((layer) => [nameOf(layer), layer]));
  const inputNames = (Array.isArray(config.input_layers) ? config.input_layers : []).map((ref) =>
    String(Array.isArray(ref) ? ref[0] : ref),
  );
  // A nested model's node 0 is its own input-to-output node, which configs leave out of its list: a
  // reference to its node n ≥ 1 is the list's entry n − 1 (as tfjs-layers reads it). tfjs / Keras 2 write a
  // node as a list of [layer, node index, tensor index, kwargs].
  const inboundRefs = (layer: Json, nodeIndex: number): [string, number][] => {
    const nodes = Array.isArray(layer.inbound_nodes) ? layer.inbound_nodes : [];
    const nested = layerList(layer).length > 0;
    const node = nodes[nested ? Math.max(0, nodeIndex - 1) : nodeIndex];
    const refs = Array.isArray(node) ? node.filter(Array.isArray) : [];
    return refs.map((ref) => [String(ref[0]), num(ref[1], 0)]);
  };
  const memo = new Map<string, Shape>();
  // A post-order walk with its own stack, not recursion: a chain MAX_LAYER_DEPTH long ran V8's stack out
  // inside a request on Node 22. A layer met again while its inputs are being resolved is a cycle: null.
  const output = (name: string, nodeIndex: number): Shape => {
    const expanding = new Map<string, [string, number][]>();
    const stack: [string, number][] = [[name, nodeIndex]];
    while (stack.length > 0) {
      const [layerName, index] = stack[stack.length - 1];
      const key = `${layerName}/${index}`;
      if (memo.has(key)) {
        stack.pop();
        continue;
      }
      const layer = byName.get(layerName);
      const inputAt = inputNames.indexOf(layerName);
      let shape: Shape;
      if (!layer) shape = null;
      else if (inputAt >= 0 && inputs?.[inputAt] !== undefined) shape = inputs[inputAt];
      else if (layer.class_name === 'InputLayer') shape = layerOutput(layer, []);
      else {
        const refs = expanding.get(key);
        if (!refs) {
          const inbound = inboundRefs(layer, index);
          expanding.set(key, inbound);
          for (const [ref, refIndex] of inbound) {
            const refKey = `${ref}/${refIndex}`;
            if (!memo.has(refKey) && !expanding.has(refKey)) stack.push([ref, refIndex]);
          }
          continue;
        }
        expanding.delete(key);
        shape =
          refs.length === 0
            ? null
            : layerOutput(
                layer,
                refs.map(([ref, refIndex]) => memo.get(`${ref}/${refIndex}`) ?? null),
              );
      }
      memo.set(key, shape);
      stack.pop();
    }
    return memo.get(`${name}/${nodeIndex}`) ?? null;
  };
  const outputs = Array.isArray(config.output_layers) ? config.output_layers : [];
  return outputs.map((ref) => (Array.isArray(ref) ? output(String(ref[0]), num(ref[1], 0)) : null));
}

// ---- graph models ----------------------------------------------------------------------------------

const graphDtypes: Record<string, string> = {
  DT_FLOAT: 'float32',
  DT_HALF: 'float32',
  DT_DOUBLE: 'float32',
  DT_BFLOAT16: 'float32',
  DT_INT32: 'int32',
  DT_INT64: 'int32',
  DT_INT16: 'int32',
  DT_INT8: 'int32',
  DT_UINT8: 'int32',
  DT_UINT16: 'int32',
  DT_BOOL: 'bool',
  DT_STRING: 'string',
};

function graphDtype(value: unknown): string {
  if (typeof value !== 'string') return 'float32';
  return Object.hasOwn(graphDtypes, value) ? graphDtypes[value] : value.replace(/^DT_/, '').toLowerCase();
}

/** A TensorShapeProto (`{dim: [{size: '-1'}]}` or `{unknownRank: true}`) → Shape. */
function protoShape(value: unknown): Shape {
  if (!isObject(value) || value.unknownRank) return null;
  const dims = Array.isArray(value.dim) ? value.dim : [];
  return dims.map((d) => {
    const size = Number(isObject(d) ? (d.size ?? 0) : 0);
    return isSize(size) ? size : null;
  });
}

const nodeName = (tensor: string): string => tensor.replace(/^\^/, '').replace(/:\d+$/, '');

function signatureEntries(value: unknown): TensorSignature[] | null {
  if (!isObject(value)) return null;
  return Object.entries(value)
    .filter(([, entry]) => isObject(entry))
    .map(([key, entry]) => {
      const info = entry as Json;
      return { name: nodeName(key), shape: protoShape(info.tensorShape), dtype: graphDtype(info.dtype) };
    });
}

function graphNodes(modelJson: Json): Json[] {
  const topology = modelJson.modelTopology;
  return isObject(topology) && Array.isArray(topology.node) ? topology.node.filter(isObject) : [];
}

function attrOf(node: Json, name: string): Json {
  const attr = isObject(node.attr) ? node.attr : {};
  return isObject(attr[name]) ? (attr[name] as Json) : {};
}

function graphInputs(modelJson: Json): TensorSignature[] {
  const signature = isObject(modelJson.signature) ? modelJson.signature : {};
  return (
    signatureEntries(signature.inputs) ??
    graphNodes(modelJson)
      .filter((node) => node.op === 'Placeholder')
      .map((node) => ({
        name: String(node.name),
        shape: protoShape(attrOf(node, 'shape').shape),
        dtype: graphDtype(attrOf(node, 'dtype').type),
      }))
  );
}

function graphOutputs(modelJson: Json): TensorSignature[] {
  const signature = isObject(modelJson.signature) ? modelJson.signature : {};
  const declared = signatureEntries(signature.outputs);
  if (declared) return declared;
  const nodes = graphNodes(modelJson);
  const consumed = new Set(
    nodes.flatMap((node) => (Array.isArray(node.input) ? node.input.map((i) => nodeName(String(i))) : [])),
  );
  return nodes
    .filter((node) => !consumed.has(String(node.name)) && !['Const', 'NoOp', 'Placeholder'].includes(String(node.op)))
    .map((node) => {
      const shapes = attrOf(node, '_output_shapes').list;
      const first = isObject(shapes) && Array.isArray(shapes.shape) ? shapes.shape[0] : undefined;
      return {
        name: String(node.name),
        shape: protoShape(first),
        dtype: graphDtype(attrOf(node, 'T').type ?? attrOf(node, 'dtype').type),
      };
    });
}

// ---- public ----------------------------------------------------------------------------------------

/** The model's inputs, batch dimension first. */
export function modelInputs(modelJson: Json): TensorSignature[] {
  return sized(declaredInputs(modelJson));
}

/** The model's outputs, batch dimension first; shapes are inferred for layers models (see the module comment). */
export function modelOutputs(modelJson: Json): TensorSignature[] {
  return sized(inferredOutputs(modelJson));
}

function declaredInputs(modelJson: Json): TensorSignature[] {
  if (isGraph(modelJson)) return graphInputs(modelJson);
  const model = layersTopology(modelJson);
  if (!model) return [];
  if (model.class_name === 'Sequential') {
    const input = sequentialInput(model);
    return input ? [input] : [];
  }
  return functionalInputs(model);
}

function inferredOutputs(modelJson: Json): TensorSignature[] {
  if (isGraph(modelJson)) return graphOutputs(modelJson);
  const model = layersTopology(modelJson);
  if (!model) return [];
  const shapes = modelOutputShapes(model);
  if (model.class_name === 'Sequential') {
    const last = layerList(model).at(-1);
    return last ? [{ name: nameOf(last), shape: shapes[0], dtype: 'float32' }] : [];
  }
  const refs = Array.isArray(configOf(model).output_layers) ? (configOf(model).output_layers as unknown[]) : [];
  return refs.map((ref, i) => ({
    name: String(Array.isArray(ref) ? ref[0] : ref),
    shape: shapes[i] ?? null,
    dtype: 'float32',
  }));
}

export interface DatasetShape {
  /** The only input's samples; null when `inputs` names one array per input. */
  x: { sampleShape: number[] } | null;
  inputs?: { name: string; sampleShape: number[] }[];
  y?: { sampleShape: number[]; labels?: 'index' | 'onehot' | 'values' } | null;
}

/** A dataset's input name matches a model input's with or without the graph output index (`input` = `input:0`). */
export function sameInput(given: string, input: string): boolean {
  return given.replace(/:0$/, '') === input.replace(/:0$/, '');
}

const show = (dims: (number | null)[]): string => `[${dims.map((d) => (d === null ? '?' : d)).join(',')}]`;

function fits(sample: number[], expected: (number | null)[]): boolean {
  return sample.length === expected.length && expected.every((d, i) => d === null || d === sample[i]);
}

/**
 * Why `dataset` cannot feed `inputs` / be compared with `outputs`, or null when it fits. Strict: x samples
 * must have the input's shape without the batch dimension exactly (a missing trailing 1-channel is a
 * mismatch); y must be one class id per sample (for an output of [batch, classes]) or have the output's
 * per-sample shape. Unknown shapes are not held against the dataset.
 */
export function checkDatasetFitsModel(
  dataset: DatasetShape,
  inputs: TensorSignature[],
  outputs: TensorSignature[],
): string | null {
  const quoted = (names: string[]) => names.map((name) => `'${name}'`).join(', ');
  if (dataset.inputs) {
    const given = dataset.inputs;
    const missing = inputs.filter((input) => !given.some((array) => sameInput(array.name, input.name)));
    const extra = given.filter((array) => !inputs.some((input) => sameInput(array.name, input.name)));
    if (missing.length > 0 || extra.length > 0) {
      return (
        `dataset inputs ${quoted(given.map((a) => a.name))} must be the model's inputs ${quoted(inputs.map((i) => i.name))}` +
        (missing.length > 0 ? `: ${quoted(missing.map((i) => i.name))} missing` : '') +
        (extra.length > 0 ? `${missing.length > 0 ? ',' : ':'} ${quoted(extra.map((a) => a.name))} not an input` : '')
      );
    }
    for (const input of inputs) {
      const array = given.find((a) => sameInput(a.name, input.name))!;
      if (input.shape !== null && !fits(array.sampleShape, input.shape.slice(1))) {
        return `dataset input '${array.name}' samples are ${show(array.sampleShape)} but input '${input.name}' expects ${show(input.shape.slice(1))}`;
      }
    }
  } else {
    if (inputs.length !== 1) {
      return (
        `the model has ${inputs.length} inputs (${quoted(inputs.map((i) => i.name))}): send one array per input, ` +
        'named by it (.npz keys, upload part names, or JSON x as an object)'
      );
    }
    const [input] = inputs;
    const x = dataset.x!.sampleShape;
    if (input.shape !== null && !fits(x, input.shape.slice(1))) {
      return `dataset x samples are ${show(x)} but input '${input.name}' expects ${show(input.shape.slice(1))}`;
    }
  }
  const y = dataset.y;
  if (!y) return null;
  if (outputs.length !== 1) return `the model has ${outputs.length} outputs; labels (y) fit single-output models only`;
  const [output] = outputs;
  if (output.shape === null) return null;
  const perSample = output.shape.slice(1);
  const scalar = y.sampleShape.length === 0 || (y.sampleShape.length === 1 && y.sampleShape[0] === 1);
  if (scalar && y.labels !== 'values') {
    // Class ids fit an output of [batch, classes] (or [batch, 1] for a binary classifier).
    if (perSample.length === 1) return null;
    return `dataset y holds one class id per sample but output '${output.name}' gives ${show(perSample)} per sample, not [classes]`;
  }
  if (scalar) {
    // One target value per sample fits an output of [batch], [batch, 1] or [batch, ?].
    const width = perSample.length === 0 ? 1 : perSample.length === 1 ? perSample[0] : -1;
    if (width === null || width === 1) return null;
  }
  if (!fits(y.sampleShape, perSample)) {
    return `dataset y samples are ${show(y.sampleShape)} but output '${output.name}' gives ${show(perSample)}`;
  }
  return null;
}

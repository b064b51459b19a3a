/**
 * BatchNorm folding (issue 4, "Activation simulation"): what integer deployment does before it quantizes.
 * A BatchNormalization computes, per channel c in inference,
 *
 *   y = γ_c · (x − μ_c) / √(σ²_c + ε) + β_c,
 *
 * so when x is a linear layer's output, x = W·a + b, the pair is one linear layer with
 *
 *   W'[..., c] = W[..., c] · f_c,   b'_c = (b_c − μ_c) · f_c + β_c,   f_c = γ_c / √(σ²_c + ε)
 *
 * (γ = 1 when `scale` is false, β = 0 when `center` is false, b = 0 when the layer had no bias, in which
 * case one is added). Folded into: Dense, Conv1D, Conv2D, DepthwiseConv2D (output channel = input channel ×
 * multiplier + m, the row-major order of its kernel's last two axes) and SeparableConv2D (its pointwise
 * kernel). A BN is left alone, with the reason in `skipped`, when its input comes from anything else, when
 * that layer has a non-linear activation (the BN then normalises the activation, not the linear output),
 * when that layer's output also feeds another layer, when either layer is shared (called more than once),
 * when the BN normalises another axis than the channels-last one, or when a weight is missing.
 *
 * Only the top-level layers of a layers model are looked at (the layers of a nested model are not). Graph
 * models come back unchanged: the converter already folds BatchNorm into the preceding op.
 *
 * `keepScale` (ptq.equalize): folding multiplies kernel channel c by f_c, so channels whose γ differ by 100×
 * end 100× apart and one per-tensor grid rounds the small ones away. With keepScale the fold still happens,
 * but the BatchNorm stays as a pure per-channel scale a_c (src/quant/equalize.ts scaleIntoBatchNorm): the
 * kernel's channels all get the same range, the layer loses its bias (β takes it), and μ = 0, σ² = 1 − ε
 * are constants stored as one byte each.
 */
import { scaleIntoBatchNorm } from '../quant/equalize.js';
import { ModelError } from './errors.js';
import { CONTAINER_CLASSES, isObject, layersRoot } from './topology.js';
import type { LoadedModel, Weight } from './types.js';

export interface FoldResult {
  model: LoadedModel;
  /** The BatchNormalization layers folded away. */
  folded: string[];
  skipped: { layer: string; reason: string }[];
  /** keepScale: the BatchNorms kept as the per-channel scale of the layer before them. */
  scaled: BatchNormScaling[];
}

export interface BatchNormScaling {
  /** The layer whose kernel channels now share one range, and that kernel's weight name. */
  layer: string;
  kernel: string;
  batchNorm: string;
  channels: number;
  /** Largest ÷ smallest channel range of the folded kernel, before (the grid a plain fold would need). */
  rangeRatioBefore: number;
  /** The same after: 1 up to float16 rounding of the scales. */
  rangeRatioAfter: number;
}

export interface FoldOptions {
  keepScale?: boolean;
}

type Json = Record<string, unknown>;

/** A reference to one output of a layer call: [layer, node index, tensor index, kwargs?]. */
type TensorRef = [string, number, number, ...unknown[]];

/** Layer class → its kernel's weight name and the rank of its output (channels last). */
const FOLDABLE: Record<string, { kernel: string; outputRank?: number }> = {
  Dense: { kernel: 'kernel' },
  Conv1D: { kernel: 'kernel', outputRank: 3 },
  Conv2D: { kernel: 'kernel', outputRank: 4 },
  DepthwiseConv2D: { kernel: 'depthwise_kernel', outputRank: 4 },
  SeparableConv2D: { kernel: 'pointwise_kernel', outputRank: 4 },
};

function layerName(layer: Json): string {
  const config = isObject(layer.config) ? layer.config : {};
  return String(config.name ?? layer.name);
}

function isTensorRef(value: unknown): value is TensorRef {
  return (
    Array.isArray(value) && typeof value[0] === 'string' && typeof value[1] === 'number' && typeof value[2] === 'number'
  );
}

/** The calls of a functional layer: each a list of input refs; undefined when the format is not tfjs's. */
function inboundNodes(layer: Json): TensorRef[][] | undefined {
  const nodes = layer.inbound_nodes ?? [];
  if (!Array.isArray(nodes)) return undefined;
  const parsed: TensorRef[][] = [];
  for (const node of nodes) {
    if (!Array.isArray(node) || !node.every(isTensorRef)) return undefined;
    parsed.push(node as TensorRef[]);
  }
  return parsed;
}

/** Every tensor ref of a functional model's config: layer inputs and the model's outputs. */
function allRefs(config: Json, layers: Json[]): TensorRef[] {
  const refs: TensorRef[] = layers.flatMap((layer) => (inboundNodes(layer) ?? []).flat());
  if (Array.isArray(config.output_layers)) refs.push(...config.output_layers.filter(isTensorRef));
  return refs;
}

class Skip extends Error {}

export function foldBatchNorm(model: LoadedModel, options: FoldOptions = {}): FoldResult {
  if (model.format !== 'layers-model') return { model, folded: [], skipped: [], scaled: [] };
  const modelJson = structuredClone(model.modelJson);
  const root = layersRoot(modelJson.modelTopology as Json);
  const className = String(root.class_name);
  if (!CONTAINER_CLASSES.has(className))
    throw new ModelError('bad-topology', `the model's root is a ${className}, not a model`);
  // Old Sequential configs are the bare layer list.
  const config: Json = Array.isArray(root.config) ? { layers: root.config } : (root.config as Json);
  const layers = config.layers as Json[];
  const sequential = className === 'Sequential';
  const weights = new Map(model.weights.map((w) => [w.name, w]));
  const removed = new Set<string>();
  /** Kernel name → the weights a fold added to its layer (a bias, or a kept BN's γ/β), written right after it. */
  const added = new Map<string, string[]>();
  const folded: string[] = [];
  const skipped: FoldResult['skipped'] = [];
  const scaled: BatchNormScaling[] = [];

  for (const bn of [...layers]) {
    if (bn.class_name !== 'BatchNormalization') continue;
    const bnName = layerName(bn);
    try {
      const { producer, source } = sequential ? sequentialProducer(layers, bn) : functionalProducer(config, layers, bn);
      if (options.keepScale) {
        scaled.push(scaleInto(producer, bn, weights, removed, added));
        continue;
      }
      foldInto(producer, bn, weights, removed, added);
      layers.splice(layers.indexOf(bn), 1);
      if (!sequential) rewire(config, layers, bnName, source);
      folded.push(bnName);
    } catch (error) {
      if (!(error instanceof Skip)) throw error;
      skipped.push({ layer: bnName, reason: error.message });
    }
  }
  if (Array.isArray(root.config)) root.config = layers;

  const outputWeights: Weight[] = [];
  for (const weight of model.weights) {
    if (removed.has(weight.name)) continue;
    outputWeights.push(weights.get(weight.name)!);
    for (const name of added.get(weight.name) ?? []) outputWeights.push(weights.get(name)!);
  }
  return { model: { format: model.format, modelJson, weights: outputWeights }, folded, skipped, scaled };
}

function sequentialProducer(layers: Json[], bn: Json): { producer: Json; source: TensorRef } {
  const index = layers.indexOf(bn);
  if (index === 0) throw new Skip('it is the first layer: there is no layer to fold it into');
  const producer = layers[index - 1];
  return { producer, source: [layerName(producer), 0, 0] };
}

function functionalProducer(config: Json, layers: Json[], bn: Json): { producer: Json; source: TensorRef } {
  const bnNodes = inboundNodes(bn);
  if (bnNodes === undefined) throw new Skip('its inbound_nodes are not in the tfjs layers format');
  if (bnNodes.length !== 1) throw new Skip(`it is shared (called ${bnNodes.length} times)`);
  if (bnNodes[0].length !== 1) throw new Skip('it has more than one input');
  const source = bnNodes[0][0];
  const producer = layers.find((layer) => layerName(layer) === source[0]);
  if (producer === undefined) throw new Skip(`its input ${source[0]} is not a layer of the model`);
  const producerNodes = inboundNodes(producer);
  if (producerNodes === undefined || producerNodes.length > 1) throw new Skip(`its input layer ${source[0]} is shared`);
  const consumers = allRefs(config, layers).filter((ref) => ref[0] === source[0]).length;
  if (consumers > 1)
    throw new Skip(`the output of ${source[0]} also feeds other layers, which must still see it unnormalised`);
  return { producer, source: [source[0], source[1], source[2]] };
}

/** Replaces every use of the BN's output by the producer's output it normalised. */
function rewire(config: Json, layers: Json[], bnName: string, source: TensorRef): void {
  const replace = (ref: TensorRef): TensorRef =>
    ref[0] === bnName ? [source[0], source[1], source[2], ...ref.slice(3)] : ref;
  for (const layer of layers) {
    const nodes = inboundNodes(layer);
    if (nodes !== undefined && nodes.length > 0) layer.inbound_nodes = nodes.map((node) => node.map(replace));
  }
  if (Array.isArray(config.output_layers)) {
    config.output_layers = config.output_layers.map((ref) => (isTensorRef(ref) ? replace(ref) : ref));
  }
}

function normalisedAxis(axis: unknown): number | undefined {
  const value = Array.isArray(axis) ? (axis.length === 1 ? axis[0] : undefined) : axis;
  return typeof value === 'number' ? value : undefined;
}

function floatValues(weights: Map<string, Weight>, name: string): Float32Array | undefined {
  const values = weights.get(name)?.values;
  return values instanceof Float32Array ? values : undefined;
}

interface FoldInputs {
  producerName: string;
  producerClass: string;
  producerConfig: Json;
  bnName: string;
  bnConfig: Json;
  kernelName: string;
  kernel: Weight;
  biasName: string;
  useBias: boolean;
  bias: Float32Array;
  gamma?: Float32Array;
  beta?: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
  epsilon: number;
  channels: number;
}

/** Checks that `bn` can be folded into `producer` and reads every value a fold needs (else throws Skip). */
function foldInputs(producer: Json, bn: Json, weights: Map<string, Weight>): FoldInputs {
  const producerName = layerName(producer);
  const producerClass = String(producer.class_name);
  const kind = FOLDABLE[producerClass];
  if (kind === undefined)
    throw new Skip(`its input comes from ${producerName} (${producerClass}), not a Dense or convolution layer`);
  const producerConfig = producer.config as Json;
  const activation = producerConfig.activation ?? 'linear';
  if (activation !== 'linear') {
    throw new Skip(
      `${producerName} has activation ${String(activation)}: a BatchNorm after a non-linearity cannot be folded`,
    );
  }
  if (producerConfig.data_format === 'channels_first') throw new Skip(`${producerName} is channels_first`);
  const bnConfig = bn.config as Json;
  const axis = normalisedAxis(bnConfig.axis);
  if (axis !== -1 && (kind.outputRank === undefined || axis !== kind.outputRank - 1)) {
    throw new Skip(`it normalises axis ${JSON.stringify(bnConfig.axis)}, not the channels axis of ${producerName}`);
  }

  const bnName = layerName(bn);
  const mean = floatValues(weights, `${bnName}/moving_mean`);
  const variance = floatValues(weights, `${bnName}/moving_variance`);
  const gamma = bnConfig.scale === false ? undefined : floatValues(weights, `${bnName}/gamma`);
  const beta = bnConfig.center === false ? undefined : floatValues(weights, `${bnName}/beta`);
  if (!mean || !variance || (bnConfig.scale !== false && !gamma) || (bnConfig.center !== false && !beta)) {
    throw new Skip(`its weights (${bnName}/moving_mean, ...) are not in the manifest as float32`);
  }
  const kernelName = `${producerName}/${kind.kernel}`;
  const kernel = weights.get(kernelName);
  if (!kernel || !(kernel.values instanceof Float32Array))
    throw new Skip(`${kernelName} is not in the manifest as float32`);
  const channels = mean.length;
  const kernelChannels =
    producerClass === 'DepthwiseConv2D' ? kernel.shape[2] * kernel.shape[3] : kernel.shape[kernel.shape.length - 1];
  if (kernelChannels !== channels) {
    throw new Skip(`it has ${channels} channels but ${producerName} outputs ${kernelChannels}`);
  }
  const biasName = `${producerName}/bias`;
  const useBias = producerConfig.use_bias !== false;
  const bias = useBias ? floatValues(weights, biasName) : new Float32Array(channels);
  if (!bias) throw new Skip(`${biasName} is not in the manifest as float32`);
  const epsilon = typeof bnConfig.epsilon === 'number' ? bnConfig.epsilon : 1e-3;
  return {
    producerName,
    producerClass,
    producerConfig,
    bnName,
    bnConfig,
    kernelName,
    kernel,
    biasName,
    useBias,
    bias,
    gamma,
    beta,
    mean,
    variance,
    epsilon,
    channels,
  };
}

/**
 * Folds `bn` into `producer`'s kernel and bias (in `weights`); marks the BN's weights in `removed` and a
 * bias it had to add in `added`.
 */
function foldInto(
  producer: Json,
  bn: Json,
  weights: Map<string, Weight>,
  removed: Set<string>,
  added: Map<string, string[]>,
): void {
  const {
    producerConfig,
    bnName,
    kernelName,
    kernel,
    biasName,
    useBias,
    bias,
    gamma,
    beta,
    mean,
    variance,
    epsilon,
    channels,
  } = foldInputs(producer, bn, weights);
  const factor = new Float64Array(channels);
  const foldedBias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    factor[c] = (gamma ? gamma[c] : 1) / Math.sqrt(variance[c] + epsilon);
    foldedBias[c] = (bias[c] - mean[c]) * factor[c] + (beta ? beta[c] : 0);
  }
  const foldedKernel = new Float32Array(kernel.values.length);
  for (let i = 0; i < foldedKernel.length; i++) foldedKernel[i] = kernel.values[i] * factor[i % channels];

  weights.set(kernelName, { name: kernelName, shape: kernel.shape, dtype: 'float32', values: foldedKernel });
  weights.set(biasName, { name: biasName, shape: [channels], dtype: 'float32', values: foldedBias });
  if (!useBias) {
    producerConfig.use_bias = true;
    added.set(kernelName, [biasName]);
  }
  for (const name of ['gamma', 'beta', 'moving_mean', 'moving_variance']) removed.add(`${bnName}/${name}`);
}

/**
 * keepScale: the fold with the BN kept as the per-channel scale (see the module comment). The BN's weights
 * are rewritten in place; γ or β it did not have are added after the kernel (tfjs matches layers weights by
 * name, so their position in the manifest is free), and the producer's bias is dropped into β.
 */
function scaleInto(
  producer: Json,
  bn: Json,
  weights: Map<string, Weight>,
  removed: Set<string>,
  added: Map<string, string[]>,
): BatchNormScaling {
  const inputs = foldInputs(producer, bn, weights);
  const { producerName, producerClass, producerConfig, bnName, bnConfig, kernelName, kernel, channels } = inputs;
  const layout = { shape: kernel.shape, depthwise: producerClass === 'DepthwiseConv2D' };
  const result = scaleIntoBatchNorm(kernel.values as Float32Array, layout, inputs.bias, inputs);
  const ratio = (values: Float32Array): number => {
    const ranges = new Float64Array(channels);
    for (let i = 0; i < values.length; i++) ranges[i % channels] = Math.max(ranges[i % channels], Math.abs(values[i]));
    const nonzero = ranges.filter((r) => r > 0);
    return nonzero.length === 0 ? 1 : Math.max(...nonzero) / Math.min(...nonzero);
  };
  const folded = Float32Array.from(kernel.values as Float32Array, (v, i) => v * result.factors[i % channels]);

  weights.set(kernelName, { ...kernel, values: result.kernel, channelScaleIn: bnName });
  if (inputs.useBias) {
    producerConfig.use_bias = false;
    removed.add(inputs.biasName);
  }
  const vector = (name: string, values: Float32Array, sourceQuantization?: Weight['sourceQuantization']): Weight => ({
    name: `${bnName}/${name}`,
    shape: [channels],
    dtype: 'float32',
    values,
    ...(sourceQuantization ? { sourceQuantization } : {}),
  });
  // σ'² = 1 − ε makes √(σ'² + ε) one; stored, like μ' = 0, as a one-byte code for a constant.
  const unitVariance = Math.fround(1 - inputs.epsilon);
  const rewritten = [
    vector('gamma', result.gamma, { dtype: 'float16' }),
    vector('beta', result.beta),
    vector('moving_mean', new Float32Array(channels), { dtype: 'uint8', min: 0, scale: 1 }),
    vector('moving_variance', new Float32Array(channels).fill(unitVariance), {
      dtype: 'uint8',
      min: unitVariance,
      scale: 1,
    }),
  ];
  const missing: string[] = [];
  for (const weight of rewritten) {
    if (!weights.has(weight.name)) missing.push(weight.name);
    weights.set(weight.name, weight);
  }
  bnConfig.scale = true;
  bnConfig.center = true;
  if (missing.length > 0) added.set(kernelName, missing);
  return {
    layer: producerName,
    kernel: kernelName,
    batchNorm: bnName,
    channels,
    rangeRatioBefore: ratio(folded),
    rangeRatioAfter: ratio(result.kernel),
  };
}

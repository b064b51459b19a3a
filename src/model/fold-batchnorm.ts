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
 */
import { ModelError } from './errors.js';
import { CONTAINER_CLASSES, isObject, layersRoot } from './topology.js';
import type { LoadedModel, Weight } from './types.js';

export interface FoldResult {
  model: LoadedModel;
  /** The BatchNormalization layers folded away. */
  folded: string[];
  skipped: { layer: string; reason: string }[];
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

export function foldBatchNorm(model: LoadedModel): FoldResult {
  if (model.format !== 'layers-model') return { model, folded: [], skipped: [] };
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
  /** Kernel name → the bias a fold added to its layer, written right after the kernel. */
  const addedBiases = new Map<string, string>();
  const folded: string[] = [];
  const skipped: FoldResult['skipped'] = [];

  for (const bn of [...layers]) {
    if (bn.class_name !== 'BatchNormalization') continue;
    const bnName = layerName(bn);
    try {
      const { producer, source } = sequential ? sequentialProducer(layers, bn) : functionalProducer(config, layers, bn);
      foldInto(producer, bn, weights, removed, addedBiases);
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
    const addedBias = addedBiases.get(weight.name);
    if (addedBias !== undefined) outputWeights.push(weights.get(addedBias)!);
  }
  return { model: { format: model.format, modelJson, weights: outputWeights }, folded, skipped };
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

/**
 * Folds `bn` into `producer`'s kernel and bias (in `weights`); marks the BN's weights in `removed` and a
 * bias it had to add in `addedBiases`.
 */
function foldInto(
  producer: Json,
  bn: Json,
  weights: Map<string, Weight>,
  removed: Set<string>,
  addedBiases: Map<string, string>,
): void {
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
    addedBiases.set(kernelName, biasName);
  }
  for (const name of ['gamma', 'beta', 'moving_mean', 'moving_variance']) removed.add(`${bnName}/${name}`);
}

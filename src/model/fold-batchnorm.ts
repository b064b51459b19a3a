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
 * but the BatchNorm stays as a pure per-channel scale a_c (src/quant/equalize.ts, shareOneRange): the
 * kernel's channels all get the same range, the layer loses its bias (β takes it), and μ = 0, σ² = 1 − ε
 * are constants stored as one byte each.
 *
 * The fold is a plan and a per-kernel apply. `planBatchNormFold` decides everything from the topology and
 * the small tensors (the BatchNorms' weights and the biases of the layers before them, `foldInputNames`):
 * which BN folds into which layer, the new topology, which weights go and which are added where in the
 * manifest, the factors f_c, and every new small tensor's values. Only a kernel's new values need the
 * kernel: `applyKernelFold` computes them in place (and, with keepScale, γ'), so the streaming PTQ folds
 * each kernel as it is read (src/pipeline/stream.ts) and `foldBatchNorm` is the plan applied to a whole
 * model in memory.
 */
import { foldFactors, foldIntoKernel, outputRanges, scaledBatchNormBeta, shareOneRange } from '../quant/equalize.js';
import type { KernelLayout } from '../quant/equalize.js';
import { ModelError } from './errors.js';
import { CONTAINER_CLASSES, isObject, layersRoot } from './topology.js';
import type { LoadedModel, ModelOutline, Weight } from './types.js';

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

type Outline = Omit<Weight, 'values'>;

/** How the folded model gets one weight's values. */
export type FoldedWeight =
  /** The source weight of that name, unchanged. */
  | { kind: 'source'; weight: Outline }
  /** The source kernel of that name through applyKernelFold. */
  | { kind: 'kernel'; weight: Outline; fold: KernelFold }
  /** Values the plan computed (a folded bias; a kept BatchNorm's β', μ', σ'²). */
  | { kind: 'computed'; weight: Weight }
  /** keepScale: the kept BatchNorm's γ', which applyKernelFold returns for `kernel`. */
  | { kind: 'gamma'; weight: Outline; kernel: string };

export interface KernelFold {
  layout: KernelLayout;
  /** f_c of every BatchNorm folded into the kernel, in folding order (a chain of BNs folds more than once). */
  factors: Float64Array[];
  /** keepScale: the BatchNorm that keeps the kernel's per-channel scale. */
  scaleIn?: string;
}

export interface FoldPlan {
  modelJson: Record<string, unknown>;
  folded: string[];
  skipped: FoldResult['skipped'];
  /** keepScale's pairs, without the range ratios, which only the kernel's values give. */
  scaled: Omit<BatchNormScaling, 'rangeRatioBefore' | 'rangeRatioAfter'>[];
  /** Source weight name → the weights written in its place, in manifest order (none: it is folded away). */
  outputs: Map<string, FoldedWeight[]>;
}

/** What applyKernelFold learns under keepScale: γ' and the range ratios of the report. */
export interface KernelScale {
  gamma: Float32Array;
  rangeRatioBefore: number;
  rangeRatioAfter: number;
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

const BATCH_NORM_WEIGHTS = ['gamma', 'beta', 'moving_mean', 'moving_variance'];

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

interface Topology {
  root: Json;
  config: Json;
  layers: Json[];
  sequential: boolean;
}

function readTopology(modelJson: Record<string, unknown>): Topology {
  const root = layersRoot(modelJson.modelTopology as Json);
  const className = String(root.class_name);
  if (!CONTAINER_CLASSES.has(className))
    throw new ModelError('bad-topology', `the model's root is a ${className}, not a model`);
  // Old Sequential configs are the bare layer list.
  const config: Json = Array.isArray(root.config) ? { layers: root.config } : (root.config as Json);
  return { root, config, layers: config.layers as Json[], sequential: className === 'Sequential' };
}

/**
 * The weights a plan reads values of: every top-level BatchNormalization's, and the bias of every layer a
 * BatchNorm can fold into (none without a BatchNorm). All are one value per channel.
 */
export function foldInputNames(model: ModelOutline): Set<string> {
  const names = new Set<string>();
  if (model.format !== 'layers-model') return names;
  const layers = readTopology(model.modelJson).layers;
  if (!layers.some((layer) => layer.class_name === 'BatchNormalization')) return names;
  for (const layer of layers) {
    const name = layerName(layer);
    if (layer.class_name === 'BatchNormalization') for (const w of BATCH_NORM_WEIGHTS) names.add(`${name}/${w}`);
    else if (Object.hasOwn(FOLDABLE, String(layer.class_name))) names.add(`${name}/bias`);
  }
  return names;
}

/**
 * The fold of `model`'s BatchNorms (see the module comment), from its outline and `values`, which holds at
 * least the weights foldInputNames lists.
 */
export function planBatchNormFold(
  model: ModelOutline,
  values: ReadonlyMap<string, Weight['values']>,
  options: FoldOptions = {},
): FoldPlan {
  const modelJson = structuredClone(model.modelJson);
  const outputs = new Map(
    model.weights.map((w): [string, FoldedWeight[]] => [w.name, [{ kind: 'source', weight: w }]]),
  );
  const plan: FoldPlan = { modelJson, folded: [], skipped: [], scaled: [], outputs };
  if (model.format !== 'layers-model') return plan;
  const { root, config, layers, sequential } = readTopology(modelJson);
  const state: FoldState = {
    current: new Map(model.weights.map((w) => [w.name, { kind: 'source', weight: w }])),
    values,
    removed: new Set(),
    added: new Map(),
  };

  for (const bn of [...layers]) {
    if (bn.class_name !== 'BatchNormalization') continue;
    const bnName = layerName(bn);
    try {
      const { producer, source } = sequential ? sequentialProducer(layers, bn) : functionalProducer(config, layers, bn);
      if (options.keepScale) {
        plan.scaled.push(scaleInto(producer, bn, state));
        continue;
      }
      foldInto(producer, bn, state);
      layers.splice(layers.indexOf(bn), 1);
      if (!sequential) rewire(config, layers, bnName, source);
      plan.folded.push(bnName);
    } catch (error) {
      if (!(error instanceof Skip)) throw error;
      plan.skipped.push({ layer: bnName, reason: error.message });
    }
  }
  if (Array.isArray(root.config)) root.config = layers;

  for (const weight of model.weights) {
    outputs.set(
      weight.name,
      state.removed.has(weight.name)
        ? []
        : [weight.name, ...(state.added.get(weight.name) ?? [])].map((name) => state.current.get(name)!),
    );
  }
  return plan;
}

/**
 * The kernel's folded values, in place over the source kernel's `values`; under keepScale, γ' and the
 * range ratios too.
 */
export function applyKernelFold(fold: KernelFold, values: Float32Array): KernelScale | undefined {
  for (const factors of fold.factors) foldIntoKernel(values, factors);
  if (fold.scaleIn === undefined) return undefined;
  const ranges = outputRanges(values, fold.layout);
  const rangeRatioBefore = rangeRatio(ranges);
  const gamma = shareOneRange(values, fold.layout, ranges);
  return { gamma, rangeRatioBefore, rangeRatioAfter: rangeRatio(outputRanges(values, fold.layout)) };
}

/** Largest ÷ smallest nonzero channel range; 1 when every channel is zero. */
function rangeRatio(ranges: Float64Array): number {
  const nonzero = ranges.filter((r) => r > 0);
  return nonzero.length === 0 ? 1 : Math.max(...nonzero) / Math.min(...nonzero);
}

/** The report's keepScale pairs, once every kernel they name went through applyKernelFold. */
export function scalingsOf(plan: FoldPlan, scales: ReadonlyMap<string, KernelScale>): BatchNormScaling[] {
  return plan.scaled.map((pair) => {
    const { rangeRatioBefore, rangeRatioAfter } = scales.get(pair.kernel)!;
    return { ...pair, rangeRatioBefore, rangeRatioAfter };
  });
}

export function foldBatchNorm(model: LoadedModel, options: FoldOptions = {}): FoldResult {
  if (model.format !== 'layers-model') return { model, folded: [], skipped: [], scaled: [] };
  const values = new Map(model.weights.map((w) => [w.name, w.values]));
  const plan = planBatchNormFold(model, values, options);
  const kernels = new Map<string, Float32Array>();
  const scales = new Map<string, KernelScale>();
  for (const outputs of plan.outputs.values()) {
    for (const output of outputs) {
      if (output.kind !== 'kernel') continue;
      const kernel = Float32Array.from(values.get(output.weight.name) as Float32Array);
      const scale = applyKernelFold(output.fold, kernel);
      kernels.set(output.weight.name, kernel);
      if (scale) scales.set(output.weight.name, scale);
    }
  }
  const source = new Map(model.weights.map((w) => [w.name, w]));
  const weights = model.weights.flatMap((weight) =>
    plan.outputs.get(weight.name)!.map((output): Weight => {
      if (output.kind === 'source') return source.get(output.weight.name)!;
      if (output.kind === 'computed') return output.weight;
      if (output.kind === 'kernel') return { ...output.weight, values: kernels.get(output.weight.name)! };
      return { ...output.weight, values: scales.get(output.kernel)!.gamma };
    }),
  );
  return {
    model: { format: model.format, modelJson: plan.modelJson, weights },
    folded: plan.folded,
    skipped: plan.skipped,
    scaled: scalingsOf(plan, scales),
  };
}

/** The plan as it is made: each weight's current form, and the manifest's removals and additions. */
interface FoldState {
  current: Map<string, FoldedWeight>;
  values: ReadonlyMap<string, Weight['values']>;
  removed: Set<string>;
  /** Kernel name → the weights a fold added to its layer (a bias, or a kept BN's γ/β), written right after it. */
  added: Map<string, string[]>;
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

/** A weight's values while the plan is made, when they are small and float32. */
function floatValues(state: FoldState, name: string): Float32Array | undefined {
  const weight = state.current.get(name);
  const values =
    weight?.kind === 'computed' ? weight.weight.values : weight?.kind === 'source' ? state.values.get(name) : undefined;
  return values instanceof Float32Array ? values : undefined;
}

interface FoldInputs {
  producerName: string;
  producerConfig: Json;
  bnName: string;
  bnConfig: Json;
  kernelName: string;
  kernel: FoldedWeight & { kind: 'source' | 'kernel' };
  layout: KernelLayout;
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
function foldInputs(producer: Json, bn: Json, state: FoldState): FoldInputs {
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
  const mean = floatValues(state, `${bnName}/moving_mean`);
  const variance = floatValues(state, `${bnName}/moving_variance`);
  const gamma = bnConfig.scale === false ? undefined : floatValues(state, `${bnName}/gamma`);
  const beta = bnConfig.center === false ? undefined : floatValues(state, `${bnName}/beta`);
  if (!mean || !variance || (bnConfig.scale !== false && !gamma) || (bnConfig.center !== false && !beta)) {
    throw new Skip(`its weights (${bnName}/moving_mean, ...) are not in the manifest as float32`);
  }
  const kernelName = `${producerName}/${kind.kernel}`;
  const kernel = state.current.get(kernelName);
  if (
    kernel === undefined ||
    (kernel.kind !== 'source' && kernel.kind !== 'kernel') ||
    kernel.weight.dtype !== 'float32'
  )
    throw new Skip(`${kernelName} is not in the manifest as float32`);
  const channels = mean.length;
  const { shape } = kernel.weight;
  const depthwise = producerClass === 'DepthwiseConv2D';
  const kernelChannels = depthwise ? shape[2] * shape[3] : shape[shape.length - 1];
  if (kernelChannels !== channels) {
    throw new Skip(`it has ${channels} channels but ${producerName} outputs ${kernelChannels}`);
  }
  const biasName = `${producerName}/bias`;
  const useBias = producerConfig.use_bias !== false;
  const bias = useBias ? floatValues(state, biasName) : new Float32Array(channels);
  if (!bias) throw new Skip(`${biasName} is not in the manifest as float32`);
  const epsilon = typeof bnConfig.epsilon === 'number' ? bnConfig.epsilon : 1e-3;
  return {
    producerName,
    producerConfig,
    bnName,
    bnConfig,
    kernelName,
    kernel,
    layout: { shape, depthwise },
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

/** The kernel's fold with one more BatchNorm's factors (and, under keepScale, its scale) after the others. */
function foldedKernel(inputs: FoldInputs, factors: Float64Array, scaleIn?: string): KernelFold {
  const { kernel, layout } = inputs;
  const before = kernel.kind === 'kernel' ? kernel.fold.factors : [];
  return { layout, factors: [...before, factors], ...(scaleIn === undefined ? {} : { scaleIn }) };
}

/** Plans folding `bn` into `producer`'s kernel and bias; the BN's weights go, a bias the layer lacked is added. */
function foldInto(producer: Json, bn: Json, state: FoldState): void {
  const inputs = foldInputs(producer, bn, state);
  const { producerConfig, bnName, kernelName, kernel, biasName, useBias, bias, beta, mean, channels } = inputs;
  const factor = foldFactors(inputs);
  const foldedBias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) foldedBias[c] = (bias[c] - mean[c]) * factor[c] + (beta ? beta[c] : 0);

  state.current.set(kernelName, {
    kind: 'kernel',
    weight: { name: kernelName, shape: kernel.weight.shape, dtype: 'float32' },
    fold: foldedKernel(inputs, factor),
  });
  state.current.set(biasName, {
    kind: 'computed',
    weight: { name: biasName, shape: [channels], dtype: 'float32', values: foldedBias },
  });
  if (!useBias) {
    producerConfig.use_bias = true;
    state.added.set(kernelName, [biasName]);
  }
  for (const name of BATCH_NORM_WEIGHTS) state.removed.add(`${bnName}/${name}`);
}

/**
 * keepScale: the fold with the BN kept as the per-channel scale (see the module comment). The BN's weights
 * are rewritten in place; γ or β it did not have are added after the kernel (tfjs matches layers weights by
 * name, so their position in the manifest is free), and the producer's bias is dropped into β.
 */
function scaleInto(producer: Json, bn: Json, state: FoldState): FoldPlan['scaled'][number] {
  const inputs = foldInputs(producer, bn, state);
  const { producerName, producerConfig, bnName, bnConfig, kernelName, kernel, channels } = inputs;
  const factors = foldFactors(inputs);
  const beta = scaledBatchNormBeta(inputs.bias, inputs, factors);
  state.current.set(kernelName, {
    kind: 'kernel',
    weight: { ...kernel.weight, channelScaleIn: bnName },
    fold: foldedKernel(inputs, factors, bnName),
  });
  if (inputs.useBias) {
    producerConfig.use_bias = false;
    state.removed.add(inputs.biasName);
  }
  const vector = (name: string, sourceQuantization?: Weight['sourceQuantization']): Outline => ({
    name: `${bnName}/${name}`,
    shape: [channels],
    dtype: 'float32',
    ...(sourceQuantization ? { sourceQuantization } : {}),
  });
  const computed = (outline: Outline, values: Float32Array): FoldedWeight => ({
    kind: 'computed',
    weight: { ...outline, values },
  });
  // σ'² = 1 − ε makes √(σ'² + ε) one; stored, like μ' = 0, as a one-byte code for a constant.
  const unitVariance = Math.fround(1 - inputs.epsilon);
  const rewritten: FoldedWeight[] = [
    { kind: 'gamma', weight: vector('gamma', { dtype: 'float16' }), kernel: kernelName },
    computed(vector('beta'), beta),
    computed(vector('moving_mean', { dtype: 'uint8', min: 0, scale: 1 }), new Float32Array(channels)),
    computed(
      vector('moving_variance', { dtype: 'uint8', min: unitVariance, scale: 1 }),
      new Float32Array(channels).fill(unitVariance),
    ),
  ];
  const missing: string[] = [];
  for (const weight of rewritten) {
    if (!state.current.has(weight.weight.name)) missing.push(weight.weight.name);
    state.current.set(weight.weight.name, weight);
  }
  bnConfig.scale = true;
  bnConfig.center = true;
  if (missing.length > 0) state.added.set(kernelName, missing);
  return { layer: producerName, kernel: kernelName, batchNorm: bnName, channels };
}

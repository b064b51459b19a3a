/**
 * The layer-by-layer diagnosis of a job (docs/report.md, `diagnosis`; the measure is ../quant/diagnosis.ts):
 * the float model, the exported artifact (weights quantized), the float model with its activations
 * fake-quantized as the spec says (ranges calibrated on the float model), and the artifact with them (the
 * job's own `integer` simulation) are run on the first evaluation samples (search.analysisSamples, at most
 * DIAGNOSIS_SAMPLES) and compared layer by layer.
 *
 * The float model is the one the job quantized: BatchNorm folded (and equalized) as the job folds it, so its
 * layers are the artifact's. Layers models: every layer whose output is fake-quantized (activations.ts) or
 * whose kernel is quantized. Graph models: every node whose output is fake-quantized (graph-activations.ts:
 * the end of each fused Conv/MatMul → BiasAdd → activation chain), the chain's quantized constant as its
 * weights. Activations are split out only for `activations.quantizer: "calibrated"` with a calibration set;
 * otherwise the diagnosis measures the weights alone and says so.
 */
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../jobs/spec.js';
import type { Dataset } from '../model/dataset/index.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import type { LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import { calibrateActivations, withFakeQuantActivations, type ActivationRange } from '../quant/activations.js';
import {
  graphLayerInputs,
  graphNodes,
  graphProbe,
  layersProbe,
  measureLayers,
  rangeSpread,
  sqnrDb,
  suggestFix,
  HEALTHY_DB,
  type LayerProbe,
  type Suggestion,
  type Variant,
} from '../quant/diagnosis.js';
import { outputRanges } from '../quant/equalize.js';
import type { Batch } from '../quant/evaluate.js';
import {
  activationNodes,
  calibrateGraphActivations,
  withFakeQuantGraphActivations,
} from '../quant/graph-activations.js';
import type { FileSet } from '../quant/model.js';
import { withBinaryActivations, type BinaryActivationMode } from '../quant/qat/binary-activations.js';
import { cacheBatches, disposeBatches } from '../quant/sensitivity.js';
import type { TensorReport } from './ptq.js';
import { artifactModelFiles, inputsOf, tensorBatches } from './runtime.js';

export interface LayerDiagnosis {
  name: string;
  /** Layer class (layers models) or op (graph models). */
  op: string;
  /** The quantized tensors this layer computes with. */
  weights: string[];
  /** SQNR of the quantized model vs float at this layer's output, per variant (absent: not measured). */
  sqnrDb: { weights: number; activations?: number; both: number };
  /** This layer's own error: the layer alone, fed the float model's inputs to it (../quant/diagnosis.ts). */
  localSqnrDb: { weights: number; activations?: number; both: number };
  /** Which error is the larger here: that of its weights or that of its output's fake-quant. */
  dominant: 'weights' | 'activations';
  /** 1 = worst: by localSqnrDb.both, ascending. */
  rank: number;
  suggestion: Suggestion;
  reason: string;
}

export interface Diagnosis {
  /** Evaluation samples the layers were compared on. */
  samples: number;
  /** What each variant is, and what could not be measured. */
  measured: string;
  /** The activations the `activations` and `both` variants quantize; absent when they are not split out. */
  activations?: { quantizer: string; bits: number; calibration?: string };
  /** suggestFix's healthy level: a layer whose own SQNR is at least this gets suggestion "none". */
  healthyDb: number;
  /** In the model's order. */
  layers: LayerDiagnosis[];
  /** Layer names, worst first, of the layers with a suggestion other than "none". */
  worst: string[];
}

/**
 * Evaluation samples compared at most: the diagnosis runs the model about four times over (float, each
 * variant, each layer alone), and energy sums over this many samples already settle to a tenth of a dB.
 */
const DIAGNOSIS_SAMPLES = 256;

/** Float32 elements one probe run may hold (64 MiB); three are alive at a time. */
const PROBE_ELEMENTS = 2 ** 24;

export interface DiagnoseOptions {
  /** The float model the job quantized (BatchNorm folded as it was). */
  float: LoadedModel;
  /** The job's artifact tree (its `model/` is loaded). */
  files: FileSet;
  spec: JobSpec;
  tensors: TensorReport[];
  evaluation: Dataset;
  calibration?: Dataset;
  /** Ranges the job calibrated on the exported model, when it did: the `both` variant reuses them. */
  exportedRanges?: ActivationRange[];
  /** The DoReFa/PACT grids QAT trained, as FakeQuant grids: both activations variants use them. */
  learnedGrids?: ActivationRange[];
  batchSize: number;
  signal?: AbortSignal;
}

/** Every model loaded here is disposed before it returns. */
export async function diagnoseLayers(options: DiagnoseOptions): Promise<Diagnosis> {
  const { spec, evaluation } = options;
  const owned: RunnableModel[] = [];
  const own = <T extends RunnableModel>(model: T): T => (owned.push(model), model);
  let cached: Batch[] = [];
  try {
    const floatFiles = writeModel(options.float, new Map());
    const artifactFiles = artifactModelFiles(options.files);
    const reference = own(await loadRunnable(floatFiles));
    const quantized = own(await loadRunnable(artifactFiles));
    const feed = inputsOf(reference);
    const batchesOf = (dataset: Dataset, end?: number, batchSize = options.batchSize) =>
      tensorBatches(dataset, batchSize, spec, feed, end === undefined ? {} : { end });

    const activations = spec.activations;
    const split = activationSplit(spec, reference instanceof tf.LayersModel, options);
    const calibration = split === 'calibrated' ? { ...activations!, signal: options.signal } : undefined;
    const quantizedNames = new Set(options.tensors.map((t) => t.name));
    const layerWeights = new Map<string, string[]>();
    let names: string[];
    let ops: Map<string, string>;
    const variants: Partial<Record<Variant, LayerProbe>> = {};
    let probeOf: (model: RunnableModel, files: FileSet) => LayerProbe;

    if (reference instanceof tf.LayersModel) {
      const exported = quantized as tf.LayersModel;
      // The activations variants first: which layers they quantize is part of which layers are diagnosed.
      let simulated: { float: tf.LayersModel; exported: tf.LayersModel; layers: string[] } | undefined;
      if (calibration) {
        const floatRanges = await calibrateActivations(reference, batchesOf(options.calibration!), calibration);
        const ranges =
          options.exportedRanges ??
          (await calibrateActivations(exported, batchesOf(options.calibration!), calibration));
        simulated = {
          float: own(await withFakeQuantActivations(reference, floatRanges)),
          exported: own(await withFakeQuantActivations(exported, ranges)),
          layers: floatRanges.map((r) => r.layer),
        };
      } else if (split === 'learned') {
        const grids = options.learnedGrids!;
        simulated = {
          float: own(await withFakeQuantActivations(reference, grids)),
          exported: own(await withFakeQuantActivations(exported, grids)),
          layers: grids.map((r) => r.layer),
        };
      } else if (split === 'binary') {
        const mode = activations!.quantizer as BinaryActivationMode;
        const float = await withBinaryActivations(reference, mode);
        simulated = {
          float: own(float.model),
          exported: own((await withBinaryActivations(exported, mode)).model),
          layers: float.layers,
        };
      }
      const activated = new Set(simulated?.layers ?? []);
      const layers = reference.layers.filter((layer) => {
        const weights = layer.weights.map((w) => w.originalName).filter((n) => quantizedNames.has(n));
        if (weights.length > 0) layerWeights.set(layer.name, weights);
        return weights.length > 0 || activated.has(layer.name);
      });
      names = layers.map((l) => l.name);
      ops = new Map(layers.map((l) => [l.name, l.getClassName()]));
      probeOf = (model) => layersProbe(model as tf.LayersModel, names);
      if (simulated) {
        variants.activations = probeOf(simulated.float, floatFiles);
        variants.both = probeOf(simulated.exported, artifactFiles);
      }
    } else {
      const nodes = graphNodes(floatFiles);
      const byName = new Map(nodes.map((n) => [n.name, n]));
      names = activationNodes(floatFiles);
      const chainEnds = new Set(names);
      for (const name of names) layerWeights.set(name, chainWeights(name, byName, chainEnds, quantizedNames));
      ops = new Map(names.map((n) => [n, byName.get(n)!.op]));
      probeOf = (model, files) => graphProbe(model as tf.GraphModel, files, names);
      if (calibration) {
        const graph = reference as tf.GraphModel;
        const floatRanges = await calibrateGraphActivations(
          graph,
          floatFiles,
          batchesOf(options.calibration!),
          calibration,
        );
        const floatSimulated = withFakeQuantGraphActivations(floatFiles, floatRanges);
        variants.activations = probeOf(own(await loadRunnable(floatSimulated)), floatSimulated);
        const exported = quantized as tf.GraphModel;
        const ranges =
          options.exportedRanges ??
          (await calibrateGraphActivations(exported, artifactFiles, batchesOf(options.calibration!), calibration));
        const simulated = withFakeQuantGraphActivations(artifactFiles, ranges);
        variants.both = probeOf(own(await loadRunnable(simulated)), simulated);
      }
    }
    variants.weights = probeOf(quantized, artifactFiles);
    const floatProbe = probeOf(reference, floatFiles);
    // Every probed tensor of a batch is held at once (float, variant, each layer alone): batches are cut
    // so that one probe's tensors stay within PROBE_ELEMENTS.
    let perSample = 1;
    for await (const batch of batchesOf(evaluation, 1, 1)) {
      const tensors = floatProbe.run(batch.x);
      perSample = Math.max(
        1,
        tensors.reduce((n, t) => n + t.size, 0),
      );
      tf.dispose(tensors);
    }
    const batchSize = Math.max(1, Math.min(options.batchSize, Math.floor(PROBE_ELEMENTS / perSample)));
    const samples = Math.min(evaluation.samples, spec.search.analysisSamples, DIAGNOSIS_SAMPLES);
    cached = await cacheBatches(batchesOf(evaluation, samples, batchSize), samples);
    const measured = await measureLayers(floatProbe, variants, cached, options.signal);

    const tensorsByName = new Map(options.tensors.map((t) => [t.name, t]));
    const floatWeights = new Map(options.float.weights.map((w) => [w.name, w]));
    const layers = names.map((name, i): Omit<LayerDiagnosis, 'rank'> => {
      const { energy, channelMax } = measured[i];
      const cumulative = (v: Variant) => sqnrDb(energy[v]!.signal, energy[v]!.noise);
      const local = (v: Variant) => sqnrDb(energy[v]!.signal, energy[v]!.localNoise);
      const both: Variant = energy.both ? 'both' : 'weights';
      const weights = layerWeights.get(name) ?? [];
      const reports = weights.map((w) => tensorsByName.get(w)!);
      const kernel = reports.find((t) => t.shape.length >= 2) ?? reports[0];
      const weightsDb = local('weights');
      const activationsDb = energy.activations ? local('activations') : undefined;
      const fix = suggestFix({
        weightsDb: kernel ? weightsDb : undefined,
        activationsDb,
        weights: kernel && {
          bits: kernel.bits,
          perChannel: kernel.channels > 1,
          spread: rangeSpread(
            outputRanges(floatWeights.get(kernel.name)!.values as Float32Array, {
              shape: kernel.shape,
              depthwise: kernel.role === 'depthwise_kernel',
            }),
          ),
        },
        activations: activations && { bits: activations.bits, spread: rangeSpread(channelMax) },
      });
      return {
        name,
        op: ops.get(name)!,
        weights,
        sqnrDb: {
          weights: cumulative('weights'),
          ...(energy.activations ? { activations: cumulative('activations') } : {}),
          both: cumulative(both),
        },
        localSqnrDb: {
          weights: weightsDb,
          ...(activationsDb !== undefined ? { activations: activationsDb } : {}),
          both: local(both),
        },
        dominant: activationsDb !== undefined && activationsDb < weightsDb ? 'activations' : 'weights',
        ...fix,
      };
    });
    const order = layers.map((_, i) => i).sort((a, b) => layers[a].localSqnrDb.both - layers[b].localSqnrDb.both);
    const ranked = layers.map((layer, i) => ({ ...layer, rank: order.indexOf(i) + 1 }));
    return {
      samples: cached.reduce((n, b) => n + (Array.isArray(b.x) ? b.x[0] : b.x).shape[0], 0),
      measured: describe(reference instanceof tf.LayersModel, split, spec),
      ...(split
        ? {
            activations: {
              quantizer: activations!.quantizer,
              bits: activations!.bits,
              ...(split === 'calibrated' ? { calibration: activations!.calibration } : {}),
            },
          }
        : {}),
      healthyDb: HEALTHY_DB,
      layers: ranked,
      worst: order.filter((i) => ranked[i].suggestion !== 'none').map((i) => ranked[i].name),
    };
  } finally {
    disposeBatches(cached);
    for (const model of owned) model.dispose();
  }
}

/**
 * diagnoseLayers for a job's report: a model whose layers cannot be probed (a graph with control flow, say)
 * gets a warning instead, and keeps its artifacts; a cancel still cancels.
 */
export async function diagnoseJob(options: DiagnoseOptions): Promise<{ diagnosis?: Diagnosis; warnings: string[] }> {
  try {
    return { diagnosis: await diagnoseLayers(options), warnings: [] };
  } catch (error) {
    if (!(error instanceof Error) || error.name === 'AbortError') throw error;
    return { warnings: [`the layer-by-layer diagnosis could not run: ${error.message}`] };
  }
}

/** The quantized constants of the chain ending at node `end`: read by it or the nodes graphLayerInputs walks. */
function chainWeights(
  end: string,
  nodes: Map<string, { name: string; op: string; input?: string[] }>,
  chainEnds: Set<string>,
  quantized: Set<string>,
): string[] {
  const stops = new Set(graphLayerInputs(end, nodes, chainEnds));
  const found: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    for (const input of nodes.get(name)?.input ?? []) {
      const producer = input.startsWith('^') ? null : input.split(':')[0];
      if (producer === null || seen.has(producer) || stops.has(producer)) continue;
      seen.add(producer);
      if (quantized.has(producer)) found.push(producer);
      else visit(producer);
    }
  };
  visit(end);
  return found;
}

/**
 * How the activations variants are made: ranges calibrated on data.calibration, the grids QAT trained
 * (DoReFa/PACT), binarizers in place of the ReLUs (sign/ternary, layers models); null: not split out.
 */
function activationSplit(
  spec: JobSpec,
  layersModel: boolean,
  options: DiagnoseOptions,
): 'calibrated' | 'learned' | 'binary' | null {
  const quantizer = spec.activations?.quantizer;
  if (quantizer === 'calibrated') return options.calibration ? 'calibrated' : null;
  if (!layersModel) return null;
  if (quantizer === 'sign' || quantizer === 'ternary') return 'binary';
  if ((quantizer === 'dorefa' || quantizer === 'pact') && options.learnedGrids) return 'learned';
  return null;
}

function describe(layersModel: boolean, split: ReturnType<typeof activationSplit>, spec: JobSpec): string {
  const where = layersModel
    ? 'each layer whose kernel is quantized or whose output is quantized'
    : 'the output of each fused chain (Conv/MatMul → BiasAdd → activation) the integer simulation quantizes';
  const weights = 'weights: the exported model/ (activations float)';
  const bits = spec.activations?.bits;
  const activations = {
    calibrated: `the float model with ${bits}-bit fake-quantized outputs (ranges from the calibration set)`,
    learned: `the float model with the ${bits}-bit ${spec.activations?.quantizer} grids QAT trained`,
    binary: `the float model with ${spec.activations?.quantizer} activations in place of its ReLUs`,
  };
  if (split) return `${where}; ${weights}; activations: ${activations[split]}; both: the exported model with them`;
  const why = !spec.activations
    ? 'the spec quantizes no activations'
    : spec.activations.quantizer === 'calibrated'
      ? 'there is no calibration set to take activation ranges from'
      : `${spec.activations.quantizer} activations are simulated on layers models only`;
  return `${where}; ${weights}; activations not measured (${why}): both = weights`;
}

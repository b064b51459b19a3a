/**
 * A whole job (DESIGN.md §3–§5): optional BatchNorm folding, the float model's metrics, quantization-aware
 * training (kind `qat`), PTQ export, the exported model's metrics measured on the artifact itself (loaded
 * with the stock tfjs loaders), and simulated integer activations. runPtq does the quantizing and writing;
 * this adds what needs data. Every tfjs model and tensor it creates is disposed before it returns.
 */
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../jobs/spec.js';
import type { Dataset } from '../model/dataset/index.js';
import { foldBatchNorm, type FoldResult } from '../model/fold-batchnorm.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import { TrainableGraph } from '../model/trainable-graph.js';
import type { FileSet, LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import { calibrateActivations, withFakeQuantActivations, type ActivationRange } from '../quant/activations.js';
import { evaluate, type Batch, type Metrics } from '../quant/evaluate.js';
import { calibrateGraphActivations, withFakeQuantGraphActivations } from '../quant/graph-activations.js';
import {
  learnedActivationRanges,
  withTrainedActivationQuantizers,
  type LearnedActivationRange,
  type TrainedActivations,
} from '../quant/qat/activation-layers.js';
import {
  describeBinaryActivations,
  withBinaryActivations,
  type BinaryActivationMode,
} from '../quant/qat/binary-activations.js';
import { qatPlan } from '../quant/qat/plan.js';
import type { QuantizedTensor } from '../quant/types.js';
import {
  trainQuantizationAware,
  type EpochMetrics,
  type QatCheckpoint,
  type TrainableModel,
} from '../quant/qat/train.js';
import { runAutoJob } from './auto.js';
import { roundLayers, type RoundingCheckpoint, type RoundingReport } from './rounding.js';
import { planTensors, runPtq, type PipelineOptions, type PipelineProgress, type PtqReport } from './ptq.js';
import { stageClock, stageReporter } from './stages.js';

export interface JobDatasets {
  calibration?: Dataset;
  evaluation?: Dataset;
  training?: Dataset;
}

/** What a retried job resumes from: QAT's last epoch, or the layers a learned rounding finished. */
export type JobCheckpoint = QatCheckpoint | RoundingCheckpoint;

export function isRoundingCheckpoint(checkpoint: JobCheckpoint | undefined): checkpoint is RoundingCheckpoint {
  return (checkpoint as RoundingCheckpoint | undefined)?.kind === 'rounding';
}

export interface JobOptions extends Omit<PipelineOptions, 'onProgress'> {
  onProgress?: (progress: JobProgress) => void | Promise<void>;
  /** QAT resumes after this checkpoint's epoch, a learned rounding after its finished layers (a retried job). */
  resumeFrom?: JobCheckpoint;
  /** Called after every QAT epoch, or every layer of a learned rounding, with the state to resume from. */
  onCheckpoint?: (checkpoint: JobCheckpoint) => void | Promise<void>;
  /** Evaluation and calibration batch size; default 64. */
  batchSize?: number;
}

export interface JobProgress {
  stage: 'fold' | 'evaluate' | 'train' | 'round' | PipelineProgress['stage'] | 'calibrate' | 'analyze' | 'search';
  progress: number;
  message: string;
  /** QAT batch and epoch numbers, for live charts. */
  training?: { epoch: number; batch?: number; loss: number; metric: number; valMetric?: number };
}

/**
 * Metrics by stage: `float` (the source model), `ptq` or `qat` (the exported model/ artifact), and
 * `integer` (the exported weights with activations fake-quantized to `activations.bits`).
 */
export type StageMetrics = Partial<Record<'float' | 'ptq' | 'qat', Metrics>> & {
  /** `simulated` says what: which activations were quantized how, on which weights. */
  integer?: Metrics & { simulated: string };
};

/** Binary / ternary activations put in place of the ReLUs of these layers (../quant/qat/binary-activations.ts). */
export interface BinaryActivationReport {
  layer: string;
  quantizer: BinaryActivationMode;
  bits: number;
}

export interface JobReport extends Omit<PtqReport, 'kind'> {
  kind: JobSpec['kind'];
  model: PtqReport['model'] & { metrics: StageMetrics };
  batchNorm?: { folded: string[]; skipped: FoldResult['skipped'] };
  /** Calibrated ranges, or the DoReFa/PACT quantizers QAT trained (learned α per layer). */
  activations?: (ActivationRange | LearnedActivationRange | BinaryActivationReport)[];
  training?: { history: EpochMetrics[]; stoppedEarly: boolean };
  /** ptq.algorithm gptq / adaround: per layer, time and output error with nearest rounding and after. */
  rounding?: RoundingReport;
  timings: PtqReport['timings'] & Record<string, number>;
}

export interface TrainedQat {
  model: LoadedModel;
  training: JobReport['training'];
  precomputed: Map<string, QuantizedTensor>;
  activations?: LearnedActivationRange[];
}

export interface JobResult {
  files: FileSet;
  report: JobReport;
}

/** Stage boundaries on the 0–100 progress scale. */
const span = {
  fold: [0, 2],
  float: [2, 8],
  train: [8, 60],
  ptq: [60, 85],
  evaluate: [85, 93],
  calibrate: [93, 100],
  report: [100, 100],
} as const;

export async function runJob(
  source: LoadedModel,
  spec: JobSpec,
  data: JobDatasets,
  options: JobOptions,
): Promise<JobResult> {
  if (spec.kind === 'analyze' || spec.kind === 'auto') return runAutoJob(source, spec, data, options);
  const started = performance.now();
  const { timings, timed } = stageClock();
  const report = stageReporter(options.onProgress);
  const batchSize = options.batchSize ?? 64;
  const metrics: StageMetrics = {};
  const owned: RunnableModel[] = [];

  try {
    let model = source;
    let batchNorm: JobReport['batchNorm'];
    if (spec.foldBatchNorm ?? spec.kind === 'ptq') {
      await report('fold', span.fold, 0, 'folding BatchNormalization into the preceding layers');
      const folded = foldBatchNorm(model);
      model = folded.model;
      batchNorm = { folded: folded.folded, skipped: folded.skipped };
    }

    const learnedRounding = spec.kind === 'ptq' && spec.ptq.algorithm !== 'nearest';
    const needsFloat = data.evaluation !== undefined || spec.kind === 'qat' || learnedRounding;
    const floatModel = needsFloat ? await loadTfModel(source, owned) : undefined;
    const inputDtype = floatModel ? inputDtypeOf(floatModel) : 'float32';
    const batchesOf = (dataset: Dataset, range: { start?: number; end?: number } = {}) =>
      tensorBatches(dataset, batchSize, spec, inputDtype, range);

    if (data.evaluation && floatModel) {
      await report('evaluate', span.float, 0, 'evaluating the float model');
      metrics.float = await timed('evaluateFloatMs', () =>
        evaluate(floatModel, batchesOf(data.evaluation!), { signal: options.signal }),
      );
    }

    let training: JobReport['training'];
    let precomputed: Map<string, QuantizedTensor> | undefined;
    let learnedActivations: LearnedActivationRange[] | undefined;
    if (spec.kind === 'qat') {
      const trained = await timed('trainMs', () =>
        trainQat(model, spec, data, options, metrics.float, owned, (fraction, message, extra) =>
          report('train', span.train, fraction, message, extra),
        ),
      );
      model = trained.model;
      training = trained.training;
      precomputed = trained.precomputed;
      learnedActivations = trained.activations;
    }

    let rounding: RoundingReport | undefined;
    if (learnedRounding) {
      if (!data.calibration) throw new Error(`ptq.algorithm "${spec.ptq.algorithm}" needs a calibration dataset`);
      const rounded = await timed('roundMs', () =>
        roundLayers(model, spec, {
          signal: options.signal,
          batches: () => batchesOf(data.calibration!, { end: spec.ptq.samples }),
          resumeFrom: isRoundingCheckpoint(options.resumeFrom) ? options.resumeFrom : undefined,
          onCheckpoint: options.onCheckpoint,
          onLayer: (done, total, name) =>
            report(
              'round',
              span.train,
              total === 0 ? 1 : done / total,
              name ? `${spec.ptq.algorithm}: ${name}` : 'rounded',
            ),
        }),
      );
      precomputed = rounded.precomputed;
      rounding = rounded.report;
    }

    const ptq = await timed('ptqMs', () =>
      runPtq(model, spec, {
        backend: options.backend,
        signal: options.signal,
        precomputed,
        onProgress: (p) => report(p.stage, span.ptq, p.progress / 100, p.message),
      }),
    );
    const files = ptq.files;

    const exportedStage = spec.kind === 'qat' ? 'qat' : 'ptq';
    let exported: RunnableModel | undefined;
    if (data.evaluation && floatModel) {
      await report('evaluate', span.evaluate, 0, `evaluating the exported model (${exportedStage})`);
      exported = await loadArtifact(files, owned);
      metrics[exportedStage] = await timed('evaluateExportedMs', () =>
        evaluate(exported!, batchesOf(data.evaluation!), { reference: floatModel, signal: options.signal }),
      );
    }

    let activations: JobReport['activations'];
    if (learnedActivations) {
      activations = learnedActivations;
      if (data.evaluation && floatModel) {
        exported ??= await loadArtifact(files, owned);
        if (!(exported instanceof tf.LayersModel))
          throw new Error('trained activations need a layers model; this is a graph model');
        // FakeQuant reads only layer, bits, scale and zeroPoint: the learned grid [0, α] is one of its affine grids.
        const grids = learnedActivations.map(({ layer, bits, min, max, scale, zeroPoint }) => ({
          layer,
          bits,
          calibration: 'minmax' as const,
          min,
          max,
          scale,
          zeroPoint,
        }));
        const simulated = await withFakeQuantActivations(exported, grids);
        owned.push(simulated);
        const { quantizer, bits } = learnedActivations[0] ?? { quantizer: 'dorefa', bits: 0 };
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(simulated, batchesOf(data.evaluation!), { reference: floatModel, signal: options.signal }),
          )),
          simulated: `${exportedStage} weights, ${bits}-bit ${quantizer} activations after ${learnedActivations.length} ReLU outputs (trained grids)`,
        };
      }
    } else if (spec.activations && isBinaryMode(spec.activations.quantizer)) {
      const mode = spec.activations.quantizer;
      exported ??= await loadArtifact(files, owned);
      if (!(exported instanceof tf.LayersModel))
        throw new Error(`${mode} activations replace the ReLUs of a layers model; this is a graph model`);
      const binarized = await withBinaryActivations(exported, mode);
      owned.push(binarized.model);
      activations = binarized.layers.map((layer) => ({ layer, quantizer: mode, bits: spec.activations!.bits }));
      if (data.evaluation && floatModel) {
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(binarized.model, batchesOf(data.evaluation!), { reference: floatModel, signal: options.signal }),
          )),
          simulated: `${exportedStage} weights, ${describeBinaryActivations(mode, binarized.layers.length)}`,
        };
      }
    } else if (spec.activations && data.calibration) {
      await report(
        'calibrate',
        span.calibrate,
        0,
        `calibrating ${spec.activations.bits}-bit activations (${spec.activations.calibration})`,
      );
      exported ??= await loadArtifact(files, owned);
      const calibration = { ...spec.activations, signal: options.signal };
      let calibrated: ActivationRange[];
      let simulate: () => Promise<RunnableModel>;
      if (exported instanceof tf.LayersModel) {
        const layersModel = exported;
        calibrated = await timed('calibrateMs', () =>
          calibrateActivations(layersModel, batchesOf(data.calibration!), calibration),
        );
        simulate = () => withFakeQuantActivations(layersModel, calibrated);
      } else {
        const graphModel = exported;
        const modelFiles = artifactModelFiles(files);
        calibrated = await timed('calibrateMs', () =>
          calibrateGraphActivations(graphModel, modelFiles, batchesOf(data.calibration!), calibration),
        );
        simulate = () => loadRunnable(withFakeQuantGraphActivations(modelFiles, calibrated));
      }
      activations = calibrated;
      if (data.evaluation && floatModel) {
        const simulated = await simulate();
        owned.push(simulated);
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(simulated, batchesOf(data.evaluation!), { reference: floatModel, signal: options.signal }),
          )),
          simulated:
            `${exportedStage} weights, ${spec.activations.bits}-bit affine activations fake-quantized after ` +
            `${calibrated.length} layers (${spec.activations.calibration} ranges from the calibration set)`,
        };
      }
    }

    const jobReport: JobReport = {
      ...ptq.report,
      kind: spec.kind,
      model: { ...ptq.report.model, metrics },
      ...(batchNorm ? { batchNorm } : {}),
      ...(activations ? { activations } : {}),
      ...(training ? { training } : {}),
      ...(rounding ? { rounding } : {}),
      timings: { ...ptq.report.timings, ...timings, totalMs: Math.round((performance.now() - started) * 10) / 10 },
    };
    files.set('report.json', new TextEncoder().encode(`${JSON.stringify(jobReport, null, 2)}\n`));
    // The job's last step here is the report, whatever stages ran: only the worker, once the artifacts are
    // stored, says the job is done.
    await report('report', span.report, 1, 'report written');
    return { files, report: jobReport };
  } finally {
    for (const runnable of owned) runnable.dispose();
  }
}

/**
 * QAT of `model` with `spec.qat` on `data.training`, every weight that planTensors selects trained at its
 * planned config (`layers.overrides` included). Returns the model with the trained float weights and the
 * quantized tensors for runPtq's `precomputed`. Used by kind `qat` and by auto's QAT fallback.
 */
export async function trainQat(
  model: LoadedModel,
  spec: JobSpec,
  data: JobDatasets,
  options: JobOptions,
  floatMetrics: Metrics | undefined,
  owned: RunnableModel[],
  progress: (fraction: number, message: string, extra?: Partial<JobProgress>) => Promise<void> | void,
): Promise<TrainedQat> {
  const dataset = data.training!;
  if (!dataset.y) throw new Error('kind "qat" needs labels (y) in the training dataset');
  const loaded = await loadTfModel(model, owned);
  let quantizers: TrainedActivations | undefined;
  let binarized: tf.LayersModel | undefined;
  if (spec.activations && isBinaryMode(spec.activations.quantizer)) {
    if (!(loaded instanceof tf.LayersModel))
      throw new Error(`${spec.activations.quantizer} activations are trained in a layers model; this is a graph model`);
    binarized = (await withBinaryActivations(loaded, spec.activations.quantizer)).model;
    owned.push(binarized);
  } else if (spec.activations?.quantizer === 'dorefa' || spec.activations?.quantizer === 'pact') {
    const { quantizer, bits, gradientBits, alpha, alphaDecay } = spec.activations;
    if (!(loaded instanceof tf.LayersModel))
      throw new Error(`${quantizer} activations are trained in a layers model; this is a graph model`);
    quantizers = await withTrainedActivationQuantizers(loaded, {
      quantizer,
      bits,
      gradientBits,
      alpha,
      alphaDecay,
      seed: 'seed' in spec.method ? spec.method.seed : 0,
    });
    owned.push(quantizers.model);
  }
  // A graph model trains through variables put in place of its weights, given back by dispose.
  const graph = loaded instanceof tf.GraphModel ? new TrainableGraph(loaded, model.modelJson) : undefined;
  const trainable: TrainableModel = quantizers?.model ?? binarized ?? graph ?? (loaded as tf.LayersModel);
  try {
    const { epochs, batchSize, learningRate, optimizer, momentum, learningRateDecay, validationSplit, ste } = spec.qat;
    const trainEnd = Math.floor(dataset.samples * (1 - validationSplit));
    const inputDtype = inputDtypeOf(loaded);
    const batches = (range: { start?: number; end?: number }) => ({
      [Symbol.asyncIterator]: () => tensorBatches(dataset, batchSize, spec, inputDtype, range)[Symbol.asyncIterator](),
    });
    const plan = qatPlan(
      planTensors(model, spec).selected.map((t) => ({
        name: t.name,
        role: t.role,
        params: t.params,
        training: t.training,
        shape: model.weights.find((w) => w.name === t.name)!.shape,
      })),
    );
    const batchesPerEpoch = Math.ceil(trainEnd / batchSize);
    const maxDrop = spec.target?.maxDrop;
    const floatAccuracy = floatMetrics?.accuracy;
    const result = await trainQuantizationAware(
      trainable,
      batches({ end: trainEnd }) as AsyncIterable<Required<Batch>>,
      {
        plan,
        epochs,
        learningRate,
        optimizer,
        momentum,
        learningRateDecay,
        ste,
        seed: 'seed' in spec.method ? spec.method.seed : 0,
        regularizer: quantizers?.regularizer,
        validationData:
          validationSplit > 0 ? (batches({ start: trainEnd }) as AsyncIterable<Required<Batch>>) : undefined,
        signal: options.signal,
        resumeFrom: isRoundingCheckpoint(options.resumeFrom) ? undefined : options.resumeFrom,
        onCheckpoint: options.onCheckpoint,
        onBatch: (m) =>
          progress(
            ((m.epoch - 1) * batchesPerEpoch + m.batch) / (epochs * batchesPerEpoch),
            `epoch ${m.epoch}/${epochs} batch ${m.batch}`,
            {
              training: { epoch: m.epoch, batch: m.batch, loss: m.loss, metric: m.metric },
            },
          ),
        onEpoch: (m) =>
          progress(m.epoch / epochs, `epoch ${m.epoch}/${epochs}: loss ${m.loss.toFixed(4)}`, {
            training: { epoch: m.epoch, loss: m.loss, metric: m.metric, valMetric: m.valMetric },
          }),
        // Early stop once the held-out accuracy at Q(w) is within the allowed drop of the float model's.
        earlyStop:
          maxDrop !== undefined && floatAccuracy !== undefined
            ? (m) => m.valMetric !== undefined && m.metricName === 'accuracy' && floatAccuracy - m.valMetric <= maxDrop
            : undefined,
      },
    );
    const trainedValues = new Map(trainable.weights.map((w) => [w.originalName, w.read().dataSync() as Float32Array]));
    const weights = model.weights.map((w) =>
      trainedValues.has(w.name) && w.dtype === 'float32'
        ? { ...w, values: Float32Array.from(trainedValues.get(w.name)!) }
        : w,
    );
    return {
      model: { ...model, weights },
      training: { history: result.history, stoppedEarly: result.stoppedEarly },
      precomputed: result.quantized,
      activations: quantizers ? learnedActivationRanges(quantizers) : undefined,
    };
  } finally {
    graph?.dispose();
  }
}

export async function loadTfModel(model: LoadedModel, owned: RunnableModel[]): Promise<RunnableModel> {
  const runnable = await loadRunnable(writeModel(model, new Map()));
  owned.push(runnable);
  return runnable;
}

/** The stock TF.js model of an artifact tree: its files under model/. */
function artifactModelFiles(files: FileSet): FileSet {
  const modelFiles: FileSet = new Map();
  for (const [path, bytes] of files) if (path.startsWith('model/')) modelFiles.set(path.slice('model/'.length), bytes);
  return modelFiles;
}

export async function loadArtifact(files: FileSet, owned: RunnableModel[]): Promise<RunnableModel> {
  const runnable = await loadRunnable(artifactModelFiles(files));
  owned.push(runnable);
  return runnable;
}

export function inputDtypeOf(model: RunnableModel): 'float32' | 'int32' {
  const dtype = model.inputs[0]?.dtype;
  return dtype === 'int32' ? 'int32' : 'float32';
}

/**
 * Dataset rows as tensors, one batch at a time: each batch is disposed when the next is asked for (or the
 * loop ends), so a consumer that keeps no references holds one batch in memory.
 */
export async function* tensorBatches(
  dataset: Dataset,
  batchSize: number,
  spec: JobSpec,
  xDtype: 'float32' | 'int32',
  range: { start?: number; end?: number },
): AsyncGenerator<Batch> {
  for await (const batch of dataset.batches(batchSize, { preprocess: spec.preprocess, xDtype, ...range })) {
    const x = tf.tensor(batch.x, [batch.count, ...dataset.x.sampleShape], xDtype);
    const labels = dataset.y;
    const y =
      batch.y && labels
        ? labels.labels === 'index'
          ? tf.tensor1d(batch.y, 'int32')
          : tf.tensor(batch.y, [batch.count, ...labels.sampleShape], 'float32')
        : undefined;
    try {
      yield y ? { x, y } : { x };
    } finally {
      x.dispose();
      y?.dispose();
    }
  }
}

function isBinaryMode(quantizer: string): quantizer is BinaryActivationMode {
  return quantizer === 'sign' || quantizer === 'ternary';
}

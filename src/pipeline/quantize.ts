/**
 * Jobs of kind `ptq` and `qat` (docs/job-spec.md, docs/report.md): optional BatchNorm folding, the float model's metrics, quantization-aware
 * training (kind `qat`), PTQ export, the exported model's metrics measured on the artifact itself (loaded
 * with the stock tfjs loaders), and simulated integer activations. runPtq does the quantizing and writing;
 * this adds what needs data. Every tfjs model and tensor it creates is disposed before it returns.
 */
import * as tf from '@tensorflow/tfjs';
import { equalizes, SpecError, type JobSpec } from '../jobs/spec.js';
import { DatasetError, type Dataset } from '../model/dataset/index.js';
import { ModelError } from '../model/errors.js';
import { foldBatchNorm } from '../model/fold-batchnorm.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import { TrainableGraph } from '../model/trainable-graph.js';
import type { LoadedModel } from '../model/types.js';
import { calibrateActivations, withFakeQuantActivations, type ActivationRange } from '../quant/activations.js';
import { evaluate } from '../quant/evaluate.js';
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
import type { Metrics, QuantizedTensor } from '../quant/types.js';
import { trainQuantizationAware, type Batch as TrainingBatch, type TrainableModel } from '../quant/qat/train.js';
import { diagnoseJob } from './diagnose.js';
import { planTensors, runPtq } from './ptq.js';
import { roundLayers, type RoundingReport } from './rounding.js';
import {
  artifactModelFiles,
  heldOutTensorBatches,
  inputsOf,
  loadArtifact,
  loadTfModel,
  shuffledTensorBatches,
  tensorBatches,
  validationRows,
} from './runtime.js';
import { stageClock, stageReporter } from './stages.js';
import {
  isRoundingCheckpoint,
  type JobDatasets,
  type JobOptions,
  type JobProgress,
  type JobReport,
  type JobResult,
  type StageMetrics,
} from './types.js';

export interface TrainedQat {
  model: LoadedModel;
  training: JobReport['training'];
  precomputed: Map<string, QuantizedTensor>;
  activations?: LearnedActivationRange[];
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

export async function runQuantizeJob(
  source: LoadedModel,
  spec: JobSpec,
  data: JobDatasets,
  options: JobOptions,
): Promise<JobResult> {
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
      const folded = foldBatchNorm(model, { keepScale: equalizes(spec) });
      model = folded.model;
      batchNorm = { folded: folded.folded, skipped: folded.skipped, scaled: folded.scaled };
    }
    // The float function the exported weights stand for, layer for layer: the diagnosis compares with it.
    const quantizedFrom = model;

    const learnedRounding = spec.kind === 'ptq' && spec.ptq.algorithm !== 'nearest';
    const needsFloat = data.evaluation !== undefined || spec.kind === 'qat' || learnedRounding;
    const floatModel = needsFloat ? await loadTfModel(source, owned) : undefined;
    // Every model of a job (float, exported, simulated) takes the same inputs in the same order.
    const batchesOf = (feeds: RunnableModel, dataset: Dataset, range: { end?: number } = {}) =>
      tensorBatches(dataset, batchSize, spec, inputsOf(feeds), range);

    if (data.evaluation && floatModel) {
      await report('evaluate', span.float, 0, 'evaluating the float model');
      metrics.float = await timed('evaluateFloatMs', () =>
        evaluate(floatModel, batchesOf(floatModel, data.evaluation!), { signal: options.signal }),
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
      if (!data.calibration) {
        throw new SpecError([
          { path: '/data/calibration', message: `ptq.algorithm "${spec.ptq.algorithm}" needs a calibration dataset` },
        ]);
      }
      const rounded = await timed('roundMs', () =>
        roundLayers(model, spec, {
          signal: options.signal,
          batches: () => batchesOf(floatModel!, data.calibration!, { end: spec.ptq.samples }),
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
        source,
        equalized: batchNorm?.scaled,
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
        evaluate(exported!, batchesOf(floatModel, data.evaluation!), { reference: floatModel, signal: options.signal }),
      );
    }

    let activations: JobReport['activations'];
    let exportedRanges: ActivationRange[] | undefined;
    let learnedGrids: ActivationRange[] | undefined;
    if (learnedActivations) {
      activations = learnedActivations;
      if (data.evaluation && floatModel) {
        exported ??= await loadArtifact(files, owned);
        if (!(exported instanceof tf.LayersModel))
          throw new SpecError([
            {
              path: '/activations/quantizer',
              message: 'trained activations need a layers model; this is a graph model',
            },
          ]);
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
        learnedGrids = grids;
        const simulated = await withFakeQuantActivations(exported, grids);
        owned.push(simulated);
        const { quantizer, bits } = learnedActivations[0] ?? { quantizer: 'dorefa', bits: 0 };
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(simulated, batchesOf(floatModel, data.evaluation!), {
              reference: floatModel,
              signal: options.signal,
            }),
          )),
          simulated: `${exportedStage} weights, ${bits}-bit ${quantizer} activations after ${learnedActivations.length} ReLU outputs (trained grids)`,
        };
      }
    } else if (spec.activations && isBinaryMode(spec.activations.quantizer)) {
      const mode = spec.activations.quantizer;
      exported ??= await loadArtifact(files, owned);
      if (!(exported instanceof tf.LayersModel))
        throw new SpecError([
          { path: '/activations/quantizer', message: `${mode} activations need a layers model; this is a graph model` },
        ]);
      const binarized = await withBinaryActivations(exported, mode);
      owned.push(binarized.model);
      activations = binarized.layers.map((layer) => ({ layer, quantizer: mode, bits: spec.activations!.bits }));
      if (data.evaluation && floatModel) {
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(binarized.model, batchesOf(floatModel, data.evaluation!), {
              reference: floatModel,
              signal: options.signal,
            }),
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
          calibrateActivations(layersModel, batchesOf(layersModel, data.calibration!), calibration),
        );
        simulate = () => withFakeQuantActivations(layersModel, calibrated);
      } else {
        const graphModel = exported;
        const modelFiles = artifactModelFiles(files);
        calibrated = await timed('calibrateMs', () =>
          calibrateGraphActivations(
            graphModel,
            modelFiles,
            batchesOf(graphModel, data.calibration!),
            calibration,
          ).catch((error: unknown) => {
            // The float model ran; asking its graph for intermediate outputs is what failed (tfjs refuses
            // that on graphs with control flow, for one): a property of the model, not worth a retry.
            if (error instanceof Error && error.name !== 'AbortError') {
              throw new ModelError('bad-topology', `activations cannot be observed in this graph: ${error.message}`);
            }
            throw error;
          }),
        );
        simulate = () => loadRunnable(withFakeQuantGraphActivations(modelFiles, calibrated));
      }
      activations = calibrated;
      exportedRanges = calibrated;
      if (data.evaluation && floatModel) {
        const simulated = await simulate();
        owned.push(simulated);
        metrics.integer = {
          ...(await timed('evaluateIntegerMs', () =>
            evaluate(simulated, batchesOf(floatModel, data.evaluation!), {
              reference: floatModel,
              signal: options.signal,
            }),
          )),
          simulated:
            `${exportedStage} weights, ${spec.activations.bits}-bit affine activations fake-quantized after ` +
            `${calibrated.length} layers (${spec.activations.calibration} ranges from the calibration set)`,
        };
      }
    }

    let diagnosis: JobReport['diagnosis'];
    const warnings: string[] = [];
    if (data.evaluation) {
      await report('diagnose', span.calibrate, 1, 'diagnosing the error layer by layer');
      const diagnosed = await timed('diagnoseMs', () =>
        diagnoseJob({
          float: quantizedFrom,
          files,
          spec,
          tensors: ptq.report.tensors,
          evaluation: data.evaluation!,
          calibration: data.calibration,
          exportedRanges,
          learnedGrids,
          batchSize,
          signal: options.signal,
        }),
      );
      diagnosis = diagnosed.diagnosis;
      warnings.push(...diagnosed.warnings);
    }

    const jobReport: JobReport = {
      ...ptq.report,
      kind: spec.kind,
      model: { ...ptq.report.model, metrics },
      ...(batchNorm ? { batchNorm } : {}),
      ...(activations ? { activations } : {}),
      ...(training ? { training } : {}),
      ...(rounding ? { rounding } : {}),
      ...(diagnosis ? { diagnosis } : {}),
      warnings: [
        ...(batchNorm?.skipped ?? []).map((s) => `BatchNorm ${s.layer} was not folded: ${s.reason}`),
        ...ptq.report.warnings,
        ...warnings,
      ],
      timings: { ...ptq.report.timings, ...timings, totalMs: Math.round((performance.now() - started) * 10) / 10 },
    };
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
  if (!dataset.y) throw new DatasetError('kind "qat" needs labels (y) in the training dataset');
  const loaded = await loadTfModel(model, owned);
  let quantizers: TrainedActivations | undefined;
  let binarized: tf.LayersModel | undefined;
  if (spec.activations && isBinaryMode(spec.activations.quantizer)) {
    if (!(loaded instanceof tf.LayersModel))
      throw new SpecError([
        {
          path: '/activations/quantizer',
          message: `${spec.activations.quantizer} activations are trained in a layers model; this is a graph model`,
        },
      ]);
    binarized = (await withBinaryActivations(loaded, spec.activations.quantizer)).model;
    owned.push(binarized);
  } else if (spec.activations?.quantizer === 'dorefa' || spec.activations?.quantizer === 'pact') {
    const { quantizer, bits, gradientBits, alpha, alphaDecay } = spec.activations;
    if (!(loaded instanceof tf.LayersModel))
      throw new SpecError([
        {
          path: '/activations/quantizer',
          message: `${quantizer} activations are trained in a layers model; this is a graph model`,
        },
      ]);
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
    const feed = inputsOf(loaded);
    if (feed.length !== 1) {
      throw new DatasetError(
        `quantization-aware training takes single-input models; this one has ${feed.length} inputs (PTQ calibrates and evaluates them)`,
      );
    }
    const plan = qatPlan(
      planTensors(model, spec).selected.map((t) => ({
        name: t.name,
        role: t.role,
        params: t.params,
        training: t.training,
        shape: model.weights.find((w) => w.name === t.name)!.shape,
      })),
    );
    const maxDrop = spec.target?.maxDrop;
    const floatAccuracy = floatMetrics?.accuracy;
    const seed = 'seed' in spec.method ? spec.method.seed : 0;
    // The validation rows are a seeded uniform sample of the whole file, not its tail: a dataset saved
    // sorted by class would otherwise validate on its last class alone and never train on it.
    const heldOut = validationSplit > 0 ? validationRows(dataset.samples, validationSplit, seed) : undefined;
    const trainCount = dataset.samples - (heldOut?.reduce((sum, v) => sum + v, 0) ?? 0);
    const batchesPerEpoch = Math.ceil(trainCount / batchSize);
    // One input: each batch's x is a single tensor, as training takes it. Each epoch its own seeded order
    // of the training rows: a dataset sorted by class, fed in file order, would have SGD forget the early
    // classes while it fits the last ones. The validation rows are read in file order, the same every epoch.
    const training = (epoch: number) =>
      ({
        [Symbol.asyncIterator]: () =>
          shuffledTensorBatches(dataset, batchSize, spec, feed, heldOut, seed, epoch)[Symbol.asyncIterator](),
      }) as AsyncIterable<TrainingBatch>;
    const validation =
      heldOut &&
      ({
        [Symbol.asyncIterator]: () =>
          heldOutTensorBatches(dataset, batchSize, spec, feed, heldOut)[Symbol.asyncIterator](),
      } as AsyncIterable<TrainingBatch>);
    const result = await trainQuantizationAware(trainable, training, {
      plan,
      epochs,
      learningRate,
      optimizer,
      momentum,
      learningRateDecay,
      ste,
      seed,
      regularizer: quantizers?.regularizer,
      validationData: validation,
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
    });
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

function isBinaryMode(quantizer: string): quantizer is BinaryActivationMode {
  return quantizer === 'sign' || quantizer === 'ternary';
}

/**
 * Jobs of kind `analyze` and `auto` (docs/methods.md, `analyze` and `auto`).
 *
 * - analyze: the float model's metrics, the per-tensor sensitivity table (src/quant/sensitivity.ts: each
 *   quantizable weight × each candidate config, alone, on the first `search.analysisSamples` evaluation
 *   samples) as `report.sensitivity`, and the spec's own method exported and measured as a ptq job would be,
 *   so the report and artifacts have their usual shape.
 * - auto: the evaluation set is split (seeded, src/quant/held-out.ts) into a search part and a held-out part,
 *   or `data.verification` is the held-out part and the whole evaluation set is searched on. The table is
 *   measured on the search part, then src/quant/search.ts picks per-tensor configs; every candidate is
 *   verified through the real export — runPtq with one `layers.overrides` entry per tensor (float tensors in
 *   `layers.skip`), the `model/` artifact loaded with the stock loader, evaluated against the float model on
 *   the whole search part and on the held-out part, whose drop (with a paired 95% interval) must meet
 *   `target.maxDrop` too for the trial to count as feasible: the held-out samples never steer the search,
 *   they only refuse what it found. The report gets `frontier` (every trial: packed bytes, metrics, chosen),
 *   `chosenSpec` (a plain ptq spec that reproduces the chosen trial) and `search`; the artifacts are the
 *   chosen trial's files. When no trial meets `target.maxDrop` and the job has a training set and a layers
 *   model, the best trial's per-tensor config is trained quantization-aware (quantize.ts trainQat with `spec.qat`, stage `train`),
 *   exported and measured like the trials, and added to the frontier as one more entry (`qat: true`, its
 *   estimates those of the trial it started from); it is chosen when its drop is below the best trial's, and
 *   `chosenSpec` is then a `kind: "qat"` spec with the same overrides. `search.targetMet` covers both.
 *
 * The weight being analysed is put into the float model in place: a layers model's variable is assigned and
 * restored (layersWeightSwap); a graph model is rebuilt from the weights with that one tensor replaced and
 * disposed after its evaluation (a GraphModel's weight map is not meant to be mutated from outside).
 * BatchNorm is folded (unless `foldBatchNorm: false`) before any of this, exactly as the ptq job that
 * re-runs `chosenSpec` will fold it.
 */
import * as tf from '@tensorflow/tfjs';
import { equalizes, SpecError, type JobSpec } from '../jobs/spec.js';
import type { Dataset } from '../model/dataset/index.js';
import { foldBatchNorm } from '../model/fold-batchnorm.js';
import { loadRunnable, type RunnableModel } from '../model/load.js';
import type { LoadedModel } from '../model/types.js';
import { writeModel } from '../model/write.js';
import { evaluate, type Batch } from '../quant/evaluate.js';
import { quantizationShape } from '../quant/methods/common.js';
import { getMethod, parseMethodParams, type MethodParams } from '../quant/methods/index.js';
import { heldOutMask, pairedDropInterval } from '../quant/held-out.js';
import { createRng } from '../quant/rng.js';
import type { Metrics, QuantizedTensor } from '../quant/types.js';
import type { AffineParams } from '../quant/methods/affine.js';
import {
  FLOAT,
  dropOf,
  searchConfigs,
  worstDrop,
  type Assignment,
  type GoalMetric,
  type MetricGoal,
  type SearchTensor,
} from '../quant/search.js';
import {
  DEFAULT_CANDIDATES,
  analyzeSensitivity,
  cacheBatches,
  disposeBatches,
  labelCandidates,
  layersWeightSwap,
  withLearnedRounding,
  type Candidate,
  metricValue,
  type SensitivityRow,
  type WithWeight,
} from '../quant/sensitivity.js';
import { diagnoseJob } from './diagnose.js';
import { planTensors, runPtq, tensorSeed, type PtqResult } from './ptq.js';
import {
  roundEachAlone,
  roundLayers,
  roundingTargets,
  type RoundingCheckpoint,
  type RoundingReport,
} from './rounding.js';
import { trainQat, type TrainedQat } from './quantize.js';
import { inputsOf, loadArtifact, loadTfModel, selectRows, tensorBatches } from './runtime.js';
import { stageClock, stageReporter } from './stages.js';
import type { JobDatasets, JobOptions, JobProgress, JobReport, JobResult } from './types.js';

/** A trial measured on the held-out samples. */
export interface HeldOutResult {
  metrics: Metrics;
  /** Drop of the target metric vs the float model on the same samples. */
  drop: number;
  /** The drop's paired 95% interval [low, high] (src/quant/held-out.ts). */
  drop95: [number, number];
}

export interface FrontierEntry {
  trial: number;
  /** Packed bytes of the trial's export. */
  bytes: number;
  /** Measured on the search part of the evaluation set, on the stock-loaded artifact. */
  metrics: Metrics;
  /** Drop of the target metric vs the float model on the search part (relative when target.relative). */
  drop: number;
  /** The same on the held-out part: the trial is feasible only if this drop meets target.maxDrop too. */
  heldOut: HeldOutResult;
  estimatedBytes: number;
  estimatedDrop: number;
  feasible: boolean;
  chosen: boolean;
  /** Tensor name → config label (`float`: left unquantized). */
  overrides: Assignment;
  /** The QAT fallback: the best PTQ trial's config, trained quantization-aware. */
  qat?: true;
}

export interface SearchSummary {
  metric: GoalMetric;
  relative: boolean;
  maxDrop?: number;
  maxBytes?: number;
  /** The float model's value of the metric on the search part (analyze: the whole evaluation set). */
  floatValue: number;
  /** auto: samples searched on (the sensitivity table and every trial's `drop`). */
  searchSamples?: number;
  /** auto: where the held-out samples come from, how many, and the float model's metric on them. */
  heldOut?: {
    source: 'split' | 'verification';
    samples: number;
    floatValue: number;
    /** `split`: search.verificationSplit and search.seed. */
    fraction?: number;
    seed?: number;
  };
  /** Samples the sensitivity was measured on. */
  analysisSamples: number;
  candidates: { label: string; params: MethodParams }[];
  trials?: number;
  maxTrials?: number;
  stoppedBy?: 'converged' | 'maxTrials' | 'time';
  targetMet?: boolean;
  chosenTrial?: number;
  /** The frontier entry of the QAT fallback, when it ran. */
  qatTrial?: number;
}

export interface AutoReport extends JobReport {
  sensitivity: SensitivityRow[];
  search: SearchSummary;
  frontier?: FrontierEntry[];
  /** A ptq job spec (`layers.overrides` per tensor) that reproduces the chosen trial. */
  chosenSpec?: Record<string, unknown>;
}

const span = {
  fold: [0, 2],
  float: [2, 6],
  analyzeOnly: [6, 85],
  analyze: [6, 40],
  export: [85, 100],
  search: [40, 100],
  qat: [80, 100],
} as const;

export async function runAutoJob(
  source: LoadedModel,
  spec: JobSpec,
  data: JobDatasets,
  options: JobOptions,
): Promise<JobResult> {
  const evaluation = data.evaluation;
  if (!evaluation)
    throw new SpecError([{ path: '/data/evaluation', message: `kind "${spec.kind}" needs an evaluation dataset` }]);
  const started = performance.now();
  const { timings, timed } = stageClock();
  const report = stageReporter(options.onProgress);
  const batchSize = options.batchSize ?? 64;
  const owned: RunnableModel[] = [];
  let cached: Batch[] = [];

  try {
    const foldBn = spec.foldBatchNorm ?? true;
    await report(
      'fold',
      span.fold,
      0,
      foldBn ? 'folding BatchNormalization into the preceding layers' : 'loading the model',
    );
    const folding = foldBn
      ? foldBatchNorm(source, { keepScale: equalizes(spec) })
      : { model: source, folded: [], skipped: [], scaled: [] };
    const model = folding.model;
    const floatModel = await loadTfModel(source, owned);
    // The folded model computes the same function; it is the one whose weights get quantized.
    const perturbable = model !== source ? await loadTfModel(model, owned) : floatModel;
    const feed = inputsOf(floatModel);
    const batchesOf = (range: { end?: number } = {}) => tensorBatches(evaluation, batchSize, spec, feed, range);
    const goal = goalOf(spec, evaluation);
    const held = spec.kind === 'auto' ? heldOutPart(spec, evaluation, data.verification) : undefined;
    const searchBatches = () => (held?.mask ? selectRows(batchesOf(), held.mask, 0) : batchesOf());
    const heldOutBatches = () =>
      held?.mask ? selectRows(batchesOf(), held.mask, 1) : tensorBatches(data.verification!, batchSize, spec, feed, {});

    await report('evaluate', span.float, 0, 'evaluating the float model');
    const valueOf = (metrics: Metrics) => (goal.metric === 'agreement' ? 1 : metricValue(metrics, goal.metric));
    // The float model's per-sample scores on the held-out part, each trial's are paired with.
    const floatScores: number[] = [];
    const { floatMetrics, floatValue, heldOutSummary } = await timed('evaluateFloatMs', async () => {
      const whole = await evaluate(floatModel, batchesOf(), { signal: options.signal });
      if (!held) return { floatMetrics: whole, floatValue: valueOf(whole), heldOutSummary: undefined };
      const searched = held.mask ? await evaluate(floatModel, searchBatches(), { signal: options.signal }) : whole;
      const heldOut = await evaluate(floatModel, heldOutBatches(), {
        signal: options.signal,
        ...(goal.metric === 'agreement' ? {} : { perSample: { metric: goal.metric, scores: floatScores } }),
      });
      if (goal.metric === 'agreement') floatScores.push(...new Array<number>(heldOut.samples).fill(1));
      const summary: SearchSummary['heldOut'] = {
        source: held.mask ? 'split' : 'verification',
        samples: heldOut.samples,
        floatValue: valueOf(heldOut),
        ...(held.mask ? { fraction: spec.search.verificationSplit, seed: spec.search.seed } : {}),
      };
      return { floatMetrics: whole, floatValue: valueOf(searched), heldOutSummary: summary };
    });

    const labelled = labelCandidates(
      spec.search.candidates ?? DEFAULT_CANDIDATES.map((c, i) => parseMethodParams(c, `/search/candidates/${i}`)),
    );
    // With calibration data auto picks the rounding per tensor too: ptq.algorithm's, or GPTQ when it is nearest.
    const calibration = spec.kind === 'auto' ? data.calibration : undefined;
    const learned = spec.ptq.algorithm === 'nearest' ? 'gptq' : spec.ptq.algorithm;
    const candidates = calibration ? withLearnedRounding(labelled, learned) : labelled;
    const calibrationBatches = () => tensorBatches(calibration!, batchSize, spec, feed, { end: spec.ptq.samples });
    const planned = planTensors(model, spec).selected;
    if (planned.length === 0) throw nothingToSearch(spec);
    const weights = new Map(model.weights.map((w) => [w.name, w]));
    const learnedCandidates = candidates.filter((c) => c.rounding !== undefined);
    const roundedAlone =
      learnedCandidates.length > 0
        ? await timed('roundMs', async () => {
            await report(
              'analyze',
              span.analyze,
              0,
              `${learned}: rounding each kernel alone from the calibration data`,
            );
            return roundEachAlone(
              model,
              spec,
              learned,
              planned.map((t) => ({
                name: t.name,
                role: t.role,
                params: learnedCandidates.map((c) => c.params as AffineParams),
              })),
              { batches: calibrationBatches, signal: options.signal },
            );
          })
        : new Map<string, QuantizedTensor[]>();
    const quantize = (name: string, candidate: Candidate): QuantizedTensor | undefined => {
      if (candidate.rounding) return roundedAlone.get(name)?.[learnedCandidates.indexOf(candidate)];
      const params = candidate.params;
      const weight = weights.get(name)!;
      const role = planned.find((t) => t.name === name)!.role;
      const shape = quantizationShape(weight.shape, role, params.name);
      return getMethod(params.name).quantize(
        weight.values as Float32Array,
        shape,
        params,
        createRng(tensorSeed('seed' in params ? params.seed : 0, name)),
      );
    };
    const searchSamples = held?.searchSamples ?? evaluation.samples;
    const analysisSamples = Math.min(searchSamples, spec.search.analysisSamples);
    cached = await cacheBatches(held?.mask ? searchBatches() : batchesOf({ end: analysisSamples }), analysisSamples);
    const analyzeSpan = spec.kind === 'auto' ? span.analyze : span.analyzeOnly;
    const sensitivity = await timed('analyzeMs', () =>
      analyzeSensitivity({
        model: perturbable,
        tensors: planned.map((t) => ({ name: t.name, size: weights.get(t.name)!.values.length })),
        candidates,
        quantize,
        withWeight: perturbable instanceof tf.LayersModel ? layersWeightSwap(perturbable) : rebuildingWeightSwap(model),
        batches: cached,
        goal,
        signal: options.signal,
        onProgress: (done, total, message) => report('analyze', analyzeSpan, done / total, message),
      }),
    );
    disposeBatches(cached);
    cached = [];

    // Trials that round the same first kernels with the same params share those layers' rounding: each
    // depends only on the ones rounded before it. Keyed by that prefix; a trial resumes from its longest one.
    const roundingCache = new Map<string, RoundingCheckpoint>();
    const roundCached = (trialSpec: JobSpec) => {
      const order = roundingTargets(model, trialSpec).targets;
      const paramsOf = new Map(order.map((t) => [t.name, t.params]));
      const keyOf = (names: string[]) => JSON.stringify(names.map((name) => [name, paramsOf.get(name)]));
      let resumeFrom: RoundingCheckpoint | undefined;
      for (let k = order.length; k > 0 && !resumeFrom; k--)
        resumeFrom = roundingCache.get(keyOf(order.slice(0, k).map((t) => t.name)));
      return roundLayers(model, trialSpec, {
        signal: options.signal,
        batches: calibrationBatches,
        resumeFrom,
        onCheckpoint: (checkpoint) =>
          void roundingCache.set(keyOf(checkpoint.done.map((d) => d.layer.name)), checkpoint),
      });
    };
    /** The artifact loaded as stock TF.js would, for `use`, and disposed after. */
    const withArtifact = async <T>(files: PtqResult['files'], use: (artifact: RunnableModel) => Promise<T>) => {
      const artifactOwner: RunnableModel[] = [];
      try {
        return await use(await loadArtifact(files, artifactOwner));
      } finally {
        for (const runnable of artifactOwner) runnable.dispose();
      }
    };
    const measure = async (trialSpec: JobSpec, trained?: TrainedQat): Promise<Measured> => {
      // The ptq job of this spec rounds the same way (quantize.ts), from the same calibration batches.
      const rounded = !trained && trialSpec.ptq.algorithm !== 'nearest' ? await roundCached(trialSpec) : undefined;
      const ptq = await runPtq(trained?.model ?? model, trialSpec, {
        backend: options.backend,
        signal: options.signal,
        precomputed: trained?.precomputed ?? rounded?.precomputed,
        source,
        equalized: folding.scaled,
      });
      return withArtifact(ptq.files, async (artifact) => {
        const metrics = await evaluate(artifact, searchBatches(), { reference: floatModel, signal: options.signal });
        const rounding = rounded ? { rounding: rounded.report } : {};
        if (!heldOutSummary) return { ptq, metrics, ...rounding };
        const scores: number[] = [];
        const heldOutMetrics = await evaluate(artifact, heldOutBatches(), {
          reference: floatModel,
          signal: options.signal,
          perSample: { metric: goal.metric, scores },
        });
        const interval = pairedDropInterval(goal, floatScores, scores);
        const heldOut: HeldOutResult = {
          metrics: heldOutMetrics,
          drop: dropOf(goal, heldOutSummary.floatValue, metricValue(heldOutMetrics, goal.metric)),
          drop95: [interval.low, interval.high],
        };
        return { ptq, metrics, heldOut, ...rounding };
      });
    };
    const summary: SearchSummary = {
      metric: goal.metric,
      relative: goal.relative,
      ...(spec.target?.maxDrop !== undefined ? { maxDrop: spec.target.maxDrop } : {}),
      ...(spec.target?.maxBytes !== undefined ? { maxBytes: spec.target.maxBytes } : {}),
      floatValue,
      analysisSamples,
      candidates,
      ...(heldOutSummary ? { searchSamples, heldOut: heldOutSummary } : {}),
    };
    const warnings: string[] = [];

    let chosen: Measured;
    let extra: Pick<AutoReport, 'frontier' | 'chosenSpec' | 'training'> = {};
    if (spec.kind === 'analyze') {
      await report('quantize', span.export, 0, `exporting the spec's own method (${spec.method.name})`);
      chosen = await timed('exportMs', () => measure({ ...spec, kind: 'ptq', foldBatchNorm: foldBn }));
    } else {
      const paramsOf = new Map(candidates.map((c) => [c.label, c.params]));
      const roundingOf = new Map(candidates.map((c) => [c.label, c.rounding]));
      const { layers: _rounded, ...ptqSpec } = spec.ptq;
      const specFor = (assignment: Assignment): JobSpec => {
        const names = Object.keys(assignment);
        const rounded = names.filter((n) => roundingOf.get(assignment[n]) !== undefined);
        // The spec's method is only the default of tensors without an override, and every tensor has one (or
        // is skipped); a learned rounding's spec must still name an affine method with nearest rounding.
        const method = spec.method as { name: string; rounding?: string };
        const affineNearest = method.name === 'affine' && method.rounding !== 'stochastic';
        return {
          ...spec,
          kind: 'ptq',
          foldBatchNorm: foldBn,
          ptq:
            rounded.length > 0
              ? { ...ptqSpec, algorithm: learned, layers: rounded.map(escapeGlob) }
              : { ...ptqSpec, algorithm: 'nearest' },
          ...(rounded.length > 0 && !affineNearest ? { method: paramsOf.get(assignment[rounded[0]])! } : {}),
          layers: {
            skip: [...spec.layers.skip, ...names.filter((n) => assignment[n] === FLOAT).map(escapeGlob)],
            overrides: Object.fromEntries(
              names.filter((n) => assignment[n] !== FLOAT).map((n) => [escapeGlob(n), paramsOf.get(assignment[n])!]),
            ),
          },
        };
      };
      const results = new Map<number, Omit<Measured, 'ptq'>>();
      let pending: Measured | undefined;
      let best: Measured | undefined;
      const { maxTrials, timeBudgetSeconds } = spec.search;
      // The QAT fallback may follow the search: it gets the last part of the progress scale.
      const canTrain = data.training !== undefined && spec.target?.maxDrop !== undefined;
      const searchSpan = canTrain ? ([span.search[0], span.qat[0]] as const) : span.search;
      const searchTensors = searchTensorsOf(
        sensitivity.rows,
        planned.map((t) => ({ name: t.name, size: weights.get(t.name)!.values.length })),
      );
      const searched = await timed('searchMs', () =>
        searchConfigs({
          tensors: searchTensors,
          budget: { maxDrop: spec.target?.maxDrop, maxBytes: spec.target?.maxBytes },
          maxTrials,
          outOfTime: () => performance.now() - started > timeBudgetSeconds * 1000,
          measure: async (assignment, trial) => {
            await report(
              'search',
              searchSpan,
              (trial - 1) / maxTrials,
              `trial ${trial} of ${maxTrials}: exporting and evaluating`,
            );
            pending = await measure(specFor(assignment));
            results.set(trial, { metrics: pending.metrics, heldOut: pending.heldOut });
            return {
              bytes: pending.ptq.report.model.packedBytes,
              drop: dropOf(goal, floatValue, metricValue(pending.metrics, goal.metric)),
              heldOutDrop: pending.heldOut!.drop,
            };
          },
          onTrial: (trial, bestTrial) => {
            // The best only ever changes to the trial just measured, so only its files need keeping.
            if (bestTrial.trial === trial.trial) best = pending;
            pending = undefined;
            return report(
              'search',
              searchSpan,
              trial.trial / maxTrials,
              `trial ${trial.trial} of ${maxTrials}: ${trial.bytes} bytes, drop ${describeDrops(trial)}; ` +
                `best so far: trial ${bestTrial.trial}, ${bestTrial.bytes} bytes, drop ${describeDrops(bestTrial)}`,
            );
          },
        }),
      );
      chosen = best!;
      const frontier = searched.trials.map((t): FrontierEntry => ({
        trial: t.trial,
        bytes: t.bytes,
        metrics: results.get(t.trial)!.metrics,
        drop: t.drop,
        heldOut: results.get(t.trial)!.heldOut!,
        estimatedBytes: t.estimatedBytes,
        estimatedDrop: t.estimatedDrop,
        feasible: t.feasible,
        chosen: t.trial === searched.best.trial,
        overrides: t.assignment,
      }));
      let chosenSpecFull = specFor(searched.best.assignment);
      let chosenTrial = searched.best.trial;
      let targetMet = searched.targetMet;
      const maxDrop = spec.target?.maxDrop;
      if (canTrain && !searched.targetMet && maxDrop !== undefined && worstDrop(searched.best) > maxDrop) {
        const base = searched.best;
        // QAT trains the weights itself: no learned rounding after it.
        const qatSpec: JobSpec = {
          ...specFor(base.assignment),
          kind: 'qat',
          ptq: { ...ptqSpec, algorithm: 'nearest' },
        };
        const trainProgress = (fraction: number, message: string, extra?: Partial<JobProgress>) =>
          report('train', span.qat, fraction * 0.9, `QAT of trial ${base.trial}'s config: ${message}`, extra);
        // The fallback is not a resumable QAT job: no checkpoint goes in or out.
        const trained = await timed('trainMs', () =>
          trainQat(
            model,
            qatSpec,
            data,
            { ...options, resumeFrom: undefined, onCheckpoint: undefined },
            floatMetrics,
            owned,
            trainProgress,
          ),
        );
        await report('train', span.qat, 0.9, 'exporting and evaluating the QAT model');
        const measured = await measure(qatSpec, trained);
        const { ptq, metrics, heldOut } = measured;
        const bytes = ptq.report.model.packedBytes;
        const drop = dropOf(goal, floatValue, metricValue(metrics, goal.metric));
        const worst = worstDrop({ bytes, drop, heldOutDrop: heldOut!.drop });
        const feasible = worst <= maxDrop && (spec.target?.maxBytes === undefined || bytes <= spec.target.maxBytes);
        const entry: FrontierEntry = {
          trial: searched.trials.length + 1,
          bytes,
          metrics,
          drop,
          heldOut: heldOut!,
          estimatedBytes: base.estimatedBytes,
          estimatedDrop: base.estimatedDrop,
          feasible,
          chosen: worst < worstDrop(base),
          overrides: base.assignment,
          qat: true,
        };
        frontier.push(entry);
        summary.qatTrial = entry.trial;
        if (entry.chosen) {
          for (const other of frontier) if (other !== entry) other.chosen = false;
          chosen = measured;
          chosenSpecFull = qatSpec;
          chosenTrial = entry.trial;
          targetMet = feasible;
          extra.training = trained.training;
        }
      }
      const chosenEntry = frontier.find((f) => f.chosen)!;
      warnings.push(...searchWarnings(spec, chosenEntry, targetMet, frontier.length));
      // A spec to reuse carries no webhook: its secret must not reach the report.
      const { webhook, ...chosenSpec } = chosenSpecFull;
      extra = { ...extra, frontier, chosenSpec };
      Object.assign(summary, {
        trials: searched.trials.length,
        maxTrials,
        stoppedBy: searched.stoppedBy,
        targetMet,
        chosenTrial,
      });
    }

    const { ptq } = chosen;
    const files = ptq.files;
    // The report's metrics are those of every job: the whole evaluation set (the search part and the held-out one).
    const metrics = held?.mask
      ? await withArtifact(files, (artifact) =>
          evaluate(artifact, batchesOf(), { reference: floatModel, signal: options.signal }),
        )
      : chosen.metrics;
    await report('diagnose', span.export, 0.9, 'diagnosing the error layer by layer');
    const diagnosed = await timed('diagnoseMs', () =>
      diagnoseJob({
        float: model,
        files,
        spec,
        tensors: ptq.report.tensors,
        evaluation,
        calibration: data.calibration,
        batchSize,
        signal: options.signal,
      }),
    );
    const jobReport: AutoReport = {
      ...ptq.report,
      kind: spec.kind,
      spec,
      model: { ...ptq.report.model, metrics: { float: floatMetrics, [extra.training ? 'qat' : 'ptq']: metrics } },
      ...(folding.folded.length > 0 || folding.skipped.length > 0 || folding.scaled.length > 0
        ? { batchNorm: { folded: folding.folded, skipped: folding.skipped, scaled: folding.scaled } }
        : {}),
      sensitivity: sensitivity.rows,
      search: summary,
      ...extra,
      ...(chosen.rounding ? { rounding: chosen.rounding } : {}),
      ...(diagnosed.diagnosis ? { diagnosis: diagnosed.diagnosis } : {}),
      warnings: [
        ...folding.skipped.map((s) => `BatchNorm ${s.layer} was not folded: ${s.reason}`),
        ...ptq.report.warnings,
        ...diagnosed.warnings,
        ...warnings,
      ],
      timings: { ...ptq.report.timings, ...timings, totalMs: Math.round((performance.now() - started) * 10) / 10 },
    };
    await report(
      spec.kind === 'auto' ? 'search' : 'report',
      spec.kind === 'auto' ? span.search : span.export,
      1,
      'report written',
    );
    return { files, report: jobReport };
  } finally {
    disposeBatches(cached);
    for (const runnable of owned) runnable.dispose();
  }
}

interface Measured {
  ptq: PtqResult;
  /** On the search part (analyze: the whole evaluation set). */
  metrics: Metrics;
  /** auto only. */
  heldOut?: HeldOutResult;
  /** The trial's learned rounding, when it has one. */
  rounding?: RoundingReport;
}

/**
 * Which samples auto holds out: `data.verification` (the whole evaluation set is then searched on), else a
 * seeded part of the evaluation set (`mask`, 1 = held out).
 */
function heldOutPart(
  spec: JobSpec,
  evaluation: Dataset,
  verification: Dataset | undefined,
): { mask?: Uint8Array; searchSamples: number } {
  if (verification) {
    if (Boolean(verification.y) !== Boolean(evaluation.y)) {
      throw new SpecError([
        {
          path: '/data/verification',
          message: `data.evaluation ${evaluation.y ? 'has' : 'has no'} labels (y) and data.verification ${verification.y ? 'has' : 'has no'}: the drop is measured in one metric on both`,
        },
      ]);
    }
    return { searchSamples: evaluation.samples };
  }
  if (evaluation.samples < 2) {
    throw new SpecError([
      {
        path: '/data/evaluation',
        message: `${evaluation.samples} evaluation sample cannot be split into a search part and a held-out part: give more, or data.verification`,
      },
    ]);
  }
  const mask = heldOutMask(evaluation.samples, spec.search.verificationSplit, spec.search.seed);
  return { mask, searchSamples: mask.length - mask.reduce((sum, v) => sum + v, 0) };
}

function describeDrops(trial: { drop: number; heldOutDrop?: number }): string {
  const heldOut = trial.heldOutDrop === undefined ? '' : ` (held-out ${trial.heldOutDrop.toFixed(4)})`;
  return `${trial.drop.toFixed(4)}${heldOut}`;
}

/** What the report must say about the chosen trial: a target missed, or a held-out drop too uncertain to be sure of. */
function searchWarnings(spec: JobSpec, chosen: FrontierEntry, targetMet: boolean, trials: number): string[] {
  const warnings: string[] = [];
  const maxDrop = spec.target?.maxDrop;
  const maxBytes = spec.target?.maxBytes;
  const drops = `drop ${chosen.drop.toFixed(4)} on the search part, ${chosen.heldOut.drop.toFixed(4)} held out`;
  const { evaluation, verification, training } = spec.data;
  if (verification !== undefined && verification === evaluation) {
    warnings.push(
      `data.verification is data.evaluation (${verification}): the held-out drop is measured on the data searched on`,
    );
  }
  if (chosen.qat && training !== undefined && (training === evaluation || training === verification)) {
    warnings.push(
      `the chosen QAT fallback trained on ${training}, which is also data.${training === verification ? 'verification' : 'evaluation'}: ` +
        'its drops are not measured on unseen data',
    );
  }
  if (!targetMet) {
    const limits = [
      ...(maxDrop !== undefined ? [`target.maxDrop ${maxDrop}`] : []),
      ...(maxBytes !== undefined ? [`target.maxBytes ${maxBytes}`] : []),
    ].join(' and ');
    warnings.push(
      `no configuration of the ${trials} tried met ${limits}: the closest is returned (trial ${chosen.trial}, ` +
        `${chosen.bytes} bytes, ${drops}); see report.frontier`,
    );
  } else if (maxDrop !== undefined && chosen.heldOut.drop95[1] > maxDrop) {
    warnings.push(
      `trial ${chosen.trial} meets target.maxDrop ${maxDrop} (${drops}), but the held-out drop's 95% interval ` +
        `[${chosen.heldOut.drop95.map((v) => v.toFixed(4)).join(', ')}] reaches above it: ` +
        `${chosen.heldOut.metrics.samples} held-out samples cannot confirm it (more in data.verification would)`,
    );
  }
  return warnings;
}

/**
 * The metric the drop is measured in: `target.metric` (default accuracy) when the evaluation set has labels,
 * else agreement with the float model (the only one that needs none).
 */
function goalOf(spec: JobSpec, evaluation: Dataset): MetricGoal {
  const wanted = spec.target?.metric ?? 'accuracy';
  return { metric: evaluation.y ? wanted : 'agreement', relative: spec.target?.relative ?? false };
}

/** The sensitivity rows regrouped per tensor as the search's options. */
function searchTensorsOf(rows: SensitivityRow[], tensors: { name: string; size: number }[]): SearchTensor[] {
  return tensors.map((t) => ({
    name: t.name,
    floatBytes: 4 * t.size,
    options: rows.filter((r) => r.name === t.name).map((r) => ({ config: r.config, drop: r.drop, bytes: r.bytes })),
  }));
}

/** Said at submission when the API can tell (http/routes/jobs.ts); here for a model only the worker reads. */
export function nothingToSearch(spec: JobSpec): SpecError {
  return new SpecError([
    {
      path: '/layers/skip',
      message: `no quantizable tensor is left once layers.skip is applied: kind "${spec.kind}" has nothing to measure`,
    },
  ]);
}

/** A weight name as a glob that matches exactly it (layers.skip and layers.overrides are picomatch globs). */
export function escapeGlob(name: string): string {
  return name.replace(/[\\*?[\]{}()!+@|]/g, '\\$&');
}

/** withWeight for a graph model: the model is rebuilt with the one weight replaced, and disposed after. */
function rebuildingWeightSwap(model: LoadedModel): WithWeight {
  return async (name, values, run) => {
    const runnable = await loadRunnable(writeModel(model, new Map([[name, { dequantized: values }]])));
    try {
      return await run(runnable);
    } finally {
      runnable.dispose();
    }
  };
}

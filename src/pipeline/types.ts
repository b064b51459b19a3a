/**
 * What every job flow takes and gives (src/pipeline/run.ts dispatches by kind to quantize.ts or auto.ts):
 * the datasets by role, the run's options and progress events, and the report the artifacts carry as
 * report.json.
 */
import type { JobSpec } from '../jobs/spec.js';
import type { Dataset } from '../model/dataset/index.js';
import type { FoldResult } from '../model/fold-batchnorm.js';
import type { FileSet } from '../quant/model.js';
import type { ActivationRange } from '../quant/activations.js';
import type { Metrics } from '../quant/types.js';
import type { LearnedActivationRange } from '../quant/qat/activation-layers.js';
import type { BinaryActivationMode } from '../quant/qat/binary-activations.js';
import type { EpochMetrics, QatCheckpoint } from '../quant/qat/train.js';
import type { Diagnosis } from './diagnose.js';
import type { PipelineOptions, PipelineProgress, PtqReport } from './ptq.js';
import type { RoundingCheckpoint, RoundingReport } from './rounding.js';

export interface JobDatasets {
  calibration?: Dataset;
  evaluation?: Dataset;
  training?: Dataset;
  /** auto: held-out data the search is verified on. */
  verification?: Dataset;
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
  stage:
    | 'fold'
    | 'evaluate'
    | 'train'
    | 'round'
    | PipelineProgress['stage']
    | 'calibrate'
    | 'analyze'
    | 'search'
    | 'diagnose';
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
  batchNorm?: { folded: string[]; skipped: FoldResult['skipped']; scaled: FoldResult['scaled'] };
  /** Calibrated ranges, or the DoReFa/PACT quantizers QAT trained (learned α per layer). */
  activations?: (ActivationRange | LearnedActivationRange | BinaryActivationReport)[];
  training?: { history: EpochMetrics[]; stoppedEarly: boolean };
  /** ptq.algorithm gptq / adaround: per layer, time and output error with nearest rounding and after. */
  rounding?: RoundingReport;
  /** Jobs with evaluation data: per layer, the SQNR vs float split by source, ranked, with a remedy. */
  diagnosis?: Diagnosis;
  timings: PtqReport['timings'] & Record<string, number>;
}

export interface JobResult {
  files: FileSet;
  report: JobReport;
}

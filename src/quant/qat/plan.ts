/**
 * The QAT plan from the tensors a PTQ job selects (pipeline/ptq.ts planTensors: name, role, params), with
 * the shape each method sees chosen by PTQ's rule (quantizationShape), so training quantizes every kernel
 * exactly as the export will.
 */
import { quantizationShape } from '../methods/common.js';
import type { MethodParams } from '../methods/index.js';
import type { TrainingMethodParams } from './methods.js';
import type { QatPlan } from './train.js';

export interface PlannedWeight {
  name: string;
  role: string;
  params: MethodParams;
  /** A training method the weight trains with (params is then its export quantizer). */
  training?: TrainingMethodParams;
  /** The weight's stored shape. */
  shape: readonly number[];
}

export function qatPlan(weights: readonly PlannedWeight[]): QatPlan {
  return new Map(
    weights.map((w) => [
      w.name,
      { params: w.params, training: w.training, shape: quantizationShape(w.shape, w.role, w.params.name) },
    ]),
  );
}

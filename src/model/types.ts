/**
 * The in-memory shape of a TF.js model as qaas reads and writes it: model.json's parsed JSON, and every
 * weight decoded (manifest quantization undone) in manifest order.
 */

import type { ModelFormat, Weight } from '../quant/model.js';

// Defined with the engine, which works on them (src/quant imports nothing from src/model).
export type { FileSet, ModelFormat, Weight, WeightDtype } from '../quant/model.js';

export interface LoadedModel {
  format: ModelFormat;
  /** model.json without `weightsManifest` (topology, format, generatedBy, convertedBy, signature, ...). */
  modelJson: Record<string, unknown>;
  weights: Weight[];
}

/** A model without its values: what validation learns, and all that choosing the weights to quantize needs. */
export interface ModelOutline {
  format: ModelFormat;
  modelJson: Record<string, unknown>;
  weights: Omit<Weight, 'values'>[];
}

/** Why a weight is a candidate for quantization (docs/job-spec.md, `layers`). */
export type WeightRole =
  'kernel' | 'recurrent_kernel' | 'depthwise_kernel' | 'pointwise_kernel' | 'embeddings' | 'graph_const';

export interface QuantizableWeight {
  name: string;
  role: WeightRole;
  /** Layer class (`Dense`, `Conv2D`, ...) or, in graph models, the consuming op (`MatMul`, `Conv2D`, ...). */
  layerType: string;
}

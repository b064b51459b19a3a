/**
 * The in-memory shape of a TF.js model as qaas reads and writes it: model.json's parsed JSON, and every
 * weight decoded (manifest quantization undone) in manifest order.
 */

/** Relative path (e.g. `model.json`, `group1-shard1of2.bin`) → bytes. */
export type FileSet = Map<string, Uint8Array>;

export type ModelFormat = 'layers-model' | 'graph-model';

export type WeightDtype = 'float32' | 'int32' | 'bool';

export interface Weight {
  name: string;
  shape: number[];
  dtype: WeightDtype;
  /** float32 for float weights (dequantized when the manifest was quantized), Int32Array / Uint8Array else. */
  values: Float32Array | Int32Array | Uint8Array;
  /**
   * The manifest quantization the source file used: kept for the report, and so a weight left as it was
   * goes back out in the same bytes (min and scale are set for uint8/uint16).
   */
  sourceQuantization?: { dtype: 'uint8' | 'uint16' | 'float16'; min?: number; scale?: number };
  /**
   * Set on a kernel whose per-channel scale was moved into the BatchNorm after it (ptq.equalize): its channels
   * share one range, so one grid gives per-channel precision. The BatchNorm's layer name.
   */
  channelScaleIn?: string;
}

export interface LoadedModel {
  format: ModelFormat;
  /** model.json without `weightsManifest` (topology, format, generatedBy, convertedBy, signature, ...). */
  modelJson: Record<string, unknown>;
  weights: Weight[];
}

/** Why a weight is a candidate for quantization (DESIGN.md §4 "Which tensors"). */
export type WeightRole =
  'kernel' | 'recurrent_kernel' | 'depthwise_kernel' | 'pointwise_kernel' | 'embeddings' | 'graph_const';

export interface QuantizableWeight {
  name: string;
  role: WeightRole;
  /** Layer class (`Dense`, `Conv2D`, ...) or, in graph models, the consuming op (`MatMul`, `Conv2D`, ...). */
  layerType: string;
}

/**
 * A model as the engine sees it: its files by relative path, and each weight decoded to plain values. src/model
 * reads and writes these (model.json + shards); the engine quantizes, packs and calibrates them.
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

/**
 * The JSON shape of `packed/manifest.json` (docs/packed-format.md), shared by the encoder and the shipped
 * decoder. Types only (the decoder imports it with `import type`, which compiles away), so it is not one of
 * the files shipped beside the artifact; the format's name and version constants live in decoder.ts.
 */

/** Side information is float32 at `…Offset` (bytes into weights.bin); its length follows from the fields. */
export type PackedEncoding =
  /** scales and mins: `channels` float32 each. */
  | { kind: 'affine'; bits: number; channels: number; scalesOffset: number; minsOffset: number }
  /** codebook: channels · 2^bits float32, channel-major. */
  | { kind: 'codebook'; bits: number; channels: number; codebookOffset: number }
  /** codes are binary16 patterns, always 16 bits; no side information. */
  | { kind: 'float16'; bits: 16 }
  /** codebook: subspaces · 2^bits · subvectorLength float32, laid out [subspace][centroid][d]; subspaces 1 = shared. */
  | { kind: 'pq'; bits: number; subvectorLength: number; subspaces: number; codebookOffset: number };

interface PackedWeightBase {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32' | 'bool';
}

/** A quantized float32 tensor: `count` codes bit-packed at `codesOffset`, `codesBytes` = ⌈count·bits/8⌉. */
export interface PackedQuantizedWeight extends PackedWeightBase {
  dtype: 'float32';
  encoding: PackedEncoding;
  codesOffset: number;
  codesBytes: number;
  count: number;
}

/** A tensor stored as is: little-endian float32/int32 (4 bytes each) or bool (1 byte each). */
export interface PackedRawWeight extends PackedWeightBase {
  offset: number;
  byteLength: number;
}

export type PackedWeight = PackedQuantizedWeight | PackedRawWeight;

export interface PackedManifest {
  format: 'qaas-packed';
  version: 1;
  /** The model's format: 'layers-model' or 'graph-model'. */
  modelFormat: string;
  /** model.json without `weightsManifest`: modelTopology, format, generatedBy, convertedBy, signature, ... */
  modelJson: Record<string, unknown>;
  /** Length of weights.bin, so a truncated download is caught before decoding. */
  weightsBytes: number;
  /** Every weight of the model, in its original order. */
  weights: PackedWeight[];
}

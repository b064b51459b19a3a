/**
 * What a learned rounding (GPTQ, AdaRound) needs to know about the layer a kernel belongs to: how its input
 * maps to rows of the kernel (dense features, conv im2col patches, depthwise per-channel patches), and
 * where that input can be read while the model runs — a layer's input tensor in a layers model, the data
 * input of the consuming node in a graph model. A kernel this cannot describe (a layer called twice, a
 * transposed MatMul, NCHW data) gets a reason instead, and is rounded to nearest.
 */
import * as tf from '@tensorflow/tfjs';
import type { LayerGeometry, Padding } from '../quant/rounding/gram.js';
import { isObject } from './topology.js';
import type { LoadedModel } from './types.js';

export type KernelSite =
  { geometry: LayerGeometry; layer: string } | { geometry: LayerGeometry; node: string } | { reason: string };

type Json = Record<string, unknown>;

function pair(value: unknown, fallback: number): [number, number] {
  if (Array.isArray(value)) return [Number(value[0] ?? fallback), Number(value[1] ?? value[0] ?? fallback)];
  if (typeof value === 'number') return [value, value];
  return [fallback, fallback];
}

/** The geometry of a Dense, Conv2D or DepthwiseConv2D layer of a loaded tf.LayersModel. */
export function layersKernelSite(model: tf.LayersModel, weightName: string, shape: readonly number[]): KernelSite {
  const parts = weightName.split('/');
  const layerName = parts[parts.length - 2];
  let layer: tf.layers.Layer;
  try {
    layer = model.getLayer(layerName);
  } catch {
    return { reason: `no layer ${layerName}` };
  }
  if (layer.inboundNodes.length !== 1) return { reason: `layer ${layerName} is called more than once` };
  const className = layer.getClassName();
  const config = layer.getConfig() as Json;
  if (className === 'Dense') return { geometry: { kind: 'dense', inputs: shape[0] }, layer: layerName };
  if (className !== 'Conv2D' && className !== 'DepthwiseConv2D') {
    return { reason: `${className} layers are rounded to nearest (GPTQ/AdaRound: Dense, Conv2D, DepthwiseConv2D)` };
  }
  if (config.dataFormat === 'channelsFirst') return { reason: `layer ${layerName} is channels-first` };
  const padding = config.padding === 'same' ? 'same' : config.padding === 'valid' ? 'valid' : undefined;
  if (padding === undefined) return { reason: `layer ${layerName} has padding ${String(config.padding)}` };
  return {
    geometry: {
      kind: className === 'Conv2D' ? 'conv2d' : 'depthwise',
      kernelHeight: shape[0],
      kernelWidth: shape[1],
      channels: shape[2],
      strides: pair(config.strides, 1),
      dilations: pair(config.dilationRate, 1),
      padding,
    },
    layer: layerName,
  };
}

const GRAPH_CONV_OPS = new Set(['Conv2D', '_FusedConv2D']);
const GRAPH_DEPTHWISE_OPS = new Set(['DepthwiseConv2dNative', 'FusedDepthwiseConv2dNative']);
const GRAPH_MATMUL_OPS = new Set(['MatMul', '_FusedMatMul']);

function attr(node: Json, name: string): Json {
  const attrs = isObject(node.attr) ? node.attr : {};
  return isObject(attrs[name]) ? (attrs[name] as Json) : {};
}

function attrString(node: Json, name: string): string | undefined {
  const s = attr(node, name).s;
  return typeof s === 'string' ? Buffer.from(s, 'base64').toString('utf8') : undefined;
}

function attrInts(node: Json, name: string): number[] | undefined {
  const list = attr(node, name).list;
  const ints = isObject(list) ? list.i : undefined;
  return Array.isArray(ints) ? ints.map(Number) : undefined;
}

function nodeName(input: unknown): string | undefined {
  if (typeof input !== 'string' || input.startsWith('^')) return undefined;
  return input.replace(/:\d+$/, '');
}

/** The node of a graph model that reads the Const `weightName` as its weight input, and its geometry. */
export function graphKernelSite(model: LoadedModel, weightName: string, shape: readonly number[]): KernelSite {
  const topology = model.modelJson.modelTopology as Json;
  const nodes = (Array.isArray(topology.node) ? topology.node : []).filter(isObject);
  const byName = new Map(nodes.map((node) => [String(node.name), node]));
  const resolve = (name: string): string => {
    let current = name;
    for (let hops = 0; hops < nodes.length; hops++) {
      const node = byName.get(current);
      if (node?.op !== 'Identity' || !Array.isArray(node.input)) break;
      const next = nodeName(node.input[0]);
      if (next === undefined) break;
      current = next;
    }
    return current;
  };
  const consumers = nodes.filter(
    (node) => Array.isArray(node.input) && node.input.some((input) => resolve(nodeName(input) ?? '') === weightName),
  );
  if (consumers.length !== 1) return { reason: `${weightName} is read by ${consumers.length} nodes` };
  const node = consumers[0];
  const op = String(node.op);
  const inputs = node.input as string[];
  if (resolve(nodeName(inputs[1]) ?? '') !== weightName) return { reason: `${op} reads ${weightName} as its data` };
  const data = inputs[0];
  if (GRAPH_MATMUL_OPS.has(op)) {
    if (attr(node, 'transpose_a').b === true || attr(node, 'transpose_b').b === true) {
      return { reason: `${op} ${String(node.name)} is transposed` };
    }
    return { geometry: { kind: 'dense', inputs: shape[0] }, node: data };
  }
  const depthwise = GRAPH_DEPTHWISE_OPS.has(op);
  if (!depthwise && !GRAPH_CONV_OPS.has(op)) return { reason: `${op} is rounded to nearest` };
  if ((attrString(node, 'data_format') ?? 'NHWC') !== 'NHWC') return { reason: `${op} is not NHWC` };
  const strides = attrInts(node, 'strides') ?? [1, 1, 1, 1];
  const dilations = attrInts(node, 'dilations') ?? [1, 1, 1, 1];
  const paddingName = attrString(node, 'padding') ?? 'VALID';
  let padding: Padding;
  if (paddingName === 'SAME') padding = 'same';
  else if (paddingName === 'VALID') padding = 'valid';
  else {
    const explicit = attrInts(node, 'explicit_paddings') ?? [];
    padding = { top: explicit[2] ?? 0, bottom: explicit[3] ?? 0, left: explicit[4] ?? 0, right: explicit[5] ?? 0 };
  }
  return {
    geometry: {
      kind: depthwise ? 'depthwise' : 'conv2d',
      kernelHeight: shape[0],
      kernelWidth: shape[1],
      channels: shape[2],
      strides: [strides[1], strides[2]],
      dilations: [dilations[1], dilations[2]],
      padding,
    },
    node: data,
  };
}

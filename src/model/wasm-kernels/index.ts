/**
 * The gradient kernels tfjs 4.22's wasm backend lacks, registered on it so `model.fit` of Conv2D,
 * DepthwiseConv2D, SeparableConv2D and Embedding models runs on wasm. A kernel the backend already has
 * (a later tfjs) is left alone, which also makes registering twice a no-op.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2dBackpropFilterConfig } from './conv2d-backprop-filter.js';
import { depthwiseConv2dBackpropFilterConfig } from './depthwise-conv2d-backprop-filter.js';
import { depthwiseConv2dBackpropInputConfig } from './depthwise-conv2d-backprop-input.js';
import { unsortedSegmentSumConfig } from './unsorted-segment-sum.js';

export const wasmGradientKernels: readonly tf.KernelConfig[] = [
  conv2dBackpropFilterConfig,
  depthwiseConv2dBackpropFilterConfig,
  depthwiseConv2dBackpropInputConfig,
  unsortedSegmentSumConfig,
];

/** Registers the kernels missing from the wasm backend; returns the names it registered. */
export function registerWasmGradientKernels(): string[] {
  const registered: string[] = [];
  for (const config of wasmGradientKernels) {
    if (tf.getKernel(config.kernelName, config.backendName) != null) continue;
    tf.registerKernel(config);
    registered.push(config.kernelName);
  }
  return registered;
}

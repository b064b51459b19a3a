/**
 * Trained activation quantizers (docs/methods.md, Quantization-aware training): DoReFa's fixed [0, 1] grid (./dorefa.ts)
 * or PACT's learned clipping level α (./pact.ts), inserted as layers into a copy of the model that QAT
 * trains, so the network learns around quantized activations.
 *
 * Where: after every layer whose output is a ReLU (a layer with `activation: "relu"`, a ReLU layer, or an
 * Activation("relu") layer; called once, not inside a nested model). Both quantizers are defined on
 * non-negative inputs — DoReFa clips to [0, 1], PACT replaces the ReLU's unbounded range by [0, α] — so a
 * signed tensor (a linear Dense or BatchNormalization output) is left alone, as is a softmax output.
 *
 * After training, each quantizer is the affine grid min 0, max α (DoReFa: 1), scale α/(2^k − 1), zero point
 * 0: exactly what the FakeQuant layer (../fake-quant-layer.ts) computes, so `learnedActivationRanges`
 * hands the job ranges it can simulate on the exported model without calibrating, and reports α per layer.
 */
import * as tf from '@tensorflow/tfjs';
import { DoReFaActivation } from './dorefa.js';
import { PactActivation, pactPenalty } from './pact.js';

export type ActivationQuantizer = 'dorefa' | 'pact';

export interface TrainedActivationOptions {
  quantizer: ActivationQuantizer;
  bits: number;
  /** 32: float gradients. */
  gradientBits?: number;
  /** PACT's α before training; default 6. */
  alpha?: number;
  /** PACT's L2 penalty λ on α; default 1e-4. */
  alphaDecay?: number;
  seed?: number;
}

export interface LearnedActivationRange {
  /** The layer whose output is quantized (a layer of the exported model). */
  layer: string;
  quantizer: ActivationQuantizer;
  bits: number;
  gradientBits: number;
  /** The clipping level: learned (PACT) or 1 (DoReFa). */
  alpha: number;
  min: number;
  max: number;
  scale: number;
  zeroPoint: number;
}

export interface TrainedActivations {
  /** A copy of the model (weights copied) with a quantizer after each ReLU output; the caller disposes it. */
  model: tf.LayersModel;
  /** layer → its quantizer layer's name in `model`. */
  inserted: Map<string, string>;
  /** PACT's penalty (undefined for DoReFa), for QatStepOptions.regularizer. */
  regularizer?: () => tf.Scalar;
}

type Json = Record<string, unknown>;
type TensorRef = [string, number, number, ...unknown[]];

function isTensorRef(value: unknown): value is TensorRef {
  return Array.isArray(value) && typeof value[0] === 'string' && typeof value[1] === 'number';
}

/** Names of the layers whose output is a ReLU (module comment). */
export function reluOutputLayers(model: tf.LayersModel): string[] {
  return model.layers
    .filter((layer) => {
      if (layer instanceof tf.LayersModel || layer.inboundNodes.length !== 1 || Array.isArray(layer.output))
        return false;
      if (layer.getClassName() === 'ReLU') return true;
      return (layer.getConfig() as { activation?: unknown }).activation === 'relu';
    })
    .map((layer) => layer.name);
}

export async function withTrainedActivationQuantizers(
  model: tf.LayersModel,
  options: TrainedActivationOptions,
): Promise<TrainedActivations> {
  const topology = model.toJSON(null, false) as Json;
  const config = topology.config as Json;
  const layers = config.layers as Json[];
  const sequential = topology.class_name === 'Sequential';
  const names = new Set(layers.map((layer) => String((layer.config as Json).name)));
  const inserted = new Map<string, string>();
  const className = options.quantizer === 'pact' ? PactActivation.className : DoReFaActivation.className;
  for (const [n, target] of reluOutputLayers(model).entries()) {
    const index = layers.findIndex((layer) => (layer.config as Json).name === target);
    let name = `${target}_${options.quantizer}`;
    for (let k = 1; names.has(name); k++) name = `${target}_${options.quantizer}_${k}`;
    names.add(name);
    inserted.set(target, name);
    // Keys in Python style: tfjs turns them back into the layer's camelCase args on loading.
    const layerConfig: Json = {
      name,
      bits: options.bits,
      gradient_bits: options.gradientBits ?? 32,
      seed: (options.seed ?? 0) + n,
    };
    if (options.quantizer === 'pact') layerConfig.alpha = options.alpha ?? 6;
    const quantizer: Json = { class_name: className, config: layerConfig };
    if (!sequential) {
      const source = (ref: TensorRef): TensorRef => (ref[0] === target ? [name, 0, 0, ...ref.slice(3)] : ref);
      for (const other of layers)
        other.inbound_nodes = (other.inbound_nodes as TensorRef[][]).map((node) => node.map(source));
      config.output_layers = (config.output_layers as unknown[]).map((ref) => (isTensorRef(ref) ? source(ref) : ref));
      quantizer.name = name;
      quantizer.inbound_nodes = [[[target, 0, 0, {}]]];
    }
    layers.splice(index + 1, 0, quantizer);
  }
  const trained = await tf.models.modelFromJSON({ modelTopology: topology as tf.serialization.ConfigDict });
  for (const layer of model.layers) {
    if (layer.weights.length > 0) trained.getLayer(layer.name).setWeights(layer.getWeights());
  }
  const pact = [...inserted.values()]
    .map((name) => trained.getLayer(name))
    .filter((l): l is PactActivation => l instanceof PactActivation);
  const decay = options.alphaDecay ?? 1e-4;
  const regularizer = pact.length > 0 && decay > 0 ? () => pactPenalty(pact, decay) : undefined;
  return { model: trained, inserted, regularizer };
}

/** Each inserted quantizer as the affine grid of the module comment, with its α now. */
export function learnedActivationRanges(trained: TrainedActivations): LearnedActivationRange[] {
  return [...trained.inserted].map(([layer, name]) => {
    const quantizer = trained.model.getLayer(name) as PactActivation | DoReFaActivation;
    const alpha = quantizer instanceof PactActivation ? quantizer.alpha.dataSync()[0] : 1;
    return {
      layer,
      quantizer: quantizer instanceof PactActivation ? 'pact' : 'dorefa',
      bits: quantizer.bits,
      gradientBits: quantizer.gradientBits,
      alpha,
      min: 0,
      max: alpha,
      scale: alpha / (2 ** quantizer.bits - 1),
      zeroPoint: 0,
    };
  });
}

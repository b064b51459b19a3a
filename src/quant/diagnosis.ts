/**
 * Layer-by-layer diagnosis (docs/report.md, `diagnosis`): where a quantized model departs from its float
 * original, and whether the weights or the activations put it there.
 *
 * The float model and up to three variants of it — weights quantized (activations float), activations
 * fake-quantized (weights float), both — run on the same samples. At every diagnosed layer, per variant:
 * - `sqnrDb`: 10·log10(Σ r² / Σ (v − r)²) at the layer's output, r the float model's tensor, v the variant's:
 *   what the quantized model computes there, every upstream error included;
 * - `localSqnrDb`: the same with v the layer alone as the variant has it (its weights, its output's
 *   fake-quant) fed the float model's inputs to it: the error this layer adds by itself. Errors from upstream
 *   do not hide it, and a layer downstream of a bad one is not blamed for what it was fed (noise-to-signal
 *   ratios do not simply add from layer to layer: a layer amplifies the noise in the channels it weights
 *   most, which need not be where the signal is).
 * The layers are ranked by their local SQNR with both quantized (weights alone when activations are not),
 * and suggestFix says what `auto` would do about each.
 *
 * Which tensors a layer reads and writes in each model, and the layer alone, are a LayerProbe: layersProbe
 * for a tf.LayersModel (a FakeQuant layer after a layer stands for that layer's output; the layer alone is
 * Layer.apply on tensors), graphProbe for a tf.GraphModel (the `N/fake_quant` node of graph-activations.ts
 * stands for node N; the layer alone is the graph executed from its inputs' nodes). Every tensor made here
 * is disposed.
 */
import * as tf from '@tensorflow/tfjs';
import { FakeQuant } from './fake-quant-layer.js';
import { BinaryActivation } from './qat/binary-activations.js';
import type { Batch, ModelInput } from './evaluate.js';
import { EXACT_SQNR_DB } from './metrics.js';
import type { FileSet } from './model.js';

/** Where a layer's input comes from in the float model: a probed tensor (index into run()), or model input k. */
export type InputSource = { tensor: number } | { model: number };

/** The tensors one model computes for the diagnosed layers, in the order `layers` names them. */
export interface LayerProbe {
  /** Per layer: its output (an index into run()'s tensors) and its inputs. */
  points: { output: number; inputs: InputSource[] }[];
  /** The tensors for one batch; the caller disposes them. */
  run(x: ModelInput): tf.Tensor[];
  /**
   * Layer `i` alone, computed from `inputs` (in points[i].inputs order) with this model's weights and its
   * own output fake-quant: the layer's own error when the inputs are the float model's. The caller disposes it.
   */
  isolated(i: number, inputs: tf.Tensor[]): tf.Tensor;
}

/**
 * A probe over layers `names` of a layers model. A layer followed by a FakeQuant (activations.ts) or a
 * BinaryActivation (qat/binary-activations.ts, after a layer whose ReLU it took) is read after it, as its
 * consumers read it.
 */
export function layersProbe(model: tf.LayersModel, names: string[]): LayerProbe {
  const fakeQuantOf = new Map<string, tf.layers.Layer>();
  for (const layer of model.layers) {
    if (![FakeQuant.className, BinaryActivation.className].includes(layer.getClassName())) continue;
    const source = layer.inboundNodes[0]?.inboundLayers[0];
    if (source) fakeQuantOf.set(source.name, layer);
  }
  const tensors: tf.SymbolicTensor[] = [];
  const indexOf = (tensor: tf.SymbolicTensor): number => {
    const at = tensors.indexOf(tensor);
    return at >= 0 ? at : tensors.push(tensor) - 1;
  };
  const inputNames = model.inputs.map((t) => t.name);
  const layers = names.map((name) => model.getLayer(name));
  const points = layers.map((layer) => {
    const inputs = (Array.isArray(layer.input) ? layer.input : [layer.input]).map((t): InputSource => {
      if (t.sourceLayer.getClassName() !== 'InputLayer') return { tensor: indexOf(t) };
      const at = inputNames.indexOf(t.name);
      if (at < 0) throw new Error(`layer ${layer.name} reads ${t.name}, which is not an input of the model`);
      return { model: at };
    });
    const output = (fakeQuantOf.get(layer.name) ?? layer).output as tf.SymbolicTensor;
    return { inputs, output: indexOf(output) };
  });
  // A model over the same layers (no weight copies) whose outputs are the tensors to read.
  const probe = tf.model({ inputs: model.inputs, outputs: tensors });
  return {
    points,
    run: (x) => {
      const out = probe.predict(x) as tf.Tensor | tf.Tensor[];
      return Array.isArray(out) ? out : [out];
    },
    isolated: (i, inputs) =>
      tf.tidy(() => {
        const layer = layers[i];
        const y = layer.apply(inputs.length === 1 ? inputs[0] : inputs) as tf.Tensor;
        const fakeQuant = fakeQuantOf.get(layer.name);
        return fakeQuant ? (fakeQuant.apply(y) as tf.Tensor) : y;
      }),
  };
}

interface GraphNode {
  name: string;
  op: string;
  input?: string[];
}

/** The producing node of a data input ('n', 'n:0'); null for a control input or another output index. */
function producerOf(input: string): string | null {
  if (input.startsWith('^')) return null;
  const [name, index] = input.split(':');
  return index === undefined || index === '0' ? name : null;
}

/** The nodes of a graph model's model.json. */
export function graphNodes(files: FileSet): GraphNode[] {
  const bytes = files.get('model.json');
  if (!bytes) throw new Error('model.json is missing');
  const json = JSON.parse(new TextDecoder().decode(bytes)) as { modelTopology?: { node?: GraphNode[] } };
  const nodes = json.modelTopology?.node;
  if (!Array.isArray(nodes)) throw new Error('not a graph model: modelTopology has no node list');
  return nodes;
}

/**
 * The nodes a diagnosed node computes from: walking back over its data inputs through every node that is
 * not a constant, a model input or another diagnosed node, the ones where the walk stops (the fused
 * Conv → BiasAdd → Relu chain ending at the node is the layer; its inputs are the previous layers' outputs).
 */
export function graphLayerInputs(end: string, nodes: Map<string, GraphNode>, diagnosed: Set<string>): string[] {
  const found: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string): void => {
    for (const input of nodes.get(name)?.input ?? []) {
      const producer = producerOf(input);
      if (producer === null || seen.has(producer)) continue;
      seen.add(producer);
      const op = nodes.get(producer)?.op ?? 'Const';
      if (op === 'Const') continue;
      if (op === 'Placeholder' || diagnosed.has(producer)) found.push(producer);
      else visit(producer);
    }
  };
  visit(end);
  return found;
}

/**
 * A probe over nodes `names` of a graph model (`files` its model.json). A node with a fake-quant chain
 * after it (graph-activations.ts) is read at the chain's end; a layer's inputs are graphLayerInputs.
 */
export function graphProbe(model: tf.GraphModel, files: FileSet, names: string[]): LayerProbe {
  const nodes = graphNodes(files);
  const byName = new Map(nodes.map((node) => [node.name, node]));
  const fakeQuantOf = new Map<string, string>();
  for (const node of nodes) {
    const match = /^(.*)\/fake_quant(_\d+)?$/.exec(node.name);
    if (match && node.op === 'Mul' && node.input?.[0] === `${node.name}/clip`) fakeQuantOf.set(match[1], node.name);
  }
  const readAs = (name: string) => fakeQuantOf.get(name) ?? name;
  const diagnosed = new Set(names);
  const inputNames = model.inputs.map((input) => producerOf(input.name) ?? input.name);
  const tensors: string[] = [];
  const indexOf = (name: string): number => {
    const at = tensors.indexOf(name);
    return at >= 0 ? at : tensors.push(name) - 1;
  };
  const feeds: string[][] = [];
  const points = names.map((name) => {
    if (!byName.has(name)) throw new Error(`node ${name} is not in the graph`);
    const sources = graphLayerInputs(name, byName, diagnosed);
    // Fed where this model's layer reads them: after the fake-quant of the layer before, if it has one.
    feeds.push(sources.map(readAs));
    const inputs = sources.map((source): InputSource => {
      if (byName.get(source)!.op !== 'Placeholder') return { tensor: indexOf(readAs(source)) };
      const at = inputNames.indexOf(source);
      if (at < 0) throw new Error(`node ${name} reads ${source}, which is not an input of the model`);
      return { model: at };
    });
    return { inputs, output: indexOf(readAs(name)) };
  });
  return {
    points,
    run: (x) => {
      const out = model.execute(x, tensors);
      return Array.isArray(out) ? out : [out];
    },
    isolated: (i, inputs) => {
      const feed = Object.fromEntries(feeds[i].map((name, k) => [name, inputs[k]]));
      return model.execute(feed, readAs(names[i])) as tf.Tensor;
    },
  };
}

export type Variant = 'weights' | 'activations' | 'both';

/** Sums over the samples, per layer and variant: of the float output's energy, and of two departures from it. */
export interface LayerEnergy {
  signal: number;
  /** Of the variant's output: everything upstream quantized too. */
  noise: number;
  /** Of the layer alone in the variant, on the float model's inputs to it. */
  localNoise: number;
}

export interface LayerMeasurement {
  /** Per variant measured. */
  energy: Partial<Record<Variant, LayerEnergy>>;
  /** max |r| of every channel (last axis) of the float output, for how uneven its range is. */
  channelMax: Float32Array;
}

/**
 * Runs the float probe and each variant's on every batch and sums, per layer: Σ r², Σ (v − r)² of the
 * variant's output v, and Σ (l − r)² of the layer alone in the variant, l, fed the float model's inputs to
 * it. The probes name the same layers in the same order.
 */
export async function measureLayers(
  reference: LayerProbe,
  variants: Partial<Record<Variant, LayerProbe>>,
  batches: Batch[],
  signal?: AbortSignal,
): Promise<LayerMeasurement[]> {
  const kinds = (Object.keys(variants) as Variant[]).filter((k) => variants[k] !== undefined);
  const measured: LayerMeasurement[] = reference.points.map(() => ({
    energy: Object.fromEntries(kinds.map((k) => [k, { signal: 0, noise: 0, localNoise: 0 }])),
    channelMax: new Float32Array(0),
  }));
  for (const batch of batches) {
    signal?.throwIfAborted();
    const x = Array.isArray(batch.x) ? batch.x : [batch.x];
    const floats = reference.run(batch.x);
    const inputsOf = (i: number) =>
      reference.points[i].inputs.map((source) => ('model' in source ? x[source.model] : floats[source.tensor]));
    try {
      const maxima = tf.tidy(() =>
        reference.points.map((p) => {
          const r = floats[p.output];
          return r.rank < 2 ? r.abs().max().reshape([1]) : r.abs().max(r.shape.slice(0, -1).map((_, i) => i));
        }),
      );
      const values = await Promise.all(maxima.map((m) => m.data() as Promise<Float32Array>));
      tf.dispose(maxima);
      values.forEach((v, i) => {
        const previous = measured[i].channelMax;
        measured[i].channelMax = previous.length === 0 ? v : previous.map((m, c) => Math.max(m, v[c]));
      });
      for (const kind of kinds) {
        const probe = variants[kind]!;
        const outputs = probe.run(batch.x);
        const alone = reference.points.map((_, i) => probe.isolated(i, inputsOf(i)));
        try {
          // Per layer: Σ r², Σ (v − r)², Σ (l − r)²; read back in one transfer.
          const sums = tf.tidy(() =>
            tf.stack(
              reference.points.flatMap((p, i) => {
                const r = floats[p.output];
                return [
                  r.square().sum(),
                  outputs[probe.points[i].output].sub(r).square().sum(),
                  alone[i].sub(r).square().sum(),
                ];
              }),
            ),
          );
          const data = await sums.data();
          sums.dispose();
          measured.forEach((m, i) => {
            const e = m.energy[kind]!;
            e.signal += data[3 * i];
            e.noise += data[3 * i + 1];
            e.localNoise += data[3 * i + 2];
          });
        } finally {
          tf.dispose(outputs);
          tf.dispose(alone);
        }
      }
    } finally {
      tf.dispose(floats);
    }
  }
  return measured;
}

/** 10·log10(signal / noise), EXACT_SQNR_DB for no noise (as metrics.ts), −EXACT_SQNR_DB for no signal. */
export function sqnrDb(signal: number, noise: number): number {
  if (noise <= signal * 2 ** -48) return EXACT_SQNR_DB;
  if (signal <= noise * 2 ** -48) return -EXACT_SQNR_DB;
  return 10 * Math.log10(signal / noise);
}

/** max / median of positive channel ranges: 1 when they are all alike. */
export function rangeSpread(ranges: ArrayLike<number>): number {
  const positive = Array.from(ranges)
    .filter((r) => r > 0)
    .sort((a, b) => a - b);
  if (positive.length < 2) return 1;
  const mid = positive.length >> 1;
  const median = positive.length % 2 === 1 ? positive[mid] : (positive[mid - 1] + positive[mid]) / 2;
  return positive[positive.length - 1] / median;
}

export type Suggestion = 'none' | 'skip' | 'more-bits' | 'equalize';

/** What is known about one layer's error, for suggestFix. */
export interface FixEvidence {
  /** The layer's own SQNR from its quantized weights (activations float); undefined: no weights quantized. */
  weightsDb?: number;
  /** From its fake-quantized output (weights float); undefined: activations not quantized. */
  activationsDb?: number;
  /** Its quantized kernel: the method's bits, per-channel or not, max/median of its output-channel ranges. */
  weights?: { bits: number; perChannel: boolean; spread: number };
  /** The activations' bits and the max/median of the layer's output-channel ranges. */
  activations?: { bits: number; spread: number };
}

/** A layer whose own error stays below this noise-to-signal level (1/1000 of the signal's energy) is left as it is. */
export const HEALTHY_DB = 30;
/** Channel ranges this uneven (max / median) waste a shared grid: equalization gives them one range. */
export const UNEVEN_SPREAD = 4;
/** At and above this many bits, more bits are not the remedy: the layer stays in float. */
export const ENOUGH_BITS = 8;

/**
 * The remedy `auto` takes for a layer whose own error is too large, from the error's source (the lower of its
 * weight and activation SQNRs):
 * - healthy (both ≥ HEALTHY_DB): none;
 * - channel ranges that differ UNEVEN_SPREAD× or more under one shared grid (a per-tensor kernel, or the
 *   layer's output, which activations always quantize per tensor): equalize (ptq.equalize, Nagel et al. 2019);
 * - fewer than ENOUGH_BITS bits: more bits (about 6 dB each);
 * - otherwise the layer cannot be quantized that way: skip it (keep it in float).
 */
export function suggestFix(evidence: FixEvidence): { suggestion: Suggestion; reason: string } {
  const w = evidence.weightsDb ?? Infinity;
  const a = evidence.activationsDb ?? Infinity;
  const db = (x: number) => `${x.toFixed(1)} dB`;
  if (Math.min(w, a) >= HEALTHY_DB) {
    return { suggestion: 'none', reason: `its own error is below the ${HEALTHY_DB} dB noise level` };
  }
  if (w <= a && evidence.weights) {
    const { bits, perChannel, spread } = evidence.weights;
    if (!perChannel && spread >= UNEVEN_SPREAD) {
      return {
        suggestion: 'equalize',
        reason:
          `weight-dominated (${db(w)}): one grid spans output channels whose ranges differ ${spread.toFixed(1)}× ` +
          '(equalization or per-channel scales give each channel its own range)',
      };
    }
    if (bits < ENOUGH_BITS) {
      return {
        suggestion: 'more-bits',
        reason: `weight-dominated (${db(w)} with ${bits}-bit weights): each extra bit gains about 6 dB`,
      };
    }
    return {
      suggestion: 'skip',
      reason: `weight-dominated (${db(w)}) even with ${bits}-bit weights: keep its weights in float`,
    };
  }
  const { bits, spread } = evidence.activations ?? { bits: ENOUGH_BITS, spread: 1 };
  if (spread >= UNEVEN_SPREAD) {
    return {
      suggestion: 'equalize',
      reason: `activation-dominated (${db(a)}): its output channels' ranges differ ${spread.toFixed(1)}× under one grid`,
    };
  }
  if (bits < ENOUGH_BITS) {
    return {
      suggestion: 'more-bits',
      reason: `activation-dominated (${db(a)} with ${bits}-bit activations): each extra bit gains about 6 dB`,
    };
  }
  return {
    suggestion: 'skip',
    reason: `activation-dominated (${db(a)}) even with ${bits}-bit activations: its output range is too wide for the grid; keep it in float`,
  };
}

/**
 * Binary and ternary activations (`activations.quantizer` "sign" / "ternary"; Guo 2018 §3.2), in place of
 * every ReLU of a layers model:
 *
 * - sign (1 bit; BNN, Courbariaux, Hubara et al. 2016, with XNOR-Net's input scaling, Rastegari et al. 2016):
 *     x̂ = α · sign(x),   α = ‖x‖₁ / n over the n channels at each position of each sample (XNOR-Net's A, the
 *     minimiser of ‖x − α·sign(x)‖² there, as for binary weights), over the whole sample for a flat tensor;
 *     sign(0) = +1. A per-sample α instead loses the spatial magnitude: 9 points more on the tests' CNN;
 * - ternary (2 bits; TWN's rule, Li & Liu 2016, over the same groups):
 *     Δ = 0.7 · mean|x|,  t = sign(x)·[|x| > Δ],  x̂ = α · t,  α = mean of |x| over |x| > Δ.
 *
 * The binarizer sees the ReLU's input (the pre-activation), as BNN's sign replaces the nonlinearity: a ReLU
 * output is never negative, so its sign would carry no information. Backward, the clipped straight-through
 * estimator of α·clip(x/α, −1, 1): ∂x̂/∂x = 1 where |x| ≤ α, 0 outside (BNN's hardtanh STE, scaled to the
 * layer's own α so it fits pre-activations of any scale); α is taken as a constant of the step.
 *
 * Used by QAT (the network learns around the binarizers) and, after PTQ or QAT, to simulate the integer
 * target on the exported weights: `withBinaryActivations` returns a copy of the model with its ReLUs
 * replaced. The exported `model/` keeps its ReLUs: stock TF.js layers have no sign activation.
 */
import * as tf from '@tensorflow/tfjs';

export type BinaryActivationMode = 'sign' | 'ternary';

/** What the report says was simulated. */
export function describeBinaryActivations(mode: BinaryActivationMode, layers: number): string {
  return mode === 'sign'
    ? `${layers} ReLUs replaced by binary activations α·sign(x), α = mean|x| over the channels at each position (BNN / XNOR-Net)`
    : `${layers} ReLUs replaced by ternary activations α·t, t = sign(x)·[|x| > 0.7·mean|x|] at each position (TWN)`;
}

/** x̂ and α (per position over the channels; per sample for a rank-2 tensor), values only. */
export function binarize(x: tf.Tensor, mode: BinaryActivationMode): { value: tf.Tensor; alpha: tf.Tensor } {
  return tf.tidy(() => {
    // XNOR-Net's A: the mean magnitude over the channels at each position (per sample for a flat tensor).
    const axes = x.rank > 2 ? [x.rank - 1] : Array.from({ length: x.rank - 1 }, (_, i) => i + 1);
    const magnitude = tf.abs(x);
    const sign = tf.sub(tf.mul(tf.cast(tf.greaterEqual(x, 0), 'float32'), 2), 1);
    if (mode === 'sign') {
      const alpha = axes.length > 0 ? tf.mean(magnitude, axes, true) : magnitude;
      return { value: tf.mul(sign, alpha), alpha };
    }
    const threshold = tf.mul(axes.length > 0 ? tf.mean(magnitude, axes, true) : magnitude, 0.7);
    const kept = tf.cast(tf.greater(magnitude, threshold), 'float32');
    const keptCount = axes.length > 0 ? tf.sum(kept, axes, true) : kept;
    const keptSum = axes.length > 0 ? tf.sum(tf.mul(magnitude, kept), axes, true) : tf.mul(magnitude, kept);
    const alpha = tf.div(keptSum, tf.maximum(keptCount, 1));
    return { value: tf.mul(tf.mul(sign, kept), alpha), alpha };
  });
}

export interface BinaryActivationArgs {
  mode: BinaryActivationMode;
  name?: string;
}

export class BinaryActivation extends tf.layers.Layer {
  static className = 'BinaryActivation';
  readonly mode: BinaryActivationMode;

  constructor(args: BinaryActivationArgs) {
    super({ name: args.name, trainable: false });
    if (args.mode !== 'sign' && args.mode !== 'ternary') throw new RangeError(`unknown binary mode ${args.mode}`);
    this.mode = args.mode;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const quantize = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
      const { value, alpha } = binarize(input, this.mode);
      save([input, alpha]);
      return {
        value,
        gradFunc: (gradient: tf.Tensor, saved: tf.Tensor[]) => {
          const [kept, scale] = saved;
          return tf.tidy(() => tf.mul(gradient, tf.cast(tf.lessEqual(tf.abs(kept), scale), 'float32')));
        },
      };
    });
    return quantize(x);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), mode: this.mode };
  }
}

tf.serialization.registerClass(BinaryActivation);

type Json = Record<string, unknown>;
type TensorRef = [string, number, number, ...unknown[]];

function isTensorRef(value: unknown): value is TensorRef {
  return Array.isArray(value) && typeof value[0] === 'string' && typeof value[1] === 'number';
}

export interface BinarizedModel {
  /** A copy of the model (weights copied) with every ReLU replaced; the caller disposes it. */
  model: tf.LayersModel;
  /** The layers whose ReLU became a binarizer. */
  layers: string[];
}

/**
 * A copy of `model` with a BinaryActivation in place of each ReLU: a ReLU layer (ReLU6 included) becomes one
 * (same name, same inputs); a layer with `activation: "relu"` or `"relu6"` (Dense, Conv, Activation) turns
 * linear and gets one after it, so the binarizer sees the pre-activation.
 * Layers called more than once and nested models are left alone.
 */
export async function withBinaryActivations(
  model: tf.LayersModel,
  mode: BinaryActivationMode,
): Promise<BinarizedModel> {
  const topology = model.toJSON(null, false) as Json;
  const config = topology.config as Json;
  const layers = config.layers as Json[];
  const sequential = topology.class_name === 'Sequential';
  const names = new Set(layers.map((layer) => String((layer.config as Json).name)));
  const replaced: string[] = [];
  for (const live of model.layers) {
    if (live instanceof tf.LayersModel || live.inboundNodes.length !== 1 || Array.isArray(live.output)) continue;
    const index = layers.findIndex((layer) => (layer.config as Json).name === live.name);
    const entry = layers[index];
    const layerConfig = entry.config as Json;
    if (entry.class_name === 'ReLU') {
      entry.class_name = BinaryActivation.className;
      entry.config = { name: live.name, trainable: false, mode };
      replaced.push(live.name);
      continue;
    }
    if (layerConfig.activation !== 'relu' && layerConfig.activation !== 'relu6') continue;
    layerConfig.activation = 'linear';
    let name = `${live.name}_${mode}`;
    for (let k = 1; names.has(name); k++) name = `${live.name}_${mode}_${k}`;
    names.add(name);
    const binarizer: Json = { class_name: BinaryActivation.className, config: { name, trainable: false, mode } };
    if (!sequential) {
      const source = (ref: TensorRef): TensorRef => (ref[0] === live.name ? [name, 0, 0, ...ref.slice(3)] : ref);
      for (const other of layers)
        other.inbound_nodes = (other.inbound_nodes as TensorRef[][]).map((node) => node.map(source));
      config.output_layers = (config.output_layers as unknown[]).map((ref) => (isTensorRef(ref) ? source(ref) : ref));
      binarizer.name = name;
      binarizer.inbound_nodes = [[[live.name, 0, 0, {}]]];
    }
    layers.splice(index + 1, 0, binarizer);
    replaced.push(live.name);
  }
  const binarized = await tf.models.modelFromJSON({ modelTopology: topology as tf.serialization.ConfigDict });
  for (const layer of model.layers) {
    if (layer.weights.length > 0) binarized.getLayer(layer.name).setWeights(layer.getWeights());
  }
  return { model: binarized, layers: replaced };
}

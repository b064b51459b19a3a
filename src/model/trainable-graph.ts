/**
 * A tf.GraphModel made trainable for quantization-aware training (quant/qat/train.ts's TrainableModel):
 * each float32 weight becomes a tf.Variable that the graph reads in its place, so the gradient of a loss on
 * `model.execute(x)` reaches the weights (tfjs-converter runs a graph with tfjs-core ops, which the tape
 * records). The graph itself is unchanged: an inference graph, so batch-norm statistics stay as converted.
 *
 * Batch-norm moving means and variances (inputs 3 and 4 of FusedBatchNorm*) stay constants: trained by
 * gradient they could turn negative, and in Keras too they are not trainable.
 *
 * GraphModel has no public way to substitute its weights; its executor's `weightMap` accessor (tfjs-converter
 * 4.x) is the one place they live. It is checked when the wrapper is made, and `dispose` puts the original
 * tensors back, so the GraphModel disposes what it loaded.
 */
import * as tf from '@tensorflow/tfjs';
import { ModelError } from './errors.js';
import type { TrainableModel, TrainableWeight } from '../quant/qat/train.js';

type WeightMap = Record<string, tf.Tensor[]>;

interface GraphNodeJson {
  name: string;
  op: string;
  input?: string[];
}

function executorOf(model: tf.GraphModel): { weightMap: WeightMap } {
  const executor = (model as unknown as { executor?: { weightMap?: WeightMap } }).executor;
  if (!executor?.weightMap)
    throw new Error('this tfjs-converter keeps no executor.weightMap: QAT of a graph model needs tfjs 4.x');
  return executor as { weightMap: WeightMap };
}

/** The constants a FusedBatchNorm reads as its moving mean and variance. */
function batchNormStatistics(modelJson: Record<string, unknown>): Set<string> {
  const nodes = ((modelJson.modelTopology as { node?: GraphNodeJson[] } | undefined)?.node ?? []) as GraphNodeJson[];
  return new Set(
    nodes
      .filter((node) => node.op.startsWith('FusedBatchNorm'))
      .flatMap((node) => (node.input ?? []).slice(3, 5).map((input) => input.split(':')[0])),
  );
}

/** Whether the graph's first output is a Softmax (through any Identity nodes). */
function outputIsSoftmax(model: tf.GraphModel, modelJson: Record<string, unknown>): boolean {
  const nodes = ((modelJson.modelTopology as { node?: GraphNodeJson[] } | undefined)?.node ?? []) as GraphNodeJson[];
  const byName = new Map(nodes.map((node) => [node.name, node]));
  let node = byName.get(model.outputNodes[0]?.split(':')[0] ?? '');
  while (node?.op === 'Identity' && node.input?.[0]) node = byName.get(node.input[0].split(':')[0]);
  return node?.op === 'Softmax';
}

export class TrainableGraph implements TrainableModel {
  readonly weights: TrainableWeight[];
  readonly trainableWeights: TrainableWeight[];
  readonly outputs: readonly unknown[];
  readonly outputIsSoftmax: boolean;
  private readonly originals = new Map<string, tf.Tensor[]>();
  private readonly variables: tf.Variable[] = [];

  constructor(
    private readonly model: tf.GraphModel,
    modelJson: Record<string, unknown>,
  ) {
    const executor = executorOf(model);
    const weightMap = executor.weightMap;
    const statistics = batchNormStatistics(modelJson);
    this.weights = Object.entries(weightMap).flatMap(([name, tensors]) => {
      const [tensor] = tensors;
      if (tensors.length !== 1 || tensor.dtype !== 'float32' || statistics.has(name)) return [];
      const variable = tf.variable(tensor, true);
      this.originals.set(name, tensors);
      this.variables.push(variable);
      weightMap[name] = [variable];
      return [{ originalName: name, dtype: 'float32', shape: variable.shape, read: () => variable }];
    });
    executor.weightMap = weightMap;
    this.trainableWeights = this.weights;
    this.outputs = model.outputs;
    this.outputIsSoftmax = outputIsSoftmax(model, modelJson);
  }

  apply(x: tf.Tensor): tf.Tensor {
    const output = this.model.execute(x);
    if (Array.isArray(output))
      throw new ModelError('bad-topology', `QAT trains single-output models; this graph has ${output.length} outputs`);
    return output;
  }

  /** Puts the loaded tensors back into the graph and disposes the variables. */
  dispose(): void {
    const executor = executorOf(this.model);
    const weightMap = executor.weightMap;
    for (const [name, tensors] of this.originals) weightMap[name] = tensors;
    executor.weightMap = weightMap;
    tf.dispose(this.variables);
  }
}

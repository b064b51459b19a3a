/**
 * Activation quantization simulated on a graph model (a tf.GraphModel from a converted SavedModel): the
 * graph counterpart of activations.ts, with the same ranges (ActivationObserver, rangeFromObserver) and
 * the same affine grid, so a graph model's `integer` metrics mean what a layers model's do.
 *
 * Which tensors: the outputs of the ops that compute new values (convolutions, matrix products, bias adds,
 * activations other than softmax, batch norms, pooling, element-wise merges, concatenation), as an integer
 * runtime stores them between ops. An output whose every consumer is an op such runtimes fuse into its
 * producer (BiasAdd, Relu, Relu6, LeakyRelu, Elu, FusedBatchNorm) is not stored, so it is not quantized
 * either: Conv2D → BiasAdd → Relu is quantized once, after the Relu. Outputs that are not float32 (shapes,
 * indices) are left alone.
 *
 * Simulation rewrites the graph: after each quantized node N come the ops
 *   N/fake_quant/div = RealDiv(N, s), N/fake_quant/round = Round(·),
 *   N/fake_quant/clip = ClipByValue(·, −z, 2^b − 1 − z), N/fake_quant = Mul(·, s)
 * — FakeQuant's clamp(round(x/s) + z, 0, 2^b − 1) − z, times s — and every consumer of N (and the
 * signature's outputs) reads N/fake_quant instead. The three constants of each are added as weights.
 */
import * as tf from '@tensorflow/tfjs';
import type { FileSet } from './model.js';
import { ActivationObserver, rangeFromObserver, type ActivationOptions, type ActivationRange } from './activations.js';
import type { BatchSource } from './evaluate.js';

interface GraphNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, unknown>;
}

interface GraphModelJson {
  modelTopology: { node: GraphNode[] };
  weightsManifest: { paths: string[]; weights: { name: string; shape: number[]; dtype: string }[] }[];
  signature?: { outputs?: Record<string, { name: string }> };
  [key: string]: unknown;
}

const QUANTIZED_OPS: ReadonlySet<string> = new Set([
  'Conv2D',
  'Conv3D',
  'DepthwiseConv2dNative',
  'Conv2DBackpropInput',
  'MatMul',
  'BatchMatMul',
  'BatchMatMulV2',
  '_FusedConv2D',
  '_FusedMatMul',
  'FusedDepthwiseConv2dNative',
  'BiasAdd',
  'Relu',
  'Relu6',
  'LeakyRelu',
  'Elu',
  'Selu',
  'Prelu',
  'FusedBatchNorm',
  'FusedBatchNormV2',
  'FusedBatchNormV3',
  'MaxPool',
  'AvgPool',
  'MaxPool3D',
  'AvgPool3D',
  'Mean',
  'Add',
  'AddV2',
  'AddN',
  'Sub',
  'Mul',
  'Maximum',
  'Minimum',
  'ConcatV2',
]);

/** Ops an integer runtime folds into the op that produces their input. */
const FUSED_INTO_PRODUCER: ReadonlySet<string> = new Set([
  'BiasAdd',
  'Relu',
  'Relu6',
  'LeakyRelu',
  'Elu',
  'FusedBatchNorm',
  'FusedBatchNormV2',
  'FusedBatchNormV3',
]);

const FAKE_QUANT = '/fake_quant';

/** The node a data input names ('n', 'n:0'); null for a control input ('^n') or another output ('n:1'). */
function producerOf(input: string): string | null {
  if (input.startsWith('^')) return null;
  const [name, index] = input.split(':');
  return index === undefined || index === '0' ? name : null;
}

function readModelJson(files: FileSet): GraphModelJson {
  const bytes = files.get('model.json');
  if (!bytes) throw new Error('model.json is missing');
  const json = JSON.parse(new TextDecoder().decode(bytes)) as GraphModelJson;
  if (!Array.isArray(json.modelTopology?.node)) throw new Error('not a graph model: modelTopology has no node list');
  return json;
}

/** The nodes whose outputs are calibrated and fake-quantised, in graph order (see the module comment). */
export function activationNodes(files: FileSet): string[] {
  const nodes = readModelJson(files).modelTopology.node;
  const consumers = new Map<string, string[]>();
  for (const node of nodes) {
    for (const input of node.input ?? []) {
      const producer = producerOf(input);
      if (producer !== null) consumers.set(producer, [...(consumers.get(producer) ?? []), node.op]);
    }
  }
  return nodes
    .filter((node) => {
      if (!QUANTIZED_OPS.has(node.op)) return false;
      const ops = consumers.get(node.name) ?? [];
      return ops.length === 0 || !ops.every((op) => FUSED_INTO_PRODUCER.has(op));
    })
    .map((node) => node.name);
}

/** Ranges for the float32 outputs of activationNodes, observed over `batches` (their x only). */
export async function calibrateGraphActivations(
  model: tf.GraphModel,
  files: FileSet,
  batches: BatchSource,
  options: ActivationOptions,
): Promise<ActivationRange[]> {
  const names = activationNodes(files);
  if (names.length === 0) return [];
  const observers = names.map(() => new ActivationObserver());
  const floats = names.map(() => true);
  for await (const batch of batches) {
    options.signal?.throwIfAborted();
    const outputs = model.execute(batch.x, names) as tf.Tensor[];
    try {
      for (let i = 0; i < names.length; i++) {
        if (outputs[i].dtype !== 'float32') floats[i] = false;
        else observers[i].observe(await outputs[i].data());
      }
    } finally {
      tf.dispose(outputs);
    }
  }
  return names.flatMap((name, i) => (floats[i] ? [rangeFromObserver(name, observers[i], options)] : []));
}

/**
 * `files` (a graph model) with fake-quant ops after each node `ranges` names; load it with loadRunnable.
 * The constants go to a shard of their own, `fake-quant.bin`.
 */
export function withFakeQuantGraphActivations(files: FileSet, ranges: ActivationRange[]): FileSet {
  if (ranges.length === 0) return files;
  const json = readModelJson(files);
  const nodes = json.modelTopology.node;
  const known = new Set(nodes.map((node) => node.name));
  const renamed = new Map<string, string>();
  const added: GraphNode[] = [];
  const constants: number[] = [];
  const weights: { name: string; shape: number[]; dtype: string }[] = [];
  const float = { type: 'DT_FLOAT' };
  const constant = (name: string, value: number) => {
    constants.push(value);
    weights.push({ name, shape: [], dtype: 'float32' });
    added.push({
      name,
      op: 'Const',
      attr: { value: { tensor: { dtype: 'DT_FLOAT', tensorShape: {} } }, dtype: float },
    });
    return name;
  };
  for (const range of ranges) {
    const node = range.layer;
    if (!known.has(node)) throw new Error(`activation range names node ${node}, which the graph does not have`);
    // A graph may already hold a node of that name (one exported with our suffix, say): take the next free one.
    const taken = (at: string) =>
      ['', '/scale', '/low', '/high', '/div', '/round', '/clip'].some((s) => known.has(at + s));
    let at = `${node}${FAKE_QUANT}`;
    for (let n = 1; taken(at); n++) at = `${node}${FAKE_QUANT}_${n}`;
    const qmax = 2 ** range.bits - 1;
    const scale = constant(`${at}/scale`, range.scale);
    const low = constant(`${at}/low`, -range.zeroPoint);
    const high = constant(`${at}/high`, qmax - range.zeroPoint);
    added.push(
      { name: `${at}/div`, op: 'RealDiv', input: [node, scale], attr: { T: float } },
      { name: `${at}/round`, op: 'Round', input: [`${at}/div`], attr: { T: float } },
      { name: `${at}/clip`, op: 'ClipByValue', input: [`${at}/round`, low, high], attr: { T: float } },
      { name: at, op: 'Mul', input: [`${at}/clip`, scale], attr: { T: float } },
    );
    renamed.set(node, at);
  }
  const rewire = (input: string) => {
    const producer = producerOf(input);
    return producer !== null && renamed.has(producer) ? renamed.get(producer)! : input;
  };
  for (const node of nodes) if (node.input) node.input = node.input.map(rewire);
  for (const output of Object.values(json.signature?.outputs ?? {})) {
    const producer = producerOf(output.name);
    if (producer !== null && renamed.has(producer)) output.name = `${renamed.get(producer)}:0`;
  }
  nodes.push(...added);
  const shard = 'fake-quant.bin';
  json.weightsManifest = [...json.weightsManifest, { paths: [shard], weights }];
  const out = new Map(files);
  out.set('model.json', new TextEncoder().encode(JSON.stringify(json)));
  out.set(shard, new Uint8Array(new Float32Array(constants).buffer));
  return out;
}

/**
 * `node dist/bench/equalization.js`, issue 11's side-by-side table: on the test networks, 8-bit affine
 * per-tensor (plain BatchNorm fold), per-tensor with ptq.equalize (the BatchNorm kept as the per-channel
 * scale), and per-channel (plain fold), each as the stock `model/` artifact loaded back with stock tfjs:
 * output cosine vs the float model on seeded inputs, and model/ weight bytes ÷ the float32 upload's.
 */
import * as tf from '@tensorflow/tfjs';
import { parseJobSpec } from '../src/jobs/spec.js';
import { selectBackend } from '../src/model/backend.js';
import { loadRunnable, type RunnableModel } from '../src/model/load.js';
import { readModel } from '../src/model/read.js';
import type { FileSet } from '../src/model/types.js';
import { runJob } from '../src/pipeline/run.js';
import { tensorError } from '../src/quant/metrics.js';
import {
  buildDepthwiseGraphModel,
  buildLayersModel,
  buildMobileNetLikeModel,
  depthwiseGraphInput,
  layersInput,
  mobileNetInput,
  saveLayersModel,
} from '../test/fixtures/models.js';
import { buildSmallCnn } from '../test/fixtures/tasks.js';

const SAMPLES = 64;

interface Network {
  name: string;
  files: FileSet;
  input: () => tf.Tensor;
}

const configs: { label: string; spec: Record<string, unknown> }[] = [
  { label: 'per-tensor', spec: { method: { name: 'affine', bits: 8 }, ptq: { equalize: false } } },
  { label: 'per-tensor + equalize', spec: { method: { name: 'affine', bits: 8 }, ptq: { equalize: true } } },
  {
    label: 'per-channel',
    spec: { method: { name: 'affine', bits: 8, granularity: 'per-channel' }, ptq: { equalize: false } },
  },
];

function shardBytes(files: FileSet): number {
  return [...files].filter(([path]) => path.endsWith('.bin')).reduce((sum, [, bytes]) => sum + bytes.byteLength, 0);
}

function modelFiles(files: FileSet): FileSet {
  return new Map(
    [...files].filter(([path]) => path.startsWith('model/')).map(([path, bytes]) => [path.slice(6), bytes]),
  );
}

function run(model: RunnableModel, input: tf.Tensor): Float32Array {
  const output = (model instanceof tf.GraphModel ? model.execute(input) : model.predict(input)) as tf.Tensor;
  const values = output.dataSync() as Float32Array;
  output.dispose();
  return values;
}

async function networks(): Promise<Network[]> {
  const cnn = buildSmallCnn([12, 12, 1], 10, 1);
  const cnnFiles = await saveLayersModel(cnn);
  cnn.dispose();
  return [
    { name: 'MobileNetV2-shaped', files: await buildMobileNetLikeModel(), input: () => mobileNetInput(SAMPLES) },
    { name: 'depthwise graph', files: buildDepthwiseGraphModel(), input: () => depthwiseGraphInput(SAMPLES) },
    {
      name: 'small CNN',
      files: cnnFiles,
      input: () => tf.randomUniform([SAMPLES, 12, 12, 1], 0, 1, 'float32', 5),
    },
    { name: 'layers fixture', files: await buildLayersModel(), input: () => layersInput(SAMPLES) },
  ];
}

async function main(): Promise<void> {
  const backend = await selectBackend('auto');
  const rows: string[][] = [['network', ...configs.map((c) => `${c.label}: cosine, bytes ÷ f32`)]];
  for (const network of await networks()) {
    const float = await loadRunnable(network.files);
    const input = network.input();
    const reference = run(float, input);
    const row = [network.name];
    for (const config of configs) {
      const { files } = await runJob(readModel(network.files), parseJobSpec(config.spec), {}, { backend });
      const stock = await loadRunnable(modelFiles(files));
      const { cosine } = tensorError(reference, run(stock, input));
      stock.dispose();
      row.push(`${cosine.toFixed(4)}, ${(shardBytes(modelFiles(files)) / shardBytes(network.files)).toFixed(3)}`);
    }
    rows.push(row);
    input.dispose();
    float.dispose();
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(`8-bit affine on ${backend}: stock model/ output cosine vs float, model/ bytes ÷ float32 upload`);
  for (const row of rows) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join('  '));
}

await main();

/**
 * `node dist/bench/qat.js`: the cost of quantization-aware training (issue 4, "Performance"): one QAT step
 * (binary per-channel on every kernel, identity and clipped STE) ÷ one plain training step of the same
 * model on the same backend, target ≤ 1.5. The plain step is the same trainer with an empty plan (the
 * fair baseline: same loss, optimizer and read-back of loss and metric) and, for information, stock
 * tfjs `model.trainOnBatch`. The model is a small CNN (Conv2D → BN → depthwise → 1×1 Conv2D → Dense) at
 * batch 32 on 12×12×1 inputs. Every time is the median of several steps after warm-up steps.
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendPreference } from '../src/model/backend.js';
import { parseMethodParams } from '../src/quant/methods/index.js';
import { createQatStep, type QatPlan } from '../src/quant/qat/train.js';
import { createRng } from '../src/quant/rng.js';

const WARMUP = 5;
const STEPS = 31;
const BATCH = 32;
const CLASSES = 10;

function buildModel(): tf.LayersModel {
  const glorot = (seed: number) => tf.initializers.glorotUniform({ seed });
  return tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [12, 12, 1], filters: 12, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: glorot(1), name: 'conv1' }),
      tf.layers.batchNormalization({ name: 'bn1' }),
      tf.layers.activation({ activation: 'relu', name: 'relu1' }),
      tf.layers.maxPooling2d({ poolSize: 2, name: 'pool1' }),
      tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', activation: 'relu', depthwiseInitializer: glorot(2), name: 'depthwise' }),
      tf.layers.conv2d({ filters: 16, kernelSize: 1, activation: 'relu', kernelInitializer: glorot(3), name: 'pointwise' }),
      tf.layers.maxPooling2d({ poolSize: 2, name: 'pool2' }),
      tf.layers.flatten({ name: 'flatten' }),
      tf.layers.dense({ units: CLASSES, activation: 'softmax', kernelInitializer: glorot(4), name: 'logits' }),
    ],
  });
}

function median(times: number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Median ms of each step; the steps take turns, so drift (thermal, other load) hits them alike. */
function interleavedMedians(steps: (() => void)[]): number[] {
  for (let i = 0; i < WARMUP; i++) for (const step of steps) step();
  const times = steps.map(() => [] as number[]);
  for (let i = 0; i < STEPS; i++) {
    steps.forEach((step, k) => {
      const start = performance.now();
      step();
      times[k].push(performance.now() - start);
    });
  }
  return times.map(median);
}

async function stockMedianMs(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor): Promise<number> {
  for (let i = 0; i < WARMUP; i++) await model.trainOnBatch(x, y);
  const times: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    const start = performance.now();
    await model.trainOnBatch(x, y);
    times.push(performance.now() - start);
  }
  return median(times);
}

async function main(): Promise<void> {
  tf.enableProdMode();
  const backend = await selectBackend((process.env.QAAS_TF_BACKEND as BackendPreference | undefined) ?? 'auto');
  const rng = createRng(1);
  const x = tf.tensor4d(Float32Array.from({ length: BATCH * 144 }, () => rng.next()), [BATCH, 12, 12, 1]);
  const y = tf.tensor1d(Int32Array.from({ length: BATCH }, () => rng.int(CLASSES)), 'int32');
  const params = parseMethodParams({ name: 'binary', granularity: 'per-channel' });
  const depthwiseShape = [3, 3, 12];
  const plan: QatPlan = new Map([
    ['conv1/kernel', { params }],
    ['depthwise/depthwise_kernel', { params, shape: depthwiseShape }],
    ['pointwise/kernel', { params }],
    ['logits/kernel', { params }],
  ]);

  const configs: { plan: QatPlan; ste: 'identity' | 'clipped' }[] = [
    { plan: new Map(), ste: 'identity' },
    { plan, ste: 'identity' },
    { plan, ste: 'clipped' },
  ];
  const models = configs.map(() => buildModel());
  const trainers = configs.map((config, i) => createQatStep(models[i], { ...config, learningRate: 1e-3 }));
  const [plain, identity, clipped] = interleavedMedians(trainers.map((trainer) => () => void trainer.step(x, y)));
  trainers.forEach((trainer) => trainer.dispose());
  models.forEach((model) => model.dispose());

  const stock = buildModel();
  stock.compile({ optimizer: tf.train.adam(1e-3), loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'] });
  const yFloat = tf.cast(y, 'float32');
  const stockMs = await stockMedianMs(stock, x, yFloat);
  stock.dispose();
  tf.dispose([x, y, yFloat]);

  const ms = (value: number) => `${value.toFixed(2)} ms`;
  console.log(`backend ${backend}; batch ${BATCH}; median of ${STEPS} steps after ${WARMUP} warm-up steps`);
  console.log(`plain step (same trainer, empty plan): ${ms(plain)}; stock trainOnBatch: ${ms(stockMs)}`);
  const rows: [string, number, string][] = [
    ['QAT step, binary per-channel, identity STE ÷ plain step', identity / plain, '≤ 1.5'],
    ['QAT step, binary per-channel, clipped STE ÷ plain step', clipped / plain, '≤ 1.5'],
    ['QAT step, identity STE ÷ stock trainOnBatch', identity / stockMs, 'info'],
  ];
  for (const [what, ratio, target] of rows) console.log(`${what.padEnd(58)} ${ratio.toFixed(2).padStart(5)}  ${target}`);
}

await main();

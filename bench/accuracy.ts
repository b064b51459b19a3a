/**
 * `node dist/bench/accuracy.js`, issue 4's "Performance" ratios, measured in one run:
 *
 * Evaluation throughput of the quantized model ÷ the float model (target ≥ 0.9): the same small CNN,
 * float and through PTQ (affine 8-bit per-channel) loaded from its stock `model/` artifact, evaluated on
 * the same batches by the engine's evaluate(), interleaved.
 *
 * The cost of quantization-aware training: one QAT step
 * (binary per-channel on every kernel, identity and clipped STE) ÷ one plain training step of the same
 * model on the same backend, target ≤ 1.5. The plain step is the same trainer with an empty plan (the
 * fair baseline: same loss, optimizer and read-back of loss and metric) and, for information, stock
 * tfjs `model.trainOnBatch`. The model is a small CNN (Conv2D → BN → depthwise → 1×1 Conv2D → Dense) at
 * batch 32 on 12×12×1 inputs. Every time is the median of several steps after warm-up steps.
 */
import * as tf from '@tensorflow/tfjs';
import { parseJobSpec } from '../src/jobs/spec.js';
import { selectBackend, type BackendPreference } from '../src/model/backend.js';
import { loadRunnable, type RunnableModel } from '../src/model/load.js';
import { readModel } from '../src/model/read.js';
import { runPtq } from '../src/pipeline/ptq.js';
import { batchRows, evaluate, type Batch } from '../src/quant/evaluate.js';
import { parseMethodParams } from '../src/quant/methods/index.js';
import { createQatStep, type QatPlan } from '../src/quant/qat/train.js';
import { createRng } from '../src/quant/rng.js';
import { saveLayersModel } from '../test/fixtures/models.js';
import { buildSmallCnn } from '../test/fixtures/tasks.js';

const WARMUP = 5;
const STEPS = 31;
const BATCH = 32;
const CLASSES = 10;

/** The small CNN of the accuracy tests (Conv2D → BN → depthwise → 1×1 Conv2D → Dense) on 12×12×1 inputs. */
function buildModel(): tf.LayersModel {
  return buildSmallCnn([12, 12, 1], CLASSES, 1);
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

/** Samples per second of evaluate() over `batches`, the median of interleaved rounds for both models. */
async function evaluationThroughputs(models: RunnableModel[], batches: Batch[]): Promise<number[]> {
  const samples = batches.reduce((n, b) => n + batchRows(b.x), 0);
  for (const model of models) await evaluate(model, batches);
  const times = models.map(() => [] as number[]);
  for (let round = 0; round < 7; round++) {
    for (const [k, model] of models.entries()) {
      const start = performance.now();
      await evaluate(model, batches);
      times[k].push(performance.now() - start);
    }
  }
  return times.map((t) => samples / (median(t) / 1000));
}

async function evaluationRatio(): Promise<{ float: number; quantized: number }> {
  const float = buildModel();
  const source = readModel(await saveLayersModel(float));
  const { files } = await runPtq(
    source,
    parseJobSpec({ method: { name: 'affine', bits: 8, granularity: 'per-channel' } }),
    {
      backend: tf.getBackend(),
    },
  );
  const exported = new Map(
    [...files].filter(([p]) => p.startsWith('model/')).map(([p, b]) => [p.slice('model/'.length), b]),
  );
  const quantized = await loadRunnable(exported);
  const rng = createRng(2);
  const batches = Array.from({ length: 16 }, () => ({
    x: tf.tensor4d(
      Float32Array.from({ length: 64 * 144 }, () => rng.next()),
      [64, 12, 12, 1],
    ),
    y: tf.tensor1d(
      Int32Array.from({ length: 64 }, () => rng.int(CLASSES)),
      'int32',
    ),
  }));
  const [floatRate, quantizedRate] = await evaluationThroughputs([float, quantized], batches);
  batches.forEach((b) => tf.dispose([b.x, b.y]));
  float.dispose();
  quantized.dispose();
  return { float: floatRate, quantized: quantizedRate };
}

async function main(): Promise<void> {
  tf.enableProdMode();
  const backend = await selectBackend((process.env.QAAS_TF_BACKEND as BackendPreference | undefined) ?? 'auto');
  const throughput = await evaluationRatio();
  const rng = createRng(1);
  const x = tf.tensor4d(
    Float32Array.from({ length: BATCH * 144 }, () => rng.next()),
    [BATCH, 12, 12, 1],
  );
  const y = tf.tensor1d(
    Int32Array.from({ length: BATCH }, () => rng.int(CLASSES)),
    'int32',
  );
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
  console.log(
    `evaluation: float ${throughput.float.toFixed(0)} samples/s, quantized ${throughput.quantized.toFixed(0)} samples/s`,
  );
  const rows: [string, number, string][] = [
    ['evaluation throughput, quantized ÷ float model', throughput.quantized / throughput.float, '≥ 0.9'],
    ['QAT step, binary per-channel, identity STE ÷ plain step', identity / plain, '≤ 1.5'],
    ['QAT step, binary per-channel, clipped STE ÷ plain step', clipped / plain, '≤ 1.5'],
    ['QAT step, identity STE ÷ stock trainOnBatch', identity / stockMs, 'info'],
  ];
  for (const [what, ratio, target] of rows)
    console.log(`${what.padEnd(58)} ${ratio.toFixed(2).padStart(5)}  ${target}`);
}

await main();

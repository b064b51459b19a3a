import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../../src/quant/rng.js';
import { registerWasmGradientKernels } from '../../src/model/wasm-kernels/index.js';

type Backend = 'wasm' | 'cpu';
type Padding = 'same' | 'valid';

function randomValues(size: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: size }, () => rng.next() * 2 - 1);
}

/** Runs `compute` on one backend and returns its results as plain arrays, leaving no tensor behind. */
async function on(backend: Backend, compute: () => tf.Tensor[]): Promise<{ shape: number[]; values: Float32Array }[]> {
  await tf.setBackend(backend);
  const outputs = tf.tidy(compute);
  const results = await Promise.all(
    outputs.map(async (t) => ({ shape: t.shape, values: Float32Array.from(await t.data()) })),
  );
  tf.dispose(outputs);
  return results;
}

/** Max |wasm − cpu| / max(1, |cpu|): absolute for small values, relative where they are large. */
function maxScaledDiff(actual: Float32Array, expected: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i])));
  }
  return worst;
}

async function expectSameOnBackends(compute: () => tf.Tensor[]): Promise<void> {
  const expected = await on('cpu', compute);
  const numTensors = tf.memory().numTensors;
  const actual = await on('wasm', compute);
  expect(tf.memory().numTensors).toBe(numTensors);
  expect(actual.map((r) => r.shape)).toEqual(expected.map((r) => r.shape));
  for (let i = 0; i < expected.length; i++) {
    expect(expected[i].values.every(Number.isFinite)).toBe(true);
    expect(maxScaledDiff(actual[i].values, expected[i].values)).toBeLessThan(1e-4);
  }
}

/** d/dx and d/dfilter of Σ conv(x, filter) ⊙ weights, i.e. the backprop kernels fed with dy = weights. */
function convGrads(
  conv: (x: tf.Tensor4D, filter: tf.Tensor4D) => tf.Tensor4D,
  xShape: [number, number, number, number],
  filterShape: [number, number, number, number],
): () => tf.Tensor[] {
  return () => {
    const x = tf.tensor4d(randomValues(tf.util.sizeFromShape(xShape), 1), xShape);
    const filter = tf.tensor4d(randomValues(tf.util.sizeFromShape(filterShape), 2), filterShape);
    const outShape = tf.tidy(() => conv(x, filter).shape);
    const weights = tf.tensor(randomValues(tf.util.sizeFromShape(outShape), 3), outShape);
    return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a as tf.Tensor4D, b as tf.Tensor4D), weights)))([
      x,
      filter,
    ]);
  };
}

beforeAll(async () => {
  expect(registerWasmGradientKernels().sort()).toEqual([
    'Conv2DBackpropFilter',
    'DepthwiseConv2dNativeBackpropFilter',
    'DepthwiseConv2dNativeBackpropInput',
    'UnsortedSegmentSum',
  ]);
  expect(registerWasmGradientKernels()).toEqual([]);
  expect(await tf.setBackend('wasm')).toBe(true);
});

const paddings: Padding[] = ['same', 'valid'];
const strides = [1, 2];

describe('Conv2DBackpropFilter on wasm matches cpu', () => {
  const shapes: [string, [number, number, number, number], [number, number, number, number]][] = [
    ['3×3, 3→4 channels', [2, 7, 7, 3], [3, 3, 3, 4]],
    ['2×3 on a non-square image', [1, 8, 6, 2], [2, 3, 2, 5]],
    ['1×1 pointwise', [2, 5, 5, 4], [1, 1, 4, 3]],
  ];
  for (const [label, xShape, filterShape] of shapes) {
    for (const pad of paddings) {
      for (const stride of strides) {
        it(`${label}, ${pad}, stride ${stride}`, async () => {
          await expectSameOnBackends(convGrads((x, f) => tf.conv2d(x, f, stride, pad), xShape, filterShape));
        });
      }
    }
  }

  it('explicit asymmetric padding and NCHW, called as a kernel', async () => {
    const x = randomValues(2 * 3 * 6 * 7, 4);
    const dy = randomValues(2 * 4 * 4 * 4, 5);
    const dyExplicit = randomValues(2 * 4 * 3 * 4, 5);
    await expectSameOnBackends(() => [
      tf
        .engine()
        .runKernel(
          'Conv2DBackpropFilter',
          { x: tf.tensor4d(x, [2, 6, 7, 3]), dy: tf.tensor4d(dyExplicit, [2, 4, 3, 4]) },
          {
            strides: [2, 2],
            pad: [
              [0, 0],
              [1, 2],
              [0, 1],
              [0, 0],
            ],
            dataFormat: 'NHWC',
            filterShape: [3, 3, 3, 4],
          } as unknown as tf.NamedAttrMap,
        ) as tf.Tensor,
      tf
        .engine()
        .runKernel('Conv2DBackpropFilter', { x: tf.tensor4d(x, [2, 3, 6, 7]), dy: tf.tensor4d(dy, [2, 4, 4, 4]) }, {
          strides: 1,
          pad: 'valid',
          dataFormat: 'NCHW',
          filterShape: [3, 4, 3, 4],
        } as unknown as tf.NamedAttrMap) as tf.Tensor,
    ]);
  });
});

describe('DepthwiseConv2dNative gradients on wasm match cpu', () => {
  const shapes: [string, [number, number, number, number], [number, number, number, number]][] = [
    ['3×3, multiplier 2', [2, 7, 7, 3], [3, 3, 3, 2]],
    ['3×3, multiplier 1', [1, 8, 8, 4], [3, 3, 4, 1]],
    ['2×2 on a non-square image, multiplier 3', [2, 6, 5, 2], [2, 2, 2, 3]],
  ];
  for (const [label, xShape, filterShape] of shapes) {
    for (const pad of paddings) {
      for (const stride of strides) {
        it(`${label}, ${pad}, stride ${stride} (input and filter gradients)`, async () => {
          await expectSameOnBackends(convGrads((x, f) => tf.depthwiseConv2d(x, f, stride, pad), xShape, filterShape));
        });
      }
    }
  }

  it('dilation 2 (which tfjs gradients refuse) matches the undilated gradients of the zero-spread filter', async () => {
    // A 3×3 filter at dilation 2 is a 5×5 filter with zeros between its taps: the input gradients agree, and
    // the filter gradient is the 5×5 one read at the taps.
    const x = randomValues(2 * 9 * 8 * 2, 6);
    const filter = randomValues(3 * 3 * 2 * 2, 7);
    const dy = randomValues(2 * 9 * 8 * 4, 8);
    const dilatedAttrs = { strides: 1, pad: 'same', dilations: 2 };
    const wasm = await on('wasm', () => [
      tf
        .engine()
        .runKernel(
          'DepthwiseConv2dNativeBackpropInput',
          { dy: tf.tensor4d(dy, [2, 9, 8, 4]), filter: tf.tensor4d(filter, [3, 3, 2, 2]) },
          { ...dilatedAttrs, inputShape: [2, 9, 8, 2] } as unknown as tf.NamedAttrMap,
        ) as tf.Tensor,
      tf
        .engine()
        .runKernel(
          'DepthwiseConv2dNativeBackpropFilter',
          { x: tf.tensor4d(x, [2, 9, 8, 2]), dy: tf.tensor4d(dy, [2, 9, 8, 4]) },
          { ...dilatedAttrs, filterShape: [3, 3, 2, 2] } as unknown as tf.NamedAttrMap,
        ) as tf.Tensor,
    ]);
    const cpu = await on('cpu', () => {
      const taps = tf.reshape(tf.tensor4d(filter, [3, 3, 2, 2]), [3, 1, 3, 1, 2, 2]);
      const gaps = tf.pad(taps, [
        [0, 0],
        [0, 1],
        [0, 0],
        [0, 1],
        [0, 0],
        [0, 0],
      ]);
      const spread = tf.slice(tf.reshape(gaps, [6, 6, 2, 2]), [0, 0, 0, 0], [5, 5, 2, 2]);
      const undilatedAttrs = { strides: 1, pad: 'same', dilations: 1 };
      const dx = tf
        .engine()
        .runKernel('DepthwiseConv2dNativeBackpropInput', { dy: tf.tensor4d(dy, [2, 9, 8, 4]), filter: spread }, {
          ...undilatedAttrs,
          inputShape: [2, 9, 8, 2],
        } as unknown as tf.NamedAttrMap) as tf.Tensor;
      const dSpread = tf
        .engine()
        .runKernel(
          'DepthwiseConv2dNativeBackpropFilter',
          { x: tf.tensor4d(x, [2, 9, 8, 2]), dy: tf.tensor4d(dy, [2, 9, 8, 4]) },
          { ...undilatedAttrs, filterShape: [5, 5, 2, 2] } as unknown as tf.NamedAttrMap,
        ) as tf.Tensor;
      return [dx, tf.stridedSlice(dSpread, [0, 0, 0, 0], [5, 5, 2, 2], [2, 2, 1, 1])];
    });
    for (let i = 0; i < 2; i++) {
      expect(wasm[i].shape).toEqual(cpu[i].shape);
      expect(maxScaledDiff(wasm[i].values, cpu[i].values)).toBeLessThan(1e-4);
    }
  });
});

describe('UnsortedSegmentSum on wasm matches cpu', () => {
  it('sums duplicate ids, drops negative and too-large ids, keeps empty segments at 0', async () => {
    const ids = [3, 0, 3, -1, 5, 0, 7, 2];
    await expectSameOnBackends(() => [
      tf.unsortedSegmentSum(tf.tensor2d(randomValues(8 * 3, 9), [8, 3]), tf.tensor1d(ids, 'int32'), 6),
      tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3, 4, 5, 6, 7, 8], 'int32'), tf.tensor1d(ids, 'int32'), 6),
    ]);
    const [values] = await on('wasm', () => [
      tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3, 4, 5, 6, 7, 8]), tf.tensor1d(ids, 'int32'), 6),
    ]);
    expect(Array.from(values.values)).toEqual([2 + 6, 0, 8, 1 + 3, 0, 5]);
  });

  it('gives the gather (embedding) gradient, ids of rank 2', async () => {
    await expectSameOnBackends(() => {
      const table = tf.tensor2d(randomValues(10 * 4, 10), [10, 4]);
      const ids = tf.tensor2d(
        [
          [1, 2, 1],
          [9, 1, 0],
        ],
        [2, 3],
        'int32',
      );
      const weights = tf.tensor3d(randomValues(2 * 3 * 4, 11), [2, 3, 4]);
      return [tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), weights)))(table)];
    });
  });
});

describe('training on wasm with the registered kernels', () => {
  function visionModel(): tf.Sequential {
    const init = (seed: number) => tf.initializers.glorotUniform({ seed });
    const model = tf.sequential();
    model.add(
      tf.layers.conv2d({
        inputShape: [8, 8, 2],
        filters: 4,
        kernelSize: 3,
        strides: 2,
        padding: 'same',
        kernelInitializer: init(1),
      }),
    );
    model.add(
      tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'valid', depthwiseInitializer: init(2) }),
    );
    model.add(tf.layers.batchNormalization());
    model.add(tf.layers.reLU());
    model.add(
      tf.layers.separableConv2d({
        filters: 3,
        kernelSize: 2,
        padding: 'same',
        depthwiseInitializer: init(3),
        pointwiseInitializer: init(4),
      }),
    );
    model.add(tf.layers.globalAveragePooling2d({}));
    model.add(tf.layers.dense({ units: 2, activation: 'softmax', kernelInitializer: init(5) }));
    return model;
  }

  function embeddingModel(): tf.Sequential {
    const model = tf.sequential();
    model.add(
      tf.layers.embedding({
        inputDim: 12,
        outputDim: 4,
        inputLength: 5,
        embeddingsInitializer: tf.initializers.randomUniform({ minval: -0.5, maxval: 0.5, seed: 6 }),
      }),
    );
    model.add(tf.layers.flatten());
    model.add(
      tf.layers.dense({
        units: 2,
        activation: 'softmax',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }),
      }),
    );
    return model;
  }

  const cases: [string, () => tf.Sequential, () => [tf.Tensor, tf.Tensor]][] = [
    [
      'Conv2D + DepthwiseConv2D + BatchNorm + SeparableConv2D',
      visionModel,
      () => [
        tf.tensor4d(randomValues(6 * 8 * 8 * 2, 12), [6, 8, 8, 2]),
        tf.oneHot(tf.tensor1d([0, 1, 1, 0, 1, 0], 'int32'), 2),
      ],
    ],
    [
      'Embedding',
      embeddingModel,
      () => [
        tf.tensor2d(
          [
            [1, 2, 3, 4, 5],
            [0, 1, 2, 3, 11],
            [1, 1, 1, 1, 1],
            [2, 7, 2, 7, 2],
          ],
          [4, 5],
          'int32',
        ),
        tf.oneHot(tf.tensor1d([0, 1, 0, 1], 'int32'), 2),
      ],
    ],
  ];

  for (const [label, build, data] of cases) {
    it(`${label}: an SGD step gives the same weights as on cpu, and the loss falls`, async () => {
      await tf.setBackend('cpu');
      const model = build();
      model.compile({ optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy' });
      const initial = model.getWeights().map((w) => w.clone());
      const [x, y] = data();

      const stepOn = async (backend: Backend): Promise<Float32Array[]> => {
        await tf.setBackend(backend);
        model.setWeights(initial);
        await model.trainOnBatch(x, y);
        return Promise.all(model.getWeights().map(async (w) => Float32Array.from(await w.data())));
      };
      const cpuWeights = await stepOn('cpu');
      const wasmWeights = await stepOn('wasm');
      for (let i = 0; i < cpuWeights.length; i++) {
        expect(maxScaledDiff(wasmWeights[i], cpuWeights[i])).toBeLessThan(1e-4);
      }

      const losses: number[] = [];
      for (let step = 0; step < 4; step++) losses.push((await model.trainOnBatch(x, y)) as number);
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(losses[3]).toBeLessThan(losses[0]);

      tf.dispose([x, y, ...initial]);
      model.dispose();
    });
  }
});

it('each kernel leaves no tensor or data buffer behind on wasm', async () => {
  await tf.setBackend('wasm');
  const x = tf.tensor4d(randomValues(2 * 6 * 6 * 3, 13), [2, 6, 6, 3]);
  const dyConv = tf.tensor4d(randomValues(2 * 3 * 3 * 4, 14), [2, 3, 3, 4]);
  const dyDepthwise = tf.tensor4d(randomValues(2 * 3 * 3 * 6, 15), [2, 3, 3, 6]);
  const depthwiseFilter = tf.tensor4d(randomValues(3 * 3 * 3 * 2, 16), [3, 3, 3, 2]);
  const ids = tf.tensor1d([1, 0, 1], 'int32');
  const rows = tf.tensor2d(randomValues(3 * 2, 17), [3, 2]);
  const calls: [string, tf.NamedTensorMap, object][] = [
    [
      'Conv2DBackpropFilter',
      { x, dy: dyConv },
      { strides: 2, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 3, 4] },
    ],
    [
      'DepthwiseConv2dNativeBackpropFilter',
      { x, dy: dyDepthwise },
      { strides: 2, pad: 'same', dilations: 1, filterShape: [3, 3, 3, 2] },
    ],
    [
      'DepthwiseConv2dNativeBackpropInput',
      { dy: dyDepthwise, filter: depthwiseFilter },
      { strides: 2, pad: 'same', dilations: 1, inputShape: [2, 6, 6, 3] },
    ],
    ['UnsortedSegmentSum', { x: rows, segmentIds: ids }, { numSegments: 3 }],
  ];
  for (const [kernelName, inputs, attrs] of calls) {
    const before = tf.memory();
    const output = tf.engine().runKernel(kernelName, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
    expect(tf.memory().numTensors).toBe(before.numTensors + 1);
    output.dispose();
    expect(tf.memory().numTensors).toBe(before.numTensors);
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers);
  }
  tf.dispose([x, dyConv, dyDepthwise, depthwiseFilter, ids, rows]);
});

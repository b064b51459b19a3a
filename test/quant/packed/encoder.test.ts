import { describe, expect, it } from 'vitest';
import { decodePacked } from '../../../src/quant/packed/decoder.js';
import { packModel } from '../../../src/quant/packed/encoder.js';
import type { PackedManifest, PackedQuantizedWeight } from '../../../src/quant/packed/manifest.js';
import { createRng } from '../../../src/quant/rng.js';
import { mixedModel, quantizedTensor, randomFloats } from './fixtures.js';

const modelJson = {
  modelTopology: { class_name: 'Sequential', config: { name: 'm' } },
  format: 'layers-model',
  generatedBy: 'TensorFlow.js tfjs-layers v4.22.0',
  convertedBy: null,
  userDefinedMetadata: { labels: ['a', 'b'] },
  weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [] }],
};

function pack() {
  const { weights, quantized } = mixedModel();
  const files = packModel({ format: 'layers-model', modelJson, weights }, quantized);
  const manifest = JSON.parse(new TextDecoder().decode(files.get('packed/manifest.json'))) as PackedManifest;
  const bin = files.get('packed/weights.bin')!;
  return { weights, quantized, files, manifest, bin };
}

/** The bytes weight `index` of the artifacts occupies in weightData. */
function weightBytes(specs: { shape: number[]; dtype: string }[], data: ArrayBuffer, index: number): Uint8Array {
  let at = 0;
  for (let i = 0; i < index; i++) at += specs[i].shape.reduce((a, b) => a * b, 1) * (specs[i].dtype === 'bool' ? 1 : 4);
  const size = specs[index].shape.reduce((a, b) => a * b, 1) * (specs[index].dtype === 'bool' ? 1 : 4);
  return new Uint8Array(data, at, size);
}

describe('packModel', () => {
  it('writes exactly the two files', () => {
    expect([...pack().files.keys()]).toEqual(['packed/manifest.json', 'packed/weights.bin']);
  });

  it('makes weights.bin exactly Σ side info + Σ raw bytes + Σ ⌈count·bits/8⌉, with no padding', () => {
    const { bin, manifest, weights, quantized } = pack();
    // Worked by hand from fixtures.ts:
    //   side info float32: affine_pc 6+6, affine_pt 1+1, binary 3·2, ternary 4, kmeans 8, pq 3·4·3 = 68 → 272 B
    //   raw: bias 6·4 + int32 3·4 + bool 5 = 41 B
    //   codes: ⌈30·4/8⌉ + ⌈7·3/8⌉ + ⌈27·1/8⌉ + ⌈20·2/8⌉ + ⌈11·3/8⌉ + 15·2 + ⌈12·2/8⌉ = 15+3+4+5+5+30+3 = 65 B
    expect(bin.length).toBe(272 + 41 + 65);

    let expected = 0;
    for (const weight of weights) {
      const tensor = quantized.get(weight.name);
      if (!tensor) {
        expected += weight.values.byteLength;
        continue;
      }
      const { encoding } = tensor;
      const bits = encoding.kind === 'float16' ? 16 : encoding.bits;
      expected += Math.ceil((tensor.codes.length * bits) / 8);
      if (encoding.kind === 'affine') expected += (encoding.scales.length + encoding.mins.length) * 4;
      if (encoding.kind === 'codebook' || encoding.kind === 'pq') expected += encoding.codebook.length * 4;
    }
    expect(bin.length).toBe(expected);
    expect(manifest.weightsBytes).toBe(bin.length);
    expect(manifest.weights.find((w) => w.name === 'dense/bias')).toMatchObject({ offset: 272, byteLength: 24 });
  });

  it('stores each tensor in its bits-per-weight figure rounded up to whole bytes (docs/packed-format.md)', () => {
    const { manifest } = pack();
    const sideFloats = { affine_pc: 12, affine_pt: 2, binary: 6, ternary: 4, kmeans: 8, half: 0, pq: 36 };
    for (const weight of manifest.weights) {
      if (!('encoding' in weight)) continue;
      const side = sideFloats[weight.name.split('/')[0] as keyof typeof sideFloats];
      const bits = weight.count * weight.encoding.bits + 32 * side;
      const storedBits = 8 * weight.codesBytes + 32 * side;
      expect(storedBits - bits, weight.name).toBeGreaterThanOrEqual(0);
      expect(storedBits - bits, weight.name).toBeLessThan(8);
    }
    // affine 4-bit per-channel [5, 6]: (30·4 + 32·12) / 30 = 16.8 bits per weight, stored in 15 + 48 bytes.
    const affine = manifest.weights[0] as PackedQuantizedWeight;
    expect((affine.count * affine.encoding.bits + 32 * 12) / 30).toBeCloseTo(16.8, 12);
    expect(affine.codesBytes + 4 * 12).toBe(63);
  });

  it('records every weight in order with offsets, 4-byte aligned side info and the codes layout', () => {
    const { manifest, weights } = pack();
    expect(manifest).toMatchObject({ format: 'qaas-packed', version: 1, modelFormat: 'layers-model' });
    expect(manifest.modelJson).not.toHaveProperty('weightsManifest');
    expect(manifest.modelJson.userDefinedMetadata).toEqual({ labels: ['a', 'b'] });
    expect(manifest.weights.map((w) => w.name)).toEqual(weights.map((w) => w.name));

    const affine = manifest.weights[0] as PackedQuantizedWeight;
    expect(affine).toMatchObject({
      shape: [5, 6],
      dtype: 'float32',
      count: 30,
      codesBytes: 15,
      encoding: { kind: 'affine', bits: 4, channels: 6, scalesOffset: 0, minsOffset: 24 },
    });
    const pq = manifest.weights.find((w) => w.name === 'pq/kernel') as PackedQuantizedWeight;
    expect(pq).toMatchObject({
      count: 12,
      codesBytes: 3,
      encoding: { kind: 'pq', bits: 2, subvectorLength: 3, subspaces: 3 },
    });
    expect(manifest.weights.find((w) => w.name === 'half/kernel')).toMatchObject({
      encoding: { kind: 'float16', bits: 16 },
    });
    // Codes follow the 4-byte section (272 B side info + 24 B bias + 12 B int32 = 308 B), back to back.
    expect(affine.codesOffset).toBe(308);
    for (const weight of manifest.weights) {
      if (!('encoding' in weight)) continue;
      for (const [key, offset] of Object.entries(weight.encoding)) {
        if (key.endsWith('Offset')) expect((offset as number) % 4).toBe(0);
      }
    }
  });

  it('names the weight whose codes or side information do not fit its shape', () => {
    const { weights } = mixedModel();
    const rng = createRng(1);
    const wrongChannels = quantizedTensor(
      { kind: 'affine', bits: 4, channels: 5, scales: new Float32Array(5), mins: new Float32Array(5) },
      [6, 5],
      rng,
    );
    expect(() =>
      packModel({ format: 'layers-model', modelJson, weights }, new Map([['affine_pc/kernel', wrongChannels]])),
    ).toThrow(/"affine_pc\/kernel": channels 5 is neither 1 nor the product of the last axes of \[[0-9,]+\]/);
    const shortCodes = quantizedTensor({ kind: 'float16' }, [29], rng);
    expect(() =>
      packModel({ format: 'layers-model', modelJson, weights }, new Map([['affine_pc/kernel', shortCodes]])),
    ).toThrow(/"affine_pc\/kernel": 29 codes, expected 30/);
    expect(() => packModel({ format: 'layers-model', modelJson, weights }, new Map([['nope', shortCodes]]))).toThrow(
      /"nope" is not a weight/,
    );
  });

  it('packs a pq kernel with one shared codebook (subspaces 1) and rejects any other subspace count', () => {
    const { weights } = mixedModel();
    const rng = createRng(2);
    // pq/kernel is [7, 4] with d = 3: 3 blocks × 4 columns = 12 codes, all read through one codebook.
    const shared = quantizedTensor(
      { kind: 'pq', bits: 2, subvectorLength: 3, subspaces: 1, codebook: randomFloats(rng, 4 * 3) },
      [7, 4],
      rng,
    );
    expect(shared.codes.length).toBe(12);
    const files = packModel({ format: 'layers-model', modelJson, weights }, new Map([['pq/kernel', shared]]));
    const manifest = JSON.parse(new TextDecoder().decode(files.get('packed/manifest.json'))) as PackedManifest;
    expect(manifest.weights.find((w) => w.name === 'pq/kernel')).toMatchObject({
      count: 12,
      codesBytes: 3,
      encoding: { subspaces: 1 },
    });
    const artifacts = decodePacked(manifest, files.get('packed/weights.bin')!);
    const index = artifacts.weightSpecs.findIndex((s) => s.name === 'pq/kernel');
    expect(weightBytes(artifacts.weightSpecs, artifacts.weightData, index)).toEqual(
      new Uint8Array(shared.dequantized.buffer),
    );

    const twoOfThree = quantizedTensor(
      { kind: 'pq', bits: 2, subvectorLength: 3, subspaces: 2, codebook: randomFloats(rng, 2 * 4 * 3) },
      [7, 4],
      rng,
    );
    expect(() =>
      packModel({ format: 'layers-model', modelJson, weights }, new Map([['pq/kernel', twoOfThree]])),
    ).toThrow(/"pq\/kernel": pq subspaces 2 is neither 1 \(shared\) nor ⌈7 rows \/ 3⌉/);
  });

  it('accepts channels over the last two axes of a depthwise kernel', () => {
    const { weights } = mixedModel();
    const kernel = weights.find((w) => w.name === 'affine_pc/kernel')!;
    const depthwise = {
      ...kernel,
      name: 'depthwise/depthwise_kernel',
      shape: [kernel.shape[0], kernel.shape[1] / 2, 2],
    };
    const channels = depthwise.shape[1] * depthwise.shape[2];
    const tensor = quantizedTensor(
      {
        kind: 'affine',
        bits: 4,
        channels,
        scales: new Float32Array(channels).fill(0.5),
        mins: new Float32Array(channels),
      },
      [kernel.shape[0], channels],
      createRng(2),
    );
    const files = packModel(
      { format: 'layers-model', modelJson, weights: [depthwise] },
      new Map([[depthwise.name, tensor]]),
    );
    expect(files.get('packed/weights.bin')!.byteLength).toBe(channels * 8 + Math.ceil((kernel.values.length * 4) / 8));
  });
});

describe('decodePacked', () => {
  it('expands every quantized weight to exactly its dequantized values and raw weights to themselves', () => {
    const { manifest, bin, weights, quantized } = pack();
    const artifacts = decodePacked(manifest, bin);
    expect(artifacts.format).toBe('layers-model');
    expect(artifacts.modelTopology).toEqual(modelJson.modelTopology);
    expect(artifacts.generatedBy).toBe(modelJson.generatedBy);
    expect(artifacts.userDefinedMetadata).toEqual({ labels: ['a', 'b'] });
    expect(artifacts).not.toHaveProperty('weightsManifest');
    expect(artifacts.weightSpecs).toEqual(weights.map(({ name, shape, dtype }) => ({ name, shape, dtype })));

    weights.forEach((weight, i) => {
      const got = weightBytes(artifacts.weightSpecs, artifacts.weightData, i);
      const tensor = quantized.get(weight.name);
      const want = tensor ? tensor.dequantized : weight.values;
      expect([...got], weight.name).toEqual([...new Uint8Array(want.buffer, want.byteOffset, want.byteLength)]);
    });
    // The check above discriminates: no quantized tensor equals the float values it replaced.
    for (const weight of weights) {
      const tensor = quantized.get(weight.name);
      if (tensor) expect([...tensor.dequantized]).not.toEqual([...weight.values]);
    }
  });

  it('decodes the same from an ArrayBuffer and from an unaligned Uint8Array view', () => {
    const { manifest, bin } = pack();
    const host = new Uint8Array(bin.length + 1);
    host.set(bin, 1);
    const unaligned = decodePacked(manifest, host.subarray(1));
    const fromBuffer = decodePacked(manifest, bin.slice().buffer);
    expect(new Uint8Array(unaligned.weightData)).toEqual(new Uint8Array(fromBuffer.weightData));
  });

  it('refuses a truncated weights.bin and a foreign manifest', () => {
    const { manifest, bin } = pack();
    expect(() => decodePacked(manifest, bin.subarray(0, bin.length - 1))).toThrow(
      /weights.bin has 377 bytes, manifest says 378/,
    );
    expect(() => decodePacked({ ...manifest, version: 2 }, bin)).toThrow(/not qaas-packed version 1/);
    const broken = structuredClone(manifest);
    (broken.weights[0] as PackedQuantizedWeight).count = 29;
    expect(() => decodePacked(broken, bin)).toThrow(/"affine_pc\/kernel": 29 codes, expected 30/);
  });
});

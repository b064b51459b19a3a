import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Weight } from '../../../src/model/types.js';
import { decodePacked, loadPacked, type FetchLike } from '../../../src/quant/packed/decoder.js';
import { PACKED_DECODER_FILES, packModel } from '../../../src/quant/packed/encoder.js';
import { createRng } from '../../../src/quant/rng.js';
import { mixedModel, quantizedTensor, randomFloats } from './fixtures.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function manifestOf(files: Map<string, Uint8Array>): object {
  return JSON.parse(new TextDecoder().decode(files.get('packed/manifest.json'))) as object;
}

describe('decodePacked into tfjs', () => {
  it('a Dense 8→4 layers model loaded through tf.io.fromMemory predicts exactly like setWeights(dequantized)', async () => {
    const rng = createRng(11);
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 4, inputShape: [8], activation: 'relu' })] });
    let saved: tf.io.ModelArtifacts | undefined;
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const [kernelSpec, biasSpec] = saved!.weightSpecs!;
    const kernel = quantizedTensor(
      { kind: 'affine', bits: 4, channels: 4, scales: randomFloats(rng, 4), mins: randomFloats(rng, 4) },
      [8, 4],
      rng,
    );
    const bias = quantizedTensor({ kind: 'codebook', bits: 2, channels: 1, codebook: randomFloats(rng, 4) }, [4], rng);
    const weights: Weight[] = [
      { name: kernelSpec.name, shape: [8, 4], dtype: 'float32', values: randomFloats(rng, 32) },
      { name: biasSpec.name, shape: [4], dtype: 'float32', values: randomFloats(rng, 4) },
    ];
    const files = packModel(
      {
        format: 'layers-model',
        modelJson: { modelTopology: saved!.modelTopology, format: 'layers-model', generatedBy: saved!.generatedBy },
        weights,
      },
      new Map([
        [kernelSpec.name, kernel],
        [biasSpec.name, bias],
      ]),
    );
    const artifacts = decodePacked(manifestOf(files), files.get('packed/weights.bin')!);
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts));

    model.setWeights([tf.tensor(kernel.dequantized, [8, 4]), tf.tensor(bias.dequantized, [4])]);
    const x = tf.tensor(randomFloats(rng, 5 * 8), [5, 8]);
    const want = (model.predict(x) as tf.Tensor).dataSync();
    const got = (loaded.predict(x) as tf.Tensor).dataSync();
    expect([...got]).toEqual([...want]);
    // Some outputs pass the relu, so the comparison is about real numbers, not zeros.
    expect(want.some((v) => v > 0)).toBe(true);
    tf.dispose([x]);
    model.dispose();
    loaded.dispose();
  });

  it('a MatMul graph model loaded through tf.io.fromMemory computes x · dequantized kernel', async () => {
    const rng = createRng(12);
    const dim = (...sizes: number[]) => ({ dim: sizes.map((size) => ({ size: String(size) })) });
    const modelTopology = {
      node: [
        { name: 'x', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dim(-1, 6) } } },
        {
          name: 'w',
          op: 'Const',
          attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dim(6, 3) } } },
        },
        {
          name: 'y',
          op: 'MatMul',
          input: ['x', 'w'],
          attr: { T: { type: 'DT_FLOAT' }, transpose_a: { b: false }, transpose_b: { b: false } },
        },
      ],
      versions: { producer: 1 },
    };
    const kernel = quantizedTensor(
      { kind: 'pq', bits: 3, subvectorLength: 4, subspaces: 2, codebook: randomFloats(rng, 2 * 8 * 4) },
      [6, 3],
      rng,
    );
    const files = packModel(
      {
        format: 'graph-model',
        modelJson: { modelTopology, format: 'graph-model', convertedBy: 'hand' },
        weights: [{ name: 'w', shape: [6, 3], dtype: 'float32', values: randomFloats(rng, 18) }],
      },
      new Map([['w', kernel]]),
    );
    const graph = await tf.loadGraphModel(
      tf.io.fromMemory(decodePacked(manifestOf(files), files.get('packed/weights.bin')!)),
    );
    const x = tf.tensor(randomFloats(rng, 2 * 6), [2, 6]);
    const w = tf.tensor(kernel.dequantized, [6, 3]);
    const got = (graph.execute(x, 'y') as tf.Tensor).dataSync();
    const want = tf.matMul(x, w).dataSync();
    expect([...got]).toEqual([...want]);
    tf.dispose([x, w]);
    graph.dispose();
  });
});

describe('loadPacked', () => {
  it('fetches manifest.json and weights.bin under the base URL and decodes them', async () => {
    const { weights, quantized } = mixedModel();
    const files = packModel({ format: 'graph-model', modelJson: { modelTopology: { node: [] } }, weights }, quantized);
    const requested: string[] = [];
    const fakeFetch: FetchLike = async (url) => {
      requested.push(url);
      const bytes = files.get(url.replace('https://cdn.example/m/', 'packed/'));
      return {
        ok: bytes !== undefined,
        status: bytes ? 200 : 404,
        arrayBuffer: async () => bytes!.slice().buffer,
      };
    };
    const artifacts = await loadPacked('https://cdn.example/m', fakeFetch);
    expect(requested.sort()).toEqual(['https://cdn.example/m/manifest.json', 'https://cdn.example/m/weights.bin']);
    const direct = decodePacked(manifestOf(files), files.get('packed/weights.bin')!);
    expect(new Uint8Array(artifacts.weightData)).toEqual(new Uint8Array(direct.weightData));
    await expect(loadPacked('https://cdn.example/other/', fakeFetch)).rejects.toThrow(/answered 404/);
  });
});

describe('the shipped decoder files', () => {
  const sourceDir = new URL('../../../src/quant/packed/', import.meta.url);
  let dir: string;
  const compiled = new Map<string, string>();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qaas-packed-'));
    for (const file of PACKED_DECODER_FILES) {
      const source = readFileSync(new URL(file.replace(/\.js$/, '.ts'), sourceDir), 'utf8');
      const js = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022, removeComments: true },
      }).outputText;
      compiled.set(file, js);
      writeFileSync(join(dir, file), js);
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('are plain ES modules that import only each other, with .js specifiers', () => {
    expect([...PACKED_DECODER_FILES]).toEqual(['decoder.js', 'decode-tensor.js', 'bits.js']);
    const siblings = PACKED_DECODER_FILES.map((f) => `./${f}`);
    for (const js of compiled.values()) {
      const specifiers = [...js.matchAll(/\b(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]/g)].map((m) => m[1]);
      for (const specifier of specifiers) expect(siblings).toContain(specifier);
      expect(js).not.toMatch(/\brequire\(|\bimport\(|node:|\bprocess\.|\bBuffer\b/);
    }
    expect(compiled.get('decoder.js')).toMatch(/from '\.\/bits\.js'[\s\S]*from '\.\/decode-tensor\.js'/);
  });

  it('decode a packed model in a bare Node process to the same bytes', () => {
    const { weights, quantized } = mixedModel();
    const files = packModel({ format: 'layers-model', modelJson: { modelTopology: {} }, weights }, quantized);
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    writeFileSync(join(dir, 'manifest.json'), files.get('packed/manifest.json')!);
    writeFileSync(join(dir, 'weights.bin'), files.get('packed/weights.bin')!);
    const script = [
      "import { readFileSync } from 'node:fs';",
      "import { decodePacked } from './decoder.js';",
      "const manifest = JSON.parse(readFileSync(new URL('./manifest.json', import.meta.url), 'utf8'));",
      "const artifacts = decodePacked(manifest, readFileSync(new URL('./weights.bin', import.meta.url)));",
      "process.stdout.write(Buffer.from(artifacts.weightData).toString('base64'));",
    ].join('\n');
    writeFileSync(join(dir, 'check.mjs'), script);
    const decoded = execFileSync(process.execPath, [join(dir, 'check.mjs')], { encoding: 'utf8' });
    const direct = decodePacked(manifestOf(files), files.get('packed/weights.bin')!);
    expect(decoded).toBe(Buffer.from(direct.weightData).toString('base64'));
  });
});

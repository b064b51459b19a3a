/**
 * The seeded big layers model both issue-12 benches run on (bench/big.ts, bench/big-service.ts): `layers` ×
 * Dense 4096×4096 with biases (16 layers: 1.00 GiB of float32), in 4 MiB shards, written shard by shard from
 * one reused buffer so generating it costs one shard of memory whatever its size.
 */
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const BIG_UNITS = 4096;
export const BIG_SHARD_BYTES = 4 * 1024 * 1024;

/** xorshift32; a sum of four 16-bit uniforms is bell-shaped enough for weights (and fast at 268M values). */
function weightSource(seed: number): (scale: number) => number {
  let state = seed >>> 0 || 1;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  return (scale) => {
    const a = next();
    const b = next();
    const sum = (a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16);
    return (sum / 0x10000 - 2) * scale;
  };
}

/** Writes model.json and the shards into `dir`; returns the shard file names and the weight bytes. */
export async function writeBigModel(dir: string, layerCount = 16): Promise<{ shards: string[]; bytes: number }> {
  const weights: { name: string; shape: number[]; dtype: 'float32' }[] = [];
  for (let l = 0; l < layerCount; l++) {
    weights.push({ name: `dense_${l}/kernel`, shape: [BIG_UNITS, BIG_UNITS], dtype: 'float32' });
    weights.push({ name: `dense_${l}/bias`, shape: [BIG_UNITS], dtype: 'float32' });
  }
  const totalBytes = weights.reduce((sum, w) => sum + 4 * w.shape.reduce((a, b) => a * b, 1), 0);
  const shardCount = Math.ceil(totalBytes / BIG_SHARD_BYTES);
  const paths = Array.from({ length: shardCount }, (_, i) => `group1-shard${i + 1}of${shardCount}.bin`);
  const random = weightSource(12);
  const shard = new Float32Array(BIG_SHARD_BYTES / 4);
  let inShard = 0;
  let shardIndex = 0;
  const flush = async (): Promise<void> => {
    const file = await open(join(dir, paths[shardIndex++]), 'w');
    await file.write(new Uint8Array(shard.buffer, 0, inShard * 4));
    await file.close();
    inShard = 0;
  };
  for (const weight of weights) {
    const size = weight.shape.reduce((a, b) => a * b, 1);
    // Layers of different spread, kernels at about the fan-in scale, small biases.
    const scale = weight.name.endsWith('bias')
      ? 0.01
      : (0.5 + (weights.indexOf(weight) % 5) / 4) / Math.sqrt(BIG_UNITS);
    for (let i = 0; i < size; i++) {
      shard[inShard++] = random(scale);
      if (inShard === shard.length) await flush();
    }
  }
  if (inShard > 0) await flush();
  const layers = [
    { class_name: 'InputLayer', config: { batch_input_shape: [null, BIG_UNITS], dtype: 'float32', name: 'input' } },
    ...Array.from({ length: layerCount }, (_, l) => ({
      class_name: 'Dense',
      config: {
        name: `dense_${l}`,
        units: BIG_UNITS,
        activation: l === layerCount - 1 ? 'linear' : 'relu',
        use_bias: true,
      },
    })),
  ];
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'qaas bench (bench/big-model.ts)',
    convertedBy: null,
    modelTopology: {
      class_name: 'Sequential',
      config: { name: 'big', layers },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightsManifest: [{ paths, weights }],
  };
  await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
  return { shards: paths, bytes: totalBytes };
}

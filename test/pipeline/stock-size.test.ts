import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec } from '../../src/jobs/spec.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet, LoadedModel } from '../../src/model/types.js';
import { writeModel } from '../../src/model/write.js';
import { runJob } from '../../src/pipeline/run.js';
import { affine } from '../../src/quant/methods/affine.js';
import { parseMethodParams } from '../../src/quant/methods/index.js';
import { createRng } from '../../src/quant/rng.js';
import type { QuantizedTensor } from '../../src/quant/types.js';
import { buildMobileNetLikeModel } from '../fixtures/models.js';

const methods: Record<string, unknown>[] = [
  { name: 'affine', bits: 8 },
  { name: 'affine', bits: 8, granularity: 'per-channel' },
  { name: 'affine', bits: 4, granularity: 'per-channel' },
  { name: 'affine', bits: 12, symmetric: true },
  { name: 'float16' },
  { name: 'binary' },
  { name: 'binary', granularity: 'per-channel' },
  { name: 'ternary' },
  { name: 'pow2', bits: 4 },
  { name: 'kmeans', bits: 4 },
  { name: 'pq' },
];

function shardBytes(files: FileSet, prefix = ''): number {
  return [...files]
    .filter(([path]) => path.startsWith(prefix) && path.endsWith('.bin'))
    .reduce((sum, [, bytes]) => sum + bytes.byteLength, 0);
}

/** Every float weight stored as uint8 with a per-tensor min and scale, as `tensorflowjs_converter --quantize_uint8` does. */
function uint8Upload(model: LoadedModel): FileSet {
  const params = parseMethodParams({ name: 'affine', bits: 8 });
  const replacements = new Map<string, QuantizedTensor>();
  for (const weight of model.weights) {
    if (!(weight.values instanceof Float32Array)) continue;
    replacements.set(
      weight.name,
      affine.quantize(weight.values, [weight.values.length], params as never, createRng(0)),
    );
  }
  return writeModel(model, replacements);
}

const uploads = new Map<string, FileSet>();

beforeAll(async () => {
  await tf.setBackend('wasm');
  const float32 = await buildMobileNetLikeModel();
  uploads.set('float32', float32);
  uploads.set('uint8', uint8Upload(readModel(float32)));
});

describe.each(['float32', 'uint8'])('model/ of a %s upload', (upload) => {
  it.each(methods)(
    'is no larger than the upload for $name $bits $granularity, or the report says so',
    async (method) => {
      const files = uploads.get(upload)!;
      const { files: out, report } = await runJob(readModel(files), parseJobSpec({ method }), {}, { backend: 'wasm' });
      const before = shardBytes(files);
      const after = shardBytes(out, 'model/');
      console.log(
        `${upload} upload, ${JSON.stringify(method)}: model/ ${after} B ÷ upload ${before} B = ${(after / before).toFixed(3)}`,
      );
      // bytesBefore is what was uploaded, whatever the method did to the model before quantizing.
      expect(report.model.bytesBefore).toBe(before);
      expect(report.model.bytesAfter).toBe(after);
      if (after >= before) expect(report.warnings.some((w) => w.startsWith('model/ holds'))).toBe(true);
      else expect(report.warnings.some((w) => w.startsWith('model/ holds'))).toBe(false);
      expect(report.tensors.every((t) => Number.isFinite(t.sqnrDb))).toBe(true);
      if (upload === 'float32') expect(after).toBeLessThan(before);
    },
  );
});

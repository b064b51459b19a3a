/**
 * Specs that pass validation but that the model or data cannot satisfy (issue 10 item 8): the engine
 * fails them with an input error (SpecError, DatasetError, ModelError), which the worker fails once
 * without retrying, instead of a plain Error that ends as `internal` after every retry; and a graph that
 * already holds a node with the fake-quant suffix is simulated instead of refused.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJobSpec, SpecError } from '../../src/jobs/spec.js';
import { selectBackend } from '../../src/model/backend.js';
import { DatasetError, parseJsonDataset, type Dataset } from '../../src/model/dataset/index.js';
import { readModel } from '../../src/model/read.js';
import type { FileSet } from '../../src/model/types.js';
import { runJob } from '../../src/pipeline/run.js';
import { buildGraphModel, graphInput } from '../fixtures/models.js';

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

async function graphDataset(samples: number, labels: boolean): Promise<Dataset> {
  const x = tf.tidy(() => graphInput(samples, 11).arraySync());
  const y = Array.from({ length: samples }, (_, i) => i % 3);
  return parseJsonDataset(JSON.stringify(labels ? { x, y } : { x }));
}

/** The graph fixture with an extra node named as the simulation would name conv/Relu's fake-quant. */
function graphWithSuffixNode(): FileSet {
  const files = buildGraphModel();
  const json = JSON.parse(new TextDecoder().decode(files.get('model.json')));
  json.modelTopology.node.push({
    name: 'conv/Relu/fake_quant',
    op: 'Identity',
    input: ['conv/Relu'],
    attr: { T: { type: 'DT_FLOAT' } },
  });
  files.set('model.json', encode(json));
  return files;
}

beforeAll(async () => {
  await selectBackend('cpu');
});

describe('input only the engine can judge', () => {
  it('simulates activations on a graph that already has a node named <node>/fake_quant', async () => {
    const data = await graphDataset(16, true);
    const spec = parseJobSpec({
      method: { name: 'affine', bits: 8 },
      data: { calibration: 'c', evaluation: 'e' },
      activations: { bits: 8 },
    });
    const result = await runJob(
      readModel(graphWithSuffixNode()),
      spec,
      { calibration: data, evaluation: data },
      {
        backend: 'cpu',
      },
    );
    expect(result.report.activations?.map((a) => a.layer)).toContain('conv/Relu');
    expect(result.report.model.metrics.integer?.agreement).toBeGreaterThan(0.5);
    await data.close();
  });

  it('fails kind auto with every tensor skipped as a SpecError naming layers.skip', async () => {
    const data = await graphDataset(8, true);
    const spec = parseJobSpec({
      kind: 'auto',
      method: { name: 'affine' },
      layers: { skip: ['**'] },
      data: { evaluation: 'e' },
      target: { metric: 'agreement', maxDrop: 0.1 },
    });
    const run = runJob(readModel(buildGraphModel()), spec, { evaluation: data }, { backend: 'cpu' });
    await expect(run).rejects.toBeInstanceOf(SpecError);
    await expect(run).rejects.toThrow(/layers\.skip/);
    await data.close();
  });

  it('fails QAT on a training dataset without labels as a DatasetError', async () => {
    const data = await graphDataset(8, false);
    const spec = parseJobSpec({ kind: 'qat', method: { name: 'affine' }, data: { training: 't' } });
    const run = runJob(readModel(buildGraphModel()), spec, { training: data }, { backend: 'cpu' });
    await expect(run).rejects.toBeInstanceOf(DatasetError);
    await data.close();
  });

  it('fails binary activations on a graph model (no ReLU layers to replace) as a SpecError, PTQ and QAT', async () => {
    const data = await graphDataset(8, true);
    for (const kind of ['ptq', 'qat'] as const) {
      const spec = parseJobSpec({
        kind,
        method: { name: 'binary' },
        activations: { bits: 1 },
        data: kind === 'qat' ? { training: 't' } : {},
      });
      const run = runJob(readModel(buildGraphModel()), spec, { training: data }, { backend: 'cpu' });
      await expect(run).rejects.toBeInstanceOf(SpecError);
      await expect(run).rejects.toMatchObject({ problems: [{ path: '/activations/quantizer' }] });
    }
    await data.close();
  });
});

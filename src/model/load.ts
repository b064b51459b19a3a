/**
 * Loading a FileSet into a runnable tfjs model with the stock loaders, exactly as a user's
 * `tf.loadLayersModel(url)` would see the files: model.json plus every group's shards concatenated in
 * manifest order.
 */
import * as tf from '@tensorflow/tfjs';
import type { FileSet } from './types.js';

export async function fileSetArtifacts(files: FileSet): Promise<tf.io.ModelArtifacts> {
  const modelJsonBytes = files.get('model.json');
  if (modelJsonBytes === undefined) throw new Error('model.json is missing');
  const modelJson = JSON.parse(new TextDecoder().decode(modelJsonBytes)) as tf.io.ModelJSON;
  return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
    const specs = manifest.flatMap((group) => group.weights);
    const shards = manifest.flatMap((group) =>
      group.paths.map((p) => {
        const bytes = files.get(p.replace(/^\.\//, ''));
        if (bytes === undefined) throw new Error(`shard ${p} is missing`);
        return bytes;
      }),
    );
    const data = new Uint8Array(shards.reduce((n, shard) => n + shard.byteLength, 0));
    shards.reduce((at, shard) => (data.set(shard, at), at + shard.byteLength), 0);
    return [specs, data.buffer];
  });
}

export type RunnableModel = tf.LayersModel | tf.GraphModel;

/** A layers-model FileSet becomes a tf.LayersModel, a graph-model one a tf.GraphModel. */
export async function loadRunnable(files: FileSet): Promise<RunnableModel> {
  const artifacts = await fileSetArtifacts(files);
  const handler = { load: async () => artifacts };
  return artifacts.format === 'graph-model' || isGraphTopology(artifacts.modelTopology)
    ? tf.loadGraphModel(handler)
    : tf.loadLayersModel(handler);
}

function isGraphTopology(topology: unknown): boolean {
  return typeof topology === 'object' && topology !== null && 'node' in topology;
}

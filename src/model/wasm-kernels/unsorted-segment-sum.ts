/**
 * UnsortedSegmentSum for the wasm backend (tfjs 4.22 ships none); the gradient of gather, so of Embedding:
 *   out[s, ...] = Σ_{i : ids[i] = s} x[i, ...],   s ∈ [0, numSegments).
 * A ScatterNd with one row index per id sums duplicate rows, which is exactly this. Ids outside
 * [0, numSegments) are dropped (as TensorFlow drops negative ids and the cpu backend drops every stray id):
 * they go to an extra row that is sliced off. segmentIds may have any rank that prefixes x's shape.
 */
import * as tf from '@tensorflow/tfjs';
import { asTensor } from './conv-geometry.js';

function unsortedSegmentSum({ inputs, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x, segmentIds } = inputs as tf.UnsortedSegmentSumInputs;
  const { numSegments } = attrs as unknown as tf.UnsortedSegmentSumAttrs;
  return tf.tidy(() => {
    const values = asTensor(x!);
    const idsByRow = asTensor(segmentIds!);
    const ids = tf.reshape(idsByRow, [-1]);
    const count = ids.shape[0];
    const rowShape = values.shape.slice(idsByRow.rank);
    const rows = tf.reshape(values, [count, ...rowShape]);
    const inRange = tf.logicalAnd(tf.greaterEqual(ids, 0), tf.less(ids, numSegments));
    const target = tf.where(inRange, ids, tf.fill([count], numSegments, 'int32'));
    const summed = tf.scatterND(tf.reshape(target, [count, 1]), rows, [numSegments + 1, ...rowShape]);
    return tf.slice(summed, 0, numSegments);
  });
}

export const unsortedSegmentSumConfig: tf.KernelConfig = {
  kernelName: tf.UnsortedSegmentSum,
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSum,
};

/**
 * Conv2DBackpropFilter for the wasm backend (tfjs 4.22 ships none): the gradient of a convolution with
 * respect to its filter,
 *   dW[i, j, c, o] = Σ_{b, p, q} x_pad[b, p·sh + i, q·sw + j, c] · dy[b, p, q, o],
 * is itself a valid convolution once batch and channels swap places: the input becomes [C, H, W, B] (each
 * input channel an image whose channels are the examples), dy becomes a [P, Q, B, O] filter, and the stride
 * of the forward convolution becomes the dilation. One XNNPACK convolution then does the whole sum.
 */
import * as tf from '@tensorflow/tfjs';
import { asTensor, inputWindow } from './conv-geometry.js';

function conv2dBackpropFilter({ inputs, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x, dy } = inputs as tf.Conv2DBackpropFilterInputs;
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  return tf.tidy(() => {
    const toNhwc = (t: tf.Tensor4D): tf.Tensor4D => (dataFormat === 'NCHW' ? tf.transpose(t, [0, 2, 3, 1]) : t);
    const x4 = toNhwc(asTensor<tf.Rank.R4>(x!));
    const dy4 = toNhwc(asTensor<tf.Rank.R4>(dy!));
    const info = tf.backend_util.computeConv2DInfo(x4.shape, filterShape, strides, 1, pad, dimRoundingMode);
    if (dy4.shape[1] !== info.outHeight || dy4.shape[2] !== info.outWidth) {
      throw new Error(
        `Conv2DBackpropFilter on wasm: dy is ${dy4.shape[1]}×${dy4.shape[2]} but the convolution outputs ${info.outHeight}×${info.outWidth}`,
      );
    }
    const images = tf.transpose(inputWindow(x4, info), [3, 1, 2, 0]);
    const dyFilter = tf.transpose(dy4, [1, 2, 0, 3]);
    const grad = tf.conv2d(images, dyFilter, 1, 'valid', 'NHWC', [info.strideHeight, info.strideWidth]);
    return tf.transpose(grad, [1, 2, 0, 3]);
  });
}

export const conv2dBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: 'wasm',
  kernelFunc: conv2dBackpropFilter,
};

/**
 * DepthwiseConv2dNativeBackpropFilter for the wasm backend (tfjs 4.22 ships none):
 *   dW[i, j, c, m] = Σ_{b, p, q} x_pad[b, p·sh + i·dh, q·sw + j·dw, c] · dy[b, p, q, c·M + m].
 * Folding the batch into the channels (x → [1, H, W, B·C], dy → a [P, Q, B·C, M] depthwise filter) makes
 * this one depthwise convolution whose stride is the forward dilation and whose dilation is the forward
 * stride; summing its [I, J, B, C, M] output over B gives the gradient. tfjs itself refuses gradients of
 * dilated depthwise convolutions, but this kernel handles dilation whenever the stride is 1.
 */
import * as tf from '@tensorflow/tfjs';
import { asTensor, inputWindow } from './conv-geometry.js';

function depthwiseConv2dBackpropFilter({ inputs, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { x, dy } = inputs as tf.DepthwiseConv2dNativeBackpropFilterInputs;
  const { strides, dilations, pad, dimRoundingMode, filterShape } =
    attrs as unknown as tf.DepthwiseConv2dNativeBackpropFilterAttrs;
  return tf.tidy(() => {
    const x4 = asTensor<tf.Rank.R4>(x!);
    const dy4 = asTensor<tf.Rank.R4>(dy!);
    const info = tf.backend_util.computeConv2DInfo(
      x4.shape,
      filterShape,
      strides,
      dilations ?? 1,
      pad,
      dimRoundingMode,
      true,
    );
    if (
      !tf.backend_util.eitherStridesOrDilationsAreOne(
        [info.strideHeight, info.strideWidth],
        [info.dilationHeight, info.dilationWidth],
      )
    ) {
      throw new Error('DepthwiseConv2dNativeBackpropFilter on wasm: strides and dilations cannot both exceed 1');
    }
    const [filterHeight, filterWidth, inChannels, multiplier] = filterShape;
    const [batch] = x4.shape;
    const window = inputWindow(x4, info);
    const [, windowHeight, windowWidth] = window.shape;
    const folded = tf.reshape(tf.transpose(window, [1, 2, 0, 3]), [1, windowHeight, windowWidth, batch * inChannels]);
    const dyFilter = tf.reshape(tf.transpose(dy4, [1, 2, 0, 3]), [
      info.outHeight,
      info.outWidth,
      batch * inChannels,
      multiplier,
    ]);
    const perExample = tf.depthwiseConv2d(
      folded as tf.Tensor4D,
      dyFilter as tf.Tensor4D,
      [info.dilationHeight, info.dilationWidth],
      'valid',
      'NHWC',
      [info.strideHeight, info.strideWidth],
    );
    return tf.sum(tf.reshape(perExample, [filterHeight, filterWidth, batch, inChannels, multiplier]), 2);
  });
}

export const depthwiseConv2dBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.DepthwiseConv2dNativeBackpropFilter,
  backendName: 'wasm',
  kernelFunc: depthwiseConv2dBackpropFilter,
};

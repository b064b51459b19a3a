/**
 * DepthwiseConv2dNativeBackpropInput for the wasm backend (tfjs 4.22 ships none): the transposed depthwise
 * convolution
 *   dx[b, y, x, c] = Σ_{i, j, m} dy[b, p, q, c·M + m] · W[i, j, c, m]   over p·sh + i·dh − padTop = y (and alike for x).
 * Spreading dy by the stride (zeros between pixels), padding it by (I−1)·dh − padTop on top (the bottom
 * makes the output H rows), and running a stride-1 depthwise convolution with the spatially flipped filter
 * as [I, J, C·M, 1] gives every (c, m) term; summing over m gives dx.
 */
import * as tf from '@tensorflow/tfjs';
import { asTensor, insertZeros, padOrCropSpatial } from './conv-geometry.js';

function depthwiseConv2dBackpropInput({ inputs, attrs }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const { dy, filter } = inputs as tf.DepthwiseConv2dNativeBackpropInputInputs;
  const { strides, dilations, pad, dimRoundingMode, inputShape } =
    attrs as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs;
  return tf.tidy(() => {
    const dy4 = asTensor<tf.Rank.R4>(dy!);
    const filter4 = asTensor<tf.Rank.R4>(filter!);
    const info = tf.backend_util.computeConv2DInfo(
      inputShape,
      filter4.shape,
      strides,
      dilations ?? 1,
      pad,
      dimRoundingMode,
      true,
    );
    const [batch, inHeight, inWidth, inChannels] = inputShape;
    const [filterHeight, filterWidth, , multiplier] = filter4.shape;
    const spread = insertZeros(dy4, info.strideHeight, info.strideWidth);
    const { top, left } = info.padInfo;
    const spanHeight = (filterHeight - 1) * info.dilationHeight;
    const spanWidth = (filterWidth - 1) * info.dilationWidth;
    const framed = padOrCropSpatial(
      spread,
      spanHeight - top,
      inHeight + top - (info.outHeight - 1) * info.strideHeight - 1,
      spanWidth - left,
      inWidth + left - (info.outWidth - 1) * info.strideWidth - 1,
    );
    const flipped = tf.reshape(tf.reverse(filter4, [0, 1]), [filterHeight, filterWidth, inChannels * multiplier, 1]);
    const terms = tf.depthwiseConv2d(framed, flipped as tf.Tensor4D, 1, 'valid', 'NHWC', [
      info.dilationHeight,
      info.dilationWidth,
    ]);
    if (multiplier === 1) return terms;
    return tf.sum(tf.reshape(terms, [batch, inHeight, inWidth, inChannels, multiplier]), 4);
  });
}

export const depthwiseConv2dBackpropInputConfig: tf.KernelConfig = {
  kernelName: tf.DepthwiseConv2dNativeBackpropInput,
  backendName: 'wasm',
  kernelFunc: depthwiseConv2dBackpropInput,
};

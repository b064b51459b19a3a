/**
 * Shared geometry for the wasm gradient kernels: turning the conv attrs into explicit padding, the
 * window of input rows a convolution actually reads, and zero insertion for transposed convolutions.
 * The kernels express each gradient as a forward (depthwise) convolution, which the wasm backend runs
 * through XNNPACK, instead of looping in JS.
 */
import * as tf from '@tensorflow/tfjs';

/** Kernel inputs arrive as TensorInfo; wrapping them lets the kernels use public ops (the wrapper shares the data). */
export function asTensor<R extends tf.Rank>(info: tf.TensorInfo): tf.Tensor<R> {
  return info instanceof tf.Tensor
    ? (info as tf.Tensor<R>)
    : (tf.engine().makeTensorFromTensorInfo(info) as tf.Tensor<R>);
}

/**
 * Pads (positive amounts) or crops (negative amounts) the two spatial axes of an NHWC tensor. Crops happen
 * when `valid` padding leaves trailing rows no window reaches, or when explicit padding is wider than a kernel.
 */
export function padOrCropSpatial(
  x: tf.Tensor4D,
  top: number,
  bottom: number,
  left: number,
  right: number,
): tf.Tensor4D {
  return tf.tidy(() => {
    const [batch, height, width, channels] = x.shape;
    const cropTop = Math.max(0, -top);
    const cropLeft = Math.max(0, -left);
    const keptHeight = height - cropTop - Math.max(0, -bottom);
    const keptWidth = width - cropLeft - Math.max(0, -right);
    const cropped =
      keptHeight === height && keptWidth === width
        ? x
        : tf.slice(x, [0, cropTop, cropLeft, 0], [batch, keptHeight, keptWidth, channels]);
    if (top <= 0 && bottom <= 0 && left <= 0 && right <= 0) return cropped;
    return tf.pad(cropped, [
      [0, 0],
      [Math.max(0, top), Math.max(0, bottom)],
      [Math.max(0, left), Math.max(0, right)],
      [0, 0],
    ]);
  });
}

/**
 * The padded input cut to exactly the rows and columns the forward convolution's windows touch:
 * (kernel − 1)·dilation + (out − 1)·stride + 1 along each axis, starting at −padTop / −padLeft.
 */
export function inputWindow(x: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  const neededHeight = (info.filterHeight - 1) * info.dilationHeight + (info.outHeight - 1) * info.strideHeight + 1;
  const neededWidth = (info.filterWidth - 1) * info.dilationWidth + (info.outWidth - 1) * info.strideWidth + 1;
  const { top, left } = info.padInfo;
  return padOrCropSpatial(x, top, neededHeight - info.inHeight - top, left, neededWidth - info.inWidth - left);
}

/** Inserts stride − 1 zeros between neighbouring pixels: [B, H, W, C] → [B, (H−1)·sh+1, (W−1)·sw+1, C]. */
export function insertZeros(x: tf.Tensor4D, strideHeight: number, strideWidth: number): tf.Tensor4D {
  if (strideHeight === 1 && strideWidth === 1) return x;
  return tf.tidy(() => {
    const [batch, height, width, channels] = x.shape;
    const spread = tf.pad(tf.reshape(x, [batch, height, 1, width, 1, channels]), [
      [0, 0],
      [0, 0],
      [0, strideHeight - 1],
      [0, 0],
      [0, strideWidth - 1],
      [0, 0],
    ]);
    const dilated = tf.reshape(spread, [batch, height * strideHeight, width * strideWidth, channels]) as tf.Tensor4D;
    return tf.slice(
      dilated,
      [0, 0, 0, 0],
      [batch, (height - 1) * strideHeight + 1, (width - 1) * strideWidth + 1, channels],
    );
  });
}

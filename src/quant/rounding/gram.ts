/**
 * Second-moment statistics of a layer's inputs, the one thing GPTQ and AdaRound need from calibration data.
 * For a linear map y = Wᵀx (tfjs kernel W of shape [inputs, outputs]) the squared output error of a rounding
 * Ŵ over the calibration rows x₁…xₙ is
 *
 *   (1/n) Σᵣ ‖(Ŵ − W)ᵀxᵣ‖² = Σ_c Δ_cᵀ G Δ_c,   G = (1/n) Σᵣ xᵣxᵣᵀ,   Δ_c = column c of Ŵ − W,
 *
 * and GPTQ's Hessian of that error is H = 2G. A convolution is the same map over its im2col patches (one row
 * per output position, elements ordered [kernel row, kernel column, input channel] as the tfjs kernel is);
 * a depthwise convolution is one such map per input channel, over that channel's kernel-sized patches, so it
 * keeps one G per channel. Positions of big feature maps are sub-sampled (seeded) to bound the cost.
 *
 * Only the upper triangle is accumulated; `covariance` mirrors it. Float64 throughout: these sums feed a
 * Cholesky factorization, where float32 round-off makes a nearly singular matrix indefinite.
 */
import { createRng, type Rng } from '../rng.js';

export type Padding = 'same' | 'valid' | { top: number; bottom: number; left: number; right: number };

export type LayerGeometry =
  | { kind: 'dense'; inputs: number }
  | {
      kind: 'conv2d' | 'depthwise';
      kernelHeight: number;
      kernelWidth: number;
      channels: number;
      strides: [number, number];
      dilations: [number, number];
      padding: Padding;
    };

export interface StatisticsOptions {
  /** Output positions sampled per sample of a convolution (all when the map has fewer). */
  maxPositions: number;
  seed: number;
}

/** Output size and leading padding of one spatial axis, as TensorFlow computes them. */
function axis(size: number, kernel: number, stride: number, dilation: number, padding: Padding, first: boolean) {
  const extent = (kernel - 1) * dilation + 1;
  if (padding === 'valid') return { out: Math.max(0, Math.floor((size - extent) / stride) + 1), before: 0 };
  if (padding === 'same') {
    const out = Math.ceil(size / stride);
    const total = Math.max(0, (out - 1) * stride + extent - size);
    return { out, before: Math.floor(total / 2) };
  }
  const before = first ? padding.top : padding.left;
  const after = first ? padding.bottom : padding.right;
  return { out: Math.max(0, Math.floor((size + before + after - extent) / stride) + 1), before };
}

export class InputStatistics {
  /** Number of separate matrices: 1, or a depthwise layer's input channels. */
  readonly groups: number;
  /** Rows and columns of each matrix. */
  readonly size: number;
  /** Rows observed (samples × positions). */
  count = 0;
  private readonly sums: Float64Array[];
  private readonly rng: Rng;
  private readonly row: Float64Array;

  constructor(
    readonly geometry: LayerGeometry,
    private readonly options: StatisticsOptions,
  ) {
    if (geometry.kind === 'dense') {
      this.groups = 1;
      this.size = geometry.inputs;
    } else {
      const taps = geometry.kernelHeight * geometry.kernelWidth;
      this.groups = geometry.kind === 'depthwise' ? geometry.channels : 1;
      this.size = geometry.kind === 'depthwise' ? taps : taps * geometry.channels;
    }
    this.sums = Array.from({ length: this.groups }, () => new Float64Array(this.size * this.size));
    this.row = new Float64Array(this.size);
    this.rng = createRng(options.seed);
  }

  /**
   * Adds a batch of layer inputs: [..., inputs] for a dense layer (every leading index is a row),
   * [batch, height, width, channels] (NHWC) for a convolution.
   */
  observe(x: Float32Array, shape: readonly number[]): void {
    const geometry = this.geometry;
    if (geometry.kind === 'dense') {
      if (shape[shape.length - 1] !== geometry.inputs) {
        throw new Error(`layer input has ${shape[shape.length - 1]} features, the kernel ${geometry.inputs}`);
      }
      for (let start = 0; start < x.length; start += geometry.inputs) {
        for (let i = 0; i < geometry.inputs; i++) this.row[i] = x[start + i];
        this.addRow(this.sums[0], this.row, this.size);
        this.count++;
      }
      return;
    }
    const [batch, height, width, channels] = shape;
    if (shape.length !== 4 || channels !== geometry.channels) {
      throw new Error(`convolution input [${shape.join(', ')}] does not have ${geometry.channels} channels (NHWC)`);
    }
    const { kernelHeight, kernelWidth, strides, dilations, padding } = geometry;
    const rows = axis(height, kernelHeight, strides[0], dilations[0], padding, true);
    const cols = axis(width, kernelWidth, strides[1], dilations[1], padding, false);
    const positions = rows.out * cols.out;
    const sampled = Math.min(positions, this.options.maxPositions);
    for (let n = 0; n < batch; n++) {
      const base = n * height * width * channels;
      for (let p = 0; p < sampled; p++) {
        const position = sampled === positions ? p : this.rng.int(positions);
        const top = Math.floor(position / cols.out) * strides[0] - rows.before;
        const left = (position % cols.out) * strides[1] - cols.before;
        if (geometry.kind === 'conv2d') {
          let k = 0;
          for (let i = 0; i < kernelHeight; i++) {
            const y = top + i * dilations[0];
            for (let j = 0; j < kernelWidth; j++) {
              const xx = left + j * dilations[1];
              const inside = y >= 0 && y < height && xx >= 0 && xx < width;
              const at = base + (y * width + xx) * channels;
              for (let c = 0; c < channels; c++) this.row[k++] = inside ? x[at + c] : 0;
            }
          }
          this.addRow(this.sums[0], this.row, this.size);
        } else {
          for (let c = 0; c < channels; c++) {
            let k = 0;
            for (let i = 0; i < kernelHeight; i++) {
              const y = top + i * dilations[0];
              for (let j = 0; j < kernelWidth; j++) {
                const xx = left + j * dilations[1];
                const inside = y >= 0 && y < height && xx >= 0 && xx < width;
                this.row[k++] = inside ? x[base + (y * width + xx) * channels + c] : 0;
              }
            }
            this.addRow(this.sums[c], this.row, this.size);
          }
        }
      }
      this.count += sampled;
    }
  }

  private addRow(sum: Float64Array, row: Float64Array, size: number): void {
    for (let i = 0; i < size; i++) {
      const xi = row[i];
      // ReLU outputs are mostly zero: skipping them is most of the speed.
      if (xi === 0) continue;
      const offset = i * size;
      for (let j = i; j < size; j++) sum[offset + j] += xi * row[j];
    }
  }

  /** G = (1/n) Σ x xᵀ of group `group` (full symmetric matrix, row-major). */
  covariance(group = 0): Float64Array {
    const size = this.size;
    const sum = this.sums[group];
    const g = new Float64Array(size * size);
    const scale = this.count > 0 ? 1 / this.count : 0;
    for (let i = 0; i < size; i++) {
      for (let j = i; j < size; j++) {
        const value = sum[i * size + j] * scale;
        g[i * size + j] = value;
        g[j * size + i] = value;
      }
    }
    return g;
  }
}

const TILE = 16;

/** Σ_c Δ_cᵀ G Δ_c for Δ [rows, cols] (row-major) and G [rows, rows]; `product` (rows × cols) receives GΔ. */
export function quadraticError(
  g: Float64Array,
  delta: Float64Array,
  rows: number,
  cols: number,
  product = new Float64Array(rows * cols),
): number {
  product.fill(0);
  // Row-wise axpy over tiles of TILE output rows: each row of Δ is read once per tile while the tile's rows
  // of GΔ stay in cache (one pass per output row would stream all of Δ from memory rows times).
  for (let i0 = 0; i0 < rows; i0 += TILE) {
    const i1 = Math.min(rows, i0 + TILE);
    for (let k = 0; k < rows; k++) {
      const row = k * cols;
      for (let i = i0; i < i1; i++) {
        const gik = g[i * rows + k];
        if (gik === 0) continue;
        const out = i * cols;
        for (let c = 0; c < cols; c++) product[out + c] += gik * delta[row + c];
      }
    }
  }
  let sum = 0;
  for (let i = 0; i < rows * cols; i++) sum += delta[i] * product[i];
  return sum;
}

/**
 * Squared output error of the rounding Ŵ of W summed over the output columns `columns` of a [rows,
 * totalColumns] kernel (row-major), averaged over the observed rows: Σ_c Δ_cᵀ G Δ_c, G of size rows × rows.
 */
export function outputError(
  original: ArrayLike<number>,
  rounded: ArrayLike<number>,
  totalColumns: number,
  columns: readonly number[],
  g: Float64Array,
): number {
  const rows = g.length === 0 ? 0 : Math.round(Math.sqrt(g.length));
  const cols = columns.length;
  const delta = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      delta[r * cols + k] = rounded[r * totalColumns + columns[k]] - original[r * totalColumns + columns[k]];
    }
  }
  return quadraticError(g, delta, rows, cols);
}

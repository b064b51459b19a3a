/**
 * Product quantization (Jégou, Douze & Schmid 2011), applied to network weights as in Gong et al. 2014,
 * "Compressing Deep Convolutional Networks using Vector Quantization". The tensor is viewed as a matrix
 * [R, C] (C = the last axis, the output channel); each column is cut into sub-vectors of d consecutive rows,
 * and the sub-vectors of row block j (one per column) form sub-space j, clustered by its own k-means with
 * k = 2^b centroids of length d:  ŵ(j, c) = codebook_j[code(j, c)].  The layout is `Encoding` kind 'pq'
 * (src/quant/types.ts), decoded by decodeTensor. A short last block (R not a multiple of d) clusters only the
 * rows it has; its codebook keeps length-d entries whose missing rows are 0 and never read.
 *
 * `codebooks: 'shared'` instead trains ONE codebook of 2^b centroids on the sub-vectors of all blocks, as in
 * Gong et al.'s compression setting where a few codebooks serve many sub-vectors; it is stored as `subspaces: 1`
 * and every block decodes through it. Training uses at most `trainingSample` full-length sub-vectors (a seeded
 * subsample without replacement); afterwards every sub-vector is assigned exactly to its nearest float32
 * centroid (a short last block compares only the rows it has).
 *
 * Storage: b bits per sub-vector plus 32 bits per codebook float: per-block ≈ b/d + 32·2^b/C bits per weight
 * (C = columns; 10 at b = 8, d = 4, C = 1024 — worse than int8), shared ≈ b/d + 32·2^b·d/n (n = elements;
 * 2.03 on a [1024, 1024] kernel). k-means: k-means++ seeding (seeded), Lloyd until no assignment changes or
 * maxIterations. The default stays 'per-block' so existing job specs quantize exactly as before.
 */
import { Type, type Static } from '@sinclair/typebox';
import { decodeTensor } from '../packed/decode-tensor.js';
import type { Rng } from '../rng.js';
import type { Codes, QuantMethod, QuantizedTensor } from '../types.js';
import { codeArray, seedField } from './common.js';

export const PqParams = Type.Object(
  {
    name: Type.Literal('pq', { default: 'pq' }),
    bits: Type.Integer({ minimum: 1, maximum: 12, default: 8, description: '2^bits centroids per sub-space' }),
    subvectorLength: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: 4,
      description: 'd: rows of one column that share a code',
    }),
    maxIterations: Type.Integer({ minimum: 1, maximum: 1000, default: 25, description: 'Lloyd iterations at most' }),
    codebooks: Type.Union([Type.Literal('per-block'), Type.Literal('shared')], {
      default: 'per-block',
      description: 'per-block: one codebook per block of d rows; shared: one codebook for all sub-vectors',
    }),
    trainingSample: Type.Integer({
      minimum: 256,
      maximum: 16777216,
      default: 65536,
      description: 'shared: at most this many sub-vectors (seeded subsample) train the codebook',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);

export type PqParams = Static<typeof PqParams>;

/**
 * One sub-space: `count` points of `dim` values each, contiguous in `points`. Fills `centroids`
 * ([levels][dim], float64) and `assignment` with a local k-means solution.
 */
function clusterBlock(
  points: Float64Array,
  count: number,
  dim: number,
  levels: number,
  maxIterations: number,
  rng: Rng,
  centroids: Float64Array,
  assignment: Int32Array,
): void {
  if (count <= levels) {
    // Fewer sub-vectors than centroids: each is its own centroid, the rest repeat the last one.
    for (let p = 0; p < levels; p++) {
      const source = Math.min(p, count - 1) * dim;
      for (let o = 0; o < dim; o++) centroids[p * dim + o] = points[source + o];
    }
    for (let p = 0; p < count; p++) assignment[p] = p;
    return;
  }
  seedPlusPlus(points, count, dim, levels, rng, centroids);
  lloydHamerly(points, count, dim, levels, maxIterations, centroids, assignment);
}

function squaredDistance(a: Float64Array, aOffset: number, b: Float64Array, bOffset: number, dim: number): number {
  let sum = 0;
  for (let o = 0; o < dim; o++) {
    const delta = a[aOffset + o] - b[bOffset + o];
    sum += delta * delta;
  }
  return sum;
}

/**
 * Lloyd's algorithm with Hamerly's bounds (Hamerly 2010, "Making k-means even faster"): per point an upper
 * bound on the distance to its centroid and a lower bound on the distance to any other; a point whose upper
 * bound is below both the lower bound and half the distance from its centroid to the nearest other centroid
 * cannot change cluster, so most points skip the k distances after the first few iterations. Same fixed
 * point as plain Lloyd. Stops when no assignment changes; the centroids end as the means of the assignment
 * (an empty cluster keeps its centroid).
 */
function lloydHamerly(
  points: Float64Array,
  count: number,
  dim: number,
  levels: number,
  maxIterations: number,
  centroids: Float64Array,
  assignment: Int32Array,
): void {
  const upper = new Float64Array(count);
  const lower = new Float64Array(count);
  const sums = new Float64Array(levels * dim);
  const sizes = new Float64Array(levels);
  const drift = new Float64Array(levels);
  const halfGap = new Float64Array(levels);

  const scan = (p: number): void => {
    let best = 0;
    let first = Infinity;
    let second = Infinity;
    for (let cluster = 0; cluster < levels; cluster++) {
      const gap = squaredDistance(points, p * dim, centroids, cluster * dim, dim);
      if (gap < first) {
        second = first;
        first = gap;
        best = cluster;
      } else if (gap < second) second = gap;
    }
    assignment[p] = best;
    upper[p] = Math.sqrt(first);
    lower[p] = Math.sqrt(second);
  };
  const moveToMeans = (): void => {
    sums.fill(0);
    sizes.fill(0);
    for (let p = 0; p < count; p++) {
      const cluster = assignment[p];
      sizes[cluster]++;
      for (let o = 0; o < dim; o++) sums[cluster * dim + o] += points[p * dim + o];
    }
    for (let cluster = 0; cluster < levels; cluster++) {
      drift[cluster] = 0;
      if (sizes[cluster] === 0) continue;
      let moved = 0;
      for (let o = 0; o < dim; o++) {
        const mean = sums[cluster * dim + o] / sizes[cluster];
        const delta = mean - centroids[cluster * dim + o];
        moved += delta * delta;
        centroids[cluster * dim + o] = mean;
      }
      drift[cluster] = Math.sqrt(moved);
    }
  };

  for (let p = 0; p < count; p++) scan(p);
  let changed = count;
  for (let iteration = 1; iteration < maxIterations && changed > 0; iteration++) {
    moveToMeans();
    let largest = 0;
    let largestAt = -1;
    let secondLargest = 0;
    for (let cluster = 0; cluster < levels; cluster++) {
      if (drift[cluster] > largest) {
        secondLargest = largest;
        largest = drift[cluster];
        largestAt = cluster;
      } else if (drift[cluster] > secondLargest) secondLargest = drift[cluster];
    }
    for (let cluster = 0; cluster < levels; cluster++) {
      let nearest = Infinity;
      for (let other = 0; other < levels; other++) {
        if (other === cluster) continue;
        const gap = squaredDistance(centroids, cluster * dim, centroids, other * dim, dim);
        if (gap < nearest) nearest = gap;
      }
      halfGap[cluster] = Math.sqrt(nearest) / 2;
    }
    changed = 0;
    for (let p = 0; p < count; p++) {
      const cluster = assignment[p];
      upper[p] += drift[cluster];
      lower[p] -= cluster === largestAt ? secondLargest : largest;
      const bound = Math.max(halfGap[cluster], lower[p]);
      if (upper[p] <= bound) continue;
      upper[p] = Math.sqrt(squaredDistance(points, p * dim, centroids, cluster * dim, dim));
      if (upper[p] <= bound) continue;
      scan(p);
      if (assignment[p] !== cluster) changed++;
    }
  }
  if (changed > 0) moveToMeans();
}

/**
 * k-means++ (Arthur & Vassilvitskii 2007): each next centroid is drawn with probability ∝ D², the squared
 * distance to the closest centroid so far. When every point already coincides with a centroid (fewer distinct
 * sub-vectors than centroids) the rest repeat the last one, so such blocks are reconstructed exactly.
 */
function seedPlusPlus(
  points: Float64Array,
  count: number,
  dim: number,
  levels: number,
  rng: Rng,
  centroids: Float64Array,
): void {
  const nearest = new Float64Array(count).fill(Infinity);
  let chosen = rng.int(count);
  for (let cluster = 0; cluster < levels; cluster++) {
    for (let o = 0; o < dim; o++) centroids[cluster * dim + o] = points[chosen * dim + o];
    if (cluster === levels - 1) return;
    let total = 0;
    for (let p = 0; p < count; p++) {
      let distance = 0;
      for (let o = 0; o < dim; o++) {
        const delta = points[p * dim + o] - centroids[cluster * dim + o];
        distance += delta * delta;
      }
      if (distance < nearest[p]) nearest[p] = distance;
      total += nearest[p];
    }
    if (total === 0) continue;
    let target = rng.next() * total;
    for (let p = 0; p < count; p++) {
      if (nearest[p] === 0) continue;
      chosen = p;
      target -= nearest[p];
      if (target < 0) break;
    }
  }
}

type PqEncoding = Extract<QuantizedTensor['encoding'], { kind: 'pq' }>;

/**
 * k-means on the full-length sub-vectors of all blocks (sub-vector (j, c) = rows j·d .. j·d+d−1 of column c),
 * or on a seeded subsample of `trainingSample` of them (partial Fisher–Yates, so without replacement).
 * Returns the float32 codebook [2^bits][d].
 */
function trainSharedCodebook(
  weights: Float32Array,
  rows: number,
  columns: number,
  d: number,
  levels: number,
  params: PqParams,
  rng: Rng,
): Float32Array {
  const total = Math.floor(rows / d) * columns;
  const count = Math.min(total, params.trainingSample);
  const order = new Int32Array(total);
  for (let i = 0; i < total; i++) order[i] = i;
  if (count < total) {
    for (let i = 0; i < count; i++) {
      const pick = i + rng.int(total - i);
      const swap = order[i];
      order[i] = order[pick];
      order[pick] = swap;
    }
  }
  const points = new Float64Array(count * d);
  for (let p = 0; p < count; p++) {
    const block = Math.floor(order[p] / columns);
    const c = order[p] - block * columns;
    for (let o = 0; o < d; o++) points[p * d + o] = weights[(block * d + o) * columns + c];
  }
  const centroids = new Float64Array(levels * d);
  clusterBlock(points, count, d, levels, params.maxIterations, rng, centroids, new Int32Array(count));
  return Float32Array.from(centroids);
}

/**
 * Codes every sub-vector with its nearest centroid of the stored (float32) codebook, so the code is optimal
 * for what the decoder reads even for sub-vectors the subsample left out. A short last block measures
 * distance over the rows it has.
 */
function assignShared(
  weights: Float32Array,
  rows: number,
  columns: number,
  d: number,
  levels: number,
  codebook: Float32Array,
  codes: Codes,
): void {
  const point = new Float64Array(d);
  for (let block = 0; block * d < rows; block++) {
    const dim = Math.min(d, rows - block * d);
    for (let c = 0; c < columns; c++) {
      for (let o = 0; o < dim; o++) point[o] = weights[(block * d + o) * columns + c];
      let best = 0;
      let nearest = Infinity;
      for (let cluster = 0; cluster < levels; cluster++) {
        let distance = 0;
        for (let o = 0; o < dim; o++) {
          const delta = point[o] - codebook[cluster * d + o];
          distance += delta * delta;
        }
        if (distance < nearest) {
          nearest = distance;
          best = cluster;
        }
      }
      codes[block * columns + c] = best;
    }
  }
}

function quantize(weights: Float32Array, shape: readonly number[], params: PqParams, rng: Rng): QuantizedTensor {
  const { bits, subvectorLength: d } = params;
  const levels = 2 ** bits;
  const size = weights.length;
  if (shape.reduce((a, b) => a * b, 1) !== size) {
    throw new RangeError(`pq: ${size} values for shape [${shape.join(', ')}]`);
  }
  const columns = shape.length > 1 ? shape[shape.length - 1] : 1;
  const rows = columns > 0 ? size / columns : 0;
  const blocks = Math.ceil(rows / d);
  const codes: Codes = codeArray(blocks * columns, bits);
  for (let w = 0; w < size; w++) {
    if (!Number.isFinite(weights[w])) throw new RangeError('pq: weights must be finite');
  }

  if (params.codebooks === 'shared' && blocks > 1) {
    const codebook = trainSharedCodebook(weights, rows, columns, d, levels, params, rng);
    assignShared(weights, rows, columns, d, levels, codebook, codes);
    return result({ kind: 'pq', bits, subvectorLength: d, subspaces: 1, codebook }, codes, shape, size);
  }

  const codebook = new Float32Array(blocks * levels * d);
  const points = new Float64Array(columns * d);
  const centroids = new Float64Array(levels * d);
  const assignment = new Int32Array(columns);
  for (let block = 0; block < blocks; block++) {
    const firstRow = block * d;
    const dim = Math.min(d, rows - firstRow);
    for (let c = 0; c < columns; c++) {
      for (let o = 0; o < dim; o++) points[c * dim + o] = weights[(firstRow + o) * columns + c];
    }
    clusterBlock(points, columns, dim, levels, params.maxIterations, rng, centroids, assignment);
    const base = block * levels * d;
    for (let cluster = 0; cluster < levels; cluster++) {
      for (let o = 0; o < dim; o++) codebook[base + cluster * d + o] = centroids[cluster * dim + o];
    }
    for (let c = 0; c < columns; c++) codes[block * columns + c] = assignment[c];
  }

  return result({ kind: 'pq', bits, subvectorLength: d, subspaces: blocks, codebook }, codes, shape, size);
}

/**
 * What pq stores for a tensor of `shape`, known before it is quantized: the codebooks (`subspaces`: one per
 * block of d rows, or 1 shared), the code count and the packed bits per weight, as `quantize` makes them.
 */
export function pqLayout(params: PqParams, shape: readonly number[]) {
  const size = shape.reduce((a, b) => a * b, 1);
  const columns = shape.length > 1 ? shape[shape.length - 1] : 1;
  const rows = columns > 0 ? size / columns : 0;
  const blocks = Math.ceil(rows / params.subvectorLength);
  const subspaces = params.codebooks === 'shared' && blocks > 1 ? 1 : blocks;
  const codeCount = blocks * columns;
  const codebookFloats = subspaces * 2 ** params.bits * params.subvectorLength;
  // The expression of `result` below, so the two agree to the last bit.
  const bitsPerWeight = size === 0 ? 0 : (codeCount * params.bits + codebookFloats * 32) / size;
  return { subspaces, codeCount, codebookFloats, bitsPerWeight };
}

/**
 * Per-block codebooks on a tensor of few columns cost more than float32 (2^b · d floats per block against d
 * rows of C weights); there one shared codebook is used instead. The params to quantize `weight` with (`shape`:
 * the method's view of it), and the warning when they were changed.
 */
export function pqCodebooksFor(
  weight: { name: string; shape: readonly number[] },
  params: PqParams,
  shape: readonly number[],
): { params: PqParams; warning?: string } {
  if (params.codebooks !== 'per-block') return { params };
  const perBlock = pqLayout(params, shape).bitsPerWeight;
  if (perBlock <= 32) return { params };
  const shared: PqParams = { ...params, codebooks: 'shared' };
  return {
    params: shared,
    warning:
      `${weight.name}: pq per-block codebooks would cost ${perBlock.toFixed(1)} bits/weight (more than float32) on ` +
      `[${weight.shape.join(', ')}]; one shared codebook was used (${pqLayout(shared, shape).bitsPerWeight.toFixed(1)} bits/weight)`,
  };
}

function result(encoding: PqEncoding, codes: Codes, shape: readonly number[], size: number): QuantizedTensor {
  return {
    dequantized: decodeTensor(encoding, codes, shape),
    codes,
    encoding,
    bitsPerWeight: size === 0 ? 0 : (codes.length * encoding.bits + encoding.codebook.length * 32) / size,
  };
}
export const pq: QuantMethod<typeof PqParams> = {
  name: 'pq',
  summary:
    'product quantization (Jégou 2011, Gong 2014): k-means on sub-vectors of d rows, 2^bits centroids per block or shared',
  params: PqParams,
  quantize,
};

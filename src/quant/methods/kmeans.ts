/**
 * Weight clustering: an adaptive scalar codebook fitted by 1-D k-means (Han, Mao & Dally 2016, "Deep
 * Compression", §3). k = 2^b centroids c_0 < … < c_{k−1}; each weight takes the code of its nearest centroid
 * and the codebook is refined by Lloyd's algorithm, c_j = mean{w : code(w) = j}, until it stops moving.
 * Initialisation as in the paper: linear (evenly spaced in [min, max]), density (quantiles of the weights'
 * CDF) or k-means++ (D² sampling, seeded).
 *
 * In one dimension the clusters of a sorted codebook are intervals split at the midpoints
 * (c_j + c_{j+1})/2, so Lloyd runs on a compact weighted summary of the values instead of n·k distances:
 * the sorted distinct values when the tensor is small (exact), else the means of a 65 536-bin histogram.
 * With prefix sums over that summary a Lloyd step costs O(k log P). One exact pass over the weights then
 * assigns every weight by comparing it with the midpoints, and the codebook becomes the exact means of the
 * assigned weights. Storage: b bits per weight plus 2^b float32 centroids.
 */
import { Type, type Static } from '@sinclair/typebox';
import { decodeTensor } from '../packed/decode-tensor.js';
import type { Rng } from '../rng.js';
import type { QuantMethod, QuantizedTensor } from '../types.js';
import { codeArray, seedField } from './common.js';

export const KmeansParams = Type.Object(
  {
    name: Type.Literal('kmeans', { default: 'kmeans' }),
    bits: Type.Integer({ minimum: 1, maximum: 8, default: 4, description: 'k = 2^bits centroids' }),
    init: Type.Union([Type.Literal('linear'), Type.Literal('density'), Type.Literal('kmeans++')], {
      default: 'linear',
      description: 'initial codebook: evenly spaced in [min, max], CDF quantiles, or seeded k-means++',
    }),
    maxIterations: Type.Integer({ minimum: 1, maximum: 10_000, default: 50, description: 'Lloyd iterations at most' }),
    ...seedField,
  },
  { additionalProperties: false },
);

export type KmeansParams = Static<typeof KmeansParams>;

/** Above this size Lloyd runs on a histogram instead of the sorted distinct values. */
const EXACT_SIZE_LIMIT = 1 << 16;
const HISTOGRAM_BINS = 1 << 16;

/** Values sorted ascending with their multiplicities, and prefix sums for O(1) interval means. */
interface WeightedPoints {
  values: Float64Array;
  counts: Float64Array;
  /** prefixCount[i] = Σ counts[0..i-1]; prefixSum likewise over counts·values. */
  prefixCount: Float64Array;
  prefixSum: Float64Array;
}

function withPrefixSums(values: Float64Array, counts: Float64Array): WeightedPoints {
  const size = values.length;
  const prefixCount = new Float64Array(size + 1);
  const prefixSum = new Float64Array(size + 1);
  for (let i = 0; i < size; i++) {
    prefixCount[i + 1] = prefixCount[i] + counts[i];
    prefixSum[i + 1] = prefixSum[i] + counts[i] * values[i];
  }
  return { values, counts, prefixCount, prefixSum };
}

function distinctSorted(weights: Float32Array): WeightedPoints {
  const sorted = Float32Array.from(weights).sort();
  const values: number[] = [];
  const counts: number[] = [];
  for (let i = 0; i < sorted.length; i++) {
    if (values.length > 0 && sorted[i] === values[values.length - 1]) counts[counts.length - 1]++;
    else {
      values.push(sorted[i]);
      counts.push(1);
    }
  }
  return withPrefixSums(Float64Array.from(values), Float64Array.from(counts));
}

/** Non-empty bins of a uniform histogram over [min, max], each represented by the mean of its weights. */
function histogram(weights: Float32Array, min: number, max: number): WeightedPoints {
  const binCount = new Float64Array(HISTOGRAM_BINS);
  const binSum = new Float64Array(HISTOGRAM_BINS);
  const perUnit = HISTOGRAM_BINS / (max - min);
  const last = HISTOGRAM_BINS - 1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    let bin = ((w - min) * perUnit) | 0;
    if (bin > last) bin = last;
    binCount[bin]++;
    binSum[bin] += w;
  }
  let used = 0;
  for (let b = 0; b < HISTOGRAM_BINS; b++) if (binCount[b] > 0) used++;
  const values = new Float64Array(used);
  const counts = new Float64Array(used);
  for (let b = 0, j = 0; b < HISTOGRAM_BINS; b++) {
    if (binCount[b] === 0) continue;
    values[j] = binSum[b] / binCount[b];
    counts[j++] = binCount[b];
  }
  return withPrefixSums(values, counts);
}

/** First index i with values[i] >= x (values ascending). */
function lowerBound(values: Float64Array, x: number): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function linearInit(k: number, min: number, max: number): Float64Array {
  const centroids = new Float64Array(k);
  for (let j = 0; j < k; j++) centroids[j] = min + ((max - min) * j) / (k - 1);
  return centroids;
}

/**
 * Centroid j at the j/(k−1) quantile (the CDF's y-axis spaced linearly, min and max included, as in Deep
 * Compression's figure), pushed apart so that no two centroids share a point.
 */
function densityInit(points: WeightedPoints, k: number): Float64Array {
  const { values, prefixCount } = points;
  const size = values.length;
  const total = prefixCount[size];
  const centroids = new Float64Array(k);
  let previous = -1;
  for (let j = 0; j < k; j++) {
    const target = (j / (k - 1)) * total;
    let index = lowerBound(prefixCount, target) - 1;
    index = Math.min(Math.max(index, previous + 1), size - k + j);
    centroids[j] = values[index];
    previous = index;
  }
  return centroids;
}

/** Arthur & Vassilvitskii's D² sampling over the weighted points; returned sorted. */
function kmeansPlusPlusInit(points: WeightedPoints, k: number, rng: Rng): Float64Array {
  const { values, counts, prefixCount } = points;
  const size = values.length;
  const centroids = new Float64Array(k);
  const nearest = new Float64Array(size).fill(Infinity);
  let first = lowerBound(prefixCount, rng.next() * prefixCount[size]) - 1;
  if (first < 0) first = 0;
  centroids[0] = values[first];
  for (let j = 1; j < k; j++) {
    const chosen = centroids[j - 1];
    let total = 0;
    for (let i = 0; i < size; i++) {
      const delta = values[i] - chosen;
      const distance = delta * delta;
      if (distance < nearest[i]) nearest[i] = distance;
      total += counts[i] * nearest[i];
    }
    let target = rng.next() * total;
    let pick = -1;
    for (let i = 0; i < size; i++) {
      const mass = counts[i] * nearest[i];
      if (mass === 0) continue;
      pick = i;
      target -= mass;
      if (target < 0) break;
    }
    centroids[j] = values[pick];
  }
  return centroids.sort();
}

/**
 * Lloyd on the weighted points. A sorted codebook stays sorted (each new centroid lies inside its own
 * interval, an empty cluster keeps its centroid), so clusters are the point ranges between the lower bounds
 * of the midpoints. Stops when no boundary moves, i.e. the codebook no longer changes.
 */
function lloyd(points: WeightedPoints, centroids: Float64Array, maxIterations: number): void {
  const { values, prefixCount, prefixSum } = points;
  const k = centroids.length;
  const boundaries = new Int32Array(k + 1).fill(-1);
  const next = new Int32Array(k + 1);
  next[k] = values.length;
  for (let iteration = 0; iteration < maxIterations; iteration++) {
    for (let j = 1; j < k; j++) next[j] = lowerBound(values, (centroids[j - 1] + centroids[j]) / 2);
    let moved = false;
    for (let j = 0; j <= k; j++) {
      if (next[j] !== boundaries[j]) moved = true;
      boundaries[j] = next[j];
    }
    if (!moved) return;
    for (let j = 0; j < k; j++) {
      const count = prefixCount[boundaries[j + 1]] - prefixCount[boundaries[j]];
      if (count > 0) centroids[j] = (prefixSum[boundaries[j + 1]] - prefixSum[boundaries[j]]) / count;
    }
  }
}

/**
 * Codes each weight with its nearest centroid (ties go up) and returns the per-code sums and counts. A
 * lookup table over a uniform grid gives a starting code that the midpoint comparisons then correct, so the
 * assignment is exact whatever the grid's rounding.
 */
function assign(
  weights: Float32Array,
  centroids: Float64Array,
  min: number,
  max: number,
  codes: Uint8Array,
): { sums: Float64Array; counts: Float64Array } {
  const k = centroids.length;
  const midpoints = new Float64Array(k);
  for (let j = 0; j + 1 < k; j++) midpoints[j] = (centroids[j] + centroids[j + 1]) / 2;
  midpoints[k - 1] = Infinity;
  const cells = HISTOGRAM_BINS;
  const perUnit = max > min ? cells / (max - min) : 0;
  const start = new Uint8Array(cells);
  for (let cell = 0, code = 0; cell < cells; cell++) {
    const low = min + cell / perUnit;
    while (code < k - 1 && low >= midpoints[code]) code++;
    start[cell] = code;
  }
  const sums = new Float64Array(k);
  const counts = new Float64Array(k);
  const last = cells - 1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    let cell = ((w - min) * perUnit) | 0;
    if (cell > last) cell = last;
    let code = start[cell];
    while (w >= midpoints[code]) code++;
    while (code > 0 && w < midpoints[code - 1]) code--;
    codes[i] = code;
    sums[code] += w;
    counts[code]++;
  }
  return { sums, counts };
}

function quantize(weights: Float32Array, shape: readonly number[], params: KmeansParams, rng: Rng): QuantizedTensor {
  const { bits } = params;
  const levels = 2 ** bits;
  const size = weights.length;
  if (shape.reduce((a, b) => a * b, 1) !== size) {
    throw new RangeError(`kmeans: ${size} values for shape [${shape.join(', ')}]`);
  }
  const codes = codeArray(size, bits) as Uint8Array;
  const codebook = new Float32Array(levels);
  if (size === 0) {
    const encoding = { kind: 'codebook' as const, bits, channels: 1, codebook };
    return { dequantized: new Float32Array(0), codes, encoding, bitsPerWeight: 0 };
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < size; i++) {
    const w = weights[i];
    if (w < min) min = w;
    if (w > max) max = w;
    if (w !== w) throw new RangeError('kmeans: weights must be finite (found NaN)');
  }
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new RangeError('kmeans: weights must be finite');

  const points = size <= EXACT_SIZE_LIMIT || max === min ? distinctSorted(weights) : histogram(weights, min, max);
  const active = Math.min(levels, points.values.length);
  let centroids: Float64Array;
  if (active < levels) centroids = points.values.slice(0, active);
  else if (params.init === 'density') centroids = densityInit(points, active);
  else if (params.init === 'kmeans++') centroids = kmeansPlusPlusInit(points, active, rng);
  else centroids = linearInit(active, min, max);
  if (active === levels) lloyd(points, centroids, params.maxIterations);

  const { sums, counts } = assign(weights, centroids, min, max, codes);
  for (let j = 0; j < active; j++) codebook[j] = counts[j] > 0 ? sums[j] / counts[j] : centroids[j];
  codebook.fill(codebook[active - 1], active);

  const encoding = { kind: 'codebook' as const, bits, channels: 1, codebook };
  return {
    dequantized: decodeTensor(encoding, codes, shape),
    codes,
    encoding,
    bitsPerWeight: bits + (32 * levels) / size,
  };
}

export const kmeans: QuantMethod<typeof KmeansParams> = {
  name: 'kmeans',
  summary: 'k-means weight clustering (Deep Compression): 2^bits float32 centroids, one code per weight',
  params: KmeansParams,
  quantize,
};

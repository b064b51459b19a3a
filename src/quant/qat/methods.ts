/**
 * The training methods' registry (docs/methods.md, Quantization-aware training): methods that only exist inside quantization-aware
 * training — `lab`, `admm`, `inq`, `ttq` — with their params schemas and the PTQ quantizer whose encoding
 * each one exports (lab → binary, ttq → ternary, inq → pow2, admm → its projection).
 *
 * Kept apart from the PTQ registry (../methods/index.ts) on purpose: a PTQ method maps weights to codes on
 * its own, so `kind: "ptq"`, `analyze` and `auto` may use it anywhere; a training method needs the training
 * loop (optimizer moments, learned scales, a schedule) and is only valid under `kind: "qat"`. Its `export`
 * params say which PTQ quantizer runs when no trained tensor is given (the "PTQ of the same quantizer" a
 * training method is measured against). This module is pure schema (no tfjs), so the API can validate
 * specs without loading the engine; the algorithms are in ./lab.ts, ./admm.ts, ./inq.ts and ./ttq.ts.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Granularity, seedField } from '../methods/common.js';
import { MethodParamsError, methodNames, parseMethodParams, type MethodParams } from '../methods/index.js';
import { withDefaults } from '../schema.js';

export const LabParams = Type.Object(
  {
    name: Type.Literal('lab', { default: 'lab' }),
    granularity: Granularity,
    ...seedField,
  },
  { additionalProperties: false },
);
export type LabParams = Static<typeof LabParams>;

export const admmProjections = ['binary', 'ternary', 'pow2', 'affine'] as const;

export const AdmmParams = Type.Object(
  {
    name: Type.Literal('admm', { default: 'admm' }),
    projection: Type.Union(
      [
        ...admmProjections.map((name) => Type.Literal(name)),
        Type.Object(
          { name: Type.Union(admmProjections.map((name) => Type.Literal(name))) },
          { additionalProperties: true },
        ),
      ],
      {
        default: 'ternary',
        description: 'the G-step projection: a PTQ method name, or its params object (e.g. {name: "affine", bits: 2})',
      },
    ),
    rho: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1e4,
      default: 0.1,
      description: 'ρ of the penalty ρ/2‖W − G + λ‖²',
    }),
    rhoGrowth: Type.Number({ minimum: 1, maximum: 10, default: 1.5, description: 'ρ ← ρ·rhoGrowth after every epoch' }),
    interval: Type.Integer({
      minimum: 0,
      maximum: 1e6,
      default: 20,
      description: 'optimizer steps between G- and λ-steps; 0: at the end of every epoch',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type AdmmParams = Static<typeof AdmmParams>;

export const InqParams = Type.Object(
  {
    name: Type.Literal('inq', { default: 'inq' }),
    bits: Type.Integer({
      minimum: 2,
      maximum: 8,
      default: 5,
      description: 'pow2 bits: zero and 2^(bits−1) − 1 powers per sign',
    }),
    steps: Type.Array(Type.Number({ exclusiveMinimum: 0, maximum: 1 }), {
      minItems: 1,
      maxItems: 16,
      default: [0.5, 0.75, 0.875, 1],
      description: 'cumulative fractions of each kernel frozen to powers of two, increasing, ending at 1',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type InqParams = Static<typeof InqParams>;

export const TtqParams = Type.Object(
  {
    name: Type.Literal('ttq', { default: 'ttq' }),
    granularity: Granularity,
    thresholdFactor: Type.Number({
      exclusiveMinimum: 0,
      exclusiveMaximum: 1,
      default: 0.05,
      description: 'Δ = thresholdFactor · max|W|; weights with |w| ≤ Δ become 0',
    }),
    ...seedField,
  },
  { additionalProperties: false },
);
export type TtqParams = Static<typeof TtqParams>;

export interface TrainingMethod<S extends TSchema = TSchema> {
  name: string;
  summary: string;
  params: S;
  /** The PTQ params whose encoding the trained tensor takes (and that PTQ runs without a trained tensor). */
  exportParams(params: Static<S>): MethodParams;
}

const lab: TrainingMethod<typeof LabParams> = {
  name: 'lab',
  summary: 'loss-aware binarization (Hou et al. 2017): ±α with α = ‖d⊙w‖₁/‖d‖₁, d from Adam’s second moment',
  params: LabParams,
  exportParams: (p) => parseMethodParams({ name: 'binary', granularity: p.granularity, seed: p.seed }),
};

const admm: TrainingMethod<typeof AdmmParams> = {
  name: 'admm',
  summary: 'ADMM quantization (Leng et al. 2018): W-step on loss + ρ/2‖W − G + λ‖², G = projection, λ += W − G',
  params: AdmmParams,
  exportParams: (p) => projectionParams(p),
};

const inq: TrainingMethod<typeof InqParams> = {
  name: 'inq',
  summary:
    'incremental network quantization (Zhou et al. 2017): freeze 50/75/87.5/100% to powers of two, retrain the rest',
  params: InqParams,
  exportParams: (p) => parseMethodParams({ name: 'pow2', bits: p.bits, seed: p.seed }),
};

const ttq: TrainingMethod<typeof TtqParams> = {
  name: 'ttq',
  summary: 'trained ternary quantization (Zhu et al. 2017): {−Wn, 0, +Wp} with learned scales, Δ = t·max|w|',
  params: TtqParams,
  exportParams: (p) => parseMethodParams({ name: 'ternary', granularity: p.granularity, seed: p.seed }),
};

export const trainingMethods = { lab, admm, inq, ttq } as const;

export type TrainingMethodName = keyof typeof trainingMethods;

export const trainingMethodNames = Object.keys(trainingMethods) as TrainingMethodName[];

export type TrainingMethodParams = {
  [K in TrainingMethodName]: Static<(typeof trainingMethods)[K]['params']>;
}[TrainingMethodName];

/** What a job's `method` (or a `layers.overrides` entry) holds once parsed. */
export type AnyMethodParams = MethodParams | TrainingMethodParams;

export function isTrainingMethodName(name: unknown): name is TrainingMethodName {
  return typeof name === 'string' && Object.hasOwn(trainingMethods, name);
}

export function isTrainingParams(params: AnyMethodParams): params is TrainingMethodParams {
  return isTrainingMethodName(params.name);
}

/** ADMM's projection as full PTQ params (a bare name takes that method's defaults). */
export function projectionParams(params: AdmmParams): MethodParams {
  const projection = typeof params.projection === 'string' ? { name: params.projection } : params.projection;
  return parseMethodParams({ seed: params.seed, ...projection }, '/projection');
}

/** The PTQ params a tensor planned with `params` is exported (and PTQ-quantized) with. */
export function exportParams(params: AnyMethodParams): MethodParams {
  if (!isTrainingParams(params)) return params;
  return (trainingMethods[params.name] as TrainingMethod).exportParams(params);
}

/**
 * Validates a PTQ or training method's params and fills defaults; problems carry JSON paths under `at`.
 * Unknown names list both registries, or only the PTQ one when training methods are not `allowed` there.
 */
export function parseAnyMethodParams(input: unknown, at = '', trainingAllowed = true): AnyMethodParams {
  const name = (input as { name?: unknown } | null)?.name;
  if (!isTrainingMethodName(name)) {
    if (!trainingAllowed || (typeof name === 'string' && (methodNames as string[]).includes(name)))
      return parseMethodParams(input, at);
    throw new MethodParamsError([
      {
        path: `${at}/name`,
        message:
          `unknown method ${JSON.stringify(name)}; allowed: ${methodNames.join(', ')}` +
          ` (and, with kind "qat", ${trainingMethodNames.join(', ')})`,
      },
    ]);
  }
  const { value, problems } = withDefaults(trainingMethods[name].params, input, at);
  if (problems.length > 0) throw new MethodParamsError(problems);
  const parsed = value as TrainingMethodParams;
  if (parsed.name === 'inq') {
    const { steps } = parsed;
    const increasing = steps.every((s, i) => i === 0 || s > steps[i - 1]);
    if (!increasing || steps[steps.length - 1] !== 1) {
      throw new MethodParamsError([
        { path: `${at}/steps`, message: 'steps must increase and end at 1 (every weight quantized)' },
      ]);
    }
  }
  if (parsed.name === 'admm') {
    try {
      projectionParams(parsed);
    } catch (error) {
      if (error instanceof MethodParamsError) {
        throw new MethodParamsError(error.problems.map((p) => ({ ...p, path: `${at}${p.path}` })));
      }
      throw error;
    }
  }
  return parsed;
}

/**
 * The job spec (docs/job-spec.md): one schema shared by the API, the worker and the CLI's --spec file, so a spec
 * that runs offline runs the same way as a service job. `method` is checked against the method registry,
 * which owns each method's own params schema.
 */
import { Type, type Static } from '@sinclair/typebox';
import { FormatRegistry } from '@sinclair/typebox';
import { InputError } from '../errors.js';
import { LabelsSchema, NameSchema } from './metadata.js';
import { withDefaults } from '../quant/schema.js';
import { MethodParamsError, methodNames, parseMethodParams, type MethodParams } from '../quant/methods/index.js';
import {
  isTrainingMethodName,
  parseAnyMethodParams,
  trainingMethodNames,
  type AnyMethodParams,
} from '../quant/qat/methods.js';

const MethodSpec = Type.Object(
  {
    name: Type.String({
      description: `one of: ${methodNames.join(', ')}; with kind "qat" also the training methods ${trainingMethodNames.join(', ')}`,
    }),
  },
  { additionalProperties: true, description: 'a method name and its params (see the method catalogue)' },
);

export const LayersSpec = Type.Object(
  {
    skip: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description: 'globs over weight names (`*` within a path segment, `**` across) left in float32',
    }),
    overrides: Type.Record(Type.String({ minLength: 1 }), Type.Object({}, { additionalProperties: true }), {
      default: {},
      description: 'glob → method params merged over `method` for the weights it matches (first match wins)',
    }),
  },
  { additionalProperties: false, default: {} },
);

export const OutputSpec = Type.Object(
  {
    shardSizeBytes: Type.Integer({ minimum: 1024, maximum: 1 << 30, default: 4 * 1024 * 1024 }),
  },
  { additionalProperties: false, default: {} },
);

// TypeBox knows no formats until they are registered; without this every webhook URL is rejected.
if (!FormatRegistry.Has('uri')) FormatRegistry.Set('uri', (value) => URL.canParse(value));

export const WebhookSpec = Type.Object(
  {
    url: Type.String({ format: 'uri', pattern: '^https?://' }),
    secret: Type.Optional(Type.String({ minLength: 8 })),
  },
  { additionalProperties: false },
);

/** BullMQ's largest priority (2^21 − 1). */
export const maxPriority = 2 ** 21 - 1;

const DatasetRef = Type.String({ minLength: 1, description: 'a dataset id (API) or a file path (CLI)' });

/**
 * The kinds a block of the spec is read by (a JSON Schema extension keyword, ignored by validation): the
 * dashboard's form shows a block only for them. Absent: every kind reads it.
 */
function kinds(...names: ('ptq' | 'qat' | 'analyze' | 'auto')[]): { 'x-kinds': string[] } {
  return { 'x-kinds': names };
}

export const DataSpec = Type.Object(
  {
    calibration: Type.Optional({ ...DatasetRef, ...kinds('ptq', 'qat', 'analyze', 'auto') }),
    evaluation: Type.Optional(DatasetRef),
    training: Type.Optional({ ...DatasetRef, ...kinds('qat', 'auto') }),
    verification: Type.Optional({
      ...DatasetRef,
      description: 'auto: held-out data every trial is verified on (default: a seeded part of data.evaluation)',
      ...kinds('auto'),
    }),
  },
  { additionalProperties: false, default: {} },
);

export const PreprocessSpec = Type.Object(
  {
    scale: Type.Number({
      default: 1,
      description: 'x is fed to the model as x * scale + offset (e.g. 1/255 for raw pixels)',
    }),
    offset: Type.Number({ default: 0 }),
  },
  { additionalProperties: false, default: {} },
);

export const ActivationsSpec = Type.Object(
  {
    bits: Type.Integer({
      minimum: 1,
      maximum: 16,
      default: 8,
      description: '1 means binary activations (quantizer "sign"); sign is 1 bit and ternary 2 bits whatever is given',
    }),
    calibration: Type.Union(
      [Type.Literal('minmax'), Type.Literal('percentile'), Type.Literal('mse'), Type.Literal('kl')],
      { default: 'minmax' },
    ),
    percentile: Type.Number({ exclusiveMinimum: 50, maximum: 100, default: 99.99 }),
    quantizer: Type.Union(
      [
        Type.Literal('calibrated'),
        Type.Literal('dorefa'),
        Type.Literal('pact'),
        Type.Literal('sign'),
        Type.Literal('ternary'),
      ],
      {
        default: 'calibrated',
        description:
          'calibrated: ranges from the calibration set; dorefa (k-bit on [0, 1]) and pact (learned clipping α): ' +
          'trained with kind "qat", after every ReLU output; sign (α·sign(x), BNN/XNOR-Net) and ternary (TWN rule) ' +
          'replace every ReLU (on its pre-activation), α = mean|x| over the channels at each position: trained through ' +
          'a clipped STE with kind "qat", simulated ' +
          'on the exported weights otherwise (layers models)',
      },
    ),
    gradientBits: Type.Integer({
      minimum: 2,
      maximum: 32,
      default: 32,
      description: 'dorefa/pact: k-bit stochastic quantization of the gradients flowing back through them; 32 = float',
    }),
    alpha: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1e4,
      default: 6,
      description: 'pact: the clipping level α before training',
    }),
    alphaDecay: Type.Number({
      minimum: 0,
      maximum: 10,
      default: 1e-4,
      description: 'pact: λ of the L2 penalty λ·α² on each α',
    }),
  },
  {
    additionalProperties: false,
    description: 'simulate integer activations (fake-quant after each layer)',
    ...kinds('ptq', 'qat', 'analyze'),
  },
);

export const QatSpec = Type.Object(
  {
    epochs: Type.Integer({ minimum: 1, maximum: 1000, default: 3 }),
    batchSize: Type.Integer({ minimum: 1, maximum: 65536, default: 32 }),
    learningRate: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 1e-3 }),
    optimizer: Type.Union([Type.Literal('adam'), Type.Literal('sgd')], { default: 'adam' }),
    momentum: Type.Number({ minimum: 0, maximum: 1, default: 0.9, description: 'sgd only' }),
    learningRateDecay: Type.Number({
      minimum: 0,
      maximum: 1,
      default: 0,
      description: 'epoch e (from 0) trains at lr / (1 + decay·e)',
    }),
    validationSplit: Type.Number({
      minimum: 0,
      maximum: 0.5,
      default: 0,
      description:
        'share of data.training held out for valLoss/valMetric: round(split · rows) rows (at least one) drawn at random ' +
        'from the whole file by the method’s seed, the same ones every epoch, never trained on',
    }),
    ste: Type.Union([Type.Literal('identity'), Type.Literal('clipped')], { default: 'clipped' }),
  },
  { additionalProperties: false, default: {}, ...kinds('qat', 'auto') },
);

export const PtqSpec = Type.Object(
  {
    equalize: Type.Optional(
      Type.Boolean({
        description:
          'move each kernel’s per-channel scale out of it (Nagel et al. 2019): a BatchNorm after a Conv/Dense is folded ' +
          'but kept as a per-channel scale, so every kernel channel shares one range and a per-tensor grid (the ' +
          'compact stock uint8 form) keeps per-channel precision; per-channel affine (symmetric, or ≥ 8 bits) then ' +
          'quantizes such a kernel on one grid. Default: on, except for float16 (nothing to equalize)',
      }),
    ),
    algorithm: Type.Union([Type.Literal('nearest'), Type.Literal('gptq'), Type.Literal('adaround')], {
      default: 'nearest',
      description:
        'how affine weights pick their codes: nearest rounding, or learned from data.calibration layer by layer — ' +
        'gptq (Frantar et al. 2022: inverse-Hessian error feedback) or adaround (Nagel et al. 2020: learned up/down ' +
        'rounding); Dense, Conv2D and DepthwiseConv2D kernels (graph MatMul, Conv2D, DepthwiseConv2dNative)',
    }),
    layers: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        maxItems: 4096,
        description:
          'globs over weight names: the kernels the algorithm rounds; the other affine kernels keep nearest rounding ' +
          '(default: every one it can; auto writes them in chosenSpec when it picks the algorithm per layer)',
      }),
    ),
    samples: Type.Integer({
      minimum: 1,
      maximum: 65536,
      default: 256,
      description: 'calibration samples each layer’s inputs are collected from',
    }),
    maxPositions: Type.Integer({
      minimum: 1,
      maximum: 65536,
      default: 256,
      description: 'output positions of a convolution sampled per calibration sample (im2col rows)',
    }),
    gptq: Type.Object(
      {
        percdamp: Type.Number({
          minimum: 0,
          maximum: 1,
          default: 0.01,
          description: 'dampening λ = percdamp · mean(diag H)',
        }),
        actOrder: Type.Boolean({ default: true, description: 'quantize inputs in order of decreasing diag(H)' }),
        blockSize: Type.Integer({ minimum: 1, maximum: 65536, default: 128, description: 'lazy-update block size' }),
      },
      { additionalProperties: false, default: {} },
    ),
    adaround: Type.Object(
      {
        iterations: Type.Integer({ minimum: 1, maximum: 100000, default: 1000 }),
        learningRate: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 0.05, description: 'Adam, on V' }),
        regularization: Type.Number({
          minimum: 0,
          maximum: 100,
          default: 0.1,
          description: 'λ of the rounding regulariser (the reconstruction term is 1 at nearest rounding)',
        }),
        betaStart: Type.Number({ exclusiveMinimum: 0, maximum: 1000, default: 20 }),
        betaEnd: Type.Number({ exclusiveMinimum: 0, maximum: 1000, default: 2 }),
        warmup: Type.Number({
          minimum: 0,
          maximum: 1,
          default: 0.2,
          description: 'share of the iterations before the regulariser starts',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false, default: {}, description: 'post-training quantization: rounding and equalization' },
);

export const TargetSpec = Type.Object(
  {
    metric: Type.Union(
      [
        Type.Literal('accuracy'),
        Type.Literal('top5'),
        Type.Literal('agreement'),
        Type.Literal('mse'),
        Type.Literal('mae'),
      ],
      { default: 'accuracy' },
    ),
    maxDrop: Type.Optional(Type.Number({ minimum: 0, description: 'largest acceptable drop of the metric vs float' })),
    relative: Type.Boolean({
      default: false,
      description: 'maxDrop is a fraction of the float metric (0.01 = 1% of it) instead of an absolute difference',
    }),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'largest acceptable packed size (auto)' })),
  },
  { additionalProperties: false, ...kinds('qat', 'analyze', 'auto') },
);

export const SearchSpec = Type.Object(
  {
    candidates: Type.Optional(
      Type.Array(MethodSpec, {
        minItems: 1,
        maxItems: 32,
        description:
          'method params tried per tensor (default: affine 8/4/2-bit per-channel, ternary, binary, kmeans 4-bit)',
      }),
    ),
    maxTrials: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 24,
      description: 'auto: configs verified through the export',
    }),
    timeBudgetSeconds: Type.Number({
      minimum: 1,
      maximum: 7 * 24 * 3600,
      default: 600,
      description: 'auto: no new trial starts after this',
    }),
    analysisSamples: Type.Integer({
      minimum: 1,
      default: 1024,
      description: 'evaluation samples the per-tensor sensitivity is measured on (of the search part, for auto)',
    }),
    verificationSplit: Type.Number({
      exclusiveMinimum: 0,
      maximum: 0.9,
      default: 0.5,
      description:
        'auto without data.verification: the share of data.evaluation held out (chosen by `seed`), never searched ' +
        'on; a config is chosen only if its drop on it meets target.maxDrop',
    }),
    seed: Type.Integer({ minimum: 0, maximum: 0xffffffff, default: 0, description: 'auto: seeds the held-out split' }),
  },
  { additionalProperties: false, default: {}, description: 'kind analyze and auto', ...kinds('analyze', 'auto') },
);

export const JobSpecSchema = Type.Object(
  {
    modelId: Type.Optional(Type.String({ minLength: 1 })),
    // What the job is called and labelled (the record's name and labels, not part of how it runs).
    name: Type.Optional(NameSchema),
    labels: Type.Optional(LabelsSchema),
    kind: Type.Union([Type.Literal('ptq'), Type.Literal('qat'), Type.Literal('analyze'), Type.Literal('auto')], {
      default: 'ptq',
      description:
        'ptq: post-training; qat: quantization-aware training (needs data.training); analyze: per-tensor sensitivity; ' +
        'auto: search per-tensor configs that meet `target` (analyze and auto need data.evaluation)',
    }),
    method: MethodSpec,
    layers: LayersSpec,
    data: DataSpec,
    preprocess: PreprocessSpec,
    foldBatchNorm: Type.Optional(
      Type.Boolean({
        description:
          'fold BatchNormalization into the preceding Conv/Dense (default: true for ptq; with ptq.equalize the BN ' +
          'stays as the per-channel scale)',
      }),
    ),
    activations: Type.Optional(ActivationsSpec),
    ptq: PtqSpec,
    qat: QatSpec,
    target: Type.Optional(TargetSpec),
    search: SearchSpec,
    output: OutputSpec,
    priority: Type.Integer({
      minimum: 0,
      maximum: maxPriority,
      default: 0,
      description:
        'queue order, as BullMQ and Unix nice have it: 0 (the default) runs first, in submission order; a larger ' +
        'number waits for every job with a smaller one (e.g. 10 for batch work that should yield to interactive jobs)',
    }),
    webhook: Type.Optional(WebhookSpec),
  },
  { additionalProperties: false },
);

export type RawJobSpec = Static<typeof JobSpecSchema>;

/**
 * A validated spec with every default filled in and `method` parsed by its own schema: a PTQ method, or with
 * kind "qat" a training method (../quant/qat/methods.ts; exportParams gives its PTQ quantizer).
 */
export interface JobSpec extends Omit<RawJobSpec, 'method' | 'search'> {
  method: AnyMethodParams;
  search: Omit<RawJobSpec['search'], 'candidates'> & { candidates?: MethodParams[] };
}

export interface SpecProblem {
  path: string;
  message: string;
}

export class SpecError extends InputError {
  override name = 'SpecError';

  constructor(readonly problems: SpecProblem[]) {
    super('invalid-job-spec', problems.map((p) => `${p.path || '/'}: ${p.message}`).join('; '), { problems });
  }
}

/** Validates and defaults a spec; throws SpecError listing every problem with its JSON path. */
export function parseJobSpec(input: unknown): JobSpec {
  const { value: raw, problems } = withDefaults(JobSpecSchema, input);
  if (problems.length > 0) throw new SpecError(problems);
  if (raw.activations) raw.activations = binaryActivationBits(raw.activations);
  const combinations = combinationProblems(raw);
  if (combinations.length > 0) throw new SpecError(combinations);
  try {
    const training = raw.kind === 'qat';
    const method = parseAnyMethodParams(raw.method, '/method', training);
    for (const [glob, override] of Object.entries(raw.layers.overrides)) {
      parseAnyMethodParams(mergeOverride(raw.method, override), `/layers/overrides/${glob}`, training);
    }
    const { candidates: rawCandidates, ...search } = raw.search;
    const candidates = rawCandidates?.map((c, i) => parseMethodParams(c, `/search/candidates/${i}`));
    return { ...raw, method, search: { ...search, ...(candidates ? { candidates } : {}) } };
  } catch (error) {
    if (error instanceof MethodParamsError) throw new SpecError(error.problems);
    throw error;
  }
}

/**
 * An override that names another method replaces the base params outright (they would not fit the other
 * method's schema); one without a name, or with the same name, changes only the fields it gives.
 */
/** ptq.equalize when the spec leaves it out: on, except for float16, whose values keep their own scale. */
export function equalizes(spec: Pick<JobSpec, 'ptq' | 'method'>): boolean {
  return spec.ptq.equalize ?? spec.method.name !== 'float16';
}

export function mergeOverride(base: { name: string }, override: Record<string, unknown>): Record<string, unknown> {
  if (typeof override.name === 'string' && override.name !== base.name) return override;
  return { ...base, ...override };
}

/** 1-bit activations are binary (sign); sign and ternary activations have a fixed width (1 and 2 bits). */
function binaryActivationBits(
  activations: NonNullable<RawJobSpec['activations']>,
): NonNullable<RawJobSpec['activations']> {
  if (activations.bits === 1 && activations.quantizer === 'calibrated') return { ...activations, quantizer: 'sign' };
  if (activations.quantizer === 'sign') return { ...activations, bits: 1 };
  if (activations.quantizer === 'ternary') return { ...activations, bits: 2 };
  return activations;
}

/** Fields that are each valid but need another: said before any work starts. */
function combinationProblems(spec: RawJobSpec): SpecProblem[] {
  const problems: SpecProblem[] = [];
  if (spec.kind === 'qat' && !spec.data.training) {
    problems.push({ path: '/data/training', message: 'kind "qat" needs a training dataset' });
  }
  if (spec.kind === 'auto' && spec.target?.maxDrop === undefined && spec.target?.maxBytes === undefined) {
    problems.push({ path: '/target', message: 'kind "auto" needs target.maxDrop or target.maxBytes' });
  }
  const trainingNames = [
    { path: '/method/name', name: spec.method.name },
    ...Object.entries(spec.layers.overrides).map(([glob, o]) => ({
      path: `/layers/overrides/${glob}/name`,
      name: (o as { name?: unknown }).name,
    })),
  ].filter((m) => isTrainingMethodName(m.name));
  for (const { path, name } of trainingNames) {
    if (spec.kind !== 'qat') {
      problems.push({
        path,
        message: `"${name}" is a training method: it needs kind "qat" (PTQ methods: ${methodNames.join(', ')})`,
      });
    } else if (name === 'lab' && spec.qat.optimizer !== 'adam') {
      problems.push({
        path: '/qat/optimizer',
        message: 'lab takes its curvature from Adam’s second moment: optimizer must be "adam"',
      });
    }
  }
  if (spec.ptq.algorithm !== 'nearest') problems.push(...learnedRoundingProblems(spec));
  else if (spec.ptq.layers !== undefined) {
    problems.push({
      path: '/ptq/layers',
      message: 'ptq.layers names the kernels ptq.algorithm gptq or adaround rounds',
    });
  }
  const quantizer = spec.activations?.quantizer;
  const trainedActivations = quantizer === 'dorefa' || quantizer === 'pact';
  if (trainedActivations && spec.kind !== 'qat') {
    problems.push({
      path: '/activations/quantizer',
      message: `"${spec.activations!.quantizer}" activations are trained: they need kind "qat" (otherwise use "calibrated")`,
    });
  }
  if (quantizer === 'calibrated' && !spec.data.calibration) {
    problems.push({ path: '/data/calibration', message: 'activations need a calibration dataset to take ranges from' });
  }
  if (spec.data.verification !== undefined && spec.kind !== 'auto') {
    problems.push({
      path: '/data/verification',
      message: `only kind "auto" verifies on held-out data; kind "${spec.kind}" would not read it`,
    });
  }
  if ((spec.kind === 'analyze' || spec.kind === 'auto') && !spec.data.evaluation) {
    problems.push({
      path: '/data/evaluation',
      message: `kind "${spec.kind}" needs an evaluation dataset to measure drops on`,
    });
  } else if (spec.target?.maxDrop !== undefined && !spec.data.evaluation) {
    problems.push({
      path: '/data/evaluation',
      message: 'target.maxDrop needs an evaluation dataset to measure the drop on',
    });
  }
  return problems;
}

/** GPTQ and AdaRound choose codes on the affine grid from layer inputs: they need both. */
function learnedRoundingProblems(spec: RawJobSpec): SpecProblem[] {
  const algorithm = spec.ptq.algorithm;
  const problems: SpecProblem[] = [];
  if (spec.kind !== 'ptq' && spec.kind !== 'auto') {
    problems.push({ path: '/ptq/algorithm', message: `"${algorithm}" rounds after training: kind must be "ptq"` });
  }
  if (!spec.data.calibration) {
    problems.push({
      path: '/data/calibration',
      message: `ptq.algorithm "${algorithm}" needs a calibration dataset to take each layer's inputs from`,
    });
  }
  const method = spec.method as { name: string; rounding?: unknown };
  if (method.name !== 'affine') {
    problems.push({
      path: '/method/name',
      message: `ptq.algorithm "${algorithm}" chooses codes on the affine grid: method must be "affine", not "${method.name}"`,
    });
  } else if (method.rounding === 'stochastic') {
    problems.push({
      path: '/method/rounding',
      message: `ptq.algorithm "${algorithm}" replaces the rounding: method.rounding must be "nearest"`,
    });
  }
  return problems;
}

/**
 * A job of any kind, start to end: the one entry the worker and the CLI call. src/pipeline is the
 * application's compute flow: it reads nothing from Redis or disk and knows no HTTP; it takes a loaded model,
 * the validated spec and the opened datasets, drives the engine (src/quant) through the stages of the kind,
 * and gives back the artifact files with the report. Each kind has one flow; `report.json` is written here
 * and nowhere else, so every kind's artifacts carry the report exactly as returned.
 */
import type { JobSpec } from '../jobs/spec.js';
import type { LoadedModel } from '../model/types.js';
import { runAutoJob } from './auto.js';
import { runQuantizeJob } from './quantize.js';
import type { JobDatasets, JobOptions, JobResult } from './types.js';

type Flow = (source: LoadedModel, spec: JobSpec, data: JobDatasets, options: JobOptions) => Promise<JobResult>;

/** A kind without a flow is a type error here. */
const flows: Record<JobSpec['kind'], Flow> = {
  ptq: runQuantizeJob,
  qat: runQuantizeJob,
  analyze: runAutoJob,
  auto: runAutoJob,
};

export async function runJob(
  source: LoadedModel,
  spec: JobSpec,
  data: JobDatasets,
  options: JobOptions,
): Promise<JobResult> {
  const result = await flows[spec.kind](source, spec, data, options);
  result.files.set('report.json', new TextEncoder().encode(`${JSON.stringify(result.report, null, 2)}\n`));
  return result;
}

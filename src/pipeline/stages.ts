/** Timing and progress bookkeeping shared by the job flows (runQuantizeJob, runAutoJob). */
import type { JobProgress } from './types.js';

/** Wall time per named step, in ms with one decimal, as the report's `timings` shows them. */
export function stageClock(): {
  timings: Record<string, number>;
  timed: <T>(name: string, work: () => Promise<T>) => Promise<T>;
} {
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    const at = performance.now();
    try {
      return await work();
    } finally {
      timings[name] = Math.round((performance.now() - at) * 10) / 10;
    }
  };
  return { timings, timed };
}

/** Reports `fraction` of a stage that spans [from, to] of the job's 0–100 progress. */
export function stageReporter(onProgress: ((progress: JobProgress) => void | Promise<void>) | undefined) {
  return (
    stage: JobProgress['stage'],
    [from, to]: readonly [number, number],
    fraction: number,
    message: string,
    extra?: Partial<JobProgress>,
  ): void | Promise<void> =>
    onProgress?.({ stage, progress: Math.round((from + (to - from) * fraction) * 10) / 10, message, ...extra });
}

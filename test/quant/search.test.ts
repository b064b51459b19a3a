import { describe, expect, it } from 'vitest';
import { dropOf, FLOAT, searchConfigs, type Assignment, type SearchTensor } from '../../src/quant/search.js';

/*
 * Two tensors: A (400 float bytes) and B (40). Greedy from float by added drop per byte saved:
 *   A→a8 (0 / 300) and B→b8 (0 / 30) first (ratio 0, the larger saving first), then A a8→a2
 *   (0.001 / 75 = 1.3e-5), then B b8→b2 (0.05 / 7).
 * The fake export: packed bytes = Σ tensor bytes + 100, drop = Σ of each tensor's TRUE drop.
 */
const tensors: SearchTensor[] = [
  { name: 'A', floatBytes: 400, options: [{ config: 'a8', drop: 0, bytes: 100 }, { config: 'a2', drop: 0.001, bytes: 25 }] },
  { name: 'B', floatBytes: 40, options: [{ config: 'b8', drop: 0, bytes: 10 }, { config: 'b2', drop: 0.05, bytes: 3 }] },
];
const bytesOf: Record<string, number> = { float: 0, a8: 100, a2: 25, b8: 10, b2: 3 };

function fakeExport(trueDrop: Record<string, number>) {
  const measured: Assignment[] = [];
  const measure = async (assignment: Assignment) => {
    measured.push(assignment);
    const floatBytes = (assignment.A === FLOAT ? 400 : 0) + (assignment.B === FLOAT ? 40 : 0);
    return {
      bytes: 100 + floatBytes + bytesOf[assignment.A] + bytesOf[assignment.B],
      drop: (trueDrop[assignment.A] ?? 0) + (trueDrop[assignment.B] ?? 0),
    };
  };
  return { measured, measure };
}

describe('dropOf', () => {
  it('is float − value for higher-is-better metrics, value − float for errors, and a fraction when relative', () => {
    expect(dropOf({ metric: 'accuracy', relative: false }, 0.9, 0.88)).toBeCloseTo(0.02, 12);
    expect(dropOf({ metric: 'mse', relative: false }, 0.5, 0.6)).toBeCloseTo(0.1, 12);
    expect(dropOf({ metric: 'accuracy', relative: true }, 0.8, 0.76)).toBeCloseTo(0.05, 12);
    expect(dropOf({ metric: 'mae', relative: true }, 2, 1)).toBeCloseTo(-0.5, 12);
  });
});

describe('searchConfigs', () => {
  it('with maxDrop takes the greedy prefix the estimate allows, verifies it, and stops when nothing more fits', async () => {
    const { measured, measure } = fakeExport({ a2: 0.001, b2: 0.05 });
    const result = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 10, measure });
    // One trial: A→a8, B→b8, A→a2 (estimated 0.001); B→b2 would add 0.05.
    expect(measured).toEqual([{ A: 'a2', B: 'b8' }]);
    expect(result.best).toMatchObject({ trial: 1, bytes: 135, drop: 0.001, feasible: true, estimatedDrop: 0.001, estimatedBytes: 35 });
    expect(result.targetMet).toBe(true);
    expect(result.stoppedBy).toBe('converged');
  });

  it('backs off where the measured drop breaks the budget: halves the step, then bans the failing move', async () => {
    // a2 really costs 0.02, not the estimated 0.001.
    const { measured, measure } = fakeExport({ a2: 0.02, b2: 0.05 });
    const result = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 10, measure });
    expect(measured).toEqual([
      { A: 'a2', B: 'b8' }, // 3 moves: 0.02 measured, fails
      { A: 'a8', B: FLOAT }, // 1 move: feasible, the new state
      // 2 moves would lead back to {a2, b8}: known to fail, no trial; 1 move:
      { A: 'a8', B: 'b8' },
      // A→a2 alone is {a2, b8} again: known to fail, so it is banned; B→b2 does not fit the estimate.
    ]);
    expect(result.trials.map((t) => t.feasible)).toEqual([false, true, true]);
    expect(result.best).toMatchObject({ trial: 3, bytes: 210, drop: 0 });
    expect(result.targetMet).toBe(true);
  });

  it('with maxBytes walks the greedy path to the first prefix that fits, learning the fixed bytes from each trial', async () => {
    const { measured, measure } = fakeExport({ a2: 0.001, b2: 0.05 });
    const result = await searchConfigs({ tensors, budget: { maxBytes: 150 }, maxTrials: 10, measure });
    // Before any trial the fixed part is taken as 0: one move (140) seems to fit; measured 240.
    // Then fixed = 100: three moves (35 + 100 = 135) fit; two (210) don't, so it stops there.
    expect(measured).toEqual([
      { A: 'a8', B: FLOAT },
      { A: 'a2', B: 'b8' },
    ]);
    expect(result.best).toMatchObject({ trial: 2, bytes: 135, feasible: true });
    expect(result.targetMet).toBe(true);
  });

  it('reports the closest trial, unmet, when nothing fits; and respects maxTrials and the time budget', async () => {
    const { measure } = fakeExport({ a2: 0.001, b2: 0.05 });
    const tooSmall = await searchConfigs({ tensors, budget: { maxBytes: 50 }, maxTrials: 10, measure });
    expect(tooSmall.targetMet).toBe(false);
    expect(tooSmall.best.bytes).toBe(128); // every tensor at its smallest: 25 + 3 + 100

    const backOff = fakeExport({ a2: 0.02, b2: 0.05 });
    const capped = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 2, measure: backOff.measure });
    expect(capped.trials).toHaveLength(2);
    expect(capped.stoppedBy).toBe('maxTrials');

    const timed = fakeExport({ a2: 0.02, b2: 0.05 });
    const outOfTime = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 10, outOfTime: () => true, measure: timed.measure });
    expect(outOfTime.trials).toHaveLength(1);
    expect(outOfTime.stoppedBy).toBe('time');
    expect(outOfTime.targetMet).toBe(false);
  });
});

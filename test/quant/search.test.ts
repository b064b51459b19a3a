import { describe, expect, it } from 'vitest';
import {
  dropOf,
  FLOAT,
  KNAPSACK_BUCKETS,
  searchConfigs,
  type Assignment,
  type SearchTensor,
} from '../../src/quant/search.js';

/*
 * Two tensors: A (400 float bytes) and B (40). Greedy from float by added drop per byte saved:
 *   A→a8 (0 / 300) and B→b8 (0 / 30) first (ratio 0, the larger saving first), then A a8→a2
 *   (0.001 / 75 = 1.3e-5), then B b8→b2 (0.05 / 7).
 * The fake export: packed bytes = Σ tensor bytes + 100, drop = Σ of each tensor's TRUE drop.
 */
const tensors: SearchTensor[] = [
  {
    name: 'A',
    floatBytes: 400,
    options: [
      { config: 'a8', drop: 0, bytes: 100 },
      { config: 'a2', drop: 0.001, bytes: 25 },
    ],
  },
  {
    name: 'B',
    floatBytes: 40,
    options: [
      { config: 'b8', drop: 0, bytes: 10 },
      { config: 'b2', drop: 0.05, bytes: 3 },
    ],
  },
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
    expect(result.best).toMatchObject({
      trial: 1,
      bytes: 135,
      drop: 0.001,
      feasible: true,
      estimatedDrop: 0.001,
      estimatedBytes: 35,
    });
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

  it('with a held-out drop, a trial meets maxDrop only if both drops do: one that fails held out is not a state to go on from', async () => {
    // On the search data a2 costs 0.001 as estimated; held out it costs 0.02.
    const measured: Assignment[] = [];
    const measure = async (assignment: Assignment) => {
      measured.push(assignment);
      const base = await fakeExport({ a2: 0.001, b2: 0.05 }).measure(assignment);
      return { ...base, heldOutDrop: assignment.A === 'a2' ? 0.02 : 0 };
    };
    const result = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 10, measure });
    // {a2, b8} meets 0.01 on the search data (0.001) but not held out (0.02): refused, and backed off from, as
    // the measured-drop test above backs off.
    expect(measured).toEqual([
      { A: 'a2', B: 'b8' },
      { A: 'a8', B: FLOAT },
      { A: 'a8', B: 'b8' },
    ]);
    expect(result.trials[0]).toMatchObject({ drop: 0.001, heldOutDrop: 0.02, feasible: false });
    expect(result.best).toMatchObject({ trial: 3, bytes: 210, drop: 0, heldOutDrop: 0, feasible: true });
  });

  it('with maxBytes solves the knapsack again after each overshoot, learning the fixed bytes from each trial', async () => {
    const { measured, measure } = fakeExport({ a2: 0.001, b2: 0.05 });
    const result = await searchConfigs({ tensors, budget: { maxBytes: 150 }, maxTrials: 10, measure });
    // Before any trial the fixed part is taken as 0: {a8, float} (140, drop 0) seems to fit; measured 240.
    // Then the room is 150 − 100 = 50: {a2, b8} (35, drop 0.001); solving again gives it back, so it stops.
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

    // Both limits, and no trial meets maxBytes: the smallest trial within maxDrop, not the smallest one.
    const both = await searchConfigs({
      tensors,
      budget: { maxDrop: 0.01, maxBytes: 50 },
      maxTrials: 10,
      measure: fakeExport({ a2: 0.02, b2: 0.05 }).measure,
    });
    expect(both.targetMet).toBe(false);
    expect(both.trials.some((t) => t.bytes === 135 && t.drop === 0.02)).toBe(true);
    expect(both.best).toMatchObject({ bytes: 210, drop: 0 });

    const backOff = fakeExport({ a2: 0.02, b2: 0.05 });
    const capped = await searchConfigs({ tensors, budget: { maxDrop: 0.01 }, maxTrials: 2, measure: backOff.measure });
    expect(capped.trials).toHaveLength(2);
    expect(capped.stoppedBy).toBe('maxTrials');

    const timed = fakeExport({ a2: 0.02, b2: 0.05 });
    const outOfTime = await searchConfigs({
      tensors,
      budget: { maxDrop: 0.01 },
      maxTrials: 10,
      outOfTime: () => true,
      measure: timed.measure,
    });
    expect(outOfTime.trials).toHaveLength(1);
    expect(outOfTime.stoppedBy).toBe('time');
    expect(outOfTime.targetMet).toBe(false);
  });

  /*
   * Three tensors (the fake export adds `fixed` bytes to Σ tensor bytes; drops add up exactly):
   *   A: float 1000 | a8 500, drop 0.007 | a4 200, drop 0.010
   *   B: float  500 | b4 100, drop 0.006
   *   C: float  300 | c4  50, drop 0.003
   * Greedy by drop per byte saved takes C→c4 (1.2e-5), then A→a4 (1.25e-5; a8 1.4e-5, b4 1.5e-5): within 1300
   * tensor bytes its shortest fitting prefix is {a4, float, c4}, 750 bytes, drop 0.013. The knapsack's best
   * within 1300: A float needs B + C ≤ 300 → {b4, c4}, 0.009; A a8 leaves 800 → {float, float}, 0.007;
   * A a4 → {float, float}, 0.010. So {a8, float, float}: 1300 bytes, drop 0.007.
   */
  const table: SearchTensor[] = [
    {
      name: 'A',
      floatBytes: 1000,
      options: [
        { config: 'a8', drop: 0.007, bytes: 500 },
        { config: 'a4', drop: 0.01, bytes: 200 },
      ],
    },
    { name: 'B', floatBytes: 500, options: [{ config: 'b4', drop: 0.006, bytes: 100 }] },
    { name: 'C', floatBytes: 300, options: [{ config: 'c4', drop: 0.003, bytes: 50 }] },
  ];
  function tableExport(search: SearchTensor[], fixed: number) {
    const measured: Assignment[] = [];
    const measure = async (assignment: Assignment) => {
      measured.push(assignment);
      let bytes = fixed;
      let drop = 0;
      for (const t of search) {
        const o = t.options.find((option) => option.config === assignment[t.name]);
        bytes += o ? o.bytes : t.floatBytes;
        drop += o ? o.drop : 0;
      }
      return { bytes, drop };
    };
    return { measured, measure };
  }

  it('with maxBytes picks the knapsack optimum, a mid config the greedy prefix jumps over, filling the budget exactly', async () => {
    const { measured, measure } = tableExport(table, 0);
    const result = await searchConfigs({ tensors: table, budget: { maxBytes: 1300 }, maxTrials: 10, measure });
    expect(measured).toEqual([{ A: 'a8', B: FLOAT, C: FLOAT }]);
    expect(result.best).toMatchObject({ trial: 1, bytes: 1300, estimatedBytes: 1300, feasible: true });
    expect(result.best.estimatedDrop).toBeCloseTo(0.007, 12);
    expect(result.targetMet).toBe(true);
    expect(result.stoppedBy).toBe('converged');
  });

  it('with maxBytes shrinks the room by the measured overshoot and re-solves: not a prefix of the first answer', async () => {
    // Fixed part 100, unknown before the first trial. Room 1400: {float, b4, float} (1400, 0.006) beats
    // {a8, float, float} (1300, 0.007); measured 1500, 100 over, so the room becomes 1300 → {a8, float, float}.
    const { measured, measure } = tableExport(table, 100);
    const result = await searchConfigs({ tensors: table, budget: { maxBytes: 1400 }, maxTrials: 10, measure });
    expect(measured).toEqual([
      { A: FLOAT, B: 'b4', C: FLOAT },
      { A: 'a8', B: FLOAT, C: FLOAT },
    ]);
    expect(result.trials.map((t) => [t.bytes, t.feasible])).toEqual([
      [1500, false],
      [1400, true],
    ]);
    expect(result.best.trial).toBe(2);
    expect(result.best.estimatedDrop).toBeCloseTo(0.007, 12);
    expect(result.best.estimatedBytes).toBe(1400);
    expect(result.stoppedBy).toBe('converged');

    // One trial allowed: the overshooting first answer is all there is, reported unmet.
    const capped = await searchConfigs({
      tensors: table,
      budget: { maxBytes: 1400 },
      maxTrials: 1,
      measure: tableExport(table, 100).measure,
    });
    expect(capped.trials).toHaveLength(1);
    expect(capped.best).toMatchObject({ bytes: 1500, feasible: false });
    expect(capped.targetMet).toBe(false);
    expect(capped.stoppedBy).toBe('maxTrials');
  });

  it('rounds bytes up to whole buckets, so a budget above KNAPSACK_BUCKETS bytes is never exceeded by the estimate', async () => {
    // maxBytes 8191 → buckets of 2 bytes, 4095 of them. X float 4095 → 2048 buckets, Y float 4097 → 2049: 4097 > 4095,
    // rightly, as 8192 bytes > 8191 (rounding down, 2047 + 2048 would seem to fit). So one tensor is quantized,
    // the least sensitive: {x4, float}, 1000 + 4097 = 5097 bytes, drop 0.01.
    expect(Math.ceil(8191 / KNAPSACK_BUCKETS)).toBe(2);
    const wide: SearchTensor[] = [
      { name: 'X', floatBytes: 4095, options: [{ config: 'x4', drop: 0.01, bytes: 1000 }] },
      { name: 'Y', floatBytes: 4097, options: [{ config: 'y4', drop: 0.02, bytes: 1000 }] },
    ];
    const { measured, measure } = tableExport(wide, 0);
    const result = await searchConfigs({ tensors: wide, budget: { maxBytes: 8191 }, maxTrials: 10, measure });
    expect(measured).toEqual([{ X: 'x4', Y: FLOAT }]);
    expect(result.best).toMatchObject({ bytes: 5097, estimatedBytes: 5097, feasible: true });
    expect(result.best.estimatedDrop).toBeCloseTo(0.01, 12);
  });
});

import { describe, expect, it } from 'vitest';
import { heldOutMask, pairedDropInterval } from '../../src/quant/held-out.js';

describe('heldOutMask', () => {
  it('holds out exactly round(fraction · n) samples, the same ones for the same seed, others for another', () => {
    const a = heldOutMask(400, 0.3, 7);
    expect(a.reduce((s, v) => s + v, 0)).toBe(120);
    expect(heldOutMask(400, 0.3, 7)).toEqual(a);
    const b = heldOutMask(400, 0.3, 8);
    expect(b.reduce((s, v) => s + v, 0)).toBe(120);
    expect(b).not.toEqual(a);
    // Spread over the whole set, not a block: each quarter holds about 30 of them.
    for (let q = 0; q < 4; q++) {
      const inQuarter = a.subarray(q * 100, (q + 1) * 100).reduce((s, v) => s + v, 0);
      expect(inQuarter).toBeGreaterThan(15);
      expect(inQuarter).toBeLessThan(45);
    }
  });

  it('keeps at least one sample on each side, and refuses a set too small to split', () => {
    expect(heldOutMask(2, 0.9, 0).reduce((s, v) => s + v, 0)).toBe(1);
    expect(heldOutMask(10, 0.01, 0).reduce((s, v) => s + v, 0)).toBe(1);
    expect(() => heldOutMask(1, 0.5, 0)).toThrow('cannot be split');
  });
});

describe('pairedDropInterval', () => {
  const goal = { metric: 'accuracy' as const, relative: false };
  /** n samples: `lost` the float model gets right and the quantized one wrong, `gained` the reverse. */
  const pairs = (n: number, lost: number, gained: number) => {
    const float = new Array<number>(n).fill(1);
    const quantized = new Array<number>(n).fill(1);
    for (let i = 0; i < lost; i++) quantized[i] = 0;
    for (let i = lost; i < lost + gained; i++) float[i] = 0;
    return { float, quantized };
  };

  it('accuracy: the Agresti–Min interval of matched proportions, worked by hand', () => {
    // b = 3, c = 1, n = 100 → b' = 3.5, c' = 1.5, m = 102: (2 ± 1.96·√(5 − 4/102)) / 102.
    const { float, quantized } = pairs(100, 3, 1);
    const interval = pairedDropInterval(goal, float, quantized);
    expect(interval.drop).toBeCloseTo(0.02, 12);
    expect(interval.low).toBeCloseTo(-0.02319011915834171, 12);
    expect(interval.high).toBeCloseTo(0.06240580543285151, 12);
    expect(interval.samples).toBe(100);
  });

  it('does not shrink to a point when no sample changed', () => {
    const { float, quantized } = pairs(50, 0, 0);
    const interval = pairedDropInterval(goal, float, quantized);
    expect(interval.drop).toBe(0);
    expect(interval.low).toBeCloseTo(-0.037691615087308734, 12);
    expect(interval.high).toBeCloseTo(0.037691615087308734, 12);
  });

  it('mse: mean per-sample difference ± 1.96 standard errors; relative divides by the float value', () => {
    const float = [1, 1, 1, 1];
    const quantized = [1.5, 1.1, 1.3, 0.9];
    const mse = pairedDropInterval({ metric: 'mse', relative: false }, float, quantized);
    expect(mse.drop).toBeCloseTo(0.2, 12);
    expect(mse.low).toBeCloseTo(-0.053030262376332044, 12);
    expect(mse.high).toBeCloseTo(0.45303026237633204, 12);
    const lostThree = pairs(100, 3, 1);
    const relative = pairedDropInterval({ metric: 'accuracy', relative: true }, lostThree.float, lostThree.quantized);
    // The float accuracy is 0.99 (one sample it gets wrong).
    expect(relative.drop).toBeCloseTo(0.02 / 0.99, 12);
    expect(relative.high).toBeCloseTo(0.06240580543285151 / 0.99, 12);
  });
});

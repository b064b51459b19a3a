/** The flag suggestions of src/cli/args.ts on hand-worked distances. */
import { describe, expect, it } from 'vitest';
import { closestFlag, commandUsage, editDistance } from '../src/cli/args.js';

describe('editDistance', () => {
  it('counts insertions, deletions, substitutions and adjacent transpositions', () => {
    expect(editDistance('bitz', 'bits')).toBe(1); // z → s
    expect(editDistance('kitten', 'sitting')).toBe(3); // k → s, e → i, + g
    expect(editDistance('seed', 'sede')).toBe(1); // ed ↔ de
    expect(editDistance('', 'out')).toBe(3);
    expect(editDistance('range', 'range')).toBe(0);
  });
});

describe('closestFlag', () => {
  const known = ['bits', 'granularity', 'range', 'rounding', 'dry-run', 'data', 'out'];
  it('takes the one flag a name abbreviates, else the nearest within a third of its length', () => {
    expect(closestFlag('bitz', known)).toBe('bits');
    expect(closestFlag('gran', known)).toBe('granularity');
    expect(closestFlag('dry', known)).toBe('dry-run');
    expect(closestFlag('rnage', known)).toBe('range');
    // 'ra' abbreviates only range but is too short to be read as an abbreviation; 'x' is 3 edits from 'out'.
    expect(closestFlag('ra', known)).toBeUndefined();
    expect(closestFlag('x', known)).toBeUndefined();
    expect(closestFlag('frobnicate', known)).toBeUndefined();
  });
});

describe('commandUsage', () => {
  it('lists each flag with its short form and placeholder, and --help last', () => {
    const text = commandUsage({
      name: 'demo',
      synopsis: 'demo <x>',
      about: 'Does a demo.',
      flags: {
        bits: { type: 'string', short: 'b', arg: 'n', help: 'bits per code' },
        quiet: { type: 'boolean', help: 'say less' },
      },
    });
    expect(text).toBe(
      'Usage: qaas demo <x>\n\nDoes a demo.\n\nOptions:\n' +
        '  --bits, -b <n>  bits per code\n' +
        '  --quiet         say less\n' +
        '  --help, -h      show this help and exit\n',
    );
  });
});

/**
 * Flags of the `qaas` subcommands, declared once with their help so each subcommand's `--help` lists exactly
 * what its parser accepts, and an unknown flag is answered with the closest known one and the list.
 * Parsing is node:util's parseArgs; this adds `--help`, the suggestions and usage errors (exit 2).
 */
import { parseArgs } from 'node:util';

export interface Flag {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** The value's placeholder in the help, e.g. `n` for `--bits <n>`. */
  arg?: string;
  help: string;
}

export type Flags = Record<string, Flag>;

export interface Command<F extends Flags> {
  name: string;
  /** The synopsis after `qaas `, e.g. `quantize <modelDir> --out <outDir> [options]`. */
  synopsis: string;
  /** One paragraph: what the command does. */
  about: string;
  flags: F;
}

/** Bad command-line input: the CLI prints it and exits 2. */
export class UsageError extends Error {}

const helpFlag = { help: { type: 'boolean', short: 'h', help: 'show this help and exit' } } as const satisfies Flags;

/** The help text of one subcommand: synopsis, what it does, and every flag it accepts. */
export function commandUsage(command: Command<Flags>): string {
  const flags: Flags = { ...command.flags, ...helpFlag };
  const rows = Object.entries(flags).map(([name, flag]) => {
    const names = [`--${name}`, ...(flag.short ? [`-${flag.short}`] : [])].join(', ');
    return [`${names}${flag.type === 'string' ? ` <${flag.arg ?? 'value'}>` : ''}`, flag.help] as const;
  });
  const width = Math.min(32, Math.max(...rows.map(([left]) => left.length)) + 2);
  const lines = rows.map(([left, help]) =>
    left.length + 2 > width ? `  ${left}\n  ${' '.repeat(width)}${help}` : `  ${left.padEnd(width)}${help}`,
  );
  return `Usage: qaas ${command.synopsis}\n\n${command.about}\n\nOptions:\n${lines.join('\n')}\n`;
}

/** Edit distance (insertions, deletions, substitutions, adjacent transpositions) between two flag names. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known flag a mistyped one most likely meant: the only one it abbreviates, else the nearest by edit
 * distance when that is at most a third of the name (at least 1), so `--bitz` → `--bits` but `--x` → none.
 */
export function closestFlag(name: string, known: string[]): string | undefined {
  const extensions = known.filter((flag) => name.length >= 3 && flag.startsWith(name));
  if (extensions.length === 1) return extensions[0];
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(name.length / 3)) + 1;
  for (const flag of known) {
    const distance = editDistance(name, flag);
    if (distance < bestDistance) [best, bestDistance] = [flag, distance];
  }
  return best;
}

type Parsed<F extends Flags> = ReturnType<typeof parseArgs<{ options: F; allowPositionals: true }>>;

/**
 * Parses one subcommand's arguments. Returns null after printing the help for `--help`/`-h`; throws a
 * UsageError that names the closest flag and lists them all for an unknown one, and one naming the
 * subcommand's help for a flag without its value.
 */
export function parseCommand<F extends Flags>(command: Command<F>, args: string[]): Parsed<F> | null {
  const options = { ...command.flags, ...helpFlag };
  const { tokens } = parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    if (token.name === 'help') {
      process.stdout.write(commandUsage(command));
      return null;
    }
    // parseArgs has already turned a known short flag into its long name.
    if (token.name in options) continue;
    const suggestion = closestFlag(token.name, Object.keys(options));
    throw new UsageError(
      `unknown option ${token.rawName} for ${command.name}${suggestion ? `; did you mean --${suggestion}?` : ''}\n\n` +
        commandUsage(command).trimEnd(),
    );
  }
  try {
    return parseArgs({ args, options: command.flags, allowPositionals: true }) as Parsed<F>;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (!code.startsWith('ERR_PARSE_ARGS')) throw error;
    throw new UsageError(`${(error as Error).message}; run qaas ${command.name} --help`);
  }
}

/**
 * strata as the benchmark sees it: only through its CLI (DESIGN.md, "CLI"), the `strata` command
 * users run (cli/strata, which `npm link` puts on PATH), plus the helpers that turn a peer's or
 * strata's run into an Outcome.
 *
 *   strata --store S -q store import NAME TAR
 *   strata --store S -q compose add M…            (cwd = the stack dir)
 *   strata --store S -q compose sandbox DIR
 *   strata --store S -q compose squash OUT --comp C --level N --block-size B
 *   strata --store S -q compose squash OUT --format erofs --comp C [--level N]
 *
 * When no executable was built, or a verb or option is not there yet (usage error, exit 2:
 * commander's "unknown option" and "unknown command" are usage errors), the strata cells say
 * "not available"; no number is ever made up.
 */
import { existsSync } from 'node:fs';
import { mkdir, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { measureInTurn, MeasureTimeout, type Measurement, type Outcome, type Timed } from './harness.js';
import { BenchError, log, run } from './proc.js';

export const measured = (m: Measurement): Outcome => ({ kind: 'measured', m });

export interface MeasureOpts {
  cwd?: string;
  before?: () => Promise<void>;
  runs: number;
  timeoutSec?: number;
}

function timedOut(e: MeasureTimeout): Outcome {
  return { kind: 'timeout', seconds: e.seconds, rssKiB: e.rssKiB, reason: `stopped at the time limit of ${e.seconds} s` };
}

/** One side of a comparison, not yet timed: its command, and how its result reads as an Outcome. */
export interface Side {
  /** For the log: "peer: …" or "strata: …". */
  what: string;
  timed: Timed;
  outcome(r: PromiseSettledResult<Measurement>): Outcome;
}

/**
 * A peer's side. A peer failing is a broken benchmark, so it is fatal; a peer stopped at its
 * time limit is reported as such.
 */
export function peerSide(what: string, cmd: string, args: string[], opts: MeasureOpts): Side {
  return {
    what: `peer: ${what}`,
    timed: { cmd, args, opts },
    outcome(r) {
      if (r.status === 'fulfilled') return measured(r.value);
      if (r.reason instanceof MeasureTimeout) return timedOut(r.reason);
      throw r.reason;
    },
  };
}

/**
 * Times the sides of one comparison in turn, run by run (harness measureInTurn), and gives
 * each its Outcome in the order given. An Outcome given in place of a side (strata not built,
 * its setup failed) is passed through untimed.
 */
export async function inTurn(sides: readonly (Side | Outcome)[]): Promise<Outcome[]> {
  const timed = sides.filter((s): s is Side => 'timed' in s);
  if (timed.length === 0) return sides as Outcome[];
  log(timed.length === 1 ? timed[0]!.what : `in turn: ${timed.map((s) => s.what).join('; ')}`);
  const results = await measureInTurn(timed.map((s) => s.timed));
  let k = 0;
  return sides.map((s) => ('timed' in s ? s.outcome(results[k++]!) : s));
}

/**
 * The `strata` command (cli/strata, which runs the bundle `npm run build` makes), else the
 * bundle's executable (an ES module before 2026-11-29), else the compiled entry of a build
 * before either (those run with node).
 */
const EXECUTABLES = ['cli/strata', 'dist/bundle/strata.cjs', 'dist/bundle/strata.js', 'dist/cli/main.js'];

export class Strata {
  readonly available: boolean;
  readonly cli: string;
  constructor(cli: string | undefined) {
    this.available = cli !== undefined;
    this.cli = cli ?? EXECUTABLES[0];
  }
  /** The command line of one strata call: the command, or node and a script, then the arguments. */
  argv(store: string, args: string[]): string[] {
    const cli = /\.c?js$/.test(this.cli) ? [process.execPath, this.cli] : [this.cli];
    return [...cli, '--store', store, '-q', ...args];
  }
  /** Untimed call (setup); throws BenchError. */
  async call(store: string, args: string[], cwd?: string): Promise<void> {
    const [cmd, ...rest] = this.argv(store, args);
    await run(cmd!, rest, { cwd });
  }
  /**
   * Reads every blob of the store once, untimed (`store verify`), so that the rows after it
   * read them from the page cache as the peers read their tars: a large blob is written past
   * the page cache (spec/decisions.md, Caches and speed).
   */
  async warm(store: string): Promise<void> {
    await this.call(store, ['store', 'verify']);
  }
  /** Maps a strata failure to "not available" (no CLI, usage error), "stopped" or "failed". */
  classify(e: unknown): Outcome {
    if (!this.available) return { kind: 'unavailable', reason: `${this.cli} not built` };
    if (e instanceof MeasureTimeout) return timedOut(e);
    const err = e instanceof BenchError ? e : undefined;
    const lines = (err?.stderr || String(e)).trim().split('\n').filter((l) => l.trim());
    // "strata: …" is the CLI's own message; otherwise the first "…Error: …" of a trace.
    const first = lines.find((l) => l.startsWith('strata:')) ?? lines.find((l) => /^\w*Error\b/.test(l.trim())) ?? lines[0] ?? String(e);
    if (err?.exitCode === 2 || /unknown (command|option)|not implemented/i.test(err?.stderr ?? '')) {
      return { kind: 'unavailable', reason: first };
    }
    return { kind: 'failed', reason: first.slice(0, 300) };
  }
  /** strata's side of a comparison: `args` on `store`, or why it cannot be timed. */
  side(what: string, store: string, args: string[], opts: MeasureOpts): Side | Outcome {
    const [cmd, ...rest] = this.argv(store, args);
    return this.sideOf(what, { cmd: cmd!, args: rest, opts });
  }
  /** strata's side as a bash script timed as one command (end to end). */
  scriptSide(what: string, script: string, opts: MeasureOpts): Side | Outcome {
    return this.sideOf(what, { cmd: 'bash', args: ['-c', script], opts });
  }
  private sideOf(what: string, timed: Timed): Side | Outcome {
    if (!this.available) return this.classify(undefined);
    return { what: `strata: ${what}`, timed, outcome: (r) => (r.status === 'fulfilled' ? measured(r.value) : this.classify(r.reason)) };
  }
  /** strata measured on its own. */
  async measure(what: string, store: string, args: string[], opts: MeasureOpts): Promise<Outcome> {
    return (await inTurn([this.side(what, store, args, opts)]))[0]!;
  }
}

export async function sizeOf(p: string): Promise<number | undefined> {
  try {
    return (await stat(p)).size;
  } catch {
    return undefined;
  }
}

/**
 * A private copy of the built CLI (dist/, build/Release, package.json) so that a rebuild of
 * dist/ during the run (others' `npm test`) cannot change what is measured; node_modules is
 * linked beside it. undefined when no executable was built.
 */
export async function snapshotCli(root: string, pkg: string): Promise<string | undefined> {
  const override = process.env['BENCH_CLI'];
  if (override !== undefined) return existsSync(override) ? override : undefined;
  const executable = EXECUTABLES.find((e) => existsSync(join(root, e)));
  if (executable === undefined) return undefined;
  await mkdir(pkg, { recursive: true });
  await run('cp', ['-a', join(root, 'dist'), join(root, 'package.json'), pkg]);
  if (existsSync(join(root, 'cli/strata'))) {
    await mkdir(join(pkg, 'cli'), { recursive: true });
    await run('cp', ['-a', join(root, 'cli/strata'), join(pkg, 'cli')]);
  }
  if (existsSync(join(root, 'build/Release'))) {
    await mkdir(join(pkg, 'build'), { recursive: true });
    await run('cp', ['-a', join(root, 'build/Release'), join(pkg, 'build')]);
  }
  // The dependencies are found through a link: under a BENCH_DATA outside the package, walking
  // up from the copy would find none, and every strata command would fail.
  await symlink(join(root, 'node_modules'), join(pkg, 'node_modules'));
  return join(pkg, executable);
}

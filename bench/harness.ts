/**
 * Benchmark harness: timing and peak RSS of external commands, result rows, the table,
 * BENCHMARKS.md, and the correctness gate (tree and image comparison with real tools).
 *
 * Timing: wall-clock seconds measured around the child with process.hrtime; peak RSS is
 * `/usr/bin/time -f %M` (KiB), which for a shell script is the largest of its descendants; CPU
 * is `%U` + `%S`, user and system seconds of the command and the descendants it waited for.
 */
import { createHash } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, release, totalmem } from 'node:os';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dumpXattrs } from './data.js';
import { BenchError, log, run } from './proc.js';
import { describeScratch } from './scratch.js';
import { listTar, makedev } from './tar-list.js';

// ---------------------------------------------------------------------------------------
// Measuring

export interface MeasureOptions {
  /** At least 1 (the stack section asks for 3 or more); the first is not discarded (caches are warm from the data build anyway). */
  runs?: number;
  /** Stop a run that takes longer (SIGTERM to its process group, SIGKILL 10 s later): MeasureTimeout. */
  timeoutSec?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run before every timed run, untimed (e.g. remove the previous output). */
  before?: () => Promise<void>;
}

export interface Measurement {
  /** Wall seconds of each run, in run order. */
  samples: number[];
  min: number;
  median: number;
  max: number;
  /** Largest peak RSS over the runs, KiB. */
  rssKiB: number;
  /**
   * Minor page faults of a run, the median over the runs (/usr/bin/time %R; for a shell
   * script, with its descendants): each is a page of memory touched for the first time, which
   * the machine line `fresh` prices. Undefined where not measured.
   */
  faults?: number;
  /**
   * CPU seconds of a run, user and system (/usr/bin/time %U + %S, every thread; for a shell
   * script, with the descendants it waited for), the median over the runs. On a machine of few
   * cores it tells work from waiting: a command slower than its peer that also spends more CPU
   * does more work, not just less of it at once. Undefined where not measured.
   */
  cpu?: number;
}

/** A run stopped at MeasureOptions.timeoutSec; rssKiB is what it had reached. */
export class MeasureTimeout extends BenchError {
  constructor(readonly seconds: number, readonly rssKiB: number) {
    super(`stopped after ${seconds} s`, 124);
    this.name = 'MeasureTimeout';
  }
}

/**
 * Starts a section of the bench on the memory of a machine that holds only its inputs:
 * writes back what is dirty, drops the clean page cache (root only; dentries and inodes
 * stay) and reads `inputs` back in, so both sides find them cached. Without it, a scale
 * point ran with the page cache full of the trees and images of the points before, and the
 * peer that allocates most paid for reclaiming it: mkfs.erofs of the 1,000,000-file tree
 * (5.6 GiB RSS) took 246 s with 0.3 GiB free, 127 s with the earlier trees being deleted.
 */
export async function freshPageCache(inputs: readonly string[]): Promise<void> {
  await run('sync', []);
  if (process.getuid?.() === 0) await writeFile('/proc/sys/vm/drop_caches', '1');
  if (inputs.length) await run('sh', ['-c', 'cat -- "$@" > /dev/null', 'cat', ...inputs]);
}

/**
 * Runs `cmd args` opts.runs times under /usr/bin/time (and `timeout` when opts.timeoutSec is
 * set); throws BenchError if any run fails, MeasureTimeout if one is stopped.
 */
export async function measure(cmd: string, args: readonly string[], opts: MeasureOptions = {}): Promise<Measurement> {
  const [r] = await measureInTurn([{ cmd, args, opts }]);
  if (r!.status === 'rejected') throw r!.reason;
  return r!.value;
}

/** A command to time, as measure() takes it. */
export interface Timed {
  cmd: string;
  args: readonly string[];
  opts: MeasureOptions;
}

/**
 * Times the commands of one comparison in turn, run by run: the first run of each, then the
 * second of each in the opposite order, and so on (each command opts.runs times; every other
 * turn reversed). The sides of a row are meant to meet the same machine, and this one drifts
 * over a minute: a run that needs pages the kernel does not hold yet pays a fault of the
 * hypervisor's for each (free memory here is handed back to the host), and how many such
 * pages there are depends on what ran before.
 * GNU tar's three extractions of the bench stack took 1.8 s each timed before strata's
 * sandbox, and 4.3–4.6 s each a few minutes later on the same filesystem; strata's sandbox,
 * timed three times after them, 1.7, 2.4 and 3.0 s (spec/benchmark.md, Runs in turn).
 *
 * A command that fails or is stopped is not run again; its slot holds the error (BenchError,
 * MeasureTimeout), and the others go on.
 */
export async function measureInTurn(commands: readonly Timed[]): Promise<PromiseSettledResult<Measurement>[]> {
  const tmp = await mkdtemp('/tmp/strata-bench-time-');
  const state = commands.map(() => ({ samples: [] as number[], faults: [] as number[], cpu: [] as number[], rssKiB: 0, error: undefined as unknown }));
  const runs = commands.map((c) => Math.max(1, c.opts.runs ?? 3));
  try {
    for (let i = 0; i < Math.max(...runs); i++) {
      // Every other turn in the opposite order: a filesystem fills as the turns go on (each
      // tree a run writes stays on it), and so does the kernel's inode cache, which makes
      // each file created a little dearer: the side that ran second would always pay more.
      const order = [...commands.entries()];
      if (i % 2 === 1) order.reverse();
      for (const [k, c] of order) {
        const s = state[k]!;
        if (i >= runs[k]! || s.error !== undefined) continue;
        try {
          await timeOnce(c, join(tmp, `time.${k}.${i}`), s);
        } catch (e) {
          s.error = e;
        }
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return state.map((s) =>
    s.error !== undefined ? { status: 'rejected', reason: s.error } : { status: 'fulfilled', value: summarize(s.samples, s.rssKiB, s.faults, s.cpu) },
  );
}

/** One timed run of `c`, its figures added to `into`; `out` is /usr/bin/time's report file. */
async function timeOnce({ cmd, args, opts }: Timed, out: string, into: { samples: number[]; faults: number[]; cpu: number[]; rssKiB: number }): Promise<void> {
  // No tree is deleted in the background while a run is timed (harness startEmptyingTrash).
  holdTrash();
  try {
    const p0 = Date.now();
    if (opts.before) await opts.before();
    // Untimed: write back what earlier runs or setup left dirty, so no run pays for
    // another's writeback (it otherwise lands on whichever side happens to run next).
    await run('sync', []);
    const prep = (Date.now() - p0) / 1000;
    if (prep >= 5) log(`  (clean-up and sync before the run: ${prep.toFixed(0)} s)`);
    const t0 = process.hrtime.bigint();
    const limit = opts.timeoutSec === undefined ? [] : ['timeout', '-k', '10', String(opts.timeoutSec)];
    const r = await run('/usr/bin/time', ['-f', '%e %R %M %U %S', '-o', out, ...limit, cmd, ...args], { cwd: opts.cwd, env: opts.env, allowFail: limit.length > 0 });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const [, minor, rss, user, sys] = (await readFile(out, 'utf8')).trim().split(/\s+/).slice(-5);
    into.rssKiB = Math.max(into.rssKiB, Number(rss) || 0);
    if (r.code === 124 || r.code === 137) throw new MeasureTimeout(opts.timeoutSec!, into.rssKiB);
    if (r.code !== 0) {
      const tail = r.stderr.trim().split('\n').slice(-5).join('\n');
      throw new BenchError(`${cmd} ${args.join(' ')} failed (exit ${r.code})${tail ? `:\n${tail}` : ''}`, r.code, r.stderr);
    }
    if (Number.isFinite(Number(minor))) into.faults.push(Number(minor));
    if (Number.isFinite(Number(user) + Number(sys))) into.cpu.push(Number(user) + Number(sys));
    into.samples.push(wall);
  } finally {
    releaseTrash();
  }
}

/** `faults`, `cpu`: each run's minor page faults and CPU seconds, when measured. */
export function summarize(samples: number[], rssKiB: number, faults: number[] = [], cpu: number[] = []): Measurement {
  const s = [...samples].sort((a, b) => a - b);
  return {
    samples,
    min: s[0]!,
    median: median(samples),
    max: s[s.length - 1]!,
    rssKiB,
    ...(faults.length > 0 ? { faults: median(faults) } : {}),
    ...(cpu.length > 0 ? { cpu: median(cpu) } : {}),
  };
}

/** The median of `samples` (of the middle two for an even count). */
function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ---------------------------------------------------------------------------------------
// Trees between runs

/**
 * Trees that timed runs wrote (sandboxes, extracted layers) are moved aside between runs. On
 * a scratch filesystem made for the run (bench/scratch.ts) they stay until the next run drops
 * the filesystem whole; on a plain directory they are deleted once no timed run follows
 * (startEmptyingTrash, emptyTrash), not before the next run.
 *
 * Why: on ext4 without a journal (this machine's disk), the inode allocator passes over
 * every inode freed in the last minute or so, looking up its inode-table block for each one.
 * A tree of thousands of files created right after `rm -rf` of a tree of the same size pays
 * that for every new inode: the same sandbox took 5.3–6.2 s right after removing the last
 * one and 2.9 s a minute later. Deleting between runs made each time depend on how recently
 * the bench itself had deleted something, on whichever side ran next.
 */
let trash:
  | {
      dir: string;
      /** On a scratch filesystem made for the run (bench/scratch.ts): never deleted, dropped whole by the next run. */
      keep: boolean;
      count: number;
      draining?: Promise<void>;
      eagerSince?: number;
      /** The rm processes deleting now. */
      running: Set<ChildProcess>;
      /** Set while a timed run goes on: no rm starts, the running ones are stopped. */
      held?: { until: Promise<void>; release: () => void };
    }
  | undefined;

/**
 * Sets the directory trees are moved into (on the scratch filesystem); emptied by emptyTrash,
 * or, with `keep` (a filesystem made for the run), left for the next run to drop whole.
 */
export function useTrash(dir: string, { keep = false }: { keep?: boolean } = {}): void {
  trash = { dir, keep, count: 0, running: new Set() };
}

/** Moves each existing path into the trash (removes it when there is none, or it is on another filesystem). */
export async function setAside(...paths: string[]): Promise<void> {
  for (const p of paths) {
    if (!existsSync(p)) continue;
    if (trash) {
      await mkdir(trash.dir, { recursive: true });
      try {
        await rename(p, join(trash.dir, String(trash.count++)));
        if (trash.eagerSince !== undefined) void drainTrash();
        continue;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
      }
    }
    await rm(p, { recursive: true, force: true });
  }
}

/**
 * Called once no timed run creates a tree any more (a no-op when the trash is kept): deletes
 * what is set aside, and whatever is set aside later, in the background, but never during a
 * timed run (measure() holds it: the rm processes are stopped, SIGSTOP, and `sync` writes
 * back what they left before the run starts). The gates and the untimed steps mostly wait on
 * the CPU; deleting mostly waits on the disk (this disk is mounted with `discard`, so every
 * freed extent is trimmed as it is freed), so the two overlap. Timed runs after this point
 * write images (a few files each), so they do not meet the inode allocator's scan of
 * recently freed inodes.
 */
export function startEmptyingTrash(): void {
  if (!trash || trash.keep || trash.eagerSince !== undefined) return;
  trash.eagerSince = Date.now();
  void drainTrash();
}

/** Stops the deletion for a timed run; releaseTrash lets it go on. */
function holdTrash(): void {
  if (!trash || trash.held) return;
  let release!: () => void;
  const until = new Promise<void>((r) => (release = r));
  trash.held = { until, release };
  for (const c of trash.running) c.kill('SIGSTOP');
}

function releaseTrash(): void {
  const held = trash?.held;
  if (!trash || !held) return;
  trash.held = undefined;
  for (const c of trash.running) c.kill('SIGCONT');
  held.release();
}

// A stopped rm must not outlive the bench stopped.
process.on('exit', () => {
  for (const c of trash?.running ?? []) c.kill('SIGCONT');
});

/** Deletes everything in the trash, a tree per core at a time, until a look finds it empty. */
function drainTrash(): Promise<void> {
  const t = trash;
  if (!t) return Promise.resolve();
  t.draining ??= (async () => {
    for (;;) {
      const queue = existsSync(t.dir) ? (await readdir(t.dir)).map((name) => join(t.dir, name)) : [];
      if (!queue.length) return;
      const worker = async () => {
        for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
          while (t.held) await t.held.until;
          let child: ChildProcess | undefined;
          try {
            await run('rm', ['-rf', '--', p], {
              spawned: (c) => {
                child = c;
                t.running.add(c);
                if (t.held) c.kill('SIGSTOP');
              },
            });
          } finally {
            if (child) t.running.delete(child);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, cpus().length) }, worker));
    }
  })().finally(() => {
    t.draining = undefined;
  });
  return t.draining;
}

/**
 * Deletes what setAside kept (waiting for the deletion startEmptyingTrash began); seconds
 * waited here, and seconds since startEmptyingTrash (or since this call, without it).
 */
export async function emptyTrash(): Promise<{ waited: number; total: number }> {
  const t0 = Date.now();
  if (trash?.keep) return { waited: 0, total: 0 };
  if (trash) {
    await drainTrash();
    await drainTrash(); // anything set aside while the last round ran
    await rm(trash.dir, { recursive: true, force: true });
  }
  const end = Date.now();
  const since = trash?.eagerSince ?? t0;
  if (trash) trash.eagerSince = undefined;
  return { waited: (end - t0) / 1000, total: (end - since) / 1000 };
}

// ---------------------------------------------------------------------------------------
// Rows and the table

/** A side of a row: measured, or why not (never a made-up number). */
export type Outcome =
  | { kind: 'measured'; m: Measurement }
  /** Stopped at the time limit: the time is a lower bound, the RSS what it had reached. */
  | { kind: 'timeout'; seconds: number; rssKiB: number; reason: string }
  /** Left out on purpose (a setting, or a peer known to take too long). */
  | { kind: 'skipped'; reason: string }
  | { kind: 'unavailable'; reason: string }
  | { kind: 'failed'; reason: string };

export interface Row {
  what: string;
  strata: Outcome;
  peerName: string;
  peer: Outcome;
  /**
   * What the issue asks of this row, as text (e.g. "≥ 1.0×"), the threshold on speedup, and
   * why the row misses it when it does, where that is known (bench/why.ts).
   */
  goal?: { text: string; minSpeedup?: number; why?: Why };
  note?: string;
}

/** Why a row misses its goal, from the row and the machine lines of the same run (bench/why.ts). */
export type Why = (row: Row, machine: Machine) => string;

/**
 * peer median / strata median: above 1 means strata is faster. `atLeast` when the peer was
 * stopped at its time limit (the ratio is then a lower bound), `atMost` when strata was.
 */
export function speedup(row: Row): { value: number; bound?: 'atLeast' | 'atMost' } | undefined {
  const t = (o: Outcome) => (o.kind === 'measured' ? o.m.median : o.kind === 'timeout' ? o.seconds : undefined);
  const [a, b] = [t(row.strata), t(row.peer)];
  if (a === undefined || b === undefined || (row.strata.kind === 'timeout' && row.peer.kind === 'timeout')) return undefined;
  return { value: b / a, bound: row.peer.kind === 'timeout' ? 'atLeast' : row.strata.kind === 'timeout' ? 'atMost' : undefined };
}

/** Peak RSS of a side, KiB (a stopped run's is what it had reached). */
export function rssOf(o: Outcome): number | undefined {
  return o.kind === 'measured' ? o.m.rssKiB : o.kind === 'timeout' ? o.rssKiB : undefined;
}

const f2 = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;

function cell(o: Outcome): string {
  switch (o.kind) {
    case 'measured':
      return o.m.samples.length === 1 ? `${f2(o.m.median)} s` : `${f2(o.m.median)} s (${f2(o.m.min)}–${f2(o.m.max)})`;
    case 'timeout':
      return `> ${o.seconds} s (stopped)`;
    case 'skipped':
      return 'not run';
    case 'unavailable':
      return 'not available';
    case 'failed':
      return 'FAILED';
  }
}

/** The median run's CPU seconds of each side ("—" for a side not measured). */
export function cpuOf(o: Outcome): number | undefined {
  return o.kind === 'measured' ? o.m.cpu : undefined;
}

function cpuCell(row: Row): string {
  const [s, p] = [cpuOf(row.strata), cpuOf(row.peer)];
  if (s === undefined && p === undefined) return '—';
  return `${s === undefined ? '—' : f2(s)} / ${p === undefined ? '—' : f2(p)} s`;
}

function ratioCell(row: Row): string {
  const s = speedup(row);
  if (s === undefined) return '—';
  return `${s.bound === 'atLeast' ? '> ' : s.bound === 'atMost' ? '< ' : ''}${speedupText(row)}×`;
}

/**
 * A row's speedup with two decimals, rounded down where rounding would reach a goal it misses:
 * a goal not met never reads as reached (0.997 against ≥ 1.0 is 0.99, not 1.00).
 */
export function speedupText(row: Row): string {
  const { value } = speedup(row)!;
  const goal = row.goal?.minSpeedup;
  const text = value.toFixed(2);
  return goal !== undefined && value < goal && Number(text) >= goal ? (Math.floor(value * 100) / 100).toFixed(2) : text;
}

/** Every strata command's peak RSS must stay under this (issue 5), whatever the stack. */
export const MAX_RSS_MIB = 300;

/** Whether the row meets its speed goal: undefined when it has none or it cannot be told. */
export function speedGoalMet(row: Row): boolean | undefined {
  const s = speedup(row);
  if (!row.goal || row.goal.minSpeedup === undefined || s === undefined) return undefined;
  if (s.value >= row.goal.minSpeedup) return s.bound === 'atMost' ? undefined : true;
  return s.bound === 'atLeast' ? undefined : false;
}

/** Whether strata's side stays under MAX_RSS_MIB (a stopped run that already passed it does not). */
export function rssGoalMet(row: Row): boolean | undefined {
  const r = rssOf(row.strata);
  if (r === undefined) return undefined;
  if (r / 1024 > MAX_RSS_MIB) return false;
  return row.strata.kind === 'measured' ? true : undefined;
}

function goalCell(row: Row): string {
  const parts: string[] = [];
  const yes = (b: boolean | undefined) => (b === undefined ? '—' : b ? 'met' : 'not met');
  if (row.goal) parts.push(`${row.goal.text}: ${yes(speedGoalMet(row))}`);
  parts.push(`RSS ≤ ${MAX_RSS_MIB} MiB: ${yes(rssGoalMet(row))}`);
  return parts.join('; ');
}

/** The results as a Markdown table (also what the terminal shows). */
export function table(rows: Row[]): string {
  const head = ['what', 'strata median (min–max)', 'strata peak RSS', 'peer', 'peer median (min–max)', 'peer peak RSS', 'CPU, strata / peer', 'speedup (peer/strata)', 'goal'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const rs = rssOf(r.strata);
    const rp = rssOf(r.peer);
    lines.push(
      `| ${[
        r.what,
        cell(r.strata),
        rs === undefined ? '' : mib(rs),
        r.peerName,
        cell(r.peer),
        rp === undefined ? '' : mib(rp),
        cpuCell(r),
        ratioCell(r),
        goalCell(r),
      ].join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

/** Reasons behind "not available" and "FAILED" cells, one line each. */
export function outcomeNotes(rows: Row[]): string[] {
  const notes: string[] = [];
  for (const r of rows) {
    for (const [side, o] of [['strata', r.strata], [r.peerName, r.peer]] as const) {
      const label = { failed: 'FAILED', unavailable: 'not available', skipped: 'not run', timeout: 'stopped' } as const;
      if (o.kind !== 'measured') notes.push(`${r.what} — ${side}: ${label[o.kind]}: ${o.reason}`);
    }
    if (r.note) notes.push(`${r.what}: ${r.note}`);
  }
  return [...new Set(notes)];
}

// ---------------------------------------------------------------------------------------
// Machine and tools

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  /** The filesystem the outputs and trees are written to (describeScratch). */
  scratch: string;
  /** Seconds a process takes to start and end (processStart): Node's and a C program's. */
  start: { node: number; c: number };
  /** Seconds the first write to 256 MiB of fresh memory takes (freshMemory). */
  fresh: number;
}

/** `start` and `fresh`: processStarts() and freshMemory(), taken at the start of the run, before any load of its own. */
export function machine(scratchDir: string, start: Machine['start'], fresh: number): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    scratch: describeScratch(scratchDir),
    start,
    fresh,
  };
}

/**
 * Seconds the first write to 256 MiB of newly mapped memory takes (median of 3, each in a
 * Node process of its own): one page fault per 4 KiB page, the kernel zeroing it. Tools that
 * allocate much pay it, V8's heap and mksquashfs's buffers among them; on the host where every
 * strata row came out slower than the committed run it took 1.3 s, 20 µs a page
 * (spec/benchmark.md, The report).
 */
export function freshMemory(): number {
  const script = 'const b = Buffer.alloc(256 << 20); const t = process.hrtime.bigint(); b.fill(1); process.stdout.write(String(Number(process.hrtime.bigint() - t) / 1e9));';
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    const secs = Number(r.stdout);
    if (r.status !== 0 || !Number.isFinite(secs)) return Number.NaN;
    times.push(secs);
  }
  return median(times);
}

/** How long Node and a C program take to start and end (processStart). */
export function processStarts(): Machine['start'] {
  return { node: processStart(process.execPath, ['-e', '0']), c: processStart('true', []) };
}

/**
 * Median wall time, in seconds, of STARTS runs of `cmd args` that do nothing: the floor under
 * every row. A command the size of the small ingests is mostly its process's start, and that
 * start is what moved most between machines the bench ran on (a bare Node 0.05 s on one,
 * 0.08–0.10 s on another, while hashing and compressing took the same: spec/benchmark.md, The
 * report). Node runs as the launcher runs it, without NODE_EXTRA_CA_CERTS (cli/strata).
 */
function processStart(cmd: string, args: string[]): number {
  const env = { ...process.env };
  delete env['NODE_EXTRA_CA_CERTS'];
  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { env, stdio: 'ignore' });
    if (r.status !== 0) return Number.NaN;
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return median(times);
}
const STARTS = 7;

/** First line of each tool's version output, as printed by the tool. */
export async function toolVersions(): Promise<Record<string, string>> {
  const probes: [string, string, string[]][] = [
    ['tar', 'tar', ['--version']],
    ['bsdtar', 'bsdtar', ['--version']],
    ['umoci', 'umoci', ['--version']],
    ['mksquashfs', 'mksquashfs', ['-version']],
    ['sqfsdiff', 'sqfsdiff', ['--version']],
    ['tar2sqfs', 'tar2sqfs', ['--version']],
    // mkfs.erofs 1.5 has no --version; the package says it.
    ['mkfs.erofs', 'dpkg-query', ['-W', '-f', 'erofs-utils ${Version}\\n', 'erofs-utils']],
    ['sha256sum', 'sha256sum', ['--version']],
  ];
  const out: Record<string, string> = {};
  for (const [name, cmd, args] of probes) {
    const r = await run(cmd, args, { allowFail: true }).catch(() => undefined);
    out[name] = r ? (r.stdout || r.stderr).trim().split('\n')[0] ?? '' : 'not installed';
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// BENCHMARKS.md

/** What a section of the benchmark produces. */
export interface SectionResult {
  rows: Row[];
  /** Image sizes; `goal`: strata's must not be larger than the peer's (issue 15). */
  sizes: { what: string; strata?: number; peer?: number; peerName: string; goal?: boolean }[];
  /** Correctness gate: name → differences (empty = identical); undefined = not run. */
  gate: { name: string; diffs: string[] | undefined; reason?: string }[];
  /** Peer-versus-peer checks of the comparators themselves (informational). */
  crossChecks: { name: string; diffs: string[] }[];
}

export interface ReportSection {
  title: string;
  /** Lines under the title, before the table (settings of this section). */
  intro: string[];
  result: SectionResult;
  /** An image written next to BENCHMARKS.md: file name and alt text. */
  figure?: { file: string; alt: string };
}

export interface Report {
  date: Date;
  machine: Machine;
  tools: Record<string, string>;
  settings: string[];
  data: string[];
  sections: ReportSection[];
  /** Sections not run in this run, with why. */
  notRun: string[];
}

/** A goal a run does not meet, and why where that is known. */
export interface Missed {
  text: string;
  why?: string;
}

/** Every goal a run does not meet, one each (speed, peak RSS, image size), in the report's order. */
export function goalsNotMet(sections: ReportSection[], machine: Machine): Missed[] {
  const out = new Map<string, Missed>();
  const add = (m: Missed): void => {
    if (!out.has(m.text)) out.set(m.text, m);
  };
  for (const { result } of sections) {
    const rssSeen = new Set<string>();
    for (const r of result.rows) {
      if (speedGoalMet(r) === false) add({ text: `${r.what}: ${speedupText(r)}× ${r.peerName}, goal ${r.goal!.text}`, why: r.goal!.why?.(r, machine) });
      if (rssGoalMet(r) === false && !rssSeen.has(r.what)) {
        rssSeen.add(r.what);
        add({ text: `${r.what}: peak RSS ${mib(rssOf(r.strata)!)}, goal ≤ ${MAX_RSS_MIB} MiB` });
      }
    }
    for (const z of result.sizes) {
      if (z.goal && z.strata !== undefined && z.peer !== undefined && z.strata > z.peer) {
        add({ text: `image size, ${z.what}: ${((z.strata / z.peer) * 100).toFixed(1)} % of ${z.peerName}, goal ≤ 100 %` });
      }
    }
  }
  return [...out.values()];
}

/** strata cells that hold no measurement, one line per distinct row name. */
function strataNotMeasured(sections: ReportSection[]): string[] {
  const out = new Map<string, string>();
  const label = { failed: 'FAILED', unavailable: 'not available', skipped: 'not run', timeout: 'stopped at the time limit' } as const;
  for (const { result } of sections) {
    for (const r of result.rows) if (r.strata.kind !== 'measured' && !out.has(r.what)) out.set(r.what, `${r.what}: ${label[r.strata.kind]}`);
  }
  return [...out.values()];
}

const freshText = (s: number): string => (Number.isNaN(s) ? 'not measured' : `${(s * 1000).toFixed(0)} ms (${((s / 65536) * 1e6).toFixed(1)} µs a page)`);
const startText = (s: number): string => (Number.isNaN(s) ? 'not measured' : `${(s * 1000).toFixed(1)} ms`);

export function renderReport(r: Report): string {
  const L: string[] = [];
  L.push('# strata benchmarks', '');
  L.push('Generated by `npm run bench` (bench/run.ts); do not edit by hand. See spec/benchmark.md.', '');
  L.push(`Date: ${r.date.toISOString()}`, '');
  L.push('## Machine', '');
  L.push(`- CPU: ${r.machine.cpu}, ${r.machine.cores} cores`);
  L.push(`- memory: ${r.machine.memoryGiB} GiB`);
  L.push(`- kernel: ${r.machine.kernel}`);
  L.push(`- Node: ${r.machine.node}`);
  L.push(`- scratch filesystem (outputs and trees): ${r.machine.scratch}`);
  L.push(`- a process's start and end, spawned from this run (median of ${STARTS}): \`node -e 0\` ${startText(r.machine.start.node)}, \`true\` ${startText(r.machine.start.c)}; every strata row pays Node's, sha256sum and the other peers a C program's`);
  L.push(`- the first write to 256 MiB of fresh memory, in a Node process (median of 3): ${freshText(r.machine.fresh)}; every tool that allocates much pays it per page`, '');
  L.push('## Tools', '');
  for (const [k, v] of Object.entries(r.tools)) L.push(`- ${k}: ${v}`);
  L.push('', '## Data', '');
  for (const d of r.data) L.push(`- ${d}`);
  L.push('', '## Settings', '');
  for (const s of r.settings) L.push(`- ${s}`);
  for (const n of r.notRun) L.push(`- not run: ${n}`);
  L.push('', '## Goals not met', '');
  const missed = goalsNotMet(r.sections, r.machine);
  const unmeasured = strataNotMeasured(r.sections);
  L.push(
    'The goals (issues 5, 12 and 15): sandbox ≥ 1.0× GNU tar; images ≥ 1.0× mksquashfs at gzip and zstd; image size ≤ mksquashfs’s; ingest ≥ 1.0× sha256sum; ' +
      `peak RSS ≤ ${MAX_RSS_MIB} MiB for import, sandbox, squash and EROFS; re-build after one module changed ≤ 15 % of cold.`,
    '',
  );
  if (missed.length === 0) {
    L.push(unmeasured.length === 0 ? '- every row meets its goal' : '- none of the rows measured for strata misses a goal, but some could not be measured (below)');
  }
  for (const m of missed) {
    L.push(`- ${m.text}`);
    if (m.why) L.push(`  - why: ${m.why}`);
  }
  if (unmeasured.length) {
    L.push('', 'Not measured for strata (so not known to meet its goal):', '');
    for (const u of unmeasured) L.push(`- ${u}`);
  }
  for (const sec of r.sections) renderSection(L, sec);
  L.push('');
  return L.join('\n');
}

function renderSection(L: string[], sec: ReportSection): void {
  const res = sec.result;
  L.push('', `## ${sec.title}`, '');
  for (const i of sec.intro) L.push(`- ${i}`);
  if (sec.intro.length) L.push('');
  if (sec.figure) L.push(`![${sec.figure.alt}](${sec.figure.file})`, '');
  L.push(table(res.rows), '');
  const notes = outcomeNotes(res.rows);
  if (notes.length) {
    L.push('Notes:', '');
    for (const n of notes) L.push(`- ${n}`);
    L.push('');
  }
  L.push(`### Image sizes (${sec.title})`, '');
  L.push('| image | strata | peer | peer size | strata/peer | goal |', '|---|---|---|---|---|---|');
  for (const s of res.sizes) {
    const ratio = s.strata === undefined || s.peer === undefined ? '—' : `${((s.strata / s.peer) * 100).toFixed(1)} %`;
    const goal = !s.goal ? '' : s.strata === undefined || s.peer === undefined ? '≤ 100 %: —' : `≤ 100 %: ${s.strata <= s.peer ? 'met' : 'not met'}`;
    L.push(`| ${s.what} | ${s.strata === undefined ? 'not available' : `${s.strata} B`} | ${s.peerName} | ${s.peer === undefined ? 'not available' : `${s.peer} B`} | ${ratio} | ${goal} |`);
  }
  L.push('', `### Correctness gate (${sec.title})`, '');
  for (const g of res.gate) {
    if (g.diffs === undefined) L.push(`- ${g.name}: not run (${g.reason ?? 'strata output not available'})`);
    else if (g.diffs.length === 0) L.push(`- ${g.name}: identical`);
    else {
      L.push(`- ${g.name}: **${g.diffs.length} difference(s)**`);
      for (const d of g.diffs.slice(0, 20)) L.push(`  - ${d}`);
    }
  }
  if (res.crossChecks.length) {
    L.push('', `### Peer cross-checks (${sec.title}, informational)`, '');
    for (const c of res.crossChecks) {
      L.push(`- ${c.name}: ${c.diffs.length === 0 ? 'identical' : `${c.diffs.length} difference(s)`}`);
      for (const d of c.diffs.slice(0, 10)) L.push(`  - ${d}`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Correctness: trees

/** What the gate compares of each path. */
export interface TreeNode {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  nlink: number;
  rdev: number;
  link?: string;
  sha256?: string;
  /** name → hex value, as getfattr -e hex prints it; includes system.posix_acl_*. */
  xattrs: Map<string, string>;
  /** getfacl -n text without the header lines, when the path has an extended or default ACL. */
  acl?: string;
}

export interface SnapshotOptions {
  /** Top-level-relative path prefixes to leave out (e.g. '.strata'). */
  ignore?: readonly string[];
  /** snapshotTreeFast: how many hash-files processes read the files at once (default: one per core). */
  readers?: number;
}

function ignored(p: string, ignore: readonly string[] | undefined): boolean {
  return !!ignore?.some((i) => p === i || p.startsWith(i + '/'));
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** getfacl -R -P -n -s (skip files with base ACLs only), keyed by relative path. */
async function dumpAcls(dir: string): Promise<Map<string, string>> {
  const r = await run('getfacl', ['-R', '-P', '-n', '-s', '-E', '.'], { cwd: dir, allowFail: true });
  const out = new Map<string, string>();
  for (const block of r.stdout.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l);
    const f = lines.find((l) => l.startsWith('# file: '));
    if (!f) continue;
    const p = f.slice(8).replace(/^\.\//, '') || '.';
    out.set(p, lines.filter((l) => !l.startsWith('#')).join(','));
  }
  return out;
}

/**
 * Every path under dir (relative, '.' for dir) with its type, metadata, content hash, xattrs
 * and ACLs, by a JS walk: the selftest's independent reference for snapshotTreeFast, which is
 * what the gate uses (5–8 times faster).
 */
export async function snapshotTree(dir: string, opts: SnapshotOptions = {}): Promise<Map<string, TreeNode>> {
  const nodes = new Map<string, TreeNode>();
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? dir : join(dir, rel);
    const st = await lstat(abs);
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';
    const node: TreeNode = {
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: type === 'file' ? st.size : 0,
      mtime: Math.floor(st.mtimeMs / 1000),
      nlink: type === 'dir' ? 0 : st.nlink,
      rdev: type === 'char' || type === 'block' ? st.rdev : 0,
      xattrs: new Map(),
    };
    if (type === 'symlink') node.link = await readlink(abs);
    if (type === 'file') node.sha256 = await sha256File(abs);
    nodes.set(rel, node);
    if (type === 'dir') {
      for (const name of (await readdir(abs)).sort()) {
        const child = rel === '.' ? name : `${rel}/${name}`;
        if (!ignored(child, opts.ignore)) await visit(child);
      }
    }
  };
  await visit('.');
  for (const [p, attrs] of await dumpXattrs(dir)) nodes.get(p)?.xattrs && (nodes.get(p)!.xattrs = attrs);
  for (const [p, acl] of await dumpAcls(dir)) if (nodes.has(p)) nodes.get(p)!.acl = acl;
  return nodes;
}

/** The xattrs of every path that has none (one shared, never-changed map). */
const NO_XATTRS: Map<string, string> = new Map();

/**
 * The same map as snapshotTree, built by tools that walk the tree instead of a JS walk (the
 * gate's listing, up to a million entries): `find -printf` for the metadata, hash-files
 * processes for the contents (contentHashes), getfattr for xattrs (the ACLs read from their
 * system.posix_acl_* values: aclText), all three at once; `stat` for device numbers.
 * bench/selftest.ts checks that both give equal maps (snapshotTree asks getfacl itself).
 */
export async function snapshotTreeFast(dir: string, opts: SnapshotOptions = {}): Promise<Map<string, TreeNode>> {
  const prune: string[] = [];
  for (const i of opts.ignore ?? []) prune.push(...(prune.length ? ['-o'] : []), '-path', `./${i}`);
  const findArgs = ['.', ...(prune.length ? ['(', ...prune, ')', '-prune', '-o'] : [])];
  // The three listings read the tree independently: run together, the tools' waits on the
  // disk (or on an image's decompression) overlap. Each is joined to the metadata below.
  const [listing, hashes, xattrs] = await Promise.all([
    run('find', [...findArgs, '-printf', '%P\\0%y %m %U %G %s %T@ %n\\0%l\\0'], { cwd: dir }),
    contentHashes(dir, findArgs, opts.readers ?? Math.max(1, cpus().length)),
    dumpXattrs(dir),
  ]);
  const { nodes, devices } = parseListing(listing.stdout);
  for (let i = 0; i < devices.length; i += 500) {
    const batch = devices.slice(i, i + 500);
    const r = await run('stat', ['-c', '%t %T', '--', ...batch.map((p) => `./${p}`)], { cwd: dir });
    r.stdout.trim().split('\n').forEach((line, k) => {
      const [maj, min] = line.split(' ').map((x) => parseInt(x, 16));
      nodes.get(batch[k]!)!.rdev = makedev(maj!, min!);
    });
  }
  for (const out of hashes) {
    // "SHA256  ./PATH\0" records (hash-files), read in place: a million files a listing.
    for (let at = 0; at < out.length; ) {
      const end = out.indexOf('\0', at);
      const from = out.startsWith('./', at + 66) ? at + 68 : at + 66;
      const p = out.slice(from, end);
      const node = nodes.get(p);
      if (!node) throw new BenchError(`hash-files: unexpected path ${p}`);
      node.sha256 = out.slice(at, at + 64);
      at = end + 1;
    }
  }
  for (const [p, attrs] of xattrs) {
    const node = nodes.get(p);
    if (!node || !attrs.size) continue;
    node.xattrs = attrs;
    const acl = aclText(attrs, node.mode);
    if (acl !== undefined) node.acl = acl;
  }
  return nodes;
}

const FIND_TYPES: Record<string, TreeNode['type']> = { f: 'file', d: 'dir', l: 'symlink', c: 'char', b: 'block', p: 'fifo', s: 'socket' };

/**
 * snapshotTreeFast's metadata: find's "PATH\0TYPE MODE UID GID SIZE MTIME NLINK\0LINK\0"
 * records, read in place by character codes. Splitting the output into strings and each
 * record's fields again made 10 million strings for a million-file tree: the bench's own
 * thread, not the tools, was then the slowest part of the listing.
 */
function parseListing(s: string): { nodes: Map<string, TreeNode>; devices: string[] } {
  const nodes = new Map<string, TreeNode>();
  /** Paths of the character and block devices, whose numbers find does not print. */
  const devices: string[] = [];
  let i = 0;
  /** The decimal (or, with base 8, octal) digits at i, and the one separator after them. */
  const num = (base: number): number => {
    let v = 0;
    for (let c = s.charCodeAt(i); c >= 48 && c <= 57; c = s.charCodeAt(++i)) v = v * base + (c - 48);
    i++;
    return v;
  };
  while (i < s.length) {
    const pathEnd = s.indexOf('\0', i);
    const p = pathEnd === i ? '.' : s.slice(i, pathEnd);
    i = pathEnd + 1;
    const type = FIND_TYPES[s[i]!];
    if (!type || s.charCodeAt(i + 1) !== 32) throw new BenchError(`find: unknown type ${s.slice(i, s.indexOf(' ', i))} of ${p}`);
    i += 2;
    const mode = num(8);
    const uid = num(10);
    const gid = num(10);
    const size = num(10);
    // %T@ is "SECONDS.NANOSECONDS" of the timespec, so the part before the point is the
    // whole seconds even before 1970 (1960-01-01 00:00:00.5 prints as -315619200.5).
    const mtimeEnd = s.indexOf(' ', i);
    const negative = s.charCodeAt(i) === 45;
    if (negative) i++;
    const mtime = negative ? -num(10) : num(10);
    i = mtimeEnd + 1;
    const nlink = num(10);
    if (s.charCodeAt(i - 1) !== 0) throw new BenchError(`find: a record of ${p} that does not end where expected`);
    const linkEnd = s.indexOf('\0', i);
    // Every node of one shape: the contents' hashes are set later, and a property added to
    // a million objects after they are made was half of this thread's time.
    const node: TreeNode = {
      type,
      mode,
      uid,
      gid,
      size: type === 'file' ? size : 0,
      mtime,
      nlink: type === 'dir' ? 0 : nlink,
      rdev: 0,
      link: type === 'symlink' ? s.slice(i, linkEnd) : undefined,
      sha256: undefined,
      xattrs: NO_XATTRS,
    };
    i = linkEnd + 1;
    nodes.set(p, node);
    if (type === 'char' || type === 'block') devices.push(p);
  }
  return { nodes, devices };
}

/** The entry tags of a POSIX ACL xattr (the kernel's posix_acl_xattr.h), as getfacl names them. */
const ACL_TAGS: Record<number, string> = { 0x01: 'user:', 0x02: 'user:', 0x04: 'group:', 0x08: 'group:', 0x10: 'mask:', 0x20: 'other:' };
/** Tags whose entries name a user or group. */
const ACL_NAMED = new Set([0x02, 0x08]);
/** Permission bits (0–7) as getfacl writes them: "r-x". */
const rwx = (bits: number): string => `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${bits & 1 ? 'x' : '-'}`;

/** getfacl's lines for one ACL xattr value (getfattr's hex): version 2, then (u16 tag, u16 perm, u32 id) entries. */
function aclLines(hex: string, prefix: string): string[] {
  const b = Buffer.from(hex.replace(/^0x/, ''), 'hex');
  if (b.length < 4 || (b.length - 4) % 8 !== 0 || b.readUInt32LE(0) !== 2) throw new BenchError(`an ACL xattr that is not version 2: ${hex}`);
  const lines: string[] = [];
  for (let at = 4; at < b.length; at += 8) {
    const tag = b.readUInt16LE(at);
    const perm = b.readUInt16LE(at + 2);
    const name = ACL_TAGS[tag];
    if (name === undefined) throw new BenchError(`an ACL entry of unknown tag ${tag}: ${hex}`);
    const who = ACL_NAMED.has(tag) ? String(b.readUInt32LE(at + 4)) : '';
    lines.push(`${prefix}${name}${who}:${rwx(perm)}`);
  }
  return lines;
}

/**
 * What `getfacl -n -s -E` prints for a path (its lines joined by ","), from the
 * system.posix_acl_* xattrs getfattr already dumped: undefined when the path has only the
 * ACL its mode gives. A path with a default ACL and no access ACL gets its access lines from
 * its mode, as getfacl prints them. One walk of the tree fewer for every listing: getfacl -R
 * was the costliest of the four tools (6.6 s of CPU over a million files, getfattr 4.0 s).
 * The selftest holds this against getfacl itself (snapshotTree).
 */
export function aclText(xattrs: Map<string, string>, mode: number): string | undefined {
  const access = xattrs.get('system.posix_acl_access');
  const dflt = xattrs.get('system.posix_acl_default');
  if (access === undefined && dflt === undefined) return undefined;
  const own = access !== undefined ? aclLines(access, '') : [`user::${rwx(mode >> 6)}`, `group::${rwx(mode >> 3)}`, `other::${rwx(mode)}`];
  if (dflt === undefined && own.length <= 3) return undefined;
  return [...own, ...(dflt !== undefined ? aclLines(dflt, 'default:') : [])].join(',');
}

/** hash-files beside this module: .js in dist/, .ts when run with tsx (whose loader execArgv passes on). */
const HASHER = fileURLToPath(new URL(`./hash-files${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/**
 * sha256 of every regular file find(1) lists with `findArgs` under dir, read by `readers`
 * hash-files processes at once: each is given the whole list and hashes its own share, a run
 * of consecutive paths (their directories read together). The list is not cut into strings
 * here: it can hold a million paths, and this thread is the listing's busiest.
 */
async function contentHashes(dir: string, findArgs: readonly string[], readers: number): Promise<string[]> {
  const list = (await run('find', [...findArgs, '-type', 'f', '-print0'], { cwd: dir })).stdout;
  if (!list) return [];
  return Promise.all(Array.from({ length: readers }, (_, k) => hashFiles(dir, list, `${k}/${readers}`)));
}

/** One hash-files.js process over its `share` of `list` (NUL-ended paths relative to dir): its "SHA256  PATH\0" records. */
function hashFiles(dir: string, list: string, share: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, HASHER, share], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new BenchError(`hashing the files of ${dir} failed: ${Buffer.concat(err).toString('utf8').trim().split('\n').slice(-3).join('; ')}`));
    });
    child.stdin.on('error', () => {}); // a child that failed is reported by its exit status
    child.stdin.end(list);
  });
}

/** The ACL text of every path of a listing that has one (DiffOptions.referenceAcls). */
export function aclsOf(snap: Map<string, TreeNode>): Map<string, string> {
  const acls = new Map<string, string>();
  for (const [p, n] of snap) if (n.acl) acls.set(p, n.acl);
  return acls;
}

export interface DiffOptions {
  /** Compare as an image against a tree or image: see imageRules below. */
  image?: boolean;
  /** Extended ACLs of the reference (path → getfacl text) for the image mode rule. */
  referenceAcls?: Map<string, string>;
  limit?: number;
}

/**
 * Differences of `actual` from `reference`, one human-readable line each.
 *
 * Image rules (opts.image): SquashFS cannot store POSIX ACLs, so system.posix_acl_* xattrs
 * and getfacl text are not compared; for a path whose reference has an extended ACL the
 * owner and other bits must match and the group bits may be any subset of
 * (ACL group:: entry ∧ mask) — that is DESIGN.md's "no one gets more access than the ACL
 * gave". Directory nlink is never compared (it counts subdirectories).
 */
export function diffTrees(actual: Map<string, TreeNode>, reference: Map<string, TreeNode>, opts: DiffOptions = {}): string[] {
  const out: string[] = [];
  const limit = opts.limit ?? 200;
  const add = (s: string) => {
    if (out.length < limit) out.push(s);
    else if (out.length === limit) out.push('… more differences left out');
  };
  for (const p of reference.keys()) if (!actual.has(p)) add(`${p}: missing`);
  for (const p of actual.keys()) if (!reference.has(p)) add(`${p}: unexpected`);
  const oct = (m: number) => m.toString(8).padStart(4, '0');
  for (const [p, ref] of reference) {
    const act = actual.get(p);
    if (!act) continue;
    if (act.type !== ref.type) {
      add(`${p}: type ${act.type}, expected ${ref.type}`);
      continue;
    }
    if (act.mode !== ref.mode) {
      const acl = opts.image ? (opts.referenceAcls?.get(p) ?? ref.acl) : undefined;
      const allowed = acl ? aclGroupLimit(acl) : undefined;
      const ok =
        allowed !== undefined &&
        (act.mode & ~0o070) === (ref.mode & ~0o070) &&
        ((act.mode >> 3) & 7 & ~allowed) === 0;
      if (!ok) add(`${p}: mode ${oct(act.mode)}, expected ${oct(ref.mode)}`);
    }
    if (act.uid !== ref.uid || act.gid !== ref.gid) add(`${p}: owner ${act.uid}:${act.gid}, expected ${ref.uid}:${ref.gid}`);
    if (act.size !== ref.size) add(`${p}: size ${act.size}, expected ${ref.size}`);
    else if (act.sha256 !== ref.sha256) add(`${p}: content differs`);
    if (act.type !== 'dir' && act.mtime !== ref.mtime) add(`${p}: mtime ${act.mtime}, expected ${ref.mtime}`);
    if (act.type === 'dir' && act.mtime !== ref.mtime) add(`${p}: dir mtime ${act.mtime}, expected ${ref.mtime}`);
    if (act.type !== 'dir' && act.nlink !== ref.nlink) add(`${p}: nlink ${act.nlink}, expected ${ref.nlink}`);
    if (act.rdev !== ref.rdev) add(`${p}: device ${act.rdev}, expected ${ref.rdev}`);
    if (act.link !== ref.link) add(`${p}: link target ${act.link}, expected ${ref.link}`);
    const names = act.xattrs.size + ref.xattrs.size === 0 ? [] : new Set([...act.xattrs.keys(), ...ref.xattrs.keys()]);
    for (const n of names) {
      if (opts.image && n.startsWith('system.posix_acl_')) continue;
      const a = act.xattrs.get(n);
      const r = ref.xattrs.get(n);
      if (a !== r) add(`${p}: xattr ${n} ${a === undefined ? 'missing' : r === undefined ? 'unexpected' : `${a}, expected ${r}`}`);
    }
    if (!opts.image && act.acl !== ref.acl) add(`${p}: ACL ${act.acl ?? '(none)'}, expected ${ref.acl ?? '(none)'}`);
  }
  return out;
}

/** Permission bits (rwx as 0–7) that an ACL grants the owning group: group:: ∧ mask. */
function aclGroupLimit(acl: string): number | undefined {
  const entries = acl.split(',');
  const bits = (tag: string) => {
    const e = entries.find((x) => x.startsWith(tag));
    if (!e) return undefined;
    const perm = e.slice(tag.length).slice(0, 3);
    return (perm[0] === 'r' ? 4 : 0) | (perm[1] === 'w' ? 2 : 0) | (perm[2] === 'x' ? 1 : 0);
  };
  const g = bits('group::');
  if (g === undefined) return undefined;
  const m = bits('mask::');
  return m === undefined ? g : g & m;
}

// ---------------------------------------------------------------------------------------
// Correctness: images

/** The filesystem type of an image file by its magic: squashfs ("hsqs" at 0) or erofs (0xE0F5E1E2 at 1024). */
export async function imageType(image: string): Promise<'squashfs' | 'erofs'> {
  const fh = await open(image, 'r');
  try {
    const b = Buffer.alloc(1028);
    await fh.read(b, 0, b.length, 0);
    if (b.toString('latin1', 0, 4) === 'hsqs') return 'squashfs';
    if (b.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  } finally {
    await fh.close();
  }
  throw new BenchError(`${image}: neither a SquashFS nor an EROFS image`);
}

/**
 * At most `n` of the functions given to the returned one run at once, started in the order
 * given: the gates' listings, two at a time.
 */
export function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (running >= n) await new Promise<void>((go) => waiting.push(go));
    else running++;
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next(); // its slot passes on: running stays as it is
      else running--;
    }
  };
}

/**
 * mount(2) of an image file itself, read-only, without a loop device: EROFS on kernels built
 * with CONFIG_EROFS_FS_BACKED_BY_FILE (6.12 on). mount(8) cannot ask for it (util-linux 2.38
 * puts a loop device under any regular file), so the call is made through python3's ctypes.
 * Listing the million-file EROFS image took 25–30 s this way against 46–50 s through a loop
 * device, whose round trip every block read pays. False when the kernel refuses.
 */
async function mountFile(image: string, mnt: string, type: string): Promise<boolean> {
  const MS_RDONLY = 1;
  const script = [
    'import ctypes, os, sys',
    "libc = ctypes.CDLL(None, use_errno=True)",
    `if libc.mount(os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), os.fsencode(sys.argv[3]), ${MS_RDONLY}, None) != 0:`,
    '    sys.exit(os.strerror(ctypes.get_errno()))',
  ].join('\n');
  return (await run('python3', ['-c', script, image, mnt, type], { allowFail: true })).code === 0;
}

/** The last mount begun by withMountedImage: the next waits for it. */
let mounting: Promise<unknown> = Promise.resolve();

/**
 * Mounts a SquashFS or EROFS image read-only (needs root), runs fn on the mount point, and
 * always unmounts. EROFS is mounted from the file itself where the kernel can (mountFile),
 * anything else through a loop device.
 */
export async function withMountedImage<T>(image: string, fn: (dir: string, type: string) => Promise<T>): Promise<T> {
  const type = await imageType(image);
  const mnt = await mkdtemp('/tmp/strata-bench-mnt-');
  // One mount at a time: mount(8) looks for a free loop device, and two listings may mount at once.
  const mounted = mounting.then(async () => {
    if (type === 'erofs' && !process.env['BENCH_LOOP_MOUNT'] && (await mountFile(image, mnt, type))) return;
    await run('mount', ['-t', type, '-o', 'loop,ro', image, mnt]);
  });
  mounting = mounted.catch(() => undefined);
  await mounted;
  try {
    return await fn(mnt, type);
  } finally {
    const r = await run('umount', [mnt], { allowFail: true });
    if (r.code !== 0) await run('umount', ['-l', mnt], { allowFail: true });
    await rm(mnt, { recursive: true, force: true });
  }
}

/**
 * Snapshot of an image's contents through a read-only kernel mount (snapshotTreeFast). A
 * SquashFS mount is read by one hash-files process at a time: the kernel keeps three fragment
 * blocks decompressed, and two readers in different directories evict each other's (100,000
 * small files of the 1M image: 7.5 s with one reader, 11.6 s with two, 23.9 s with four).
 * EROFS has no shared fragments and takes one reader per core (3.9 s with one, 1.9 s with two).
 */
export function snapshotImage(image: string, opts: SnapshotOptions = {}): Promise<Map<string, TreeNode>> {
  return withMountedImage(image, (d, type) => snapshotTreeFast(d, { readers: type === 'squashfs' ? 1 : undefined, ...opts }));
}

/**
 * Snapshot of a SquashFS image read by squashfs-tools-ng, with no kernel mount: sqfs2tar's
 * archive listed by bench/tar-list.ts. The scale section's images: through the kernel, the
 * million-file image took 147 s to list here, most of it the loop device's round trips for
 * metadata (find alone: 101 s), and sqfs2tar writes the whole archive in 16 s. The stack
 * section keeps the kernel mount (snapshotImage), the way users read an image.
 */
export async function snapshotSquashfs(image: string, opts: SnapshotOptions = {}): Promise<Map<string, TreeNode>> {
  const ROOT = 'root';
  const child = spawn('sqfs2tar', ['--no-skip', '--root-becomes', ROOT, image], { stdio: ['ignore', 'pipe', 'pipe'] });
  const err: Buffer[] = [];
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (e) => reject(new BenchError(`cannot run sqfs2tar: ${e.message}`)));
    child.on('close', (code) => resolve(code ?? 128));
  });
  let nodes: Map<string, TreeNode>;
  try {
    nodes = await listTar(child.stdout, { root: ROOT, ignore: opts.ignore });
  } catch (e) {
    child.kill();
    await exited.catch(() => undefined);
    throw e;
  }
  const code = await exited;
  if (code !== 0) throw new BenchError(`sqfs2tar ${image} failed (exit ${code}): ${Buffer.concat(err).toString('utf8').trim().split('\n').slice(-3).join('; ')}`);
  return nodes;
}

/** sqfsdiff -a A -b B, ignoring lines about ignored paths; [] when equal. */
export async function sqfsdiff(a: string, b: string, opts: SnapshotOptions & { noPermissions?: boolean } = {}): Promise<string[]> {
  const args = ['--old', a, '--new', b];
  if (opts.noPermissions) args.push('--no-permissions');
  const r = await run('sqfsdiff', args, { allowFail: true });
  if (r.code === 2) throw new BenchError(`sqfsdiff ${a} ${b}: ${r.stderr.trim()}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() && !opts.ignore?.some((i) => l.includes(`/${i}`)));
}

export async function writeText(path: string, text: string): Promise<void> {
  await writeFile(path, text);
}

export { existsSync };

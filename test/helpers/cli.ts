/**
 * The strata CLI as the tests run it: the executable `dist/bundle/strata.cjs` (`npm test` builds it
 * first), or $STRATA_TEST_CLI to check that the tests fail against a mutated build.
 *
 * One runner for every suite, a real subprocess each time (no shell):
 *
 *   strata(args, { store, cwd, env, as, prefix, input, timeout })  → RunResult, never throws
 *   strataOk(args, opts)        asserts exit 0, returns stdout as text
 *   strataJson<T>(args, opts)   `--json ARGS…`, asserts exit 0 and one JSON document on stdout
 *   strataAsync(args, opts)     started, not awaited: killable, stderr so far
 *   assertOneLineError(r, what, re?)  the way DESIGN.md says a refusal looks
 *   assertNotACrash(text, what)       no trace of JavaScript failing in a message
 *
 * `as` runs it as another user (helpers/users.ts: ensureUser, or nobody(home) for uid 65534),
 * through the same argv and environment as runAs. STRATA_STORE is '' unless `env` sets it, so
 * a variable in the caller's shell never picks the store.
 */
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from './tmp.js';
import { asUser, userEnv, type TestUser } from './users.js';

export const CLI =
  process.env.STRATA_TEST_CLI ||
  [new URL('../../bundle/strata.cjs', import.meta.url), new URL('../../dist/bundle/strata.cjs', import.meta.url)]
    .map((u) => fileURLToPath(u))
    .find((p) => existsSync(p))!;

export interface StrataOptions {
  /** `--store STORE` before the arguments; without it the CLI finds its stores itself ($STRATA_PATH, the default). */
  store?: string;
  cwd?: string;
  /** Over process.env (and over the user's environment when `as` is given). */
  env?: Record<string, string>;
  /** Run as this user: setpriv with its uid, gid and groups, its HOME (helpers/users.ts). */
  as?: TestUser;
  /** Commands that run the CLI (GNU time, unshare …), put before the switch to `as`. */
  prefix?: readonly string[];
  /** Bytes or text on stdin (strataAsync closes stdin). */
  input?: Buffer | string;
  /** Milliseconds before the CLI is killed (default 120 s). */
  timeout?: number;
}

/** A store and a working directory, as suites that keep both for a whole stack pass them around. */
export type Workspace = StrataOptions & { store: string; cwd: string };

/** `node CLI [--store STORE] ARGS…`: the argv of one CLI run, for runners of their own (script(1), a signal test). */
export function strataArgv(args: readonly string[], store?: string): string[] {
  return [process.execPath, CLI, ...(store === undefined ? [] : ['--store', store]), ...args];
}

/**
 * NODE_EXTRA_CA_CERTS from the tests' own environment, held back from Node's start as the
 * launcher (cli/strata) holds it back, and put back by the CLI first thing: Node parses the
 * file's certificates at every start otherwise (60 ms of each of the suite's CLI runs on a
 * machine where it names the system bundle). Empty is what Node reads as unset. A test that
 * sets the variable in `env` runs the CLI with it as given (registry-tls).
 */
const heldBack: Record<string, string> = process.env.NODE_EXTRA_CA_CERTS
  ? { NODE_EXTRA_CA_CERTS: '', STRATA_NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS }
  : {};

function command(args: readonly string[], o: StrataOptions): { argv: string[]; env: Record<string, string> } {
  const argv = [...(o.prefix ?? []), ...(o.as ? asUser(o.as) : []), ...strataArgv(args, o.store)];
  const env = { STRATA_STORE: '', ...(o.env?.NODE_EXTRA_CA_CERTS === undefined ? heldBack : {}), ...(o.as ? userEnv(o.as) : {}), ...o.env };
  return { argv, env };
}

/** `strata [--store STORE] ARGS…`, synchronously. Never throws. */
export function strata(args: readonly string[], o: StrataOptions = {}): RunResult {
  const { argv, env } = command(args, o);
  return run(argv[0]!, argv.slice(1), { cwd: o.cwd, env, input: o.input, timeout: o.timeout ?? 120_000 });
}

function shown(args: readonly string[], o: StrataOptions): string {
  return `strata ${args.join(' ')}${o.as ? ` (as ${o.as.name})` : ''}`;
}

/** Fails the test unless the command exited 0. */
export function ok(r: RunResult, what: string): RunResult {
  assert.is(r.code, 0, `${what} failed (exit ${r.code}): ${r.stderr}`);
  return r;
}

/** Runs the CLI and fails the test unless it exits 0; returns stdout as text. */
export function strataOk(args: readonly string[], o: StrataOptions = {}): string {
  return ok(strata(args, o), shown(args, o)).stdout.toString('utf8');
}

/** `strata [--store STORE] --json ARGS…`; asserts exit 0 and one parseable JSON document on stdout. */
export function strataJson<T = any>(args: readonly string[], o: StrataOptions = {}): T {
  const text = strataOk(['--json', ...args], o);
  try {
    return JSON.parse(text) as T;
  } catch {
    assert.unreachable(`${shown(['--json', ...args], o)} printed no single JSON document: ${text}`);
    throw new Error('unreachable');
  }
}

export interface AsyncRun {
  pid: number;
  done: Promise<RunResult & { signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
  /** stderr so far (for watching a waiting note appear). */
  stderrSoFar(): string;
}

/** Starts the CLI without waiting for it; stdin is closed, and no timeout: the test kills it. */
export function strataAsync(args: readonly string[], o: StrataOptions = {}): AsyncRun {
  const { argv, env } = command(args, o);
  const child = spawn(argv[0]!, argv.slice(1), { cwd: o.cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const done = new Promise<RunResult & { signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => err.push(Buffer.from(`${e.message}\n`)));
    child.on('close', (code, signal) =>
      resolve({ code: code ?? -1, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
  return { pid: child.pid!, done, kill: (s) => child.kill(s), stderrSoFar: () => Buffer.concat(err).toString('utf8') };
}

/**
 * Asserts the CLI failed the way DESIGN.md says errors look: exit 1, exactly one line on
 * stderr starting with "strata: ", no stack trace, not an internal error. Returns the line.
 */
export function assertOneLineError(r: RunResult, what: string, mustMatch?: RegExp): string {
  const text = r.stderr;
  assert.is(r.code, 1, `${what}: exit ${r.code}, stderr: ${text}`);
  const lines = text.split('\n').filter((l) => l !== '');
  assert.is(lines.length, 1, `${what}: expected one stderr line, got: ${text}`);
  const line = lines[0]!;
  assert.ok(line.startsWith('strata: '), `${what}: stderr does not start with 'strata: ': ${line}`);
  assertNotACrash(line, what);
  if (mustMatch) assert.match(line, mustMatch, `${what}: ${line}`);
  return line;
}

/**
 * What a message shows when JavaScript failed rather than strata refusing: a stack frame, an
 * error class's name, the CLI's last-resort "internal error", or a value that was never set.
 * Whole words and case-sensitive, because messages name temporary paths whose random tails
 * spell anything: /NaN/i once matched the directory strata-erofs-bad-y6JnAN. A tail of word
 * characters cannot hold NaN or undefined as a whole word.
 */
const CRASH_WORDS = /^\s+at |internal error|Error:|\bundefined\b|\bNaN\b/m;

/** Asserts `text` (a message or stderr) shows none of CRASH_WORDS. */
export function assertNotACrash(text: string, what: string): void {
  assert.not.match(text, CRASH_WORDS, `${what}: looks like a crash: ${text}`);
}

/** uvu drops an error thrown by a `before` hook without a word; print it before rethrowing. */
export function loud<T>(fn: (ctx: T) => void): (ctx: T) => void {
  return (ctx) => {
    try {
      fn(ctx);
    } catch (e) {
      process.stderr.write(`suite setup failed: ${(e as Error).stack ?? e}\n`);
      throw e;
    }
  };
}

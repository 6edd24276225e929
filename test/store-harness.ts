/**
 * Shared helpers for the store acceptance suites (test/store-*.test.ts): they drive the real
 * CLI (`node dist/cli/main.js --store DIR …`) as a user would, and look at the store directory
 * with plain fs calls, independent of store/.
 *
 * The CLI is the compiled one in dist/: run `npx tsc -p .` first (test/run.js does).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CID } from 'multiformats/cid';
import * as assert from 'uvu/assert';
import { run, RunOptions, RunResult } from './helpers/tmp.js';


import { CLI } from './helpers/cli.js';
export { CLI };

/** `strata --store <store> …args`, synchronously. Never throws. */
export function strata(store: string, args: readonly string[], opts: RunOptions = {}): RunResult {
  return run(process.execPath, [CLI, '--store', store, ...args], opts);
}

/** `strata --store <store> --json …args`; asserts exit 0 and one parseable JSON document on stdout. */
export function strataJson<T = any>(store: string, args: readonly string[], opts: RunOptions = {}): T {
  const r = strata(store, ['--json', ...args], opts);
  assert.is(r.code, 0, `strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  const text = r.stdout.toString('utf8');
  try {
    return JSON.parse(text) as T;
  } catch {
    assert.unreachable(`strata --json ${args.join(' ')} printed no single JSON document: ${text}`);
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

/** Starts the CLI without waiting for it. */
export function strataAsync(store: string, args: readonly string[], env: Record<string, string> = {}): AsyncRun {
  const child = spawn(process.execPath, [CLI, '--store', store, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const done = new Promise<RunResult & { signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) =>
      resolve({ code: code ?? -1, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
  return { pid: child.pid!, done, kill: (s) => child.kill(s), stderrSoFar: () => Buffer.concat(err).toString('utf8') };
}

/**
 * Asserts the CLI failed the way DESIGN.md says errors look: exit 1, exactly one line on
 * stderr starting with "strata: ", no stack trace, not an internal error.
 */
export function assertOneLineError(r: RunResult, what: string, mustMatch?: RegExp): string {
  const text = r.stderr;
  assert.is(r.code, 1, `${what}: exit ${r.code}, stderr: ${text}`);
  const lines = text.split('\n').filter((l) => l !== '');
  assert.is(lines.length, 1, `${what}: expected one stderr line, got: ${text}`);
  const line = lines[0]!;
  assert.ok(line.startsWith('strata: '), `${what}: stderr does not start with 'strata: ': ${line}`);
  assert.not.match(line, /^\s+at |internal error|Error: |\n\s+at /, `${what}: looks like a crash: ${line}`);
  if (mustMatch) assert.match(line, mustMatch, `${what}: ${line}`);
  return line;
}

/** `blobs/sha256/*` as "name size" lines, sorted. */
export function blobListing(store: string): string[] {
  const dir = join(store, 'blobs', 'sha256');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .map((n) => `${n} ${statSync(join(dir, n)).size}`);
}

/** Every file below `dir` (relative paths, sorted), for "nothing new was written" checks. */
export function fileListing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel === '' ? dir : join(dir, rel);
    for (const n of readdirSync(abs).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      out.push(r);
      if (statSync(join(abs, n), { throwIfNoEntry: false })?.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

/** The hex sha256 a CIDv1 (sha2-256) names, parsed with multiformats, not with store/cid.ts. */
export function cidHex(cid: string): string {
  const c = CID.parse(cid);
  assert.is(c.version, 1, `${cid} is CIDv1`);
  assert.is(c.multihash.code, 0x12, `${cid} uses sha2-256`);
  return Buffer.from(c.multihash.digest).toString('hex');
}

export function cidCodec(cid: string): number {
  return CID.parse(cid).code;
}

export function blobPath(store: string, cid: string): string {
  return join(store, 'blobs', 'sha256', cidHex(cid));
}

/** Reads a JSON blob by CID, checking the file's sha256 is the CID's digest. */
export function readJsonBlob<T = any>(store: string, cid: string): T {
  const bytes = readFileSync(blobPath(store, cid));
  assert.is(createHash('sha256').update(bytes).digest('hex'), cidHex(cid), `blob of ${cid} matches its digest`);
  return JSON.parse(bytes.toString('utf8')) as T;
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export { seeded } from './helpers/random.js';

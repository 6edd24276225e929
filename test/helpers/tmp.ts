/**
 * Temp directories and child processes for tests.
 *
 * Processes are always started with an argument vector (spawnSync, no shell), so paths with
 * spaces, newlines or quotes go through untouched. stdout comes back as raw bytes (tar
 * streams, binary xattr dumps); stderr as UTF-8 text for messages.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Creates a fresh, empty directory under the OS temp dir; `prefix` names it for humans. */
export function tempDir(prefix = 'strata-test-'): string {
  return freshDirIn(tmpdir(), prefix);
}

/** A fresh, empty directory in `parent`, its name `prefix` and a random tail. */
function freshDirIn(parent: string, prefix: string): string {
  return mkdtempSync(join(parent, prefix.endsWith('-') ? prefix : `${prefix}-`));
}

/** statfs(2)'s f_type of a tmpfs. */
const TMPFS_MAGIC = 0x01021994;
/** The room a RAM directory must have free: the largest scale test holds about 2 GiB at once. */
const RAM_ROOM = 8 * 2 ** 30;

/**
 * A fresh directory on /dev/shm when that is a tmpfs with room, else under the OS temp dir
 * (tempDir). For the tests that write trees of hundreds of thousands of names: what they
 * check is memory, not the disk, and on this machine's disk each such tree costs minutes of
 * system time (the three scale tests took 870 s of the suite on it, 474 s on tmpfs).
 */
export function ramDir(prefix = 'strata-test-'): string {
  try {
    const shm = statfsSync('/dev/shm');
    if (Number(shm.type) === TMPFS_MAGIC && Number(shm.bavail) * Number(shm.bsize) >= RAM_ROOM) return freshDirIn('/dev/shm', prefix);
  } catch {
    // no /dev/shm: the temp dir
  }
  return tempDir(prefix);
}

/** Removes a directory tree; a missing directory is not an error. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

export interface RunOptions {
  cwd?: string;
  /** Bytes or text written to the child's stdin. */
  input?: Buffer | string;
  /** Extra environment, merged over process.env. */
  env?: Record<string, string>;
  /** Milliseconds before the child is killed (default 60 s). */
  timeout?: number;
}

export interface RunResult {
  /** Exit code; -1 when the child was killed by a signal or could not start. */
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs `cmd args…` without a shell and returns its exit code and output. Never throws. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): RunResult {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    input: opts.input,
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
    timeout: opts.timeout ?? 60_000,
    maxBuffer: 1 << 30,
  });
  const stderr = (r.stderr ?? Buffer.alloc(0)).toString('utf8') + (r.error ? `${r.error.message}\n` : '');
  return { code: r.status ?? -1, stdout: r.stdout ?? Buffer.alloc(0), stderr };
}

/**
 * Detaches a mount a test made; a path that is not mounted is left alone. A mount can stay busy
 * for a moment after its last user is gone (a loop device is released asynchronously, and on a
 * loaded machine that outlasts the test), so it is retried for a few seconds and then detached
 * lazily, which the kernel finishes once the last reference goes. Never throws: it runs in
 * after-hooks, where an exception would hide the test's own result.
 */
export function unmount(path: string): void {
  if (run('mountpoint', ['-q', path]).code !== 0) return;
  for (let tries = 0; tries < 20; tries++) {
    if (run('umount', [path]).code === 0) return;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 250);
  }
  const lazy = run('umount', ['-l', path]);
  if (lazy.code !== 0) process.stderr.write(`note: ${path} stays mounted: ${lazy.stderr.trim()}\n`);
}

/** Like run(), but throws an Error naming the command and its stderr unless it exits 0. */
export function mustRun(cmd: string, args: readonly string[], opts: RunOptions = {}): RunResult {
  const r = run(cmd, args, opts);
  if (r.code !== 0) {
    const shown = [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
    throw new Error(`command failed (exit ${r.code}): ${shown}\n${r.stderr.trim()}`);
  }
  return r;
}

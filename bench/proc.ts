/**
 * Child-process helpers shared by the benchmark's data builder, harness and runner.
 *
 * Every external tool is run without a shell unless the caller asks for `bash -c` itself;
 * a non-zero exit becomes a BenchError carrying the command line and the tail of stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export class BenchError extends Error {
  constructor(message: string, readonly exitCode: number | null = null, readonly stderr = '') {
    super(message);
    this.name = 'BenchError';
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Stream the child's stdout/stderr to our stderr instead of collecting them. */
  inherit?: boolean;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFail?: boolean;
  /** Told the child once it is spawned (to signal it while it runs). */
  spawned?: (child: ChildProcess) => void;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs cmd to completion; stdout/stderr are collected as UTF-8 text (latin1-safe enough for listings). */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', opts.inherit ? 2 : 'pipe', opts.inherit ? 2 : 'pipe'],
    });
    opts.spawned?.(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new BenchError(`cannot run ${cmd}: ${e.message}`)));
    child.on('close', (code, signal) => {
      const res = {
        code: code ?? 128,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (res.code === 0 || opts.allowFail) return resolve(res);
      const tail = res.stderr.trim().split('\n').slice(-5).join('\n');
      reject(
        new BenchError(
          `${cmd} ${args.join(' ')} failed (${signal ? `signal ${signal}` : `exit ${res.code}`})${tail ? `:\n${tail}` : ''}`,
          res.code,
          res.stderr,
        ),
      );
    });
  });
}

/** Single-quotes a string for bash. */
export function sh(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const started = Date.now();

/** One progress line on stderr, stamped with the seconds since the run started. */
export function log(msg: string): void {
  const t = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stderr.write(`bench ${t} s: ${msg}\n`);
}

/**
 * Printing. Command handlers return a Result; this renders it as text for people or, with
 * --json, as exactly one JSON document on stdout. Errors are one line on stderr,
 * `strata: <what went wrong> (<what to do>)`, or under --json one document
 * `{"error":{"code","message","hint"}}` on stdout. Only command-line usage errors exit 2.
 */
import { StrataError } from '../native/errors.js';
import { CLI_ERR } from './errors.js';

export interface GlobalOptions {
  store?: string[];
  stack?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** What a command hands back: its data (for --json) and how people read it. */
export interface Result<T = unknown> {
  data: T;
  /** Lines for people on stdout; empty lines are dropped. Omitted: nothing is printed. */
  text?: () => string | string[];
  /** Remarks for people (stderr), dropped with -q and --json. */
  notes?: string[];
  /** Warnings (stderr), dropped with -q. */
  warnings?: string[];
  /** The command did its work and reports, then fails with this (exit 1): `store verify` with problems. */
  error?: StrataError;
  /**
   * The command's own process had the terminal (`exec`): nothing is printed but notes,
   * warnings and `error`, and strata exits with this status.
   */
  exitStatus?: number;
}

export function result<T>(data: T, text?: () => string | string[], extra: Omit<Result<T>, 'data' | 'text'> = {}): Result<T> {
  return { data, text, ...extra };
}

export class Printer {
  constructor(private readonly opts: () => GlobalOptions) {}

  get json(): boolean {
    return Boolean(this.opts().json);
  }
  get quiet(): boolean {
    return Boolean(this.opts().quiet);
  }

  /** Prints a command's result; returns the exit code. */
  print(r: Result): number {
    for (const n of r.notes ?? []) this.note(n);
    for (const w of r.warnings ?? []) this.warn(w);
    if (r.exitStatus !== undefined) {
      if (r.error) this.fail(r.error, false);
      return r.exitStatus;
    }
    if (this.json) {
      const doc = r.error ? { ...(isPlainObject(r.data) ? r.data : { result: r.data }), error: errorJson(r.error) } : r.data;
      process.stdout.write(`${JSON.stringify(doc ?? null, null, 2)}\n`);
    } else if (r.text) {
      const t = r.text();
      for (const l of Array.isArray(t) ? t : [t]) if (l !== '') process.stdout.write(`${l}\n`);
    }
    if (r.error) {
      if (!this.json) process.stderr.write(`${describeError(r.error).line}\n`);
      return 1;
    }
    return 0;
  }

  /** Prints an error the way the mode asks; returns its exit code. */
  fail(e: unknown, verbose: boolean): number {
    const { code, line } = describeError(e);
    if (this.json) process.stdout.write(`${JSON.stringify({ error: errorJson(e) }, null, 2)}\n`);
    else process.stderr.write(`${line}\n`);
    if (verbose && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    return code;
  }

  /** A remark for people (stderr), dropped with -q and --json. */
  note(message: string): void {
    if (!this.quiet && !this.json) process.stderr.write(`${message}\n`);
  }

  /** A warning: stderr, shown even with --json, dropped with -q. */
  warn(message: string): void {
    if (!this.quiet) process.stderr.write(`strata: warning: ${oneLine(message)}\n`);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A table of columns padded to the widest cell; the last column is not padded. */
export function table(rows: string[][]): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

/** `n thing` / `n things`. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

const FRIENDLY: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EEXIST: 'already exists',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EROFS: 'read-only file system',
  ELOOP: 'too many levels of symbolic links',
  EMFILE: 'too many open files',
};

/** Newlines and control characters would break the one-line rule; make them visible. */
function oneLine(s: string): string {
  return s.replace(/\r?\n\s*/g, '; ').replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Exit code and one-line message for an error. */
export function describeError(e: unknown): { code: number; line: string } {
  if (e instanceof StrataError) {
    const hint = e.hint ? ` (${e.hint})` : '';
    return { code: e.code === CLI_ERR.USAGE ? 2 : 1, line: oneLine(`strata: ${e.message}${hint}`) };
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.syscall) {
    const what = err.path ? `${err.path}: ` : '';
    return { code: 1, line: oneLine(`strata: ${what}${FRIENDLY[err.code] ?? err.message}`) };
  }
  const msg = e instanceof Error ? e.message : String(e);
  return { code: 1, line: oneLine(`strata: internal error: ${msg} (run with -v for details and report it)`) };
}

function errorJson(e: unknown): { code: string; message: string; hint?: string } {
  if (e instanceof StrataError) return { code: e.code, message: oneLine(e.message), ...(e.hint ? { hint: e.hint } : {}) };
  const err = e as NodeJS.ErrnoException;
  const line = describeError(e).line.replace(/^strata: /, '');
  return { code: typeof err?.code === 'string' && err.syscall ? err.code : 'ERR_INTERNAL', message: line };
}

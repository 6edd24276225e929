/**
 * Printing. Commands return data; this prints it as text or, with --json, as one JSON document.
 * Errors are one line on stderr: `strata: <what went wrong> (<what to do>)`.
 */
import { StrataError, ERR } from '../store/errors.js';

export interface GlobalOptions {
  store?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

export class Output {
  constructor(readonly opts: GlobalOptions) {}

  /** Prints a command's result: `text` renders it for people, --json prints `data`. */
  result(data: unknown, text: () => string | string[]): void {
    if (this.opts.json) {
      process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
      return;
    }
    const t = text();
    const lines = Array.isArray(t) ? t : [t];
    for (const l of lines) if (l !== '') process.stdout.write(`${l}\n`);
  }

  /** A remark for people (stderr), dropped with -q and --json. */
  note(message: string): void {
    if (!this.opts.quiet && !this.opts.json) process.stderr.write(`${message}\n`);
  }

  /** A warning: stderr, shown even with --json, dropped with -q. */
  warn(message: string): void {
    if (!this.opts.quiet) process.stderr.write(`strata: warning: ${message}\n`);
  }
}

export function table(rows: string[][]): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

/** Exit code and one-line message for an error. */
export function describeError(e: unknown, verbose: boolean): { code: number; line: string } {
  if (e instanceof StrataError) {
    const hint = e.hint ? ` (${e.hint})` : '';
    return { code: e.code === ERR.USAGE ? 2 : 1, line: `strata: ${e.message}${hint}` };
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.syscall) {
    const what = err.path ? `${err.path}: ` : '';
    const friendly: Record<string, string> = {
      ENOENT: 'no such file or directory',
      EACCES: 'permission denied',
      EPERM: 'operation not permitted',
      ENOSPC: 'no space left on device',
      EEXIST: 'already exists',
      ENOTDIR: 'not a directory',
      EISDIR: 'is a directory',
    };
    return { code: 1, line: `strata: ${what}${friendly[err.code] ?? err.message}${verbose ? '' : ''}` };
  }
  const msg = e instanceof Error ? e.message : String(e);
  return { code: 1, line: `strata: internal error: ${msg} (run with -v for details and report it)` };
}

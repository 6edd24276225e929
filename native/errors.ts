/**
 * The error every floor of strata throws, and the codes of the bottom floor.
 *
 * Each area has its own `errors.ts` with the codes it raises (store/errors.ts,
 * compose/errors.ts, compose/image/errors.ts, cli/errors.ts); they all throw StrataError,
 * defined here because native/ is the floor everything else stands on and imports nothing
 * above it. Callers branch on `code`, never on the message. `hint` says what to do; the CLI
 * prints `strata: <message> (<hint>)`. `cause` is set when an error wraps another.
 */
export class StrataError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StrataError';
    this.code = code;
    this.hint = opts.hint;
  }
}

export function isStrataError(e: unknown, code?: string): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}

/** Codes raised by native/. */
export const NATIVE_ERR = {
  /** The addon is not built, or built for another Node. */
  UNAVAILABLE: 'ERR_NATIVE_UNAVAILABLE',
  /** ACL text or a binary ACL that cannot be parsed. */
  ACL_INVALID: 'ERR_ACL_INVALID',
} as const;

/**
 * A name from an archive, image, registry or user, made safe for a one-line message:
 * control characters (newlines, escapes) become \xNN, and long names are cut.
 */
export function printable(s: string, max = 120): string {
  const clean = s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}

/**
 * A value from a document where a string belongs, for a one-line message: a string quoted and
 * made printable, a missing one as (none), anything else as its JSON. Never JavaScript's own
 * words for a value that is not there ('undefined'), which read as a crash.
 */
export function printableValue(v: unknown, max = 120): string {
  if (typeof v === 'string') return `'${printable(v, max)}'`;
  if (v === undefined || v === null) return '(none)';
  return printable(JSON.stringify(v) ?? typeof v, max);
}

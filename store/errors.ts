/**
 * Errors of the store. Each has a stable `code` callers branch on, an optional `hint` the
 * CLI prints after the message ("strata: <message> (<hint>)"), and `cause` when it wraps.
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

export const ERR = {
  NOT_FOUND: 'ERR_NOT_FOUND',
  EXISTS: 'ERR_EXISTS',
  USAGE: 'ERR_USAGE',
  DIGEST_MISMATCH: 'ERR_DIGEST_MISMATCH',
  BLOB_MISSING: 'ERR_BLOB_MISSING',
  LOCKED: 'ERR_STORE_LOCKED',
  TAR_CORRUPT: 'ERR_TAR_CORRUPT',
  TAR_TRUNCATED: 'ERR_TAR_TRUNCATED',
  TAR_UNSUPPORTED: 'ERR_TAR_UNSUPPORTED',
  LAYER_UNSAFE_PATH: 'ERR_LAYER_UNSAFE_PATH',
  LAYER_DUPLICATE: 'ERR_LAYER_DUPLICATE',
  LAYER_BAD_LINK: 'ERR_LAYER_BAD_LINK',
  ACL_INVALID: 'ERR_ACL_INVALID',
  SOURCE_INVALID: 'ERR_SOURCE_INVALID',
  ACCESS_DENIED: 'ERR_ACCESS_DENIED',
  CONFLICT: 'ERR_CONFLICT',
  TARGET_NOT_EMPTY: 'ERR_TARGET_NOT_EMPTY',
  IMAGE_CORRUPT: 'ERR_IMAGE_CORRUPT',
  IMAGE_UNSUPPORTED: 'ERR_IMAGE_UNSUPPORTED',
  REGISTRY: 'ERR_REGISTRY',
  AUTH: 'ERR_AUTH',
  NATIVE_UNAVAILABLE: 'ERR_NATIVE_UNAVAILABLE',
  REQUIRE_CYCLE: 'ERR_REQUIRE_CYCLE',
} as const;

export function isStrataError(e: unknown, code?: string): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}

/**
 * Codes of the errors store/ raises (the class, StrataError, is native/errors.ts). Callers
 * branch on these; the CLI exits 1 for every one of them.
 */
import { StrataError, isStrataError } from '../native/errors.js';
export { StrataError, isStrataError };

export const STORE_ERR = {
  /** A module, record, source or remote that was named is not there. */
  NOT_FOUND: 'ERR_NOT_FOUND',
  /** A module of that name exists with other content (import/pull without --force). */
  EXISTS: 'ERR_EXISTS',
  /** A name, CID, digest, VAR=VALUE or URL given to the store is malformed. */
  INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
  /** A blob's bytes no longer match its digest. */
  DIGEST_MISMATCH: 'ERR_DIGEST_MISMATCH',
  /** A blob an index entry names is not in blobs/. */
  BLOB_MISSING: 'ERR_BLOB_MISSING',
  /** A record, manifest or collection is well hashed but not a valid document of its kind. */
  RECORD_INVALID: 'ERR_RECORD_INVALID',
  /** Another strata process kept the index locked past the timeout. */
  LOCKED: 'ERR_STORE_LOCKED',
  /** The index could not be opened for another reason than the lock (permissions, damage). */
  INDEX_UNAVAILABLE: 'ERR_INDEX_UNAVAILABLE',
  TAR_CORRUPT: 'ERR_TAR_CORRUPT',
  TAR_TRUNCATED: 'ERR_TAR_TRUNCATED',
  TAR_UNSUPPORTED: 'ERR_TAR_UNSUPPORTED',
  LAYER_UNSAFE_PATH: 'ERR_LAYER_UNSAFE_PATH',
  LAYER_DUPLICATE: 'ERR_LAYER_DUPLICATE',
  LAYER_BAD_LINK: 'ERR_LAYER_BAD_LINK',
  /** A source (archive, directory, OCI layout) that strata cannot import as given. */
  SOURCE_INVALID: 'ERR_SOURCE_INVALID',
  /** The registry answered in a way strata cannot use, or not at all. */
  REGISTRY: 'ERR_REGISTRY',
  /** The registry refused the credentials (or has none that work). */
  AUTH: 'ERR_AUTH',
  /** Registry configuration (credentials file, remote URL) that cannot be used. */
  REGISTRY_CONFIG: 'ERR_REGISTRY_CONFIG',
  /** A restricted module would leave the site (push to a remote not marked site-internal). */
  ACCESS_DENIED: 'ERR_ACCESS_DENIED',
  /** The store cannot be written by this user (a site store opened read-only): import, rm, gc… */
  READ_ONLY: 'ERR_STORE_READ_ONLY',
  /** A path named as a store holds no store (read verbs never create one). */
  NO_STORE: 'ERR_NO_STORE',
  /** A cache (entry list, block pack) disagrees with the layer it was derived from. */
  CACHE_INVALID: 'ERR_CACHE_INVALID',
  /** A module others still need (requirements, saved collections): rm refused without --force. */
  IN_USE: 'ERR_IN_USE',
  /** `store verify` found damaged or missing blobs. */
  VERIFY_FAILED: 'ERR_VERIFY_FAILED',
} as const;

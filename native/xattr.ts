/**
 * Extended attributes by path, through the strata_native addon (by descriptor: native/fsops.ts).
 *
 * Contract shared by every call here:
 * - Never follows a symlink: when `path` names a symlink, the call acts on the link
 *   itself (Linux allows only trusted.* and security.* on links; user.* gives EPERM) or
 *   fails; the link's target is never read or changed. Symlinks in the parent
 *   components of `path` are resolved as usual, so callers building a tree must make sure
 *   those are real directories (or reach the node through native/fsops.ts fdPath()).
 * - Each call is one system call and atomic as the kernel makes it: a value is replaced
 *   whole, never partly written. Nothing batches several attributes atomically.
 * - Synchronous. Failures throw Errors shaped like Node's fs errors: `code` ('EPERM',
 *   'ENOTSUP', 'ENOENT', 'ELOOP', 'E2BIG', 'ENOSPC' ...), negative `errno`, `syscall`,
 *   `path`.
 * - Values are bytes (Buffer): security.capability and system.posix_acl_* hold 0xFF and
 *   NUL bytes and must never pass through a string.
 * - A path may be a string (UTF-8) or a Buffer (raw bytes, for names that are not UTF-8).
 */
import { addon } from './binding.js';

export type PathArg = string | Buffer;

/** lsetxattr flags: fail with EEXIST if the attribute exists / ENODATA if it does not. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

/** The value of `name` on `path` itself, or undefined when it has no such attribute (ENODATA). */
export function lgetxattr(path: PathArg, name: string): Buffer | undefined {
  return addon().lgetxattr(path, name);
}

/**
 * Sets `name` on `path` itself to exactly `value` (may be empty). Replaces any old value
 * whole. `flags` is 0 (create or replace), XATTR_CREATE or XATTR_REPLACE.
 */
export function lsetxattr(path: PathArg, name: string, value: Uint8Array, flags = 0): void {
  addon().lsetxattr(path, name, value, flags);
}

/**
 * Names of every attribute on `path` itself that this process may see, sorted by byte
 * order (trusted.* is only listed for CAP_SYS_ADMIN). Includes system.posix_acl_* when
 * the file has ACLs.
 */
export function llistxattr(path: PathArg): string[] {
  return addon().llistxattr(path).sort(compareNames);
}

/** Removes `name` from `path` itself; throws ENODATA when it is not set. */
export function lremovexattr(path: PathArg, name: string): void {
  addon().lremovexattr(path, name);
}

/**
 * Every attribute of `path` itself, names sorted by byte order. Not a snapshot: each value
 * is read by its own call, and an attribute removed between listing and reading is left out.
 */
export function readXattrs(path: PathArg): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of llistxattr(path)) {
    const value = lgetxattr(path, name);
    if (value !== undefined) out.set(name, value);
  }
  return out;
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

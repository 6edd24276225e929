/**
 * Filesystem calls relative to directory descriptors, for writing a tree that no other
 * process can redirect (compose/tree/ is the one user). Node has none of the *at calls; these
 * come from the strata_native addon (native/addon.c), one system call each unless stated.
 *
 * Contract shared by every call here:
 * - `dirfd` is an open directory descriptor (a plain int, as fs.openSync returns; Node's
 *   fs.*Sync(fd) calls accept the descriptors returned here) or AT_FDCWD. A `name` is one
 *   path component unless the call says "path"; it is resolved relative to `dirfd`.
 * - Nothing follows a symlink in the last component unless the flags ask for it: pass
 *   AT_SYMLINK_NOFOLLOW to fchownat/fchmodat/utimensat/fstatat and O_NOFOLLOW to openat;
 *   mkdirat, mknodat, symlinkat, linkat, renameat2 and unlinkat never follow one.
 * - openBeneath() is the safe way to reach a path below a directory: no component may be a
 *   symlink, none may climb above `dirfd`, none may cross a mount (openat2(2)'s RESOLVE_*
 *   rules; on kernels before 5.6 the same rule walked one component at a time).
 * - Synchronous. Failures throw Errors shaped like Node's fs errors: `code` ('EEXIST',
 *   'ELOOP', 'EPERM' ...), negative `errno`, `syscall` and `path` (the name as given).
 * - Names and paths may be strings (UTF-8) or Buffers (raw bytes); readdirfd returns Buffers.
 */
import { constants as C } from 'node:fs';
import { addon } from './binding.js';
import type { PathArg } from './xattr.js';

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
/** O_PATH (Linux): a descriptor that only names a place, for use as a dirfd. */
export const O_PATH = 0o10000000;
/**
 * O_TMPFILE (Linux 3.11; ext4, XFS, Btrfs, tmpfs among others, not NFS): opening a directory
 * with it makes a file in that directory's filesystem that has no name. With O_EXCL it can
 * never be given one (linkat refuses). Its value includes O_DIRECTORY, which differs between
 * architectures: it is the addon's, from the C headers (read when first asked, so that
 * importing this module does not load the addon).
 */
export function tmpfileFlag(): number {
  return addon().O_TMPFILE;
}
/** Flags of a directory descriptor used to walk and to set a directory's own metadata. */
export const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;

export interface AtStat {
  dev: number;
  ino: number;
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
}

/** openat(2) exactly (O_CLOEXEC added); returns the new descriptor. */
export function openat(dirfd: number, path: PathArg, flags: number, mode = 0): number {
  return addon().openat(dirfd, path, flags, mode);
}

/**
 * Opens `path` below `dirfd` with `flags` (O_NOFOLLOW and O_CLOEXEC added), refusing any
 * symlink on the way (ELOOP), any `..` that would leave `dirfd` (EXDEV or EINVAL) and any mount
 * crossing (EXDEV). With O_CREAT|O_EXCL it creates a file nobody can have planted a link for.
 */
export function openBeneath(dirfd: number, path: PathArg, flags: number, mode = 0): number {
  return addon().openBeneath(dirfd, path, flags, mode);
}

/** `size` bytes, uninitialised, the first at a multiple of 4096: a buffer O_DIRECT may write from. */
export function alignedBuffer(size: number): Buffer {
  return addon().alignedBuffer(size);
}

export function mkdirat(dirfd: number, name: PathArg, mode: number): void {
  addon().mkdirat(dirfd, name, mode);
}

/** mode carries the type (S_IFCHR, S_IFBLK, S_IFIFO) and permission bits (the umask applies). */
export function mknodat(dirfd: number, name: PathArg, mode: number, major: number, minor: number): void {
  addon().mknodat(dirfd, name, mode, major, minor);
}

export function symlinkat(target: PathArg, dirfd: number, name: PathArg): void {
  addon().symlinkat(target, dirfd, name);
}

/** A hard link `newdirfd/newname` to `olddirfd/oldname` itself (a symlink is linked, not followed). */
export function linkat(olddirfd: number, oldname: PathArg, newdirfd: number, newname: PathArg): void {
  addon().linkat(olddirfd, oldname, newdirfd, newname);
}

/** rename(2) between two directories; flags RENAME_NOREPLACE or RENAME_EXCHANGE (atomic swap). */
export function renameat2(olddirfd: number, oldname: PathArg, newdirfd: number, newname: PathArg, flags = 0): void {
  addon().renameat2(olddirfd, oldname, newdirfd, newname, flags);
}

export function unlinkat(dirfd: number, name: PathArg, flags = 0): void {
  addon().unlinkat(dirfd, name, flags);
}

/** uid or gid -1 leaves it. flags: AT_SYMLINK_NOFOLLOW, or AT_EMPTY_PATH with name '' for dirfd itself. */
export function fchownat(dirfd: number, name: PathArg, uid: number, gid: number, flags: number): void {
  addon().fchownat(dirfd, name, uid, gid, flags);
}

/**
 * chmod of `name`; with AT_SYMLINK_NOFOLLOW a symlink is refused (EOPNOTSUPP) instead of
 * followed (glibc does it through an O_PATH descriptor, or the kernel's fchmodat2).
 */
export function fchmodat(dirfd: number, name: PathArg, mode: number, flags: number): void {
  addon().fchmodat(dirfd, name, mode, flags);
}

/** Sets access and modification time of `name` to `seconds` (whole seconds since the epoch). */
export function utimensat(dirfd: number, name: PathArg, seconds: number, flags: number): void {
  addon().utimensat(dirfd, name, seconds, flags);
}

export function fstatat(dirfd: number, name: PathArg, flags: number): AtStat {
  return addon().fstatat(dirfd, name, flags);
}

/** fsetxattr(2): sets `name` on the open file `fd` to exactly `value`. */
export function fsetxattr(fd: number, name: string, value: Uint8Array, flags = 0): void {
  addon().fsetxattr(fd, name, value, flags);
}

export function fremovexattr(fd: number, name: string): void {
  addon().fremovexattr(fd, name);
}

/** The names in the directory `fd` (raw bytes, `.` and `..` left out), in the filesystem's order. */
export function readdirfd(fd: number): Buffer[] {
  return addon().readdirfd(fd);
}

/**
 * Removes `name` below `dirfd` and everything under it, like `rm -rf --one-file-system`
 * without ever following a symlink: each directory is opened with O_NOFOLLOW and checked to
 * be the one just inspected; the caller's own directories whose mode keeps it out get u+rwx
 * first (an earlier non-root sandbox's 0555 dirs). Another filesystem below is EXDEV. A
 * missing `name` is not an error. Not atomic: on error part of the tree may be gone.
 */
export function rmtreeat(dirfd: number, name: PathArg): void {
  addon().rmtreeat(dirfd, name);
}

/**
 * A path naming `name` in the directory `dirfd` for the path-only calls (l*xattr on a symlink,
 * a device or a fifo, which cannot be opened for fsetxattr): the kernel resolves
 * /proc/self/fd/N to the open directory itself, whatever was renamed since.
 */
export function fdPath(dirfd: number, name: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${dirfd}/`), Buffer.isBuffer(name) ? name : Buffer.from(name)]);
}

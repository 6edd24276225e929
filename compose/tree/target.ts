/**
 * The target of a tree build (`compose sandbox DIR`, `unsquash IMAGE DIR`): where the tree is
 * built and how it becomes DIR.
 *
 * Contract:
 * - DIR must be absent, or an empty directory of the calling user, or (with `force`) a
 *   non-empty one of that user that does not hold any path of `keep` (the store). A file, a
 *   symlink (even to a directory), or a directory of another user is refused: a directory
 *   someone else owns could be changed under the build. DIR's parents are created if missing.
 * - The tree is built in a private directory strata creates (mode 0700, the caller's, no
 *   inherited ACL) beside DIR, reached only through an open descriptor: no other unprivileged
 *   user can enter it or redirect anything in it, whatever they do to the names around it.
 *   `place()` then `commit()` renames it into place (DIR absent: RENAME_NOREPLACE; DIR empty:
 *   it replaces DIR; `force`: RENAME_EXCHANGE, then the old tree is removed without following
 *   a link). So a build that fails, or is killed, leaves DIR exactly as it was.
 * - When DIR exists but nothing can be made beside it (its parent is not writable, or DIR is a
 *   mount point), the private directory is made inside DIR and `place()` moves its entries up
 *   one by one, `.strata` last. Only then can a half tree be seen (a build killed during those
 *   renames): the private directory is still in it, and `inspect` calls such a tree incomplete.
 * - Private directories are named `…strata-tree.<pid>.<random>@<host>`; every build removes
 *   the ones of dead processes of its own host and user it finds beside or inside DIR.
 */
import * as fs from 'node:fs';
import { constants as C } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import * as path from 'node:path';
import {
  AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, DIR_FLAGS, RENAME_EXCHANGE, RENAME_NOREPLACE,
  fremovexattr, fstatat, mkdirat, openat, readdirfd, renameat2, rmtreeat, unlinkat,
} from '../../native/fsops.js';
import { ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT } from '../../native/acl.js';
import { printable, StrataError } from '../../native/errors.js';
import { COMPOSE_ERR } from '../errors.js';

/** Matches the name of a private build directory; groups: pid, host. */
const PRIVATE_NAME = /\.strata-tree\.(\d+)\.[0-9a-f]{8}@([A-Za-z0-9._-]+)$/;

/** True when `name` (one directory entry) is a build directory strata made. */
export function isPrivateName(name: string): boolean {
  return PRIVATE_NAME.test(name);
}

function host(): string {
  return hostname().replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 64) || 'localhost';
}

function privateName(base: string): string {
  // Room for the suffix within NAME_MAX (255 bytes).
  let prefix = base === '' ? '' : `.${Buffer.from(base).subarray(0, 96).toString('utf8').replace(/\uFFFD+$/, '')}`;
  if (prefix.includes('/')) prefix = '';
  return `${prefix}.strata-tree.${process.pid}.${randomBytes(4).toString('hex')}@${host()}`;
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/**
 * Removes the build directories of dead processes of this host and user found in `dirfd`.
 * With `onlyIfAlone`, nothing is removed unless build directories are all `dirfd` holds (a
 * half-placed tree keeps the directory that marks it incomplete).
 */
export function removeStale(dirfd: number, onlyIfAlone = false): void {
  const me = process.geteuid?.() ?? -1;
  const names = readdirfd(dirfd);
  if (onlyIfAlone && !names.every((n) => PRIVATE_NAME.test(n.toString('utf8')))) return;
  for (const raw of names) {
    const name = raw.toString('utf8');
    const m = PRIVATE_NAME.exec(name);
    if (!m || m[2] !== host() || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    try {
      if (fstatat(dirfd, raw, AT_SYMLINK_NOFOLLOW).uid !== me) continue;
      rmtreeat(dirfd, raw);
    } catch {
      // Best effort: a stale directory that cannot go now is tried again next time.
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return code(e) === 'EPERM';
  }
}

export interface TreeTarget {
  /** DIR as given, for messages. */
  readonly dir: string;
  /** The private directory the tree is built in (0700, the caller's). */
  readonly root: number;
  /**
   * Makes the built tree DIR's contents (inside mode) and returns the descriptor that takes
   * the root entry's metadata: the private directory (beside mode) or DIR itself (inside).
   */
  place(): number;
  /** Makes the tree DIR (beside mode) and removes what the build no longer needs. Returns warnings. */
  commit(): string[];
  /** Removes the private directory; DIR stays as it was. Never throws. */
  abort(): void;
}

interface Opened {
  parentFd: number;
  base: string;
  /** DIR's descriptor and names when it exists. */
  existing?: { fd: number; dev: number; names: Buffer[] };
}

/** Checks DIR and makes the private directory (see the file comment). */
export function openTarget(dir: string, opts: { force?: boolean; keep?: string[] } = {}): TreeTarget {
  const abs = path.resolve(dir);
  const base = path.basename(abs);
  if (abs === path.parse(abs).root) {
    throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${printable(dir)} is the filesystem root`, { hint: 'give a new or empty directory' });
  }
  const parent = path.dirname(abs);
  fs.mkdirSync(parent, { recursive: true });
  const parentFd = openat(AT_FDCWD, parent, C.O_RDONLY | C.O_DIRECTORY);
  const fds = [parentFd];
  const closeAll = () => fds.forEach((fd) => fs.closeSync(fd));
  try {
    removeStale(parentFd);
    const opened: Opened = { parentFd, base };
    const st = statOrUndefined(parentFd, base);
    if (st !== undefined) {
      if ((st.mode & C.S_IFMT) !== C.S_IFDIR) {
        throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${printable(dir)} exists and is not a directory`, { hint: 'choose a new path' });
      }
      const me = process.geteuid?.() ?? -1;
      if (st.uid !== me) {
        throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${printable(dir)} belongs to uid ${st.uid}, not to uid ${me} who builds`, {
          hint: 'build into a new path or a directory of your own (another user could change it during the build)',
        });
      }
      const fd = openat(parentFd, base, DIR_FLAGS);
      fds.push(fd);
      const now = fs.fstatSync(fd);
      if (now.ino !== st.ino || now.dev !== st.dev) throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${printable(dir)} changed while strata looked at it`, { hint: 'try again' });
      removeStale(fd, true);
      const names = readdirfd(fd);
      if (names.length > 0 && !opts.force) {
        throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${printable(dir)} is not empty`, {
          hint: 'choose an empty or new directory, or pass --force to replace its contents',
        });
      }
      if (names.length > 0) checkKeep(dir, abs, opts.keep ?? []);
      opened.existing = { fd, dev: st.dev, names };
    }
    const t = makeTarget(dir, opened, fds);
    return t;
  } catch (e) {
    closeAll();
    throw e;
  }
}

function statOrUndefined(dirfd: number, name: string) {
  try {
    return fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW);
  } catch (e) {
    if (code(e) === 'ENOENT') return undefined;
    throw e;
  }
}

function checkKeep(dir: string, abs: string, keep: string[]): void {
  const real = fs.realpathSync(abs);
  for (const k of keep) {
    let kr: string;
    try {
      kr = fs.realpathSync(k);
    } catch {
      kr = path.resolve(k);
    }
    const rel = path.relative(real, kr);
    if (rel === '' || (rel.split(path.sep)[0] !== '..' && !path.isAbsolute(rel))) {
      throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${printable(dir)} holds the store ${printable(k)}; --force would delete it`, { hint: 'choose another directory' });
    }
  }
}

/** Makes the private directory in `hostFd`: 0700, ours, setgid and ACLs of the parent dropped. */
function makePrivate(hostFd: number, base: string): { name: string; fd: number } {
  const name = privateName(base);
  mkdirat(hostFd, name, 0o700);
  let fd: number;
  try {
    fd = openat(hostFd, name, DIR_FLAGS);
    fs.fchmodSync(fd, 0o700);
    for (const a of [ACL_XATTR_DEFAULT, ACL_XATTR_ACCESS]) {
      try {
        fremovexattr(fd, a);
      } catch (e) {
        if (!['ENODATA', 'ENOTSUP', 'EOPNOTSUPP'].includes(code(e) ?? '')) throw e;
      }
    }
  } catch (e) {
    try {
      rmtreeat(hostFd, name);
    } catch {
      // left for the next run's stale cleanup
    }
    throw e;
  }
  return { name, fd };
}

function makeTarget(dir: string, o: Opened, fds: number[]): TreeTarget {
  const closeAll = () => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
  };
  const ex = o.existing;
  let inside = false;
  let priv: { name: string; fd: number } | undefined;
  if (ex !== undefined && ex.dev !== fs.fstatSync(o.parentFd).dev) inside = true;
  if (!inside) {
    try {
      priv = makePrivate(o.parentFd, o.base);
    } catch (e) {
      if (ex === undefined || !['EACCES', 'EPERM', 'EROFS'].includes(code(e) ?? '')) throw e;
      inside = true;
    }
  }
  if (inside) priv = makePrivate(ex!.fd, '');
  const p = priv!;
  fds.push(p.fd);
  const hostFd = inside ? ex!.fd : o.parentFd;
  let trash: string | undefined;
  let done = false;

  return {
    dir,
    root: p.fd,
    place(): number {
      if (!inside) return p.fd;
      const fd = ex!.fd;
      if (ex!.names.length > 0) {
        const t = makePrivate(fd, '');
        trash = t.name;
        try {
          for (const n of ex!.names) renameat2(fd, n, t.fd, n, RENAME_NOREPLACE);
        } finally {
          fs.closeSync(t.fd);
        }
      }
      const names = readdirfd(p.fd).sort((a, b) => Number(a.equals(Buffer.from('.strata'))) - Number(b.equals(Buffer.from('.strata'))));
      for (const n of names) renameat2(p.fd, n, fd, n, RENAME_NOREPLACE);
      return fd;
    },
    commit(): string[] {
      const warnings: string[] = [];
      try {
        if (inside) {
          unlinkat(hostFd, p.name, AT_REMOVEDIR);
          if (trash !== undefined) removeOld(hostFd, trash, warnings);
        } else if (ex === undefined) {
          renameat2(o.parentFd, p.name, o.parentFd, o.base, RENAME_NOREPLACE);
        } else if (ex.names.length === 0) {
          renameat2(o.parentFd, p.name, o.parentFd, o.base, 0);
        } else {
          try {
            renameat2(o.parentFd, p.name, o.parentFd, o.base, RENAME_EXCHANGE);
          } catch (e) {
            // Filesystems without an atomic exchange: move the old tree aside first.
            if (code(e) !== 'EINVAL' && code(e) !== 'ENOSYS') throw e;
            const aside = privateName(o.base);
            renameat2(o.parentFd, o.base, o.parentFd, aside, RENAME_NOREPLACE);
            renameat2(o.parentFd, p.name, o.parentFd, o.base, RENAME_NOREPLACE);
            removeOld(o.parentFd, aside, warnings);
            done = true;
            return warnings;
          }
          removeOld(o.parentFd, p.name, warnings);
        }
        done = true;
      } catch (e) {
        const why = code(e) === 'EEXIST' || code(e) === 'ENOTEMPTY' ? 'something else was put there during the build' : (e as Error).message;
        throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `cannot put the tree in place at ${printable(dir)}: ${why}`, { hint: 'build again into a new or empty directory', cause: e });
      } finally {
        closeAll();
      }
      return warnings;
    },
    abort(): void {
      if (done) return;
      done = true;
      try {
        rmtreeat(hostFd, p.name);
      } catch {
        // left for the next run's stale cleanup
      }
      closeAll();
    },
  };

  function removeOld(fd: number, name: string, warnings: string[]): void {
    try {
      rmtreeat(fd, name);
    } catch (e) {
      warnings.push(`the old contents of ${printable(dir)} were moved aside but could not all be removed (${(e as Error).message}); the next build there removes them`);
    }
  }
}

/**
 * The sandbox: the merged tree written into a directory, with ownership, modes, mtimes, hard
 * links, symlinks, devices, xattrs and ACLs.
 *
 * Safety: the target must be absent or empty (or `--force`, which empties it first without
 * following links). Paths come from the merge plan, which holds canonical paths only and never
 * places an entry below a symlink; files are created with O_EXCL|O_NOFOLLOW; metadata calls are
 * lchown, lutimes and native l*xattr, and chmod is never called on a symlink. So nothing is
 * written outside the target and no metadata call follows a link.
 *
 * As a non-root user it applies what the kernel allows (contents, modes, ACLs, user.* xattrs)
 * and returns counts of what it could not (ownership, trusted.* and security.* xattrs,
 * devices), for the caller to report once.
 */
import * as fs from 'node:fs';
import { constants as C } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { applyNodeAttrs } from '../native/fsops.js';
import { ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT } from '../native/acl.js';
import { lremovexattr, mknod } from '../native/xattr.js';
import { StrataError, COMPOSE_ERR } from './errors.js';
import type { LoadedModule, Store, LayerEntry } from '../store/index.js';
import { forEachPlannedFile, plannedBytes, type MergePlan } from './merge.js';

export interface SandboxResult {
  entries: number;
  bytes: number;
  /** What could not be applied, by kind → count (empty when everything was). */
  skipped: Record<string, number>;
}

/**
 * Makes `target` an empty directory: creates it if absent, accepts it empty, empties it with
 * `force`. `keep` (the store) must not be the target or below it: --force would delete it.
 */
export async function prepareTarget(target: string, force: boolean, keep: string[] = []): Promise<void> {
  let names: string[];
  try {
    const st = await fsp.lstat(target);
    if (!st.isDirectory()) throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${target} exists and is not a directory`, { hint: 'choose a new path' });
    names = await fsp.readdir(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await fsp.mkdir(target, { recursive: true });
    return;
  }
  if (names.length === 0) return;
  if (!force) throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${target} is not empty`, { hint: 'choose an empty or new directory, or pass --force to replace its contents' });
  const real = await fsp.realpath(target);
  for (const k of keep) {
    const rel = path.relative(real, await fsp.realpath(k).catch(() => path.resolve(k)));
    if (rel === '' || (rel.split(path.sep)[0] !== '..' && !path.isAbsolute(rel))) {
      throw new StrataError(COMPOSE_ERR.TARGET_NOT_EMPTY, `${target} holds the store ${k}; --force would delete it`, { hint: 'choose another directory' });
    }
  }
  for (const n of names) {
    const p = path.join(target, n);
    try {
      await fsp.rm(p, { recursive: true, force: true });
    } catch (e) {
      // A non-root user's earlier sandbox may hold read-only directories (0555 /proc, 0500
      // dirs): open up the ones the user owns, then try again.
      if ((e as NodeJS.ErrnoException).code !== 'EACCES') throw e;
      await openUp(p);
      await fsp.rm(p, { recursive: true, force: true });
    }
  }
}

/** Gives the owner rwx on every directory below `p` (links are not followed; others' dirs are left). */
async function openUp(p: string): Promise<void> {
  const st = await fsp.lstat(p);
  if (!st.isDirectory()) return;
  if ((st.mode & 0o700) !== 0o700) await fsp.chmod(p, (st.mode & 0o7777) | 0o700).catch(() => undefined);
  const names = await fsp.readdir(p).catch(() => [] as string[]);
  for (const n of names) await openUp(path.join(p, n));
}

export async function writeSandbox(
  store: Store,
  layers: LoadedModule[],
  plan: MergePlan,
  embedded: Map<string, Buffer>,
  target: string,
  opts: { onProgress?(done: number, total: number): void } = {},
): Promise<SandboxResult> {
  const root = path.resolve(target);
  const abs = (p: string) => (p === '.' ? root : path.join(root, p));
  const skipped: Record<string, number> = {};
  const skip = (kind: string) => (skipped[kind] = (skipped[kind] ?? 0) + 1);
  const isRoot = process.getuid?.() === 0;
  let bytes = 0;
  const total = plannedBytes(plan);

  // The target may carry ACLs it did not get from the layers: inherited from its parent's
  // default ACL, or its own under --force. Without a default ACL nothing below it inherits
  // one; the root's access ACL goes in step 4 unless the root entry has one.
  dropXattr(root, ACL_XATTR_DEFAULT);

  // Every call below is a small syscall; synchronous calls spare each one a thread-pool
  // round trip, which dominates a tree of many small files. Only reading layers is async.

  // 1. Directories (owner-only until their metadata is applied at the end).
  for (const { entry: e } of plan.entries) if (e.type === 'dir' && e.path !== '.') fs.mkdirSync(abs(e.path), { mode: 0o700 });

  // 2. File contents, one pass over each layer in order.
  const create = (dest: string) => fs.openSync(abs(dest), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  const writeAll = (fd: number, c: Uint8Array) => {
    for (let off = 0; off < c.byteLength; ) off += fs.writeSync(fd, c, off, c.byteLength - off);
    bytes += c.byteLength;
  };
  await forEachPlannedFile(store, layers, plan, async (dest, body) => {
    const fd = create(dest);
    try {
      for await (const c of body) writeAll(fd, c);
    } finally {
      fs.closeSync(fd);
    }
    opts.onProgress?.(bytes, total);
  });
  for (const [p, content] of embedded) {
    const fd = create(p);
    try {
      writeAll(fd, content);
    } finally {
      fs.closeSync(fd);
    }
  }

  // 3. Everything that is not a file or directory.
  for (const { entry: e } of plan.entries) {
    switch (e.type) {
      case 'hardlink':
        fs.linkSync(abs(e.linkname!), abs(e.path));
        break;
      case 'symlink':
        fs.symlinkSync(e.linkname!, abs(e.path));
        break;
      case 'char':
      case 'block':
      case 'fifo':
        try {
          const type = e.type === 'char' ? C.S_IFCHR : e.type === 'block' ? C.S_IFBLK : C.S_IFIFO;
          mknod(abs(e.path), type | 0o600, e.devmajor ?? 0, e.devminor ?? 0);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
          skip('device nodes');
        }
        break;
    }
  }

  // 4. Metadata, children before parents, so a read-only or closed directory is closed last
  //    and directory mtimes are not disturbed by later writes.
  for (let k = plan.entries.length - 1; k >= 0; k--) {
    const e = plan.entries[k]!.entry;
    if (e.type === 'hardlink') continue;
    const p = abs(e.path);
    if ((e.type === 'char' || e.type === 'block' || e.type === 'fifo') && !exists(p)) continue;
    applyMetadata(p, e, isRoot, skip);
  }
  return { entries: plan.entries.length, bytes, skipped };
}

function applyMetadata(p: string, e: LayerEntry, isRoot: boolean, skip: (kind: string) => void): void {
  // chown first: it clears setuid bits and security.capability.
  try {
    fs.lchownSync(p, e.uid, e.gid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM' || isRoot) throw err;
    skip('ownership');
  }
  if (e.path === '.') {
    if (!e.acl?.access) dropXattr(p, ACL_XATTR_ACCESS);
    if (!e.acl?.default) dropXattr(p, ACL_XATTR_DEFAULT);
  }
  if (e.type !== 'symlink') fs.chmodSync(p, e.mode);
  if (e.xattrs?.size || e.acl) {
    for (const f of applyNodeAttrs(p, { xattrs: e.xattrs, acl: e.acl }, { collect: true })) {
      if (f.code !== 'EPERM' && f.code !== 'ENOTSUP') throw new StrataError(COMPOSE_ERR.APPLY_FAILED, `cannot set ${f.name} on ${p}: ${f.message}`);
      skip(`${f.name.split('.')[0]}.* xattrs`);
    }
  }
  fs.lutimesSync(p, e.mtime, e.mtime);
}

/** Removes an attribute if it is there (a filesystem without ACLs has none to remove). */
function dropXattr(p: string, name: string): void {
  try {
    lremovexattr(p, name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENODATA' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
  }
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

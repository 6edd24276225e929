/**
 * The one tree writer: creates entries (LayerEntry, as layers and images give them) below a
 * directory descriptor and applies their metadata. `compose sandbox` (compose/sandbox.ts) and
 * `unsquash` (compose/tree/image.ts) both write through it.
 *
 * Creation never follows a link: directories, symlinks, device nodes and hard links are made
 * with the *at calls relative to the descriptor of their parent, which a cursor of open
 * directory descriptors along the current path provides (entries come in path order, so it
 * opens each directory about once); files are created with openat2 beneath the root
 * (O_CREAT|O_EXCL, no symlink on the way). Every entry is created exclusively.
 *
 * Metadata, in this order (chown clears setuid/setgid and security.capability; setting an
 * access ACL rewrites the mode's rwx bits): owner, mode, xattrs and ACLs, mtime. Files and
 * directories take it through their own descriptor (fchown, fchmod, fsetxattr, futimes);
 * symlinks, device nodes and fifos through their parent's (fchownat/fchmodat/utimensat with
 * AT_SYMLINK_NOFOLLOW, l*xattr on /proc/self/fd/<parent>/<name>). Files get theirs when their
 * content is written; directories at the end, deepest first (`finishDirs`), so read-only
 * directories and directory mtimes come out right; the root last (`finishRoot`).
 *
 * Modes never grant more than the layers do:
 * - a setuid bit stays only where the owner could be set, a setgid bit only where the group
 *   could (as GNU tar and unsquashfs do for a user): a node of the builder's must not run as
 *   the builder, or with the builder's group, for everyone else;
 * - a licensed output's root (`licenceGid`) gets the licence group and no access for others;
 * - where the owning group cannot be set (a non-root build keeps the builder's group), the
 *   group class gets no more than others: group bits, and an ACL's group:: entry, & other;
 * - on a filesystem without POSIX ACLs, a node with an ACL gets narrowedNode()'s mode (and
 *   group, as root), never the mask as group bits; its ACLs are counted as skipped.
 *
 * Errno policy and skip vocabulary (`skipped`, kind → count; `onSkip` per occurrence):
 *   'ownership'       chown refused (EPERM, EINVAL) to a non-root user; what can be set is
 *   'device nodes'    mknod refused (EPERM): char and block nodes without CAP_MKNOD, and
 *                     hard links to them
 *   'sockets'         an image's sockets (a tree of layers has none)
 *   '<ns>.* xattrs'   xattrs the kernel or filesystem refuses (EPERM, EACCES, ENOTSUP):
 *                     trusted.* and security.* as non-root, user.* on symlinks
 *   'POSIX ACLs'      ACLs on a filesystem without them (narrowed as above)
 *   'unmapped ACLs'   ACLs naming an id this user namespace does not map (EINVAL, as chown's;
 *                     fatal outside such a namespace): the node's mode narrowed in place
 * Anything else is fatal: a StrataError APPLY_FAILED naming the path.
 */
import * as fs from 'node:fs';
import { constants as C } from 'node:fs';
import {
  AT_SYMLINK_NOFOLLOW, DIR_FLAGS, O_PATH, fchmodat, fchownat, fdPath, fstatat, fremovexattr, fsetxattr, linkat, mkdirat, mknodat,
  openBeneath, openat, symlinkat, utimensat,
} from '../../native/fsops.js';
import { lsetxattr } from '../../native/xattr.js';
import { ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT, aclFromText, aclToXattr, aclXattrFromText, narrowedNode, type Acl } from '../../native/acl.js';
import { printable, StrataError } from '../../native/errors.js';
import { COMPOSE_ERR } from '../errors.js';
import type { BatchResult, FileFinish } from '../../native/files.js';
import type { LayerEntry } from '../../store/index.js';

export type SkipKind = 'ownership' | 'device nodes' | 'sockets' | 'POSIX ACLs' | 'unmapped ACLs' | `${string}.* xattrs`;

export interface WriterOptions {
  /** gid of the output's licence group: the root gets it with no access for others. */
  licenceGid?: number;
  /** Called for each thing left out; `path` is the entry's (and the attribute's name for xattrs). */
  onSkip?(kind: SkipKind, path: string): void;
}

/** Where a node's metadata goes: its own descriptor, or a name in its parent's. */
type At = { fd: number } | { dir: number; name: string };

const S_ISUID = 0o4000;
/** Bytes of an ACL xattr value's header: a value of no more holds no entry. */
const ACL_XATTR_HEAD = 4;

const SKIP_XATTR = new Set(['EPERM', 'EACCES', 'ENOTSUP', 'EOPNOTSUPP']);

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

function splitPath(p: string): [string, string] {
  const i = p.lastIndexOf('/');
  return i < 0 ? ['.', p] : [p.slice(0, i), p.slice(i + 1)];
}

export class TreeWriter {
  /** Kind → how many times it was skipped, in the order first met. */
  readonly skipped: Record<string, number> = {};
  /** True when the filesystem stores POSIX ACLs (probed once on the root). */
  readonly aclsSupported: boolean;
  private readonly isRoot = process.geteuid?.() === 0;
  private readonly uid = process.geteuid?.() ?? -1;
  private readonly gid = process.getegid?.() ?? -1;
  /**
   * True when a file created in the tree is owned by this process's uid and primary group: the
   * root says so (not a filesystem that maps owners, such as a root-squashed NFS, and no
   * setgid directory above that hands its group down).
   */
  private readonly ownersAsCreated: boolean;
  private readonly groups = new Set<number>([process.getegid?.() ?? -1, ...(process.getgroups?.() ?? [])]);
  /** In a user namespace that leaves some ids unmapped: asked at the first ACL refused with EINVAL. */
  private idsPartlyMapped: boolean | undefined;
  /** Open directories below the root along the current path. */
  private readonly stack: { name: string; fd: number }[] = [];
  /** Device nodes not made: hard links to them are skipped too. */
  private readonly missingNodes = new Set<string>();
  /**
   * The directory the last hard link's target was in, when not on the cursor: links come in
   * path order, and a tree's links mostly name files of one directory in turn (a Spack view's
   * directory of links into one package's), so it is opened once for them, not once a link.
   */
  private linkDir: { path: string; fd: number } | undefined;

  constructor(
    readonly root: number,
    private readonly opts: WriterOptions = {},
  ) {
    this.aclsSupported = probeAcls(root);
    const st = fs.fstatSync(root);
    this.ownersAsCreated = st.uid === this.uid && st.gid === this.gid && (st.mode & 0o2000) === 0;
  }

  skip(kind: SkipKind, path: string): void {
    this.skipped[kind] = (this.skipped[kind] ?? 0) + 1;
    this.opts.onSkip?.(kind, path);
  }

  /** Closes the cursor's descriptors (not the root). */
  close(): void {
    this.popTo(0);
    this.closeLinkDir();
  }

  private closeLinkDir(): void {
    if (this.linkDir) fs.closeSync(this.linkDir.fd);
    this.linkDir = undefined;
  }

  /** The descriptor of directory `p` ('.' is the root), opened through the cursor. */
  dirFd(p: string): number {
    if (p === '.') {
      this.popTo(0);
      return this.root;
    }
    const parts = p.split('/');
    let k = 0;
    while (k < this.stack.length && k < parts.length && this.stack[k]!.name === parts[k]) k++;
    this.popTo(k);
    let fd = k === 0 ? this.root : this.stack[k - 1]!.fd;
    for (; k < parts.length; k++) {
      fd = this.guard(parts.slice(0, k + 1).join('/'), () => openat(fd, parts[k]!, DIR_FLAGS));
      this.stack.push({ name: parts[k]!, fd });
    }
    return fd;
  }

  private popTo(k: number): void {
    while (this.stack.length > k) fs.closeSync(this.stack.pop()!.fd);
  }

  /** A directory, owner-only until finishDirs() applies its metadata. */
  mkdir(e: LayerEntry): void {
    const [parent, name] = splitPath(e.path);
    const dir = this.dirFd(parent);
    this.guard(e.path, () => mkdirat(dir, name, 0o700));
  }

  /** Creates the file `p` (0600, exclusive); write its content to the descriptor, then call finishFile(). */
  createFile(p: string): number {
    return this.guard(p, () => openBeneath(this.root, p, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600));
  }

  /**
   * Settles a batch of files written on another thread (native/extract.ts, native/files.ts),
   * whose finishes came from plainFinish(): counts the refused chowns, finishes the files that
   * came back open (closes them instead once the batch has failed, or when `failed` says it
   * has), and throws the batch's failure, naming its file.
   */
  settleBatch(entries: readonly LayerEntry[], refused: readonly ((() => void) | undefined)[], r: BatchResult, failed = false): void {
    failed ||= r.error !== undefined;
    let thrown: unknown;
    for (let i = 0; i < entries.length; i++) {
      const fd = r.fds[i]!;
      if (r.refused[i]) refused[i]?.();
      if (fd < 0) continue;
      if (failed) {
        fs.closeSync(fd);
        continue;
      }
      try {
        this.finishFile(fd, entries[i]!);
      } catch (e) {
        thrown = e;
        failed = true;
      }
    }
    if (thrown !== undefined) throw thrown;
    if (r.error !== undefined && r.failed >= 0) throw this.failure(entries[r.failed]!.path, r.error);
  }

  /** Applies a file's metadata through its descriptor and closes it (also on error). */
  finishFile(fd: number, e: LayerEntry): void {
    try {
      this.meta(e, { fd });
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * What meta() would do to file `e`, for a writer on another thread (native/extract.ts):
   * owner, mode, access ACL and mtime, decided here. Undefined when only meta() itself can
   * finish the file: xattrs, a default ACL, or an access ACL that meta() would change (ACLs
   * narrowed to modes, or the owning group known not to be kept). A skip meta() would count
   * whatever the chown does is counted now; one it counts only when the chown is refused, by
   * `refused` (ExtractResult.refused). A file with an ACL whose chown or ACL is refused comes
   * back open, to meta(), which narrows its mode.
   */
  plainFinish(e: LayerEntry): (FileFinish & { refused?: () => void }) | undefined {
    if (e.xattrs?.size || e.acl?.default) return undefined;
    const mode = e.mode & 0o7777;
    // A new file is the creator's, uid and primary group: no chown when that is what it needs.
    const asCreated = this.ownersAsCreated && e.uid === this.uid && e.gid === this.gid;
    // Root gives a file any owner; a user gives a file of its own a group it is in.
    const given = !asCreated && (this.isRoot || (e.uid === this.uid && this.groups.has(e.gid)));
    const chown = { uid: e.uid, gid: e.gid, strict: this.isRoot };
    if (e.acl?.access) {
      // meta() keeps the ACL and the mode as they are when the owner is kept and ACLs are
      // stored; else it changes them, and the file goes to it. So does a file whose chown or
      // ACL is refused after all: the pool hands it back open.
      if (!(asCreated || given) || !this.aclsSupported) return undefined;
      const acl = aclXattrFromText(e.acl.access);
      if (acl.length <= ACL_XATTR_HEAD) return undefined;
      return { ...(given ? { chown } : {}), mode, modeRefused: mode, mtime: e.mtime, acl };
    }
    // Neither owner nor group set: no setuid, no setgid, the group class no more than other.
    const modeRefused = narrowedNode(mode, undefined, { ownGroupKept: false }).mode & ~S_ISUID;
    if (asCreated) return { mode, modeRefused, mtime: e.mtime };
    if (given) return { chown, mode, modeRefused, mtime: e.mtime, refused: () => this.skip('ownership', e.path) };
    this.skip('ownership', e.path);
    if (!this.groups.has(e.gid)) return { mode: modeRefused, modeRefused, mtime: e.mtime };
    return { chown: { uid: -1, gid: e.gid, strict: false }, mode: mode & ~S_ISUID, modeRefused, mtime: e.mtime };
  }

  symlink(e: LayerEntry): void {
    const [parent, name] = splitPath(e.path);
    const dir = this.dirFd(parent);
    this.guard(e.path, () => symlinkat(e.linkname!, dir, name));
    this.meta(e, { dir, name });
  }

  /** A char or block device or a fifo; devices the kernel refuses are skipped. */
  node(e: LayerEntry): void {
    const [parent, name] = splitPath(e.path);
    const dir = this.dirFd(parent);
    const type = e.type === 'char' ? C.S_IFCHR : e.type === 'block' ? C.S_IFBLK : C.S_IFIFO;
    try {
      mknodat(dir, name, type | 0o600, e.devmajor ?? 0, e.devminor ?? 0);
    } catch (err) {
      if (code(err) !== 'EPERM') throw this.failed(e.path, err);
      this.missingNodes.add(e.path);
      this.skip('device nodes', e.path);
      return;
    }
    this.meta(e, { dir, name });
  }

  /** A hard link `e.path` to `e.linkname` (an entry made earlier). */
  hardlink(e: LayerEntry): void {
    const target = e.linkname!;
    if (this.missingNodes.has(target)) {
      this.skip('device nodes', e.path);
      return;
    }
    const [tparent, tname] = splitPath(target);
    const [parent, name] = splitPath(e.path);
    const dir = this.dirFd(parent);
    const tdir = tparent === parent ? dir : tparent === '.' ? this.root : this.linkDirFd(tparent);
    this.guard(e.path, () => linkat(tdir, tname, dir, name));
  }

  /** The descriptor of directory `p` (not '.'), opened beneath the root: the last one kept (`linkDir`). */
  private linkDirFd(p: string): number {
    if (this.linkDir?.path === p) return this.linkDir.fd;
    this.closeLinkDir();
    const fd = this.guard(p, () => openBeneath(this.root, p, O_PATH | C.O_DIRECTORY));
    this.linkDir = { path: p, fd };
    return fd;
  }

  /**
   * Mode and ACLs restored on an existing node (`unsquash` of a hard link's second name, or of
   * a device, whose /.strata/acl.json entry names them), through its parent's descriptor.
   */
  restoreAt(e: LayerEntry): void {
    const [parent, name] = splitPath(e.path);
    const dir = this.dirFd(parent);
    const gid = this.guard(e.path, () => fstatat(dir, name, AT_SYMLINK_NOFOLLOW)).gid;
    this.meta(e, { dir, name }, { groupKept: gid === e.gid, times: false });
  }

  /** Metadata of `dirs`, which come deepest first (DirList); the root is left out. */
  finishDirs(dirs: Iterable<LayerEntry>): void {
    for (const e of dirs) {
      if (e.path === '.') continue;
      this.meta(e, { fd: this.dirFd(e.path) });
    }
    this.popTo(0);
  }

  /** The root entry's metadata on `fd` (the built tree's root): ACLs it does not carry are dropped. */
  finishRoot(e: LayerEntry, fd: number): void {
    this.popTo(0);
    for (const [name, has] of [[ACL_XATTR_ACCESS, e.acl?.access], [ACL_XATTR_DEFAULT, e.acl?.default]] as const) {
      if (has) continue;
      try {
        fremovexattr(fd, name);
      } catch (err) {
        if (!['ENODATA', 'ENOTSUP', 'EOPNOTSUPP'].includes(code(err) ?? '')) throw this.failed('.', err);
      }
    }
    this.meta(e, { fd });
  }

  private meta(e: LayerEntry, at: At, what: { groupKept?: boolean; times?: boolean } = {}): void {
    const licensed = e.path === '.' && this.opts.licenceGid !== undefined;
    let mode = e.mode & 0o7777;
    let gid = e.gid;
    let access: Acl | undefined = e.acl?.access ? parseAcl(e.acl.access) : undefined;
    let deflt: Acl | undefined = e.acl?.default ? parseAcl(e.acl.default) : undefined;
    if (licensed) {
      gid = this.opts.licenceGid!;
      mode &= ~0o007;
      access = access?.map((x) => (x.tag === 'other' ? { ...x, perm: 0 } : x));
    }
    // Without ACLs the node may change group (narrowedNode's rule); a licensed root keeps its licence group.
    const narrow = (access !== undefined || deflt !== undefined) && !this.aclsSupported;
    const prefer = this.opts.licenceGid;
    const switched = narrow ? narrowedNode(mode, access, { prefer }).gid : undefined;
    if (!licensed) gid = switched ?? gid;

    const groupKept = what.groupKept ?? this.chown(e, at, gid);
    const ownerKept = e.uid === this.uid || (this.isRoot && groupKept);
    if (narrow) {
      // A licensed root keeps the licence group: a rule that picks another group cannot hold.
      const kept = groupKept && !(licensed && switched !== undefined && switched !== gid);
      mode = narrowedNode(mode, access, { prefer, ...(kept ? {} : { ownGroupKept: false }) }).mode;
      access = deflt = undefined;
      this.skip('POSIX ACLs', e.path);
    } else if (!groupKept) {
      mode = narrowedNode(mode, undefined, { ownGroupKept: false }).mode;
      const other = access?.find((x) => x.tag === 'other')?.perm ?? 7;
      access = access?.map((x) => (x.tag === 'group_obj' ? { ...x, perm: x.perm & other } : x));
    }
    if (!ownerKept) mode &= ~S_ISUID;

    const chmod = (m: number) => this.guard(e.path, () => ('fd' in at ? fs.fchmodSync(at.fd, m) : fchmodat(at.dir, at.name, m, AT_SYMLINK_NOFOLLOW)));
    if (e.type !== 'symlink') chmod(mode);
    const writes: [string, Uint8Array][] = [...(e.xattrs ?? [])];
    if (access) writes.push([ACL_XATTR_ACCESS, aclToXattr(access)]);
    if (deflt) writes.push([ACL_XATTR_DEFAULT, aclToXattr(deflt)]);
    let aclRefused = false;
    for (const [name, value] of writes) {
      try {
        if ('fd' in at) fsetxattr(at.fd, name, value);
        else lsetxattr(fdPath(at.dir, at.name), name, value);
      } catch (err) {
        const c = code(err) ?? '';
        const isAcl = name === ACL_XATTR_ACCESS || name === ACL_XATTR_DEFAULT;
        // An ACL naming an id this user namespace does not map is refused with EINVAL, as a
        // chown to one is (chown()): skipped, never fatal. Where every id is mapped, EINVAL
        // has no such reason and is a failure.
        const unmapped = isAcl && c === 'EINVAL' && (this.idsPartlyMapped ??= idsPartlyMapped());
        if (!SKIP_XATTR.has(c) && !unmapped) throw this.failed(e.path, err, name);
        if (!isAcl) {
          this.skip(`${name.split('.')[0]}.* xattrs`, `${e.path} ${name}`);
          continue;
        }
        if (!aclRefused) this.skip(unmapped ? 'unmapped ACLs' : 'POSIX ACLs', e.path);
        aclRefused = true;
        // The mode set above carries the mask as its group bits: narrowed as where no ACL is
        // kept, but in place (the owner is set already).
        if (name === ACL_XATTR_ACCESS) chmod(narrowedNode(mode, access, { switchGroup: false, ...(groupKept ? {} : { ownGroupKept: false }) }).mode);
      }
    }
    if (what.times === false) return;
    this.guard(e.path, () => ('fd' in at ? fs.futimesSync(at.fd, e.mtime, e.mtime) : utimensat(at.dir, at.name, e.mtime, AT_SYMLINK_NOFOLLOW)));
  }

  /**
   * Sets what it may of owner and group; true when the node's group is the one asked for.
   * EPERM is fatal for root (a root-squashed filesystem would silently give every file away);
   * EINVAL (an id this user namespace cannot map) is skipped for everyone.
   */
  private chown(e: LayerEntry, at: At, gid: number): boolean {
    const set = (u: number, g: number) => ('fd' in at ? fs.fchownSync(at.fd, u, g) : fchownat(at.dir, at.name, u, g, AT_SYMLINK_NOFOLLOW));
    const refused = (err: unknown) => {
      const c = code(err);
      if (c === 'EINVAL' || (c === 'EPERM' && !this.isRoot)) return true;
      throw this.failed(e.path, err);
    };
    if (this.isRoot || (e.uid === this.uid && this.groups.has(gid))) {
      try {
        set(e.uid, gid);
        return true;
      } catch (err) {
        refused(err);
        this.skip('ownership', e.path);
        return false;
      }
    }
    this.skip('ownership', e.path);
    if (!this.groups.has(gid)) return false;
    try {
      set(-1, gid);
      return true;
    } catch (err) {
      return !refused(err);
    }
  }

  private guard<T>(p: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.failed(p, err);
    }
  }

  /** The error a failure to create or write `p` is reported as (APPLY_FAILED, naming the path). */
  failure(p: string, err: unknown): StrataError {
    // The one attribute another thread sets on a file is its access ACL (plainFinish).
    return this.failed(p, err, (err as NodeJS.ErrnoException | undefined)?.syscall === 'fsetxattr' ? ACL_XATTR_ACCESS : undefined);
  }

  private failed(p: string, err: unknown, attr?: string): StrataError {
    if (err instanceof StrataError) return err;
    const e = err as NodeJS.ErrnoException;
    const what = attr ? `set ${attr} on` : e.syscall ? `${e.syscall.replace(/at2?$/, '')}` : 'write';
    const desc = (e.message ?? String(err)).replace(/^[A-Z0-9]+: /, '').replace(/, \w+( '.*')?$/s, '');
    const hint =
      e.code === 'ELOOP' || e.code === 'EXDEV' ? 'something replaced part of the tree while it was being built; build again' : e.code === 'ENOSPC' || e.code === 'EDQUOT' ? 'free some space and build again' : undefined;
    return new StrataError(COMPOSE_ERR.APPLY_FAILED, `cannot ${what} ${printable(p === '.' ? '/' : `/${p}`)}: ${e.code ?? ''}${e.code ? ' ' : ''}${desc}`, { hint, cause: err });
  }
}

/** Whether this process is in a user namespace that maps only some ids (not the whole 32-bit range as the initial one does). */
function idsPartlyMapped(): boolean {
  const whole = (file: string) => {
    try {
      return /^\s*0\s+0\s+4294967295\s*$/.test(fs.readFileSync(file, 'utf8'));
    } catch {
      return true; // no /proc: nothing says otherwise
    }
  };
  return !(whole('/proc/self/uid_map') && whole('/proc/self/gid_map'));
}

function parseAcl(text: string): Acl | undefined {
  const acl = aclFromText(text);
  return acl.length === 0 ? undefined : acl;
}

/** Whether the filesystem of `fd` stores POSIX ACLs: a minimal ACL (equal to its mode) is set. */
function probeAcls(fd: number): boolean {
  const mode = fs.fstatSync(fd).mode;
  const acl: Acl = [
    { tag: 'user_obj', perm: (mode >> 6) & 7 },
    { tag: 'group_obj', perm: (mode >> 3) & 7 },
    { tag: 'other', perm: mode & 7 },
  ];
  try {
    fsetxattr(fd, ACL_XATTR_ACCESS, aclToXattr(acl));
    return true;
  } catch (e) {
    return !['ENOTSUP', 'EOPNOTSUPP'].includes(code(e) ?? '');
  }
}

/**
 * The warning lines for what a build could not apply (none when nothing was skipped): the
 * skip kinds in one line, and a line of its own for ACLs narrowed to modes.
 */
export function skipWarnings(skipped: Record<string, number>, dir: string): string[] {
  const out: string[] = [];
  const kinds = Object.entries(skipped).filter(([k]) => k !== 'POSIX ACLs' && k !== 'unmapped ACLs');
  if (kinds.length > 0) {
    out.push(`as uid ${process.geteuid?.()} some metadata could not be applied: ${kinds.map(([k, n]) => `${k} (${n})`).join(', ')}`);
  }
  const paths = (n: number) => `${n} ${n === 1 ? 'path has' : 'paths have'}`;
  const instead = 'a mode that grants no more than its ACL did instead (the ACLs are listed in /.strata/acl.json)';
  const acls = skipped['POSIX ACLs'];
  if (acls) out.push(`the filesystem of ${printable(dir)} does not keep POSIX ACLs: ${paths(acls)} ${instead}`);
  const unmapped = skipped['unmapped ACLs'];
  if (unmapped) out.push(`this user namespace does not map every user and group the ACLs name: ${paths(unmapped)} ${instead}`);
  return out;
}

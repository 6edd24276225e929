/**
 * Reference snapshots of directory trees, for comparing what strata wrote with what the
 * foreign tools (GNU tar, bsdtar, umoci, unsquashfs) wrote.
 *
 * Independent of strata on purpose: metadata comes from lstat, extended attributes from
 * `getfattr`, ACLs from `getfacl`, content hashes from node:crypto. Nothing here imports
 * store/, compose/ or native/.
 *
 * A snapshot describes, per path (relative, '/'-separated, the root is '.'):
 *   type     file | dir | symlink | char | block | fifo | socket
 *   mode     permission bits & 0o7777 (setuid/setgid/sticky included); 0 for symlinks
 *   uid/gid  numeric owner
 *   size     content length for regular files, 0 otherwise (directory sizes are fs noise)
 *   sha256   hex digest of a regular file's content
 *   target   symlink target as stored (readlink, bytes decoded as UTF-8)
 *   rdev     { major, minor } for char and block devices
 *   mtime    whole seconds
 *   links    for a regular file with st_nlink > 1: every path in the tree that shares its
 *            inode, sorted (including itself); absent otherwise
 *   xattrs   name → lowercase hex value ('' for an empty value), every namespace
 *            (user, trusted, security) except system.posix_acl_*, which are the ACLs
 *   acl      { access?, default? } in canonical text, numeric ids, comma separated,
 *            e.g. "user::rwx,user:1001:r-x,group::r-x,group:2001:rwx,mask::rwx,other::r-x".
 *            `access` is present only when the ACL has more than the three base entries
 *            (a base-only ACL is the mode); `default` whenever a default ACL is set.
 */
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun } from './tmp.js';

export type NodeType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface TreeNode {
  path: string;
  type: NodeType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  target?: string;
  rdev?: { major: number; minor: number };
  mtime: number;
  links?: string[];
  xattrs: Record<string, string>;
  acl: { access?: string; default?: string };
}

/** Path → node, iterated in sorted order (component-wise byte order, parents first). */
export type TreeSnapshot = Map<string, TreeNode>;

/** Byte order of '/'-separated paths, component by component; '.' sorts first. */
export function comparePathsRef(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '.') return -1;
  if (b === '.') return 1;
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return Buffer.compare(Buffer.from(pa[i]!), Buffer.from(pb[i]!));
  }
  return pa.length - pb.length;
}

function sha256File(file: string): string {
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** Linux dev_t split (glibc gnu_dev_major/minor). */
function splitDev(rdev: bigint): { major: number; minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

/**
 * getfattr/getfacl print "# file: NAME" with newline and other control bytes escaped as
 * backslash + three octal digits, a backslash as '\\134' (getfattr) or '\\\\' (getfacl);
 * everything else is raw bytes.
 */
function unescapeName(s: Buffer): string {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === 0x5c && s[i + 1] === 0x5c) {
      out.push(0x5c); // getfacl writes a backslash as '\\\\', getfattr as '\\134'
      i += 1;
    } else if (c === 0x5c && i + 3 < s.length && /^[0-7]{3}$/.test(s.subarray(i + 1, i + 4).toString('latin1'))) {
      out.push(parseInt(s.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else {
      out.push(c);
    }
  }
  return Buffer.from(out).toString('utf8');
}

/** Splits getfattr/getfacl output into blocks keyed by relative path. */
function parseBlocks(out: Buffer, root: string): Map<string, string[]> {
  const blocks = new Map<string, string[]>();
  let cur: string[] | undefined;
  let start = 0;
  const prefix = '# file: ';
  for (let i = 0; i <= out.length; i++) {
    if (i < out.length && out[i] !== 0x0a) continue;
    const raw = out.subarray(start, i);
    start = i + 1;
    if (raw.length === 0) {
      cur = undefined;
      continue;
    }
    if (raw.subarray(0, prefix.length).toString('latin1') === prefix) {
      const abs = unescapeName(raw.subarray(prefix.length));
      let rel: string;
      if (abs === root) rel = '.';
      else if (abs.startsWith(root + '/')) rel = abs.slice(root.length + 1);
      else throw new Error(`unexpected path in tool output: ${abs}`);
      cur = [];
      blocks.set(rel, cur);
      continue;
    }
    if (!cur) throw new Error(`unparsable tool output line: ${raw.toString('utf8')}`);
    cur.push(raw.toString('utf8'));
  }
  return blocks;
}

function walk(root: string, rel: string, out: string[]): void {
  out.push(rel);
  const abs = rel === '.' ? root : join(root, rel);
  const st = lstatSync(abs);
  if (!st.isDirectory()) return;
  for (const name of readdirSync(abs)) walk(root, rel === '.' ? name : `${rel}/${name}`, out);
}

/**
 * Describes the tree under `dir` (the root itself is '.'). Deterministic: the same tree
 * gives an equal snapshot wherever it lives. Needs getfattr and getfacl (attr, acl).
 * Run as non-root it sees no trusted.* xattrs (the kernel hides them) and throws if a
 * directory cannot be read.
 */
export function snapshotTree(dir: string): TreeSnapshot {
  const root = realpathSync(dir);
  const paths: string[] = [];
  walk(root, '.', paths);
  paths.sort(comparePathsRef);

  const xattrBlocks = parseBlocks(
    mustRun('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '-h', '--absolute-names', root]).stdout,
    root,
  );
  const aclBlocks = parseBlocks(mustRun('getfacl', ['-R', '-P', '-n', '-p', '-E', '-s', root]).stdout, root);

  const snap: TreeSnapshot = new Map();
  const inodes = new Map<string, string[]>();
  for (const rel of paths) {
    const abs = rel === '.' ? root : join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    const fmt = Number(st.mode) & 0o170000;
    const type: NodeType =
      fmt === 0o100000 ? 'file'
      : fmt === 0o040000 ? 'dir'
      : fmt === 0o120000 ? 'symlink'
      : fmt === 0o020000 ? 'char'
      : fmt === 0o060000 ? 'block'
      : fmt === 0o010000 ? 'fifo'
      : 'socket';
    const node: TreeNode = {
      path: rel,
      type,
      mode: type === 'symlink' ? 0 : Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === 'file' ? Number(st.size) : 0,
      mtime: Number(st.mtimeMs / 1000n),
      xattrs: {},
      acl: {},
    };
    if (type === 'file') {
      node.sha256 = sha256File(abs);
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const group = inodes.get(key) ?? [];
        group.push(rel);
        inodes.set(key, group);
        node.links = group; // shared array: complete once the walk ends
      }
    }
    if (type === 'symlink') node.target = readlinkSync(abs, 'utf8');
    if (type === 'char' || type === 'block') node.rdev = splitDev(st.rdev);

    for (const line of xattrBlocks.get(rel) ?? []) {
      const eq = line.indexOf('=');
      const name = eq < 0 ? line : line.slice(0, eq);
      if (name.startsWith('system.posix_acl_')) continue;
      let value = eq < 0 ? '' : line.slice(eq + 1);
      if (value.startsWith('0x')) value = value.slice(2);
      else if (value === '""') value = '';
      else throw new Error(`getfattr printed a non-hex value for ${rel} ${name}: ${value}`);
      node.xattrs[name] = value.toLowerCase();
    }
    const access: string[] = [];
    const deflt: string[] = [];
    for (const line of aclBlocks.get(rel) ?? []) {
      if (line.startsWith('#')) continue; // owner/group/flags comments
      if (line.startsWith('default:')) deflt.push(line.slice('default:'.length));
      else access.push(line);
    }
    if (access.length > 3) node.acl.access = access.join(',');
    if (deflt.length > 0) node.acl.default = deflt.join(',');
    snap.set(rel, node);
  }
  for (const group of inodes.values()) group.sort(comparePathsRef);
  // A single member in the tree (the others are outside it) is not a link group here.
  for (const node of snap.values()) if (node.links && node.links.length < 2) delete node.links;
  return snap;
}

export interface DiffOptions {
  /** Ignore mtimes of directories (extraction order touches them). */
  ignoreDirMtimes?: boolean;
  /** Ignore every mtime. */
  ignoreMtimes?: boolean;
  /** Ignore uid/gid (e.g. a sandbox written as non-root). */
  ignoreOwners?: boolean;
  /** Ignore `.strata` and `.singularity.d` at the top and everything below them. */
  ignoreStrataPaths?: boolean;
  /** Further paths to ignore, each with everything below it (relative, e.g. 'etc/hostname'). */
  ignorePaths?: string[];
  /** Ignore the metadata of the root '.' itself (mode, owner, mtime, xattrs, ACLs). */
  ignoreRoot?: boolean;
  /** Ignore xattrs whose name starts with one of these (e.g. ['trusted.', 'security.'] for a non-root sandbox). */
  ignoreXattrPrefixes?: string[];
  /** Ignore POSIX ACLs (e.g. a tree unpacked by unsquashfs, which has none). */
  ignoreAcls?: boolean;
}

function isIgnored(path: string, opts: DiffOptions): boolean {
  const prefixes = [...(opts.ignorePaths ?? [])];
  if (opts.ignoreStrataPaths) prefixes.push('.strata', '.singularity.d');
  return prefixes.some((p) => path === p || path.startsWith(p + '/'));
}

const oct = (m: number) => m.toString(8).padStart(4, '0');

/**
 * Compares two trees (directories or snapshots) and returns one human-readable line per
 * difference, sorted by path; an empty list means identical under `opts`. Lines look like
 *   "only in a: etc/shadow (file)"
 *   "usr/bin/x: mode 0755 != 0750"
 *   "opt/lic: acl.default user::rwx,… != (none)"
 *   "bin/a: xattr user.k 00ff != (none)"
 *   "bin/a: hard links [bin/a,bin/b] != (none)"
 */
export function diffTrees(a: string | TreeSnapshot, b: string | TreeSnapshot, opts: DiffOptions = {}): string[] {
  const sa = typeof a === 'string' ? snapshotTree(a) : a;
  const sb = typeof b === 'string' ? snapshotTree(b) : b;
  const out: string[] = [];
  const all = [...new Set([...sa.keys(), ...sb.keys()])].sort(comparePathsRef);
  for (const p of all) {
    if (isIgnored(p, opts)) continue;
    const x = sa.get(p);
    const y = sb.get(p);
    if (!x) {
      out.push(`only in b: ${p} (${y!.type})`);
      continue;
    }
    if (!y) {
      out.push(`only in a: ${p} (${x.type})`);
      continue;
    }
    if (x.type !== y.type) {
      out.push(`${p}: type ${x.type} != ${y.type}`);
      continue;
    }
    if (p === '.' && opts.ignoreRoot) continue;
    const d = (what: string, u: unknown, v: unknown) => {
      if (u !== v) out.push(`${p}: ${what} ${u ?? '(none)'} != ${v ?? '(none)'}`);
    };
    if (x.mode !== y.mode) out.push(`${p}: mode ${oct(x.mode)} != ${oct(y.mode)}`);
    if (!opts.ignoreOwners) {
      d('uid', x.uid, y.uid);
      d('gid', x.gid, y.gid);
    }
    d('size', x.size, y.size);
    d('sha256', x.sha256, y.sha256);
    d('target', x.target, y.target);
    d('rdev', x.rdev && `${x.rdev.major}:${x.rdev.minor}`, y.rdev && `${y.rdev.major}:${y.rdev.minor}`);
    if (!opts.ignoreMtimes && !(opts.ignoreDirMtimes && x.type === 'dir')) d('mtime', x.mtime, y.mtime);
    d('hard links', x.links && `[${x.links.join(',')}]`, y.links && `[${y.links.join(',')}]`);
    for (const n of [...new Set([...Object.keys(x.xattrs), ...Object.keys(y.xattrs)])].sort()) {
      if (opts.ignoreXattrPrefixes?.some((pre) => n.startsWith(pre))) continue;
      d(`xattr ${n}`, x.xattrs[n], y.xattrs[n]);
    }
    if (!opts.ignoreAcls) {
      d('acl.access', x.acl.access, y.acl.access);
      d('acl.default', x.acl.default, y.acl.default);
    }
  }
  return out;
}

/**
 * Directory and overlayfs-upperdir sources. The walk never follows a symlink: lstat for
 * metadata, l*xattr calls (native/) for xattrs and ACLs.
 *
 * With `overlay`, the upperdir conventions become OCI ones. Overlay metadata lives in
 * `trusted.overlay.*` xattrs, or in `user.overlay.*` ones for rootless mounts (`userxattr`);
 * both are read:
 * - a char device 0/0 is a whiteout (`.wh.<name>`);
 * - a zero-size regular file with `overlay.whiteout` in a directory marked with
 *   `overlay.opaque=x` (or the older `overlay.whiteouts`) is a whiteout too (Linux 6.7+
 *   "xattr whiteouts");
 * - a directory with `overlay.opaque=y` gets a `.wh..wh..opq` entry ('x' is not opaque: it
 *   only marks xattr whiteouts inside);
 * - every other `overlay.*` xattr is dropped, escaped ones (`overlay.overlay.X`) become
 *   `overlay.X`; redirected or metacopy-only entries cannot be represented in a layer and are
 *   refused.
 * `trusted.*` xattrs are invisible to a process without CAP_SYS_ADMIN: without it, an
 * upperdir shows no opaque directory even when it has them. So a non-root overlay import is
 * refused unless the upperdir shows it is a `userxattr` one (some `user.overlay.*` xattr).
 */
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { printable } from '../../native/errors.js';
import { readXattrs } from '../../native/xattr.js';
import { splitAclXattrs } from './acl-ingest.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { LayerBuilder } from '../layer/builder.js';
import { EntryType, OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from '../types.js';

export interface DirSourceOptions {
  overlay?: boolean;
}

export interface SourceReport {
  skipped: string[];
}

const OVERLAY_XATTR = /^(trusted|user)\.overlay\./;
const ESCAPED_OVERLAY_XATTR = /^(trusted|user)\.overlay\.overlay\./;

/** The value of overlay xattr `name` (trusted or user namespace), as text. */
function overlayAttr(xattrs: Map<string, Buffer>, name: string): string | undefined {
  return (xattrs.get(`trusted.overlay.${name}`) ?? xattrs.get(`user.overlay.${name}`))?.toString('latin1');
}

export async function addDirectory(builder: LayerBuilder, root: string, opts: DirSourceOptions = {}): Promise<SourceReport> {
  const report: SourceReport = { skipped: [] };
  const inodes = new Map<string, string>();
  const files = builder.contentSource((abs) => createReadStream(abs as string, { highWaterMark: 1 << 20 }));
  let userxattr = false;
  const walk = async (rel: string, xwhiteouts: boolean): Promise<void> => {
    const abs = rel === '.' ? root : path.join(root, rel);
    const st = await fsp.lstat(abs, { bigint: true });
    const type = typeOf(st);
    if (type === 'socket') {
      report.skipped.push(`${printable(rel)} (socket)`);
      return;
    }
    let xattrs = readXattrs(abs);
    const acl = splitAclXattrs(xattrs, rel);
    let opaque = false;
    let childXwhiteouts = false;
    if (opts.overlay) {
      for (const name of xattrs.keys()) {
        if (name.startsWith('user.overlay.')) userxattr = true;
        if (/^(trusted|user)\.overlay\.(redirect|metacopy)$/.test(name)) {
          throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(rel)}' is a redirected or metacopy overlay entry`, {
            hint: 'mount the overlay with redirect_dir=off,metacopy=off, or import a tar of the merged change',
          });
        }
      }
      const opq = overlayAttr(xattrs, 'opaque');
      opaque = type === 'dir' && opq === 'y';
      childXwhiteouts = type === 'dir' && (opq === 'x' || overlayAttr(xattrs, 'whiteouts') !== undefined);
      const xwhiteout = type === 'file' && xwhiteouts && st.size === 0n && overlayAttr(xattrs, 'whiteout') !== undefined;
      const kept = new Map<string, Buffer>();
      for (const [k, v] of xattrs) {
        if (ESCAPED_OVERLAY_XATTR.test(k)) kept.set(k.replace('.overlay.overlay.', '.overlay.'), v);
        else if (!OVERLAY_XATTR.test(k)) kept.set(k, v);
      }
      xattrs = kept;
      if (((type === 'char' && st.rdev === 0n) || xwhiteout) && rel !== '.') {
        const dir = path.posix.dirname(rel);
        const wh = `${WHITEOUT_PREFIX}${path.posix.basename(rel)}`;
        builder.add({ path: dir === '.' ? wh : `${dir}/${wh}`, type: 'file', mode: 0, uid: 0, gid: 0, mtime: 0, size: 0 });
        return;
      }
    }
    const meta = {
      path: rel,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: Number(st.mtimeNs / 1_000_000_000n) - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1 : 0),
      xattrs,
      acl,
    };
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = inodes.get(key);
      if (first !== undefined) {
        builder.add({ ...meta, type: 'hardlink', size: 0, linkname: first });
        return;
      }
      if (type === 'file') inodes.set(key, rel);
    }
    switch (type) {
      case 'file':
        builder.add({ ...meta, type, size: Number(st.size) }, { src: files, a: abs });
        return;
      case 'symlink':
        builder.add({ ...meta, type, size: 0, linkname: await fsp.readlink(abs) });
        return;
      case 'char':
      case 'block':
        builder.add({ ...meta, type, size: 0, devmajor: devMajor(st.rdev), devminor: devMinor(st.rdev) });
        return;
      case 'fifo':
        builder.add({ ...meta, type, size: 0 });
        return;
      case 'dir': {
        builder.add({ ...meta, type, size: 0 });
        if (opaque) builder.add({ path: rel === '.' ? OPAQUE_WHITEOUT : `${rel}/${OPAQUE_WHITEOUT}`, type: 'file', mode: 0, uid: 0, gid: 0, mtime: 0, size: 0 });
        const names = (await fsp.readdir(abs)).sort();
        for (const name of names) await walk(rel === '.' ? name : `${rel}/${name}`, childXwhiteouts);
        return;
      }
    }
  };
  await walk('.', false);
  if (opts.overlay && !userxattr && !canReadTrustedXattrs()) {
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `cannot import overlay upperdir ${printable(root)} without the right to read trusted.overlay.* xattrs (opaque directories would be lost)`, {
      hint: 'run the import as root, or use an overlay mounted with userxattr (its user.overlay.* xattrs are read)',
    });
  }
  return report;
}

function typeOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isFIFO(): boolean }): EntryType | 'socket' {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

/** glibc's gnu_dev_major / gnu_dev_minor. */
export function devMajor(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n));
}
export function devMinor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n));
}

/**
 * True when this process can see `trusted.*` xattrs: CAP_SYS_ADMIN in the initial user
 * namespace, i.e. root outside any user namespace (uid_map the identity over all ids).
 */
function canReadTrustedXattrs(): boolean {
  if (process.geteuid?.() !== 0) return false;
  try {
    const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/);
    return map[0] === '0' && map[1] === '0' && map[2] === '4294967295';
  } catch {
    return true;
  }
}

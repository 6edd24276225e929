/**
 * Directory and overlayfs-upperdir sources. The walk never follows a symlink: lstat for
 * metadata, l*xattr calls (native/) for xattrs and ACLs.
 *
 * With `overlay`, the upperdir conventions become OCI ones: a char device 0/0 is a whiteout
 * (`.wh.<name>`), a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque`, for
 * userxattr mounts) gets a `.wh..wh..opq` entry, and every `*.overlay.*` xattr is dropped.
 * Redirected or metacopy-only entries cannot be represented in a layer and are refused.
 */
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
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

export async function addDirectory(builder: LayerBuilder, root: string, opts: DirSourceOptions = {}): Promise<SourceReport> {
  const report: SourceReport = { skipped: [] };
  const inodes = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? root : path.join(root, rel);
    const st = await fsp.lstat(abs, { bigint: true });
    const type = typeOf(st);
    if (type === 'socket') {
      report.skipped.push(`${rel} (socket)`);
      return;
    }
    let xattrs = readXattrs(abs);
    const acl = splitAclXattrs(xattrs, rel);
    let opaque = false;
    if (opts.overlay) {
      for (const name of xattrs.keys()) {
        if (/\.overlay\.(redirect|metacopy)$/.test(name)) {
          throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${rel}' is a redirected or metacopy overlay entry`, {
            hint: 'mount the overlay with redirect_dir=off,metacopy=off, or import a tar of the merged change',
          });
        }
      }
      opaque = ['y', 'x'].includes(xattrs.get('trusted.overlay.opaque')?.toString() ?? xattrs.get('user.overlay.opaque')?.toString() ?? '');
      xattrs = new Map([...xattrs].filter(([k]) => !OVERLAY_XATTR.test(k)));
      if (type === 'char' && st.rdev === 0n && rel !== '.') {
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
        builder.add({ ...meta, type, size: Number(st.size) }, () => createReadStream(abs, { highWaterMark: 1 << 20 }));
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
        for (const name of names) await walk(rel === '.' ? name : `${rel}/${name}`);
        return;
      }
    }
  };
  await walk('.');
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

/**
 * The gate's listing of a tar stream: the same path → TreeNode map that snapshotTreeFast
 * makes of a directory, read from an archive instead (sqfs2tar's output: a SquashFS image
 * read by squashfs-tools-ng, with no kernel mount). The benchmark's own reader, kept apart
 * from strata's tar codec on purpose: the gate must not check strata with strata's code.
 *
 * Reads ustar and GNU headers (octal or base-256 numbers), GNU long names and link targets
 * ('L', 'K'), pax extended headers ('x': path, linkpath, size, uid, gid, mtime and xattrs as
 * SCHILY.xattr.NAME or LIBARCHIVE.xattr.NAME), and hard links ('1': the node of the target's
 * inode, nlink counted over its names). Global pax headers ('g') are skipped.
 */
import { createHash, hash as hashOnce, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { TreeNode } from './harness.js';
import { BenchError } from './proc.js';

export interface TarListOptions {
  /** The archive's name for the root directory ("R" for `sqfs2tar --root-becomes R`): listed as '.'. */
  root?: string;
  /** Top-level-relative path prefixes to leave out (e.g. '.strata'). */
  ignore?: readonly string[];
}

/** sha256 of no bytes: an empty file's content hash. */
const EMPTY_SHA256 = createHash('sha256').digest('hex');

const TYPES: Record<string, TreeNode['type']> = { '0': 'file', '\0': 'file', '7': 'file', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

/**
 * A header's numeric field: octal text (after leading spaces, up to a NUL, a space or the
 * field's end; NaN for anything else, so that a damaged field shows in the gate), or base-256
 * when its first byte has the high bit set. Read byte by byte: six fields a header, a million
 * headers an image.
 */
function num(b: Buffer, off: number, len: number): number {
  if (b[off]! & 0x80) {
    let v = b[off]! & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i]!;
    return v;
  }
  const end = off + len;
  let i = off;
  while (i < end && b[i] === 0x20) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c >= 0x30 && c <= 0x37) v = v * 8 + (c - 0x30);
    else if (c === 0 || c === 0x20) break;
    else return NaN;
  }
  return v;
}

function str(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

/** glibc's makedev: the st_rdev Node reports for a device of this major and minor. */
export function makedev(major: number, minor: number): number {
  return (major & 0xfff) * 256 + (minor & 0xff) + (minor & ~0xff) * 4096 + Math.floor(major / 4096) * 2 ** 32 * 4096;
}

/** pax records ("LEN KEY=VALUE\n"), values kept as bytes (xattr values are binary). */
function paxRecords(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < body.length) {
    const sp = body.indexOf(0x20, off);
    const len = sp < 0 ? NaN : Number(body.toString('latin1', off, sp));
    if (!Number.isInteger(len) || len <= 0 || off + len > body.length) throw new BenchError(`tar listing: a damaged pax record at byte ${off} of its header`);
    const rec = body.subarray(sp + 1, off + len - 1); // without the length and the newline
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new BenchError('tar listing: a pax record without "="');
    out.set(rec.toString('utf8', 0, eq), rec.subarray(eq + 1));
    off += len;
  }
  return out;
}

/** The archive's name of a path, relative to the root ('.' for the root itself); undefined when it lies outside it. */
function relative(name: string, root: string | undefined): string | undefined {
  let p = name.replace(/\/+$/, '');
  if (p.startsWith('./')) p = p.slice(2);
  if (root === undefined) return p || '.';
  if (p === root) return '.';
  return p.startsWith(`${root}/`) ? p.slice(root.length + 1) : undefined;
}

/**
 * Lists every path of the tar read from `input`. Content hashes are sha256 (Node's crypto),
 * as snapshotTreeFast's; metadata as the kernel would report it after extraction.
 */
export async function listTar(input: Readable, opts: TarListOptions = {}): Promise<Map<string, TreeNode>> {
  const nodes = new Map<string, TreeNode>();
  /** Names of each file with hard links, by its first name: nlink is their count. */
  const links = new Map<string, string[]>();
  const ignored = (p: string) => !!opts.ignore?.some((i) => p === i || p.startsWith(i + '/'));

  let pending = Buffer.alloc(0);
  // The entry being read: its body's bytes left, padding after it, and what to do with them.
  let left = 0;
  let pad = 0;
  let hash: Hash | undefined;
  let meta: { kind: string; parts: Buffer[] } | undefined;
  let node: TreeNode | undefined;
  // Extended values for the next entry (pax 'x', GNU 'L' and 'K').
  let pax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  let ended = false;

  const finishBody = () => {
    // A body read in one piece was hashed as it came (below); an empty one has no piece.
    if (node) node.sha256 = hash ? hash.digest('hex') : (node.sha256 ?? EMPTY_SHA256);
    if (meta) {
      const body = Buffer.concat(meta.parts);
      if (meta.kind === 'x') pax = paxRecords(body);
      else if (meta.kind === 'L') longName = str(body, 0, body.length);
      else if (meta.kind === 'K') longLink = str(body, 0, body.length);
    }
    hash = undefined;
    meta = undefined;
    node = undefined;
  };

  const header = (h: Buffer) => {
    // A header's name is never empty: only an end-of-archive block starts with a NUL.
    if (h[0] === 0 && h.every((x) => x === 0)) {
      ended = true;
      return;
    }
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== num(h, 148, 8)) throw new BenchError('tar listing: a header with a wrong checksum');
    const flag = String.fromCharCode(h[156]!);
    let size = num(h, 124, 12);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      left = size;
      pad = (512 - (size % 512)) % 512;
      if (flag !== 'g') meta = { kind: flag, parts: [] };
      if (!size) finishBody();
      return;
    }
    const x = pax;
    pax = undefined;
    const ustar = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 && h[261] === 0x72 && h[262] === 0;
    const prefix = ustar ? str(h, 345, 155) : '';
    let name = longName ?? (prefix ? `${prefix}/${str(h, 0, 100)}` : str(h, 0, 100));
    let link = longLink ?? str(h, 157, 100);
    longName = longLink = undefined;
    const xs = (k: string) => x?.get(k)?.toString('utf8');
    name = xs('path') ?? name;
    link = xs('linkpath') ?? link;
    if (xs('size') !== undefined) size = Number(xs('size'));
    const path = relative(name, opts.root);
    const hasBody = flag !== '1' && flag !== '2' && flag !== '5' && flag !== '3' && flag !== '4' && flag !== '6';
    left = hasBody ? size : 0;
    pad = (512 - (left % 512)) % 512;
    if (path === undefined || (path !== '.' && ignored(path))) return;

    if (flag === '1') {
      const target = relative(link, opts.root);
      const t = target === undefined ? undefined : nodes.get(target);
      if (!t || t.type !== 'file') throw new BenchError(`tar listing: ${name}: a hard link to ${link}, which is not a file listed before it`);
      // Another name of the same inode: everything but the name is the target's (GNU tar
      // writes a link's xattrs with the target only).
      nodes.set(path, t);
      const group = links.get(target!) ?? [target!];
      group.push(path);
      links.set(target!, group);
      return;
    }
    const type = TYPES[flag];
    if (!type) throw new BenchError(`tar listing: ${name}: entry type '${flag}' is not one a tree holds`);
    const xattrs = new Map<string, string>();
    for (const [k, v] of x ?? []) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice(13), `0x${v.toString('hex')}`);
      else if (k.startsWith('LIBARCHIVE.xattr.')) xattrs.set(decodeURIComponent(k.slice(17)), `0x${Buffer.from(v.toString('latin1'), 'base64').toString('hex')}`);
    }
    const mtime = xs('mtime');
    // Every node of one shape (harness parseListing): the content hash comes with the body.
    const n: TreeNode = {
      type,
      mode: num(h, 100, 8) & 0o7777,
      uid: xs('uid') !== undefined ? Number(xs('uid')) : num(h, 108, 8),
      gid: xs('gid') !== undefined ? Number(xs('gid')) : num(h, 116, 8),
      size: type === 'file' ? size : 0,
      mtime: mtime !== undefined ? Math.floor(Number(mtime)) : num(h, 136, 12),
      nlink: type === 'dir' ? 0 : 1,
      rdev: type === 'char' || type === 'block' ? makedev(num(h, 329, 8), num(h, 337, 8)) : 0,
      link: type === 'symlink' ? link : undefined,
      sha256: undefined,
      xattrs,
    };
    if (type === 'file') node = n;
    nodes.set(path, n);
    if (!left) finishBody();
  };

  for await (const chunk of input as AsyncIterable<Buffer>) {
    const b = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    while (!ended) {
      if (left) {
        const take = Math.min(left, b.length - off);
        if (!take) break;
        const part = b.subarray(off, off + take);
        if (node) {
          // Most files' bodies come whole in one chunk: one call, no hash object.
          if (!hash && take === left) node.sha256 = hashOnce('sha256', part, 'hex');
          else (hash ??= createHash('sha256')).update(part);
        }
        meta?.parts.push(Buffer.from(part));
        left -= take;
        off += take;
        if (!left) finishBody();
        continue;
      }
      if (pad) {
        const take = Math.min(pad, b.length - off);
        if (!take) break;
        pad -= take;
        off += take;
        continue;
      }
      if (b.length - off < 512) break;
      header(b.subarray(off, off + 512));
      off += 512;
    }
    pending = ended ? Buffer.alloc(0) : Buffer.from(b.subarray(off));
  }
  if (!ended && (left || pad || pending.length)) throw new BenchError('tar listing: the archive ends inside an entry');
  for (const group of links.values()) for (const p of group) nodes.get(p)!.nlink = group.length;
  return nodes;
}

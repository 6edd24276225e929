/**
 * Shared pieces of the EROFS suites: the corpus (every kind of entry issue 12 names, ACLs
 * included), a materializer that makes the same tree with real system calls and tools
 * (mknod, setfacl, setfattr), and a feeder that drives ErofsWriter from the corpus the way
 * the composer will (files in path order with their bytes streamed in chunks, other
 * entries in reverse order). Root only (chown, mknod, trusted.* xattrs).
 */
import { chmodSync, lchownSync, linkSync, lutimesSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { comparePaths, type LayerEntry } from '../store/types.js';
import { ErofsWriter, type ErofsOptions, type ErofsResult } from '../compose/image/erofs/writer.js';
import type { ImageEntry } from '../compose/image/erofs/reader.js';
import { mustRun } from './helpers/tmp.js';
import { noise } from './helpers/random.js';

export interface Item {
  entry: LayerEntry;
  data?: Buffer;
}

export const BS = 4096;
export const T0 = 1_700_000_000;
/** Ids the ACLs name; the access suite creates real users with these as names' ids. */
export const ACL_USER = 'st-erofs-named';
export const ACL_GROUP = 'st-erofs-lic';

export function dir(path: string, extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: T0, size: 0, ...extra } };
}
export function file(path: string, data: Buffer, extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T0, size: data.length, ...extra }, data };
}
export function other(path: string, type: LayerEntry['type'], extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type, mode: type === 'symlink' ? 0o777 : 0o640, uid: 0, gid: 0, mtime: T0 + 2, size: 0, ...extra } };
}

export const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_raw+ep, v2

/** Ids used by the ACLs of the corpus (uid of the named user, gid of the named group). */
export interface AclIds {
  user: number;
  group: number;
  /** The owning group of the licensed files (its members get exactly group::). */
  owner: number;
}

export const DEFAULT_IDS: AclIds = { user: 3_000_101, group: 3_000_201, owner: 3_000_301 };

/**
 * The corpus: sizes around the block size, holes, a 3,000-entry directory, 255-byte
 * names, devices, fifos, symlinks, hard links, big ids, setuid/setgid/sticky modes,
 * user/trusted/security xattrs (binary capability), a licensed tree with named-user,
 * named-group, mask and default ACLs, and identical files (dups/, the later copies in COPIES).
 */
export function corpus(ids: AclIds = DEFAULT_IDS): Item[] {
  const items: Item[] = [dir('.', { mode: 0o755, mtime: T0 - 5 })];
  items.push(dir('sizes'));
  const sizes: Record<string, number> = {
    empty: 0, one: 1, 'bs-1': BS - 1, bs: BS, 'bs+1': BS + 1, '2bs-1': 2 * BS - 1, '3bs': 3 * BS, '3bs+7': 3 * BS + 7,
    '128k+1': 131072 + 1, '300k': 300 * 1024 + 17,
  };
  let seed = 1;
  for (const [name, n] of Object.entries(sizes)) items.push(file(`sizes/${name}`, noise(n, seed++)));
  items.push(file('sizes/text', Buffer.from('compressible line of text\n'.repeat(9000))));
  items.push(file('sizes/text-bs+1', Buffer.from('a'.repeat(BS + 1))));

  // Identical content: a compressed file of two extents, one with a zero extent (the shared
  // zero pcluster is first written among its extents), a file differing in its last byte.
  items.push(dir('dups'));
  const text = Buffer.from('compressible duplicate line\n'.repeat(6000));
  const holes = Buffer.concat([text.subarray(0, 131072), Buffer.alloc(131072), noise(100, 61)]);
  const near = noise(3 * BS + 100, 62);
  const near2 = Buffer.concat([near.subarray(0, -1), Buffer.from([near.at(-1)! ^ 1])]);
  for (const [name, data] of Object.entries({ holes1: holes, holes2: holes, near1: near, near2, text1: text, text2: text })) {
    items.push(file(`dups/${name}`, data));
  }

  items.push(dir('holes'));
  const z = Buffer.alloc(BS);
  items.push(file('holes/sparse', Buffer.concat([noise(BS, 11), z, noise(BS, 12), z, z, noise(100, 13)])));
  items.push(file('holes/allzero', Buffer.alloc(3 * BS + 10)));
  items.push(file('holes/zero-bs', Buffer.alloc(BS)));
  items.push(file('holes/big-hole', Buffer.concat([Buffer.alloc(1 << 20), noise(BS + 5, 14), Buffer.alloc(600 * 1024)])));
  items.push(file('holes/aligned', Buffer.concat([noise(8 * BS, 15), Buffer.alloc(8 * BS), noise(8 * BS, 16)])));

  items.push(dir('names'));
  for (const n of ['n'.repeat(255), 'é'.repeat(127), 'a', 'B', 'a.b', 'a-b', '-', ' lead', 'Z', 'a b', '~', '!']) {
    items.push(file(`names/${n}`, Buffer.from(n)));
  }

  items.push(dir('big', { mode: 0o750, uid: 7, gid: 8 }));
  for (let i = 0; i < 3000; i++) {
    const name = `big/entry-with-a-longer-name-${String(i).padStart(5, '0')}`;
    items.push(file(name, i % 3 === 0 ? Buffer.alloc(0) : Buffer.from(`content ${i}\n`), { mode: 0o600 + (i % 8) }));
  }

  items.push(dir('deep'));
  let p = 'deep';
  for (let i = 1; i <= 30; i++) {
    p += `/d${i}`;
    items.push(dir(p, { mtime: T0 + i }));
  }
  items.push(file(`${p}/bottom`, Buffer.from('bottom\n')));

  items.push(dir('links'), dir('links/sub'));
  items.push(file('links/a', noise(5000, 21), { uid: 1234, gid: 4321, mode: 0o640 }));
  items.push(other('links/b', 'hardlink', { linkname: 'links/a' }));
  items.push(other('links/sub/c', 'hardlink', { linkname: 'links/a' }));
  items.push(file('links/x', Buffer.from('x\n')));
  items.push(other(`${p}/y`, 'hardlink', { linkname: 'links/x' }));

  items.push(dir('ids'));
  for (let i = 0; i < 40; i++) {
    items.push(file(`ids/f${String(i).padStart(3, '0')}`, Buffer.alloc(0), { uid: 65_530 + i, gid: 4_000_000_000 + i }));
  }

  const big = noise(3000, 98);
  items.push(dir('x', { xattrs: new Map([['user.dir', Buffer.from('on a dir')]]) }));
  items.push(file('x/big', Buffer.from('big user xattr\n'), { xattrs: new Map([['user.big', big]]) }));
  items.push(file('x/big2', Buffer.from('same value, trusted\n'), {
    xattrs: new Map([['trusted.big', big], ['user.small', Buffer.from([0, 0xff])]]),
  }));
  items.push(file('x/cap', Buffer.from('#!/bin/sh\n'), { mode: 0o755, xattrs: new Map([['security.capability', CAP]]) }));
  items.push(file('x/same-set', Buffer.from('same set as big\n'), { xattrs: new Map([['user.big', big]]) }));
  items.push(file('x/empty-value', Buffer.from('e'), { xattrs: new Map([['user.empty', Buffer.alloc(0)]]) }));
  items.push(other('x/sl', 'symlink', { linkname: 'cap', xattrs: new Map([['trusted.sym', Buffer.from('1')]]) }));
  items.push(other('x/dev', 'char', { devmajor: 1, devminor: 3, xattrs: new Map([['trusted.dev', Buffer.from('d')]]) }));
  items.push(other('x/fifo', 'fifo', { xattrs: new Map([['trusted.fifo', Buffer.alloc(0)]]) }));
  // xattrs larger than a block: the inode's xattr body spans blocks.
  items.push(file('x/huge-xattr', Buffer.from('tiny\n'), { xattrs: new Map([['user.huge', noise(6000, 33)], ['security.capability', CAP]]) }));
  items.push(dir('x/huge-dir', { xattrs: new Map([['trusted.huge', noise(9000, 34)]]) }));
  items.push(file('x/huge-dir/f', noise(5000, 35), { xattrs: new Map([['trusted.huge', noise(9000, 34)], ['user.also', noise(5000, 36)]]) }));
  // Inline data that cannot share a block with 3,900 bytes of xattrs: its tail goes to a block.
  items.push(file('x/fat-tail', noise(BS + 300, 31), { xattrs: new Map([['user.fat', noise(3900, 32)]]) }));

  items.push(dir('dev'));
  items.push(other('dev/null', 'char', { devmajor: 1, devminor: 3, mode: 0o666 }));
  items.push(other('dev/loop', 'block', { devmajor: 7, devminor: 0 }));
  items.push(other('dev/bigminor', 'char', { devmajor: 4000, devminor: 300_000 }));
  items.push(other('dev/fifo', 'fifo', { uid: 5, gid: 6 }));

  items.push(dir('modes'));
  items.push(file('modes/setuid', Buffer.from('u'), { mode: 0o4755 }));
  items.push(file('modes/setgid', Buffer.from('g'), { mode: 0o2711 }));
  items.push(file('modes/none', Buffer.from('n'), { mode: 0 }));
  items.push(dir('modes/setgid-dir', { mode: 0o2775 }));
  items.push(dir('modes/sticky', { mode: 0o1777 }));

  items.push(dir('sym'));
  items.push(other('sym/rel', 'symlink', { linkname: '../sizes/one' }));
  items.push(other('sym/dangling', 'symlink', { linkname: 'no/where' }));
  items.push(other('sym/long', 'symlink', { linkname: 'l'.repeat(4000) }));
  // Too long to share a block with its inode and xattr: the target goes to a block of its own.
  items.push(other('sym/long-x', 'symlink', { linkname: 'm'.repeat(4090), xattrs: new Map([['trusted.s', Buffer.from('s')]]) }));

  // The licensed tree: the mode's group bits are the mask (as setfacl leaves them).
  const u = ids.user;
  const g = ids.group;
  const access = `user::rwx,user:${u}:r-x,group::r-x,group:${g}:rwx,mask::rwx,other::---`;
  const deflt = `user::rwx,user:${u}:r-x,group::r-x,group:${g}:rwx,mask::rwx,other::---`;
  items.push(dir('lic', { mode: 0o770, gid: ids.owner, acl: { access, default: deflt } }));
  items.push(dir('lic/bin', { mode: 0o770, gid: ids.owner, acl: { access, default: deflt } }));
  items.push(file('lic/bin/tool', Buffer.from('#!/bin/sh\necho licensed tool ran\n'), {
    mode: 0o750, gid: ids.owner, acl: { access: `user::rwx,user:${u}:r-x,group::r--,group:${g}:r-x,mask::r-x,other::---` },
  }));
  items.push(file('lic/LICENSE', Buffer.from('Licensed to: site staff only\n'), {
    mode: 0o640, gid: ids.owner, acl: { access: `user::rw-,user:${u}:r--,group::---,group:${g}:r--,mask::r--,other::---` },
    xattrs: new Map([['user.license', Buffer.from('site-1234')]]),
  }));
  items.push(file('lic/group-only', Buffer.from('only group::\n'), {
    mode: 0o640, gid: ids.owner, acl: { access: `user::rw-,group::r--,group:${g}:---,mask::r--,other::---` },
  }));
  items.push(file('lic/bin/licd', Buffer.from('#!/bin/false licd\n'), {
    mode: 0o750, gid: ids.owner, xattrs: new Map([['security.capability', CAP]]),
  }));
  items.push(dir('lic/data', { mode: 0o770, gid: ids.owner, acl: { default: deflt } }));
  items.push(file('lic/data/table', noise(10_000, 41), { mode: 0o660, gid: ids.owner }));
  return items;
}

/** The files of the corpus whose content an earlier file has. */
export const COPIES = ['dups/holes2', 'dups/text2'];

/** Writes the items as a real tree under `root` (exists, empty). Root only. */
export function materialize(items: Item[], root: string): void {
  const sorted = [...items].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
  const abs = (p: string) => (p === '.' ? root : join(root, p));
  const xattrDump: string[] = [];
  const aclDump: string[] = [];
  for (const { entry: e, data } of sorted) {
    const a = abs(e.path);
    switch (e.type) {
      case 'dir':
        if (e.path !== '.') mkdirSync(a);
        break;
      case 'file':
        writeFileSync(a, data!);
        break;
      case 'symlink':
        symlinkSync(e.linkname!, a);
        break;
      case 'hardlink':
        break;
      case 'char':
      case 'block':
        mustRun('mknod', [a, e.type === 'char' ? 'c' : 'b', String(e.devmajor), String(e.devminor)]);
        break;
      case 'fifo':
        mustRun('mknod', [a, 'p']);
        break;
    }
    if (e.type === 'hardlink') continue;
    lchownSync(a, e.uid, e.gid);
    if (e.type !== 'symlink') chmodSync(a, e.mode);
    const xs = [...(e.xattrs ?? [])];
    if (xs.length) {
      xattrDump.push(`# file: ${e.path}`);
      for (const [n, v] of xs) xattrDump.push(v.length ? `${n}=0x${v.toString('hex')}` : `${n}=""`);
      xattrDump.push('');
    }
    if (e.acl?.access || e.acl?.default) {
      aclDump.push(`# file: ${e.path}`);
      // (setfacl --restore wants an access ACL with every default one: the mode's, when none)
      const bits = (m: number) => `${m & 4 ? 'r' : '-'}${m & 2 ? 'w' : '-'}${m & 1 ? 'x' : '-'}`;
      if (e.acl.access) aclDump.push(...e.acl.access.split(','));
      else aclDump.push(`user::${bits(e.mode >> 6)}`, `group::${bits(e.mode >> 3)}`, `other::${bits(e.mode)}`);
      if (e.acl.default) aclDump.push(...e.acl.default.split(',').map((l) => `default:${l}`));
      aclDump.push('');
    }
  }
  for (const { entry: e } of sorted) if (e.type === 'hardlink') linkSync(abs(e.linkname!), abs(e.path));
  if (xattrDump.length) {
    writeFileSync(join(root, '..', 'xattrs.dump'), xattrDump.join('\n') + '\n');
    mustRun('setfattr', ['-h', `--restore=${join(root, '..', 'xattrs.dump')}`], { cwd: root });
  }
  if (aclDump.length) {
    writeFileSync(join(root, '..', 'acl.dump'), aclDump.join('\n') + '\n');
    mustRun('setfacl', [`--restore=${join(root, '..', 'acl.dump')}`], { cwd: root });
  }
  for (const { entry: e } of sorted.reverse()) {
    if (e.type !== 'hardlink') lutimesSync(abs(e.path), e.mtime, e.mtime);
  }
}

export async function* chunks(b: Buffer, size = 1500): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

/** Files in path order (grouped by top-level directory), other entries in reverse order. */
export async function buildErofs(items: Item[], out: string, opts: ErofsOptions): Promise<ErofsResult> {
  const w = await ErofsWriter.create(out, opts);
  try {
    const sorted = [...items].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
    for (const it of [...sorted].reverse()) if (it.entry.type !== 'file') w.addEntry(it.entry);
    for (const it of sorted) if (it.entry.type === 'file') await w.addFile(it.entry, chunks(it.data!), it.entry.path.split('/')[0]!);
    return await w.finish();
  } catch (e) {
    await w.abort();
    throw e;
  }
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The fields of an entry a reader must give back, in one comparable line. */
export function describe(e: LayerEntry, sha?: string): string {
  const x = [...(e.xattrs ?? [])]
    .filter(([n]) => !n.startsWith('system.'))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([n, v]) => `${n}=${v.toString('hex')}`)
    .join(',');
  return [
    e.path, e.type, e.mode.toString(8), e.uid, e.gid, e.mtime, e.size, e.linkname ?? '', e.devmajor ?? '', e.devminor ?? '',
    x, e.acl?.access ?? '', e.acl?.default ?? '', sha ?? '',
  ].join('|');
}

/** What the corpus says each path is, as the reader should describe it (hard links: the first path in order is the file). */
export function expectedEntries(items: Item[]): string[] {
  const sorted = [...items].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
  const byPath = new Map(sorted.map((i) => [i.entry.path, i]));
  const firstOf = new Map<string, string>();
  const targets = new Set(sorted.filter((o) => o.entry.type === 'hardlink').map((o) => o.entry.linkname));
  const out: string[] = [];
  for (const it of sorted) {
    let e = it.entry;
    let data = it.data;
    if (e.type === 'hardlink' || (e.type === 'file' && targets.has(e.path))) {
      const target = e.type === 'hardlink' ? byPath.get(e.linkname!)! : it;
      const key = target.entry.path;
      const first = firstOf.get(key);
      if (first === undefined) {
        firstOf.set(key, e.path);
        e = { ...target.entry, path: e.path };
        data = target.data;
      } else {
        e = { ...target.entry, path: e.path, type: 'hardlink', linkname: first, size: 0 };
        data = undefined;
      }
    }
    out.push(describe(e, data ? sha256(data) : undefined));
  }
  return out;
}

/** The reader's view of the same, in walk order. */
export async function readerEntries(img: { walk(): AsyncIterable<ImageEntry>; openFile(e: ImageEntry): AsyncIterable<Buffer> }): Promise<string[]> {
  const out: string[] = [];
  for await (const e of img.walk()) {
    let sha: string | undefined;
    if (e.type === 'file') {
      const h = createHash('sha256');
      for await (const b of img.openFile(e)) h.update(b);
      sha = h.digest('hex');
    }
    out.push(describe(e, sha));
  }
  return out;
}

/** Lines only in `a` ('-') or only in `b` ('+'), at most 40: a short failure message for long listings. */
export function lineDiff(a: string[], b: string[]): string[] {
  const sb = new Set(b);
  const sa = new Set(a);
  const out = [...a.filter((l) => !sb.has(l)).map((l) => `- ${l}`), ...b.filter((l) => !sa.has(l)).map((l) => `+ ${l}`)];
  if (out.length === 0 && a.length !== b.length) out.push(`same lines, ${a.length} != ${b.length} of them`);
  if (out.length === 0 && a.some((l, i) => l !== b[i])) out.push('same lines in another order');
  return out.slice(0, 40);
}

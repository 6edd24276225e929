/**
 * compose/image/squashfs/writer.ts against the reference tools: an awkward tree is written once by
 * strata's writer (streamed from memory, non-file entries added in reverse order) and once
 * materialized on a tmpfs (which holds 60 KB xattrs, unlike ext4 without ea_inode) and packed
 * by mksquashfs. Checked with unsquashfs -lln (listing), sqfsdiff (contents + metadata),
 * unsquashfs -d extraction and a kernel mount, both compared with the materialized tree by
 * test/helpers/tree.ts (lstat, sha256, getfattr, hard-link groups). A corpus of identical
 * files checks that their content is stored once and still reads back right everywhere
 * (strata's reader and extractImage too), with the same bytes for any worker count or cache
 * state. Needs root.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import {
  chmodSync, existsSync, lchownSync, linkSync, lutimesSync, mkdirSync, openSync, readSync, closeSync,
  readdirSync, readFileSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { isStrataError } from '../store/errors.js';
import { comparePaths, type LayerEntry } from '../store/types.js';
import { SquashfsImage, SquashfsWriter, type SquashOptions } from '../compose/image/index.js';
import { extractImage } from '../compose/tree/image.js';
import { diffTrees } from './helpers/tree.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { noise } from './helpers/random.js';
import { assertWideLookups, wideFiles, WIDE_DIRS, WIDE_INSIDE } from './helpers/wide-dir.js';

interface Item {
  entry: LayerEntry;
  data?: Buffer;
}

const BS = 4096;
const T0 = 1_700_000_000;

function dir(path: string, extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: T0, size: 0, ...extra } };
}
function file(path: string, data: Buffer, extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T0 + 1, size: data.length, ...extra }, data };
}
function other(path: string, type: LayerEntry['type'], extra: Partial<LayerEntry> = {}): Item {
  return { entry: { path, type, mode: type === 'symlink' ? 0o777 : 0o640, uid: 0, gid: 0, mtime: T0 + 2, size: 0, ...extra } };
}

const BIG_VALUE = noise(60_000, 99);
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_raw+ep, v2

/** File heads of the three content kinds the fragment streams tell apart. */
const KIND_HEADS: Record<string, Buffer> = {
  text: Buffer.from('plain text\n'),
  elf: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]),
  gzip: Buffer.from([0x1f, 0x8b, 8, 0]),
};

/** The awkward corpus (block size 4096). */
function corpus(): Item[] {
  const items: Item[] = [dir('.', { mode: 0o755, mtime: T0 - 5 })];
  items.push(dir('sizes'));
  const sizes: Record<string, number> = { empty: 0, one: 1, 'bs-1': BS - 1, bs: BS, 'bs+1': BS + 1, '3bs': 3 * BS, '3bs+7': 3 * BS + 7 };
  let seed = 1;
  for (const [name, n] of Object.entries(sizes)) items.push(file(`sizes/${name}`, noise(n, seed++)));
  items.push(file('sizes/text', Buffer.from('compressible line of text\n'.repeat(700))));

  items.push(dir('holes'));
  const z = Buffer.alloc(BS);
  items.push(file('holes/sparse', Buffer.concat([noise(BS, 11), z, noise(BS, 12), z, z, noise(100, 13)])));
  items.push(file('holes/allzero', Buffer.alloc(3 * BS + 10)));

  items.push(dir('names'));
  for (const n of ['n'.repeat(255), 'a', 'B', 'a.b', 'a-b', 'é', 'Z', 'a b', '~']) items.push(file(`names/${n}`, Buffer.from(n)));

  items.push(dir('big', { mode: 0o750, uid: 7, gid: 8 }));
  for (let i = 0; i < 10_000; i++) {
    const name = `big/f${String(i).padStart(5, '0')}`;
    items.push(file(name, i % 3 === 0 ? Buffer.alloc(0) : Buffer.from(`content ${i}\n`), { mode: 0o600 + (i % 8) }));
  }

  items.push(dir('deep'));
  let p = 'deep';
  for (let i = 1; i <= 40; i++) {
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
  for (let i = 0; i < 300; i++) {
    items.push(file(`ids/f${String(i).padStart(3, '0')}`, Buffer.alloc(0), { uid: 10_000 + i, gid: 20_000 + i }));
  }

  items.push(dir('x', { xattrs: new Map([['user.dir', Buffer.from('on a dir')]]) }));
  items.push(file('x/big', Buffer.from('big user xattr\n'), { xattrs: new Map([['user.big', BIG_VALUE]]) }));
  items.push(file('x/big2', Buffer.from('same value, trusted\n'), {
    xattrs: new Map([['trusted.big', BIG_VALUE], ['user.small', Buffer.from([0, 0xff])]]),
  }));
  items.push(file('x/cap', Buffer.from('#!/bin/sh\n'), {
    mode: 0o755,
    xattrs: new Map([['security.capability', CAP], ['system.posix_acl_access', Buffer.from('ignored')]]),
  }));
  items.push(file('x/same-set', Buffer.from('same set as big\n'), { xattrs: new Map([['user.big', BIG_VALUE]]) }));
  items.push(other('x/sl', 'symlink', { linkname: 'cap', xattrs: new Map([['trusted.sym', Buffer.from('1')]]) }));
  items.push(other('x/dev', 'char', { devmajor: 1, devminor: 3, xattrs: new Map([['trusted.dev', Buffer.from('d')]]) }));
  items.push(other('x/fifo', 'fifo', { xattrs: new Map([['trusted.fifo', Buffer.alloc(0)]]) }));

  items.push(dir('dev'));
  items.push(other('dev/null', 'char', { devmajor: 1, devminor: 3, mode: 0o666 }));
  items.push(other('dev/loop', 'block', { devmajor: 7, devminor: 0 }));
  items.push(other('dev/bigminor', 'char', { devmajor: 4000, devminor: 300_000 }));
  items.push(other('dev/fifo', 'fifo', { uid: 5, gid: 6 }));

  items.push(dir('modes'));
  items.push(file('modes/setuid', Buffer.from('u'), { mode: 0o4755 }));
  items.push(file('modes/none', Buffer.from('n'), { mode: 0 }));
  items.push(dir('modes/setgid', { mode: 0o2775 }));
  items.push(dir('modes/sticky', { mode: 0o1777 }));

  // Tails of every fragment stream (compose/image/squashfs/data.ts, fragmentStream), the kinds
  // interleaved in path order. Tails of larger files are longer, so their streams' blocks fill
  // sooner: the data area holds fragment blocks out of index order.
  items.push(dir('kinds'));
  for (let i = 0; i < 24; i++) {
    for (const [k, [kind, head]] of Object.entries(KIND_HEADS).entries()) {
      for (const big of [false, true]) {
        const body = noise((big ? 2 * BS + 1500 : 300) + (i % 5), 5000 + i * 8 + (big ? 4 : 0) + k);
        head.copy(body);
        items.push(file(`kinds/${String(i).padStart(2, '0')}-${kind}-${big ? 'big' : 'small'}`, body));
      }
    }
  }

  items.push(dir('sym'));
  items.push(other('sym/rel', 'symlink', { linkname: '../sizes/one' }));
  items.push(other('sym/dangling', 'symlink', { linkname: 'no/where' }));
  items.push(other('sym/long', 'symlink', { linkname: 'l'.repeat(1000) }));
  return items;
}

/**
 * Identical content in every shape (block size 4096), in three groups a, b, z (squash() writes
 * in path order, one group per top-level directory). `copies: false` leaves out every file
 * whose content an earlier file already has, so the two images differ by those inodes only.
 */
function dupCorpus(copies = true): Item[] {
  const multi = noise(3 * BS + 100, 41);
  const tail = Buffer.from('Copyright (c) 2026 the strata tests\nAll rights reserved.\n');
  const near = noise(2 * BS + 50, 42);
  const small = noise(300, 43);
  const z = Buffer.alloc(BS);
  const holes = Buffer.concat([noise(BS, 44), z, z, noise(BS, 45), noise(10, 46)]);
  const exact = noise(2 * BS, 47);
  const linked = Buffer.from('hard linked content\n');
  const big = noise(64 * BS, 48);
  const lastByte = (b: Buffer) => Buffer.concat([b.subarray(0, -1), Buffer.from([b.at(-1)! ^ 1])]);
  const items: Item[] = [dir('.'), dir('a'), dir('b'), dir('z')];
  const first: [string, Buffer][] = [
    ['a/big', big], ['a/empty1', Buffer.alloc(0)], ['a/exact1', exact], ['a/holes1', holes], ['a/linked', linked],
    ['a/multi1', multi], ['a/near1', near], ['a/near2', lastByte(near)], ['a/small1', small], ['a/small2', lastByte(small)],
    ['a/tail1', tail], ['a/zeros1', Buffer.alloc(2 * BS + 5)],
  ];
  const again: [string, Buffer][] = [
    ['a/empty2', Buffer.alloc(0)], ['a/multi2', multi], ['a/tail2', tail], ['a/zeros2', Buffer.alloc(2 * BS + 5)],
    ['b/exact2', exact], ['b/holes2', holes], ['b/linked-copy', linked], ['b/multi3', multi], ['b/tail3', tail],
    ['z/last', big], // the last file written: its blocks went past where the image ends
  ];
  // (one xattr: on a mount of an image without any, listxattr fails, and the snapshot needs it)
  const xattrs = new Map([['user.k', Buffer.from('v')]]);
  for (const [p, data] of [...first, ...(copies ? again : [])]) items.push(file(p, data, p === 'a/linked' ? { xattrs } : {}));
  items.push(other('a/linked-hl', 'hardlink', { linkname: 'a/linked' }));
  return items;
}

/** Writes the items as a real tree under `root` (exists, empty). Root only. */
function materialize(items: Item[], root: string): void {
  const sorted = [...items].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
  const abs = (p: string) => (p === '.' ? root : join(root, p));
  const xattrDump: string[] = [];
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
        break; // after every target exists
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
    const xs = [...(e.xattrs ?? [])].filter(([n]) => !n.startsWith('system.'));
    if (xs.length) {
      xattrDump.push(`# file: ${e.path}`);
      for (const [n, v] of xs) xattrDump.push(v.length ? `${n}=0x${v.toString('hex')}` : `${n}=""`);
      xattrDump.push('');
    }
  }
  for (const { entry: e } of sorted) if (e.type === 'hardlink') linkSync(abs(e.linkname!), abs(e.path));
  if (xattrDump.length) {
    writeFileSync(join(root, '..', 'xattrs.dump'), xattrDump.join('\n') + '\n');
    mustRun('setfattr', ['-h', `--restore=${join(root, '..', 'xattrs.dump')}`], { cwd: root });
  }
  for (const { entry: e } of sorted.reverse()) {
    if (e.type !== 'hardlink') lutimesSync(abs(e.path), e.mtime, e.mtime);
  }
}

async function* chunks(b: Buffer, size = 1500): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

/** Files in path order (grouped by top-level directory), other entries in reverse order. */
async function squash(items: Item[], out: string, opts: SquashOptions): Promise<Awaited<ReturnType<SquashfsWriter['finish']>>> {
  const w = await SquashfsWriter.create(out, opts);
  const sorted = [...items].sort((a, b) => comparePaths(a.entry.path, b.entry.path));
  for (const it of [...sorted].reverse()) if (it.entry.type !== 'file') w.addEntry(it.entry);
  for (const it of sorted) if (it.entry.type === 'file') await w.addFile(it.entry, chunks(it.data!), it.entry.path.split('/')[0]!);
  return w.finish();
}

/** unsquashfs -lln without directory sizes (listing layouts legitimately differ). */
function listing(image: string): string[] {
  const out = mustRun('unsquashfs', ['-lln', '-d', 'R', image]).stdout.toString('utf8');
  return out.split('\n').filter((l) => l.includes(' R')).map((l) => (l.startsWith('d') ? l.replace(/^(\S+ \S+)\s+\d+/, '$1 -') : l));
}

function mountImage(image: string, at: string): void {
  mkdirSync(at, { recursive: true });
  mustRun('mount', ['-t', 'squashfs', '-o', 'loop,ro', image, at]);
}

/**
 * NFS-style access through the export table: takes a file handle (name_to_handle_at) of every
 * path, drops the dentry/inode caches, reopens each handle (open_by_handle_at, which makes
 * squashfs resolve the inode number through the export table) and compares fstat with the
 * lstat taken before. Python's ctypes reaches the two syscalls; prints "<count> <bad>".
 */
const HANDLE_CHECK = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class FH(ctypes.Structure):
    _fields_ = [('handle_bytes', ctypes.c_uint), ('handle_type', ctypes.c_int), ('f_handle', ctypes.c_ubyte * 128)]
mnt = sys.argv[1]
paths = [mnt]
for root, dirs, files in os.walk(mnt):
    paths += [os.path.join(root, n) for n in dirs + files]
def key(st):
    return (st.st_ino, st.st_mode, st.st_size, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink, st.st_rdev)
handles = []
for p in paths:
    fh = FH(); fh.handle_bytes = 128; mid = ctypes.c_int()
    if libc.name_to_handle_at(-100, p.encode(), ctypes.byref(fh), ctypes.byref(mid), 0) != 0:
        sys.exit('name_to_handle_at %s: %s' % (p, os.strerror(ctypes.get_errno())))
    handles.append((p, fh, key(os.lstat(p))))
mfd = os.open(mnt, os.O_RDONLY)
with open('/proc/sys/vm/drop_caches', 'w') as f:
    f.write('2')
bad = 0
for p, fh, want in handles:
    fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_PATH)
    if fd < 0:
        print('open_by_handle_at', p, os.strerror(ctypes.get_errno()), file=sys.stderr); bad += 1; continue
    got = key(os.fstat(fd)); os.close(fd)
    if got != want:
        print('mismatch', p, want, got, file=sys.stderr); bad += 1
print(len(handles), bad)
`;

const Writer = suite('squashfs writer vs reference tools');
let tmp = '';

Writer.before.each(() => {
  tmp = tempDir('strata-sqw-');
  mustRun('mount', ['-t', 'tmpfs', '-o', 'size=1g', 'tmpfs', tmp]);
});

Writer.after.each(() => {
  for (const m of ['mnt', 'mnt2']) if (existsSync(join(tmp, m))) unmount(join(tmp, m));
  unmount(tmp);
  removeDir(tmp);
});

/**
 * The reference readers agree that `ours` holds `tree`: unsquashfs -lln lists what it lists for
 * mksquashfs's image of the tree, sqfsdiff finds them equal, and unsquashfs -d and a kernel
 * mount give the tree back. Returns the mount point for further checks.
 */
function assertHoldsTree(ours: string, tree: string): string {
  const theirs = join(tmp, 'theirs.sqfs');
  mustRun('mksquashfs', [tree, theirs, '-noappend', '-no-progress', '-quiet', '-b', String(BS), '-comp', 'gzip']);
  assert.equal(listing(ours), listing(theirs), 'unsquashfs -lln listings');
  // (unsquashfs 4.5 prints minors > 255 oddly; the kernel mount checks 4000:300000.)
  const diff = run('sqfsdiff', ['-T', '-a', ours, '-b', theirs]);
  assert.is(diff.code, 0, `sqfsdiff:\n${diff.stdout.toString()}${diff.stderr}`);
  const ex = join(tmp, 'ex');
  const u = run('unsquashfs', ['-no-progress', '-d', ex, ours]);
  assert.is(u.code, 0, u.stderr);
  assert.equal(diffTrees(tree, ex), [], 'unsquashfs -d extraction');
  const mnt = join(tmp, 'mnt');
  mountImage(ours, mnt);
  assert.equal(diffTrees(tree, mnt), [], 'kernel mount');
  return mnt;
}

Writer('awkward corpus: listing, sqfsdiff, extraction and kernel mount match the tree', async () => {
  const items = corpus();
  const tree = join(tmp, 'tree');
  mkdirSync(tree);
  materialize(items, tree);

  const ours = join(tmp, 'ours.sqfs');
  const r = await squash(items, ours, { compressor: 'gzip', blockSize: BS, workers: 2 });
  const fileNodes = items.filter((i) => i.entry.type !== 'hardlink').length;
  assert.is(r.inodes, fileNodes, 'one inode per non-hardlink entry');
  assert.is(r.bytes % 4096, 0);
  assert.is(statSync(ours).size, r.bytes);
  assert.is(r.cacheHits + r.cacheMisses, 0, 'no cache configured');

  assert.is(listing(ours).length, items.length);
  const mnt = assertHoldsTree(ours, tree);
  const h = run('python3', ['-c', HANDLE_CHECK, mnt]);
  assert.is(h.code, 0, h.stderr);
  assert.is(h.stdout.toString().trim(), `${items.length} 0`, `export table: ${h.stderr.slice(0, 2000)}`);
  // Lookups through the directory index of the 10 000-entry directory.
  for (const n of ['f00000', 'f00001', 'f04567', 'f09998', 'f09999']) assert.ok(existsSync(join(mnt, 'big', n)), n);
  for (const n of ['f', 'f0', 'f10000', 'f04567x', 'e', 'g']) assert.not.ok(existsSync(join(mnt, 'big', n)), n);
  assert.is(readdirSync(join(mnt, 'big')).length, 10_000);
  assert.is(statSync(mnt).nlink, 2 + items.filter((i) => i.entry.type === 'dir' && !i.entry.path.includes('/') && i.entry.path !== '.').length);
  assert.is(statSync(join(mnt, 'deep/d1')).nlink, 3);
  assert.is(statSync(join(mnt, 'modes')).nlink, 4);
  // Block lists as squashfs-tools-ng reads them: holes are size 0, noise is stored raw.
  const stat = (p: string) => mustRun('rdsquashfs', ['-s', `/${p}`, ours]).stdout.toString();
  const sparse = stat('holes/sparse');
  assert.match(sparse, /Block #0 size: 4096 \(uncompressed\)\n\s+Block #1 size: 0 \(compressed\)\n\s+Block #2 size: 4096 \(uncompressed\)\n\s+Block #3 size: 0 \(compressed\)\n\s+Block #4 size: 0 \(compressed\)/);
  assert.match(stat('holes/allzero'), /Block #0 size: 0 \(compressed\)\n\s+Block #1 size: 0 \(compressed\)\n\s+Block #2 size: 0 \(compressed\)/);
  assert.match(stat('sizes/text'), /Block #0 size: \d{2,3} \(compressed\)/);
  assert.match(stat('sizes/bs'), /Fragment index: 0xFFFFFFFF/);
  assert.match(stat('big'), /Inode type: extended directory/);
  // Each fragment block holds tails of one stream only, and every stream filled several.
  const streamOf = new Map<number, string>();
  const blocksOf = new Map<string, Set<number>>();
  for (const it of items.filter((x) => x.entry.path.startsWith('kinds/') && x.entry.type === 'file')) {
    const index = Number(/Fragment index: (0x[0-9A-F]+)/.exec(stat(it.entry.path))![1]);
    const stream = it.entry.path.slice('kinds/00-'.length);
    assert.is(streamOf.get(index) ?? stream, stream, `fragment ${index} holds ${stream} and ${streamOf.get(index)}`);
    streamOf.set(index, stream);
    blocksOf.set(stream, (blocksOf.get(stream) ?? new Set()).add(index));
  }
  assert.is(blocksOf.size, 6);
  for (const [stream, blocks] of blocksOf) assert.ok(blocks.size >= 2, `${stream}: ${blocks.size} fragment blocks`);
  assert.is(statSync(join(mnt, 'links/a')).ino, statSync(join(mnt, 'links/sub/c')).ino);
  assert.is(statSync(join(mnt, 'links/a')).nlink, 3);
});

Writer('identical files are stored once; every reader sees the tree; same bytes for any workers and cache', async () => {
  const items = dupCorpus();
  const tree = join(tmp, 'tree');
  mkdirSync(tree);
  materialize(items, tree);
  const ours = join(tmp, 'ours.sqfs');
  const opts: SquashOptions = { compressor: 'gzip', blockSize: BS, workers: 2 };
  const r = await squash(items, ours, opts);

  // Same bytes: 1 or 2 workers, no cache, cold cache, warm cache.
  const cache = join(tmp, 'cache');
  const digests = [r.sha256];
  for (const [i, o] of ([{ workers: 1 }, { workers: 2, cacheDir: cache }, { workers: 1, cacheDir: cache }, { workers: 2, cacheDir: cache }] as const).entries()) {
    const again = await squash(items, join(tmp, `again${i}.sqfs`), { ...opts, ...o });
    if (i === 3) assert.is(again.cacheMisses, 0, 'warm cache');
    digests.push(again.sha256);
  }
  assert.equal(new Set(digests).size, 1, digests.join('\n'));

  // The image holds the tree, for every reader.
  assertHoldsTree(ours, tree);
  const img = await SquashfsImage.open(ours);
  try {
    for (const it of items) if (it.data) assert.ok((await img.readFile(it.entry.path)).equals(it.data), `strata's reader: ${it.entry.path}`);
    await extractImage(img, join(tmp, 'strata-ex'));
  } finally {
    await img.close();
  }
  assert.equal(diffTrees(tree, join(tmp, 'strata-ex')), [], 'extractImage (strata unsquash)');
  assert.match(mustRun('unsquashfs', ['-s', ours]).stdout.toString(), /Duplicates are removed/);

  // Where each file's data is, as squashfs-tools-ng reads the inodes: a copy points at the
  // first file's blocks and tail; a file differing in its last byte shares only its blocks.
  const where = (p: string) => {
    const s = mustRun('rdsquashfs', ['-s', `/${p}`, ours]).stdout.toString();
    const field = (name: string) => new RegExp(`${name}: (\\S+)`).exec(s)![1]!;
    return { start: field('Blocks start'), frag: `${field('Fragment index')}@${field('Fragment offset')}`, blocks: s.split('\n').filter((l) => l.includes('Block #')).join('\n') };
  };
  for (const [a, b] of [['a/multi1', 'a/multi2'], ['a/multi1', 'b/multi3'], ['a/tail1', 'a/tail2'], ['a/tail1', 'b/tail3'], ['a/holes1', 'b/holes2'], ['a/exact1', 'b/exact2'], ['a/zeros1', 'a/zeros2'], ['a/linked', 'b/linked-copy'], ['a/big', 'z/last']]) {
    assert.equal(where(b!), where(a!), `${b} uses ${a}'s data`);
  }
  assert.match(where('b/holes2').blocks, /Block #1 size: 0 .*\n.*Block #2 size: 0 /, 'holes stay holes');
  const [n1, n2, s1, s2] = ['a/near1', 'a/near2', 'a/small1', 'a/small2'].map(where);
  assert.equal([n2!.start, n2!.blocks], [n1!.start, n1!.blocks], 'same full blocks, shared');
  assert.is.not(n2!.frag, n1!.frag, 'another last byte: a tail of its own');
  assert.is.not(s2!.frag, s1!.frag, 'tail-only files differing in the last byte');

  // Size: the copies (over 300 KB of incompressible data) cost only their inodes and names.
  const uniq = await squash(dupCorpus(false), join(tmp, 'uniq.sqfs'), opts);
  const used = (f: string) => Number(readFileSync(f).readBigUInt64LE(40));
  const copyBytes = items.filter((i) => i.data).reduce((t, i) => t + i.data!.length, 0) - dupCorpus(false).filter((i) => i.data).reduce((t, i) => t + i.data!.length, 0);
  assert.ok(copyBytes > 300_000);
  assert.ok(used(ours) - used(join(tmp, 'uniq.sqfs')) < 2048, `copies of ${copyBytes} bytes grew the image by ${used(ours) - used(join(tmp, 'uniq.sqfs'))} bytes`);
  assert.ok(uniq.bytes <= r.bytes);
  // z/last's blocks were written, then dropped: the image ends at bytes_used, zeros after.
  const bytes = readFileSync(ours);
  assert.is(bytes.length, Math.ceil(used(ours) / 4096) * 4096);
  assert.ok(bytes.subarray(used(ours)).equals(Buffer.alloc(bytes.length - used(ours))), 'the padding is zeros');
  assert.is(createHash('sha256').update(bytes).digest('hex'), r.sha256);
});

Writer('a file larger than 4 GiB (holes, tail past 2^32) streams in bounded memory', async () => {
  const size = 2 ** 32 + 3 * 65536 + 123;
  const tailData = noise(2 * 65536 + 123, 5);
  const zero = Buffer.alloc(1 << 20);
  async function* content(): AsyncIterable<Uint8Array> {
    const zeros = size - tailData.length;
    for (let done = 0; done < zeros; ) {
      const n = Math.min(zero.length, zeros - done);
      yield zero.subarray(0, n);
      done += n;
    }
    yield tailData;
  }
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const img = join(tmp, 'large.sqfs');
  const w = await SquashfsWriter.create(img, { compressor: 'zstd', level: 3, blockSize: 65536, workers: 2 });
  w.addEntry(dir('.').entry);
  await w.addFile({ path: 'huge', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T0, size }, content(), 'g');
  const r = await w.finish();
  clearInterval(timer);
  assert.ok(peak - rss0 < 96 * 2 ** 20, `RSS grew by ${Math.round((peak - rss0) / 2 ** 20)} MiB while streaming 4 GiB`);
  assert.ok(r.bytes < 1 << 20, 'holes take no space');
  const l = mustRun('unsquashfs', ['-lln', img]).stdout.toString();
  assert.match(l, new RegExp(`-rw-r--r-- 0/0\\s+${size} `));
  const mnt = join(tmp, 'mnt');
  mountImage(img, mnt);
  assert.is(statSync(join(mnt, 'huge')).size, size);
  const fd = openSync(join(mnt, 'huge'), 'r');
  try {
    const got = Buffer.alloc(tailData.length);
    assert.is(readSync(fd, got, 0, got.length, size - tailData.length), tailData.length);
    assert.ok(got.equals(tailData), 'bytes past 4 GiB');
    const mid = Buffer.alloc(4096, 1);
    readSync(fd, mid, 0, mid.length, 2 ** 31 + 12345);
    assert.ok(mid.equals(Buffer.alloc(4096)), 'a hole reads as zeros');
  } finally {
    closeSync(fd);
  }
});

/** Runs `fn` with every sorter's budget at `bytes` (the writer's sorters read it when made). */
async function withBudget<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
  const before = process.env.STRATA_MEMORY_BUDGET;
  process.env.STRATA_MEMORY_BUDGET = String(bytes);
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.STRATA_MEMORY_BUDGET;
    else process.env.STRATA_MEMORY_BUDGET = before;
  }
}

Writer('hard links through spill files: targets before and after their links, links to links; faults name the first link added', async () => {
  // (An image without xattrs refuses getfattr on a kernel mount: one xattr keeps the checks.)
  const items: Item[] = [dir('.', { mtime: T0 }), dir('a', { xattrs: new Map([['user.note', Buffer.from('links')]]) }), dir('b'), dir('c')];
  for (let i = 0; i < 400; i++) {
    const name = `f${String(i).padStart(3, '0')}`;
    items.push(file(`b/${name}`, Buffer.from(`content ${i % 50}\n`), { uid: i % 3 }));
    items.push(other(`c/${name}`, 'hardlink', { linkname: `b/${name}` }));
    if (i % 3 === 0) items.push(other(`a/${name}`, 'hardlink', { linkname: `b/${name}` })); // sorts before its target
    if (i % 7 === 0) items.push(other(`c/${name}-2`, 'hardlink', { linkname: `c/${name}` })); // names a link
  }
  const tree = join(tmp, 'tree');
  mkdirSync(tree);
  materialize(items, tree);
  const opts: SquashOptions = { compressor: 'gzip', blockSize: BS, workers: 1 };
  const spilled = join(tmp, 'spilled.sqfs');
  // About ten records a run: the links, their targets and the entries all go through run files.
  const r = await withBudget(2048, () => squash(items, spilled, opts));
  assert.is(r.inodes, 4 + 400, 'one inode per group');
  const held = join(tmp, 'held.sqfs');
  await squash(items, held, opts);
  assert.ok(readFileSync(spilled).equals(readFileSync(held)), 'the same bytes spilled as held in memory');
  assertHoldsTree(spilled, tree);
  unmount(join(tmp, 'mnt'));

  const fails = async (links: Array<[string, string]>, message: string) => {
    await withBudget(2048, async () => {
      const w = await SquashfsWriter.create(join(tmp, 'bad.sqfs'), opts);
      w.addEntry(dir('b').entry);
      for (let i = 0; i < 100; i++) await w.addFile(file(`b/${i}`, Buffer.from('x')).entry, chunks(Buffer.from('x')), 'g');
      for (let i = 0; i < 100; i++) w.addEntry(other(`b/${i}-l`, 'hardlink', { linkname: `b/${i}` }).entry);
      for (const [path, linkname] of links) w.addEntry(other(path, 'hardlink', { linkname }).entry);
      try {
        await w.finish();
        assert.unreachable(`${message}: no error`);
      } catch (e) {
        assert.ok(isStrataError(e, 'ERR_IMAGE_INPUT'), String(e));
        assert.is((e as Error).message, message);
      }
    });
  };
  await fails([['b/z', 'b/nope'], ['b/a', 'b/gone'], ['b/y', 'b']], 'hard link b/z points at b/nope, which is not in the image');
  await fails([['b/z', 'b/y'], ['b/x', 'b/y'], ['b/y', 'b']], 'hard link b/z points at b/y, which is not in the image');
  await fails([['b/z', 'b/1-l'], ['b/a', 'b/l1'], ['b/l1', 'b/l2'], ['b/l2', 'b/l1']], 'hard link loop at b/a');
});

Writer('a directory of 9,000 names: its listing through spill files, the same bytes as held, and every reader finds each name', async () => {
  // Past 4,096 children an open directory's go through a queue that spills (shared/wide-list.ts);
  // with a tiny budget its runs go to disk. Names of different lengths and inode blocks make
  // many runs, and a listing of about 200 KB many index entries.
  const items: Item[] = [dir('.', { mtime: T0, xattrs: new Map([['user.note', Buffer.from('wide')]]) }), dir('w'), ...WIDE_DIRS.map((d) => dir(d))];
  for (const [path, data] of [...wideFiles(), WIDE_INSIDE]) items.push(file(path, data));
  const tree = join(tmp, 'tree');
  mkdirSync(tree);
  materialize(items, tree);
  const opts: SquashOptions = { compressor: 'gzip', blockSize: BS, workers: 1 };
  const spilled = join(tmp, 'spilled.sqfs');
  await withBudget(4096, () => squash(items, spilled, opts));
  const held = join(tmp, 'held.sqfs');
  await squash(items, held, opts);
  assert.ok(readFileSync(spilled).equals(readFileSync(held)), 'the same bytes spilled as held in memory');
  const mnt = assertHoldsTree(spilled, tree);
  await assertWideLookups(mnt, await SquashfsImage.open(spilled));
});

Writer('missing root gets 0755 root:root mtime 0; zstd image mounts', async () => {
  const img = join(tmp, 'z.sqfs');
  const w = await SquashfsWriter.create(img, { compressor: 'zstd', workers: 1, mkfsTime: 1234 });
  w.addEntry(dir('d', { uid: 3, gid: 4 }).entry);
  await w.addFile(file('d/f', Buffer.from('zstd data\n'.repeat(1000))).entry, chunks(Buffer.from('zstd data\n'.repeat(1000))), 'l1');
  await w.finish();
  const s = mustRun('unsquashfs', ['-s', img]).stdout.toString();
  assert.match(s, /Compression zstd/);
  const lines = mustRun('unsquashfs', ['-lln', img]).stdout.toString();
  assert.match(lines, /drwxr-xr-x 0\/0\s+\d+ 1970-01-01 00:00 squashfs-root\n/);
  const mnt = join(tmp, 'mnt');
  mountImage(img, mnt);
  const st = statSync(mnt);
  assert.is(st.mode & 0o7777, 0o755);
  assert.is(st.mtimeMs, 0);
  assert.is(mustRun('cat', [join(mnt, 'd/f')]).stdout.toString(), 'zstd data\n'.repeat(1000));

  // A non-default gzip level writes compressor options after the superblock.
  const g = join(tmp, 'g.sqfs');
  const wg = await SquashfsWriter.create(g, { compressor: 'gzip', level: 1, workers: 1 });
  await wg.addFile(file('f', Buffer.from('gzip 1\n'.repeat(999))).entry, chunks(Buffer.from('gzip 1\n'.repeat(999))), 'l1');
  await wg.finish();
  assert.match(mustRun('unsquashfs', ['-s', g]).stdout.toString(), /compression-level 1/);
  const mnt2 = join(tmp, 'mnt2');
  mountImage(g, mnt2);
  assert.is(mustRun('cat', [join(mnt2, 'f')]).stdout.toString(), 'gzip 1\n'.repeat(999));
});

Writer('lz4 (our own block compressor): extraction, sqfsdiff and kernel mount match', async () => {
  const pattern = Buffer.alloc(70_000);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i % 7) * 3 + (i % 300 === 0 ? 1 : 0);
  const items: Item[] = [
    dir('.'),
    // (one xattr: on a mount of an image without any, listxattr fails with EOPNOTSUPP, as
    // it does for mksquashfs images, and the tree snapshot needs getfattr)
    file('text', Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(5000)), {
      xattrs: new Map([['user.k', Buffer.from('v')]]),
    }),
    file('noise', noise(10_000, 3)),
    file('run', Buffer.alloc(300_000, 0x61)),
    file('pattern', pattern),
    file('tiny', Buffer.from('0123456789ab')),
    file('thirteen', Buffer.from('aaaaaaaaaaaaa')),
    file('mixed', Buffer.concat([noise(5000, 4), Buffer.alloc(9000, 7), noise(3, 5), Buffer.from('abcabcabcabcabcabcabc')])),
  ];
  const tree = join(tmp, 'tree');
  mkdirSync(tree);
  materialize(items, tree);
  const ours = join(tmp, 'lz4.sqfs');
  await squash(items, ours, { compressor: 'lz4', blockSize: 65536, workers: 2 });
  assert.match(mustRun('unsquashfs', ['-s', ours]).stdout.toString(), /Compression lz4/);
  const theirs = join(tmp, 'theirs.sqfs');
  mustRun('mksquashfs', [tree, theirs, '-noappend', '-no-progress', '-quiet', '-b', '65536', '-comp', 'lz4']);
  const diff = run('sqfsdiff', ['-T', '-a', ours, '-b', theirs]);
  assert.is(diff.code, 0, `sqfsdiff:\n${diff.stdout.toString()}${diff.stderr}`);
  const ex = join(tmp, 'ex');
  const u = run('unsquashfs', ['-no-progress', '-d', ex, ours]);
  assert.is(u.code, 0, u.stderr);
  assert.equal(diffTrees(tree, ex), []);
  const mnt = join(tmp, 'mnt');
  mountImage(ours, mnt);
  assert.equal(diffTrees(tree, mnt), []);
  assert.ok(statSync(ours).size < 200_000, 'lz4 actually compresses');
});

Writer('usage errors: missing parent, bad options, wrong size, duplicate; abort removes output', async () => {
  const expectUsage = async (fn: () => Promise<unknown>, what: string) => {
    try {
      await fn();
    } catch (e) {
      assert.ok(isStrataError(e, 'ERR_IMAGE_INPUT') || isStrataError(e, 'ERR_IMAGE_OPTIONS'), `${what}: ${String(e)}`);
      return;
    }
    assert.unreachable(`${what}: no error`);
  };
  const out = join(tmp, 'e.sqfs');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'xz' }), 'xz');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'lz4', level: 9 }), 'lz4 level');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'gzip', level: 10 }), 'gzip level 10');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'zstd', level: 0 }), 'zstd level 0');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'gzip', blockSize: 3000 }), 'block size');
  await expectUsage(() => SquashfsWriter.create(out, { compressor: 'gzip', blockSize: 2 * 1048576 }), 'block size');

  let w = await SquashfsWriter.create(out, { compressor: 'gzip', workers: 1 });
  w.addEntry(dir('a/b').entry);
  await expectUsage(() => w.finish(), 'missing parent');
  assert.equal(readdirSync(tmp).filter((n) => n.startsWith('e.sqfs') || n.startsWith('.strata-tmp-')), [], 'failed finish leaves nothing');

  w = await SquashfsWriter.create(out, { compressor: 'gzip', workers: 1 });
  await expectUsage(() => w.addFile(file('f', Buffer.alloc(10)).entry, chunks(Buffer.alloc(9)), 'g'), 'short content');
  await w.abort();
  // The entry list streams (it may be on disk), so the tree is checked when it is read back.
  w = await SquashfsWriter.create(out, { compressor: 'gzip', workers: 1 });
  w.addEntry(dir('d').entry);
  w.addEntry(dir('d').entry);
  await expectUsage(() => w.finish(), 'duplicate');
  w = await SquashfsWriter.create(out, { compressor: 'gzip', workers: 1 });
  w.addEntry(other('h', 'hardlink', { linkname: 'nope' }).entry);
  await expectUsage(() => w.finish(), 'dangling hard link');

  w = await SquashfsWriter.create(out, { compressor: 'gzip', workers: 2 });
  await w.addFile(file('f', noise(100_000, 1)).entry, chunks(noise(100_000, 1)), 'g');
  assert.ok(readdirSync(tmp).some((n) => n.startsWith('.strata-tmp-')), 'partial output exists while writing');
  await w.abort();
  assert.equal(readdirSync(tmp).filter((n) => n.startsWith('e.sqfs') || n.startsWith('.strata-tmp-')), [], 'abort removes the partial output');
});

Writer.run();

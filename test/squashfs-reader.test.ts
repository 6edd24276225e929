/**
 * compose/image/squashfs reader and the extractor against images made by the reference mksquashfs
 * (squashfs-tools), checked with the reference unsquashfs and with the source tree itself:
 * - walk()/stat()/readFile()/openFile() against the source tree (lstat, getfattr, sha256)
 *   and against `unsquashfs -lln` (paths, order, types, modes, owners, sizes, devices), for
 *   gzip, zstd, lz4 (and HC), xz (and x86 BCJ), uncompressed tables, 4 KiB / 128 KiB / 1 MiB
 *   blocks, tail ends, no fragments, no sparse detection, no duplicates;
 * - images written by strata's own SquashfsWriter read back entry for entry;
 * - extractImage() against `unsquashfs -d` (snapshots: content, modes, owners, mtimes,
 *   hard links, devices, xattrs incl. trusted.* and security.capability), as root and as an
 *   unprivileged user (what it may not do is skipped and counted);
 * - seeded corruption (byte flips per table, truncations, a directory cycle, bad names, a
 *   bad directory index): every outcome is success or a one-line ERR_IMAGE_CORRUPT /
 *   ERR_IMAGE_UNSUPPORTED, never another exception, a hang or a runaway walk.
 * Needs root (devices, foreign owners, trusted.* xattrs), mksquashfs/unsquashfs, setcap,
 * setfattr, setpriv, python3 (to make a socket).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import {
  chmodSync, chownSync, copyFileSync, linkSync, lutimesSync, mkdirSync, readFileSync, symlinkSync, truncateSync,
  utimesSync, writeFileSync, readdirSync, lstatSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SquashfsImage, type ImageEntry } from '../compose/image/index.js';
import { checkPath, extractImage } from '../compose/tree/image.js';
import { SquashfsWriter } from '../compose/image/index.js';
import { decodeSuperblock } from '../compose/image/squashfs/superblock.js';
import { isStrataError } from '../store/errors.js';
import { COMPOSE_ERR } from '../compose/errors.js';
import { IMAGE_ERR } from '../compose/image/errors.js';
import { assertNotACrash } from './helpers/cli.js';
import { tempDir, removeDir, mustRun, run } from './helpers/tmp.js';
import { nobody, runAs } from './helpers/users.js';
import { snapshotTree, diffTrees, type TreeSnapshot } from './helpers/tree.js';
import { seeded } from './helpers/random.js';

const BS = 4096;
const MTIME = 1_600_000_000;

/** A tree with one of everything SquashFS stores. */
function makeTree(root: string): void {
  const w = (p: string, data: string | Buffer) => writeFileSync(join(root, p), data);
  mkdirSync(join(root, 'd/sub/deeper'), { recursive: true });
  w('empty', '');
  w('small.txt', 'hello squashfs\n');
  w('exact-block', Buffer.alloc(BS, 7));
  const multi = Buffer.alloc(BS * 3 + 1234);
  for (let i = 0; i < multi.length; i++) multi[i] = (i * 31 + (i >> 9)) & 0xff;
  w('multi.bin', multi);
  w('dup-of-multi.bin', multi);
  w('d/sub/deeper/note', 'deep\n');
  chownSync(join(root, 'd/sub/deeper/note'), 1234, 5678);
  chownSync(join(root, 'd/sub'), 4_000_000_000, 3_000_000);
  // Random bytes do not compress: stored-uncompressed blocks.
  w('random.bin', createHash('sha512').update('seed').digest().toString('hex').repeat(200));
  // Sparse: a hole of 5 blocks, data, a hole at the end.
  const sp = join(root, 'sparse');
  writeFileSync(sp, '');
  truncateSync(sp, BS * 5);
  writeFileSync(sp, 'middle', { flag: 'a' });
  truncateSync(sp, BS * 9 + 100);
  w('hard-a', 'linked content\n');
  linkSync(join(root, 'hard-a'), join(root, 'hard-b'));
  linkSync(join(root, 'hard-a'), join(root, 'd/hard-c'));
  symlinkSync('small.txt', join(root, 'link'));
  symlinkSync('/does/not/exist', join(root, 'dangling'));
  symlinkSync('x'.repeat(1000), join(root, 'long-target'));
  mustRun('mknod', [join(root, 'chr'), 'c', '1', '3']);
  linkSync(join(root, 'chr'), join(root, 'chr-link'));
  mustRun('mknod', [join(root, 'blk'), 'b', '259', '70000']);
  mustRun('mkfifo', [join(root, 'fifo')]);
  mustRun('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', join(root, 'sock')]);
  w('n'.repeat(255), 'long name\n');
  mkdirSync(join(root, 'D'.repeat(255)));
  w(`${'D'.repeat(255)}/${'f'.repeat(255)}`, 'long path\n');
  // Modes and owners.
  w('setuid', '#!/bin/sh\n');
  chmodSync(join(root, 'setuid'), 0o4755);
  mkdirSync(join(root, 'sticky'));
  chmodSync(join(root, 'sticky'), 0o1777);
  mkdirSync(join(root, 'ro-dir'));
  w('ro-dir/inside', 'x');
  chmodSync(join(root, 'ro-dir'), 0o555);
  // Many ids: 1100 uids + 1100 gids > 2048, so the id table spans two metadata blocks.
  mkdirSync(join(root, 'owners'));
  for (let i = 0; i < 1100; i++) {
    const p = join(root, 'owners', `o${i}`);
    writeFileSync(p, '');
    chownSync(p, 10_000 + i, 50_000 + i);
  }
  // A big directory: the extended inode carries a directory index.
  mkdirSync(join(root, 'big'));
  for (let i = 0; i < 3000; i++) writeFileSync(join(root, 'big', `entry-${String(i).padStart(4, '0')}`), i % 7 === 0 ? `${i}` : '');
  // Extended attributes, all three namespaces, binary and empty values.
  mustRun('setfattr', ['-n', 'user.mime', '-v', 'text/plain', join(root, 'small.txt')]);
  mustRun('setfattr', ['-n', 'user.bin', '-v', '0x00ff0041ff0a80', join(root, 'small.txt')]);
  mustRun('setfattr', ['-n', 'user.empty', '-v', '""', join(root, 'multi.bin')]);
  mustRun('setfattr', ['-n', 'trusted.overlay.x', '-v', 'y', join(root, 'd')]);
  mustRun('setfattr', ['-n', 'user.mime', '-v', 'text/plain', join(root, 'hard-a')]);
  mustRun('setfattr', ['-h', '-n', 'trusted.link', '-v', 'on-the-link', join(root, 'link')]);
  mustRun('setfattr', ['-n', 'user.big', '-v', `0x${'ab'.repeat(3000)}`, join(root, 'exact-block')]);
  mustRun('setcap', ['cap_net_raw+ep', join(root, 'setuid')]);
  chmodSync(join(root, 'setuid'), 0o4755);
  // Fixed mtimes, directories last.
  const all: string[] = [];
  const list = (rel: string) => {
    for (const n of readdirSync(join(root, rel))) {
      const p = rel === '.' ? n : `${rel}/${n}`;
      all.push(p);
      if (lstatSync(join(root, p)).isDirectory()) list(p);
    }
  };
  list('.');
  all.forEach((p, i) => {
    if (!lstatSync(join(root, p)).isDirectory()) lutimesSync(join(root, p), MTIME + i, MTIME + i);
  });
  for (const p of [...all.filter((p) => lstatSync(join(root, p)).isDirectory()).reverse(), '.']) {
    utimesSync(join(root, p), MTIME - 1000, MTIME - 1000);
  }
}

function mksquashfs(src: string, out: string, args: string[]): void {
  mustRun('mksquashfs', [src, out, '-noappend', '-quiet', '-no-progress', '-processors', '1', ...args]);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function collect(img: SquashfsImage): Promise<{ entries: ImageEntry[]; skipped: string[] }> {
  const entries: ImageEntry[] = [];
  const skipped: string[] = [];
  for await (const e of img.walk({ onSkip: (w, p) => skipped.push(`${w} ${p}`) })) entries.push(e);
  return { entries, skipped };
}

async function content(img: SquashfsImage, e: ImageEntry): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of img.openFile(e)) {
    assert.ok(b.length <= img.superblock.blockSize, 'chunks are at most one block');
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** Every entry (inode numbers aside: writers number differently) with its content hash. */
async function signature(img: SquashfsImage): Promise<string[]> {
  const out: string[] = [];
  for await (const e of img.walk()) {
    const { inode, xattrs, ...rest } = e;
    void inode;
    const x = [...(xattrs ?? new Map())].map(([k, v]) => `${k}=${v.toString('hex')}`).join(',');
    out.push(`${JSON.stringify(rest)} ${x}${e.type === 'file' ? ` ${sha(await content(img, e))}` : ''}`);
  }
  return out;
}

/** `unsquashfs -lln` as [path, typeChar, modeString, uid, gid, sizeOrDev, target]. */
function unsquashfsList(image: string): string[][] {
  const out = mustRun('unsquashfs', ['-lln', '-n', image], { env: { TZ: 'UTC' } }).stdout.toString('utf8');
  const rows: string[][] = [];
  for (const line of out.split('\n')) {
    const m = /^(\S)(\S{9}) (\d+)\/(\d+) +(\d+|\d+, *\d+) \d{4}-\d\d-\d\d \d\d:\d\d squashfs-root(\/.*)?$/.exec(line);
    if (!m) continue;
    let path = (m[6] ?? '/').slice(1) || '.';
    let target = '';
    if (m[1] === 'l') {
      const i = path.indexOf(' -> ');
      target = path.slice(i + 4);
      path = path.slice(0, i);
    }
    rows.push([path, m[1]!, m[2]!, m[3]!, m[4]!, m[5]!.replace(/ /g, ''), target]);
  }
  return rows;
}

const TYPE_CHAR: Record<string, string> = { file: '-', hardlink: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p' };

function modeString(mode: number): string {
  const r = (bits: number, s: number, sc: string, SC: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (s ? (bits & 1 ? sc : SC) : bits & 1 ? 'x' : '-');
  return (
    r((mode >> 6) & 7, mode & 0o4000, 's', 'S') + r((mode >> 3) & 7, mode & 0o2000, 's', 'S') + r(mode & 7, mode & 0o1000, 't', 'T')
  );
}

// ---------------------------------------------------------------------------------------

const Reader = suite('squashfs reader vs mksquashfs/unsquashfs');
const ctx = { fix: '', src: '', snap: undefined as TreeSnapshot | undefined, work: '' };

Reader.before(() => {
  ctx.fix = tempDir('strata-sqfs-fix');
  ctx.src = join(ctx.fix, 'src');
  mkdirSync(ctx.src);
  makeTree(ctx.src);
  ctx.snap = snapshotTree(ctx.src);
});
Reader.after(() => removeDir(ctx.fix));
Reader.before.each(() => {
  ctx.work = tempDir('strata-sqfs');
});
Reader.after.each(() => removeDir(ctx.work));

/** Extraction tests leave out the two big directories (the reader tests cover them). */
const SMALL = ['-e', 'big', 'owners'];
const small = (): TreeSnapshot => new Map([...ctx.snap!].filter(([p]) => !/^(big|owners)(\/|$)/.test(p)));

const VARIANTS: [string, string[]][] = [
  ['gzip', ['-comp', 'gzip', '-b', String(BS)]],
  ['zstd', ['-comp', 'zstd', '-b', String(BS), '-tailends']],
  ['lz4', ['-comp', 'lz4', '-b', String(BS), '-always-use-fragments']],
  ['lz4-hc', ['-comp', 'lz4', '-Xhc', '-nopad']],
  ['uncompressed', ['-noI', '-noD', '-noF', '-noX', '-b', String(BS), '-no-fragments']],
  ['gzip-128k', ['-comp', 'gzip', '-no-duplicates', '-no-sparse']],
  ['xz', ['-comp', 'xz', '-b', String(BS), '-tailends']],
  ['xz-bcj-1m', ['-comp', 'xz', '-Xbcj', 'x86', '-b', '1M', '-Xdict-size', '100%']],
];

for (const [name, args] of VARIANTS) {
  Reader(`walk/stat/readFile match the source tree and unsquashfs -lln (${name})`, async () => {
    const image = join(ctx.work, `${name}.sqfs`);
    mksquashfs(ctx.src, image, args);
    const img = await SquashfsImage.open(image);
    try {
      const { entries, skipped } = await collect(img);
      assert.equal(skipped, ['socket sock']);
      const snap = ctx.snap!;
      // Same paths, in the same (canonical) order as the source tree, minus the socket.
      assert.equal(entries.map((e) => e.path), [...snap.keys()].filter((p) => p !== 'sock'));
      const firstOf = new Map<number, string>();
      const firstByIno = new Map<number, string>(); // source inode → first path (any type)
      for (const e of entries) {
        const n = snap.get(e.path)!;
        const st = lstatSync(join(ctx.src, e.path));
        const first = st.isDirectory() || st.nlink < 2 ? e.path : firstByIno.get(st.ino) ?? e.path;
        if (!firstByIno.has(st.ino)) firstByIno.set(st.ino, e.path);
        const want = first !== e.path ? 'hardlink' : n.type;
        if (want === 'hardlink') assert.is(e.linkname, first, e.path);
        assert.is(e.type, want, e.path);
        if (e.type !== 'symlink') assert.is(e.mode, n.mode, `${e.path} mode`);
        assert.is(e.uid, n.uid, `${e.path} uid`);
        assert.is(e.gid, n.gid, `${e.path} gid`);
        assert.is(e.mtime, n.mtime, `${e.path} mtime`);
        assert.is(e.size, e.type === 'file' ? n.size : 0, `${e.path} size`);
        if (e.type === 'symlink') assert.is(e.linkname, n.target);

        if (n.links) {
          assert.is(e.nlink, n.links.length);
          if (!firstOf.has(e.inode)) firstOf.set(e.inode, e.path);
          assert.is(firstOf.get(e.inode), n.links[0]);
        }
        if (n.rdev) assert.equal([e.devmajor, e.devminor], [n.rdev.major, n.rdev.minor], e.path);
        const xattrs = Object.fromEntries([...(e.xattrs ?? new Map())].map(([k, v]) => [k, v.toString('hex')]));
        assert.equal(xattrs, n.xattrs, `${e.path} xattrs`);
        if (n.type === 'file') assert.is(sha(await content(img, e)), n.sha256, `${e.path} content`); // hard links too
      }
      // Against unsquashfs's own listing.
      const rows = unsquashfsList(image).filter((r) => r[1] !== 's');
      assert.equal(rows.map((r) => r[0]), entries.map((e) => e.path));
      for (const [i, e] of entries.entries()) {
        const [, t, m, uid, gid, sz, target] = rows[i]!;
        const type = e.type === 'hardlink' ? snap.get(e.linkname!)!.type : e.type; // unsquashfs shows the inode
        assert.is(t, TYPE_CHAR[type], e.path);
        assert.is(m, e.type === 'symlink' ? 'rwxrwxrwx' : modeString(e.mode), e.path);
        assert.is(Number(uid), e.uid);
        assert.is(Number(gid), e.gid);
        if (type === 'file') assert.is(Number(sz), snap.get(e.path)!.size, e.path);
        // unsquashfs -lln prints minors above 255 oddly (1118467,112 for 259:70000); the
        // extraction test checks those against the kernel's view instead.
        if ((type === 'char' || type === 'block') && e.devminor! < 256) assert.is(sz, `${e.devmajor},${e.devminor}`);
        if (e.type === 'symlink') assert.is(target, e.linkname);
      }
      // stat() resolves every path (the big directory through its index) to the same entry.
      for (const [i, e] of entries.entries()) {
        if (name !== 'gzip' && i % 37 !== 0) continue; // every path once, a sample for the rest
        const s = await img.stat(e.path);
        assert.ok(s, `stat ${e.path}`);
        assert.is(s!.inode, e.inode, e.path);
        assert.is(s!.type, e.type === 'hardlink' ? snap.get(e.linkname!)!.type : e.type, e.path);
      }
      assert.is(await img.stat('big/entry-3000'), undefined);
      assert.is(await img.stat('big/entry-0000x'), undefined);
      assert.is(await img.stat('aaaa'), undefined);
      assert.is(await img.stat('link/x'), undefined, 'symlinks are not followed');
      assert.is(await img.stat('sock'), undefined);
      assert.is((await img.stat('/d/sub/../sub')), undefined);
      assert.is((await img.stat('/d/sub/deeper/note'))!.path, 'd/sub/deeper/note');
      assert.is((await img.readFile('/small.txt')).toString(), 'hello squashfs\n');
      assert.is((await img.readFile('big/entry-2996')).toString(), '2996');
      assert.equal(await img.readFile('sparse'), readFileSync(join(ctx.src, 'sparse')));
      try {
        await img.readFile('d');
        assert.unreachable('readFile of a directory');
      } catch (e) {
        assert.ok(isStrataError(e, IMAGE_ERR.NOT_FOUND), String(e));
      }
      // openFile by path streams the same bytes as by entry.
      const parts: Buffer[] = [];
      for await (const b of img.openFile('multi.bin')) parts.push(b);
      assert.equal(Buffer.concat(parts), readFileSync(join(ctx.src, 'multi.bin')));
      const b = args.indexOf('-b');
      assert.is(img.superblock.blockSize, b < 0 ? 131072 : args[b + 1] === '1M' ? 1 << 20 : Number(args[b + 1]));
      assert.is(img.superblock.inodes, new Set(entries.map((e) => e.inode)).size + 1 /* socket */);
    } finally {
      await img.close();
    }
  });
}

Reader("reads images from strata's own writer (gzip, zstd, lz4) exactly like the mksquashfs image copied into them", async () => {
  const source = join(ctx.work, 'm.sqfs');
  mksquashfs(ctx.src, source, ['-comp', 'gzip', '-b', String(BS)]);
  const a = await SquashfsImage.open(source);
  const want = await signature(a);
  try {
    for (const compressor of ['gzip', 'zstd', 'lz4'] as const) {
      const out = join(ctx.work, `strata-${compressor}.sqfs`);
      const w = await SquashfsWriter.create(out, { compressor, blockSize: BS, workers: 1 });
      for await (const e of a.walk()) {
        if (e.type === 'file') await w.addFile(e, a.openFile(e), 'all');
        else w.addEntry(e);
      }
      await w.finish();
      const b = await SquashfsImage.open(out);
      try {
        const got = await signature(b);
        assert.is(got.length, want.length, `${compressor}: entries`);
        assert.equal(got.filter((l, i) => l !== want[i]).slice(0, 5), [], `${compressor}: differing entries`);
        assert.is((await b.stat('big/entry-1234'))?.path, 'big/entry-1234');
      } finally {
        await b.close();
      }
    }
  } finally {
    await a.close();
  }
});

Reader('extractImage matches unsquashfs -d and the source tree (contents, owners, xattrs, devices)', async () => {
  const image = join(ctx.work, 'x.sqfs');
  mksquashfs(ctx.src, image, ['-comp', 'zstd', '-b', String(BS), ...SMALL]);
  const ours = join(ctx.work, 'ours');
  const theirs = join(ctx.work, 'theirs');
  const img = await SquashfsImage.open(image);
  const skips: string[] = [];
  try {
    const r = await extractImage(img, ours, { onSkip: (w, p) => skips.push(`${w} ${p}`) });
    assert.equal(r.skipped, { sockets: 1 });
    assert.equal(skips, ['sockets sock']);
    assert.is(r.entries, small().size - 1);
  } finally {
    await img.close();
  }
  mustRun('unsquashfs', ['-q', '-n', '-d', theirs, image]);
  const mine = snapshotTree(ours);
  // unsquashfs makes sockets; strata's layer model has no sockets.
  assert.equal(diffTrees(mine, theirs, { ignorePaths: ['sock'] }), []);
  assert.equal(diffTrees(mine, small(), { ignorePaths: ['sock'] }), []);
  assert.equal(mine.get('setuid')!.xattrs['security.capability'], ctx.snap!.get('setuid')!.xattrs['security.capability']);
  assert.ok(mine.get('setuid')!.xattrs['security.capability']);
  // Holes stay holes.
  assert.ok(lstatSync(join(ours, 'sparse')).blocks * 512 < 3 * BS, 'sparse file written sparse');
  // diff -r itself: contents and symlink targets; it only remarks on special files.
  const d = run('diff', ['-r', '--no-dereference', ours, theirs, '-x', 'sock']);
  const remarks = d.stdout.toString('utf8').split('\n').filter((l) => l !== '');
  // diff only remarks on the special files (and may fail to open a device): nothing else.
  assert.equal(remarks.filter((l) => !/\/(fifo|chr|blk)\b/.test(l)), []);
  assert.ok(remarks.some((l) => /fifo is a fifo while/.test(l)), remarks.join('\n'));
});

Reader('extractImage of an -all-root image, and into a non-empty directory', async () => {
  const image = join(ctx.work, 'root.sqfs');
  mksquashfs(ctx.src, image, ['-comp', 'gzip', '-all-root', '-no-xattrs', ...SMALL]);
  const ours = join(ctx.work, 'ours');
  const theirs = join(ctx.work, 'theirs');
  const img = await SquashfsImage.open(image);
  try {
    await extractImage(img, ours);
    mkdirSync(join(ctx.work, 'full'));
    writeFileSync(join(ctx.work, 'full', 'x'), '');
    try {
      await extractImage(img, join(ctx.work, 'full'));
      assert.unreachable('non-empty target');
    } catch (e) {
      assert.ok(isStrataError(e, COMPOSE_ERR.TARGET_NOT_EMPTY), String(e));
    }
  } finally {
    await img.close();
  }
  mustRun('unsquashfs', ['-q', '-n', '-d', theirs, image]);
  const mine = snapshotTree(ours);
  assert.equal(diffTrees(mine, theirs, { ignorePaths: ['sock'] }), []);
  for (const n of mine.values()) {
    assert.is(n.uid, 0);
    assert.equal(n.xattrs, {});
  }
});

Reader('extractImage as an unprivileged user skips and counts what it may not do', async () => {
  const image = join(ctx.work, 'u.sqfs');
  mksquashfs(ctx.src, image, ['-comp', 'zstd', '-b', String(BS), ...SMALL]);
  chmodSync(ctx.work, 0o777);
  const out = join(ctx.work, 'out');
  // The child imports the same modules as this test: .ts under tsx, .js after tsc.
  const fromSource = fileURLToPath(import.meta.url).endsWith('.ts');
  const ext = fromSource ? 'ts' : 'js';
  const script = join(ctx.work, 'child.mjs');
  writeFileSync(
    script,
    `const { SquashfsImage } = await import(${JSON.stringify(new URL(`../compose/image/squashfs/reader.${ext}`, import.meta.url).href)});
const { extractImage } = await import(${JSON.stringify(new URL(`../compose/tree/image.${ext}`, import.meta.url).href)});
const img = await SquashfsImage.open(${JSON.stringify(image)});
const seen = [];
const r = await extractImage(img, ${JSON.stringify(out)}, { onSkip: (w, p) => { if (w !== 'ownership') seen.push(w + ' ' + p); } });
await img.close();
console.log(JSON.stringify({ uid: process.getuid(), ...r, seen }));
`,
  );
  const r = runAs(nobody(ctx.work), process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { TMPDIR: ctx.work },
  });
  assert.is(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout.toString('utf8').trim().split('\n').pop()!);
  const snap = small();
  // Ownership is applied once per inode: not to sockets and devices (skipped whole) nor to
  // the second and later names of a hard link.
  const owned = [...snap.values()].filter(
    (n) => !['socket', 'char', 'block'].includes(n.type) && !(n.links && n.links[0] !== n.path),
  ).length;
  assert.is(res.uid, 65534);
  assert.equal(res.skipped, { sockets: 1, ownership: owned, 'device nodes': 3, 'trusted.* xattrs': 2, 'security.* xattrs': 1 });
  assert.equal(res.seen.sort(), [
    'device nodes blk', 'device nodes chr', 'device nodes chr-link', 'security.* xattrs setuid security.capability', 'sockets sock',
    'trusted.* xattrs d trusted.overlay.x', 'trusted.* xattrs link trusted.link',
  ]);
  const diffs = diffTrees(snapshotTree(out), snap, { ignoreOwners: true, ignorePaths: ['sock', 'chr', 'chr-link', 'blk'] });
  assert.equal(diffs, [
    'only in b: blk (block)',
    'only in b: chr (char)',
    `d: xattr trusted.overlay.x (none) != ${Buffer.from('y').toString('hex')}`,
    `link: xattr trusted.link (none) != ${Buffer.from('on-the-link').toString('hex')}`,
    // Not setuid for everyone as nobody's own file (as unsquashfs and GNU tar as a user).
    `setuid: mode ${(snap.get('setuid')!.mode & ~0o4000).toString(8).padStart(4, '0')} != ${snap.get('setuid')!.mode.toString(8).padStart(4, '0')}`,
    `setuid: xattr security.capability (none) != ${snap.get('setuid')!.xattrs['security.capability']}`,
  ].filter((l) => !l.startsWith('only in')));
  assert.is(lstatSync(join(out, 'small.txt')).uid, 65534);
});

Reader('xz with x86 BCJ on real executables decodes like unsquashfs', async () => {
  const src = join(ctx.work, 'bin');
  mkdirSync(src);
  for (const b of ['/bin/bash', '/usr/bin/ls', '/usr/bin/tar']) copyFileSync(b, join(src, b.split('/').pop()!));
  const image = join(ctx.work, 'bcj.sqfs');
  mksquashfs(src, image, ['-comp', 'xz', '-Xbcj', 'x86']);
  const img = await SquashfsImage.open(image);
  try {
    for await (const e of img.walk()) {
      if (e.type === 'file') assert.is(sha(await content(img, e)), sha(readFileSync(join(src, e.path))), e.path);
    }
  } finally {
    await img.close();
  }
});

Reader('names that are not UTF-8 are refused in one line, as layers refuse them', async () => {
  const src = join(ctx.work, 'latin1');
  mkdirSync(src);
  writeFileSync(Buffer.from(`${src}/caf\xe9`, 'latin1'), 'x');
  const image = join(ctx.work, 'latin1.sqfs');
  mksquashfs(src, image, []);
  const img = await SquashfsImage.open(image);
  try {
    await collect(img);
    assert.unreachable('latin-1 name');
  } catch (e) {
    assert.ok(isStrataError(e, IMAGE_ERR.UNSUPPORTED), String(e));
    assert.match((e as Error).message, /is not valid UTF-8$/);
  } finally {
    await img.close();
  }
});

Reader('lzo and non-SquashFS files are refused with clear errors', async () => {
  for (const comp of ['lzo']) {
    const image = join(ctx.work, `${comp}.sqfs`);
    mksquashfs(join(ctx.src, 'd'), image, ['-comp', comp]);
    try {
      await SquashfsImage.open(image);
      assert.unreachable(comp);
    } catch (e) {
      assert.ok(isStrataError(e, IMAGE_ERR.UNSUPPORTED), String(e));
      assert.match((e as Error).message, `compressed with ${comp}`);
    }
  }
  const notSq = join(ctx.work, 'plain');
  writeFileSync(notSq, 'not an image at all, just text that is long enough to be a superblock'.repeat(3));
  for (const [file, msg] of [[notSq, 'is not a SquashFS 4.0 image'], [join(ctx.work, 'empty'), 'is not a SquashFS 4.0 image']] as const) {
    if (!file.endsWith('plain')) writeFileSync(file, '');
    try {
      await SquashfsImage.open(file);
      assert.unreachable(file);
    } catch (e) {
      assert.ok(isStrataError(e, IMAGE_ERR.CORRUPT), String(e));
      assert.match((e as Error).message, msg);
    }
  }
});

Reader.run();

// ---------------------------------------------------------------------------------------

const Corrupt = suite('squashfs reader on corrupt images');
const cctx = { dir: '', images: [] as { name: string; path: string; bytes: Buffer }[] };

Corrupt.before(() => {
  cctx.dir = tempDir('strata-sqfs-bad');
  const src = join(cctx.dir, 'src');
  mkdirSync(join(src, 'dir/sub'), { recursive: true });
  const multi = Buffer.alloc(BS * 2 + 500);
  for (let i = 0; i < multi.length; i++) multi[i] = (i * 7) & 0xff;
  writeFileSync(join(src, 'multi'), multi);
  writeFileSync(join(src, 'a'), 'alpha\n');
  writeFileSync(join(src, 'dir/b'), 'bravo\n'.repeat(50));
  writeFileSync(join(src, 'dir/sub/c'), '');
  linkSync(join(src, 'a'), join(src, 'dir/a-link'));
  symlinkSync('../a', join(src, 'dir/sym'));
  mustRun('mkfifo', [join(src, 'fifo')]);
  mustRun('setfattr', ['-n', 'user.k', '-v', 'value', join(src, 'a')]);
  mustRun('setfattr', ['-n', 'user.k2', '-v', 'value', join(src, 'dir/b')]);
  for (let i = 0; i < 40; i++) writeFileSync(join(src, 'dir', `f${i}`), `${i}`.repeat(i));
  for (const [name, args] of [
    ['gzip', ['-comp', 'gzip', '-b', String(BS)]],
    ['raw', ['-noI', '-noD', '-noF', '-noX', '-b', String(BS), '-nopad']],
    ['zstd', ['-comp', 'zstd', '-b', String(BS), '-nopad']],
    ['lz4', ['-comp', 'lz4', '-b', String(BS)]],
    ['xz', ['-comp', 'xz', '-b', String(BS)]],
  ] as const) {
    const path = join(cctx.dir, `${name}.sqfs`);
    mksquashfs(src, path, [...args]);
    cctx.images.push({ name, path, bytes: readFileSync(path) });
  }
});
Corrupt.after(() => removeDir(cctx.dir));

/** Opens, walks, reads every file and stats every path; returns the error, if any. */
async function exercise(path: string): Promise<unknown> {
  let img: SquashfsImage | undefined;
  try {
    img = await SquashfsImage.open(path);
    let n = 0;
    const files: ImageEntry[] = [];
    for await (const e of img.walk()) {
      if (++n > 1000) throw new Error('runaway walk');
      if (e.type === 'file') files.push(e);
    }
    for (const e of files) {
      let got = 0;
      for await (const b of img.openFile(e)) got += b.length;
      if (got !== e.size) throw new Error(`read ${got} of ${e.size} bytes`);
    }
    for (const e of files) await img.stat(e.path);
    return undefined;
  } catch (e) {
    return e;
  } finally {
    await img?.close();
  }
}

function checkOutcome(e: unknown, label: string): boolean {
  if (e === undefined) return false;
  if (!isStrataError(e) || (e.code !== IMAGE_ERR.CORRUPT && e.code !== IMAGE_ERR.UNSUPPORTED)) {
    assert.unreachable(`${label}: unexpected ${e instanceof Error ? e.stack : String(e)}`);
  }
  const msg = (e as Error).message;
  assert.not.match(msg, /\n/, `${label}: one line`);
  assertNotACrash(msg, label);
  return true;
}

Corrupt('the pristine images read cleanly', async () => {
  for (const im of cctx.images) assert.is(await exercise(im.path), undefined, im.name);
});

Corrupt('byte flips in every table: success or one-line ERR_IMAGE_CORRUPT', async () => {
  const rnd = seeded(0x5eed);
  const bad = join(cctx.dir, 'bad.sqfs');
  const started = Date.now();
  let failures = 0;
  let cases = 0;
  const rss0 = process.memoryUsage().rss;
  for (const im of cctx.images) {
    const sb = decodeSuperblock(im.bytes);
    const used = Number(sb.bytesUsed);
    const cut = (v: bigint) => (v === 0xffffffffffffffffn ? undefined : Number(v));
    const starts = [96, Number(sb.inodeTableStart), Number(sb.directoryTableStart), cut(sb.fragmentTableStart),
      cut(sb.exportTableStart), Number(sb.idTableStart), cut(sb.xattrIdTableStart), used]
      .filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    // Regions: superblock, data, inode table, directory table, then each table to the next.
    const regions: [number, number][] = [[0, 96]];
    for (let i = 0; i + 1 < starts.length; i++) if (starts[i + 1]! > starts[i]!) regions.push([starts[i]!, starts[i + 1]!]);
    for (let k = 0; k < 70; k++) {
      const [lo, hi] = regions[k % regions.length]!;
      const b = Buffer.from(im.bytes);
      const flips = 1 + Math.floor(rnd() * 3);
      const where: number[] = [];
      for (let f = 0; f < flips; f++) {
        const at = lo + Math.floor(rnd() * (hi - lo));
        b[at]! ^= 1 + Math.floor(rnd() * 255);
        where.push(at);
      }
      writeFileSync(bad, b);
      cases++;
      if (checkOutcome(await exercise(bad), `${im.name} flip at ${where.join(',')}`)) failures++;
    }
  }
  const grown = process.memoryUsage().rss - rss0;
  assert.ok(grown < 300 << 20, `memory grew by ${grown} bytes`);
  assert.ok(failures > cases / 4, `only ${failures} of ${cases} corruptions were detected`);
  assert.ok(Date.now() - started < 60_000, 'fuzzing took too long');
});

Corrupt('extractImage of corrupt images: one-line ERR_IMAGE_CORRUPT, nothing outside the target', async () => {
  const rnd = seeded(0xe87);
  const bad = join(cctx.dir, 'bad-x.sqfs');
  let failures = 0;
  for (let k = 0; k < 40; k++) {
    const im = cctx.images[k % cctx.images.length]!;
    const sb = decodeSuperblock(im.bytes);
    const b = Buffer.from(im.bytes);
    // Data blocks and the inode and directory tables: the parts extraction reads most.
    const lo = k % 2 === 0 ? 96 : Number(sb.inodeTableStart);
    const hi = k % 2 === 0 ? Number(sb.inodeTableStart) : Number(sb.fragmentTableStart === 0xffffffffffffffffn ? sb.idTableStart : sb.fragmentTableStart);
    for (let f = 0; f < 2; f++) b[lo + Math.floor(rnd() * (hi - lo))]! ^= 1 + Math.floor(rnd() * 255);
    writeFileSync(bad, b);
    const box = join(cctx.dir, `box-${k}`);
    const target = join(box, 'out');
    mkdirSync(box);
    let err: unknown;
    let img: SquashfsImage | undefined;
    try {
      img = await SquashfsImage.open(bad);
      await extractImage(img, target);
    } catch (e) {
      err = e;
    } finally {
      await img?.close();
    }
    if (checkOutcome(err, `${im.name} case ${k}`)) failures++;
    assert.equal(readdirSync(box), readdirSync(box).includes('out') ? ['out'] : [], 'nothing next to the target');
  }
  assert.ok(failures >= 10, `only ${failures} of 40 extractions failed`);
});

Corrupt('truncation at many offsets: ERR_IMAGE_CORRUPT saying truncated', async () => {
  const bad = join(cctx.dir, 'short.sqfs');
  for (const im of cctx.images) {
    const used = Number(decodeSuperblock(im.bytes).bytesUsed);
    for (let k = 0; k < 30; k++) {
      const len = Math.floor((used * k) / 30) + (k % 3);
      if (len >= used) continue;
      writeFileSync(bad, im.bytes.subarray(0, len));
      const e = await exercise(bad);
      assert.ok(checkOutcome(e, `${im.name} truncated to ${len}`), `${im.name} truncated to ${len} read without error`);
      if (len >= 96) assert.match((e as Error).message, /is truncated \(/, `${im.name} at ${len}: ${(e as Error).message}`);
    }
  }
});

Corrupt('a directory entry pointing back at the root is reported as a cycle', async () => {
  const im = cctx.images.find((i) => i.name === 'raw')!;
  const img = await SquashfsImage.open(im.path);
  const { entries } = await collect(img);
  await img.close();
  const root = entries[0]!;
  const dir = entries.find((e) => e.path === 'dir')!;
  // The 'dir' entry in the root listing (uncompressed): u16 offset, s16 delta, u16 type 1,
  // u16 nameSize 2, "dir". Point it at the root inode (same metadata block in this image).
  const b = Buffer.from(im.bytes);
  const sb = decodeSuperblock(b);
  const needle = Buffer.from([1, 0, 2, 0, 0x64, 0x69, 0x72]);
  const at = b.indexOf(needle, Number(sb.directoryTableStart));
  assert.ok(at > 0);
  const rootRef = sb.rootInode;
  assert.is(Number(rootRef >> 16n), 0, 'root inode in the first inode block');
  b.writeUInt16LE(Number(rootRef & 0xffffn), at - 4);
  b.writeInt16LE(b.readInt16LE(at - 2) + (root.inode - dir.inode), at - 2);
  const bad = join(cctx.dir, 'cycle.sqfs');
  writeFileSync(bad, b);
  const e = await exercise(bad);
  assert.ok(isStrataError(e, IMAGE_ERR.CORRUPT), String(e));
  assert.match((e as Error).message, /cycle/);
});

Corrupt('a name with a slash or "..", and out-of-order names, are refused', async () => {
  const im = cctx.images.find((i) => i.name === 'raw')!;
  const sb = decodeSuperblock(im.bytes);
  const needle = Buffer.from([1, 0, 2, 0, 0x64, 0x69, 0x72]); // "dir" entry
  for (const [name, re] of [['d/r', /invalid entry name/], ['..\0', /invalid entry name/], ['zzz', /out of order/]] as const) {
    const b = Buffer.from(im.bytes);
    const at = b.indexOf(needle, Number(sb.directoryTableStart));
    b.write(name, at + 4, 'latin1');
    if (name === '..\0') b.writeUInt16LE(1, at + 2); // name size 2
    const bad = join(cctx.dir, 'name.sqfs');
    writeFileSync(bad, b);
    const e = await exercise(bad);
    assert.ok(isStrataError(e, IMAGE_ERR.CORRUPT), `${name}: ${String(e)}`);
    assert.match((e as Error).message, re);
  }
});

Corrupt('stat() uses the directory index; a corrupt index entry is reported', async () => {
  const src = join(cctx.dir, 'bigdir');
  mkdirSync(join(src, 'big'), { recursive: true });
  for (let i = 0; i < 3000; i++) writeFileSync(join(src, 'big', `entry-${String(i).padStart(4, '0')}`), '');
  const image = join(cctx.dir, 'bigdir.sqfs');
  mksquashfs(src, image, ['-noI', '-noD', '-noF', '-noX']);
  const b = readFileSync(image);
  const sb = decodeSuperblock(b);
  // Index entries (u32 index, u32 start, u32 nameSize, name) follow the extended directory
  // inode; the names are those of the first entry of a run: find one past the first.
  const table = b.subarray(Number(sb.inodeTableStart), Number(sb.directoryTableStart));
  const hits: number[] = [];
  for (let at = table.indexOf('entry-'); at >= 0; at = table.indexOf('entry-', at + 1)) {
    if (table.readUInt32LE(at - 4) === 9) hits.push(at);
  }
  assert.ok(hits.length >= 4, `index entries found: ${hits.length}`);
  const name = table.subarray(hits[2]!, hits[2]! + 10).toString();
  table.writeUInt32LE(0x7fffff, hits[2]! - 8); // its 'start' block
  const bad = join(cctx.dir, 'bigdir-bad.sqfs');
  writeFileSync(bad, b);
  const img = await SquashfsImage.open(bad);
  try {
    let n = 0;
    for await (const e of img.walk()) if (e.path.startsWith('big/')) n++;
    assert.is(n, 3000, 'walk reads listings without the index');
    assert.ok(await img.stat('big/entry-0000'));
    try {
      await img.stat(`big/${name}`);
      assert.unreachable('stat through the corrupt index entry');
    } catch (e) {
      assert.ok(isStrataError(e, IMAGE_ERR.CORRUPT), String(e));
      assert.match((e as Error).message, /index entry/);
    }
  } finally {
    await img.close();
  }
});

Corrupt.run();

// ---------------------------------------------------------------------------------------------
// The path check extraction makes of every entry (and unsquash of every acl.json path), read
// in place name by name: it must refuse exactly what splitting the path would.

const Paths = suite('extraction path check');

Paths('an empty name, ".", "..", a NUL or a slash at either end is refused; any other name is a name', () => {
  const refused = (p: string) => {
    try {
      checkPath(p, 'img');
      return false;
    } catch (e) {
      assert.ok(isStrataError(e, IMAGE_ERR.CORRUPT), `${JSON.stringify(p)}: ${String(e)}`);
      return true;
    }
  };
  for (const p of ['', '/', '/a', 'a/', 'a//b', '..', './a', 'a/.', 'a/..', 'a/../b', 'a/./b', 'a\0b', '\0', 'a/b\0']) {
    assert.ok(refused(p), `${JSON.stringify(p)} is refused`);
  }
  for (const p of ['.', 'a', 'a/b', '...', '.a', '..a', 'a..', 'a/.b', 'a/..b', 'a/...', 'a/b/c']) assert.not.ok(refused(p), `${JSON.stringify(p)} is a path`);
});

Paths.run();

/**
 * native/xattr.ts and native/fsops.ts against the real kernel and the reference tools
 * (getfattr, getfacl, setcap, stat, setpriv): values byte for byte, symlinks never followed,
 * device nodes, the unprivileged view (trusted.* refused with EPERM, user.* allowed), and the
 * descriptor-relative calls: openBeneath refuses every symlink and escape, the *at calls act
 * on the name itself, rmtreeat removes without following or crossing a mount.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync, closeSync, existsSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync,
  symlinkSync, writeFileSync, writeSync, constants as C,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lgetxattr, llistxattr, lremovexattr, lsetxattr, readXattrs, XATTR_CREATE } from '../native/xattr.js';
import {
  AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, DIR_FLAGS, O_PATH, RENAME_EXCHANGE, RENAME_NOREPLACE, fchmodat, fchownat, fdPath, fremovexattr,
  fsetxattr, fstatat, linkat, mkdirat, mknodat, openBeneath, openat, readdirfd, renameat2, rmtreeat, symlinkat, unlinkat, utimensat,
} from '../native/fsops.js';
import { aclFromText, aclToXattr } from '../native/acl.js';
import { unmount } from './helpers/tmp.js';
import { addon } from '../native/binding.js';
import { createHash } from 'node:crypto';
import { nobody, runAs } from './helpers/users.js';

const run = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/** getfattr's hex dump of one attribute on the path itself (-h: do not follow a link). */
function getfattrHex(path: string, name: string): string | undefined {
  const r = spawnSync('getfattr', ['-h', '--absolute-names', '-e', 'hex', '-n', name, path], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${name}=`));
  return line?.slice(name.length + 1).replace(/^0x/, '');
}

/** Names getfattr lists for the path itself, every namespace. */
function getfattrNames(path: string): string[] {
  const out = run('getfattr', '-h', '--absolute-names', '-m', '-', path);
  return out.split('\n').filter((l) => l !== '' && !l.startsWith('#')).sort();
}

function expectErrno(fn: () => unknown, code: string, syscall: string, path: string): void {
  try {
    fn();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    assert.is(err.code, code, err.message);
    assert.is(err.syscall, syscall);
    assert.is(err.path, path);
    assert.type(err.errno, 'number');
    assert.ok(err.errno! < 0, 'errno is negative, like Node fs errors');
    assert.ok(err instanceof Error);
    assert.ok(err.message.startsWith(`${code}: `), err.message);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

interface Ctx {
  dir: string;
}

// ---------------------------------------------------------------------------------------
const xattr = suite<Ctx>('xattr');
xattr.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-xattr-'));
});
xattr.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

xattr('user.* and trusted.* round-trip byte for byte, as getfattr sees them', ({ dir }) => {
  const f = join(dir, 'f');
  writeFileSync(f, 'data');
  const binary = Buffer.from([0x00, 0xff, 0x0a, 0x80, 0x00, 0xfe, 0xff]);
  lsetxattr(f, 'user.bin', binary);
  lsetxattr(f, 'trusted.t', Buffer.from('opaque'));
  lsetxattr(f, 'user.empty', new Uint8Array(0));
  lsetxattr(f, 'user.view', new Uint8Array([1, 2, 3, 4, 5]).subarray(1, 3));
  assert.equal(lgetxattr(f, 'user.bin'), binary);
  assert.is(getfattrHex(f, 'user.bin'), binary.toString('hex'));
  assert.is(getfattrHex(f, 'trusted.t'), Buffer.from('opaque').toString('hex'));
  assert.equal(lgetxattr(f, 'user.empty'), Buffer.alloc(0));
  assert.equal(lgetxattr(f, 'user.view'), Buffer.from([2, 3]), 'a Uint8Array view writes only its own bytes');
  assert.is(lgetxattr(f, 'user.missing'), undefined);
  assert.equal(llistxattr(f), ['trusted.t', 'user.bin', 'user.empty', 'user.view']);
  assert.equal(llistxattr(f), getfattrNames(f));
  const all = readXattrs(f);
  assert.equal([...all.keys()], ['trusted.t', 'user.bin', 'user.empty', 'user.view']);
  assert.equal(all.get('user.bin'), binary);
});

xattr('values set by setfattr read back exactly; large values re-query their size', ({ dir }) => {
  const f = join(dir, 'f');
  writeFileSync(f, '');
  run('setfattr', '-n', 'user.hex', '-v', '0x00ff7f80ff', f);
  assert.equal(lgetxattr(f, 'user.hex'), Buffer.from([0x00, 0xff, 0x7f, 0x80, 0xff]));
  const big = Buffer.alloc(3000, 0xab);
  lsetxattr(f, 'user.big', big);
  assert.equal(lgetxattr(f, 'user.big'), big);
  lsetxattr(f, 'user.big', Buffer.from('x'));
  assert.equal(lgetxattr(f, 'user.big'), Buffer.from('x'), 'a set replaces the value whole');
});

xattr('security.capability from setcap: binary value, and ours is accepted by getcap', ({ dir }) => {
  const one = join(dir, 'one');
  const all = join(dir, 'all');
  const copy = join(dir, 'copy');
  for (const p of [one, all, copy]) writeFileSync(p, '#!/bin/sh\n');
  run('setcap', 'cap_net_raw+ep', one);
  run('setcap', '=ep', all);
  const v1 = lgetxattr(one, 'security.capability')!;
  const vAll = lgetxattr(all, 'security.capability')!;
  assert.is(v1.toString('hex'), getfattrHex(one, 'security.capability'));
  assert.is(vAll.toString('hex'), getfattrHex(all, 'security.capability'));
  assert.ok(vAll.includes(0xff), 'the all-capabilities value carries 0xff bytes');
  // VFS_CAP_REVISION_2|VFS_CAP_FLAGS_EFFECTIVE, then permitted bit 13 (CAP_NET_RAW).
  assert.is(v1.readUInt32LE(0), 0x02000001);
  assert.is(v1.readUInt32LE(4), 1 << 13);
  lsetxattr(copy, 'security.capability', vAll);
  assert.is(getfattrHex(copy, 'security.capability'), vAll.toString('hex'));
  lsetxattr(copy, 'security.capability', v1);
  assert.match(run('getcap', copy), /cap_net_raw[=+]ep/);
});

xattr('remove, XATTR_CREATE, and errors shaped like Node fs errors', ({ dir }) => {
  const f = join(dir, 'f');
  writeFileSync(f, '');
  lsetxattr(f, 'user.a', Buffer.from('1'));
  expectErrno(() => lsetxattr(f, 'user.a', Buffer.from('2'), XATTR_CREATE), 'EEXIST', 'lsetxattr', f);
  lremovexattr(f, 'user.a');
  assert.is(lgetxattr(f, 'user.a'), undefined);
  assert.equal(getfattrNames(f), []);
  expectErrno(() => lremovexattr(f, 'user.a'), 'ENODATA', 'lremovexattr', f);
  const missing = join(dir, 'missing');
  expectErrno(() => lgetxattr(missing, 'user.a'), 'ENOENT', 'lgetxattr', missing);
  expectErrno(() => llistxattr(missing), 'ENOENT', 'llistxattr', missing);
  expectErrno(() => lsetxattr(f, 'bogus.a', Buffer.from('x')), 'ENOTSUP', 'lsetxattr', f);
  const loop = join(dir, 'loop');
  symlinkSync('loop', loop);
  expectErrno(() => lgetxattr(join(loop, 'x'), 'user.a'), 'ELOOP', 'lgetxattr', join(loop, 'x'));
  assert.throws(() => lsetxattr(f, 'user.a', 'text' as unknown as Uint8Array), /Uint8Array/);
});

// ---------------------------------------------------------------------------------------
const links = suite<Ctx>('xattr on symlinks');
links.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-link-'));
});
links.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

links('get and list act on the link, never on its target', ({ dir }) => {
  const target = join(dir, 'target');
  const link = join(dir, 'link');
  writeFileSync(target, '');
  symlinkSync('target', link);
  lsetxattr(target, 'user.t', Buffer.from('target'));
  lsetxattr(target, 'trusted.t', Buffer.from('target'));
  assert.is(lgetxattr(link, 'user.t'), undefined);
  assert.is(lgetxattr(link, 'trusted.t'), undefined);
  assert.equal(llistxattr(link), []);
  assert.equal(readXattrs(link).size, 0);
});

links('set on a link changes the link or fails; the target stays untouched', ({ dir }) => {
  const target = join(dir, 'target');
  const link = join(dir, 'link');
  writeFileSync(target, '');
  symlinkSync('target', link);
  // Linux refuses user.* on symlinks: EPERM, and nothing reaches the target.
  expectErrno(() => lsetxattr(link, 'user.x', Buffer.from('v')), 'EPERM', 'lsetxattr', link);
  assert.equal(getfattrNames(target), []);
  lsetxattr(link, 'trusted.x', Buffer.from('on-link'));
  assert.is(getfattrHex(link, 'trusted.x'), Buffer.from('on-link').toString('hex'));
  assert.is(lgetxattr(link, 'trusted.x')?.toString(), 'on-link');
  assert.equal(getfattrNames(target), [], 'the target got nothing');
  lremovexattr(link, 'trusted.x');
  assert.equal(getfattrNames(link), []);
});

links('a dangling link is handled without creating its target', ({ dir }) => {
  const link = join(dir, 'dangling');
  symlinkSync('nowhere', link);
  lsetxattr(link, 'trusted.d', Buffer.from([0xff]));
  assert.equal(lgetxattr(link, 'trusted.d'), Buffer.from([0xff]));
  assert.not.ok(existsSync(join(dir, 'nowhere')));
});

// ---------------------------------------------------------------------------------------
const nodes = suite<Ctx>('mknod');
nodes.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-mknod-'));
});
nodes.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

const statType = (p: string): string => run('stat', '-c', '%t:%T/%F/%a', p).trim();

nodes('char, block and fifo nodes match stat', ({ dir }) => {
  const d = openSync(dir, DIR_FLAGS);
  const prev = process.umask(0);
  try {
    mknodat(d, 'null', C.S_IFCHR | 0o666, 1, 3);
    mknodat(d, 'loop', C.S_IFBLK | 0o640, 7, 0);
    mknodat(d, 'big', C.S_IFCHR | 0o600, 259, 70000);
    mknodat(d, 'whiteout', C.S_IFCHR | 0o000, 0, 0);
    mknodat(d, 'fifo', C.S_IFIFO | 0o644, 0, 0);
  } finally {
    process.umask(prev);
    closeSync(d);
  }
  // stat prints major/minor in hex.
  assert.is(statType(join(dir, 'null')), '1:3/character special file/666');
  assert.is(statType(join(dir, 'loop')), '7:0/block special file/640');
  assert.is(statType(join(dir, 'big')), `${(259).toString(16)}:${(70000).toString(16)}/character special file/600`);
  assert.is(statType(join(dir, 'whiteout')), '0:0/character special file/0');
  assert.is(statType(join(dir, 'fifo')), '0:0/fifo/644');
});

nodes('an existing name, a symlink included, is never replaced or followed', ({ dir }) => {
  const link = join(dir, 'link');
  symlinkSync('target', link);
  const d = openSync(dir, DIR_FLAGS);
  try {
    expectErrno(() => mknodat(d, 'link', C.S_IFIFO | 0o644, 0, 0), 'EEXIST', 'mknodat', 'link');
    expectErrno(() => mkdirat(d, 'link', 0o755), 'EEXIST', 'mkdirat', 'link');
    expectErrno(() => symlinkat('elsewhere', d, 'link'), 'EEXIST', 'symlinkat', 'link');
    assert.not.ok(existsSync(join(dir, 'target')));
    assert.throws(() => mknodat(d, 'x', C.S_IFIFO, -1, 0), /major/);
  } finally {
    closeSync(d);
  }
});

// ---------------------------------------------------------------------------------------
const at = suite<Ctx>('descriptor-relative calls');
at.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-at-'));
});
at.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

at('openBeneath creates below the root and refuses symlinks, `..`, absolute paths and mounts', ({ dir }) => {
  const root = join(dir, 'root');
  const outside = join(dir, 'outside');
  mkdirSync(join(root, 'a/b'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, 'victim'), 'keep\n');
  symlinkSync(outside, join(root, 'a/out'));
  symlinkSync('victim-link', join(root, 'a/b/last'));
  const r = openSync(root, DIR_FLAGS);
  try {
    const fd = openBeneath(r, 'a/b/new', C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
    writeSync(fd, 'made\n');
    closeSync(fd);
    assert.is(readFileSync(join(root, 'a/b/new'), 'utf8'), 'made\n');
    expectErrno(() => openBeneath(r, 'a/b/new', C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600), 'EEXIST', 'openat2', 'a/b/new');
    expectErrno(() => openBeneath(r, 'a/out/victim', C.O_WRONLY), 'ELOOP', 'openat2', 'a/out/victim');
    expectErrno(() => openBeneath(r, 'a/out/new', C.O_WRONLY | C.O_CREAT, 0o600), 'ELOOP', 'openat2', 'a/out/new');
    expectErrno(() => openBeneath(r, 'a/b/last', C.O_WRONLY | C.O_CREAT, 0o600), 'ELOOP', 'openat2', 'a/b/last');
    expectErrno(() => openBeneath(r, '../outside/victim', C.O_RDONLY), 'EXDEV', 'openat2', '../outside/victim');
    expectErrno(() => openBeneath(r, `${outside}/victim`, C.O_RDONLY), 'EXDEV', 'openat2', `${outside}/victim`);
    // A directory for the *at calls, opened as a path only.
    const b = openBeneath(r, 'a/b', O_PATH | C.O_DIRECTORY);
    assert.ok(fstatSync(b).isDirectory());
    closeSync(b);
    // /proc is another mount: reached from / it is refused.
    const slash = openSync('/', DIR_FLAGS);
    try {
      expectErrno(() => openBeneath(slash, 'proc/self/status', C.O_RDONLY), 'EXDEV', 'openat2', 'proc/self/status');
    } finally {
      closeSync(slash);
    }
  } finally {
    closeSync(r);
  }
  assert.is(readFileSync(join(outside, 'victim'), 'utf8'), 'keep\n');
  assert.equal(readdirfd(openSync(outside, DIR_FLAGS)).map(String), ['victim']);
});

at('hashCopy with writeback writes and hashes the same bytes across its writeback steps', async ({ dir }) => {
  const bytes = Buffer.from(Array.from({ length: (20 << 20) + 4321 }, (_, i) => (i * 2654435761) >>> 24));
  writeFileSync(join(dir, 'src'), bytes);
  const src = openSync(join(dir, 'src'), 'r');
  const dst = openSync(join(dir, 'dst'), 'w+');
  try {
    const digest = await addon().hashCopy(src, 0, bytes.length, dst, 4096, true);
    assert.is(digest, createHash('sha256').update(bytes).digest('hex'));
    assert.ok(readFileSync(join(dir, 'dst')).subarray(4096).equals(bytes), 'the bytes, past 16 MiB too');
    assert.is(await addon().hashCopy(src, 0, 100, -1, 0, true), createHash('sha256').update(bytes.subarray(0, 100)).digest('hex'), 'dst -1: nothing to write back');
    assert.throws(() => addon().hashCopy(src, 0, 10, dst, 0, 1 as unknown as boolean), /writeback\?: boolean/);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
});

at('hashCopy hashes a byte range on the pool and writes it where asked; a short source or a bad descriptor rejects', async ({ dir }) => {
  const bytes = Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => (i * 2654435761) >>> 24));
  writeFileSync(join(dir, 'src'), bytes);
  writeFileSync(join(dir, 'dst'), Buffer.alloc(16, 0x55));
  const src = openSync(join(dir, 'src'), 'r');
  const dst = openSync(join(dir, 'dst'), 'r+');
  try {
    const from = 12_345;
    const length = bytes.length - from - 999;
    const range = bytes.subarray(from, from + length);
    const digest = await addon().hashCopy(src, from, length, dst, 7);
    assert.is(digest, createHash('sha256').update(range).digest('hex'), 'the sha256 of the bytes read');
    const out = readFileSync(join(dir, 'dst'));
    assert.ok(out.subarray(0, 7).equals(Buffer.alloc(7, 0x55)), 'the bytes before the target offset are untouched');
    assert.ok(out.subarray(7).equals(range), 'the range, written at the target offset (across several MiB reads)');
    assert.is(await addon().hashCopy(src, 0, bytes.length, -1, 0), createHash('sha256').update(bytes).digest('hex'), 'dst -1: only hashed');
    assert.is(await addon().hashCopy(src, 5, 0, -1, 0), createHash('sha256').digest('hex'), 'nothing: the empty digest');
    const short = await addon().hashCopy(src, bytes.length - 10, 11, -1, 0).catch((e: NodeJS.ErrnoException) => e);
    assert.instance(short, Error);
    assert.is((short as NodeJS.ErrnoException).code, 'ERR_OUT_OF_RANGE');
    const bad = await addon().hashCopy(src, 0, 10, src, 0).catch((e: Error) => e); // read-only descriptor as target
    assert.instance(bad, Error);
    assert.match((bad as Error).message, /pwrite/);
    assert.throws(() => addon().hashCopy(src, -1, 10, -1, 0), /hashCopy\(/);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
});

at('hashRead hashes byte ranges of a file into a stream, one at a time; a short source spends the stream', async ({ dir }) => {
  const bytes = Buffer.from(Array.from({ length: (2 << 20) + 777 }, (_, i) => (i * 2246822519) >>> 24));
  writeFileSync(join(dir, 'src'), bytes);
  const fd = openSync(join(dir, 'src'), 'r');
  try {
    const a = addon();
    const s = a.hashOpen();
    const first = a.hashRead(s, fd, 0, 1_500_000);
    assert.throws(() => a.hashRead(s, fd, 1_500_000, 10), /update outstanding/, 'one read at a time');
    await first;
    await a.hashUpdate(s, bytes.subarray(1_500_000, 1_600_000)); // bytes and ranges mix in order
    await a.hashRead(s, fd, 1_600_000, bytes.length - 1_600_000);
    assert.is(a.hashDigest(s), createHash('sha256').update(bytes).digest('hex'), 'the ranges in order: the whole file');

    const t = a.hashOpen();
    const short = await a.hashRead(t, fd, bytes.length - 10, 11).catch((e: NodeJS.ErrnoException) => e);
    assert.instance(short, Error);
    assert.is((short as NodeJS.ErrnoException).code, 'ERR_OUT_OF_RANGE');
    assert.match((short as Error).message, /^hashRead: /);
    assert.throws(() => a.hashDigest(t), /digest was already taken/, 'a stream hashed in part gives no digest');
    assert.throws(() => a.hashRead(a.hashOpen(), -1, 0, 1), /hashRead\(/);
    assert.throws(() => a.hashRead({}, fd, 0, 1), /hashRead\(/);
  } finally {
    closeSync(fd);
  }
});

at('the *at calls act on the name in the directory, never through a symlink', ({ dir }) => {
  const outside = join(dir, 'outside');
  writeFileSync(outside, 'x', { mode: 0o600 });
  const d = openSync(dir, DIR_FLAGS);
  try {
    symlinkat(outside, d, 'link');
    assert.is(readlinkSync(join(dir, 'link')), outside);
    fchownat(d, 'link', 1234, 5678, AT_SYMLINK_NOFOLLOW);
    assert.equal([lstatSync(join(dir, 'link')).uid, lstatSync(join(dir, 'link')).gid], [1234, 5678]);
    assert.is(statSync(outside).uid, 0, 'the target keeps its owner');
    expectErrno(() => fchmodat(d, 'link', 0o777, AT_SYMLINK_NOFOLLOW), 'ENOTSUP', 'fchmodat', 'link');
    assert.is(statSync(outside).mode & 0o7777, 0o600, 'the target keeps its mode');
    utimensat(d, 'link', 1_500_000_000, AT_SYMLINK_NOFOLLOW);
    assert.is(lstatSync(join(dir, 'link')).mtimeMs, 1_500_000_000_000);
    assert.not.equal(statSync(outside).mtimeMs, 1_500_000_000_000);
    // xattrs of a symlink through /proc/self/fd/<dir>/<name>.
    lsetxattr(fdPath(d, 'link'), 'trusted.on-link', Buffer.from('v'));
    assert.is(getfattrHex(join(dir, 'link'), 'trusted.on-link'), Buffer.from('v').toString('hex'));
    assert.is(getfattrHex(outside, 'trusted.on-link'), undefined);
    // A hard link to the symlink is a link to the symlink itself.
    linkat(d, 'link', d, 'link2');
    assert.ok(lstatSync(join(dir, 'link2')).isSymbolicLink());
    assert.is(lstatSync(join(dir, 'link')).nlink, 2);
    const st = fstatat(d, 'link', AT_SYMLINK_NOFOLLOW);
    assert.is(st.mode & C.S_IFMT, C.S_IFLNK);
    assert.equal([st.uid, st.gid, st.nlink], [1234, 5678, 2]);
    mkdirat(d, 'sub', 0o700);
    fchmodat(d, 'sub', 0o2750, AT_SYMLINK_NOFOLLOW);
    assert.is(statSync(join(dir, 'sub')).mode & 0o7777, 0o2750);
    // Rename: refuse to replace, swap two names atomically.
    expectErrno(() => renameat2(d, 'sub', d, 'link', RENAME_NOREPLACE), 'EEXIST', 'renameat2', 'sub');
    renameat2(d, 'sub', d, 'link', RENAME_EXCHANGE);
    assert.ok(lstatSync(join(dir, 'sub')).isSymbolicLink());
    assert.ok(lstatSync(join(dir, 'link')).isDirectory());
    unlinkat(d, 'link', AT_REMOVEDIR);
    unlinkat(d, 'sub');
    assert.equal(readdirfd(d).map(String).sort(), ['link2', 'outside']);
    // fsetxattr on a descriptor: an ACL as getfacl reads it back.
    const fd = openat(d, 'outside', C.O_RDONLY | C.O_NOFOLLOW);
    fsetxattr(fd, 'system.posix_acl_access', aclToXattr(aclFromText('u::rw-,u:1001:r--,g::---,m::r--,o::---')));
    assert.match(run('getfacl', '-c', '-n', outside), /user:1001:r--/);
    fremovexattr(fd, 'system.posix_acl_access');
    closeSync(fd);
    assert.not.match(run('getfacl', '-c', '-n', outside), /user:1001/);
  } finally {
    closeSync(d);
  }
});

at('rmtreeat removes a tree without following links; read-only dirs of the caller are opened', ({ dir }) => {
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'keep'), 'keep\n');
  const t = join(dir, 't');
  mkdirSync(join(t, 'ro/deeper'), { recursive: true });
  writeFileSync(join(t, 'ro/deeper/f'), 'x');
  symlinkSync(outside, join(t, 'ro/to-outside'));
  symlinkSync(join(outside, 'keep'), join(t, 'file-link'));
  chmodSync(join(t, 'ro/deeper'), 0o000);
  chmodSync(join(t, 'ro'), 0o500);
  const d = openSync(dir, DIR_FLAGS);
  try {
    rmtreeat(d, 't');
    rmtreeat(d, 'absent');
    assert.not.ok(existsSync(t));
    assert.equal(readdirfd(d).map(String), ['outside']);
    // A file is removed like unlink.
    writeFileSync(join(dir, 'f'), '');
    rmtreeat(d, 'f');
    assert.not.ok(existsSync(join(dir, 'f')));
  } finally {
    closeSync(d);
  }
  assert.is(readFileSync(join(outside, 'keep'), 'utf8'), 'keep\n');
  // Another filesystem below is never entered.
  const m = join(dir, 'm');
  mkdirSync(join(m, 'mnt'), { recursive: true });
  if (spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', join(m, 'mnt')]).status === 0) {
    try {
      writeFileSync(join(m, 'mnt/inside'), 'kept\n');
      const dd = openSync(dir, DIR_FLAGS);
      try {
        expectErrno(() => rmtreeat(dd, 'm'), 'EXDEV', 'rmtree', 'mnt');
      } finally {
        closeSync(dd);
      }
      assert.is(readFileSync(join(m, 'mnt/inside'), 'utf8'), 'kept\n');
    } finally {
      unmount(join(m, 'mnt'));
    }
  }
});

// ---------------------------------------------------------------------------------------
const unpriv = suite<Ctx>('unprivileged (setpriv 65534)');
unpriv.before.each((ctx) => {
  ctx.dir = mkdtempSync(join('/tmp', 'strata-unpriv-'));
  chmodSync(ctx.dir, 0o777);
});
unpriv.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

unpriv('trusted.x fails with EPERM, user.x on an owned file works', ({ dir }) => {
  // The child imports the same xattr module as this test: native/xattr.ts under tsx,
  // dist/native/xattr.js after tsc.
  const self = fileURLToPath(import.meta.url);
  const fromSource = self.endsWith('.ts');
  const moduleUrl = new URL(fromSource ? '../native/xattr.ts' : '../native/xattr.js', import.meta.url).href;
  const script = join(dir, 'probe.mjs');
  writeFileSync(
    script,
    `import { writeFileSync } from 'node:fs';
const { lsetxattr, lgetxattr } = await import(${JSON.stringify(moduleUrl)});
const f = ${JSON.stringify(join(dir, 'owned'))};
writeFileSync(f, '');
const out = { uid: process.getuid() };
lsetxattr(f, 'user.x', Buffer.from([0xff, 0x00]));
out.user = lgetxattr(f, 'user.x').toString('hex');
try { lsetxattr(f, 'trusted.x', Buffer.from('t')); out.trusted = 'set'; }
catch (e) { out.trusted = e.code; out.syscall = e.syscall; }
console.log(JSON.stringify(out));
`,
  );
  const nodeArgs = fromSource ? ['--import', 'tsx', script] : [script];
  const r = runAs(nobody(dir), process.execPath, nodeArgs, { cwd: fileURLToPath(new URL('..', import.meta.url)), env: { TMPDIR: dir } });
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.toString('utf8').trim().split('\n').pop()!);
  assert.equal(out, { uid: 65534, user: 'ff00', trusted: 'EPERM', syscall: 'lsetxattr' });
  assert.is(getfattrHex(join(dir, 'owned'), 'user.x'), 'ff00');
  assert.is(getfattrHex(join(dir, 'owned'), 'trusted.x'), undefined);
});

xattr.run();
links.run();
at.run();
nodes.run();
unpriv.run();

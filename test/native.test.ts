/**
 * native/xattr.ts against the real kernel and the reference tools (getfattr, setcap,
 * getcap, stat, setpriv): values byte for byte, symlinks never followed, device nodes,
 * and the unprivileged view (trusted.* refused with EPERM, user.* allowed).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, constants as C } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lgetxattr, llistxattr, lremovexattr, lsetxattr, mknod, readXattrs, XATTR_CREATE } from '../native/xattr.js';
import { applyNodeAttrs, readNodeAttrs } from '../native/fsops.js';

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
  const prev = process.umask(0);
  try {
    mknod(join(dir, 'null'), C.S_IFCHR | 0o666, 1, 3);
    mknod(join(dir, 'loop'), C.S_IFBLK | 0o640, 7, 0);
    mknod(join(dir, 'big'), C.S_IFCHR | 0o600, 259, 70000);
    mknod(join(dir, 'whiteout'), C.S_IFCHR | 0o000, 0, 0);
    mknod(join(dir, 'fifo'), C.S_IFIFO | 0o644, 0, 0);
  } finally {
    process.umask(prev);
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
  expectErrno(() => mknod(link, C.S_IFIFO | 0o644, 0, 0), 'EEXIST', 'mknod', link);
  assert.not.ok(existsSync(join(dir, 'target')));
  assert.throws(() => mknod(join(dir, 'x'), C.S_IFIFO, -1, 0), /major/);
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
  const r = spawnSync(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...nodeArgs],
    { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8', env: { ...process.env, HOME: dir, TMPDIR: dir } },
  );
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(out, { uid: 65534, user: 'ff00', trusted: 'EPERM', syscall: 'lsetxattr' });
  assert.is(getfattrHex(join(dir, 'owned'), 'user.x'), 'ff00');
  assert.is(getfattrHex(join(dir, 'owned'), 'trusted.x'), undefined);
});

// ---------------------------------------------------------------------------------------
const attrs = suite<Ctx>('fsops node attrs');
attrs.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-attrs-'));
});
attrs.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

const getfaclText = (p: string, which: string): string =>
  run('getfacl', '--absolute-names', '--omit-header', '--numeric', '--no-effective', which, p)
    .split('\n')
    .filter((l) => l !== '')
    .join(',');

attrs('read splits ACLs from xattrs; apply reproduces both on a fresh node', ({ dir }) => {
  const src = join(dir, 'src');
  const sub = join(dir, 'sub');
  writeFileSync(src, '');
  mkdirSync(sub);
  run('setfacl', '--set', 'u::rw-,u:1001:r--,g::r-x,m::r-x,o::---', src);
  run('setfacl', '-d', '--set', 'u::rwx,g::r-x,g:100:rwx,m::rwx,o::---', sub);
  run('setcap', 'cap_net_raw+ep', src);
  lsetxattr(src, 'user.u', Buffer.from([0xff]));
  lsetxattr(src, 'trusted.t', Buffer.from('t'));
  const a = readNodeAttrs(src);
  assert.equal([...a.xattrs!.keys()], ['security.capability', 'trusted.t', 'user.u']);
  assert.equal(a.acl, { access: getfaclText(src, '--access') });
  assert.equal(readNodeAttrs(sub), { acl: { default: getfaclText(sub, '--default') } }, 'no access ACL: the kernel keeps none');
  writeFileSync(join(dir, 'empty'), '');
  assert.equal(readNodeAttrs(join(dir, 'empty')), {});

  const dst = join(dir, 'dst');
  const dsub = join(dir, 'dsub');
  writeFileSync(dst, '');
  mkdirSync(dsub);
  assert.equal(applyNodeAttrs(dst, a), []);
  assert.equal(applyNodeAttrs(dsub, readNodeAttrs(sub)), []);
  assert.equal(readNodeAttrs(dst), a);
  assert.is(getfaclText(dst, '--access'), getfaclText(src, '--access'));
  assert.is(getfaclText(dsub, '--default'), getfaclText(sub, '--default'));
  assert.is(getfattrHex(dst, 'security.capability'), getfattrHex(src, 'security.capability'));
});

attrs('apply collects what the kernel refuses, or throws without collect', ({ dir }) => {
  const link = join(dir, 'link');
  symlinkSync('target', link);
  const want = { xattrs: new Map([['user.x', Buffer.from('v')], ['trusted.y', Buffer.from('w')]]) };
  const failed = applyNodeAttrs(link, want, { collect: true });
  assert.equal(failed.map((f) => [f.name, f.code]), [['user.x', 'EPERM']]);
  assert.is(lgetxattr(link, 'trusted.y')?.toString(), 'w', 'the rest was still applied');
  assert.throws(() => applyNodeAttrs(link, want), (e: NodeJS.ErrnoException) => e.code === 'EPERM');
});

xattr.run();
links.run();
attrs.run();
nodes.run();
unpriv.run();

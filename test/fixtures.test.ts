/**
 * The shared test corpus checked with the reference tools only: snapshotTree/diffTrees
 * against hand-made changes, the small tree's metadata as getfacl/getfattr/lstat see it,
 * GNU tar and bsdtar packs against each other, the stack's two reference merges (GNU tar
 * with whiteouts, umoci) against each other, and the hostile archives against GNU tar,
 * gzip and python3's tarfile. Root (mknod, chown, setcap, trusted/security xattrs).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  chmodSync, chownSync, existsSync, lutimesSync, mkdirSync, readdirSync, readFileSync, symlinkSync, unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';
import {
  makeSmallTree, packBsd, packBsdGzip, packBsdZstd, packGnu, packGnuGzip, packGnuReverse, packGnuZstd, SMALL_TREE,
  SMALL_TREE_ACL, SMALL_TREE_XATTRS,
} from './fixtures/small-tree.js';
import { buildOciLayout, listTar, makeStack, ociLayerBlobs, referenceExtract, STACK, umociUnpack } from './fixtures/stack.js';
import { HOSTILE_ARCHIVES, hostileStackLayers, hostileSymlinkEscape } from './fixtures/hostile.js';

interface Ctx {
  dir: string;
}

const GNU_X = ['-x', '--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-p'];

function extractGnu(tar: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  mustRun('tar', [...GNU_X, '-C', dir, '-f', tar]);
  return dir;
}

function extractBsd(tar: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  mustRun('bsdtar', ['-x', '--xattrs', '--acls', '--numeric-owner', '-p', '-C', dir, '-f', tar]);
  return dir;
}

function has(buf: Buffer, needle: Buffer | string): boolean {
  return buf.indexOf(typeof needle === 'string' ? Buffer.from(needle, 'latin1') : needle) >= 0;
}

// ---------------------------------------------------------------------------------------
const tree = suite<Ctx>('tree: snapshotTree / diffTrees');
tree.before.each((ctx) => {
  ctx.dir = tempDir('strata-fixtures');
});
tree.after.each((ctx) => removeDir(ctx.dir));

tree('two builds and a cp -a copy of the small tree are identical', ({ dir }) => {
  makeSmallTree(join(dir, 'a'));
  makeSmallTree(join(dir, 'b'));
  mustRun('cp', ['-a', join(dir, 'a'), join(dir, 'c')]);
  assert.equal(diffTrees(join(dir, 'a'), join(dir, 'b')), []);
  assert.equal(diffTrees(join(dir, 'a'), join(dir, 'c')), []);
  assert.equal(snapshotTree(join(dir, 'a')), snapshotTree(join(dir, 'b')));
});

tree('detects each kind of difference', ({ dir }) => {
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  makeSmallTree(a);
  mustRun('mknod', ['-m', '0600', join(a, 'dev0'), 'c', '1', '3']);
  mustRun('cp', ['-a', a, b]);
  assert.equal(diffTrees(a, b), []);
  const keepMtime = (rel: string, fn: () => void) => {
    const t = snapshotTree(b).get(rel)!.mtime;
    fn();
    lutimesSync(join(b, rel), t, t);
  };
  chmodSync(join(b, SMALL_TREE.text), 0o600);
  chownSync(join(b, SMALL_TREE.bigIds), 3_000_000, 7);
  chownSync(join(b, SMALL_TREE.empty), 5, 0);
  keepMtime(SMALL_TREE.threeBlocks, () => {
    const buf = readFileSync(join(b, SMALL_TREE.threeBlocks));
    buf[700] ^= 1; // same size, other content
    writeFileSync(join(b, SMALL_TREE.threeBlocks), buf);
  });
  keepMtime(SMALL_TREE.unicode, () => writeFileSync(join(b, SMALL_TREE.unicode), 'longer content\n'));
  keepMtime('.', () => {
    const lt = snapshotTree(b).get(SMALL_TREE.symlink)!.mtime;
    unlinkSync(join(b, SMALL_TREE.symlink));
    symlinkSync('data/empty', join(b, SMALL_TREE.symlink));
    lutimesSync(join(b, SMALL_TREE.symlink), lt, lt);
    // only the device number changes: keep the node's mtime (mknod stamps the clock, which may
    // have moved to the next second since dev0 was made in `a`)
    const dt = snapshotTree(b).get('dev0')!.mtime;
    unlinkSync(join(b, 'dev0'));
    mustRun('mknod', ['-m', '0600', join(b, 'dev0'), 'c', '1', '5']);
    lutimesSync(join(b, 'dev0'), dt, dt);
    // break the hard link: hard-b becomes its own copy with the same content and metadata
    const t = snapshotTree(b).get(SMALL_TREE.hardB)!.mtime;
    const content = readFileSync(join(b, SMALL_TREE.hardB));
    unlinkSync(join(b, SMALL_TREE.hardB));
    writeFileSync(join(b, SMALL_TREE.hardB), content, { mode: 0o644 });
    lutimesSync(join(b, SMALL_TREE.hardB), t, t);
  });
  lutimesSync(join(b, SMALL_TREE.xattrFile), 5, 5);
  mustRun('setfattr', ['-h', '-n', 'user.binary', '-v', '0x00ff00', join(b, SMALL_TREE.xattrFile)]);
  mustRun('setfattr', ['-h', '-x', 'user.mime_type', join(b, SMALL_TREE.xattrFile)]);
  mustRun('setfattr', ['-h', '-n', 'trusted.added', '-v', 'x', join(b, SMALL_TREE.text)]);
  mustRun('setfacl', ['-m', 'g:2002:r--', join(b, SMALL_TREE.aclDir)]);
  mustRun('setfacl', ['-k', join(b, SMALL_TREE.aclDir)]);
  mustRun('setcap', ['-r', join(b, SMALL_TREE.capFile)]);

  // the filters remove exactly their own kind of line
  const filtered = diffTrees(a, b, { ignoreAcls: true, ignoreXattrPrefixes: ['trusted.', 'security.'] });
  assert.not.ok(filtered.some((l) => /acl\.|xattr (trusted|security)\./.test(l)), filtered.join('\n'));
  assert.ok(filtered.some((l) => l.includes('xattr user.binary')));

  const d = diffTrees(a, b);
  assert.is(d.length - filtered.length, 4);
  const expect = [
    `${SMALL_TREE.aclDir}: acl.access user::rwx,user:1001:r-x,group::rwx,group:2001:rwx,mask::rwx,other::r-x != user::rwx,user:1001:r-x,group::rwx,group:2001:rwx,group:2002:r--,mask::rwx,other::r-x`,
    `${SMALL_TREE.aclDir}: acl.default ${SMALL_TREE_ACL.default} != (none)`,
    `${SMALL_TREE.bigIds}: gid 3000001 != 7`,
    `${SMALL_TREE.capFile}: xattr security.capability 0100000200200000000000000000000000000000 != (none)`,
    `${SMALL_TREE.empty}: uid 0 != 5`,
    `${SMALL_TREE.text}: mode 0644 != 0600`,
    `${SMALL_TREE.text}: xattr trusted.added (none) != 78`,
    `${SMALL_TREE.threeBlocks}: sha256 fe7f957aec14d14f8f5e13959eaf70a8db4981e64f4828af5b05378277f6e514 != `,
    `${SMALL_TREE.unicode}: size 13 != 15`,
    `${SMALL_TREE.unicode}: sha256 `,
    'dev0: rdev 1:3 != 1:5',
    `${SMALL_TREE.hardA}: hard links [hard-a,hard-b] != (none)`,
    `${SMALL_TREE.hardB}: hard links [hard-a,hard-b] != (none)`,
    `${SMALL_TREE.symlink}: target data/text.txt != data/empty`,
    `${SMALL_TREE.xattrFile}: mtime `,
    `${SMALL_TREE.xattrFile}: xattr user.binary 00ff0041ff0a80 != 00ff00`,
    `${SMALL_TREE.xattrFile}: xattr user.mime_type 746578742f706c61696e != (none)`,
  ];
  for (const e of expect) assert.ok(d.some((l) => l.startsWith(e)), `missing "${e}" in\n${d.join('\n')}`);
  assert.is(d.length, expect.length, d.join('\n'));
});

tree('type changes, missing paths and the ignore options', ({ dir }) => {
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  for (const t of [a, b]) {
    mkdirSync(join(t, 'x/.strata'), { recursive: true });
    writeFileSync(join(t, 'f'), 'same\n');
    lutimesSync(join(t, 'f'), 100, 100);
  }
  writeFileSync(join(a, 'x/only-a'), '');
  mkdirSync(join(b, 'x/only-b'));
  mkdirSync(join(a, 'kind'));
  writeFileSync(join(b, 'kind'), '');
  mkdirSync(join(b, '.strata'));
  writeFileSync(join(b, '.strata/lock.json'), '{}');
  mkdirSync(join(b, '.singularity.d/env'), { recursive: true });
  chownSync(join(b, 'f'), 1234, 0);
  chmodSync(join(b, '.'), 0o700);
  chmodSync(join(a, '.'), 0o755);
  lutimesSync(join(a, 'x'), 1, 1);
  lutimesSync(join(b, 'x'), 2, 2);

  const all = diffTrees(a, b);
  for (const e of [
    'only in b: .singularity.d (dir)',
    'only in b: .strata (dir)',
    'only in b: .strata/lock.json (file)',
    'kind: type dir != file',
    'f: uid 0 != 1234',
    'x: mtime 1 != 2',
    'only in a: x/only-a (file)',
    'only in b: x/only-b (dir)',
    '.: mode 0755 != 0700',
  ]) {
    assert.ok(all.includes(e), `missing "${e}" in\n${all.join('\n')}`);
  }
  const quiet = diffTrees(a, b, {
    ignoreDirMtimes: true, ignoreOwners: true, ignoreStrataPaths: true, ignoreRoot: true,
    ignorePaths: ['kind', 'x/only-a', 'x/only-b'],
  });
  assert.equal(quiet, []);
  // .strata below the top is a normal path, never ignored by ignoreStrataPaths
  writeFileSync(join(b, 'x/.strata/k'), '');
  assert.equal(diffTrees(a, b, { ignoreStrataPaths: true, ignoreDirMtimes: true, ignoreOwners: true, ignoreRoot: true, ignorePaths: ['kind', 'x/only-a', 'x/only-b'] }), [
    'only in b: x/.strata/k (file)',
  ]);
});

tree('names with newline, backslash and UTF-8 keep their xattrs and ACLs', ({ dir }) => {
  const names = ['new\nline', 'back\\134slash', 'é ü'];
  for (const n of names) {
    writeFileSync(join(dir, n), n);
    mustRun('setfattr', ['-h', '-n', 'user.n', '-v', '0x01', join(dir, n)]);
    mustRun('setfacl', ['-m', 'u:77:r--', join(dir, n)]);
  }
  const snap = snapshotTree(dir);
  for (const n of names) {
    const node = snap.get(n);
    assert.ok(node, n);
    assert.equal(node!.xattrs, { 'user.n': '01' });
    assert.is(node!.acl.access, 'user::rw-,user:77:r--,group::r--,mask::r--,other::r--');
  }
});

tree.run();

// ---------------------------------------------------------------------------------------
const small = suite<Ctx>('fixture: small tree and its packs');
small.before.each((ctx) => {
  ctx.dir = tempDir('strata-fixtures');
});
small.after.each((ctx) => removeDir(ctx.dir));

small('has one of everything, as lstat, getfattr and getfacl see it', ({ dir }) => {
  const t = join(dir, 't');
  makeSmallTree(t);
  const s = snapshotTree(t);
  const n = (p: string) => {
    const x = s.get(p);
    assert.ok(x, `missing ${p}`);
    return x!;
  };
  assert.is(n(SMALL_TREE.empty).size, 0);
  assert.is(n(SMALL_TREE.threeBlocks).size, 1536);
  assert.is(Buffer.byteLength(SMALL_TREE.longName.split('/').pop()!), 150);
  assert.is(Buffer.byteLength(SMALL_TREE.longPath), 300);
  assert.is(n(SMALL_TREE.longPath).type, 'file');
  assert.is(n(SMALL_TREE.longName).type, 'file');
  assert.equal(n(SMALL_TREE.aclDir).acl, SMALL_TREE_ACL);
  assert.ok(n(SMALL_TREE.aclInherited).acl.access?.includes('group:2001:rwx'));
  for (const [k, v] of Object.entries(SMALL_TREE_XATTRS)) assert.is(n(SMALL_TREE.xattrFile).xattrs[k], v.toString('hex'));
  // getcap is the independent reader of the capability
  assert.match(mustRun('getcap', [join(t, SMALL_TREE.capFile)]).stdout.toString(), /cap_net_raw[=+]ep/);
  assert.is(n(SMALL_TREE.capFile).xattrs['security.capability']!.slice(0, 8), '01000002');
  assert.is(n(SMALL_TREE.symlink).target, 'data/text.txt');
  assert.is(n(SMALL_TREE.dangling).type, 'symlink');
  assert.equal(n(SMALL_TREE.hardA).links, [SMALL_TREE.hardA, SMALL_TREE.hardB]);
  assert.is(n(SMALL_TREE.fifo).type, 'fifo');
  assert.is(n(SMALL_TREE.bigIds).uid, 3_000_000);
  assert.is(n(SMALL_TREE.bigIds).gid, 3_000_001);
  assert.is(n(SMALL_TREE.setuid).mode, 0o4755);
  assert.is(n(SMALL_TREE.setgidDir).mode, 0o2775);
  assert.is(n(SMALL_TREE.sticky).mode, 0o1777);
  // fixed, distinct mtimes (hard-a/hard-b share one inode, hence one time)
  const times = new Set([...s.values()].map((x) => x.mtime));
  assert.is(times.size, s.size - 1);
  for (const x of s.values()) assert.ok(x.mtime >= 1_600_000_000 && x.mtime < 1_600_100_000, x.path);
  // getfacl text in the tool's own words
  const gf = mustRun('getfacl', ['-n', '-c', '-E', join(t, SMALL_TREE.aclDir)]).stdout.toString();
  assert.ok(gf.includes('default:group:2001:rwx\n') && gf.includes('user:1001:r-x\n'), gf);
});

small('GNU, reversed GNU and bsdtar packs list the same paths and extract to the same tree', ({ dir }) => {
  const t = join(dir, 't');
  makeSmallTree(t);
  const gnu = packGnu(t, join(dir, 'gnu.tar'));
  const bsd = packBsd(t, join(dir, 'bsd.tar'));
  const rev = packGnuReverse(t, join(dir, 'rev.tar'));
  const lg = listTar(gnu);
  const lb = listTar(bsd);
  const lr = listTar(rev);
  assert.equal([...lb].sort(), [...lg].sort());
  assert.equal([...lr].sort(), [...lg].sort());
  assert.is(lr[lr.length - 1], '.');
  assert.ok(lr.indexOf(SMALL_TREE.longPath) < lr.indexOf('long'), 'children before parents');
  assert.ok(lr.indexOf(SMALL_TREE.hardB) < lr.indexOf(SMALL_TREE.hardA));
  assert.is(lg.length, snapshotTree(t).size);

  assert.equal(diffTrees(t, extractGnu(gnu, join(dir, 'xg'))), []);
  assert.equal(diffTrees(t, extractGnu(rev, join(dir, 'xr'))), []);
  // bsdtar leaves the extraction root's own mtime alone (it does not apply './' to '.')
  assert.equal(diffTrees(t, extractBsd(bsd, join(dir, 'xb')), { ignoreRoot: true }), []);
  // GNU tar on a bsdtar archive: bsdtar writes a directory's entries after its siblings',
  // and GNU tar then fails to restore those directories' mtimes; everything else survives.
  assert.equal(diffTrees(t, extractGnu(bsd, join(dir, 'xgb')), { ignoreDirMtimes: true }), []);
});

small('the packs carry the dialects the store must read', ({ dir }) => {
  const t = join(dir, 't');
  makeSmallTree(t);
  const gnu = readFileSync(packGnu(t, join(dir, 'gnu.tar')));
  const bsd = readFileSync(packBsd(t, join(dir, 'bsd.tar')));
  const bin = SMALL_TREE_XATTRS['user.binary']!;
  // GNU: raw binary values, newline-separated ACL text, and the ACL xattrs as well
  assert.ok(has(gnu, Buffer.concat([Buffer.from('SCHILY.xattr.user.binary='), bin, Buffer.from('\n')])));
  assert.ok(has(gnu, `SCHILY.acl.default=${SMALL_TREE_ACL.default.split(',').join('\n')}\n`));
  assert.ok(has(gnu, 'SCHILY.xattr.system.posix_acl_access='));
  assert.ok(has(gnu, 'SCHILY.xattr.security.capability='));
  assert.ok(has(gnu, ' uid=3000000\n'));
  // bsdtar: base64 LIBARCHIVE.xattr (unpadded) next to SCHILY.xattr, comma-separated ACLs
  assert.ok(has(bsd, `LIBARCHIVE.xattr.user.binary=${bin.toString('base64').replace(/=+$/, '')}\n`));
  assert.ok(has(bsd, `SCHILY.acl.default=${SMALL_TREE_ACL.default}\n`));
  assert.ok(has(bsd, 'SCHILY.acl.access=user::rwx,group::rwx,other::r-x,user:1001:r-x,group:2001:rwx,mask::rwx\n'));
});

small('gzip and zstd variants are real gzip/zstd streams of the same members', ({ dir }) => {
  const t = join(dir, 't');
  makeSmallTree(t);
  const want = listTar(packGnu(t, join(dir, 'plain.tar')));
  const cases: [string, (d: string, o: string) => string, string, string][] = [
    ['gnu.tar.gz', packGnuGzip, '1f8b', 'gzip'],
    ['gnu.tar.zst', packGnuZstd, '28b52ffd', 'zstd'],
    ['bsd.tar.gz', packBsdGzip, '1f8b', 'gzip'],
    ['bsd.tar.zst', packBsdZstd, '28b52ffd', 'zstd'],
  ];
  for (const [name, pack, magic, tool] of cases) {
    const out = pack(t, join(dir, name));
    assert.is(readFileSync(out).subarray(0, magic.length / 2).toString('hex'), magic, name);
    const plain = join(dir, `${name}.tar`);
    writeFileSync(plain, mustRun(tool, ['-d', '-c', out]).stdout);
    assert.equal(listTar(plain).sort(), [...want].sort(), name);
  }
});

small.run();

// ---------------------------------------------------------------------------------------
const stack = suite<Ctx>('fixture: four-layer stack and its references');
stack.before.each((ctx) => {
  ctx.dir = tempDir('strata-fixtures');
});
stack.after.each((ctx) => removeDir(ctx.dir));

stack('layers carry whiteouts, devices, ACLs, xattrs and links', ({ dir }) => {
  const s = makeStack(join(dir, 'stack'));
  assert.equal(s.layers.map((l) => l.name), ['base', 'mid', 'app', 'lic']);
  const mid = listTar(s.layers[1]!.tar);
  for (const w of ['etc/.wh.hostname', 'usr/lib/.wh.old', 'usr/share/doc/.wh..wh..opq']) assert.ok(mid.includes(w), w);
  const base = snapshotTree(s.layers[0]!.dir);
  assert.equal(base.get('dev/null')!.rdev, { major: 1, minor: 3 });
  assert.equal(base.get('dev/zero')!.rdev, { major: 1, minor: 5 });
  assert.is(base.get('dev/loop0')!.type, 'block');
  assert.equal(base.get('dev/loop0')!.rdev, { major: 7, minor: 0 });
  assert.is(base.get('dev/initctl')!.type, 'fifo');
  assert.is(base.get('tmp')!.mode, 0o1777);
  const app = snapshotTree(s.layers[2]!.dir);
  assert.is(app.get(STACK.bigFile)!.size, 300 * 1024);
  assert.is(readdirSync(join(s.layers[2]!.dir, 'opt/app/share/data')).length, STACK.smallFiles);
  const lic = snapshotTree(s.layers[3]!.dir);
  assert.equal(lic.get(STACK.licDir)!.acl, STACK.licAcl);
  assert.is(lic.get(STACK.licFile)!.acl.access, STACK.licFileAcl);
  assert.is(lic.get(STACK.licFile)!.xattrs['user.license'], Buffer.from('site-1234').toString('hex'));
  assert.match(mustRun('getcap', [join(s.layers[3]!.dir, STACK.licCap)]).stdout.toString(), /cap_net_bind_service[=+]ep/);
  assert.equal(lic.get(STACK.licHardLinks[0])!.links, [...STACK.licHardLinks]);
  assert.is(lic.get(STACK.licSymlink)!.target, 'liblic.so.1');
  // each tar is its directory, as GNU tar sees it
  for (const l of s.layers) assert.equal(diffTrees(l.dir, extractGnu(l.tar, join(dir, `x-${l.name}`))), [], l.name);
});

stack('GNU tar reference merge applies whiteouts and opaque dirs', ({ dir }) => {
  const s = makeStack(join(dir, 'stack'));
  const ref = referenceExtract(s.layers.map((l) => l.tar), join(dir, 'ref'));
  const m = snapshotTree(ref);
  assert.not.ok(m.has(STACK.whitedOutFile));
  assert.not.ok(m.has(STACK.whitedOutDir));
  assert.not.ok(m.has(`${STACK.whitedOutDir}/a.so`));
  for (const p of STACK.opaqueHidden) assert.not.ok(m.has(p), p);
  assert.ok(m.has(STACK.opaqueKept));
  assert.equal([...m.keys()].filter((p) => p.includes('.wh.')), []);
  for (const p of ['etc/passwd', 'etc/motd', 'usr/lib/libc.so.6', 'bin/mid-tool', STACK.bigFile]) assert.ok(m.has(p), p);
  assert.equal(m.get('dev/loop0')!.rdev, { major: 7, minor: 0 });
  assert.equal(m.get(STACK.licDir)!.acl, STACK.licAcl);
  assert.equal(m.get(STACK.licHardLinks[1])!.links, [...STACK.licHardLinks]);
  // a deletion does not leave its parent with the time of the merge
  assert.is(m.get('etc')!.mtime, snapshotTree(s.layers[1]!.dir).get('etc')!.mtime);
  // every path of the merge comes from the topmost layer that has it
  const layers = s.layers.map((l) => snapshotTree(l.dir));
  for (const [p, node] of m) {
    const top = [...layers].reverse().find((l) => l.has(p))!;
    assert.ok(top, p);
    const { links: _a, ...want } = top.get(p)!;
    const { links: _b, ...got } = node;
    assert.equal(got, want, p);
  }
});

stack('umoci writes the layers and unpacks the same tree as the GNU tar reference', ({ dir }) => {
  const s = makeStack(join(dir, 'stack'));
  const ref = referenceExtract(s.layers.map((l) => l.tar), join(dir, 'ref'));
  const layout = buildOciLayout(s, join(dir, 'oci'), 'v1');
  const rootfs = umociUnpack(layout, 'v1', join(dir, 'bundle'));
  assert.equal(diffTrees(ref, rootfs), []);
  // umoci's own bookkeeping lives beside the rootfs, not in it
  assert.ok(existsSync(join(dir, 'bundle', 'umoci.json')));

  const blobs = ociLayerBlobs(layout, 'v1');
  assert.is(blobs.length, 4);
  const tars = blobs.map((b) => {
    assert.is(b.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    return mustRun('gzip', ['-d', '-c', b.path]).stdout;
  });
  // umoci: ACLs only as binary system.posix_acl_* xattrs, no SCHILY.acl text
  assert.ok(has(tars[3]!, 'SCHILY.xattr.system.posix_acl_default='));
  assert.not.ok(has(tars[3]!, 'SCHILY.acl.'));
  assert.ok(has(tars[3]!, 'SCHILY.xattr.security.capability='));
  // umoci: no opaque marker, one whiteout per hidden child
  writeFileSync(join(dir, 'mid.tar'), tars[1]!);
  const mid = listTar(join(dir, 'mid.tar'));
  assert.not.ok(mid.some((p) => p.endsWith('.wh..wh..opq')));
  for (const w of ['etc/.wh.hostname', 'usr/lib/.wh.old', 'usr/share/doc/.wh.base.txt', 'usr/share/doc/.wh.legacy']) {
    assert.ok(mid.includes(w), `${w} in ${mid.join(' ')}`);
  }
  // GNU tar reads umoci's blobs, whiteouts included, but does not apply ACLs that come only
  // as SCHILY.xattr.system.posix_acl_* (it takes ACLs from SCHILY.acl.* alone): the ACLs
  // are the one and only loss. Ingest must do better than GNU tar here.
  const viaBlobs = join(dir, 'via-blobs');
  referenceExtract(tars.map((t, i) => {
    const p = join(dir, `umoci-${i}.tar`);
    writeFileSync(p, t);
    return p;
  }), viaBlobs);
  const lost = diffTrees(ref, viaBlobs);
  assert.ok(lost.length >= 3, lost.join('\n'));
  for (const l of lost) assert.match(l, /^opt\/lic[^:]*: acl\.(access|default) \S+ != \(none\)$/);
  assert.ok(lost.includes(`${STACK.licDir}: acl.default ${STACK.licAcl.default} != (none)`));
});

stack.run();

// ---------------------------------------------------------------------------------------
const hostile = suite<Ctx>('fixture: hostile archives');
hostile.before.each((ctx) => {
  ctx.dir = tempDir('strata-fixtures');
});
hostile.after.each((ctx) => removeDir(ctx.dir));

hostile('each archive is what it claims, as GNU tar, gzip and python3 tarfile see it', ({ dir }) => {
  const p = Object.fromEntries(Object.entries(HOSTILE_ARCHIVES).map(([k, f]) => [k, f(join(dir, 'h'))]));
  const list = (k: string) => run('tar', ['-tv', '--numeric-owner', '-f', p[k]!]);
  assert.match(list('absolute').stderr, /Removing leading `\/'/);
  assert.match(list('dotdot').stderr, /Removing leading `(a\/)?\.\.\/'/);
  assert.match(list('symlinkEscape').stdout.toString(), /evil -> \/tmp\/strata-hostile-X\n.*evil\/pwned/);
  assert.match(list('symlinkDotDot').stdout.toString(), /up -> \.\.\n.*up\/pwned/);
  assert.match(list('hardlinkAbsolute').stdout.toString(), /passwd link to etc\/passwd/);
  assert.match(list('hardlinkForward').stdout.toString(), /early link to later\n.*later\n/);
  assert.is(listTar(p['duplicate']!).filter((n) => n === 'dup').length, 2);
  const tr = list('truncated');
  assert.is.not(tr.code, 0);
  assert.match(tr.stderr, /Unexpected EOF/);
  assert.match(list('badChecksum').stderr, /does not look like a tar archive/);
  // python's tarfile names the fault precisely
  const py = run('python3', ['-c', 'import tarfile,sys; tarfile.open(sys.argv[1]).getmembers()', p['badChecksum']!]);
  assert.match(py.stderr, /bad checksum|invalid header/);
  assert.is.not(list('random').code, 0);
  assert.is(readFileSync(p['empty']!).length, 0);
  assert.is.not(list('empty').code, 0);
  const gz = run('gzip', ['-t', p['corruptGzip']!]);
  assert.is.not(gz.code, 0);
  assert.is(readFileSync(p['corruptGzip']!).subarray(0, 2).toString('hex'), '1f8b');
  // sparse: type 'S' in GNU format, GNU.sparse.* in pax; GNU tar restores the holes
  assert.is(String.fromCharCode(readFileSync(p['sparseGnu']!)[156]!), 'S');
  assert.ok(has(readFileSync(p['sparsePax']!), 'GNU.sparse.major=1'));
  for (const k of ['sparseGnu', 'sparsePax']) {
    const x = extractGnu(p[k]!, join(dir, `x-${k}`));
    const img = readFileSync(join(x, 'sparse.img'));
    assert.is(img.length, 1024 * 1024, k);
    assert.is(img.subarray(0, 4).toString(), 'HEAD');
    assert.is(img.subarray(512 * 1024, 512 * 1024 + 4).toString(), 'TAIL');
  }
});

hostile('GNU tar does not follow the escaping symlink (the fixture is armed, the reference holds)', ({ dir }) => {
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  const tar = hostileSymlinkEscape(join(dir, 'h'), outside);
  const x = join(dir, 'x');
  mkdirSync(x);
  const r = run('tar', ['-x', '-C', x, '-f', tar]);
  assert.is.not(r.code, 0, 'GNU tar should refuse evil/pwned');
  assert.equal(readdirSync(outside), []);
});

hostile('hostile layer stacks hold the traps they describe', ({ dir }) => {
  const h = hostileStackLayers(join(dir, 'hs'));
  const tv = (t: string) => mustRun('tar', ['-tv', '-f', t]).stdout.toString();
  assert.match(tv(h.etcSymlink[0]!), /^l.* etc -> \/\n$/);
  assert.equal(listTar(h.etcSymlink[1]!), ['etc/passwd']);
  assert.equal(listTar(h.whiteoutDotDot[1]!), ['etc', 'etc/.wh...', 'etc/.wh..']);
  assert.equal(listTar(h.hardlinkToWhitedOut[1]!), ['lib', 'lib/.wh.x']);
  assert.match(tv(h.hardlinkToWhitedOut[2]!), /lib\/y link to lib\/x/);
  // the reference merge refuses to write through the lower `etc -> /` symlink
  const x = join(dir, 'merge');
  assert.throws(() => referenceExtract(h.etcSymlink, x), /etc\/passwd goes through a lower-layer symlink/);
});

hostile.run();

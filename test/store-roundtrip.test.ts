/**
 * Issue 11, "what the writer accepts, the reader accepts", from the ingest side:
 * 1. every awkward layer strata imports survives `compose squash` → `strata unsquash`, the
 *    sandbox and unsquashfs (the reference reader) as the same tree: names of 255 bytes,
 *    control characters in names, a 4095-byte symlink target, ids 4294967294 and 3000000,
 *    device 4095:1048575, modes 0000 and 07777, xattrs on symlinks (trusted), binary and
 *    empty values, 255-byte xattr names, ACLs, hard-link groups, a fifo, OCI whiteouts;
 * 2. what no output can hold (store/layer/limits.ts) is refused at import, each with one line
 *    naming the entry and the limit, never an internal error: names over 255 bytes, symlink
 *    targets over 4095 bytes or empty, ids 4294967295 and above, devices beyond 12/20 bits,
 *    xattrs outside user./trusted./security., user.* on a symlink or FIFO, xattr names over
 *    255 bytes, values over 64 KiB, default ACLs on files, ACLs on symlinks, paths over
 *    4095 bytes;
 * 3. malformed numbers (GNU base-256 negatives), pax records piled on one entry, and image
 *    documents of the wrong shape (null descriptors, a null manifest, no size): one line
 *    each, never an internal error.
 * Root (devices, ownership, trusted xattrs).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeHeader, END_OF_ARCHIVE } from '../store/tar/writer.js';
import { gz, MT, OciLayout } from './fixtures/oci.js';
import { writeTars, type TarMember } from './fixtures/hostile.js';
import { buildTree, NAME255 } from './tar-fixtures.js';
import { diffTrees } from './helpers/tree.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobPath } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  work: string;
}

const T = 1_650_000_000;

/** Awkward but holdable: one tar (python tarfile, pax). */
const AWKWARD: TarMember[] = [
  { name: './', type: 'dir', mode: 0o755, mtime: T },
  { name: 'n', type: 'dir', mtime: T },
  { name: `n/${'y'.repeat(255)}`, data: 'a name of 255 bytes\n', mtime: T },
  { name: 'n/a\nb\x1b[31mc\t', data: 'control characters\n', mtime: T },
  { name: 'n/é ~ \\ "q"', data: 'punctuation\n', mtime: T },
  { name: 'n/longlink', type: 'symlink', linkname: `${'t/'.repeat(2047)}x`, mtime: T },
  { name: 'n/symmode', type: 'symlink', linkname: 'nowhere', mode: 0o644, mtime: T },
  { name: 'ids', type: 'dir', mtime: T },
  { name: 'ids/max', data: 'largest ids\n', uid: 4294967294, gid: 4294967294, mtime: T },
  { name: 'ids/big', data: 'big ids\n', uid: 3000000, gid: 3000001, mtime: T },
  { name: 'dev', type: 'dir', mtime: T },
  { name: 'dev/maxdev', type: 'char', devmajor: 4095, devminor: 1048575, mode: 0o600, mtime: T },
  { name: 'dev/blk', type: 'block', devmajor: 259, devminor: 65536, mode: 0o660, mtime: T },
  { name: 'dev/fifo', type: 'fifo', mode: 0o640, mtime: T },
  { name: 'modes', type: 'dir', mtime: T },
  { name: 'modes/none', type: 'dir', mode: 0, mtime: T },
  { name: 'modes/none/f', data: 'mode 0\n', mode: 0, mtime: T },
  { name: 'modes/all', type: 'dir', mode: 0o7777, mtime: T },
  { name: 'modes/suid', data: '#!/bin/sh\n', mode: 0o4755, mtime: T },
  { name: 'x', type: 'dir', mtime: T, pax: { 'SCHILY.xattr.trusted.dir': 'on a directory' } },
  { name: 'x/target', data: 'xattrs\n', mtime: T, pax: { 'SCHILY.xattr.user.empty': '', ['SCHILY.xattr.user.' + 'n'.repeat(250)]: 'long name', 'SCHILY.xattr.security.label': 'sec' } },
  { name: 'x/sym', type: 'symlink', linkname: 'target', mtime: T, pax: { 'SCHILY.xattr.trusted.onlink': 'trusted on a symlink' } },
  { name: 'h', type: 'dir', mtime: T },
  { name: 'h/a', data: 'one inode, five names\n', mtime: T },
  ...[1, 2, 3, 4].map((i): TarMember => ({ name: `h/l${i}`, type: 'hardlink', linkname: 'h/a', mtime: T })),
  { name: 'wh', type: 'dir', mtime: T },
  { name: 'wh/.wh..wh..opq', data: '' },
  { name: 'wh/.wh.gone', data: '' },
  { name: 'wh/kept', data: 'kept\n', mtime: T },
];

/** Each refused at import; the message must match. */
const REFUSED: Record<string, { members: TarMember[]; re: RegExp }> = {
  longName: { members: [{ name: 'z'.repeat(256), data: 'a' }], re: /name of 256 bytes.*at most 255/ },
  longPath: { members: [{ name: `${'d/'.repeat(2048)}f`, data: 'a' }], re: /path of 4097 bytes.*at most 4095/ },
  longSymlink: { members: [{ name: 'l', type: 'symlink', linkname: 't'.repeat(4096) }], re: /target is 4096 bytes/ },
  emptySymlink: { members: [{ name: 'l', type: 'symlink', linkname: '' }], re: /empty target/ },
  uidMinus1: { members: [{ name: 'f', data: 'a', uid: 4294967295 }], re: /owned by 4294967295:0/ },
  uidHuge: { members: [{ name: 'f', data: 'a', pax: { uid: '8589934592' } }], re: /owned by 8589934592/ },
  major: { members: [{ name: 'd', type: 'char', devmajor: 4096, devminor: 0 }], re: /device 4096:0/ },
  minor: { members: [{ name: 'd', type: 'block', devmajor: 1, devminor: 1048576 }], re: /device 1:1048576/ },
  systemXattr: { members: [{ name: 'f', data: 'a', pax: { 'SCHILY.xattr.system.nfs4_acl': 'x' } }], re: /xattr 'system\.nfs4_acl'/ },
  oddNamespace: { members: [{ name: 'f', data: 'a', pax: { 'SCHILY.xattr.os2.x': 'x' } }], re: /xattr 'os2\.x'/ },
  emptyXattrName: { members: [{ name: 'f', data: 'a', pax: { 'SCHILY.xattr.trusted.': 'x' } }], re: /xattr 'trusted\.'/ },
  userOnSymlink: { members: [{ name: 's', type: 'symlink', linkname: 'x', pax: { 'SCHILY.xattr.user.k': 'v' } }], re: /symlink with the xattr 'user\.k'/ },
  userOnFifo: { members: [{ name: 'p', type: 'fifo', pax: { 'SCHILY.xattr.user.k': 'v' } }], re: /fifo with the xattr 'user\.k'/ },
  xattrName256: { members: [{ name: 'f', data: 'a', pax: { ['SCHILY.xattr.user.' + 'n'.repeat(251)]: 'v' } }], re: /xattr name of 256 bytes/ },
  xattrValue: { members: [{ name: 'f', data: 'a', pax: { 'SCHILY.xattr.user.big': 'v'.repeat(65537) } }], re: /65537 bytes; Linux holds at most 65536/ },
  defaultAclOnFile: { members: [{ name: 'f', data: 'a', pax: { 'SCHILY.acl.default': 'user::rwx,group::r-x,other::---' } }], re: /file with a default ACL/ },
  aclOnSymlink: { members: [{ name: 's', type: 'symlink', linkname: 'x', pax: { 'SCHILY.acl.access': 'user::rwx,user:1234:r--,group::r-x,mask::r-x,other::---' } }], re: /symlink with an ACL/ },
};

const why = missing({ tools: ['unsquashfs', 'tar', 'python3'], root: true });
if (why) skipSuite('store: import → image → extract round trip', why);
else {
  const test = suite<Ctx>('store: import → image → extract round trip');
  test.before.each((ctx) => {
    ctx.dir = tempDir('strata-roundtrip-');
    ctx.store = join(ctx.dir, 'store');
    ctx.work = join(ctx.dir, 'work');
    mkdirSync(ctx.work);
  });
  test.after.each((ctx) => removeDir(ctx.dir));

  test('every awkward layer strata imports comes back the same from the image and the sandbox', ({ dir, store, work }) => {
    // The tar codec's own awkward tree (xattrs, ACLs, long names, devices), packed by GNU tar;
    // its before-the-epoch file stays out (SquashFS holds 32-bit unsigned mtimes).
    mkdirSync(join(dir, 'fx'));
    const fx = buildTree(join(dir, 'fx'));
    const fxTar = join(dir, 'fx.tar');
    mustRun('tar', ['--xattrs', '--xattrs-include=*', '--acls', '--format=pax', '--numeric-owner', '--exclude=./old', '-C', fx.tree, '-cf', fxTar, '.']);
    const [awkTar] = writeTars([{ out: join(dir, 'awk.tar'), members: AWKWARD }]);
    strataJson(['store', 'import', 'fx/1', fxTar], { store });
    const awk = strataJson(['store', 'import', 'awk/1', awkTar!], { store });
    const names = mustRun('tar', ['-tf', blobPath(store, awk.layer)]).stdout.toString();
    assert.match(names, new RegExp(`n/${'y'.repeat(255)}\n`), 'the 255-byte name is in the layer');
    strataJson(['compose', 'add', 'fx/1', 'awk/1'], { store, cwd: work });

    const img = join(dir, 'img.sqfs');
    strataJson(['compose', 'squash', img], { store, cwd: work });
    const sb = join(dir, 'sandbox');
    strataJson(['compose', 'sandbox', sb], { store, cwd: work });
    const un = join(dir, 'unsquash');
    const u = strata(['unsquash', img, un], { store, cwd: work });
    assert.is(u.code, 0, u.stderr);
    const ref = join(dir, 'unsquashfs');
    const r = run('unsquashfs', ['-no-progress', '-d', ref, img]);
    assert.is(r.code, 0, r.stderr);

    const opts = { ignoreStrataPaths: true };
    assert.equal(diffTrees(sb, un, opts), [], 'strata unsquash of the image = the sandbox');
    // unsquashfs restores no ACLs (strata keeps them in /.strata/acl.json and narrows modes).
    const manifest = JSON.parse(readFileSync(blobPath(store, strataJson(['store', 'show', 'fx/1'], { store }).record.manifest), 'utf8'));
    const aclPaths = Object.entries(manifest.entries as Record<string, { acl?: unknown }>).filter(([, e]) => e.acl).map(([p]) => p);
    assert.ok(aclPaths.length >= 2, 'the fixture has ACLs');
    assert.equal(diffTrees(sb, ref, { ...opts, ignoreAcls: true, ignorePaths: aclPaths }), [], 'unsquashfs of the image = the sandbox');
    // And the things most likely to be lost really are there.
    const lst = (p: string) => mustRun('stat', ['-c', '%u:%g %t:%T %a %F', join(sb, p)]).stdout.toString().trim();
    assert.is(lst('ids/max'), '4294967294:4294967294 0:0 644 regular file');
    assert.is(lst('dev/maxdev'), '0:0 fff:fffff 600 character special file');
    assert.is(lst(NAME255), '0:0 0:0 644 regular file');
    assert.is(mustRun('readlink', [join(un, 'n/longlink')]).stdout.length, 4095 + 1);
  });

  test('what no output can hold is refused at import: one line each, naming the limit', ({ dir, store }) => {
    const jobs = Object.entries(REFUSED).map(([name, { members }]) => ({ out: join(dir, `${name}.tar`), members }));
    writeTars(jobs);
    for (const [name, { re }] of Object.entries(REFUSED)) {
      assertOneLineError(strata(['store', 'import', `bad/${name}`, join(dir, `${name}.tar`)], { store }), name, re);
    }
    assert.equal(strataJson(['store', 'ls'], { store }), []);
  });

  test('malformed numbers and image documents: one line each, never an internal error', ({ dir, store }) => {
    const fix = (b: Buffer) => {
      b.fill(0x20, 148, 156);
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += b[i]!;
      b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
      return b;
    };
    // GNU base-256 -1 in a numeric field (0xff bytes).
    const negative = (name: string, type: 'file' | 'char', off: number, len: number) => {
      const h = Buffer.from(encodeHeader({ path: 'e', type, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, devmajor: 1, devminor: 1 }));
      h.fill(0xff, off, off + len);
      const f = join(dir, `${name}.tar`);
      writeFileSync(f, Buffer.concat([fix(h), END_OF_ARCHIVE]));
      return f;
    };
    const cases: Array<[string, string, RegExp]> = [
      ['negative size', negative('size', 'file', 124, 12), /negative size or owner/],
      ['negative uid', negative('uid', 'file', 108, 8), /negative size or owner/],
      ['negative major', negative('major', 'char', 329, 8), /negative device number/],
    ];
    // Many 'x' headers before one entry add up to more than one header may hold.
    const big = encodeHeader({ path: 'e', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: [['comment', Buffer.alloc(40 * 1024 * 1024, 0x61)]] });
    const pax = big.subarray(0, big.length - 512);
    const manyX = join(dir, 'many-x.tar.gz');
    writeFileSync(manyX, gzipSync(Buffer.concat([pax, pax, big.subarray(big.length - 512), END_OF_ARCHIVE]), { level: 1 }));
    cases.push(['two 40 MiB pax headers for one entry', manyX, /pax headers .* give one entry \d+ bytes of records/]);

    const layer = gz(readFileSync(writeTars([{ out: join(dir, 'l.tar'), members: [{ name: 'f', data: 'x' }] }])[0]!));
    const nullIndex = new OciLayout(join(dir, 'null-index'));
    writeFileSync(join(nullIndex.dir, 'index.json'), '{"manifests":[null]}');
    cases.push(['index.json with a null descriptor', nullIndex.dir, /lists no manifests, or one that is not a descriptor/]);
    const nullManifest = new OciLayout(join(dir, 'null-manifest'));
    nullManifest.top([nullManifest.json(null, MT.manifest)]);
    cases.push(['a manifest that is null', nullManifest.dir, /is not an image manifest/]);
    const badLayers = new OciLayout(join(dir, 'bad-layers'));
    badLayers.top([badLayers.json({ schemaVersion: 2, config: badLayers.blob(Buffer.from('"x"'), MT.config), layers: [null, badLayers.blob(layer, MT.layerGzip)] }, MT.manifest)]);
    cases.push(['a null layer descriptor', badLayers.dir, /layer 1 has digest \(none\), strata reads sha256 only/]);
    const noSize = new OciLayout(join(dir, 'no-size'));
    const d = noSize.blob(layer, MT.layerGzip);
    noSize.top([noSize.image([{ ...d, size: undefined as unknown as number }])]);
    cases.push(['a descriptor with no size', noSize.dir, /declares no valid size/]);

    const stage = join(dir, 'docker-null');
    mkdirSync(stage);
    writeFileSync(join(stage, 'manifest.json'), '[null]');
    const dockerNull = join(dir, 'docker-null.tar');
    mustRun('tar', ['-C', stage, '-cf', dockerNull, 'manifest.json']);
    cases.push(['docker manifest.json [null]', `docker-archive:${dockerNull}`, /manifest\.json lists no layers/]);

    for (const [what, src, re] of cases) {
      assertOneLineError(strata(['store', 'import', 'bad/x', src.startsWith('docker-archive:') || src.endsWith('.tar') || src.endsWith('.gz') ? src : `oci:${src}`], { store }), what, re);
    }
    assert.equal(strataJson(['store', 'ls'], { store }), []);
  });

  test.run();
}

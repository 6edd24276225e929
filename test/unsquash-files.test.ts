/**
 * `strata unsquash` writes an image's small files in batches on libuv's pool
 * (compose/tree/held.ts, native/files.c) and its large ones as it reads them. Held to the
 * source tree (snapshotTree: content, holes as sizes, owners, modes, mtimes, hard links,
 * xattrs) through images made by mksquashfs and mkfs.erofs: several batches of small files,
 * a file past the held size, sparse and all-zero files, a setuid file of another owner, a file
 * with an xattr (finished here, not on the pool), hard links to files of an earlier batch and
 * of the filling one. As nobody: the owners it may not set are skipped and counted, and the
 * setuid file is not left setuid. The native call itself: a hostile path writes nothing outside
 * the root, the batch stops at the failure, and a malformed batch is refused before anything runs.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, closeSync, copyFileSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DIR_FLAGS } from '../native/fsops.js';
import { writeFiles } from '../native/files.js';
import { addon } from '../native/binding.js';
import { aclFromText, aclToXattr } from '../native/acl.js';
import { diffTrees } from './helpers/tree.js';
import { strata, strataOk } from './helpers/cli.js';
import { missing, skipSuite, testIf } from './helpers/probe.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { noise } from './helpers/random.js';
import { nobody } from './helpers/users.js';

/** The source tree: what every extraction must give back. */
function makeTree(src: string): void {
  mkdirSync(src);
  for (let d = 0; d < 3; d++) {
    mkdirSync(join(src, `d${d}`));
    for (let i = 0; i < 700; i++) writeFileSync(join(src, `d${d}`, `f${String(i).padStart(4, '0')}`), noise(100 + ((i * 37) % 3000), d * 1000 + i));
  }
  // Hard links: to a file of the first batch (the link far later), and within one directory.
  mustRun('ln', [join(src, 'd0', 'f0001'), join(src, 'd2', 'link-to-d0')]);
  mustRun('ln', [join(src, 'd1', 'f0699'), join(src, 'd1', 'z-link')]);
  mkdirSync(join(src, 'odd'));
  writeFileSync(join(src, 'odd', 'big'), noise(3 * (1 << 20) + 4321, 7));
  writeFileSync(join(src, 'odd', 'empty'), '');
  writeFileSync(join(src, 'odd', 'zeros'), Buffer.alloc(200_000));
  // A hole between two pieces and one at the end.
  const fd = openSync(join(src, 'odd', 'sparse'), 'w');
  writeSync(fd, noise(5000, 8), 0, 5000, 0);
  writeSync(fd, noise(7000, 9), 0, 7000, 600_000);
  closeSync(fd);
  mustRun('truncate', ['-s', '900000', join(src, 'odd', 'sparse')]);
  writeFileSync(join(src, 'odd', 'setuid'), noise(999, 10), { mode: 0o4755 });
  chownSync(join(src, 'odd', 'setuid'), 1234, 99);
  mustRun('chmod', ['4755', join(src, 'odd', 'setuid')]);
  writeFileSync(join(src, 'odd', 'tagged'), noise(300, 11));
  mustRun('setfattr', ['-n', 'user.strata', '-v', '0x00ff10', join(src, 'odd', 'tagged')]);
  symlinkSync('big', join(src, 'odd', 'to-big'));
  mustRun('mkfifo', [join(src, 'odd', 'pipe')]);
}

const why = missing({ root: true, tools: ['mksquashfs', 'setfattr', 'getfattr', 'getfacl', 'setpriv', 'truncate'] });
if (why) skipSuite('unsquash: files written on the pool', why);
else {
  const t = suite('unsquash: files written on the pool');
  let tmp = '';
  let src = '';
  t.before(() => {
    tmp = tempDir('strata-unsq-files-');
    src = join(tmp, 'src');
    makeTree(src);
  });
  t.after(() => removeDir(tmp));

  const images = (): Array<[string, string]> => {
    const out: Array<[string, string]> = [];
    const sq = join(tmp, 'tree.sqfs');
    mustRun('mksquashfs', [src, sq, '-noappend', '-no-progress', '-quiet', '-comp', 'zstd', '-xattrs']);
    out.push(['SquashFS', sq]);
    if (!missing({ tools: ['mkfs.erofs'] })) {
      const er = join(tmp, 'tree.erofs');
      mustRun('mkfs.erofs', ['-zlz4', '-Elegacy-compress', er, src]);
      out.push(['EROFS', er]);
    } else console.log('  (EROFS left out: no mkfs.erofs)');
    return out;
  };

  t('every file back as it was: batches, holes, a large file, an xattr, hard links across batches', () => {
    for (const [format, img] of images()) {
      const out = join(tmp, `out-${format}`);
      assert.match(strataOk(['unsquash', img, out]), /extracted \d+ entries/, format);
      assert.equal(diffTrees(src, out, { ignoreAcls: true }), [], `${format}: the extracted tree is the source`);
      const sparse = lstatSync(join(out, 'odd', 'sparse'));
      // 12,000 bytes of data in five pages; the rest of 900,000 bytes is holes, whatever the image stored.
      assert.ok(sparse.blocks * 512 <= 6 * 4096, `${format}: holes stay holes (${sparse.blocks} blocks)`);
      assert.ok(lstatSync(join(out, 'odd', 'zeros')).blocks * 512 < 100_000, `${format}: an all-zero file is a hole`);
      assert.is(lstatSync(join(out, 'd2', 'link-to-d0')).ino, lstatSync(join(out, 'd0', 'f0001')).ino, `${format}: one inode`);
    }
  });

  t('as nobody: owners it may not set are counted, nothing is left setuid, the content is the same', () => {
    const home = join(tmp, 'home');
    chmodSync(tmp, 0o711);
    mkdirSync(home);
    chownSync(home, 65534, 65534);
    const img = join(home, 'tree.sqfs');
    copyFileSync(images()[0]![1], img);
    chownSync(img, 65534, 65534);
    const out = join(home, 'out');
    const r = strata(['unsquash', img, out], { as: nobody(home) });
    assert.is(r.code, 0, r.stderr.toString());
    assert.match(r.stderr.toString() + r.stdout.toString(), /ownership \(\d+\)/, 'the skipped owners are counted');
    const st = lstatSync(join(out, 'odd', 'setuid'));
    assert.is(st.uid, 65534);
    assert.is(st.mode & 0o7000, 0, 'not setuid for a user who is not its owner');
    // Modes narrow where the group could not be kept; everything else is the source's.
    assert.equal(diffTrees(src, out, { ignoreAcls: true, ignoreOwners: true, ignoreRoot: true }).filter((l) => !/: mode /.test(l)), []);
  });

  testIf(t, { tools: ['mksquashfs'] }, 'a target that is in the way: one line, and the target as it was', () => {
    const [, img] = images()[0]!;
    const target = join(tmp, 'taken');
    mkdirSync(target);
    writeFileSync(join(target, 'mine'), 'keep\n');
    const r = strata(['unsquash', img, target]);
    assert.is(r.code, 1);
    assert.equal(readdirSync(target), ['mine']);
  });

  t('writeFiles: a hostile path writes nothing outside the root; the batch stops there', async () => {
    const root = join(tmp, 'native-root');
    const outside = join(tmp, 'native-outside');
    mkdirSync(root);
    mkdirSync(outside);
    symlinkSync(outside, join(root, 'out'));
    writeFileSync(join(root, 'there'), 'old\n');
    const rootFd = openSync(root, DIR_FLAGS);
    try {
      for (const [path, code] of [
        ['out/escape', 'ELOOP'],
        ['../native-outside/up', 'EXDEV'],
        ['/etc/strata-test', 'EXDEV'],
        ['there', 'EEXIST'],
      ] as const) {
        const fin = { mode: 0o644, modeRefused: 0o604, mtime: 1_700_000_000 };
        const r = await writeFiles(rootFd, [
          { path: 'first', pieces: [{ offset: 0, data: Buffer.from('one\n') }], size: 4, finish: fin },
          { path, pieces: [{ offset: 0, data: Buffer.from('x') }], size: 1, finish: fin },
          { path: 'never', pieces: [], size: 0, finish: fin },
        ]);
        assert.is(r.failed, 1, path);
        assert.is(r.error?.code, code, `${path}: ${r.error?.message}`);
        assert.is(r.error?.syscall, 'openat2');
        assert.ok(r.error?.message.includes(path), 'the message names the path');
        assert.equal([...r.fds], [-1, -2, -2], 'the first finished, the rest not reached');
        assert.is(readFileSync(join(root, 'first'), 'utf8'), 'one\n');
        mustRun('rm', [join(root, 'first')]);
      }
      assert.equal(readdirSync(outside), [], 'nothing outside');
      assert.is(readFileSync(join(root, 'there'), 'utf8'), 'old\n');
      assert.equal(readdirSync(root).sort(), ['out', 'there']);
    } finally {
      closeSync(rootFd);
    }
  });

  t('writeFiles: a finish\'s access ACL is set after the mode, as the kernel then shows it', async () => {
    const root = join(tmp, 'native-acl');
    mkdirSync(root);
    const rootFd = openSync(root, DIR_FLAGS);
    try {
      const acl = aclToXattr(aclFromText('u::rw,g::-,g:4242:r,m::r,o::-'));
      const fin = { mode: 0o660, modeRefused: 0o600, mtime: 1_700_000_000 };
      const r = await writeFiles(rootFd, [
        { path: 'with', pieces: [{ offset: 0, data: Buffer.from('w\n') }], size: 2, finish: { ...fin, acl } },
        { path: 'without', pieces: [], size: 0, finish: fin },
      ]);
      assert.is(r.error, undefined, r.error?.message);
      assert.equal([...r.fds], [-1, -1], 'both finished there');
      assert.equal([...r.refused], [0, 0]);
      const shown = (p: string) => mustRun('getfacl', ['-n', '--omit-header', join(root, p)]).stdout.toString().trim().split('\n');
      assert.equal(shown('with'), ['user::rw-', 'group::---', 'group:4242:r--', 'mask::r--', 'other::---']);
      assert.is(lstatSync(join(root, 'with')).mode & 0o777, 0o640, 'the mask is the group bits');
      assert.is(lstatSync(join(root, 'with')).mtimeMs, 1_700_000_000_000, 'the mtime set after the ACL');
      assert.equal(shown('without'), ['user::rw-', 'group::rw-', 'other::---']);
    } finally {
      closeSync(rootFd);
    }
  });

  t('writeFiles: a malformed batch is refused before anything runs', async () => {
    const root = join(tmp, 'native-malformed');
    mkdirSync(root);
    const rootFd = openSync(root, DIR_FLAGS);
    try {
      const d = Buffer.from('abcdef');
      for (const [what, pieces, size, path] of [
        ['overlapping pieces', [{ offset: 0, data: d }, { offset: 3, data: d }], 20, 'a'],
        ['a piece past the size', [{ offset: 2, data: d }], 5, 'b'],
        ['pieces out of order', [{ offset: 10, data: d }, { offset: 0, data: d }], 20, 'c'],
        ['an empty piece', [{ offset: 0, data: Buffer.alloc(0) }], 5, 'd'],
        ['a NUL in the path', [], 0, 'e\0f'],
        ['an empty path', [], 0, ''],
      ] as const) {
        const r = await writeFiles(rootFd, [{ path: 'ok', pieces: [], size: 0 }, { path, pieces, size }]).catch((e: Error) => e);
        assert.instance(r, RangeError, what);
      }
      // The raw call: a body longer than the pieces, a fractional size.
      const rec = Buffer.alloc(48 + 1);
      rec.writeUInt32LE(1, 0);
      rec.write('g', 48);
      assert.throws(() => addon().writeFiles(rootFd, rec, 1, Buffer.from('extra')), /not count records/, 'a body the pieces do not fill');
      rec.writeDoubleLE(0.5, 40);
      assert.throws(() => addon().writeFiles(rootFd, rec, 1, Buffer.alloc(0)), /not count records/, 'a size that is not a whole number');
      // A finish's ACL value (its length at byte 28, its bytes after the path): past the
      // batch, shorter than an ACL's header, or on a file handed back unfinished.
      const acl = aclToXattr(aclFromText('u::rw,g::r,o::-'));
      for (const [what, flags, length, bytes] of [
        ['an ACL past the batch', 1, acl.length + 1, acl],
        ['an ACL shorter than its header', 1, 3, acl.subarray(0, 3)],
        ['an ACL on a file handed back', 0, acl.length, acl],
      ] as const) {
        const r = Buffer.concat([Buffer.alloc(48), Buffer.from('h'), bytes]);
        r.writeUInt32LE(1, 0);
        r.writeUInt32LE(flags, 8);
        r.writeUInt32LE(length, 28);
        assert.throws(() => addon().writeFiles(rootFd, r, 1, Buffer.alloc(0)), /not count records/, what);
      }
      assert.equal(readdirSync(root), [], 'nothing created');
    } finally {
      closeSync(rootFd);
    }
  });

  t.run();
}

/**
 * The awkward corpus through the whole CLI path (store import of a directory → compose
 * squash, streamed from the store), where test/squashfs-writer.test.ts feeds the writer
 * directly: sizes around the block size (--block-size 4096), all-zero blocks and files,
 * 255-byte names, a directory of 3000 entries, deep nesting, a hard-link group across
 * directories, many distinct uids and gids, large user and trusted xattrs. Checked by
 * unsquashfs -d and a kernel mount against the source tree, sqfsdiff against mksquashfs of
 * the sandbox, and rdsquashfs for holes. Needs root.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chownSync, linkSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { diffTrees, snapshotTree } from './helpers/tree.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { strataJson, strataOk, type Workspace } from './helpers/cli.js';
import { type SquashJson } from './image-harness.js';
import { noise } from './helpers/random.js';

const BS = 4096;

/** Writes the corpus under `root` and fixes every mtime; returns the number of entries. */
function makeCorpus(root: string): void {
  const p = (rel: string) => join(root, rel);
  mkdirSync(p('sizes'), { recursive: true });
  const sizes: Record<string, number> = { empty: 0, one: 1, 'bs-1': BS - 1, bs: BS, 'bs+1': BS + 1, '3bs+7': 3 * BS + 7 };
  let seed = 1;
  for (const [name, n] of Object.entries(sizes)) writeFileSync(p(`sizes/${name}`), noise(n, seed++));
  mkdirSync(p('holes'));
  const z = Buffer.alloc(BS);
  writeFileSync(p('holes/sparse'), Buffer.concat([noise(BS, 11), z, z, noise(BS, 12), noise(99, 13)]));
  writeFileSync(p('holes/allzero'), Buffer.alloc(2 * BS + 5));
  mkdirSync(p('names'));
  for (const n of ['n'.repeat(255), 'é', 'a b', '~x', 'Z']) writeFileSync(p(`names/${n}`), n);
  mkdirSync(p('wide'));
  for (let i = 0; i < 3000; i++) writeFileSync(p(`wide/e${String(i).padStart(4, '0')}`), i % 2 ? `${i}\n` : '');
  let d = 'deep';
  for (let i = 1; i <= 30; i++) d += `/d${i}`;
  mkdirSync(p(d), { recursive: true });
  writeFileSync(p(`${d}/bottom`), 'bottom\n');
  mkdirSync(p('links/sub'), { recursive: true });
  writeFileSync(p('links/a'), noise(BS + 10, 21), { mode: 0o640 });
  chownSync(p('links/a'), 1234, 4321);
  linkSync(p('links/a'), p('links/sub/b'));
  linkSync(p('links/a'), p(`${d}/c`));
  symlinkSync('../sizes/one', p('links/sym'));
  mkdirSync(p('ids'));
  for (let i = 0; i < 100; i++) {
    const f = p(`ids/f${String(i).padStart(3, '0')}`);
    writeFileSync(f, '');
    chownSync(f, 5000 + i, 7000 + (i % 37));
  }
  mkdirSync(p('x'));
  writeFileSync(p('x/big'), 'large xattrs\n');
  mustRun('setfattr', ['-n', 'user.big', '-v', `0x${noise(3000, 7).toString('hex')}`, p('x/big')]);
  mustRun('setfattr', ['-n', 'trusted.big', '-v', `0x${noise(900, 8).toString('hex')}`, p('x/big')]);
  writeFileSync(p('x/same'), 'same user.big value\n');
  mustRun('setfattr', ['-n', 'user.big', '-v', `0x${noise(3000, 7).toString('hex')}`, p('x/same')]);
  mustRun('setfattr', ['-n', 'trusted.empty', '-v', '""', p('x')]);
  mustRun('find', [root, '-depth', '-exec', 'touch', '-h', '-d', '@1650000000', '{}', '+']);
}

const Awk = suite('image: the awkward corpus through store import and compose squash');
let tmp = '';
let o: Workspace;
const mounts: string[] = [];

Awk.before.each(() => {
  tmp = tempDir('strata-image-awk-');
  o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
  mkdirSync(o.cwd);
});

Awk.after.each(() => {
  for (const m of mounts.splice(0)) unmount(m);
  removeDir(tmp);
});

Awk('every awkward case survives store → image, by unsquashfs, sqfsdiff, rdsquashfs and the kernel', () => {
  const src = join(tmp, 'src');
  makeCorpus(src);
  strataOk(['-q', 'store', 'import', 'awk/1', src], o);
  strataOk(['-q', 'compose', 'add', 'awk/1'], o);
  const img = join(tmp, 'awk.sqfs');
  const r = strataJson<SquashJson>(['compose', 'squash', img, '--block-size', String(BS), '--workers', '2'], o);
  assert.is(r.aclPaths, 0);
  const want = snapshotTree(src);
  assert.ok(want.get('links/a')!.links?.length === 3, 'the source has a 3-name hard-link group');

  const ex = join(tmp, 'ex');
  const u = run('unsquashfs', ['-no-progress', '-d', ex, img]);
  assert.is(u.code, 0, u.stderr);
  assert.equal(diffTrees(want, ex, { ignoreStrataPaths: true }), [], 'unsquashfs -d vs the source tree');

  const mnt = join(tmp, 'mnt');
  mkdirSync(mnt);
  mustRun('mount', ['-t', 'squashfs', '-o', 'loop,ro', img, mnt]);
  mounts.push(mnt);
  assert.equal(diffTrees(want, mnt, { ignoreStrataPaths: true }), [], 'kernel mount vs the source tree');

  // sqfsdiff against mksquashfs of the sandbox (which carries the same /.strata files).
  const sb = join(tmp, 'sandbox');
  strataOk(['-q', 'compose', 'sandbox', sb], o);
  assert.equal(diffTrees(want, sb, { ignoreStrataPaths: true }), [], 'the sandbox is the source tree');
  const ref = join(tmp, 'ref.sqfs');
  mustRun('mksquashfs', [sb, ref, '-comp', 'gzip', '-b', String(BS), '-noappend', '-no-progress', '-quiet', '-xattrs']);
  const d = run('sqfsdiff', ['-T', '-a', img, '-b', ref]);
  assert.is(d.code, 0, `sqfsdiff:\n${d.stdout.toString()}${d.stderr}`);

  // Holes: all-zero blocks take no space.
  const stat = (p: string) => mustRun('rdsquashfs', ['-s', `/${p}`, img]).stdout.toString();
  assert.match(stat('holes/sparse'), /Block #1 size: 0 \(compressed\)\n\s+Block #2 size: 0 \(compressed\)/);
  assert.match(stat('holes/allzero'), /Block #0 size: 0 \(compressed\)\n\s+Block #1 size: 0 \(compressed\)/);
  assert.match(stat('sizes/bs'), /Fragment index: 0xFFFFFFFF/);
  assert.match(stat('wide'), /Inode type: extended directory/);
});

Awk.run();

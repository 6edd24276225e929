/**
 * Self-test of the benchmark's own machinery (not part of `npm test`; run as root with
 * `npx tsx bench/selftest.ts`): the comparator must see each kind of difference the gate
 * relies on, the image ACL rule must accept exactly the allowed group bits, and the
 * overlay → OCI conversion must turn a real kernel upperdir into OCI whiteouts.
 */
import { mkdtemp, mkdir, rm, symlink, writeFile, chmod, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { dumpXattrs, overlayToOci } from './data.js';
import { diffTrees, snapshotTree, summarize } from './harness.js';
import { run } from './proc.js';

const Compare = suite<{ dir: string; a: string; b: string }>('compare');

Compare.before.each(async (ctx) => {
  ctx.dir = await mkdtemp('/tmp/strata-bench-selftest-');
  ctx.a = join(ctx.dir, 'a');
  await mkdir(join(ctx.a, 'd'), { recursive: true });
  await writeFile(join(ctx.a, 'd/f'), 'hello\n');
  await writeFile(join(ctx.a, 'lic'), 'secret\n');
  await chmod(join(ctx.a, 'lic'), 0o640);
  await run('setfacl', ['-m', 'g:50:r,m::r', join(ctx.a, 'lic')]);
  await symlink('d/f', join(ctx.a, 'l'));
  await run('setfattr', ['-n', 'user.k', '-v', 'v1', join(ctx.a, 'd/f')]);
  ctx.b = join(ctx.dir, 'b');
  await run('cp', ['-a', ctx.a, ctx.b]);
});
Compare.after.each(async (ctx) => {
  await rm(ctx.dir, { recursive: true, force: true });
});

Compare('identical copies compare equal, ACLs and xattrs included', async ({ a, b }) => {
  const sa = await snapshotTree(a);
  assert.equal(sa.get('lic')?.acl, 'user::rw-,group::r--,group:50:r--,mask::r--,other::---');
  assert.equal(sa.get('d/f')?.xattrs.get('user.k'), '0x7631');
  assert.equal(diffTrees(await snapshotTree(b), sa), []);
});

Compare('each kind of difference is reported', async ({ a, b }) => {
  await writeFile(join(b, 'd/f'), 'hellO\n');
  await run('touch', ['-h', '-d', '@1000000000', join(b, 'd/f')]);
  await run('setfattr', ['-n', 'user.k', '-v', 'v2', join(b, 'd/f')]);
  await run('setfacl', ['-m', 'g:51:r', join(b, 'lic')]);
  await rm(join(b, 'l'));
  await symlink('d/g', join(b, 'l'));
  await run('chown', ['1:1', join(b, 'd')]);
  await writeFile(join(b, 'extra'), '');
  const d = diffTrees(await snapshotTree(b), await snapshotTree(a));
  const has = (re: RegExp) => assert.ok(d.some((x) => re.test(x)), `${re} in ${JSON.stringify(d)}`);
  has(/^d\/f: content differs/);
  has(/^d\/f: mtime/);
  has(/^d\/f: xattr user\.k/);
  has(/^lic: ACL /);
  has(/^lic: xattr system\.posix_acl_access/);
  has(/^l: link target d\/g/);
  has(/^d: owner 1:1/);
  has(/^extra: unexpected/);
});

Compare('image rule: group bits within group:: ∧ mask pass, wider fail, ACL xattrs ignored', async ({ a, b }) => {
  const ref = await snapshotTree(a);
  await run('setfacl', ['-b', join(b, 'lic')]);
  await chmod(join(b, 'lic'), 0o600);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), []);
  await chmod(join(b, 'lic'), 0o660);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), ['lic: mode 0660, expected 0640']);
  await chmod(join(b, 'lic'), 0o644);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), ['lic: mode 0644, expected 0640']);
});

Compare.run();

const Overlay = suite<{ dir: string }>('overlayToOci');

Overlay.before.each(async (ctx) => {
  ctx.dir = await mkdtemp('/tmp/strata-bench-selftest-');
});
Overlay.after.each(async (ctx) => {
  await run('umount', [join(ctx.dir, 'm')], { allowFail: true });
  await rm(ctx.dir, { recursive: true, force: true });
});

Overlay('a kernel upperdir becomes .wh. entries, an opaque marker and no trusted.overlay.*', async ({ dir }) => {
  const [l, u, w, m] = ['l', 'u', 'w', 'm'].map((x) => join(dir, x)) as [string, string, string, string];
  for (const d of [l, u, w, m]) await mkdir(d);
  await mkdir(join(l, 'gone'));
  await writeFile(join(l, 'gone/x'), 'x');
  await mkdir(join(l, 'redo'));
  await writeFile(join(l, 'redo/old'), 'o');
  await writeFile(join(l, 'del'), 'd');
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${l},upperdir=${u},workdir=${w}`, m]);
  await rm(join(m, 'gone'), { recursive: true });
  await rm(join(m, 'del'));
  await rm(join(m, 'redo'), { recursive: true });
  await mkdir(join(m, 'redo'));
  await writeFile(join(m, 'redo/new'), 'n');
  await run('umount', [m]);
  assert.ok((await stat(join(u, 'del'))).isCharacterDevice());

  const counts = await overlayToOci(u);
  assert.equal(counts, { whiteouts: 2, opaque: 1 });
  assert.equal((await readdir(u)).sort(), ['.wh.del', '.wh.gone', 'redo']);
  assert.equal((await readdir(join(u, 'redo'))).sort(), ['.wh..wh..opq', 'new']);
  assert.equal((await stat(join(u, '.wh.del'))).size, 0);
  const left = await dumpXattrs(u, '^trusted\\.overlay\\.');
  assert.equal([...left.values()].filter((x) => x.size > 0).length, 0);
});

Overlay.run();

const Stats = suite('summarize');
Stats('median of odd and even counts, max RSS kept', () => {
  assert.equal(summarize([3, 1, 2], 5), { samples: [3, 1, 2], min: 1, median: 2, max: 3, rssKiB: 5 });
  assert.equal(summarize([4, 1, 2, 3], 0).median, 2.5);
});
Stats.run();

/**
 * `strata unsquash` treats an image's /.strata/acl.json as untrusted input: images made by
 * mksquashfs with hostile acl.json files (a path through a symlink the image plants, '..',
 * a path the image does not hold, a bad mode) end in exit 1 with one `strata: …` line, and
 * nothing outside DIR changes — no chmod, no ACL through a symlink. Needs root (getfacl of
 * a root-owned victim is enough; mksquashfs runs on a plain tree).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strata, strataOk, type Workspace } from './helpers/cli.js';

const Un = suite('image: strata unsquash of hostile acl.json');
let tmp = '';
let o: Workspace;
let victim = '';

Un.before.each(() => {
  tmp = tempDir('strata-image-unsq-');
  o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
  mkdirSync(o.cwd);
  mkdirSync(join(tmp, 'outside'));
  victim = join(tmp, 'outside', 'victim');
  writeFileSync(victim, 'not yours\n', { mode: 0o600 });
});

Un.after.each(() => {
  removeDir(tmp);
});

/** mksquashfs of a tree with `lnk -> <tmp>/outside`, a file, and the given acl.json entries. */
function hostileImage(name: string, entries: Record<string, unknown>): string {
  const tree = join(tmp, `tree-${name}`);
  mkdirSync(join(tree, '.strata'), { recursive: true });
  symlinkSync(join(tmp, 'outside'), join(tree, 'lnk'));
  writeFileSync(join(tree, 'file'), 'in the image\n', { mode: 0o640 });
  writeFileSync(join(tree, '.strata/acl.json'), JSON.stringify({ aclVersion: 1, entries }));
  const img = join(tmp, `${name}.sqfs`);
  mustRun('mksquashfs', [tree, img, '-noappend', '-quiet', '-no-progress']);
  return img;
}

const acl = 'user::rwx,user:1001:rwx,group::rwx,mask::rwx,other::rwx';

Un('a path through a planted symlink, "..", a missing path or a bad mode: exit 1, nothing outside DIR touched', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['through-symlink', { 'lnk/victim': { mode: 0o777, access: acl } }],
    ['symlinked-dir', { lnk: { mode: 0o777, access: acl } }],
    ['dotdot', { '../outside/victim': { mode: 0o777, access: acl } }],
    ['missing', { 'no/such': { mode: 0o755, access: acl } }],
    ['bad-mode', { file: { mode: 'rwx', access: acl } }],
    ['huge-mode', { file: { mode: 0o100777, access: acl } }],
  ];
  for (const [name, entries] of cases) {
    const r = strata(['unsquash', hostileImage(name, entries), join(tmp, `out-${name}`)], o);
    if (name === 'symlinked-dir') {
      // The last component being a symlink is skipped (ACLs never apply to symlinks).
      assert.is(r.code, 0, `${name}: ${r.stderr}`);
    } else {
      assert.is(r.code, 1, `${name}: exit ${r.code}: ${r.stderr}${r.stdout.toString()}`);
      assert.match(r.stderr, /^strata: [^\n]+\n$/, `${name}: one line: ${r.stderr}`);
      assert.not.match(r.stderr, /internal error/, name);
    }
    assert.is(statSync(victim).mode & 0o7777, 0o600, `${name}: the file outside DIR keeps its mode`);
    assert.is(statSync(join(tmp, 'outside')).mode & 0o7777, 0o755, `${name}: the directory outside DIR keeps its mode`);
    const facl = mustRun('getfacl', ['-c', '-n', victim]).stdout.toString();
    assert.not.match(facl, /user:1001/, `${name}: no ACL outside DIR`);
  }
});

Un('a well-formed acl.json on a foreign image is applied inside DIR', () => {
  const img = hostileImage('fine', { file: { mode: 0o640, access: 'user::rw-,user:1001:r--,group::r--,mask::r--,other::---' } });
  const out = join(tmp, 'out');
  assert.match(strataOk(['unsquash', img, out], o), /restored ACLs on 1 path$/m);
  assert.match(mustRun('getfacl', ['-c', '-n', join(out, 'file')]).stdout.toString(), /user:1001:r--/);
});

Un.run();

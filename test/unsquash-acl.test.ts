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

Un('acl.json in any order, spilled: every ACL and directory mode back; a path named twice is refused', () => {
  // Many directories and files, each with its ACL, written to acl.json in reverse order with
  // numeric names (JSON puts array-index keys first): unsquash sorts the index into the walk's
  // order, and with a tiny memory budget both it and the directory list go through spill files.
  const tree = join(tmp, 'tree-many');
  const entries: Array<[string, { mode: number; access: string; default?: string }]> = [];
  mkdirSync(tree);
  for (let d = 0; d < 40; d++) {
    const dir = String(d * 7);
    mkdirSync(join(tree, dir));
    entries.push([dir, { mode: 0o750, access: 'user::rwx,group::r-x,group:1002:r-x,mask::r-x,other::---', default: 'user::rwx,group::r-x,other::---' }]);
    for (let f = 0; f < 30; f++) {
      writeFileSync(join(tree, dir, `f${f}`), `${d}/${f}\n`);
      entries.push([`${dir}/f${f}`, { mode: 0o640, access: `user::rw-,user:${1000 + f}:r--,group::r--,mask::r--,other::---` }]);
    }
  }
  mkdirSync(join(tree, '.strata'));
  const text = (list: typeof entries) => `{"aclVersion":1,"entries":{${list.map(([p, e]) => `${JSON.stringify(p)}:${JSON.stringify(e)}`).join(',')}}}`;
  writeFileSync(join(tree, '.strata/acl.json'), text([...entries].reverse()));
  const img = join(tmp, 'many.sqfs');
  mustRun('mksquashfs', [tree, img, '-noappend', '-quiet', '-no-progress']);
  const out = join(tmp, 'out-many');
  assert.match(strataOk(['unsquash', img, out], { ...o, env: { STRATA_MEMORY_BUDGET: '4096' } }), new RegExp(`restored ACLs on ${entries.length} paths$`, 'm'));
  for (const [p, e] of [entries[0]!, entries[31]!, entries.at(-1)!]) {
    assert.is(statSync(join(out, p)).mode & 0o7777, e.mode, `${p}: its original mode`);
    assert.match(mustRun('getfacl', ['-c', '-n', join(out, p)]).stdout.toString(), new RegExp(e.access.split(',')[1]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), `${p}: its ACL`);
  }
  assert.match(mustRun('getfacl', ['-c', '-n', '-d', join(out, '7')]).stdout.toString(), /^group::r-x$/m, 'a default ACL');

  const twice = join(tmp, 'tree-twice');
  mkdirSync(join(twice, '.strata'), { recursive: true });
  writeFileSync(join(twice, 'file'), 'x\n');
  writeFileSync(join(twice, '.strata/acl.json'), text([['file', entries[1]![1]], ['file', entries[1]![1]]]));
  mustRun('mksquashfs', [twice, join(tmp, 'twice.sqfs'), '-noappend', '-quiet', '-no-progress']);
  const r = strata(['unsquash', join(tmp, 'twice.sqfs'), join(tmp, 'out-twice')], o);
  assert.is(r.code, 1);
  assert.match(r.stderr, /^strata: .*acl\.json names 'file' twice \(the image was altered[^\n]*\n$/);
});

Un.run();

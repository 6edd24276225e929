/**
 * Lmod behaviours of `strata compose` through the CLI, each with what it says on stderr and the
 * stack it leaves in strata.json and strata.lock: defaults, version changes, families,
 * requirements loaded for a module and gone with it, conflicts, save/restore pinned to records,
 * the import flags of the Lmod fields, a stack whose requirements are not met refused by every
 * output, `compose diff`, and restricted modules for a non-member and a member (run as uid
 * 65534 with setpriv). The same rules are checked against the real Lmod in test/lmod/.
 * Root (setpriv, chown).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { mustRun, removeDir, run, RunResult, tempDir } from './helpers/tmp.js';
import { assertOneLineError, CLI, loud, ok, strata } from './helpers/cli.js';
import { nobody } from './helpers/users.js';

/** The stack as [fullName, auto] pairs, from strata.json. */
function stackOf(work: string): string[] {
  const path = join(work, 'strata.json');
  if (!existsSync(path)) return [];
  const s = JSON.parse(readFileSync(path, 'utf8')) as { modules: { fullName: string; auto?: boolean; inactive?: boolean }[] };
  return s.modules.map((m) => `${m.fullName}${m.auto ? ' (auto)' : ''}${m.inactive ? ' (inactive)' : ''}`);
}

/** fullNames of strata.lock, lowest layer first. */
function lockOf(work: string): string[] {
  return (JSON.parse(readFileSync(join(work, 'strata.lock'), 'utf8')) as { modules: { fullName: string }[] }).modules.map((m) => m.fullName);
}

/** A one-file layer directory; `tag` makes its content (and so its layer CID) differ. */
function layerDir(root: string, tag: string): string {
  const d = join(root, `layer-${tag}`);
  mkdirSync(join(d, 'opt', tag), { recursive: true });
  writeFileSync(join(d, 'opt', tag, 'README'), `${tag}\n`);
  return d;
}

/** A one-line refusal (assertOneLineError) whose whole stderr, newline included, matches `re`. */
function fails(r: RunResult, re: RegExp): void {
  assertOneLineError(r, `expected ${re}`);
  assert.match(r.stderr, re);
}

// The catalogue: fullName → import options. One shared layer, except where content matters.
const CATALOGUE: Array<[string, string[]]> = [
  ['gcc/11.4', ['--family', 'compiler']],
  ['gcc/12.3', ['--family', 'compiler']],
  ['intel/2023.1', ['--family', 'compiler']],
  ['zlib/1.3', []],
  ['hdf5/1.14.3', ['--requires', 'zlib', '--requires', 'gcc/12.3']],
  ['rocm/6.0', []],
  ['cuda/12.2', ['--conflicts', 'rocm']],
  ['mpi/openmpi-4.1', ['--family', 'mpi', '--prepend', 'PATH=/opt/openmpi/bin']],
  ['mpi/mpich-4.1', ['--family', 'mpi', '--prepend', 'PATH=/opt/mpich/bin']],
  // The README's names: two applications, two names (not two versions of "app").
  ['gromacs/2023', ['--requires', 'mpi/openmpi-4.1', '--prepend', 'PATH=/opt/gromacs/bin']],
  ['mpi4py/3', ['--requires', 'mpi/openmpi-4.1']],
  // 3.9 < 3.10 < 3.12 in version order (byte order would pick 3.9).
  ['py/3.9', []],
  ['py/3.12', []],
  ['py/3.10', []],
];

interface Ctx {
  shared: string;
  store: string;
  dir: string;
  work: string;
}

const lmod = suite<Ctx>('compose: Lmod rules through the CLI');
// Importing the catalogue takes seconds; the tests only read the store (except where said),
// so it is made once. Each test has its own working directory (its own stack).
lmod.before(loud((ctx) => {
  ctx.shared = tempDir('strata-compose-lmod');
  ctx.store = join(ctx.shared, 'store');
  const layer = layerDir(ctx.shared, 'common');
  for (const [name, opts] of CATALOGUE) ok(strata(['-q', 'store', 'import', name, layer, ...opts], { store: ctx.store, cwd: ctx.shared }), `import ${name}`);
}));
lmod.after((ctx) => removeDir(ctx.shared));
lmod.before.each(loud((ctx) => {
  ctx.dir = tempDir('strata-compose-lmod-t');
  ctx.work = join(ctx.dir, 'work');
  mkdirSync(ctx.work);
}));
lmod.after.each((ctx) => removeDir(ctx.dir));

lmod('a bare name resolves to the highest version, then to the marked default', ({ store, work }) => {
  const r = ok(strata(['compose', 'load', 'py'], { store, cwd: work }), 'load py');
  assert.is(r.stderr, '', 'a plain load says nothing');
  assert.equal(stackOf(work), ['py/3.12']);
  assert.match(ok(strata(['compose', 'avail', 'py/'], { store, cwd: work }), 'avail').stdout.toString(), /py\/3\.12 \(L,D\)/);
  ok(strata(['store', 'default', 'py/3.10'], { store, cwd: work }), 'store default');
  ok(strata(['compose', 'purge'], { store, cwd: work }), 'purge');
  assert.equal(stackOf(work), []);
  ok(strata(['compose', 'add', 'py'], { store, cwd: work }), 'add (the alias of load)');
  assert.equal(stackOf(work), ['py/3.10']);
  assert.equal(lockOf(work), ['py/3.10']);
  const avail = ok(strata(['compose', 'avail', 'py/'], { store, cwd: work }), 'avail').stdout.toString();
  assert.match(avail, /py\/3\.10 \(L,D\)/);
  assert.not.match(avail, /py\/3\.12 \(/);
  assert.is(ok(strata(['compose', '-t', 'avail', 'py/3.'], { store, cwd: work }), '-t avail').stdout.toString(), 'strata store:\npy/3.9\npy/3.10\npy/3.12\n');
  assert.is(ok(strata(['compose', 'avail', '-t', 'py*'], { store, cwd: work }), 'avail -t').stdout.toString(), 'strata store:\npy/3.9\npy/3.10\npy/3.12\n');
});

lmod('two applications load side by side; another version of a loaded name replaces it, with the report', ({ store, work }) => {
  ok(strata(['compose', 'load', 'gromacs/2023', 'mpi4py/3'], { store, cwd: work }), 'load');
  assert.equal(stackOf(work), ['mpi/openmpi-4.1 (auto)', 'gromacs/2023', 'mpi4py/3']);
  const r = ok(strata(['compose', 'load', 'mpi/mpich-4.1'], { store, cwd: work }), 'load');
  assert.is(r.stderr, 'The following have been reloaded with a version change:\n  1) mpi/openmpi-4.1 => mpi/mpich-4.1\n');
  assert.equal(lockOf(work), ['gromacs/2023', 'mpi4py/3', 'mpi/mpich-4.1']);
  assert.is(ok(strata(['compose', 'list'], { store, cwd: work }), 'list').stdout.toString(), 'Currently Loaded Modules:\n  1) gromacs/2023   2) mpi4py/3   3) mpi/mpich-4.1\n');
  assert.is(ok(strata(['compose', 'list', '-t'], { store, cwd: work }), 'list -t').stdout.toString(), 'gromacs/2023\nmpi4py/3\nmpi/mpich-4.1\n');
});

lmod('a module of a loaded family replaces it, with Lmod\'s message', ({ store, work }) => {
  ok(strata(['compose', 'load', 'zlib', 'gcc/12.3'], { store, cwd: work }), 'load');
  const r = ok(strata(['compose', 'load', 'intel/2023.1'], { store, cwd: work }), 'load intel');
  assert.is(r.stderr, 'Lmod is automatically replacing "gcc/12.3" with "intel/2023.1".\n');
  assert.equal(stackOf(work), ['zlib/1.3', 'intel/2023.1']);
  assert.equal(lockOf(work), ['zlib/1.3', 'intel/2023.1']);
});

lmod('requirements load silently, for the module, and go with it; one the user loaded stays', ({ store, work }) => {
  const load = ok(strata(['compose', 'load', 'hdf5'], { store, cwd: work }), 'load hdf5');
  assert.is(load.stderr, '');
  assert.equal(stackOf(work), ['zlib/1.3 (auto)', 'gcc/12.3 (auto)', 'hdf5/1.14.3']);
  assert.equal(lockOf(work), ['zlib/1.3', 'gcc/12.3', 'hdf5/1.14.3']);
  assert.is(ok(strata(['compose', 'unload', 'hdf5'], { store, cwd: work }), 'unload hdf5').stderr, '');
  assert.equal(stackOf(work), []);
  ok(strata(['compose', 'load', 'zlib', 'hdf5'], { store, cwd: work }), 'load');
  ok(strata(['compose', 'rm', 'hdf5'], { store, cwd: work }), 'rm (the alias of unload)');
  assert.equal(stackOf(work), ['zlib/1.3']);
  // A requirement taken away: allowed, with Lmod's warning.
  ok(strata(['compose', 'load', 'hdf5'], { store, cwd: work }), 'load');
  const r = ok(strata(['compose', 'unload', 'gcc'], { store, cwd: work }), 'unload gcc');
  assert.is(r.stderr, 'The following dependent module(s) are not currently loaded: gcc/12.3 (required by: hdf5/1.14.3)\n');
});

lmod('swap and unload: Lmod\'s wording; what is not loaded is ignored by unload', ({ store, work }) => {
  ok(strata(['compose', 'load', 'gcc/11.4', 'zlib'], { store, cwd: work }), 'load');
  const r = ok(strata(['compose', 'swap', 'gcc', 'gcc/12.3'], { store, cwd: work }), 'swap');
  assert.is(r.stderr, 'The following have been reloaded with a version change:\n  1) gcc/11.4 => gcc/12.3\n');
  fails(strata(['compose', 'swap', 'rocm', 'cuda'], { store, cwd: work }), /^strata: Lmod has detected the following error: Swap failed: "rocm" is not loaded\. \(see strata compose list\)\n$/);
  const rm = ok(strata(['compose', 'unload', 'gcc/12', 'nosuch'], { store, cwd: work }), 'unload');
  assert.is(rm.stderr, '');
  assert.equal(stackOf(work), ['zlib/1.3', 'gcc/12.3']);
});

lmod('a conflict declared by either module is refused with exit 1 and the stack is unchanged', ({ store, work }) => {
  ok(strata(['compose', 'load', 'zlib', 'rocm'], { store, cwd: work }), 'load');
  const files = () => [readFileSync(join(work, 'strata.json'), 'utf8'), readFileSync(join(work, 'strata.lock'), 'utf8')];
  const before = files();
  fails(strata(['compose', 'load', 'gcc/12.3', 'cuda/12.2'], { store, cwd: work }), /^strata: Lmod has detected the following error: Cannot load module "cuda\/12\.2" because these module\(s\) are loaded: rocm \(/);
  assert.equal(files(), before, 'all or nothing: gcc/12.3 was not loaded either');
  ok(strata(['compose', 'purge'], { store, cwd: work }), 'purge');
  ok(strata(['compose', 'load', 'cuda'], { store, cwd: work }), 'load cuda');
  fails(strata(['compose', 'load', 'rocm'], { store, cwd: work }), /^strata: Lmod has detected the following error: Cannot load module "rocm\/6\.0" because this module set a conflict: "cuda\/12\.2" \(strata refuses a conflict either module declares/);
  assert.equal(stackOf(work), ['cuda/12.2']);
});

lmod('a stack whose requirements are not met is never built', ({ store, dir, work }) => {
  // Its own store: this test removes a module.
  const own = join(dir, 'store');
  const layer = layerDir(dir, 'x');
  for (const [name, opts] of CATALOGUE.filter(([n]) => n.startsWith('mpi/') || n.startsWith('gromacs'))) ok(strata(['-q', 'store', 'import', name, layer, ...opts], { store: own, cwd: work }), `import ${name}`);
  ok(strata(['compose', 'load', 'gromacs/2023'], { store: own, cwd: work }), 'load');
  // A requirement swapped out from under the module that needs it.
  ok(strata(['compose', 'swap', 'mpi', 'mpi/mpich-4.1'], { store: own, cwd: work }), 'swap');
  const sb = join(dir, 'sb');
  const unmet = /^strata: the stack's requirements are not met: gromacs\/2023 needs mpi\/openmpi-4\.1 \(mpi\/mpich-4\.1 is loaded\) \(load what is missing \(strata compose load mpi\/openmpi-4\.1\) or unload the modules that need it; nothing was built\)\n$/;
  fails(strata(['compose', 'sandbox', sb], { store: own, cwd: work }), unmet);
  assert.not.ok(existsSync(sb), 'nothing written');
  fails(strata(['compose', 'squash', join(dir, 'x.sqfs')], { store: own, cwd: work }), unmet);
  assert.not.ok(existsSync(join(dir, 'x.sqfs')));
  fails(strata(['compose', 'lock'], { store: own, cwd: work }), unmet);
  // Met again, then the record removed from the store.
  ok(strata(['compose', 'swap', 'mpi', 'mpi/openmpi-4.1'], { store: own, cwd: work }), 'swap back');
  ok(strata(['compose', 'sandbox', sb], { store: own, cwd: work }), 'sandbox');
  let rm = strata(['store', 'rm', 'mpi/openmpi-4.1'], { store: own, cwd: work });
  if (rm.code !== 0) rm = strata(['store', 'rm', '--force', 'mpi/openmpi-4.1'], { store: own, cwd: work }); // a store that guards required modules
  ok(rm, 'store rm');
  fails(strata(['compose', 'sandbox', join(dir, 'sb2')], { store: own, cwd: work }), /^strata: the stack holds mpi\/openmpi-4\.1, which is no longer in the store \(import it again, or strata compose unload mpi\/openmpi-4\.1\)\n$/);
  assert.not.ok(existsSync(join(dir, 'sb2')));
  void store;
});

lmod('compose diff: two stacks, two locks, and a stack against a lock', ({ store, dir, work }) => {
  ok(strata(['compose', 'load', 'gcc/12.3', 'gromacs/2023'], { store, cwd: work }), 'load');
  const other = join(dir, 'other');
  mkdirSync(other);
  ok(strata(['compose', 'load', 'gcc/11.4', 'mpi/mpich-4.1', 'zlib'], { store, cwd: other }), 'load');
  const d = ok(strata(['compose', 'diff', 'work', 'other'], { store, cwd: dir }), 'diff');
  assert.is(
    d.stdout.toString(),
    [
      '--- work',
      '+++ other',
      'modules:',
      '  - gromacs/2023',
      '  + zlib/1.3',
      '  ~ gcc/12.3 => gcc/11.4',
      '  ~ mpi/openmpi-4.1 => mpi/mpich-4.1',
      'env:',
      '  PATH: /opt/gromacs/bin:/opt/openmpi/bin:$PATH => /opt/mpich/bin:$PATH',
      '',
    ].join('\n'),
  );
  const j = JSON.parse(ok(strata(['--json', 'compose', 'diff', 'work/strata.lock', 'other/strata.json'], { store, cwd: dir }), 'diff --json').stdout.toString());
  assert.equal([j.added, j.removed, j.same], [['zlib/1.3'], ['gromacs/2023'], false]);
  assert.is(ok(strata(['compose', 'diff', 'work/strata.lock', 'work'], { store, cwd: dir }), 'same').stdout.toString(), 'no differences between work/strata.lock and work\n');
  fails(strata(['compose', 'diff', 'work', 'nowhere'], { store, cwd: dir }), /^strata: nowhere does not exist/);
});

lmod('save pins records; restore after a re-import with other content refuses; describe, disable', ({ store, dir, work }) => {
  // Its own store: this test replaces a module.
  const own = join(dir, 'store');
  ok(strata(['-q', 'store', 'import', 'tcl/8.6', layerDir(dir, 'tcl-a')], { store: own, cwd: work }), 'import');
  ok(strata(['-q', 'store', 'import', 'tk/8.6', layerDir(dir, 'tk'), '--requires', 'tcl'], { store: own, cwd: work }), 'import');
  ok(strata(['-q', 'store', 'import', 'tk/8.7', layerDir(dir, 'tk')], { store: own, cwd: work }), 'import');
  fails(strata(['compose', 'save'], { store: own, cwd: work }), /^strata: You are trying to save an empty collection of modules in "default"\. If this is what you want then enter: \$ strata compose --force save default\n$/);
  ok(strata(['compose', 'load', 'tk/8.6'], { store: own, cwd: work }), 'load');
  const lock = readFileSync(join(work, 'strata.lock'), 'utf8');
  assert.is(ok(strata(['compose', 'save', 'mine'], { store: own, cwd: work }), 'save').stdout.toString(), 'Saved current collection of modules to: "mine"\n');
  assert.match(ok(strata(['compose', 'savelist'], { store: own, cwd: work }), 'savelist').stdout.toString(), '1) mine');
  assert.is(ok(strata(['compose', 'describe', 'mine'], { store: own, cwd: work }), 'describe').stdout.toString(), 'Collection "mine" contains: \n   1) tcl/8.6    2) tk/8.6\n');
  ok(strata(['compose', 'purge'], { store: own, cwd: work }), 'purge');
  // A newer default does not move a pinned collection.
  ok(strata(['store', 'default', 'tk/8.7'], { store: own, cwd: work }), 'default');
  const r = ok(strata(['compose', 'restore', 'mine'], { store: own, cwd: work }), 'restore');
  assert.is(r.stderr, "Restoring modules from user's mine\n");
  assert.equal(stackOf(work), ['tcl/8.6 (auto)', 'tk/8.6']);
  assert.is(readFileSync(join(work, 'strata.lock'), 'utf8'), lock, 'the same records, so the same lock');

  // Same fullName, other content: the pinned record is gone, restore refuses, stack unchanged.
  ok(strata(['compose', 'purge'], { store: own, cwd: work }), 'purge');
  ok(strata(['-q', 'store', 'import', 'tcl/8.6', layerDir(dir, 'tcl-b'), '--force'], { store: own, cwd: work }), 're-import');
  fails(strata(['compose', 'restore', 'mine'], { store: own, cwd: work }), /^strata: One or more modules in your mine collection have changed: "tcl\/8\.6"\. \(strata restores the exact records it saved/);
  assert.equal(stackOf(work), []);
  fails(strata(['compose', 'restore', 'nope'], { store: own, cwd: work }), /^strata: Lmod has detected the following error: User module collection: "nope" does not exist\. \(Try "strata compose savelist" for possible choices\.\)\n$/);
  ok(strata(['compose', 'disable', 'mine'], { store: own, cwd: work }), 'disable');
  assert.is(ok(strata(['compose', 'savelist'], { store: own, cwd: work }), 'savelist').stdout.toString(), 'No named collections.\n');
  fails(strata(['compose', 'disable', 'mine'], { store: own, cwd: work }), /^strata: No collection named "mine" found\./);
  fails(strata(['compose', 'describe', 'mine'], { store: own, cwd: work }), /^strata: No collection named "mine" found\./);
});

lmod('import: the Lmod fields are optional record fields, absent unless given; the hierarchy names its builds', ({ dir, work }) => {
  const own = join(dir, 'store');
  const layer = layerDir(dir, 'f');
  const plain = JSON.parse(ok(strata(['--json', 'store', 'import', 'zlib/1.3', layer], { store: own, cwd: work }), 'import').stdout.toString());
  const full = JSON.parse(
    ok(
      strata([
        '--json', 'store', 'import', 'hdf5/1.14', layer, '--under', 'gcc/12.2', '--under', 'mpi/openmpi-4.1', '--prereq', 'zlib',
        '--load-any', 'szip/2,zlib', '--whatis', 'URL: https://example.org', '--keyword', 'io,hdf', '--hidden', '--sticky', '--allow-missing',
      ], { store: own, cwd: work }),
      'import with every Lmod flag',
    ).stdout.toString(),
  );
  assert.is(full.fullName, 'gcc/12.2/mpi/openmpi-4.1/hdf5/1.14', 'the store name of a build under parents');
  const blob = (cid: string) => {
    const show = JSON.parse(ok(strata(['--json', 'store', 'show', cid], { store: own, cwd: work }), 'show').stdout.toString());
    return show.record as Record<string, unknown>;
  };
  const p = blob(plain.record);
  assert.equal(Object.keys(p).sort(), ['conflicts', 'description', 'env', 'family', 'layer', 'manifest', 'name', 'recordVersion', 'requires', 'restricted', 'version'], 'no new keys: old records keep their CIDs');
  const f = blob(full.record);
  assert.equal(
    [f.name, f.version, f.parents, f.prereq, f.loadAny, f.whatis, f.keywords, f.hidden, f.sticky],
    ['hdf5', '1.14', ['gcc/12.2', 'mpi/openmpi-4.1'], ['zlib'], [['szip/2', 'zlib']], ['URL: https://example.org'], ['io', 'hdf'], true, true],
  );
  const schema = JSON.parse(readFileSync(join(CLI, '..', '..', '..', 'spec', 'module-record.schema.json'), 'utf8'));
  const validate = new Ajv2020({ strict: true, allErrors: true }).compile(schema);
  assert.ok(validate(f), JSON.stringify(validate.errors));
  assert.ok(validate(p), JSON.stringify(validate.errors));
  assert.not.ok(validate({ ...f, hidden: false }), 'hidden is present only as true');
  const bad = strata(['store', 'import', 'x/1', layer, '--under', 'not a name'], { store: own, cwd: work });
  assert.is(bad.code, 2, bad.stderr);
  // Not visible until its parents are loaded; spider says what to load first.
  ok(strata(['-q', 'store', 'import', 'gcc/12.2', layer], { store: own, cwd: work }), 'import');
  ok(strata(['-q', 'store', 'import', 'mpi/openmpi-4.1', layer, '--under', 'gcc/12.2'], { store: own, cwd: work }), 'import');
  fails(strata(['compose', 'load', 'hdf5/1.14'], { store: own, cwd: work }), /^strata: Lmod has detected the following error: These module\(s\) or extension\(s\) exist but cannot be loaded as requested: "hdf5\/1\.14" \(Try: "strata compose spider hdf5\/1\.14" to see how to load the module\(s\)\.\)\n$/);
  assert.match(ok(strata(['compose', '--show_hidden', 'spider', 'hdf5/1.14'], { store: own, cwd: work }), 'spider').stdout.toString(), /You will need to load all module\(s\) on any one of the lines below before the "hdf5\/1\.14" module is available to load\.\n      gcc\/12\.2  mpi\/openmpi-4\.1\n/);
});

// ---------------------------------------------------------------------------------------
const restricted = suite<{ dir: string; store: string; group: { name: string; gid: number } }>('compose: restricted modules');
restricted.before.each(loud((ctx) => {
  ctx.dir = tempDir('strata-compose-restricted');
  ctx.store = join(ctx.dir, 'store');
  // An existing group of the base system (Debian's "staff", gid 50); uid 65534 is not in it.
  const line = mustRun('getent', ['group', 'staff']).stdout.toString().trim().split(':');
  ctx.group = { name: line[0]!, gid: Number(line[2]) };
  const layer = layerDir(ctx.dir, 'ansys');
  ok(strata(['-q', 'store', 'import', 'ansys/2024.1', layer, '--restricted', ctx.group.name], { store: ctx.store, cwd: ctx.dir }), 'import');
  ok(strata(['-q', 'store', 'import', 'fluent/1', layerDir(ctx.dir, 'fluent'), '--requires', 'ansys'], { store: ctx.store, cwd: ctx.dir }), 'import');
  ok(strata(['-q', 'store', 'import', 'zlib/1.3', layerDir(ctx.dir, 'zlib')], { store: ctx.store, cwd: ctx.dir }), 'import');
  // The unprivileged user needs to traverse the temp dir, and to own the store (it opens
  // LevelDB for writing) and its working directories.
  chmodSync(ctx.dir, 0o755);
  mustRun('chown', ['-R', '65534:65534', ctx.store]);
}));
restricted.after.each((ctx) => removeDir(ctx.dir));

function userDir(root: string, name: string): string {
  const d = join(root, name);
  mkdirSync(d);
  mustRun('chown', ['65534:65534', d]);
  return d;
}

restricted('refused for a non-member (also as a requirement and from a lock), allowed for a member and root', ({ dir, store, group }) => {
  const home = userDir(dir, 'home');
  const nonMember = nobody(home);
  const member = nobody(home, { groups: [group.gid] });

  const outsider = userDir(dir, 'outsider');
  ok(strata(['compose', 'add', 'zlib'], { store, cwd: outsider, as: nonMember }), 'add zlib as nobody');
  const before = readFileSync(join(outsider, 'strata.json'), 'utf8');
  const r = strata(['compose', 'add', 'ansys/2024.1'], { store, cwd: outsider, as: nonMember });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /^strata: Access to ansys\/2024\.1 is denied( \(.*\))?\n$/);
  const viaReq = strata(['compose', 'add', 'fluent'], { store, cwd: outsider, as: nonMember });
  assert.is(viaReq.code, 1, viaReq.stderr);
  assert.match(viaReq.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  assert.is(readFileSync(join(outsider, 'strata.json'), 'utf8'), before, 'stack unchanged');

  const insider = userDir(dir, 'insider');
  const ok1 = ok(strata(['compose', 'load', 'fluent'], { store, cwd: insider, as: member }), 'load fluent as a member');
  assert.is(ok1.stderr, '');
  assert.equal(stackOf(insider), ['ansys/2024.1 (auto)', 'fluent/1']);
  assert.match(ok(strata(['compose', 'avail', 'ansys'], { store, cwd: insider, as: member }), 'avail').stdout.toString(), /ansys\/2024\.1 \(R,L\)/);

  // The member's lock does not let the outsider build it.
  const lockFile = join(insider, 'strata.lock');
  const fromLock = strata(['compose', 'sandbox', join(outsider, 'sb'), '--lock', lockFile], { store, cwd: outsider, as: nonMember });
  assert.is(fromLock.code, 1, fromLock.stderr);
  assert.match(fromLock.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  assert.not.ok(existsSync(join(outsider, 'sb')));

  // root may always load.
  const rootWork = join(dir, 'root');
  mkdirSync(rootWork);
  ok(strata(['compose', 'add', 'ansys'], { store, cwd: rootWork }), 'add as root');
  assert.equal(stackOf(rootWork), ['ansys/2024.1']);
});

restricted('a uid with no passwd entry composes, and group names still count when one gid has none', ({ dir, store, group }) => {
  // Containers and batch systems run jobs as uids /etc/passwd does not know; `id -Gn` then
  // exits 1 for the nameless gid but still prints the names it found.
  const uid = 54321;
  assert.not.ok(run('getent', ['passwd', String(uid)]).code === 0, `uid ${uid} must have no passwd entry`);
  mustRun('chown', ['-R', `${uid}:${uid}`, store]);
  const home = join(dir, 'home');
  const w1 = join(dir, 'w1');
  const w2 = join(dir, 'w2');
  for (const d of [home, w1, w2]) {
    mkdirSync(d);
    mustRun('chown', [`${uid}:${uid}`, d]);
  }
  const outsider = nobody(home, { uid });
  const member = nobody(home, { uid, groups: [group.gid] });
  ok(strata(['compose', 'add', 'zlib'], { store, cwd: w1, as: outsider }), 'add zlib as a uid without a name');
  const denied = strata(['compose', 'add', 'ansys'], { store, cwd: w1, as: outsider });
  assert.is(denied.code, 1);
  assert.match(denied.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  ok(strata(['compose', 'add', 'ansys'], { store, cwd: w2, as: member }), 'add ansys as a member by group name');
  assert.equal(stackOf(w2), ['ansys/2024.1']);
});

lmod.run();
restricted.run();

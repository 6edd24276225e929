/**
 * Lmod behaviours of `strata compose` through the CLI, each with its message on stderr and
 * the stack it leaves in strata.json and strata.lock: default resolution (marked default vs
 * highest version), one-name swap, family swap, requirements added and removed, conflicts
 * refused, restricted modules refused for a non-member and allowed for a member (run as
 * uid 65534 with setpriv), save/restore pinned to records. Root (setpriv, chown).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mustRun, removeDir, run, RunResult, tempDir } from './helpers/tmp.js';
import { loud, ok, strataIn } from './helpers/cli.js';

/** `strata --store STORE ARGS…` with cwd = `cwd`; `as` runs it through setpriv as another user. */
function strata(store: string, cwd: string, args: string[], as?: { setpriv: string[]; home: string }): RunResult {
  if (!as) return strataIn(store, cwd, args);
  return strataIn(store, cwd, args, { prefix: ['setpriv', ...as.setpriv, '--'], env: { HOME: as.home, USER: 'nobody', LOGNAME: 'nobody' } });
}

/** The stack as [fullName, auto] pairs, from strata.json. */
function stackOf(work: string): string[] {
  const path = join(work, 'strata.json');
  if (!existsSync(path)) return [];
  const s = JSON.parse(readFileSync(path, 'utf8')) as { modules: { fullName: string; auto?: boolean }[] };
  return s.modules.map((m) => `${m.fullName}${m.auto ? ' (auto)' : ''}`);
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

// The catalogue: fullName → import options. One shared layer, except where content matters.
const CATALOGUE: Array<[string, string[]]> = [
  ['gcc/11.4', ['--family', 'compiler']],
  ['gcc/12.3', ['--family', 'compiler']],
  ['intel/2023.1', ['--family', 'compiler']],
  ['zlib/1.3', []],
  ['hdf5/1.14.3', ['--requires', 'zlib', '--requires', 'gcc/12.3']],
  ['rocm/6.0', []],
  ['cuda/12.2', ['--conflicts', 'rocm']],
  ['mpi/openmpi-2', []],
  ['mpi/mpich-3', []],
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
  for (const [name, opts] of CATALOGUE) ok(strata(ctx.store, ctx.shared, ['-q', 'store', 'import', name, layer, ...opts]), `import ${name}`);
}));
lmod.after((ctx) => removeDir(ctx.shared));
lmod.before.each(loud((ctx) => {
  ctx.dir = tempDir('strata-compose-lmod-t');
  ctx.work = join(ctx.dir, 'work');
  mkdirSync(ctx.work);
}));
lmod.after.each((ctx) => removeDir(ctx.dir));

lmod('a bare name resolves to the highest version, then to the marked default', ({ store, work }) => {
  const r = ok(strata(store, work, ['compose', 'add', 'py']), 'add py');
  assert.is(r.stderr, '', 'a plain load says nothing');
  assert.equal(stackOf(work), ['py/3.12']);
  assert.match(ok(strata(store, work, ['compose', 'avail', 'py/']), 'avail').stdout.toString(), /py\/3\.12 \(L,D\)/);
  ok(strata(store, work, ['store', 'default', 'py/3.10']), 'store default');
  ok(strata(store, work, ['compose', 'purge']), 'purge');
  assert.equal(stackOf(work), []);
  ok(strata(store, work, ['compose', 'add', 'py']), 'add py');
  assert.equal(stackOf(work), ['py/3.10']);
  assert.equal(lockOf(work), ['py/3.10']);
  const avail = ok(strata(store, work, ['compose', 'avail', 'py/']), 'avail').stdout.toString();
  assert.match(avail, /py\/3\.10 \(L,D\)/);
  assert.not.match(avail, /py\/3\.12 \(/);
});

lmod('a second version of a loaded name swaps it, with the version-change report', ({ store, work }) => {
  ok(strata(store, work, ['compose', 'add', 'mpi/openmpi-2']), 'add');
  const r = ok(strata(store, work, ['compose', 'add', 'mpi/mpich-3']), 'add');
  assert.is(r.stderr, 'The following have been reloaded with a version change:\n  1) mpi/openmpi-2 => mpi/mpich-3\n');
  assert.equal(stackOf(work), ['mpi/mpich-3']);
  assert.equal(lockOf(work), ['mpi/mpich-3']);
  assert.is(ok(strata(store, work, ['compose', 'list']), 'list').stdout.toString(), 'Currently Loaded Modules:\n  1) mpi/mpich-3\n');
});

lmod('a module of a loaded family replaces it, with Lmod\'s message', ({ store, work }) => {
  ok(strata(store, work, ['compose', 'add', 'zlib', 'gcc/12.3']), 'add');
  const r = ok(strata(store, work, ['compose', 'add', 'intel/2023.1']), 'add intel');
  assert.is(r.stderr, 'Lmod is automatically replacing "gcc/12.3" with "intel/2023.1".\n');
  assert.equal(stackOf(work), ['zlib/1.3', 'intel/2023.1']);
  assert.equal(lockOf(work), ['zlib/1.3', 'intel/2023.1']);
});

lmod('requirements are added below their module and removed with it', ({ store, work }) => {
  const add = ok(strata(store, work, ['compose', 'add', 'hdf5']), 'add hdf5');
  assert.is(add.stderr, 'Loading hdf5/1.14.3\n  Loading requirement: zlib/1.3 gcc/12.3\n');
  assert.equal(stackOf(work), ['zlib/1.3 (auto)', 'gcc/12.3 (auto)', 'hdf5/1.14.3']);
  assert.equal(lockOf(work), ['zlib/1.3', 'gcc/12.3', 'hdf5/1.14.3']);
  const rm = ok(strata(store, work, ['compose', 'rm', 'hdf5']), 'rm hdf5');
  assert.is(rm.stderr, 'Unloading hdf5/1.14.3\n  Unloading useless requirement: zlib/1.3 gcc/12.3\n');
  assert.equal(stackOf(work), []);
  // A requirement the user loaded is the user's: it stays.
  ok(strata(store, work, ['compose', 'add', 'zlib']), 'add zlib');
  assert.is(ok(strata(store, work, ['compose', 'add', 'hdf5']), 'add').stderr, 'Loading hdf5/1.14.3\n  Loading requirement: gcc/12.3\n');
  assert.is(ok(strata(store, work, ['compose', 'rm', 'hdf5']), 'rm').stderr, 'Unloading hdf5/1.14.3\n  Unloading useless requirement: gcc/12.3\n');
  assert.equal(stackOf(work), ['zlib/1.3']);
});

lmod('swap replaces one module with another and says what is left unmet', ({ store, work }) => {
  ok(strata(store, work, ['compose', 'add', 'hdf5']), 'add');
  const r = ok(strata(store, work, ['compose', 'swap', 'gcc', 'intel']), 'swap');
  assert.is(r.stderr, 'The following dependent module(s) are not currently loaded: gcc/12.3 (required by: hdf5/1.14.3)\n');
  assert.equal(stackOf(work), ['zlib/1.3 (auto)', 'hdf5/1.14.3', 'intel/2023.1']);
  const bad = strata(store, work, ['compose', 'swap', 'gcc/11.4', 'zlib']);
  assert.is(bad.code, 1);
  assert.is(bad.stderr, 'strata: Swap failed: "gcc/11.4" is not loaded. (see strata compose list)\n');
  const rm = ok(strata(store, work, ['compose', 'rm', 'gcc/12.3']), 'rm not loaded');
  assert.match(rm.stderr, /^Note: the module "gcc\/12\.3" cannot be unloaded because it was not loaded\.\n/);
  assert.equal(stackOf(work), ['zlib/1.3 (auto)', 'hdf5/1.14.3', 'intel/2023.1']);
});

lmod('a conflict is refused with exit 1 and the stack is unchanged', ({ store, work }) => {
  ok(strata(store, work, ['compose', 'add', 'zlib', 'rocm']), 'add');
  const files = () => [readFileSync(join(work, 'strata.json'), 'utf8'), readFileSync(join(work, 'strata.lock'), 'utf8')];
  const before = files();
  const r = strata(store, work, ['compose', 'add', 'gcc/12.3', 'cuda/12.2']);
  assert.is(r.code, 1);
  assert.is(r.stderr.split('\n').length, 2, 'one line');
  assert.match(r.stderr, /^strata: Cannot load module "cuda\/12\.2" because these module\(s\) are loaded: rocm\/6\.0( \(.*\))?\n$/);
  assert.equal(files(), before, 'all or nothing: gcc/12.3 was not added either');
  // The other direction: rocm loaded after cuda would be refused by cuda's conflict.
  ok(strata(store, work, ['compose', 'purge']), 'purge');
  ok(strata(store, work, ['compose', 'add', 'cuda']), 'add cuda');
  const r2 = strata(store, work, ['compose', 'add', 'rocm']);
  assert.is(r2.code, 1);
  assert.match(r2.stderr, /^strata: Cannot load module "rocm\/6\.0" because this module set a conflict: "cuda\/12\.2"/);
  assert.equal(stackOf(work), ['cuda/12.2']);
});

lmod('save pins records; restore after a re-import with other content refuses', ({ store, dir, work }) => {
  // Its own store: this test replaces a module.
  const own = join(dir, 'store');
  ok(strata(own, work, ['-q', 'store', 'import', 'tcl/8.6', layerDir(dir, 'tcl-a')]), 'import');
  ok(strata(own, work, ['-q', 'store', 'import', 'tk/8.6', layerDir(dir, 'tk'), '--requires', 'tcl']), 'import');
  ok(strata(own, work, ['-q', 'store', 'import', 'tk/8.7', layerDir(dir, 'tk')]), 'import');
  ok(strata(own, work, ['compose', 'add', 'tk/8.6']), 'add');
  const lock = readFileSync(join(work, 'strata.lock'), 'utf8');
  assert.is(ok(strata(own, work, ['compose', 'save', 'mine']), 'save').stdout.toString(), 'Saved current collection of modules to: "mine"\n');
  assert.match(ok(strata(own, work, ['compose', 'savelist']), 'savelist').stdout.toString(), '1) mine');
  ok(strata(own, work, ['compose', 'purge']), 'purge');
  // A newer default does not move a pinned collection.
  ok(strata(own, work, ['store', 'default', 'tk/8.7']), 'default');
  const r = ok(strata(own, work, ['compose', 'restore', 'mine']), 'restore');
  assert.is(r.stderr, "Restoring modules from user's mine\n");
  assert.equal(stackOf(work), ['tcl/8.6 (auto)', 'tk/8.6']);
  assert.is(readFileSync(join(work, 'strata.lock'), 'utf8'), lock, 'the same records, so the same lock');

  // Same fullName, other content: the pinned record is gone, restore refuses, stack unchanged.
  ok(strata(own, work, ['compose', 'purge']), 'purge');
  ok(strata(own, work, ['-q', 'store', 'import', 'tcl/8.6', layerDir(dir, 'tcl-b'), '--force']), 're-import');
  const bad = strata(own, work, ['compose', 'restore', 'mine']);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /^strata: One or more modules in your mine collection have changed: "tcl\/8\.6"\./);
  assert.is(bad.stderr.split('\n').length, 2, 'one line');
  assert.equal(stackOf(work), []);
  // The default collection name.
  ok(strata(own, work, ['compose', 'add', 'tk/8.7']), 'add');
  ok(strata(own, work, ['compose', 'save']), 'save');
  ok(strata(own, work, ['compose', 'purge']), 'purge');
  assert.is(ok(strata(own, work, ['compose', 'restore']), 'restore').stderr, "Restoring modules from user's default\n");
  assert.equal(stackOf(work), ['tk/8.7']);
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
  ok(strata(ctx.store, ctx.dir, ['-q', 'store', 'import', 'ansys/2024.1', layer, '--restricted', ctx.group.name]), 'import');
  ok(strata(ctx.store, ctx.dir, ['-q', 'store', 'import', 'fluent/1', layer, '--requires', 'ansys']), 'import');
  ok(strata(ctx.store, ctx.dir, ['-q', 'store', 'import', 'zlib/1.3', layer]), 'import');
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
  const nonMember = { setpriv: ['--reuid=65534', '--regid=65534', '--clear-groups'], home };
  const member = { setpriv: ['--reuid=65534', '--regid=65534', `--groups=${group.gid}`], home };

  const outsider = userDir(dir, 'outsider');
  ok(strata(store, outsider, ['compose', 'add', 'zlib'], nonMember), 'add zlib as nobody');
  const before = readFileSync(join(outsider, 'strata.json'), 'utf8');
  const r = strata(store, outsider, ['compose', 'add', 'ansys/2024.1'], nonMember);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /^strata: Access to ansys\/2024\.1 is denied( \(.*\))?\n$/);
  const viaReq = strata(store, outsider, ['compose', 'add', 'fluent'], nonMember);
  assert.is(viaReq.code, 1, viaReq.stderr);
  assert.match(viaReq.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  assert.is(readFileSync(join(outsider, 'strata.json'), 'utf8'), before, 'stack unchanged');

  const insider = userDir(dir, 'insider');
  const ok1 = ok(strata(store, insider, ['compose', 'add', 'fluent'], member), 'add fluent as a member');
  assert.is(ok1.stderr, 'Loading fluent/1\n  Loading requirement: ansys/2024.1\n');
  assert.equal(stackOf(insider), ['ansys/2024.1 (auto)', 'fluent/1']);
  assert.match(ok(strata(store, insider, ['compose', 'avail', 'ansys'], member), 'avail').stdout.toString(), /ansys\/2024\.1 \(R,L\)/);

  // The member's lock does not let the outsider build it.
  const lockFile = join(insider, 'strata.lock');
  const fromLock = strata(store, outsider, ['compose', 'sandbox', join(outsider, 'sb'), '--lock', lockFile], nonMember);
  assert.is(fromLock.code, 1, fromLock.stderr);
  assert.match(fromLock.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  assert.not.ok(existsSync(join(outsider, 'sb')));

  // root may always load.
  const rootWork = join(dir, 'root');
  mkdirSync(rootWork);
  ok(strata(store, rootWork, ['compose', 'add', 'ansys']), 'add as root');
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
  const outsider = { setpriv: [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'], home };
  const member = { setpriv: [`--reuid=${uid}`, `--regid=${uid}`, `--groups=${group.gid}`], home };
  ok(strata(store, w1, ['compose', 'add', 'zlib'], outsider), 'add zlib as a uid without a name');
  const denied = strata(store, w1, ['compose', 'add', 'ansys'], outsider);
  assert.is(denied.code, 1);
  assert.match(denied.stderr, /^strata: Access to ansys\/2024\.1 is denied/);
  ok(strata(store, w2, ['compose', 'add', 'ansys'], member), 'add ansys as a member by group name');
  assert.equal(stackOf(w2), ['ansys/2024.1']);
});

lmod.run();
restricted.run();

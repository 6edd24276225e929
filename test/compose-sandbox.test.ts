/**
 * `strata compose sandbox` through the CLI, checked with the reference tools only:
 * - the four-layer stack (test/fixtures/stack.ts) imported from its GNU tars gives the tree
 *   that GNU tar extraction with OCI whiteout handling gives, and the tree `umoci unpack`
 *   gives of the same layers written by umoci; umoci's own layer blobs imported as modules
 *   give that tree too;
 * - the embedded metadata: /.strata/lock.json is strata.lock, /.strata/env.sh sourced by sh
 *   gives the modules' PATH, `strata inspect DIR` prints the lock's modules, and every lock
 *   strata writes validates against spec/lock.schema.json;
 * - hostile stacks (test/fixtures/hostile.ts) are refused or contained, checked by a sentinel
 *   and listings outside the target; a non-empty target needs --force.
 * Root (the fixtures make device nodes, foreign owners and security.capability).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020Module from 'ajv/dist/2020.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { assertOneLineError, loud, ok, strata } from './helpers/cli.js';
import { comparePathsRef, diffTrees, snapshotTree, TreeSnapshot } from './helpers/tree.js';
import { buildOciLayout, makeStack, ociLayerBlobs, referenceExtract, Stack, STACK, umociUnpack } from './fixtures/stack.js';
import { hostileStackLayers, writeTars } from './fixtures/hostile.js';

const hex = (s: string) => Buffer.from(s).toString('hex');

// Module names per stack layer and the environment they carry (values with a quote, a `$` and
// a space, which env.sh must keep literal).
const MODULES = [
  { layer: 'base', name: 'base/1', opts: [] as string[] },
  { layer: 'mid', name: 'mid/1', opts: [] },
  { layer: 'app', name: 'app/2.0', opts: ['--prepend', 'PATH=/opt/app/bin', '--prepend', 'LD_LIBRARY_PATH=/opt/app/lib'] },
  { layer: 'lic', name: 'lic/1', opts: ['--append', 'PATH=/opt/lic/bin', '--setenv', `LIC_NOTE=it's $HOME and "more"`] },
];

function importStack(stack: Stack, store: string, work: string): void {
  for (const m of MODULES) {
    ok(strata(['store', 'import', m.name, stack.layers.find((l) => l.name === m.layer)!.tar, ...m.opts], { store, cwd: work }), `import ${m.name}`);
  }
}

// ajv's CommonJS default export seen through NodeNext ESM.
const Ajv2020 = ((Ajv2020Module as unknown as { default?: unknown }).default ?? Ajv2020Module) as new (o: object) => {
  compile(schema: object): ((v: unknown) => boolean) & { errors?: unknown };
};
const SCHEMA = [new URL('../spec/lock.schema.json', import.meta.url), new URL('../../spec/lock.schema.json', import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((p) => existsSync(p))!;
const lockSchema = JSON.parse(readFileSync(SCHEMA, 'utf8'));
const validateLock = new Ajv2020({ allErrors: true, strict: true }).compile(lockSchema);

// ---------------------------------------------------------------------------------------
interface StackCtx {
  /** Shared, read-only: the stack, its store, the umoci layout. */
  shared: string;
  stack: Stack;
  store: string;
  layout: string;
  /** Per test: a working directory and room for outputs. */
  dir: string;
  work: string;
}

const four = suite<StackCtx>('compose sandbox: four-layer stack');
// The stack, its store and the umoci layout take seconds to build and no test changes them,
// so they are made once for the suite; each test gets its own working directory.
four.before(loud((ctx) => {
  ctx.shared = tempDir('strata-compose-sandbox');
  ctx.stack = makeStack(join(ctx.shared, 'stack'));
  ctx.store = join(ctx.shared, 'store');
  mkdirSync(join(ctx.shared, 'w'));
  importStack(ctx.stack, ctx.store, join(ctx.shared, 'w'));
  ctx.layout = buildOciLayout(ctx.stack, join(ctx.shared, 'oci'));
}));
four.after((ctx) => removeDir(ctx.shared));
four.before.each(loud((ctx) => {
  ctx.dir = tempDir('strata-compose-sandbox-t');
  ctx.work = join(ctx.dir, 'work');
  mkdirSync(ctx.work);
  ok(strata(['compose', 'add', ...MODULES.map((m) => m.name)], { store: ctx.store, cwd: ctx.work }), 'compose add');
}));
four.after.each((ctx) => removeDir(ctx.dir));

/** The things the four-layer stack must show, so that an empty or partial tree cannot pass a diff. */
function assertStackShape(snap: TreeSnapshot): void {
  assert.is(snap.get(STACK.devices.null)?.type, 'char');
  assert.equal(snap.get(STACK.devices.null)?.rdev, { major: 1, minor: 3 });
  assert.equal(snap.get(STACK.devices.loop0)?.rdev, { major: 7, minor: 0 });
  assert.is(snap.get(STACK.devices.loop0)?.gid, 6);
  assert.is(snap.get(STACK.devices.fifo)?.type, 'fifo');
  assert.is(snap.get('tmp')?.mode, 0o1777);
  assert.not.ok(snap.has(STACK.whitedOutFile), 'whiteout of a base file');
  assert.not.ok(snap.has(STACK.whitedOutDir), 'whiteout of a base dir');
  for (const p of STACK.opaqueHidden) assert.not.ok(snap.has(p), `opaque dir hides ${p}`);
  assert.ok(snap.has(STACK.opaqueKept));
  assert.is(snap.get(STACK.bigFile)?.size, STACK.bigFileSize);
  assert.equal(snap.get(STACK.licDir)?.acl, STACK.licAcl);
  assert.is(snap.get(STACK.licFile)?.acl.access, STACK.licFileAcl);
  assert.is(snap.get(STACK.licFile)?.xattrs['user.license'], hex('site-1234'));
  assert.ok(snap.get(STACK.licCap)?.xattrs['security.capability'], 'security.capability');
  assert.equal(snap.get(STACK.licHardLinks[0])?.links, [...STACK.licHardLinks]);
  assert.is(snap.get(STACK.licSymlink)?.target, 'liblic.so.1');
}

four('sandbox of the GNU tars equals GNU tar + whiteouts and umoci unpack of the same layers', (ctx) => {
  const sb = join(ctx.dir, 'sandbox');
  const r = ok(strata(['compose', 'sandbox', sb], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  assert.match(r.stdout.toString(), `from ${MODULES.length} modules`);
  assert.is(r.stderr, '', 'as root nothing is skipped, so nothing is said on stderr');
  const snap = snapshotTree(sb);
  assertStackShape(snap);
  // Only strata's own additions (/.strata, /.singularity.d) are left out of the comparison.
  const ref = referenceExtract(ctx.stack.layers.map((l) => l.tar), join(ctx.dir, 'gnu'));
  assert.equal(diffTrees(snap, ref, { ignoreStrataPaths: true }), []);
  const rootfs = umociUnpack(ctx.layout, 'latest', join(ctx.dir, 'bundle'));
  assert.equal(diffTrees(snap, rootfs, { ignoreStrataPaths: true }), []);
  // The embedded lock is the working directory's lock, byte for byte.
  assert.is(readFileSync(join(sb, '.strata/lock.json'), 'utf8'), readFileSync(join(ctx.work, 'strata.lock'), 'utf8'));
});

four("umoci's own layer blobs imported as modules give the same sandbox", (ctx) => {
  const blobs = ociLayerBlobs(ctx.layout);
  assert.is(blobs.length, 4);
  const store = join(ctx.dir, 'store-umoci');
  const names = blobs.map((_, i) => `umoci${i}/1`);
  blobs.forEach((b, i) => ok(strata(['store', 'import', names[i]!, b.path], { store, cwd: ctx.work }), `import ${b.digest}`));
  const work = join(ctx.dir, 'work-umoci');
  mkdirSync(work);
  ok(strata(['compose', 'add', ...names], { store, cwd: work }), 'compose add');
  const sb = join(ctx.dir, 'sandbox-umoci');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  const snap = snapshotTree(sb);
  assertStackShape(snap);
  const rootfs = umociUnpack(ctx.layout, 'latest', join(ctx.dir, 'bundle'));
  assert.equal(diffTrees(snap, rootfs, { ignoreStrataPaths: true }), []);
  // Against the sandbox of the GNU tars: /.strata differs only because the lock names other
  // modules (umoci's mid layer has per-child whiteouts, not an opaque marker, so other CIDs).
  const gnu = join(ctx.dir, 'sandbox-gnu');
  ok(strata(['compose', 'sandbox', gnu], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  assert.equal(diffTrees(snap, gnu, { ignoreStrataPaths: true }), []);
});

four('strata inspect DIR prints the modules of the lock, lowest first', (ctx) => {
  const sb = join(ctx.dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  const lock = JSON.parse(readFileSync(join(ctx.work, 'strata.lock'), 'utf8'));
  const text = ok(strata(['inspect', sb], { store: ctx.store, cwd: ctx.work }), 'inspect').stdout.toString();
  const rows = text.split('\n').filter((l) => /^\s+\S+\s+baga/.test(l)).map((l) => l.trim().split(/\s+/));
  assert.equal(rows, lock.modules.map((m: { fullName: string; record: string }) => [m.fullName, m.record]));
  assert.equal(rows.map((r) => r[0]), MODULES.map((m) => m.name));
  assert.match(text, 'ACLs: ');
  const json = JSON.parse(ok(strata(['--json', 'inspect', sb], { store: ctx.store, cwd: ctx.work }), 'inspect --json').stdout.toString());
  assert.equal(json.lock, lock);
  assert.is(json.kind, 'sandbox');
  assert.ok(json.acls.entries[STACK.licDir], 'the ACL summary names opt/lic');
  // Not a strata tree: refused with one line.
  const plain = join(ctx.dir, 'plain');
  mkdirSync(plain);
  const bad = strata(['inspect', plain], { store: ctx.store, cwd: ctx.work });
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /^strata: .*has no \/\.strata\/lock\.json.*\n$/);
});

four("/.strata/env.sh sourced by sh gives the modules' environment, values literal", (ctx) => {
  const sb = join(ctx.dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  const env = readFileSync(join(sb, '.strata/env.sh'));
  assert.equal(readFileSync(join(sb, '.singularity.d/env/90-strata.sh')), env, 'the Apptainer copy is the same script');
  const show = (base: Record<string, string>) => {
    const r = spawnSync('/bin/sh', ['-c', '. "$1/.strata/env.sh" && printf "%s\\n" "$PATH" "${LD_LIBRARY_PATH-unset}" "$LIC_NOTE"', 'sh', sb], {
      env: base,
      encoding: 'utf8',
    });
    assert.is(r.status, 0, r.stderr);
    return r.stdout.split('\n').slice(0, 3);
  };
  // app/2.0 prepends, lic/1 appends, in layer order; LD_LIBRARY_PATH unset gets no stray ':'.
  assert.equal(show({ PATH: '/usr/bin:/bin', HOME: '/nowhere' }), [
    '/opt/app/bin:/usr/bin:/bin:/opt/lic/bin',
    '/opt/app/lib',
    `it's $HOME and "more"`,
  ]);
  assert.equal(show({ PATH: '/usr/bin:/bin', LD_LIBRARY_PATH: '/x/lib', HOME: '/nowhere' })[1], '/opt/app/lib:/x/lib');
});

four('every lock strata writes validates against spec/lock.schema.json', (ctx) => {
  const sb = join(ctx.dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  ok(strata(['compose', 'lock', '-o', join(ctx.dir, 'out.lock')], { store: ctx.store, cwd: ctx.work }), 'lock -o');
  const docs: Record<string, unknown> = {
    'strata.lock': JSON.parse(readFileSync(join(ctx.work, 'strata.lock'), 'utf8')),
    'lock -o': JSON.parse(readFileSync(join(ctx.dir, 'out.lock'), 'utf8')),
    'lock (stdout)': JSON.parse(ok(strata(['compose', 'lock'], { store: ctx.store, cwd: ctx.work }), 'lock').stdout.toString()),
    'lock --json': JSON.parse(ok(strata(['--json', 'compose', 'lock'], { store: ctx.store, cwd: ctx.work }), 'lock --json').stdout.toString()),
    '/.strata/lock.json': JSON.parse(readFileSync(join(sb, '.strata/lock.json'), 'utf8')),
  };
  for (const [what, doc] of Object.entries(docs)) {
    assert.ok(validateLock(doc), `${what}: ${JSON.stringify(validateLock.errors)}`);
    assert.equal(doc, docs['strata.lock'], `${what} is the same lock`);
  }
  const lock = docs['strata.lock'] as { modules: Array<Record<string, string>>; env: Array<Record<string, string>> };
  assert.is(lock.modules.length, 4);
  assert.is(lock.env.length, 4);
  // The schema can fail: each of these breaks one rule.
  const broken = [
    { ...lock, lockfileVersion: 2 },
    { ...lock, env: undefined },
    { ...lock, extra: true },
    { ...lock, modules: [{ ...lock.modules[0], record: lock.modules[0]!.layer }] },
    { ...lock, modules: [{ ...lock.modules[0], layer: 'sha256:00' }] },
    { ...lock, env: [{ op: 'unset', var: 'PATH', value: '' }] },
    { ...lock, env: [{ op: 'set', var: 'A-B', value: '' }] },
  ];
  for (const b of broken) assert.not.ok(validateLock(JSON.parse(JSON.stringify(b))), JSON.stringify(b).slice(0, 80));
});

four('/.strata/acl.json validates against spec/acl-index.schema.json and lists every ACL of the tree', (ctx) => {
  const sb = join(ctx.dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store: ctx.store, cwd: ctx.work }), 'sandbox');
  const schema = JSON.parse(readFileSync(SCHEMA.replace('lock.schema.json', 'acl-index.schema.json'), 'utf8'));
  const validate = new Ajv2020({ allErrors: true, strict: true }).compile(schema);
  const index = JSON.parse(readFileSync(join(sb, '.strata/acl.json'), 'utf8')) as { entries: Record<string, { mode: number; access?: string; default?: string }> };
  assert.ok(validate(index), JSON.stringify(validate.errors));
  // The reference tools' view of the tree: every path with an ACL, and nothing else.
  const snap = snapshotTree(sb);
  // One entry per inode: a hard-link group's ACL is listed under its first path only.
  const withAcl = [...snap.values()]
    .filter((n) => (n.acl.access || n.acl.default) && (!n.links || [...n.links].sort(comparePathsRef)[0] === n.path))
    .map((n) => n.path)
    .sort();
  assert.ok(withAcl.length >= 4, 'the licensed layer brings ACLs');
  assert.equal(Object.keys(index.entries).sort(), withAcl);
  for (const p of withAcl) {
    const n = snap.get(p)!;
    assert.is(index.entries[p]!.access, n.acl.access, `${p}: access ACL`);
    assert.is(index.entries[p]!.default, n.acl.default, `${p}: default ACL`);
    assert.is(index.entries[p]!.mode, n.mode, `${p}: mode`);
  }
  // The schema can fail.
  const anyPath = withAcl[0]!;
  for (const bad of [
    { ...index, aclVersion: 2 },
    { ...index, entries: { '../x': index.entries[anyPath] } },
    { ...index, entries: { [anyPath]: { mode: 420 } } },
    { ...index, entries: { [anyPath]: { ...index.entries[anyPath], access: 'user::rw-,user:bob:r--,group::r--,other::---' } } },
  ]) assert.not.ok(validate(JSON.parse(JSON.stringify(bad))), JSON.stringify(bad).slice(0, 80));
});

// ---------------------------------------------------------------------------------------
interface Ctx {
  dir: string;
  store: string;
  work: string;
}

const fresh = (name: string) => {
  const s = suite<Ctx>(name);
  s.before.each((ctx) => {
    ctx.dir = tempDir('strata-compose-hostile');
    ctx.store = join(ctx.dir, 'store');
    ctx.work = join(ctx.dir, 'work');
    mkdirSync(ctx.work);
  });
  s.after.each((ctx) => removeDir(ctx.dir));
  return s;
};

/** A listing of `dir` with each entry's type, mode, size, mtime and (for files) content hash. */
function listing(dir: string): string[] {
  return readdirSync(dir).sort().map((n) => {
    const st = lstatSync(join(dir, n));
    const sum = st.isFile() ? createHash('sha256').update(readFileSync(join(dir, n))).digest('hex') : '';
    return `${n} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${sum}`;
  });
}

function fileState(p: string): string {
  const st = statSync(p);
  return `${st.ino} ${st.size} ${st.mtimeMs} ${st.ctimeMs} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
}

const hostile = fresh('compose sandbox: hostile stacks');

hostile('`etc -> /` then `etc/passwd`: resolved inside the target, nothing outside changes', ({ dir, store, work }) => {
  const layers = hostileStackLayers(join(dir, 'tars')).etcSymlink;
  ok(strata(['store', 'import', 'evil-etc/1', layers[0]!], { store, cwd: work }), 'import 1');
  ok(strata(['store', 'import', 'evil-passwd/1', layers[1]!], { store, cwd: work }), 'import 2');
  ok(strata(['compose', 'add', 'evil-etc', 'evil-passwd'], { store, cwd: work }), 'add');
  // The target's parent holds only the target and a sentinel (strata.json and strata.lock
  // change in the working directory, elsewhere).
  const outer = join(dir, 'outer');
  mkdirSync(outer);
  const sentinel = join(outer, 'sentinel');
  writeFileSync(sentinel, 'outside the target\n');
  // The host's /etc/passwd is checked for the layer's line, not byte for byte: another
  // process may add a user meanwhile.
  const pwned = () => readFileSync('/etc/passwd', 'utf8').includes('pwned:x:0:0') || existsSync('/passwd');
  assert.not.ok(pwned());
  const before = { sentinel: fileState(sentinel), parent: listing(outer), root: readdirSync('/').sort() };
  const target = join(outer, 'sandbox');
  // As umoci's securejoin does: `etc` resolves to the layer root, so `etc/passwd` is the
  // target's own /passwd. The absolute link never reaches the host.
  ok(strata(['compose', 'sandbox', target], { store, cwd: work }), 'sandbox');
  assert.ok(readFileSync(join(target, 'passwd'), 'utf8').includes('pwned:x:0:0'), 'etc/passwd landed at the target root');
  assert.is(readlinkSync(join(target, 'etc')), '/');
  const parentNow = listing(outer).filter((l) => !l.startsWith('sandbox '));
  assert.equal({ sentinel: fileState(sentinel), parent: parentNow, root: readdirSync('/').sort() }, before);
  assert.not.ok(pwned(), 'etc/passwd through etc -> / would be /passwd (or /etc/passwd by a writer that follows it)');
  rmSync(target, { recursive: true });

  // The symlink alone is contained: it is written as a link inside the target, and no
  // metadata call follows it to '/'.
  ok(strata(['compose', 'rm', 'evil-passwd'], { store, cwd: work }), 'rm');
  const rootBefore = lstatSync('/');
  ok(strata(['compose', 'sandbox', target], { store, cwd: work }), 'sandbox of the symlink alone');
  assert.is(readlinkSync(join(target, 'etc')), '/');
  const rootAfter = lstatSync('/');
  assert.equal([rootAfter.mode, rootAfter.uid, rootAfter.gid, rootAfter.mtimeMs], [rootBefore.mode, rootBefore.uid, rootBefore.gid, rootBefore.mtimeMs]);
  assert.is(fileState(sentinel), before.sentinel);
  assert.not.ok(pwned());
});

hostile('a lower symlink on the way (merged /usr: lib -> usr/lib) is resolved inside the tree, as umoci does', ({ dir, store, work }) => {
  const [base, vendor, loop] = writeTars([
    {
      out: join(dir, 'base.tar'),
      members: [
        { name: 'usr/', type: 'dir', mode: 0o755 },
        { name: 'usr/lib/', type: 'dir', mode: 0o755 },
        { name: 'usr/lib/libc.so.6', data: 'libc\n', mode: 0o755 },
        { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
        { name: 'lib64', type: 'symlink', linkname: '/usr/../../lib' },
        { name: 'a', type: 'symlink', linkname: 'b' },
        { name: 'b', type: 'symlink', linkname: 'a' },
      ],
    },
    // A vendor tarball made on a split-/usr system: paths under lib/ with no lib/ entry, a
    // hard link between two of them, and a whiteout below the symlink.
    {
      out: join(dir, 'vendor.tar'),
      members: [
        { name: 'lib/x86_64-linux-gnu/libvendor.so.1', data: 'vendor\n', mode: 0o755 },
        { name: 'lib/x86_64-linux-gnu/libvendor.so', type: 'hardlink', linkname: 'lib/x86_64-linux-gnu/libvendor.so.1' },
        { name: 'lib64/ld-vendor.so', data: 'ld\n', mode: 0o755 },
        { name: 'lib/.wh.libc.so.6' },
      ],
    },
    { out: join(dir, 'loop.tar'), members: [{ name: 'a/x', data: 'x\n' }] },
  ]);
  ok(strata(['store', 'import', 'usrbase/1', base!], { store, cwd: work }), 'import base');
  ok(strata(['store', 'import', 'vendor/1', vendor!], { store, cwd: work }), 'import vendor');
  ok(strata(['compose', 'add', 'usrbase', 'vendor'], { store, cwd: work }), 'add');
  const sb = join(dir, 'sb');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  assert.is(readlinkSync(join(sb, 'lib')), 'usr/lib', 'the symlink stays a symlink');
  const so = join(sb, 'usr/lib/x86_64-linux-gnu/libvendor.so.1');
  assert.is(readFileSync(so, 'utf8'), 'vendor\n');
  assert.is(statSync(join(sb, 'usr/lib/x86_64-linux-gnu/libvendor.so')).ino, statSync(so).ino, 'the hard link follows its target');
  // /usr/../../lib: `..` stops at the root, so lib64 resolves to lib, then to usr/lib.
  assert.is(readFileSync(join(sb, 'usr/lib/ld-vendor.so'), 'utf8'), 'ld\n');
  assert.not.ok(existsSync(join(sb, 'usr/lib/libc.so.6')), 'the whiteout below the symlink hid usr/lib/libc.so.6');
  // The same layers as an image agree with the sandbox (through unsquashfs, not our reader).
  const img = join(dir, 'usr.sqfs');
  ok(strata(['compose', 'squash', img], { store, cwd: work }), 'squash');
  const ex = join(dir, 'ex');
  mustRun('unsquashfs', ['-no-progress', '-d', ex, img]);
  assert.equal(diffTrees(ex, sb), []);
  // A loop of symlinks on the way is refused in one line.
  ok(strata(['store', 'import', 'loop/1', loop!], { store, cwd: work }), 'import loop');
  ok(strata(['compose', 'add', 'loop'], { store, cwd: work }), 'add loop');
  const r = strata(['compose', 'sandbox', join(dir, 'sb2')], { store, cwd: work });
  assertOneLineError(r, 'sandbox through a symlink loop', /^strata: layer loop\/1 writes 'a\/x' through a loop of symlinks/);
});

hostile('whiteouts naming `..` and `.` are refused at import with one line', ({ dir, store, work }) => {
  const layers = hostileStackLayers(join(dir, 'tars')).whiteoutDotDot;
  ok(strata(['store', 'import', 'hosts/1', layers[0]!], { store, cwd: work }), 'import 1');
  const r = strata(['store', 'import', 'dotdot/1', layers[1]!], { store, cwd: work });
  assert.is(r.code, 1);
  assert.is(r.stderr, "strata: whiteout 'etc/.wh...' names '..', which is not an entry of its directory (refusing a layer that could write outside its root)\n");
  const ls = ok(strata(['store', 'ls'], { store, cwd: work }), 'ls').stdout.toString();
  assert.match(ls, 'hosts/1');
  assert.not.match(ls, 'dotdot');
  // `.wh..` alone (a whiteout of '.') is refused the same way.
  const dot = writeTars([{ out: join(dir, 'dot.tar'), members: [{ name: 'etc', type: 'dir' }, { name: 'etc/.wh..', data: '' }] }])[0]!;
  const r2 = strata(['store', 'import', 'dot/1', dot], { store, cwd: work });
  assert.is(r2.code, 1);
  assert.is(r2.stderr, "strata: whiteout 'etc/.wh..' names '.', which is not an entry of its directory (refusing a layer that could write outside its root)\n");
});

hostile('a hard link to a whited-out file: refused across layers, content kept within one', ({ dir, store, work }) => {
  // The fixture's third layer links to a file only a lower, whited-out layer had: a layer may
  // only link to what it holds, so import refuses it.
  const layers = hostileStackLayers(join(dir, 'tars')).hardlinkToWhitedOut;
  ok(strata(['store', 'import', 'lx/1', layers[0]!], { store, cwd: work }), 'import 1');
  ok(strata(['store', 'import', 'whx/1', layers[1]!], { store, cwd: work }), 'import 2');
  const r = strata(['store', 'import', 'ly/1', layers[2]!], { store, cwd: work });
  assert.is(r.code, 1);
  assert.is(r.stderr, "strata: hard link 'lib/y' points at 'lib/x', which is not in the layer (a layer may only link to files it holds itself)\n");

  // Within one layer: lib/x and its link lib/y; the layer above whites out lib/x (and puts a
  // new lib/z beside). lib/y keeps the inode's content and metadata, as GNU tar + whiteouts give.
  const [low, high] = writeTars([
    {
      out: join(dir, 'links-1.tar'),
      members: [
        { name: 'lib', type: 'dir', mtime: 1_600_000_000 },
        { name: 'lib/x', data: 'linked content\n', mode: 0o640, uid: 7, gid: 8, mtime: 1_600_000_100 },
        { name: 'lib/y', type: 'hardlink', linkname: 'lib/x', mode: 0o640, uid: 7, gid: 8, mtime: 1_600_000_100 },
        { name: 'lib/w', type: 'hardlink', linkname: 'lib/x', mode: 0o640, uid: 7, gid: 8, mtime: 1_600_000_100 },
      ],
    },
    {
      out: join(dir, 'links-2.tar'),
      members: [
        { name: 'lib', type: 'dir', mtime: 1_600_000_000 },
        { name: 'lib/.wh.x', data: '' },
        { name: 'lib/z', data: 'new\n', mtime: 1_600_000_200 },
      ],
    },
  ]);
  ok(strata(['store', 'import', 'links/1', low!], { store, cwd: work }), 'import links');
  ok(strata(['store', 'import', 'nox/1', high!], { store, cwd: work }), 'import nox');
  ok(strata(['compose', 'add', 'links', 'nox'], { store, cwd: work }), 'add');
  const outer = join(dir, 'outer');
  mkdirSync(outer);
  writeFileSync(join(outer, 'sentinel'), 'outside\n');
  const parent = listing(outer);
  const sb = join(outer, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  const snap = snapshotTree(sb);
  assert.not.ok(snap.has('lib/x'));
  assert.is(readFileSync(join(sb, 'lib/y'), 'utf8'), 'linked content\n');
  assert.equal(snap.get('lib/w')?.links, ['lib/w', 'lib/y'], 'the surviving members still share one inode');
  assert.equal([snap.get('lib/y')?.mode, snap.get('lib/y')?.uid, snap.get('lib/y')?.gid], [0o640, 7, 8]);
  const ref = referenceExtract([low!, high!], join(dir, 'ref'));
  // ignoreRoot: these layers carry no '.' entry, so the root's metadata is strata's default on
  // one side and mkdir's on the other.
  assert.equal(diffTrees(snap, ref, { ignoreStrataPaths: true, ignoreRoot: true }), []);
  assert.equal(listing(outer).filter((l) => !l.startsWith('sandbox ')), parent);
});

hostile('a layer whose .strata and .singularity.d/env are symlinks out of the target: replaced, not followed', ({ dir, store, work }) => {
  const outside = join(dir, 'outside');
  mkdirSync(join(outside, 'env'), { recursive: true });
  writeFileSync(join(outside, 'keep'), 'keep\n');
  const [layer] = writeTars([
    {
      out: join(dir, 'meta.tar'),
      members: [
        { name: '.strata', type: 'symlink', linkname: outside },
        { name: '.singularity.d', type: 'dir' },
        { name: '.singularity.d/env', type: 'symlink', linkname: join(outside, 'env') },
        { name: 'data', data: 'data\n' },
        // Owner, mtime and xattrs of a link are set on the link, never on its target.
        {
          name: 'out', type: 'symlink', linkname: outside, uid: 4321, gid: 4321, mtime: 1_500_000_000,
          pax: { 'SCHILY.xattr.trusted.strata-link': 'on the link' },
        },
      ],
    },
  ]);
  ok(strata(['store', 'import', 'meta/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'meta'], { store, cwd: work }), 'add');
  const self = () => {
    const st = lstatSync(outside);
    return [st.uid, st.gid, st.mode, st.mtimeMs];
  };
  const before = [listing(outside), listing(join(outside, 'env')), self()];
  const sb = join(dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  assert.equal([listing(outside), listing(join(outside, 'env')), self()], before);
  assert.is(run('getfattr', ['-h', '-n', 'trusted.strata-link', outside]).code, 1, 'the xattr was not set through the link');
  assert.match(mustRun('getfattr', ['-h', '-n', 'trusted.strata-link', '--only-values', join(sb, 'out')]).stdout.toString(), 'on the link');
  const link = lstatSync(join(sb, 'out'));
  assert.equal([link.isSymbolicLink(), link.uid, link.gid, link.mtimeMs], [true, 4321, 4321, 1_500_000_000_000]);
  assert.ok(lstatSync(join(sb, '.strata')).isDirectory());
  assert.ok(lstatSync(join(sb, '.singularity.d/env')).isDirectory());
  assert.is(readFileSync(join(sb, '.strata/lock.json'), 'utf8'), readFileSync(join(work, 'strata.lock'), 'utf8'));
  assert.ok(existsSync(join(sb, '.singularity.d/env/90-strata.sh')));
});

// ---------------------------------------------------------------------------------------
const target = fresh('compose sandbox: target directory');

target('a non-empty target is refused without --force and replaced with it, links inside not followed', ({ dir, store, work }) => {
  const [layer] = writeTars([{ out: join(dir, 'one.tar'), members: [{ name: 'hello', data: 'hi\n', mtime: 1_600_000_000 }] }]);
  ok(strata(['store', 'import', 'one/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'one'], { store, cwd: work }), 'add');
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'keep'), 'keep me\n');
  const sb = join(dir, 'sandbox');
  mkdirSync(sb);
  writeFileSync(join(sb, 'stale'), 'old\n');
  symlinkSync(outside, join(sb, 'link-out'));
  const before = listing(outside);

  const r = strata(['compose', 'sandbox', sb], { store, cwd: work });
  assert.is(r.code, 1);
  assert.match(r.stderr, /^strata: .*sandbox is not empty \(.*--force.*\)\n$/);
  assert.equal(readdirSync(sb).sort(), ['link-out', 'stale'], 'refused: the target is untouched');

  ok(strata(['compose', 'sandbox', sb, '--force'], { store, cwd: work }), 'sandbox --force');
  assert.equal(readdirSync(sb).sort(), ['.singularity.d', '.strata', 'hello']);
  assert.is(readFileSync(join(sb, 'hello'), 'utf8'), 'hi\n');
  assert.equal(listing(outside), before, 'the symlink was removed, not followed');

  // A target that is a file is refused even with --force.
  writeFileSync(join(dir, 'file'), 'x');
  const f = strata(['compose', 'sandbox', join(dir, 'file'), '--force'], { store, cwd: work });
  assert.is(f.code, 1);
  assert.match(f.stderr, /exists and is not a directory/);
  // So is a symlink to a directory: it is not followed.
  symlinkSync(outside, join(dir, 'to-outside'));
  const l = strata(['compose', 'sandbox', join(dir, 'to-outside'), '--force'], { store, cwd: work });
  assert.is(l.code, 1);
  assert.match(l.stderr, /exists and is not a directory/);
  assert.equal(listing(outside), before);
});

target('a sandbox that runs out of space fails in one line and leaves the target as it was', ({ dir, store, work }) => {
  // Files are written on libuv's pool (native/extract.c): a write that fails there fails the
  // build, like one on the main thread.
  const members = Array.from({ length: 48 }, (_, i) => ({ name: `d${i % 3}/f${String(i).padStart(2, '0')}`, data: Buffer.alloc(100_000, i) }));
  const [layer] = writeTars([{ out: join(dir, 'big.tar'), members }]);
  ok(strata(['store', 'import', 'big/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'big'], { store, cwd: work }), 'add');
  const small = join(dir, 'small');
  mkdirSync(small);
  mustRun('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
  try {
    const sb = join(small, 'sandbox');
    mkdirSync(sb);
    writeFileSync(join(sb, 'old'), 'keep\n');
    const before = listing(small);
    const r = strata(['compose', 'sandbox', sb, '--force'], { store, cwd: work });
    assertOneLineError(r, 'sandbox on a full filesystem', /ENOSPC.*\(free some space and build again\)/);
    assert.equal(listing(small), before, 'the target and its filesystem are as they were');
    assert.equal(readdirSync(small), ['sandbox'], 'no private build directory is left');
  } finally {
    unmount(small);
  }
});

target('--force on a directory that holds the store is refused, the store intact', ({ dir, work }) => {
  const outDir = join(dir, 'out');
  const store = join(outDir, 'store');
  const [layer] = writeTars([{ out: join(dir, 'one.tar'), members: [{ name: 'hello', data: 'hi\n' }] }]);
  ok(strata(['store', 'import', 'one/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'one'], { store, cwd: work }), 'add');
  for (const target of [outDir, store]) {
    const r = strata(['compose', 'sandbox', target, '--force'], { store, cwd: work });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /^strata: .* holds the store .*--force would delete it/);
  }
  assert.match(ok(strata(['store', 'ls'], { store, cwd: work }), 'ls').stdout.toString(), 'one/1');
  ok(strata(['store', 'verify'], { store, cwd: work }), 'verify');
});

target('setuid, setgid and sticky bits and foreign owners come out as GNU tar gives them', ({ dir, store, work }) => {
  const [layer] = writeTars([
    {
      out: join(dir, 'modes.tar'),
      members: [
        { name: '.', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
        { name: 'bin', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
        { name: 'bin/su', data: 'su\n', mode: 0o4755, mtime: 1_600_000_001 },
        { name: 'bin/wall', data: 'wall\n', mode: 0o2755, gid: 5, mtime: 1_600_000_002 },
        { name: 'shared', type: 'dir', mode: 0o2775, uid: 1234, gid: 50, mtime: 1_600_000_003 },
        { name: 'shared/drop', type: 'dir', mode: 0o1733, uid: 3_000_000, gid: 3_000_001, mtime: 1_600_000_004 },
        { name: 'shared/closed', type: 'dir', mode: 0o500, uid: 1234, mtime: 1_600_000_005 },
        { name: 'shared/closed/file', data: 'x', mode: 0o400, uid: 1234, mtime: 1_600_000_006 },
        { name: 'shared/fifo', type: 'fifo', mode: 0o620, uid: 7, gid: 7, mtime: 1_600_000_007 },
      ],
    },
  ]);
  ok(strata(['store', 'import', 'modes/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'modes'], { store, cwd: work }), 'add');
  const sb = join(dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  const snap = snapshotTree(sb);
  assert.equal([snap.get('bin/su')?.mode, snap.get('bin/wall')?.mode, snap.get('shared')?.mode, snap.get('shared/drop')?.mode], [0o4755, 0o2755, 0o2775, 0o1733]);
  assert.equal([snap.get('shared/drop')?.uid, snap.get('shared/drop')?.gid], [3_000_000, 3_000_001]);
  assert.equal(diffTrees(snap, referenceExtract([layer!], join(dir, 'ref')), { ignoreStrataPaths: true }), []);
  // With a tiny memory budget the plan and the directory list go through spill files: the
  // same tree (directory modes and mtimes are applied from the spilled list, deepest first).
  const spilled = join(dir, 'sandbox-spilled');
  ok(strata(['compose', 'sandbox', spilled], { store, cwd: work, env: { STRATA_MEMORY_BUDGET: '512' } }), 'sandbox, spilled');
  assert.equal(diffTrees(snap, spilled), []);
});

target("ACLs around the target are not inherited: a parent's default ACL, an old target's own", ({ dir, store, work }) => {
  const [layer] = writeTars([
    {
      out: join(dir, 'plain.tar'),
      members: [
        { name: '.', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
        { name: 'sub', type: 'dir', mode: 0o750, mtime: 1_600_000_001 },
        { name: 'sub/file', data: 'no acl here\n', mode: 0o640, mtime: 1_600_000_002 },
      ],
    },
  ]);
  ok(strata(['store', 'import', 'plain/1', layer!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'plain'], { store, cwd: work }), 'add');
  const ref = referenceExtract([layer!], join(dir, 'ref'));
  assert.equal(snapshotTree(ref).get('sub/file')?.acl, {}, 'the reference has no ACLs');
  // A shared project directory with a default ACL, as HPC sites set them.
  const project = join(dir, 'project');
  mkdirSync(project);
  mustRun('setfacl', ['-d', '-m', 'u:1001:rwx,g:2001:rwx', project]);
  const sb = join(project, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  assert.equal(diffTrees(sb, ref, { ignoreStrataPaths: true }), []);
  // --force over a target that carries its own access and default ACLs.
  const old = join(dir, 'old');
  mkdirSync(old);
  writeFileSync(join(old, 'stale'), '');
  mustRun('setfacl', ['-m', 'u:1001:rwx', '-d', '-m', 'g:2001:rwx', old]);
  ok(strata(['compose', 'sandbox', old, '--force'], { store, cwd: work }), 'sandbox --force');
  assert.equal(diffTrees(old, ref, { ignoreStrataPaths: true }), []);
});

// ---------------------------------------------------------------------------------------
const edges = fresh('compose sandbox: merge edge cases');

edges('type changes, opaque and re-created paths, link groups losing a member, as OCI says', ({ dir, store, work }) => {
  const T = 1_600_000_000;
  const d = (name: string, mode = 0o755) => ({ name, type: 'dir' as const, mode, mtime: T });
  const f = (name: string, data: string) => ({ name, data, mtime: T + 1 });
  const tars = writeTars([
    {
      out: join(dir, 'e1.tar'),
      members: [
        d('.'), d('a'), f('a/f1', 'a1\n'), d('a/sub'), f('a/sub/f2', 'a2\n'), f('b', 'b file\n'), d('c'), f('c/x', 'cx\n'),
        { name: 'd', type: 'symlink', linkname: 'a', mtime: T }, d('e'), d('h'), f('h/one', 'linked\n'),
        { name: 'h/three', type: 'hardlink', linkname: 'h/one' }, { name: 'h/two', type: 'hardlink', linkname: 'h/one' },
        d('k'), f('k/old', 'old\n'),
      ],
    },
    {
      out: join(dir, 'e2.tar'),
      members: [
        d('.'), f('a', 'now a file\n'), d('b', 0o750), f('b/inner', 'inner\n'), d('c'), f('c/.wh..wh..opq', ''), f('c/y', 'cy\n'),
        d('d'), f('d/z', 'dz\n'), d('e'), f('e/.wh.nothing', ''), d('h'), f('h/two', 'replaced member\n'),
      ],
    },
    {
      out: join(dir, 'e3.tar'),
      members: [d('.'), f('.wh.c', ''), f('.wh.b', ''), f('b', 'b again\n'), f('.wh.k', ''), d('k', 0o700), f('k/new', 'new\n')],
    },
  ]);
  tars.forEach((t, i) => ok(strata(['store', 'import', `e${i + 1}/1`, t], { store, cwd: work }), `import ${t}`));
  ok(strata(['compose', 'add', 'e1', 'e2', 'e3'], { store, cwd: work }), 'add');
  const sb = join(dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  const snap = snapshotTree(sb);
  const paths = [...snap.keys()].filter((p) => p !== '.' && !p.startsWith('.strata') && !p.startsWith('.singularity.d'));
  assert.equal(paths, ['a', 'b', 'd', 'd/z', 'e', 'h', 'h/one', 'h/three', 'h/two', 'k', 'k/new']);
  const text = (p: string) => readFileSync(join(sb, p), 'utf8');
  assert.is(text('a'), 'now a file\n', 'a file over a directory drops its subtree');
  assert.is(text('b'), 'b again\n', 'whited out and re-created in one layer: the new one');
  assert.is(snap.get('d')?.type, 'dir', 'a directory over a symlink');
  assert.equal(snap.get('h/one')?.links, ['h/one', 'h/three']);
  assert.is(text('h/two'), 'replaced member\n');
  assert.is(snap.get('h/two')?.links, undefined);
  assert.is(snap.get('k')?.mode, 0o700, 'whiteout of a directory, then a new one: no lower children');
});

edges('hard links in one directory to files of several, in turn, in the sandbox and through unsquash', ({ dir, store, work }) => {
  // The tree writer keeps the last link target's directory open (compose/tree/writer.ts): z/2
  // names a file of q/ between two links into p/, z/4 one at the root, p/l one beside it.
  const [tar] = writeTars([
    {
      out: join(dir, 'links.tar'),
      members: [
        { name: 'p/', type: 'dir', mode: 0o755 }, { name: 'p/f', data: 'pf\n' }, { name: 'p/h', data: 'ph\n' },
        { name: 'p/l', type: 'hardlink', linkname: 'p/f' },
        { name: 'q/', type: 'dir', mode: 0o755 }, { name: 'q/g', data: 'qg\n' },
        { name: 'r', data: 'r\n' },
        { name: 'z/', type: 'dir', mode: 0o755 },
        { name: 'z/1', type: 'hardlink', linkname: 'p/f' }, { name: 'z/2', type: 'hardlink', linkname: 'q/g' },
        { name: 'z/3', type: 'hardlink', linkname: 'p/h' }, { name: 'z/4', type: 'hardlink', linkname: 'r' },
      ],
    },
  ]);
  ok(strata(['store', 'import', 'links/1', tar!], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'links'], { store, cwd: work }), 'add');
  const sb = join(dir, 'sandbox');
  ok(strata(['compose', 'sandbox', sb], { store, cwd: work }), 'sandbox');
  const img = join(dir, 'links.sqfs');
  ok(strata(['compose', 'squash', img], { store, cwd: work }), 'squash');
  const un = join(dir, 'unsquashed');
  ok(strata(['unsquash', img, un]), 'unsquash');
  for (const tree of [sb, un]) {
    const snap = snapshotTree(tree);
    assert.equal(snap.get('p/f')?.links, ['p/f', 'p/l', 'z/1'], `${tree}: p/f`);
    assert.equal(snap.get('q/g')?.links, ['q/g', 'z/2'], `${tree}: q/g`);
    assert.equal(snap.get('p/h')?.links, ['p/h', 'z/3'], `${tree}: p/h`);
    assert.equal(snap.get('r')?.links, ['r', 'z/4'], `${tree}: r`);
    assert.is(readFileSync(join(tree, 'z/2'), 'utf8'), 'qg\n', `${tree}: z/2`);
  }
});

four.run();
hostile.run();
target.run();
edges.run();

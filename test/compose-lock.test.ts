/**
 * Reproducibility of outputs from a lock or a hash list, through the CLI: the strata.lock of
 * one store, used with a second store that holds the same modules (imported in another
 * order, beside others), gives the identical sandbox — .strata included, nothing ignored;
 * so does `compose lock --cids -o F` with `sandbox --cids F`, and a hash list naming a
 * layer CID where that layer names exactly one module. Root (the four-layer stack).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { removeDir, tempDir } from './helpers/tmp.js';
import { loud, ok, strata } from './helpers/cli.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';
import { makeStack, Stack, STACK } from './fixtures/stack.js';

const MODULES: Array<{ layer: string; name: string; opts: string[] }> = [
  { layer: 'base', name: 'base/1', opts: [] },
  { layer: 'mid', name: 'mid/1', opts: ['--requires', 'base', '--allow-missing'] }, // store B imports top first
  { layer: 'app', name: 'app/2.0', opts: ['--prepend', 'PATH=/opt/app/bin'] },
  { layer: 'lic', name: 'lic/1', opts: ['--append', 'PATH=/opt/lic/bin', '--setenv', 'LIC=/opt/lic/LICENSE'] },
];

interface LockDoc {
  modules: Array<{ fullName: string; record: string; layer: string; manifest: string }>;
}

interface Ctx {
  /** Per test: room for outputs. */
  dir: string;
  /** Shared by the suite (read-only for the tests). */
  shared: string;
  stack: Stack;
  /** Store A: imported bottom to top; the stack composed there. */
  storeA: string;
  workA: string;
  sandboxA: string;
  /** Store B: the same modules imported top to bottom, plus an unrelated one. */
  storeB: string;
  workB: string;
}

const lock = suite<Ctx>('compose: lock and hash list across stores');
// Two stores of the four-layer stack take seconds to fill and the tests only read them (and
// work B's stack stays empty), so they are made once; each test writes its outputs in `dir`.
lock.before(loud((ctx) => {
  ctx.shared = tempDir('strata-compose-lock');
  ctx.stack = makeStack(join(ctx.shared, 'stack'));
  ctx.storeA = join(ctx.shared, 'store-a');
  ctx.storeB = join(ctx.shared, 'store-b');
  ctx.workA = join(ctx.shared, 'work-a');
  ctx.workB = join(ctx.shared, 'work-b');
  mkdirSync(ctx.workA);
  mkdirSync(ctx.workB);
  const tar = (l: string) => ctx.stack.layers.find((x) => x.name === l)!.tar;
  for (const m of MODULES) ok(strata(['-q', 'store', 'import', m.name, tar(m.layer), ...m.opts], { store: ctx.storeA, cwd: ctx.workA }), `import ${m.name}`);
  ok(strata(['-q', 'store', 'import', 'other/9', tar('mid')], { store: ctx.storeB, cwd: ctx.workB }), 'import other');
  for (const m of [...MODULES].reverse()) ok(strata(['-q', 'store', 'import', m.name, tar(m.layer), ...m.opts], { store: ctx.storeB, cwd: ctx.workB }), `import ${m.name}`);
  // base comes in as mid's requirement, below it.
  ok(strata(['compose', 'add', 'mid', 'app', 'lic'], { store: ctx.storeA, cwd: ctx.workA }), 'add');
  ctx.sandboxA = join(ctx.shared, 'sandbox-a');
  ok(strata(['compose', 'sandbox', ctx.sandboxA], { store: ctx.storeA, cwd: ctx.workA }), 'sandbox A');
}));
lock.after((ctx) => removeDir(ctx.shared));
lock.before.each(loud((ctx) => {
  ctx.dir = tempDir('strata-compose-lock-t');
}));
lock.after.each((ctx) => removeDir(ctx.dir));

lock('strata.lock of store A rebuilds the identical sandbox from store B', ({ dir, stack, storeB, workA, workB, sandboxA }) => {
  const doc = JSON.parse(readFileSync(join(workA, 'strata.lock'), 'utf8')) as LockDoc;
  assert.equal(doc.modules.map((m) => m.fullName), ['base/1', 'mid/1', 'app/2.0', 'lic/1']);
  // Not vacuous: the tree has the stack's content.
  const snapA = snapshotTree(sandboxA);
  assert.is(snapA.get(STACK.bigFile)?.size, STACK.bigFileSize);
  assert.equal(snapA.get(STACK.licDir)?.acl, STACK.licAcl);

  const sb = join(dir, 'sandbox-b');
  ok(strata(['compose', 'sandbox', sb, '--lock', join(workA, 'strata.lock')], { store: storeB, cwd: workB }), 'sandbox --lock');
  assert.equal(diffTrees(snapA, sb), []);
  assert.not.ok(existsSync(join(workB, 'strata.json')), 'building from a lock leaves the working stack alone');

  // A store lacking one of the modules says which.
  const storeC = join(dir, 'store-c');
  ok(strata(['-q', 'store', 'import', 'base/1', stack.layers[0]!.tar], { store: storeC, cwd: workB }), 'import');
  const r = strata(['compose', 'sandbox', join(dir, 'sandbox-c'), '--lock', join(workA, 'strata.lock')], { store: storeC, cwd: workB });
  assert.is(r.code, 1);
  assert.match(r.stderr, new RegExp(`^strata: module mid/1 \\(record ${doc.modules[1]!.record}\\) is not in this store \\(.*\\)\\n$`));
  assert.not.ok(existsSync(join(dir, 'sandbox-c')));
});

lock('compose lock --cids -o F, then sandbox --cids F with store B: identical', ({ dir, storeA, storeB, workA, workB, sandboxA }) => {
  const list = join(dir, 'stack.cids');
  ok(strata(['compose', 'lock', '--cids', '-o', list], { store: storeA, cwd: workA }), 'lock --cids');
  const doc = JSON.parse(readFileSync(join(workA, 'strata.lock'), 'utf8')) as LockDoc;
  const cids = readFileSync(list, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  assert.equal(cids, doc.modules.map((m) => m.record), 'one record CID a line, lowest layer first');
  const sb = join(dir, 'sandbox-b');
  ok(strata(['compose', 'sandbox', sb, '--cids', list], { store: storeB, cwd: workB }), 'sandbox --cids');
  assert.equal(diffTrees(sandboxA, sb), []);
});

lock('a layer CID in the hash list works when it names one module, and is refused when it names two', ({ dir, storeB, workA, workB, sandboxA }) => {
  const doc = JSON.parse(readFileSync(join(workA, 'strata.lock'), 'utf8')) as LockDoc;
  // app's layer is only app/2.0's in store B.
  const lines = doc.modules.map((m) => (m.fullName === 'app/2.0' ? m.layer : m.record));
  const list = join(dir, 'layer.cids');
  writeFileSync(list, `# app by its layer\n${lines.join('\n')}\n`);
  const sb = join(dir, 'sandbox-b');
  ok(strata(['compose', 'sandbox', sb, '--cids', list], { store: storeB, cwd: workB }), 'sandbox --cids with a layer CID');
  assert.equal(diffTrees(sandboxA, sb), []);

  // mid's layer is also other/9's in store B: ambiguous.
  const mid = doc.modules.find((m) => m.fullName === 'mid/1')!;
  writeFileSync(list, doc.modules.map((m) => (m === mid ? m.layer : m.record)).join('\n'));
  const r = strata(['compose', 'sandbox', join(dir, 'sandbox-x'), '--cids', list], { store: storeB, cwd: workB });
  assert.is(r.code, 1);
  assert.is(r.stderr, `strata: layer ${mid.layer} names 2 modules in this store (list record CIDs instead (strata compose lock --cids))\n`);
  assert.not.ok(existsSync(join(dir, 'sandbox-x')));
});

lock('a lock whose CIDs do not agree with the records, or that is no lock, is refused in one line', ({ dir, storeB, workA, workB }) => {
  const doc = JSON.parse(readFileSync(join(workA, 'strata.lock'), 'utf8')) as LockDoc;
  const app = doc.modules.find((m) => m.fullName === 'app/2.0')!;
  const lic = doc.modules.find((m) => m.fullName === 'lic/1')!;
  const tampered = join(dir, 'tampered.lock');
  writeFileSync(tampered, JSON.stringify({ ...doc, modules: doc.modules.map((m) => (m === app ? { ...m, layer: lic.layer } : m)) }));
  const r = strata(['compose', 'sandbox', join(dir, 'sb'), '--lock', tampered], { store: storeB, cwd: workB });
  assert.is(r.code, 1);
  assert.is(r.stderr, `strata: record ${app.record} of app/2.0 does not name the layer and manifest the lock names\n`);
  const notJson = join(dir, 'list.lock');
  writeFileSync(notJson, `${app.record}\n`);
  const r2 = strata(['compose', 'sandbox', join(dir, 'sb'), '--lock', notJson], { store: storeB, cwd: workB });
  assert.is(r2.code, 1);
  assert.match(r2.stderr, /^strata: .*list\.lock is not JSON \(give a strata\.lock, or a hash list with --cids\)\n$/);
  assert.not.ok(existsSync(join(dir, 'sb')));
});

lock.run();

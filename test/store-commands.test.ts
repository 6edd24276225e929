/**
 * The other store commands, through the CLI: `ls [PATTERN]` (substring and glob), `default`,
 * `rm`, `gc --dry-run` and `gc` (only unreferenced blobs go; shared layers stay while any
 * module names them), `show` of a record CID, usage errors (exit 2), unknown modules (exit 1,
 * one line), and `--json` of every command printing exactly one parseable JSON document.
 */
import { suite } from 'uvu';
import { ensureGroup } from './helpers/users.js';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalStore } from '../store/local-store.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobListing, blobPath } from './store-harness.js';
interface Ctx {
  dir: string;
  store: string;
  trees: Record<string, string>;
}

function tree(dir: string, content: string): string {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  writeFileSync(join(dir, 'bin', 'tool'), content);
  return dir;
}

const names = (mods: Array<{ fullName: string }>) => mods.map((m) => m.fullName);

const test = suite<Ctx>('store commands');
test.before.each(async (ctx) => {
  ctx.dir = tempDir('strata-cmds-');
  ctx.store = join(ctx.dir, 'store');
  ctx.trees = {
    a: tree(join(ctx.dir, 'a'), 'openmpi 4.1.5\n'),
    b: tree(join(ctx.dir, 'b'), 'openmpi 5.0.3\n'),
    c: tree(join(ctx.dir, 'c'), 'mpich 3\n'),
  };
  // Set up through the API (quicker than four CLI runs); the commands under test go through the CLI.
  const s = await LocalStore.open(ctx.store);
  await s.importModule('openmpi/4.1.5', ctx.trees.a!, { description: 'Open MPI' });
  await s.importModule('openmpi/5.0.3', ctx.trees.b!);
  ensureGroup('hpc'); // --restricted names a group the host has
  await s.importModule('mpi/mpich-3', ctx.trees.c!, { restricted: 'hpc' });
  // Same layer as openmpi/4.1.5, other record.
  await s.importModule('alias/1', ctx.trees.a!);
  await s.close();
});
test.after.each((ctx) => removeDir(ctx.dir));

test('ls: all, substring (case-insensitive), glob; --json fields', ({ store }) => {
  const all = strataJson(['store', 'ls'], { store });
  assert.equal(names(all), ['alias/1', 'mpi/mpich-3', 'openmpi/4.1.5', 'openmpi/5.0.3']);
  const m = all.find((x: { fullName: string }) => x.fullName === 'mpi/mpich-3');
  assert.equal({ name: m.name, version: m.version, restricted: m.restricted, isDefault: m.isDefault }, { name: 'mpi', version: 'mpich-3', restricted: 'hpc', isDefault: false });
  assert.equal(names(strataJson(['store', 'ls', 'OPENMPI'], { store })), ['openmpi/4.1.5', 'openmpi/5.0.3']);
  assert.equal(names(strataJson(['store', 'ls', 'mpi'], { store })), ['mpi/mpich-3', 'openmpi/4.1.5', 'openmpi/5.0.3']);
  assert.equal(names(strataJson(['store', 'ls', 'openmpi/4.*'], { store })), ['openmpi/4.1.5']);
  assert.equal(names(strataJson(['store', 'ls', 'mpi/*'], { store })), ['mpi/mpich-3']);
  assert.equal(strataJson(['store', 'ls', 'nothing-like-this'], { store }), []);
  const text = strata(['store', 'ls', 'mpich'], { store });
  assert.is(text.code, 0);
  assert.match(text.stdout.toString(), /^mpi\/mpich-3 \(R\)/);
});

test('default: marks one version, moves on a second call, shows in ls; unknown module is one line', ({ store }) => {
  assert.equal(strataJson(['store', 'default', 'openmpi/4.1.5'], { store }), { default: 'openmpi/4.1.5' });
  const d = (mods: Array<{ fullName: string; isDefault: boolean }>) => mods.filter((x) => x.isDefault).map((x) => x.fullName);
  assert.equal(d(strataJson(['store', 'ls'], { store })), ['openmpi/4.1.5']);
  strataJson(['store', 'default', 'openmpi/5.0.3'], { store });
  assert.equal(d(strataJson(['store', 'ls'], { store })), ['openmpi/5.0.3']);
  assert.match(strata(['store', 'ls', 'openmpi'], { store }).stdout.toString(), /openmpi\/5\.0\.3 \(D\)/);
  assertOneLineError(strata(['store', 'default', 'openmpi/9'], { store }), 'default of unknown', /no module openmpi\/9/);
});

test('rm then gc --dry-run then gc: only blobs nothing references go', ({ store }) => {
  const a = strataJson(['store', 'show', 'openmpi/4.1.5'], { store });
  const b = strataJson(['store', 'show', 'openmpi/5.0.3'], { store });
  const alias = strataJson(['store', 'show', 'alias/1'], { store });
  assert.is(alias.record.layer, a.record.layer, 'alias shares the layer');
  assert.equal(strataJson(['store', 'gc', '--dry-run'], { store }), { removed: [], bytes: 0, kept: 0 });

  strataJson(['store', 'default', 'openmpi/4.1.5'], { store });
  assert.equal(strataJson(['store', 'rm', 'openmpi/4.1.5'], { store }), { removed: 'openmpi/4.1.5' });
  strataJson(['store', 'rm', 'openmpi/5.0.3'], { store });
  assert.equal(names(strataJson(['store', 'ls'], { store })), ['alias/1', 'mpi/mpich-3']);
  assertOneLineError(strata(['store', 'rm', 'openmpi/4.1.5'], { store }), 'rm twice', /no module openmpi\/4\.1\.5/);

  const hex = (cid: string) => blobPath(store, cid).split('/').pop()!;
  const before = blobListing(store);
  // Within the grace period a build that read the catalog before the rm may still need them.
  const graced = strataJson(['store', 'gc'], { store });
  assert.equal([graced.removed, graced.bytes], [[], 0]);
  assert.is(graced.kept, 4, 'the removed modules\' blobs are kept for the grace period');
  assert.equal(blobListing(store), before, 'nothing removed in the grace period');
  const dry = strataJson(['store', 'gc', '--dry-run', '--grace', '0'], { store });
  // a's record goes; a's layer and manifest stay (alias/1 names them); all of b goes.
  const expected = [a.cid, b.cid, b.record.layer, b.record.manifest].map((c) => `sha256:${hex(c)}`).sort();
  assert.equal([...dry.removed].sort(), expected);
  assert.ok(dry.bytes > 0);
  assert.equal(blobListing(store), before, 'dry run removes nothing');
  const text = strata(['store', 'gc', '--dry-run', '--grace', '0'], { store });
  assert.match(text.stdout.toString(), /would remove sha256:/);

  const real = strataJson(['store', 'gc', '--grace', '0'], { store });
  assert.equal([...real.removed].sort(), expected);
  assert.is(real.bytes, dry.bytes);
  for (const c of [a.cid, b.cid, b.record.layer, b.record.manifest]) assert.not.ok(existsSync(blobPath(store, c)), `${c} removed`);
  for (const c of [alias.cid, a.record.layer, a.record.manifest]) assert.ok(existsSync(blobPath(store, c)), `${c} kept`);
  assert.equal(strataJson(['store', 'gc', '--grace', '0'], { store }), { removed: [], bytes: 0, kept: 0, cacheFreed: 0 });
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 2, problems: [] });
  // The removed default went with its module.
  assert.equal(strataJson(['store', 'ls'], { store }).filter((x: { isDefault: boolean }) => x.isDefault), []);
});

test('show by record CID; verify one module; unknown module; usage errors exit 2', ({ store }) => {
  const a = strataJson(['store', 'show', 'openmpi/4.1.5'], { store });
  const byCid = strataJson(['store', 'show', a.cid], { store });
  assert.equal(byCid.record, a.record);
  assert.is(byCid.fullName, 'openmpi/4.1.5');
  assert.equal(strataJson(['store', 'verify', 'openmpi/4.1.5'], { store }), { modules: 1, problems: [] });
  assertOneLineError(strata(['store', 'show', 'nope/1'], { store }), 'show unknown', /no module nope\/1/);
  assertOneLineError(strata(['store', 'verify', 'nope/1'], { store }), 'verify unknown', /no module nope\/1/);
  assertOneLineError(strata(['store', 'export', 'nope/1', join(store, '..', 'x.tar')], { store }), 'export unknown', /no module nope\/1/);
  const noDir = strata(['store', 'export', 'openmpi/4.1.5', join(store, '..', 'no-such-dir', 'x.tar')], { store });
  const line = assertOneLineError(noDir, 'export into a missing directory', /no-such-dir/);
  assert.not.match(line, /\.strata-\d+/, 'the message names OUT, not the temp file');
  const bad = strata(['store', 'import', 'Bad Name', '/nonexistent'], { store });
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /^strata: 'Bad Name' is not a module name/);
  const missing = strata(['store', 'import', 'x/1', join(store, '..', 'no-such-source')], { store });
  assertOneLineError(missing, 'missing source', /does not exist/);
  assert.is(strata(['store', 'frobnicate'], { store }).code, 2);
});

test('--json: every store command prints one JSON document', ({ dir, store, trees }) => {
  const docs = [
    ['store', 'import', 'json/1', trees.a!, '--prepend', 'PATH=/opt/x/bin', '--setenv', 'X=1', '--family', 'mpi'],
    ['store', 'ls'],
    ['store', 'ls', 'json'],
    ['store', 'show', 'json/1'],
    ['store', 'default', 'json/1'],
    ['store', 'verify'],
    ['store', 'verify', 'json/1'],
    ['store', 'export', 'json/1', join(dir, 'json.tar')],
    ['store', 'gc', '--dry-run'],
    ['store', 'rm', 'json/1'],
    ['store', 'gc'],
  ];
  for (const args of docs) {
    const r = strata(['--json', ...args], { store });
    assert.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    const text = r.stdout.toString('utf8');
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      assert.unreachable(`${args.join(' ')} printed no single JSON document: ${text}`);
    }
    assert.ok(doc !== null && typeof doc === 'object', `${args.join(' ')}: an object or array`);
    assert.is(r.stderr, '', `${args.join(' ')}: nothing on stderr`);
  }
});

test('rm refuses while a module requires it or a collection pins it, naming them; --force removes', ({ dir, store, trees }) => {
  strataJson(['store', 'import', 'app/1', trees.b!, '--requires', 'openmpi/5.0.3'], { store });
  strataJson(['store', 'import', 'tool/1', tree(join(dir, 'd'), 'tool\n'), '--requires', 'openmpi'], { store }); // any openmpi will do
  const line = assertOneLineError(strata(['store', 'rm', 'openmpi/5.0.3'], { store }), 'rm of a requirement');
  assert.is(line, 'strata: openmpi/5.0.3 is still needed: app/1 requires it (remove those first, or use --force to remove it anyway)');
  // tool/1 names `openmpi`: openmpi/4.1.5 still satisfies it, so only app/1 is named above.
  strataJson(['store', 'rm', 'app/1'], { store });
  strataJson(['store', 'rm', 'openmpi/5.0.3'], { store });
  assertOneLineError(strata(['store', 'rm', 'openmpi/4.1.5'], { store }), 'the last openmpi', /tool\/1 requires it/);
  // A saved collection pins a record.
  const work = join(dir, 'work');
  mkdirSync(work);
  const inWork = (args: string[]) => strata(args, { store, cwd: work });
  assert.is(inWork(['compose', 'add', 'alias/1']).code, 0);
  assert.is(inWork(['compose', 'save', 'mine']).code, 0);
  assertOneLineError(inWork(['store', 'rm', 'alias/1']), 'rm of a pinned module', /collection mine pins it/);
  assert.equal(strataJson(['store', 'rm', 'alias/1', '--force'], { store }), { removed: 'alias/1' });
  assert.not.ok(names(strataJson(['store', 'ls'], { store })).includes('alias/1'));
});

test('--requires naming nothing on the store path is refused unless --allow-missing; the store is unchanged', ({ store, trees }) => {
  const before = blobListing(store);
  const line = assertOneLineError(strata(['store', 'import', 'x/1', trees.a!, '--requires', 'nosuchmod'], { store }), 'a typo in --requires');
  assert.is(line, 'strata: x/1 requires nosuchmod, which is not on the store path (import it first, check the spelling, or pass --allow-missing)');
  assert.equal(blobListing(store), before, 'nothing written');
  assertOneLineError(strata(['store', 'import', 'x/1', trees.a!, '--load-any', 'nope/1,nada'], { store }), 'a load-any group of typos', /requires nope\/1 or nada/);
  assert.is(strataJson(['store', 'import', 'x/1', trees.a!, '--requires', 'openmpi/4'], { store }).status, 'imported', 'a partial version that exists');
  assert.is(strataJson(['store', 'import', 'y/1', trees.a!, '--requires', 'later/1', '--allow-missing'], { store }).status, 'imported');
});

test('gc after removing every module leaves the store within a few hundred KB; du shows each part', ({ dir, store, trees }) => {
  const big = join(dir, 'big');
  mkdirSync(join(big, 'data'), { recursive: true });
  writeFileSync(join(big, 'data', 'blob'), Buffer.alloc(8 << 20, 7).map((_, i) => (i * 2654435761) >>> 24));
  strataJson(['store', 'import', 'big/1', big], { store });
  const work = join(dir, 'work');
  mkdirSync(work);
  assert.is(strata(['compose', 'add', 'big/1', 'openmpi/5.0.3'], { store, cwd: work }).code, 0);
  assert.is(strata(['compose', 'squash', join(dir, 'x.sqfs')], { store, cwd: work }).code, 0);
  const before = strataJson(['store', 'du'], { store });
  assert.ok(before.blockCache > 0, `the image filled the block cache (${before.blockCache})`);
  assert.ok(before.entryCache > 0 && before.blobs > 8 << 20);
  assert.match(strata(['store', 'du'], { store }).stdout.toString(), /image-block cache/);
  const segs = () => mustRun('find', [join(store, 'cache'), '-name', '*.seg']).stdout.toString().trim();
  assert.ok(segs() !== '', 'the image recorded its layers\' segments, which du counts');
  for (const m of strataJson(['store', 'ls'], { store })) strataJson(['store', 'rm', m.fullName, '--force'], { store });
  const gc = strataJson(['store', 'gc', '--grace', '0'], { store });
  assert.is(gc.cacheFreed, before.blockCache, 'the block cache of removed layers went');
  const after = strataJson(['store', 'du'], { store });
  assert.is(after.blockCache, 0);
  assert.is(segs(), '', 'the segments went with their layers');
  assert.is(after.entryCache, 0);
  assert.is(after.blobs, 0);
  assert.ok(after.total < 512 << 10, `what is left is the index (${after.total} bytes)`);
});

test('gc --cache-max prunes least recently used image-block packs', ({ dir, store }) => {
  const work = join(dir, 'work');
  mkdirSync(work);
  assert.is(strata(['compose', 'add', 'openmpi/5.0.3'], { store, cwd: work }).code, 0);
  assert.is(strata(['compose', 'squash', join(dir, 'x.sqfs')], { store, cwd: work }).code, 0);
  assert.ok(strataJson(['store', 'du'], { store }).blockCache > 0);
  strataJson(['store', 'gc', '--cache-max', '0'], { store });
  assert.is(strataJson(['store', 'du'], { store }).blockCache, 0);
  assert.is(strata(['store', 'gc', '--cache-max', 'lots'], { store }).code, 2, 'a malformed size is usage');
});

test.run();

/**
 * Acceptance 4: flipping one byte of a stored blob is found and named.
 * - `store verify` exits non-zero and its output names the damaged module (and not the sound
 *   one); `store verify <sound module>` stays clean.
 * - A damaged layer: `store export` fails with one clear line naming the module and leaves no
 *   OUT file and no temp file beside it, whether the flipped byte sits in file content (found
 *   at end of stream) or in a tar header (found by the tar reader first). `show` reads only the
 *   record and manifest, so it still works.
 * - A damaged manifest or record: `show` and `export` fail with one clear line.
 * - Importing the same content again (what verify's hint says) repairs the damaged blobs.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSmallTree } from './fixtures/small-tree.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobPath, seeded } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  out: string;
  bad: { record: string; layer: string; manifest: string };
  good: { record: string; layer: string; manifest: string };
}

function flip(file: string, offset: number): void {
  const b = readFileSync(file);
  b[offset] = b[offset]! ^ 0x01;
  writeFileSync(file, b);
}

const test = suite<Ctx>('store verify: damaged blobs are named');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-verify-');
  ctx.store = join(ctx.dir, 'store');
  ctx.out = join(ctx.dir, 'out');
  mkdirSync(ctx.out);
  const t1 = join(ctx.dir, 't1');
  makeSmallTree(t1);
  const t2 = join(ctx.dir, 't2');
  mkdirSync(t2);
  writeFileSync(join(t2, 'other'), 'a different layer\n');
  ctx.bad = strataJson(['store', 'import', 'bad/1', t1], { store: ctx.store });
  ctx.good = strataJson(['store', 'import', 'good/1', t2], { store: ctx.store });
  const v = strataJson(['store', 'verify'], { store: ctx.store });
  assert.equal(v, { modules: 2, problems: [] });
});
test.after.each((ctx) => removeDir(ctx.dir));

function assertVerifyNames(store: string, module: string, what: string, sound: string): void {
  const r = strata(['store', 'verify'], { store });
  assert.is(r.code, 1, `verify exit: ${r.stdout}${r.stderr}`);
  const text = r.stdout.toString() + r.stderr;
  assert.ok(text.includes(module), `verify names ${module}: ${text}`);
  assert.ok(text.includes(what), `verify says which blob (${what}): ${text}`);
  assert.not.ok(text.includes(sound), `verify does not blame ${sound}: ${text}`);
  const j = strata(['--json', 'store', 'verify'], { store });
  assert.is(j.code, 1);
  const doc = JSON.parse(j.stdout.toString());
  assert.ok(doc.problems.length >= 1 && doc.problems.every((p: { module: string }) => p.module === module), JSON.stringify(doc));
  assert.is(strata(['store', 'verify', sound], { store }).code, 0, `verify ${sound} is clean`);
}

function assertExportFails(store: string, out: string, module: string): void {
  const r = strata(['store', 'export', module, join(out, 'x.tar')], { store });
  assertOneLineError(r, `export of ${module}`, new RegExp(module.replace('/', '\\/')));
  assert.equal(readdirSync(out), [], 'no OUT file and no temp file left');
}

test('a flipped byte of file content in the layer', ({ store, out, bad, good }) => {
  const tar = readFileSync(blobPath(store, bad.layer));
  const at = tar.indexOf('hello, strata world');
  assert.ok(at > 0);
  flip(blobPath(store, bad.layer), at + 3);
  assertVerifyNames(store, 'bad/1', 'layer', 'good/1');
  assertExportFails(store, out, 'bad/1');
  assert.is(strata(['store', 'show', 'bad/1'], { store }).code, 0, 'show reads only the record and manifest');
  // The sound module still exports.
  assert.is(strata(['store', 'export', 'good/1', join(out, 'good.tar')], { store }).code, 0);
});

test('a flipped byte in a tar header of the layer (seeded positions)', ({ store, out, bad, good }) => {
  const rnd = seeded(4);
  const file = blobPath(store, bad.layer);
  const size = readFileSync(file).length;
  // A header byte: the first header's name field, then a random byte anywhere.
  flip(file, 2);
  assertVerifyNames(store, 'bad/1', 'layer', 'good/1');
  assertExportFails(store, out, 'bad/1');
  flip(file, 2);
  const at = Math.floor(rnd() * size);
  flip(file, at);
  assertVerifyNames(store, 'bad/1', 'layer', 'good/1');
  assertExportFails(store, out, 'bad/1');
});

test('a flipped byte of the manifest: verify names it, show and export fail clearly', ({ store, out, bad, good }) => {
  flip(blobPath(store, bad.manifest), 10);
  assertVerifyNames(store, 'bad/1', 'manifest', 'good/1');
  assertOneLineError(strata(['store', 'show', 'bad/1'], { store }), 'show', /manifest of bad\/1.*corrupt/);
  assertExportFails(store, out, 'bad/1');
});

test('a flipped byte of the record: verify names it, show and export fail clearly', ({ store, out, bad, good }) => {
  flip(blobPath(store, bad.record), 5);
  assertVerifyNames(store, 'bad/1', 'record', 'good/1');
  assertOneLineError(strata(['store', 'show', 'bad/1'], { store }), 'show', /record of bad\/1.*corrupt/);
  assertExportFails(store, out, 'bad/1');
});

test('a missing layer blob: verify says missing, export fails clearly', ({ store, out, bad, good }) => {
  writeFileSync(blobPath(store, bad.layer), '');
  assertVerifyNames(store, 'bad/1', 'layer', 'good/1');
  removeDir(blobPath(store, bad.layer));
  assertVerifyNames(store, 'bad/1', 'missing', 'good/1');
  assertExportFails(store, out, 'bad/1');
});

test('re-importing the same content (the remedy verify names) repairs a damaged blob', ({ store, bad }) => {
  const file = blobPath(store, bad.layer);
  const tar = readFileSync(file);
  flip(file, tar.indexOf('hello, strata world') + 1);
  flip(blobPath(store, bad.manifest), 10);
  assert.is(strata(['store', 'verify'], { store }).code, 1);
  const again = strataJson(['store', 'import', 'bad/1', join(store, '..', 't1'), '--force'], { store });
  assert.is(again.status, 'repaired', 'the re-import says what it did');
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 2, problems: [] });
  assert.is(strataJson(['store', 'import', 'bad/1', join(store, '..', 't1')], { store }).status, 'unchanged', 'nothing left to repair');
  // A missing blob is put back the same way, and said so in text too.
  removeDir(blobPath(store, bad.manifest));
  assert.match(strata(['store', 'import', 'bad/1', join(store, '..', 't1')], { store }).stdout.toString(), /damaged blobs repaired: bad\/1/);
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 2, problems: [] });
});

test.run();

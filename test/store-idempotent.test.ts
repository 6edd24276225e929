/**
 * Acceptance 3: import is idempotent. The same name and content (even packed by another tool)
 * is a no-op: status "unchanged", exit 0, the index (every LevelDB key and value, read with
 * `level` directly) and the blob directory untouched. The same name with other content is an
 * error (exit 1, one line, says --force) that changes nothing; with --force it is replaced.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { makeSmallTree, packBsd, packGnu } from './fixtures/small-tree.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobListing } from './store-harness.js';

interface Ctx {
  dir: string;
  tree: string;
  store: string;
}

/** Every key and value of the store's LevelDB index. */
async function dumpIndex(store: string): Promise<Array<[string, string]>> {
  const db = new Level<string, string>(join(store, 'index'), { valueEncoding: 'utf8' });
  await db.open();
  try {
    const out: Array<[string, string]> = [];
    for await (const kv of db.iterator()) out.push(kv);
    return out;
  } finally {
    await db.close();
  }
}

const test = suite<Ctx>('store import: idempotent');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-idem-');
  ctx.tree = join(ctx.dir, 'tree');
  ctx.store = join(ctx.dir, 'store');
  makeSmallTree(ctx.tree);
});
test.after.each((ctx) => removeDir(ctx.dir));

test('same name, same content: unchanged, exit 0, index and blobs untouched', async ({ dir, tree, store }) => {
  const opts = ['--prepend', 'PATH=/opt/x/bin', '--description', 'x tools'];
  const first = strataJson(['store', 'import', 'x/1.0', tree, ...opts], { store });
  assert.is(first.status, 'imported');
  const index = await dumpIndex(store);
  assert.equal(index, [['m/x/1.0', first.record]]);
  const blobs = blobListing(store);
  assert.is(blobs.length, 3, 'layer, manifest, record');

  for (const src of [tree, packGnu(tree, join(dir, 'g.tar')), packBsd(tree, join(dir, 'b.tar'))]) {
    const again = strataJson(['store', 'import', 'x/1.0', src, ...opts], { store });
    assert.is(again.status, 'unchanged', src);
    assert.is(again.record, first.record);
    assert.equal(await dumpIndex(store), index, 'index unchanged');
    assert.equal(blobListing(store), blobs, 'blobs unchanged');
  }
  // Text mode says so too, and exits 0.
  const text = strata(['store', 'import', 'x/1.0', tree, ...opts], { store });
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout.toString(), /unchanged/);
});

test('same name, other content: exit 1, one line naming --force, nothing changed; --force replaces', async ({ dir, tree, store }) => {
  const first = strataJson(['store', 'import', 'x/1.0', tree], { store });
  const index = await dumpIndex(store);
  const ls = strataJson(['store', 'ls'], { store });

  writeFileSync(join(tree, 'data', 'text.txt'), 'other content\n');
  const refused = strata(['store', 'import', 'x/1.0', tree], { store });
  assertOneLineError(refused, 'conflicting import', /x\/1\.0.*--force/);
  assert.equal(await dumpIndex(store), index, 'index unchanged after the refusal');
  assert.equal(strataJson(['store', 'ls'], { store }), ls);

  // Other record fields count as other content too (same layer, different env).
  const other = strata(['store', 'import', 'x/1.0', packGnu(tree, join(dir, 'g.tar')), '--setenv', 'X=1'], { store });
  assertOneLineError(other, 'conflicting record');

  const forced = strataJson(['store', 'import', 'x/1.0', tree, '--force'], { store });
  assert.is(forced.status, 'replaced');
  assert.is.not(forced.layer, first.layer);
  assert.equal(await dumpIndex(store), [['m/x/1.0', forced.record]]);
  const shown = strataJson(['store', 'show', 'x/1.0'], { store });
  assert.is(shown.cid, forced.record);
  assert.is(shown.record.layer, forced.layer);
  // --force with the same content again is still a no-op.
  assert.is(strataJson(['store', 'import', 'x/1.0', tree, '--force'], { store }).status, 'unchanged');
});

test('--default on a re-import marks the default without changing the record', async ({ tree, store }) => {
  const first = strataJson(['store', 'import', 'x/1.0', tree], { store });
  const again = strataJson(['store', 'import', 'x/1.0', tree, '--default'], { store });
  assert.is(again.record, first.record);
  assert.equal(await dumpIndex(store), [['d/x', 'x/1.0'], ['m/x/1.0', first.record]]);
});

test.run();

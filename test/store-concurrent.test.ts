/**
 * Acceptance 6: two strata processes importing different modules into one store at the same
 * time both succeed. A third process that finds the index locked (the test holds LevelDB's
 * lock itself by opening the index with `level`, until the process says it waits) prints the
 * waiting note on stderr and then succeeds; with STRATA_LOCK_TIMEOUT while the lock is held
 * throughout, it gives up with one line.
 * `store gc` run over and over during an import removes only garbage, never the import's blobs
 * (they are pinned until its index entry is written).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { LocalStore } from '../store/local-store.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strataAsync, strataJson } from './helpers/cli.js';

interface Ctx {
  dir: string;
  store: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function makeTree(dir: string, tag: string, mib: number): string {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'tag'), `${tag}\n`);
  writeFileSync(join(dir, 'sub', 'data.bin'), randomBytes(mib << 20));
  for (let i = 0; i < 50; i++) writeFileSync(join(dir, 'sub', `f${i}`), `${tag} ${i}\n`);
  return dir;
}

/** Opens the store's index (and so takes LevelDB's LOCK) until the returned release is called. */
async function lockIndex(store: string): Promise<() => Promise<void>> {
  const db = new Level<string, string>(join(store, 'index'), { valueEncoding: 'utf8' });
  await db.open();
  return () => db.close();
}

/** Waits until `cond` holds, checking every 50 ms; fails the test after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await sleep(50)) {
    if (Date.now() > end) assert.unreachable(`${what} within ${ms} ms`);
  }
}

const test = suite<Ctx>('store: concurrent processes');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-conc-');
  ctx.store = join(ctx.dir, 'store');
  strataJson(['store', 'gc'], { store: ctx.store }); // creates the store (read verbs never do)
});
test.after.each((ctx) => removeDir(ctx.dir));

test('creating a store opens no index: readers see it empty, and its first write publishes', async ({ dir }) => {
  const fresh = join(dir, 'fresh');
  const s = await LocalStore.open(fresh);
  try {
    assert.not.ok(existsSync(join(fresh, 'index', 'CURRENT')), 'no LevelDB was created');
    assert.not.ok(existsSync(join(fresh, 'catalog.json')), 'no catalog was published');
    assert.equal(await s.list(), []);
  } finally {
    await s.close();
  }
  assert.equal(strataJson(['store', 'ls'], { store: fresh }), []);
  const r = strataJson(['store', 'import', 'one/1', makeTree(join(dir, 'a'), 'a', 2)], { store: fresh });
  assert.is(r.status, 'imported');
  assert.ok(existsSync(join(fresh, 'catalog.json')), 'the first write published a catalog');
  assert.equal(strataJson(['store', 'ls'], { store: fresh }).map((m: { fullName: string }) => m.fullName), ['one/1']);
  // gc keeps the entry list of a live layer, and drops a dead one's and one of an old form.
  const entries = join(fresh, 'cache', 'entries');
  const live = readdirSync(entries);
  assert.equal(live.length, 1);
  writeFileSync(join(entries, `${'d'.repeat(64)}.rows`), '[\n]\n');
  writeFileSync(join(entries, `${live[0]!.slice(0, 64)}.json`), '[]');
  strataJson(['store', 'gc', '--grace', '0'], { store: fresh });
  assert.equal(readdirSync(entries), live);
});

test('two imports of different modules at the same time both succeed', async ({ dir, store }) => {
  const a = makeTree(join(dir, 'a'), 'a', 8);
  const b = makeTree(join(dir, 'b'), 'b', 8);
  const pa = strataAsync(['--json', 'store', 'import', 'one/1', a], { store });
  const pb = strataAsync(['--json', 'store', 'import', 'two/1', b], { store });
  const [ra, rb] = await Promise.all([pa.done, pb.done]);
  assert.is(ra.code, 0, ra.stderr);
  assert.is(rb.code, 0, rb.stderr);
  assert.is(JSON.parse(ra.stdout.toString()).status, 'imported');
  assert.is(JSON.parse(rb.stdout.toString()).status, 'imported');
  assert.equal(strataJson(['store', 'ls'], { store }).map((m: { fullName: string }) => m.fullName), ['one/1', 'two/1']);
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 2, problems: [] });
});

test('four processes at once (imports, ls, verify) all succeed', async ({ dir, store }) => {
  strataJson(['store', 'import', 'zero/1', makeTree(join(dir, 'z'), 'z', 1)], { store });
  const runs = [
    strataAsync(['--json', 'store', 'import', 'one/1', makeTree(join(dir, 'a'), 'a', 2)], { store }),
    strataAsync(['--json', 'store', 'import', 'two/1', makeTree(join(dir, 'b'), 'b', 2)], { store }),
    strataAsync(['--json', 'store', 'ls'], { store }),
    strataAsync(['--json', 'store', 'verify'], { store }),
  ];
  for (const r of await Promise.all(runs.map((p) => p.done))) {
    assert.is(r.code, 0, r.stderr);
    JSON.parse(r.stdout.toString());
  }
  assert.is(strataJson(['store', 'ls'], { store }).length, 3);
});

test('gc running over and over during an import never takes the blobs of the import', async ({ dir, store }) => {
  // Garbage first, so each gc has something to remove: a module imported, then removed.
  strataJson(['store', 'import', 'gone/1', makeTree(join(dir, 'g'), 'g', 1)], { store });
  strataJson(['store', 'rm', 'gone/1'], { store });
  const p = strataAsync(['--json', 'store', 'import', 'kept/1', makeTree(join(dir, 'a'), 'a', 16)], { store });
  let finished = false;
  void p.done.then(() => (finished = true));
  let gcs = 0;
  let removed = 0;
  // gc in this process (no Node start-up per run), so many runs interleave with the import.
  const s2 = await LocalStore.open(store);
  while (!finished) {
    removed += (await s2.gc({ graceSeconds: 0 })).removed.length; // no grace: only pins protect the import
    gcs++;
    await sleep(30);
  }
  await s2.close();
  const r = await p.done;
  assert.is(r.code, 0, r.stderr);
  assert.ok(gcs >= 3, `gc ran ${gcs} times during the import`);
  assert.is(removed, 3, 'the garbage went (record, layer, manifest of gone/1), nothing else');
  assert.equal(strataJson(['store', 'ls'], { store }).map((m: { fullName: string }) => m.fullName), ['kept/1']);
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 1, problems: [] });
});

test('a process that finds the index locked says it is waiting, then succeeds', async ({ dir, store }) => {
  const a = makeTree(join(dir, 'a'), 'a', 1);
  // The lock is let go only once the import says it waits: no race with a slow start-up.
  const release = await lockIndex(store);
  const p = strataAsync(['store', 'import', 'waits/1', a], { store });
  await until(() => /waiting for another strata process/.test(p.stderrSoFar()), 60_000, 'the import says it waits');
  await release();
  const r = await p.done;
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /^strata: waiting for another strata process to release the store/m);
  assert.match(r.stdout.toString(), /imported waits\/1/);
  assert.is(strataJson(['store', 'ls'], { store })[0].fullName, 'waits/1');
});

test('a lock held past STRATA_LOCK_TIMEOUT: one line, exit 1, nothing listed', async ({ dir, store }) => {
  const a = makeTree(join(dir, 'a'), 'a', 1);
  const release = await lockIndex(store);
  const r = await strataAsync(['-q', 'store', 'import', 'late/1', a], { store, env: { STRATA_LOCK_TIMEOUT: '1' } }).done;
  await release();
  assertOneLineError(r, 'lock timeout', /in use by another strata process/);
  assert.equal(strataJson(['store', 'ls'], { store }), []);
});

test.run();

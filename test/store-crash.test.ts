/**
 * Acceptance 5: a `strata store import` killed with SIGKILL at random moments (20 seeded rounds),
 * never leaves a listed module without its blobs, and `store verify` is clean after each kill.
 *
 * One ~21 MB tar (a 20 MB file plus 300 small ones) is imported over and over as `crash/m`
 * with --force; before each round three digits inside the archive change, so each round makes
 * a new layer, manifest and record (a kill can land while the archive is read, while the
 * layer blob, the manifest or the record is written, or around the index batch). The delays
 * are seeded and spread over the measured duration of one warm import, past Node's start-up.
 * After each round: `store verify` exits 0, every module `store ls --json` lists has its
 * record (digest checked here), layer and manifest blob on disk (verify hashed them), and
 * opening the store removed the dead process's temp files. Rounds 10 and 20 run `store gc`,
 * which must not take a listed module's blob.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strataAsync, strataJson } from './helpers/cli.js';
import { blobPath, readJsonBlob, seeded } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  tar: string;
  /** Byte offset of the three round digits inside the tar. */
  digits: number;
}

const ROUNDS = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const test = suite<Ctx>('store import: SIGKILL at random moments');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-crash-');
  ctx.store = join(ctx.dir, 'store');
  const src = join(ctx.dir, 'src');
  mkdirSync(join(src, 'many'), { recursive: true });
  writeFileSync(join(src, 'round.txt'), 'round 000\n');
  writeFileSync(join(src, 'bulk.bin'), randomBytes(20 << 20));
  for (let i = 0; i < 300; i++) writeFileSync(join(src, 'many', `f${i}`), `small file ${i}\n`.repeat(i % 17));
  ctx.tar = join(ctx.dir, 'big.tar');
  mustRun('tar', ['--sort=name', '--format=pax', '-C', src, '-cf', ctx.tar, '.']);
  removeDir(src);
  ctx.digits = readFileSync(ctx.tar).indexOf('round 000') + 6;
  assert.ok(ctx.digits > 6);
});
test.after.each((ctx) => removeDir(ctx.dir));

function setRound(ctx: Ctx, n: number): void {
  const fd = openSync(ctx.tar, 'r+');
  writeSync(fd, String(n).padStart(3, '0'), ctx.digits, 'latin1');
  closeSync(fd);
}

/** Every listed module's record, layer and manifest are on disk and match their digests. */
function assertListedComplete(store: string, round: number): string[] {
  const ls: Array<{ fullName: string; record: string }> = strataJson(['store', 'ls'], { store });
  for (const m of ls) {
    const rec = readJsonBlob(store, m.record);
    for (const cid of [rec.layer, rec.manifest]) {
      const file = blobPath(store, cid);
      assert.ok(existsSync(file), `round ${round}: ${m.fullName} lists ${cid} but its blob is missing`);
    }
  }
  return ls.map((m) => `${m.fullName}=${m.record}`);
}

test('20 seeded SIGKILLs during import: verify clean, listed modules complete, tmp/ cleaned', async (ctx) => {
  const { store } = ctx;
  // Calibrate: a clean import, then a timed one (warm, as the rounds are), spawn to exit.
  const base = await strataAsync(['--json', 'store', 'import', 'crash/base', ctx.tar], { store }).done;
  assert.is(base.code, 0, base.stderr);
  setRound(ctx, 998);
  const t0 = Date.now();
  const warm = await strataAsync(['--json', 'store', 'import', 'crash/m', ctx.tar], { store }).done;
  const duration = Date.now() - t0;
  assert.is(warm.code, 0, warm.stderr);
  // Node's start-up is most of a short import: aim the kills past most of it.
  const t1 = Date.now();
  assert.is((await strataAsync(['store', 'ls'], { store }).done).code, 0);
  const startup = Math.min(Date.now() - t1, duration / 2) * 0.8;

  const rnd = seeded(20261121);
  const phases: Record<string, number> = {};
  let killed = 0;
  let before = assertListedComplete(store, -1);
  for (let round = 1; round <= ROUNDS; round++) {
    setRound(ctx, round);
    const p = strataAsync(['--json', 'store', 'import', 'crash/m', ctx.tar, '--force'], { store });
    await sleep(Math.floor(startup + rnd() * (duration - startup)));
    p.kill('SIGKILL');
    const r = await p.done;
    if (r.signal === 'SIGKILL') killed++;
    else assert.is(r.code, 0, `round ${round} finished on its own but failed: ${r.stderr}`);

    // Where did the kill land? (from what the dead process left behind)
    const left = readdirSync(join(store, 'tmp'));
    const phase =
      r.signal !== 'SIGKILL' ? 'finished'
      : left.some((n) => n.includes('-blob-')) ? 'mid-blob'
      : left.some((n) => n.startsWith('pins-')) ? 'after-a-blob'
      : 'before-writing';
    const v = strataJson(['store', 'verify'], { store });
    assert.equal(v.problems, [], `round ${round} (${phase}): verify problems ${JSON.stringify(v.problems)}`);
    assert.equal(readdirSync(join(store, 'tmp')), [], `round ${round}: the dead process's temp files are removed on open`);
    const after = assertListedComplete(store, round);
    const committed = JSON.stringify(after) !== JSON.stringify(before);
    const label = `${phase}${committed ? '+indexed' : ''}`;
    phases[label] = (phases[label] ?? 0) + 1;
    before = after;
    if (round % 10 === 0) {
      strataJson(['store', 'gc'], { store });
      assertListedComplete(store, round);
      assert.equal(strataJson(['store', 'verify'], { store }).problems, []);
    }
  }
  console.log(`  import ${duration} ms, start-up ${Math.round(startup)} ms; ${killed}/${ROUNDS} killed; kills landed: ${JSON.stringify(phases)}`);
  assert.ok(killed >= ROUNDS / 4, `enough rounds were killed (${killed})`);
  assert.ok((phases['mid-blob'] ?? 0) >= 2, `some kills landed mid-write: ${JSON.stringify(phases)}`);
  // The store still works: a last clean import, then everything verifies.
  setRound(ctx, 999);
  const last = strataJson(['store', 'import', 'crash/m', ctx.tar, '--force'], { store });
  assert.ok(['imported', 'replaced'].includes(last.status));
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 2, problems: [] });
  console.log(`  ${((Date.now() - t0) / 1000).toFixed(1)} s in all`);
});

test.run();

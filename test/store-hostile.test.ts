/**
 * Acceptance 7: hostile and broken archives are refused by `strata store import` with exit 1
 * and one line on stderr ("strata: …", no stack trace), and the store is unchanged: the same
 * blobs (names and sizes), the same `store ls --json`, nothing left in tmp/, and no file
 * written anywhere else (the CLI runs in an empty working directory that must stay empty;
 * the paths the archives aim at must not appear).
 *
 * Archives (test/fixtures/hostile.ts): absolute paths, `..` components, a symlink then a file
 * written through it (absolute and `..` targets), a hard link to a path outside the layer and
 * to one not yet in it, duplicate paths, a truncated archive, a bad header checksum, random
 * bytes, an empty file, a corrupt gzip stream, GNU sparse (old GNU and PAX 1.0 forms).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HOSTILE_ARCHIVES, hostileSymlinkEscape } from './fixtures/hostile.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobListing, fileListing } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
  archives: string;
  work: string;
}

/** What each refusal's message must mention (the offending path or the kind of damage). */
const EXPECT: Record<string, RegExp> = {
  absolute: /strata-hostile-abs|absolute/,
  dotdot: /\.\./,
  symlinkEscape: /evil/,
  symlinkDotDot: /up/,
  hardlinkAbsolute: /passwd/,
  hardlinkForward: /early|later/,
  duplicate: /dup/,
  truncated: /truncated|ends|short|cut/i,
  badChecksum: /checksum/,
  random: /tar|archive/i,
  empty: /empty|tar|archive/i,
  corruptGzip: /gzip|compress|damaged|corrupt/i,
  sparseGnu: /sparse/i,
  sparsePax: /sparse/i,
};

const test = suite<Ctx>('store import: hostile archives refused, store unchanged');
test.before.each((ctx) => {
  // The test's directory sits alone in a private parent, so "nothing new beside it" is not
  // disturbed by whatever else runs on the machine and uses /tmp.
  ctx.dir = join(tempDir('strata-hostile-'), 'test');
  mkdirSync(ctx.dir);
  ctx.store = join(ctx.dir, 'store');
  ctx.archives = join(ctx.dir, 'archives');
  ctx.work = join(ctx.dir, 'work');
  mkdirSync(ctx.work);
  // A store that already holds a module, so "unchanged" has something to keep.
  const t = join(ctx.dir, 'tree');
  mkdirSync(t);
  writeFileSync(join(t, 'keep'), 'an innocent module\n');
  strataJson(['store', 'import', 'keep/1', t], { store: ctx.store });
});
test.after.each((ctx) => removeDir(dirname(ctx.dir)));

test('the fixture table is what this test expects', () => {
  assert.equal(Object.keys(HOSTILE_ARCHIVES).sort(), Object.keys(EXPECT).sort());
});

test('every hostile archive: exit 1, one line, store and filesystem unchanged', ({ dir, store, archives, work }) => {
  const escapeTarget = join(dir, 'escape-target');
  const files: Record<string, string> = {};
  for (const [name, make] of Object.entries(HOSTILE_ARCHIVES)) files[name] = make(archives);
  files.symlinkEscapeHere = hostileSymlinkEscape(join(archives, 'here'), escapeTarget);
  const ls = strataJson(['store', 'ls'], { store });
  assert.is(ls.length, 1);
  const blobs = blobListing(store);
  const outside = fileListing(dir).filter((p) => !p.startsWith('store/'));
  const root = readdirSync('/').sort();

  for (const [name, file] of Object.entries(files)) {
    const r = strata(['store', 'import', `hostile/${name}`, file], { store, cwd: work });
    assertOneLineError(r, name, EXPECT[name] ?? EXPECT.symlinkEscape);
    assert.equal(blobListing(store), blobs, `${name}: no blob added or changed`);
    assert.equal(readdirSync(join(store, 'tmp')), [], `${name}: nothing left in tmp/`);
    assert.equal(readdirSync(work), [], `${name}: nothing written in the working directory`);
    assert.equal(fileListing(dir).filter((p) => !p.startsWith('store/')), outside, `${name}: nothing written beside the store`);
  }
  assert.not.ok(existsSync('/strata-hostile-abs'), 'absolute member not written');
  assert.not.ok(existsSync('/tmp/strata-hostile-X'), 'symlink target not written');
  assert.not.ok(existsSync(escapeTarget), 'symlink target not written');
  assert.equal(readdirSync('/').sort(), root, 'nothing new in /');
  assert.equal(readdirSync(dirname(dir)), ['test'], 'nothing new beside the test directory');
  assert.equal(strataJson(['store', 'ls'], { store }), ls, 'store ls unchanged');
  assert.equal(strataJson(['store', 'verify'], { store }), { modules: 1, problems: [] });
});

test('a hostile archive under --json fails with one JSON error document on stdout and nothing on stderr', ({ store, archives }) => {
  const file = HOSTILE_ARCHIVES.dotdot!(archives);
  const r = strata(['--json', 'store', 'import', 'hostile/dotdot', file], { store });
  assert.is(r.code, 1, r.stderr);
  assert.is(r.stderr, '');
  const doc = JSON.parse(r.stdout.toString('utf8')) as { error: { code: string; message: string; hint?: string } };
  assert.equal(Object.keys(doc), ['error']);
  assert.is(doc.error.code, 'ERR_LAYER_UNSAFE_PATH');
  assert.match(doc.error.message, /\.\./);
  assert.not.match(doc.error.message, /\n/);
});

test.run();

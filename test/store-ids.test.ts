/**
 * Acceptance 8: uid 3000000 and gid 3000001 (above ustar's 2^21 octal limit, so they travel in
 * PAX `uid`/`gid` records) survive import and export, whichever tool packed them. Checked with
 * GNU tar's own listing (`tar -tvv --numeric-owner`) of the stored layer and of the export, and
 * with lstat after GNU tar extracts the export.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync, mkdirSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { packBsd, packGnu } from './fixtures/small-tree.js';
import { writeTar } from './fixtures/hostile.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strataJson } from './helpers/cli.js';
import { blobPath } from './store-harness.js';

interface Ctx {
  dir: string;
  tree: string;
  store: string;
}

const UID = 3_000_000;
const GID = 3_000_001;

const test = suite<Ctx>('store: large uid/gid');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-ids-');
  ctx.tree = join(ctx.dir, 'tree');
  ctx.store = join(ctx.dir, 'store');
  mkdirSync(join(ctx.tree, 'sub'), { recursive: true });
  writeFileSync(join(ctx.tree, 'sub', 'owned'), 'big ids\n');
  chownSync(join(ctx.tree, 'sub', 'owned'), UID, GID);
  chownSync(join(ctx.tree, 'sub'), UID + 7, GID + 7);
});
test.after.each((ctx) => removeDir(ctx.dir));

/** The owner column of `tar -tvv --numeric-owner` for `name`. */
function ownerOf(tarFile: string, name: string): string {
  const listing = mustRun('tar', ['-tvv', '--numeric-owner', '-f', tarFile]).stdout.toString('utf8');
  const line = listing.split('\n').find((l) => l.endsWith(` ${name}`) || l.endsWith(` ${name}/`));
  assert.ok(line, `${name} in the listing:\n${listing}`);
  return line!.split(/\s+/)[1]!;
}

function roundTrip(store: string, dir: string, module: string, source: string): void {
  const r = strataJson(['store', 'import', module, source], { store });
  assert.is(ownerOf(blobPath(store, r.layer), 'sub/owned'), `${UID}/${GID}`, 'stored layer');
  assert.is(ownerOf(blobPath(store, r.layer), 'sub'), `${UID + 7}/${GID + 7}`, 'stored layer dir');
  const out = join(dir, `${module.replace('/', '-')}.tar`);
  strataJson(['store', 'export', module, out], { store });
  assert.is(ownerOf(out, 'sub/owned'), `${UID}/${GID}`, 'export');
  const dest = join(dir, `x-${module.replace('/', '-')}`);
  mkdirSync(dest);
  mustRun('tar', ['--numeric-owner', '-p', '-C', dest, '-xf', out]);
  const st = lstatSync(join(dest, 'sub', 'owned'));
  assert.equal([st.uid, st.gid], [UID, GID], 'extracted owner');
  const sd = lstatSync(join(dest, 'sub'));
  assert.equal([sd.uid, sd.gid], [UID + 7, GID + 7], 'extracted dir owner');
}

test('directory import keeps 3000000:3000001 through export', ({ dir, tree, store }) => {
  roundTrip(store, dir, 'ids/dir', tree);
});

test('GNU tar pax and bsdtar archives keep 3000000:3000001 through export', ({ dir, tree, store }) => {
  roundTrip(store, dir, 'ids/gnu', packGnu(tree, join(dir, 'gnu.tar')));
  roundTrip(store, dir, 'ids/bsd', packBsd(tree, join(dir, 'bsd.tar')));
});

test('a GNU-format archive (base-256 ids, no PAX) keeps them too', ({ dir, store }) => {
  const src = writeTar(join(dir, 'gnu-b256.tar'), [
    { name: 'sub', type: 'dir', uid: UID + 7, gid: GID + 7 },
    { name: 'sub/owned', data: 'big ids\n', uid: UID, gid: GID },
  ], 'gnu');
  roundTrip(store, dir, 'ids/b256', src);
});

test.run();

/**
 * Acceptance 2: `strata store export M out.tar`, extracted by GNU tar with
 * `--xattrs --xattrs-include='*' --acls --numeric-owner -p`, gives back every ACL (getfacl -n)
 * and every xattr (getfattr -d -m - -e hex, binary security.capability included) byte for
 * byte, plus modes, owners, mtimes, contents, symlinks and hard links. The comparison is
 * test/helpers/tree.ts (lstat + getfattr + getfacl), which does not use strata's code.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeSmallTree, packBsd, SMALL_TREE, SMALL_TREE_ACL, SMALL_TREE_XATTRS } from './fixtures/small-tree.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strataJson } from './helpers/cli.js';

interface Ctx {
  dir: string;
  tree: string;
  store: string;
}

const GNU_EXTRACT = ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-p'];

const test = suite<Ctx>('store export: GNU tar restores everything');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-export-');
  ctx.tree = join(ctx.dir, 'tree');
  ctx.store = join(ctx.dir, 'store');
  makeSmallTree(ctx.tree);
});
test.after.each((ctx) => removeDir(ctx.dir));

function exportAndExtract(store: string, dir: string, module: string, name: string): string {
  const out = join(dir, `${name}.tar`);
  const r = strataJson(['store', 'export', module, out], { store });
  assert.is(r.out, out);
  assert.ok(r.entries > 20, `exported ${r.entries} entries`);
  const dest = join(dir, name);
  mkdirSync(dest);
  mustRun('tar', [...GNU_EXTRACT, '-C', dest, '-xf', out]);
  return dest;
}

function assertSnapshotHasTheHardParts(dest: string): void {
  // Guard against a vacuous pass: the restored tree really holds the binary values.
  const snap = snapshotTree(dest);
  const cap = snap.get(SMALL_TREE.capFile)!.xattrs['security.capability'];
  assert.ok(cap && cap.startsWith('01000002'), `security.capability restored (v2 layout): ${cap}`);
  assert.is(snap.get(SMALL_TREE.xattrFile)!.xattrs['user.binary'], SMALL_TREE_XATTRS['user.binary']!.toString('hex'));
  assert.is(snap.get(SMALL_TREE.aclDir)!.acl.access, SMALL_TREE_ACL.access);
  assert.is(snap.get(SMALL_TREE.aclDir)!.acl.default, SMALL_TREE_ACL.default);
  assert.ok(snap.get(SMALL_TREE.aclInherited)!.acl.access, 'inherited access ACL restored');
  assert.equal(snap.get(SMALL_TREE.hardA)!.links, [SMALL_TREE.hardA, SMALL_TREE.hardB]);
  assert.is(snap.get(SMALL_TREE.bigIds)!.uid, 3_000_000);
}

test('directory import → export → GNU tar extract is the source tree, byte for byte', ({ dir, tree, store }) => {
  strataJson(['store', 'import', 'ex/dir', tree], { store });
  const dest = exportAndExtract(store, dir, 'ex/dir', 'out');
  const diff = diffTrees(tree, dest);
  assert.equal(diff, [], `differences:\n${diff.join('\n')}`);
  assertSnapshotHasTheHardParts(dest);
});

test('bsdtar import (base64 xattrs, comma ACLs) → export → GNU tar extract is the source tree', ({ dir, tree, store }) => {
  strataJson(['store', 'import', 'ex/bsd', packBsd(tree, join(dir, 'bsd.tar'))], { store });
  const dest = exportAndExtract(store, dir, 'ex/bsd', 'out');
  const diff = diffTrees(tree, dest);
  assert.equal(diff, [], `differences:\n${diff.join('\n')}`);
  assertSnapshotHasTheHardParts(dest);
});

test('export by record CID works too, and the export leaves no temp file beside OUT', ({ dir, tree, store }) => {
  const r = strataJson(['store', 'import', 'ex/dir', tree], { store });
  const outDir = join(dir, 'outdir');
  mkdirSync(outDir);
  strataJson(['store', 'export', r.record, join(outDir, 'by-cid.tar')], { store });
  assert.equal(readdirSync(outDir), ['by-cid.tar']);
  const listing = mustRun('tar', ['-tf', join(outDir, 'by-cid.tar')]).stdout.toString('utf8');
  assert.ok(listing.includes(SMALL_TREE.longPath), 'the 300-byte path survives');
});

test.run();

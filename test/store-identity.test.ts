/**
 * Acceptance 1: the same small tree packed by GNU tar (pax, xattrs, ACLs), bsdtar, GNU tar in
 * reverse entry order, gzip and zstd, and imported as a directory, gives one layer CID and one
 * manifest CID. Also checks the canonical tar itself with GNU tar's own listing: sorted paths,
 * numeric ids only, no xattr/ACL/atime records, the layer CID is the sha256 of the blob.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSmallTree, packBsd, packGnu, packGnuReverse, SMALL_TREE } from './fixtures/small-tree.js';
import { createHash } from 'node:crypto';
import { comparePathsRef } from './helpers/tree.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strataJson } from './helpers/cli.js';
import { blobPath, cidCodec, cidHex, sha256 } from './store-harness.js';

interface Ctx {
  dir: string;
  tree: string;
  store: string;
}

const test = suite<Ctx>('store: one tree, one identity');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-identity-');
  ctx.tree = join(ctx.dir, 'tree');
  ctx.store = join(ctx.dir, 'store');
  makeSmallTree(ctx.tree);
});
test.after.each((ctx) => removeDir(ctx.dir));

test('GNU tar, bsdtar, reverse order, gzip, zstd and a directory give one layer and one manifest CID', ({ dir, tree, store }) => {
  const sources: Record<string, string> = {
    gnu: packGnu(tree, join(dir, 'gnu.tar')),
    bsd: packBsd(tree, join(dir, 'bsd.tar')),
    reverse: packGnuReverse(tree, join(dir, 'reverse.tar')),
    gzip: packGnu(tree, join(dir, 'gnu.tar.gz'), 'gzip'),
    zstd: packBsd(tree, join(dir, 'bsd.tar.zst'), 'zstd'),
    reverseZstd: packGnuReverse(tree, join(dir, 'reverse.tar.zst'), 'zstd'),
    dir: tree,
  };
  // The archives really differ as bytes (else the test proves nothing).
  const digests = new Set(Object.entries(sources).filter(([k]) => k !== 'dir').map(([, f]) => sha256(readFileSync(f))));
  assert.is(digests.size, 6, 'six different archive files');

  const got: Record<string, { layer: string; manifest: string; record: string; status: string; entries: number }> = {};
  for (const [name, src] of Object.entries(sources)) {
    got[name] = strataJson(['store', 'import', `id/${name}`, src], { store });
    assert.is(got[name]!.status, 'imported', name);
    // The same, with a memory budget so small that every few entries spill to disk.
    got[`${name}-spilled`] = strataJson(['store', 'import', `id/${name}-spilled`, src], { store, env: { STRATA_MEMORY_BUDGET: '2048' } });
  }
  const layers = new Set(Object.values(got).map((r) => r.layer));
  const manifests = new Set(Object.values(got).map((r) => r.manifest));
  assert.is(layers.size, 1, `one layer CID: ${JSON.stringify(Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.layer])), null, 1)}`);
  assert.is(manifests.size, 1, `one manifest CID: ${JSON.stringify(Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.manifest])), null, 1)}`);
  // Records differ (they name different modules) but each names the same layer.
  assert.is(new Set(Object.values(got).map((r) => r.record)).size, 2 * Object.keys(sources).length);

  const layer = [...layers][0]!;
  const manifest = [...manifests][0]!;
  assert.match(layer, /^bafkrei/, 'layer is CIDv1 raw sha2-256');
  assert.is(cidCodec(layer), 0x55);
  assert.match(manifest, /^bagaaiera/, 'manifest is CIDv1 json sha2-256');
  assert.is(cidCodec(manifest), 0x0200);
  const tar = readFileSync(blobPath(store, layer));
  assert.is(sha256(tar), cidHex(layer), 'the layer CID is the sha256 (OCI digest) of the stored tar');

  // The manifest carries the xattrs and ACLs; the tar does not.
  const m = JSON.parse(readFileSync(blobPath(store, manifest), 'utf8'));
  assert.is(m.layer, layer);
  assert.ok(m.entries[SMALL_TREE.capFile]?.xattrs?.['security.capability'], 'security.capability in the manifest');
  assert.ok(m.entries[SMALL_TREE.aclDir]?.acl?.default, 'default ACL in the manifest');
  for (const needle of ['SCHILY.xattr', 'LIBARCHIVE', 'SCHILY.acl', 'atime', 'ctime', 'security.capability']) {
    assert.is(tar.indexOf(needle), -1, `the canonical tar holds no '${needle}'`);
  }
});

test('member contents are read right whatever the order and sizes of the members', ({ dir, store }) => {
  // Many small members, empty ones, sizes at and around block and 64 KiB boundaries and larger
  // members in between, packed sorted, reversed and shuffled: every import must give the layer
  // the directory gives (a member read from the wrong offset or cut short changes it).
  const tree = join(dir, 'many');
  const sizes = [0, 1, 511, 512, 513, 4096, 65535, 65536, 65537, 200_000, 262_143, 262_144, 600_000];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let d = 0; d < 6; d++) {
    mkdirSync(join(tree, `d${d}`), { recursive: true });
    for (let f = 0; f < 60; f++) {
      const size = f < sizes.length ? sizes[f]! : Math.floor(rand() * (f % 7 === 0 ? 90_000 : 3_000));
      const body = createHash('sha512').update(`${d}/${f}`).digest();
      const content = Buffer.alloc(size);
      for (let i = 0; i < size; i += body.length) body.copy(content, i, 0, Math.min(body.length, size - i));
      if (size > 0) content[size - 1] = f; // an off-by-one at a member's end changes the layer
      writeFileSync(join(tree, `d${d}`, `f${String(f).padStart(2, '0')}`), content);
    }
  }
  const shuffled = join(dir, 'shuffled.tar');
  const list = join(dir, 'shuffled.list');
  const paths = ['.', ...Array.from({ length: 6 }, (_, d) => [`d${d}`, ...Array.from({ length: 60 }, (_, f) => `d${d}/f${String(f).padStart(2, '0')}`)]).flat()];
  for (let i = paths.length - 1; i > 1; i--) {
    const j = 1 + Math.floor(rand() * i);
    [paths[i], paths[j]] = [paths[j]!, paths[i]!];
  }
  writeFileSync(list, paths.map((x) => (x === '.' ? '.' : `./${x}`)).join('\0') + '\0');
  mustRun('tar', ['--format=pax', '--numeric-owner', '-C', tree, '--no-recursion', '--null', '-T', list, '-cf', shuffled]);
  const sorted = join(dir, 'sorted.tar');
  mustRun('tar', ['--format=pax', '--numeric-owner', '--sort=name', '-C', tree, '-cf', sorted, '.']);
  const sources = { dir: tree, sorted, reverse: packGnuReverse(tree, join(dir, 'reverse.tar')), shuffled };
  const layers = Object.entries(sources).map(([name, src]) => strataJson<{ layer: string }>(['store', 'import', `many/${name}`, src], { store }).layer);
  assert.is(new Set(layers).size, 1, `one layer CID: ${layers.join(' ')}`);
});

test('the canonical tar lists sorted, parents first, numeric owners, whole-second mtimes', ({ dir, tree, store }) => {
  const r = strataJson(['store', 'import', 'id/gnu', packGnu(tree, join(dir, 'gnu.tar'))], { store });
  const blob = blobPath(store, r.layer);
  const names = mustRun('tar', ['-tf', blob]).stdout.toString('utf8').split('\n').filter(Boolean);
  const paths = names.map((n) => (n === './' ? '.' : n.replace(/\/$/, '')));
  assert.equal(paths, [...paths].sort(comparePathsRef), 'entries sorted component by component');
  assert.is(paths[0], '.');
  // GNU tar's verbose listing: owner/group as numbers (no names recorded), hard link to the first path.
  const verbose = mustRun('tar', ['-tvf', blob]).stdout.toString('utf8');
  for (const line of verbose.split('\n').filter(Boolean)) assert.match(line, /^\S+ \d+\/\d+ /, `numeric owner only: ${line}`);
  assert.match(verbose, new RegExp(`${SMALL_TREE.hardB} link to ${SMALL_TREE.hardA}`));
  // Each header's mtime field is whole seconds and matches the source tree's.
  const full = mustRun('tar', ['--full-time', '-tvf', blob]).stdout.toString('utf8');
  assert.match(full, /2020-09-1\d \d\d:\d\d:\d\d /);
  assert.not.match(full, /\d\d:\d\d:\d\d\.\d/);
});

test.run();

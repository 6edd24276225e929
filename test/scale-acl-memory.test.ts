/**
 * Bounded memory for a licensed tree: the scale layer of 200,000 files (bench/scale-data.ts)
 * with a POSIX ACL on every file and directory, as GNU tar --acls archives a tree whose
 * directories carry a default ACL. Its manifest names every path, and every output embeds the
 * ACL of every path in /.strata/acl.json. Imported, and written as a sandbox, a SquashFS image
 * and an EROFS image, and the image unsquashed again, with V8's heap capped at 96 MiB
 * (--max-old-space-size): before the manifest was written and read as it streams, and the ACL
 * index written to a file, the import aborted in that heap (it peaked at 346 MiB uncapped), and
 * the outputs needed over 360 MiB; unsquash, in 48 MiB, parsed the whole ACL index and aborted.
 * Not a timing: a build either fits or aborts.
 *
 * Checked after: the ACL of a sample of files in the sandbox (as getfacl reads it), and the
 * same /.strata/acl.json in all three outputs, naming every path.
 */
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeScaleTar } from '../bench/scale-data.js';
import { strata, strataJson } from './helpers/cli.js';
import { missing } from './helpers/probe.js';
import { capped, FAST_SQUASH, HEAP_MIB, sampleFiles, scaleSuite, type ScaleContext } from './helpers/scale.js';
import { mustRun, removeDir } from './helpers/tmp.js';

const N = 200_000;
const GROUP = 4242;

const test = scaleSuite<ScaleContext & { index?: Buffer }>('scale: bounded memory with an ACL on every path', 'strata-scale-acl-');

/** The paths sampled: every 9,999th file. */
const sample = (): string[] => [...sampleFiles(N, 9999)].map((e) => e.path);

/** The paths /.strata/acl.json names, checked to be every path of the layer but its root. */
function assertNamesEvery(index: Buffer, what: string): void {
  const doc = JSON.parse(index.toString('utf8')) as { aclVersion: number; entries: Record<string, { access?: string }> };
  assert.is(doc.aclVersion, 1);
  const paths = Object.keys(doc.entries);
  assert.is(paths.length, N + 1001, `${what}: scale/, its 1,000 directories and every file`);
  for (const p of sample()) assert.match(doc.entries[p]?.access ?? '', `group:${GROUP}:r--`, `${what}: ${p}`);
}

/** getfacl of the sampled files in the tree at `out`: each carries the licence group's entry. */
function assertSampleCarriesAcls(out: string): void {
  const why = missing({ tools: ['getfacl'] });
  if (why) {
    console.log(`  ACLs in the tree not checked: ${why}`);
    return;
  }
  for (const p of sample()) {
    const acl = mustRun('getfacl', ['-n', '--omit-header', join(out, p)]).stdout.toString();
    assert.match(acl, `group:${GROUP}:r--`, `${p} carries its ACL`);
  }
}

test(`a ${N.toLocaleString('en')}-file layer with an ACL on every path imports in a ${HEAP_MIB} MiB heap`, ({ dir, store, cwd }) => {
  const tar = join(dir, 'acl.tar');
  writeScaleTar(tar, N, { aclGroup: GROUP });
  mkdirSync(cwd);
  const imported = strataJson(['store', 'import', 'licensed/200k', tar], { store, env: capped, timeout: 300_000 });
  assert.is(imported.entries, N + 1002, 'the root, scale/, 1,000 directories and the files');
  const shown = strataJson(['store', 'show', 'licensed/200k'], { store, env: capped });
  assert.is(shown.manifest.aclPaths, N + 1001, 'the manifest names every path but the root');
  strataJson(['compose', 'add', 'licensed/200k'], { store, cwd });
});

test(`its sandbox, with every ACL, in a ${HEAP_MIB} MiB heap`, (ctx) => {
  const out = join(ctx.dir, 'sandbox');
  const r = strata(['--json', 'compose', 'sandbox', out], { store: ctx.store, cwd: ctx.cwd, env: capped, timeout: 600_000 });
  assert.is(r.code, 0, `sandbox under a ${HEAP_MIB} MiB heap: ${r.stderr.toString().slice(-400)}`);
  ctx.index = readFileSync(join(out, '.strata', 'acl.json'));
  assertNamesEvery(ctx.index, 'the sandbox');
  assertSampleCarriesAcls(out);
  removeDir(out);
});

for (const format of ['squashfs', 'erofs'] as const) {
  test(`its ${format} image in a ${HEAP_MIB} MiB heap, with the sandbox's ACL index`, ({ dir, store, cwd, index }) => {
    const image = join(dir, `licensed.${format}`);
    const r = strata(['--json', 'compose', 'squash', image, '--format', format, ...(format === 'squashfs' ? FAST_SQUASH : [])], { store, cwd, env: capped, timeout: 600_000 });
    assert.is(r.code, 0, `${format} under a ${HEAP_MIB} MiB heap: ${r.stderr.toString().slice(-400)}`);
    const tool = format === 'squashfs' ? 'unsquashfs' : 'fsck.erofs';
    const why = missing({ tools: [tool] });
    if (why) {
      console.log(`  image contents not checked: ${why}`);
      return;
    }
    let inImage: Buffer;
    if (format === 'squashfs') inImage = mustRun('unsquashfs', ['-cat', image, '.strata/acl.json']).stdout;
    else {
      const out = join(dir, 'erofs-tree');
      mustRun('fsck.erofs', [`--extract=${out}`, image], { timeout: 300_000 });
      inImage = readFileSync(join(out, '.strata', 'acl.json'));
      removeDir(out);
    }
    assert.ok(index && inImage.equals(index), 'the image embeds the sandbox\'s /.strata/acl.json');
  });
}

const UNSQUASH_HEAP_MIB = 48;

test(`strata unsquash of the SquashFS image puts every ACL back, in a ${UNSQUASH_HEAP_MIB} MiB heap`, ({ dir }) => {
  // The image holds the ACLs only in /.strata/acl.json, which unsquash reads as it streams and
  // sorts into the walk's order through spill files; the directory list spills too. Parsed
  // whole, the index took unsquash to 393 MiB and aborted in this heap.
  const out = join(dir, 'unsquashed');
  const env = { NODE_OPTIONS: `--max-old-space-size=${UNSQUASH_HEAP_MIB}` };
  const r = strata(['unsquash', join(dir, 'licensed.squashfs'), out], { env, timeout: 600_000 });
  assert.is(r.code, 0, `unsquash under a ${UNSQUASH_HEAP_MIB} MiB heap: ${r.stderr.toString().slice(-400)}`);
  assert.match(r.stdout.toString(), `restored ACLs on ${(N + 1001).toString()} paths`);
  assertSampleCarriesAcls(out);
  removeDir(out);
});

test(`strata inspect counts the image's ACL index as it streams, in a ${UNSQUASH_HEAP_MIB} MiB heap`, ({ dir }) => {
  const env = { NODE_OPTIONS: `--max-old-space-size=${UNSQUASH_HEAP_MIB}` };
  const r = strata(['inspect', join(dir, 'licensed.squashfs')], { env, timeout: 300_000 });
  assert.is(r.code, 0, `inspect under a ${UNSQUASH_HEAP_MIB} MiB heap: ${r.stderr.toString().slice(-400)}`);
  assert.match(r.stdout.toString(), new RegExp(`^ACLs: ${(N + 1001).toLocaleString('en').replace(',', ',?')} paths \\(1,?001 with default ACLs\\)$`, 'm'));
});

test.run();

/**
 * Byte identity of images, end to end through the CLI: the same lock gives the same sha256
 * from two stores filled in different import orders, on repeated runs, with a cold or warm
 * block cache, with 1 or 2 compression threads, and as root or as an unprivileged user
 * (uid/gid 65534, no groups). `strata inspect` shows the embedded lock; `strata rebuild`
 * from that lock, or from a hash list, on another store gives the same bytes. Re-squashing
 * after the top module changed recompresses only that module's blocks (and the metadata).
 * Every sha256 is of the file on disk (not only the one strata reports), and each image is
 * listed by unsquashfs so that a stable but broken image cannot pass.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { listCacheEntries, namespaceId, type CacheEntry } from '../compose/image/shared/block-cache.js';
import { makeCodec } from '../compose/image/shared/codecs.js';
import { squashCodecSpec } from '../compose/image/squashfs/compressor.js';
import { tableNamespace } from '../compose/image/squashfs/writer.js';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { CID } from 'multiformats/cid';
import { makeStack, STACK, stackAt, type Stack } from './fixtures/stack.js';
import { packGnu } from './fixtures/small-tree.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { strata, strataJson, strataOk, type Workspace } from './helpers/cli.js';
import { nobody, runAs } from './helpers/users.js';
import { giveToNobody, importStack, MODULES, STACK_ORDER, type SquashJson } from './image-harness.js';

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

/** Squashes with --json and checks the reported sha256 against the file and unsquashfs (fsck.erofs for `--format erofs`). */
function squash(o: Workspace, out: string, ...flags: string[]): SquashJson {
  const r = strataJson<SquashJson>(['compose', 'squash', out, ...flags], o);
  assert.is(r.sha256, sha(out), `${out}: reported sha256 is the file's`);
  assert.is(statSync(out).size, r.bytes);
  if (flags.includes('erofs')) mustRun('fsck.erofs', [out]);
  else assert.match(mustRun('unsquashfs', ['-lln', out]).stdout.toString(), /squashfs-root\/opt\/app\/share\/big.dat\n/);
  return r;
}

/** The formats segments are tested in (spec/squashfs.md, spec/erofs.md). */
const SEGMENT_FORMATS = [
  // above: whether top is placed from its segment after each change of low in the test below.
  { name: 'SquashFS gzip', flags: ['--comp', 'gzip', '--block-size', '4096'], above: [1, 0, 0, 0, 1, 1] },
  // EROFS deduplicates whole compressed files only (not tails), and shares zero pclusters and the zero block.
  { name: 'EROFS lz4', flags: ['--format', 'erofs', '--comp', 'lz4', '--block-size', '8192'], above: [1, 0, 0, 1, 1, 0] },
  // Uncompressed EROFS deduplicates nothing and writes zero blocks as holes: top never depends on low.
  { name: 'EROFS uncompressed', flags: ['--format', 'erofs', '--comp', 'none'], above: [1, 1, 1, 1, 1, 1] },
];

/** The block cache's directory of the images' table blocks, built at `comp` and its default level. */
const tableDir = (comp: 'gzip' | 'zstd'): string => `/strata-metadata/${namespaceId(tableNamespace(makeCodec(squashCodecSpec(comp))))}/`;

/** Every record of the block cache but the tables', by pack and offset (STORE/cache holds other caches too). */
function cacheRecords(store: string, comp: 'gzip' | 'zstd'): Map<string, CacheEntry> {
  const tables = tableDir(comp);
  return new Map(
    listCacheEntries(join(store, 'cache'))
      .filter((e) => !e.pack.includes(tables))
      .map((e) => [`${e.pack}@${e.offset}`, e]),
  );
}

/** How many blocks of the images' tables (built at `comp`) the block cache holds. */
function tableBlocks(store: string, comp: 'gzip' | 'zstd'): number {
  const tables = tableDir(comp);
  return listCacheEntries(join(store, 'cache')).filter((e) => e.pack.includes(tables)).length;
}

const Id = suite('image: byte identity, inspect, rebuild and the block cache, through the CLI');
let tmp = '';
let stack: Stack;
let a: Workspace;
/** The stack and store-a every test starts from, made once; each test gets a copy of its own. */
let template = '';

Id.before(() => {
  template = tempDir('strata-image-id-template-');
  const w: Workspace = { cwd: join(template, 'a'), store: join(template, 'store-a') };
  mkdirSync(w.cwd);
  importStack(w, makeStack(join(template, 'stack')));
});

Id.after(() => {
  removeDir(template);
});

Id.before.each(() => {
  tmp = tempDir('strata-image-id-');
  // cp -a keeps what the layers and the store hold besides bytes: modes, owners, ACLs, xattrs, mtimes.
  mustRun('cp', ['-a', `${template}/.`, tmp]);
  stack = stackAt(join(tmp, 'stack'));
  a = { cwd: join(tmp, 'a'), store: join(tmp, 'store-a') };
});

Id.after.each(() => {
  removeDir(tmp);
});

Id('same bytes: other import order, repeated, cold vs warm cache, 1 vs 2 workers (gzip and zstd)', () => {
  const b: Workspace = { cwd: join(tmp, 'b'), store: join(tmp, 'store-b') };
  mkdirSync(b.cwd);
  importStack(b, stack, ['lic', 'app', 'mid', 'base']);

  for (const comp of ['gzip', 'zstd'] as const) {
    const first = squash(a, join(tmp, `a1-${comp}.sqfs`), '--comp', comp, '--workers', '2');
    assert.ok(first.cacheMisses > 0 && first.cacheHits === 0, `${comp}: a fresh store misses every block (${first.cacheHits}/${first.cacheMisses})`);
    const tables = tableBlocks(a.store, comp);
    assert.ok(tables > 0, `${comp}: the tables' blocks are cached too`);
    const again = squash(a, join(tmp, `a2-${comp}.sqfs`), '--comp', comp, '--workers', '2');
    assert.is(again.sha256, first.sha256, `${comp}: repeated run`);
    assert.is(again.cacheMisses, 0, `${comp}: warm cache: no block compressed again`);
    assert.is(again.cacheHits, first.cacheMisses, `${comp}: warm cache: every block a hit`);
    assert.is(tableBlocks(a.store, comp), tables, `${comp}: warm cache: no block of the tables compressed again`);

    rmSync(join(a.store, 'cache'), { recursive: true, force: true });
    const cold1 = squash(a, join(tmp, `a3-${comp}.sqfs`), '--comp', comp, '--workers', '1');
    assert.is(cold1.cacheHits, 0, `${comp}: cache deleted, cold`);
    assert.is(cold1.sha256, first.sha256, `${comp}: cold cache, 1 worker`);

    rmSync(join(a.store, 'cache'), { recursive: true, force: true });
    const cold2 = squash(a, join(tmp, `a4-${comp}.sqfs`), '--comp', comp, '--workers', '2');
    assert.is(cold2.sha256, first.sha256, `${comp}: cold cache, 2 workers`);

    const other = squash(b, join(tmp, `b-${comp}.sqfs`), '--comp', comp);
    assert.is(other.sha256, first.sha256, `${comp}: a store filled in another order`);
  }
  // The two compressors really differ, and so does another block size.
  assert.not.equal(sha(join(tmp, 'a1-gzip.sqfs')), sha(join(tmp, 'a1-zstd.sqfs')));
  const small = squash(a, join(tmp, 'a-4k.sqfs'), '--block-size', '4096');
  assert.not.equal(small.sha256, sha(join(tmp, 'a1-gzip.sqfs')));
});

Id('an unprivileged user builds the same image without root', () => {
  const root = squash(a, join(tmp, 'root.sqfs'));
  // nobody: own store, cwd, HOME and copies of the tars, nothing of root's writable.
  const home = join(tmp, 'nobody');
  const n: Workspace = { cwd: join(home, 'work'), store: join(home, 'store'), as: nobody(home), env: { XDG_DATA_HOME: join(home, 'xdg') } };
  mkdirSync(n.cwd, { recursive: true });
  const copies: Stack = { root: join(home, 'tars'), layers: [] };
  mkdirSync(copies.root);
  for (const l of stack.layers) {
    const t = join(copies.root, `${l.name}.tar`);
    copyFileSync(l.tar, t);
    copies.layers.push({ ...l, tar: t });
  }
  giveToNobody(home);
  mustRun('chmod', ['0755', tmp]);
  assert.is(runAs(nobody(home), 'id', ['-u']).stdout.toString().trim(), '65534');
  // The user really cannot write where root's store lives.
  assert.is.not(strata(['store', 'import', 'x/1', copies.layers[0]!.tar], { ...n, store: a.store }).code, 0, 'nobody cannot write root\'s store');

  importStack(n, copies);
  const r = strataJson<SquashJson>(['compose', 'squash', join(n.cwd, 'nobody.sqfs')], n);
  assert.is(r.sha256, root.sha256, 'same sha256 as root');
  assert.is(sha(join(n.cwd, 'nobody.sqfs')), root.sha256);
  assert.is(statSync(join(n.cwd, 'nobody.sqfs')).uid, 65534, 'written by nobody');
  // Root-owned files, the device and the capability are in nobody's image.
  const l = mustRun('unsquashfs', ['-lln', join(n.cwd, 'nobody.sqfs')]).stdout.toString();
  assert.match(l, /brw-rw---- 0\/6\s+7,\s+0 .* squashfs-root\/dev\/loop0\n/);
  const ex = join(tmp, 'ex');
  mustRun('unsquashfs', ['-no-progress', '-d', ex, join(n.cwd, 'nobody.sqfs')]);
  assert.match(mustRun('getfattr', ['-n', 'security.capability', '-e', 'hex', join(ex, STACK.licCap)]).stdout.toString(), /security.capability=0x01000002/);

  // Again from nobody's own segments; then one layer nobody may no longer read: the kernel's
  // refusal stops the build, although nobody's cache holds what was built from that layer.
  const again = strataJson<SquashJson>(['compose', 'squash', join(n.cwd, 'again.sqfs')], n);
  assert.is(again.segmentHits, 4);
  assert.is(again.sha256, root.sha256);
  const lockOfN = JSON.parse(readFileSync(join(n.cwd, 'strata.lock'), 'utf8')) as { modules: { fullName: string; layer: string }[] };
  const mid = lockOfN.modules.find((m) => m.fullName === MODULES.mid.fullName)!;
  chmodSync(join(n.store!, 'blobs', 'sha256', Buffer.from(CID.parse(mid.layer).multihash.digest).toString('hex')), 0o000);
  const denied = strata(['compose', 'squash', join(n.cwd, 'denied.sqfs')], n);
  assert.is(denied.code, 1, denied.stderr);
  assert.match(denied.stderr, /^strata: layer of mid\/2\.0 [^\n]* is not readable by you[^\n]*\n$/);
  assert.not.ok(existsSync(join(n.cwd, 'denied.sqfs')), 'no image');
});

Id('inspect shows the lock; rebuild from that lock and from a hash list on another store: same sha256', () => {
  const img = join(tmp, 'orig.sqfs');
  const orig = squash(a, img, '--comp', 'zstd', '--level', '3');
  const stackLock = JSON.parse(readFileSync(join(a.cwd, 'strata.lock'), 'utf8')) as { modules: { fullName: string; record: string; layer: string }[] };
  assert.equal(stackLock.modules.map((m) => m.fullName), STACK_ORDER.map((n) => MODULES[n].fullName));

  // Text: every module with its record CID, in layer order, and the environment.
  const text = strataOk(['inspect', img], a);
  const lines = text.split('\n');
  let last = -1;
  for (const m of stackLock.modules) {
    const i = lines.findIndex((l) => l.includes(m.fullName) && l.includes(m.record));
    assert.ok(i > last, `inspect lists ${m.fullName} ${m.record} in order:\n${text}`);
    last = i;
  }
  assert.match(text, /PATH=\/opt\/app\/bin/);
  assert.match(text, /LM_LICENSE_FILE=\/opt\/lic\/LICENSE/);
  assert.match(text, /ACLs: 6 paths/);

  // The lock two ways: inspect --json and unsquashfs -cat; both are the stack's lock.
  const info = strataJson<{ lock: unknown }>(['inspect', img], a);
  const catted = mustRun('unsquashfs', ['-cat', img, '.strata/lock.json']).stdout;
  assert.equal(JSON.parse(catted.toString('utf8')), info.lock, 'inspect --json lock = /.strata/lock.json');
  assert.equal(info.lock, stackLock, 'the embedded lock is the stack\'s lock');

  // A second store, filled in another order, with no stack in its working directory.
  const c: Workspace = { cwd: join(tmp, 'c'), store: join(tmp, 'store-c') };
  mkdirSync(c.cwd);
  for (const name of ['app', 'lic', 'base', 'mid'] as const) {
    strataOk(['-q', 'store', 'import', MODULES[name].fullName, stack.layers.find((l) => l.name === name)!.tar, ...MODULES[name].opts], c);
  }
  writeFileSync(join(c.cwd, 'from-image.lock'), catted);
  const fromInspect = join(c.cwd, 'from-inspect.lock');
  writeFileSync(fromInspect, JSON.stringify(info.lock));
  const r1 = strataJson<SquashJson>(['rebuild', 'from-image.lock', '-o', 'r1.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(r1.sha256, orig.sha256, 'rebuild from unsquashfs -cat lock');
  assert.is(sha(join(c.cwd, 'r1.sqfs')), orig.sha256);
  const r2 = strataJson<SquashJson>(['rebuild', fromInspect, '-o', 'r2.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(r2.sha256, orig.sha256, 'rebuild from inspect --json lock');

  // Hash lists: record CIDs (from compose lock --cids), then layer CIDs.
  const cids = strataOk(['compose', 'lock', '--cids'], a);
  assert.equal(cids.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean), stackLock.modules.map((m) => m.record));
  writeFileSync(join(c.cwd, 'records.txt'), cids);
  const r3 = strataJson<SquashJson>(['rebuild', 'records.txt', '-o', 'r3.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(r3.sha256, orig.sha256, 'rebuild from a hash list of record CIDs');
  writeFileSync(join(c.cwd, 'layers.txt'), stackLock.modules.map((m) => m.layer).join('\n') + '\n');
  const r4 = strataJson<SquashJson>(['rebuild', 'layers.txt', '-o', 'r4.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(r4.sha256, orig.sha256, 'rebuild from a hash list of layer CIDs');
  // The same lock with other settings is another image (the flags really reach the writer).
  const r5 = strataJson<SquashJson>(['rebuild', 'from-image.lock', '-o', 'r5.sqfs', '--comp', 'gzip'], c);
  assert.is.not(r5.sha256, orig.sha256);
  assert.match(mustRun('unsquashfs', ['-s', join(c.cwd, 'r5.sqfs')]).stdout.toString(), /Compression gzip/);

  // A damaged layer blob: a build that reads it is an error naming the module, and no image.
  // One that takes every layer from segments of this user's earlier builds (made from verified
  // reads) does not read it, and gives the same bytes.
  const app = stackLock.modules.find((m) => m.fullName === MODULES.app.fullName)!;
  const blob = join(c.store, 'blobs', 'sha256', Buffer.from(CID.parse(app.layer).multihash.digest).toString('hex'));
  const bytes = readFileSync(blob);
  bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
  writeFileSync(blob, bytes);
  const fromSegments = strataJson<SquashJson>(['rebuild', 'from-image.lock', '-o', 'r6.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(fromSegments.segmentHits, 4, 'every layer from a segment');
  assert.is(sha(join(c.cwd, 'r6.sqfs')), orig.sha256);
  rmSync(join(c.store, 'cache'), { recursive: true, force: true });
  const dmg = strata(['rebuild', 'from-image.lock', '-o', 'r7.sqfs', '--comp', 'zstd', '--level', '3'], c);
  assert.is(dmg.code, 1, dmg.stderr);
  assert.match(dmg.stderr, new RegExp(`^strata: [^\\n]*${MODULES.app.fullName.replace('.', '\\.')}[^\\n]*\\n$`));
  assert.equal(readdirSync(c.cwd).filter((n) => n.includes('r7')), [], 'no image and no temporary file');

  // A store lacking a module refuses, one line, naming what is missing.
  const d: Workspace = { cwd: join(tmp, 'd'), store: join(tmp, 'store-d') };
  mkdirSync(d.cwd);
  strataOk(['-q', 'store', 'import', MODULES.base.fullName, stack.layers[0]!.tar, ...MODULES.base.opts], d);
  const miss = strata(['rebuild', join(c.cwd, 'from-image.lock'), '-o', 'x.sqfs'], d);
  assert.is(miss.code, 1, miss.stderr);
  assert.match(miss.stderr, /^strata: [^\n]+\n$/);
  assert.equal(readdirSync(d.cwd), [], 'no partial image left');
});

Id('block cache: after the top module changes, only its blocks (and the metadata) are compressed again', () => {
  const bs = ['--comp', 'gzip', '--block-size', '4096']; // gzip: the test reads cache payloads with zlib
  const cold = squash(a, join(tmp, 'v1.sqfs'), ...bs);
  const before = cacheRecords(a.store, 'gzip');
  assert.is(before.size, cold.cacheMisses, 'one cache record per compressed block');

  // lic with one file changed, big enough for two full blocks and a tail of its own.
  const licDir = stack.layers.find((l) => l.name === 'lic')!.dir;
  const newText = Buffer.from(Array.from({ length: 400 }, (_, i) => `licence clause ${i}: site staff only\n`).join(''));
  writeFileSync(join(licDir, STACK.licFile), newText);
  mustRun('touch', ['-d', '@1630000500', join(licDir, STACK.licFile)]);
  const tar2 = packGnu(licDir, join(tmp, 'lic2.tar'));
  strataOk(['-q', 'store', 'import', MODULES.lic.fullName, tar2, ...MODULES.lic.opts, '--force'], a);

  const warm = squash(a, join(tmp, 'v2.sqfs'), ...bs);
  assert.is.not(warm.sha256, cold.sha256);
  // New blocks: the file's full blocks, lic's two fragment blocks (the new tail, in the stream
  // of tails of larger files; lic's small files, now without the old LICENSE) and the
  // metadata's fragment block.
  const blocks = Math.floor(newText.length / 4096);
  assert.ok(blocks >= 2);
  assert.is(warm.cacheMisses, blocks + 3, `misses ${warm.cacheMisses}, expected ${blocks} data blocks + 3 fragment blocks`);
  assert.is(warm.cacheHits, cold.cacheMisses - 2, 'every other block of the first build is reused');
  const added = [...cacheRecords(a.store, 'gzip')].filter(([k]) => !before.has(k)).map(([, e]) => e);
  assert.is(added.length, warm.cacheMisses);
  // What was compressed again is lic's content and the metadata, nothing from base/mid/app.
  const payloads = added.map((e) => (e.raw ? undefined : inflateSync(e.payload).toString('latin1')));
  for (let i = 0; i < blocks; i++) assert.ok(payloads.includes(newText.subarray(i * 4096, (i + 1) * 4096).toString('latin1')), `block ${i} of the new file was compressed`);
  const tails = payloads.filter((p) => p !== undefined && p.length < 4096);
  assert.ok(tails.includes(newText.subarray(blocks * 4096).toString('latin1')), 'a fragment block of lic holds the new tail (alone: the only tail of a larger file)');
  // lic's small files, licd (18 bytes) and liblic.so.1 (1,000 bytes of noise): stored raw, so the record has no payload.
  assert.ok(added.some((e) => e.raw && e.rawLength === 18 + 1000), 'the fragment block of lic\'s small files');
  assert.ok(tails.some((p) => p!.includes('lockfileVersion')), 'the metadata fragment block (new lock)');
  for (const p of payloads) assert.not.ok(p?.includes('small file 0'), 'no block of app was compressed again');

  // The cache never changes the bytes: a cold build of the new stack is identical.
  rmSync(join(a.store, 'cache'), { recursive: true, force: true });
  const cold2 = squash(a, join(tmp, 'v2-cold.sqfs'), ...bs);
  assert.is(cold2.sha256, warm.sha256);
  assert.is(mustRun('unsquashfs', ['-cat', join(tmp, 'v2.sqfs'), STACK.licFile]).stdout.toString(), newText.toString());
});

/** The segment files of the block cache, by the layer (CID) they are filed under. */
function segments(store: string): Map<string, string[]> {
  const root = join(store, 'cache', 'image-blocks');
  const out = new Map<string, string[]>();
  for (const tag of readdirSync(root)) {
    for (const ns of readdirSync(join(root, tag))) {
      const segs = readdirSync(join(root, tag, ns)).filter((n) => n.endsWith('.seg'));
      if (segs.length) out.set(tag, [...(out.get(tag) ?? []), ...segs.map((n) => join(root, tag, ns, n))]);
    }
  }
  return out;
}

for (const { name: format, flags } of SEGMENT_FORMATS)
Id(`segments, ${format}: unchanged layers are placed from segments, changed ones built again; damaged segments are not used; the bytes are always a cold build's`, () => {
  const lock = () => JSON.parse(readFileSync(join(a.cwd, 'strata.lock'), 'utf8')) as { modules: { fullName: string; layer: string }[] };
  const first = squash(a, join(tmp, 's1.sqfs'), ...flags);
  assert.is(first.segmentHits, 0, 'a cold build has no segments to use');
  const layers = lock().modules.map((m) => m.layer);
  assert.equal([...segments(a.store).keys()].sort(), [...layers].sort(), 'one segment per layer recorded');
  const again = squash(a, join(tmp, 's2.sqfs'), ...flags);
  assert.is(again.segmentHits, 4, 'the same stack again: every layer from its segment');
  assert.is(again.sha256, first.sha256);
  assert.is(again.cacheMisses, 0);
  assert.is(again.cacheHits, first.cacheMisses, 'segment blocks count as hits');

  // app (the third layer) changes: base and mid come from segments, app and lic are built.
  const appDir = stack.layers.find((l) => l.name === 'app')!.dir;
  writeFileSync(join(appDir, 'opt/app/share/data/f007'), 'changed small file\n'.repeat(500));
  mustRun('touch', ['-d', '@1620000500', join(appDir, 'opt/app/share/data/f007')]);
  strataOk(['-q', 'store', 'import', MODULES.app.fullName, packGnu(appDir, join(tmp, 'app2.tar')), ...MODULES.app.opts, '--force'], a);
  strataOk(['-q', 'compose', 'add', MODULES.app.fullName, '--force'], a);
  const changed = squash(a, join(tmp, 's3.sqfs'), ...flags);
  assert.is.not(changed.sha256, first.sha256);
  assert.is(changed.segmentHits, 3, 'base, mid and lic from segments, lic at its new place; app changed');
  const changedAgain = squash(a, join(tmp, 's4.sqfs'), ...flags);
  assert.is(changedAgain.segmentHits, 4);
  assert.is(changedAgain.sha256, changed.sha256);

  // Damaged segments: each is built again instead (and recorded anew), the bytes never change.
  const segs = segments(a.store);
  const of = (name: 'base' | 'mid' | 'app' | 'lic') => {
    const cid = lock().modules.find((m) => m.fullName === MODULES[name].fullName)!.layer;
    return segs.get(cid)!.map((f) => ({ f, st: statSync(f) })).sort((x, y) => y.st.mtimeMs - x.st.mtimeMs)[0]!.f;
  };
  const flip = (f: string, at: (b: Buffer) => number) => {
    const b = readFileSync(f);
    b[at(b)]! ^= 0x40;
    writeFileSync(f, b);
  };
  // Segment file: a 192-byte header (the extra part's length at 120, the seal from 160), the
  // extra part, the meta, the bytes (segment-cache.ts).
  const extraLength = (b: Buffer) => Number(b.readBigUInt64LE(120));
  flip(of('mid'), (b) => 192 + extraLength(b) + 8); // the meta
  flip(of('app'), () => 170); // the seal
  const damaged = squash(a, join(tmp, 's5.sqfs'), ...flags);
  assert.is(damaged.sha256, changed.sha256, 'damaged segments never change the image');
  assert.is(damaged.segmentHits, 2, 'base and lic were whole');
  const mended = squash(a, join(tmp, 's6.sqfs'), ...flags);
  assert.is(mended.segmentHits, 4, 'the damaged ones were recorded again');
  assert.is(mended.sha256, changed.sha256);
  // The extra part (EROFS: the layer's tails), checked as it is read before the layer is placed.
  const withExtra = (['base', 'mid', 'app', 'lic'] as const).find((n) => extraLength(readFileSync(of(n))) > 0);
  assert.is(withExtra !== undefined, flags.includes('erofs'), 'EROFS segments keep tails in their extra part; SquashFS ones have none');
  if (withExtra) {
    flip(of(withExtra), (b) => 192 + extraLength(b) - 1);
    const tails = squash(a, join(tmp, 's6t.sqfs'), ...flags);
    assert.is(tails.sha256, changed.sha256, 'damaged tails never change the image');
    assert.is(tails.segmentHits, 3, `${withExtra} built again`);
    assert.is(squash(a, join(tmp, 's6u.sqfs'), ...flags).segmentHits, 4);
  }
  // Bytes found wrong only once copied (the writer went on meanwhile): built again, layers read.
  flip(of('base'), (b) => b.length - 1);
  const copied = squash(a, join(tmp, 's6b.sqfs'), ...flags);
  assert.is(copied.sha256, changed.sha256);
  assert.is(copied.segmentHits, 0, 'the build was done again without segments');
  assert.is(squash(a, join(tmp, 's6c.sqfs'), ...flags).segmentHits, 4, 'and recorded them again');
  // A segment under another key's name (a copy), and one cut short: not used either.
  writeFileSync(of('mid'), readFileSync(of('base')));
  writeFileSync(of('lic'), readFileSync(of('lic')).subarray(0, -1));
  const swapped = squash(a, join(tmp, 's7.sqfs'), ...flags);
  assert.is(swapped.sha256, changed.sha256);
  assert.is(swapped.segmentHits, 2);

  // A cold build of the changed stack: the same bytes.
  rmSync(join(a.store, 'cache', 'image-blocks'), { recursive: true, force: true });
  const cold = squash(a, join(tmp, 's8.sqfs'), ...flags);
  assert.is(cold.segmentHits, 0);
  assert.is(cold.sha256, changed.sha256, 'warm with segments = cold');

  // A layer no longer in the store is an error, segments or not: nothing is built from a cache alone.
  squash(a, join(tmp, 's9.sqfs'), ...flags);
  const base = lock().modules[0]!.layer;
  rmSync(join(a.store, 'blobs', 'sha256', Buffer.from(CID.parse(base).multihash.digest).toString('hex')));
  const gone = strata(['compose', 'squash', join(tmp, 's10.sqfs'), ...flags], a);
  assert.is(gone.code, 1, gone.stderr);
  assert.match(gone.stderr, /^strata: [^\n]*base\/1\.0[^\n]*\n$/);
  assert.not.ok(readdirSync(tmp).some((n) => n.startsWith('s10') || n.startsWith('.strata-tmp')), 'no image');
});

for (const { name: format, flags, above } of SEGMENT_FORMATS)
Id(`segments, ${format}: a layer above a changed one is placed from its segment at its new position only when every dedup lookup of it answers as before`, () => {
  // low holds contents top also has (SquashFS: a run of full blocks and a tail, found by
  // top; EROFS: a compressed file, found by top); top stores B itself. Each version of low
  // moves top; the image must always be a cold build's.
  const o: Workspace = { cwd: join(tmp, 'dedup'), store: join(tmp, 'store-dedup') };
  mkdirSync(o.cwd);
  const A = Buffer.alloc(3 * 4096 + 100, 'A-content ');
  const B = Buffer.alloc(2 * 4096 + 7, 'B content, top only ');
  const S = Buffer.from('a small shared tail\n');
  const layer = (name: string, files: Record<string, Buffer>) => {
    const dir = join(tmp, 'dedup-src', name);
    mkdirSync(join(dir, 'data'), { recursive: true });
    for (const [f, b] of Object.entries(files)) writeFileSync(join(dir, 'data', f), b);
    mustRun('touch', ['-d', '@1620000000', ...Object.keys(files).map((f) => join(dir, 'data', f)), join(dir, 'data'), dir]);
    return packGnu(dir, join(tmp, `${name}.tar`));
  };
  const useLow = (name: string, files: Record<string, Buffer>) => {
    strataOk(['-q', 'store', 'import', 'low/1', layer(name, files), '--force'], o);
    strataOk(['-q', 'compose', 'purge'], o); // load order: low, then top
    strataOk(['-q', 'compose', 'add', 'low/1', 'top/1'], o);
  };
  let n = 0;
  const build = (): SquashJson => {
    const out = join(tmp, `dedup-${n++}.sqfs`);
    const r = strataJson<SquashJson>(['compose', 'squash', out, ...flags], o);
    assert.is(r.sha256, sha(out));
    if (flags.includes('erofs')) mustRun('fsck.erofs', [out]);
    else assert.match(mustRun('unsquashfs', ['-lln', out]).stdout.toString(), /squashfs-root\/top\/data\/own\.dat\n/);
    return r;
  };
  /** A warm build, then the same stack cold (which records the segments anew): the same bytes. */
  const warmThenCold = (): SquashJson => {
    const warm = build();
    rmSync(join(o.store, 'cache', 'image-blocks'), { recursive: true, force: true });
    const cold = build();
    assert.is(cold.segmentHits, 0);
    assert.is(warm.sha256, cold.sha256, 'placed from segments or not, the same bytes');
    return warm;
  };
  strataOk(['-q', 'store', 'import', 'low/1', layer('low1', { 'a.dat': A, 's.txt': S, 'x.txt': Buffer.from('one\n') })], o);
  const topDir = join(tmp, 'dedup-src', 'top');
  mkdirSync(join(topDir, 'top', 'data'), { recursive: true });
  writeFileSync(join(topDir, 'top', 'data', 'copy-a.dat'), A);
  writeFileSync(join(topDir, 'top', 'data', 'own.dat'), B);
  writeFileSync(join(topDir, 'top', 'data', 's.txt'), S);
  writeFileSync(join(topDir, 'top', 'data', 'zeros.dat'), Buffer.alloc(2 * 8192 + 4096));
  strataOk(['-q', 'store', 'import', 'top/1', packGnu(topDir, join(tmp, 'top.tar'))], o);
  strataOk(['-q', 'compose', 'add', 'low/1', 'top/1'], o);
  assert.is(build().segmentHits, 0);
  assert.is(build().segmentHits, 2, 'the same stack again');

  // low grows (top moves) but holds the same contents top looks up: top from its segment.
  const low2 = { 'a.dat': A, 's.txt': S, 'x.txt': Buffer.alloc(9000, 'two ') };
  useLow('low2', low2);
  assert.is(warmThenCold().segmentHits, above[0], 'top placed at its new position');
  // low now holds B, which top stored itself: a build of top finds it, so the segment is not used.
  const low3 = { 'a.dat': A, 's.txt': S, 'b.dat': B };
  useLow('low3', low3);
  assert.is(warmThenCold().segmentHits, above[1], 'top stored B, which low now has');
  // low no longer holds A, which top found there: not used either.
  const low4 = { ...low3, 'a.dat': Buffer.alloc(A.length, 'A-changed ') };
  useLow('low4', low4);
  assert.is(warmThenCold().segmentHits, above[2], 'top found A in low, which low no longer has');
  // nor S, a tail top found there (SquashFS).
  const low5 = { ...low4, 's.txt': Buffer.from('another tail\n') };
  useLow('low5', low5);
  assert.is(warmThenCold().segmentHits, above[3], 'top found the tail S in low, which low no longer has');
  const low6 = { ...low5, 'y.txt': Buffer.from('more\n') };
  useLow('low6', low6);
  assert.is(warmThenCold().segmentHits, above[4], 'and placed again once the answers are the same');
  // low writes the shared zero pcluster and zero block first now (EROFS), which top wrote before.
  useLow('low7', { ...low6, 'z.dat': Buffer.alloc(8192 + 100) });
  assert.is(warmThenCold().segmentHits, above[5], 'top wrote the shared zero data, which low now writes');
});

Id('segments, EROFS: a layer whose tails outgrow the tail store\'s memory is placed from its segment with the same bytes', () => {
  // 1,500 files of 3,000 bytes: 4.5 MB of tails, more than the writer keeps in memory (4 MiB),
  // so the tails the segment gives back cross into the tail store's file.
  const o: Workspace = { cwd: join(tmp, 'tails'), store: join(tmp, 'store-tails') };
  mkdirSync(o.cwd);
  const dir = join(tmp, 'tails-src');
  mkdirSync(join(dir, 'many'), { recursive: true });
  for (let i = 0; i < 1500; i++) writeFileSync(join(dir, 'many', `f${i}`), Buffer.alloc(3000, `file ${i} `));
  strataOk(['-q', 'store', 'import', 'many/1', packGnu(dir, join(tmp, 'many.tar'))], o);
  strataOk(['-q', 'compose', 'add', 'many/1'], o);
  const build = (n: string) => {
    const out = join(tmp, `${n}.erofs`);
    const r = strataJson<SquashJson>(['compose', 'squash', out, '--format', 'erofs', '--comp', 'lz4'], o);
    assert.is(r.sha256, sha(out));
    mustRun('fsck.erofs', [out]);
    return r;
  };
  const cold = build('t1');
  const warm = build('t2');
  assert.is(warm.segmentHits, 1);
  assert.is(warm.sha256, cold.sha256, 'placed from its segment, the same bytes');
});

Id('segments: two users building into one cache keep a segment each (named under their own secret) and each finds its own', () => {
  // One store, one block cache, two cache secrets (XDG_CACHE_HOME): staff sharing a store.
  const flags = ['--comp', 'gzip', '--block-size', '4096'];
  const as = (who: string): Workspace => ({ ...a, env: { XDG_CACHE_HOME: join(tmp, `xdg-${who}`) } });
  const first = squash(as('one'), join(tmp, 'u1.sqfs'), ...flags);
  assert.is(first.segmentHits, 0);
  const other = squash(as('two'), join(tmp, 'u2.sqfs'), ...flags);
  assert.is(other.segmentHits, 0, 'the other user cannot use the first one\'s segments');
  assert.is(other.sha256, first.sha256);
  const perLayer = [...segments(a.store).values()].map((l) => l.length);
  assert.equal(perLayer, [2, 2, 2, 2], 'a segment per layer per user');
  assert.is(squash(as('one'), join(tmp, 'u3.sqfs'), ...flags).segmentHits, 4, 'the first user finds its own');
  assert.is(squash(as('two'), join(tmp, 'u4.sqfs'), ...flags).segmentHits, 4, 'and so does the other');
});

Id.run();

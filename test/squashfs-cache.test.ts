/**
 * Byte identity and the compressed-block cache of compose/image/squashfs/writer.ts: the same
 * entries give the same sha256 with 1 or 2 workers, cold or warm cache, any addEntry order,
 * as root or as an unprivileged user (gzip and zstd); a damaged cache entry is a miss, never
 * bad output; changing one group's file recompresses only that group's blocks.
 * Images are also checked by unsquashfs so a "stable" broken image cannot pass.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, openSync, readFileSync, readSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LayerEntry } from '../store/types.js';
import { SquashfsWriter, type SquashOptions } from '../compose/image/index.js';
import { listCacheEntries, PACK_RECORD_HEADER, PACK_RECORD_LAYOUT, type CacheEntry } from '../compose/image/shared/block-cache.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { nobody, runAs } from './helpers/users.js';
import { noise } from './helpers/random.js';

interface Item {
  entry: LayerEntry;
  data?: Buffer;
  group?: string;
}

/** Half-compressible bytes: text with a seeded counter, so every block differs. */
function text(n: number, seed: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const s = `layer ${seed} line ${i} ${(i * 2654435761 + seed) >>> 0}\n`;
    parts.push(s);
    len += s.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

const BS = 8192;

/** Three layers (groups), each a directory with multi-block files and tails. */
function tree(changed?: 'L2-tail' | 'L2-block'): Item[] {
  const e = (path: string, type: LayerEntry['type'], extra: Partial<LayerEntry> = {}): LayerEntry => ({
    path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 1_650_000_000, size: 0, ...extra,
  });
  const items: Item[] = [{ entry: e('.', 'dir') }];
  for (const g of ['L1', 'L2', 'L3']) {
    const seed = Number(g[1]);
    items.push({ entry: e(g, 'dir', { uid: 100 + seed, xattrs: new Map([['trusted.layer', Buffer.from(g)]]) }) });
    const files: [string, Buffer][] = [
      ['a.txt', text(3 * BS + 100, seed)],
      ['b.bin', noise(2 * BS + 7, seed)],
      ['c.txt', text(500, seed + 10)],
      ['d.zero', Buffer.alloc(2 * BS + 3)],
    ];
    if (g === 'L2' && changed === 'L2-tail') files[2]![1] = text(501, 99);
    if (g === 'L2' && changed === 'L2-block') files[0]![1] = Buffer.concat([text(BS, 77), files[0]![1].subarray(BS)]);
    for (const [name, data] of files) {
      items.push({ entry: e(`${g}/${name}`, 'file', { size: data.length, uid: 1000 + seed, gid: 2000 }), data, group: g });
    }
    items.push({ entry: e(`${g}/link`, 'symlink', { linkname: 'a.txt', mode: 0o777 }) });
    items.push({ entry: e(`${g}/hard`, 'hardlink', { linkname: `${g}/b.bin` }) });
    items.push({ entry: e(`${g}/dev`, 'char', { devmajor: 1, devminor: 5 + seed }) });
  }
  return items;
}

async function* chunks(b: Buffer, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

/** Writes the tree; `order` permutes the non-file entries (files keep their layer order). */
async function build(items: Item[], out: string, opts: SquashOptions, order: 'forward' | 'reverse' | 'odd-even' = 'forward') {
  const w = await SquashfsWriter.create(out, opts);
  let others = items.filter((i) => i.entry.type !== 'file');
  if (order === 'reverse') others = others.reverse();
  if (order === 'odd-even') others = [...others.filter((_, i) => i % 2), ...others.filter((_, i) => !(i % 2))];
  const half = Math.floor(others.length / 2);
  for (const it of others.slice(0, half)) w.addEntry(it.entry);
  for (const it of items) {
    if (it.entry.type === 'file') await w.addFile(it.entry, chunks(it.data!, 3000 + (it.data!.length % 1000)), it.group!);
  }
  for (const it of others.slice(half)) w.addEntry(it.entry);
  return w.finish();
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

/** Damages one cached record in place: flips a byte at `at` bytes into it. */
function flipRecordByte(e: CacheEntry, at: number): void {
  const fd = openSync(e.pack, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, e.offset + at);
    b[0]! ^= 0x55;
    writeSync(fd, b, 0, 1, e.offset + at);
  } finally {
    closeSync(fd);
  }
}

// Child mode: build the tree as whatever user runs this file and print the image digest.
if (process.env.STRATA_SQ_CHILD) {
  const [out, comp] = process.env.STRATA_SQ_CHILD.split(',') as [string, SquashOptions['compressor']];
  await build(tree(), out, { compressor: comp, blockSize: BS, workers: 2 });
  process.stdout.write(sha(out));
  process.exit(0);
}

const Cache = suite('squashfs determinism and block cache');
let tmp = '';

Cache.before.each(() => {
  tmp = tempDir('strata-sqc-');
});
Cache.after.each(() => {
  removeDir(tmp);
});

for (const compressor of ['gzip', 'zstd'] as const) {
  Cache(`${compressor}: workers 1 vs 2, cold vs warm cache, entry order, non-root caller give one image`, async () => {
    const items = tree();
    const base: SquashOptions = { compressor, blockSize: BS };
    const cache = join(tmp, 'cache');
    const a = join(tmp, 'a.sqfs');
    const r1 = await build(items, a, { ...base, workers: 1 });
    assert.is(r1.cacheHits + r1.cacheMisses, 0);
    const cold = await build(items, join(tmp, 'b.sqfs'), { ...base, workers: 2, cacheDir: cache }, 'reverse');
    assert.ok(cold.cacheMisses > 0, 'cold cache misses');
    const stored = listCacheEntries(cache).length;
    assert.ok(stored > 0 && stored <= cold.cacheMisses, `${stored} cache entries for ${cold.cacheMisses} misses`);
    const warm = await build(items, join(tmp, 'c.sqfs'), { ...base, workers: 2, cacheDir: cache }, 'odd-even');
    assert.is(warm.cacheMisses, 0, 'warm cache: no misses');
    assert.is(warm.cacheHits, cold.cacheHits + cold.cacheMisses);
    const warm1 = await build(items, join(tmp, 'd.sqfs'), { ...base, workers: 1, cacheDir: cache });

    // As nobody: no root needed for root-owned entries, xattrs and devices; same bytes.
    chmodSync(tmp, 0o777);
    const e = join(tmp, 'e.sqfs');
    const self = fileURLToPath(import.meta.url);
    const loader = self.endsWith('.ts') ? ['--import', 'tsx'] : []; // from source or compiled
    const child = runAs(nobody(tmp), process.execPath, [...loader, self], {
      cwd: join(self, '..', '..'),
      env: { STRATA_SQ_CHILD: `${e},${compressor}` },
    });
    assert.is(child.code, 0, child.stderr);
    assert.is(statSync(e).uid, 65534);

    const digests = ['a', 'b', 'c', 'd', 'e'].map((n) => sha(join(tmp, `${n}.sqfs`)));
    assert.equal(new Set(digests).size, 1, digests.join('\n'));
    assert.is(child.stdout.toString(), digests[0]);

    const s = mustRun('unsquashfs', ['-s', a]).stdout.toString();
    assert.match(s, new RegExp(`Compression ${compressor}`));
    const l = mustRun('unsquashfs', ['-lln', a]).stdout.toString();
    assert.match(l, /crw-r--r-- 0\/0\s+1,\s+7 /);
    assert.match(l, /-rw-r--r-- 1002\/2000\s+16391 /);
    const ex = join(tmp, 'ex');
    mustRun('unsquashfs', ['-no-progress', '-d', ex, a]);
    assert.ok(readFileSync(join(ex, 'L3/a.txt')).equals(items.find((i) => i.entry.path === 'L3/a.txt')!.data!));
    assert.is(statSync(join(ex, 'L2/hard')).ino, statSync(join(ex, 'L2/b.bin')).ino);
    assert.match(mustRun('getfattr', ['-n', 'trusted.layer', join(ex, 'L1')]).stdout.toString(), /trusted.layer="L1"/);
  });
}

Cache('a corrupt, torn, foreign or missing cache record is a miss, output unchanged', async () => {
  const items = tree();
  const cache = join(tmp, 'cache');
  const opts: SquashOptions = { compressor: 'zstd', blockSize: BS, workers: 2, cacheDir: cache };
  const first = await build(items, join(tmp, 'a.sqfs'), opts);
  const all = listCacheEntries(cache);
  assert.is(all.length, first.cacheMisses, 'one record per compressed block');
  // Four records, four kinds of damage: the payload, the magic, the recorded digest of three
  // early compressed records, and the last record of a pack cut off (a crash mid-append).
  const [payload, magic, digest] = all.filter((e) => !e.raw);
  const torn = all.at(-1)!;
  assert.ok(![payload, magic, digest].includes(torn));
  flipRecordByte(payload!, PACK_RECORD_HEADER + payload!.payload.length - 1);
  flipRecordByte(magic!, 0);
  flipRecordByte(digest!, 60);
  truncateSync(torn.pack, torn.offset + 10);
  assert.is(listCacheEntries(cache).length, all.length - 4, 'damaged records no longer read back');
  const damaged = 4;
  const second = await build(items, join(tmp, 'b.sqfs'), opts);
  assert.is(second.cacheMisses, damaged);
  assert.is(second.cacheHits, first.cacheHits + first.cacheMisses - damaged);
  assert.is(sha(join(tmp, 'a.sqfs')), sha(join(tmp, 'b.sqfs')));
  const third = await build(items, join(tmp, 'c.sqfs'), opts);
  assert.is(third.cacheMisses, 0, 'damaged entries were rewritten');
  removeDir(cache);
  const fourth = await build(items, join(tmp, 'd.sqfs'), opts);
  assert.is(fourth.cacheHits, 0, 'cache deleted: everything recompressed');
  assert.is(sha(join(tmp, 'd.sqfs')), sha(join(tmp, 'a.sqfs')));
});

/**
 * Plants a record every structural check accepts but whose payload is another block's: a's
 * key and raw length with b's payload and b's payload digest (a's own index record removed).
 * With `secret`, the record also carries that secret's seal. `among`: which records a and b
 * are taken from (default: all).
 */
function plantSwapped(cache: string, secret?: Buffer, among: (e: CacheEntry) => boolean = () => true): void {
  const all = listCacheEntries(cache).filter(among);
  const [a, b] = all.filter((e) => !e.raw && e.payload.length < e.rawLength);
  assert.ok(a && b && !a.payload.equals(b.payload));
  assert.ok(b.payload.length < a.rawLength, 'the swapped payload fits the record');
  // Remove a's index record, then plant a new pack with a's key, a's raw length, b's payload
  // and b's payload digest: a record every structural check accepts.
  const idx = a.pack.replace(/\.pack$/, '.idx');
  const ib = readFileSync(idx);
  const keep: Buffer[] = [];
  for (let o = 0; o < ib.length; o += 48) if (ib.subarray(o, o + 32).toString('hex') !== a.key) keep.push(ib.subarray(o, o + 48));
  writeFileSync(idx, Buffer.concat(keep));
  const L = PACK_RECORD_LAYOUT;
  const head = Buffer.alloc(L.header);
  head.write(L.magic, 0, 'latin1');
  head.writeUInt32LE(0, 4);
  head.writeUInt32LE(a.rawLength, 8);
  head.writeUInt32LE(b.payload.length, 12);
  Buffer.from(a.key, 'hex').copy(head, 16);
  createHash('sha256').update(b.payload).digest().copy(head, L.payloadDigest);
  readFileSync(a.pack).copy(head, L.rawDigest, a.offset + L.rawDigest, a.offset + L.seal); // a's raw digest
  if (secret) createHmac('sha256', secret).update(head.subarray(0, L.seal)).digest().copy(head, L.seal);
  const planted = join(dirname(a.pack), 'zzzz-planted');
  writeFileSync(`${planted}.pack`, Buffer.concat([head, b.payload]));
  const rec = Buffer.alloc(48);
  Buffer.from(a.key, 'hex').copy(rec, 0);
  rec.writeUInt32LE(b.payload.length, 40);
  writeFileSync(`${planted}.idx`, rec);
  assert.ok(listCacheEntries(cache).some((e) => e.key === a.key && e.payload.equals(b.payload)), 'the planted record reads back as intact');
}

Cache('a pack record whose payload was swapped for another block\'s, digest made consistent, is a miss: same bytes as no cache', async () => {
  const items = tree();
  const cache = join(tmp, 'cache');
  const opts: SquashOptions = { compressor: 'zstd', blockSize: BS, workers: 2, cacheDir: cache };
  const noCache = await build(items, join(tmp, 'none.sqfs'), { ...opts, cacheDir: undefined });
  const first = await build(items, join(tmp, 'a.sqfs'), opts);
  plantSwapped(cache);

  const second = await build(items, join(tmp, 'b.sqfs'), opts);
  assert.is(second.cacheMisses, 1, 'the swapped record is a miss');
  assert.is(second.cacheHits, first.cacheMisses - 1);
  assert.is(sha(join(tmp, 'b.sqfs')), sha(join(tmp, 'none.sqfs')), 'same bytes as with no cache');
  assert.is(noCache.cacheHits + noCache.cacheMisses, 0);
  const third = await build(items, join(tmp, 'c.sqfs'), opts);
  assert.is(third.cacheMisses, 0, 'the block was cached again, correctly');
  assert.is(sha(join(tmp, 'c.sqfs')), sha(join(tmp, 'none.sqfs')));
});

Cache('records sealed with the build\'s secret are used as they are; under another secret or none they are checked', async () => {
  const items = tree();
  const cache = join(tmp, 'cache');
  const opts: SquashOptions = { compressor: 'zstd', blockSize: BS, workers: 2, cacheDir: cache };
  const mine = randomBytes(32);
  await build(items, join(tmp, 'none.sqfs'), { ...opts, cacheDir: undefined });
  const first = await build(items, join(tmp, 'a.sqfs'), { ...opts, cacheSecret: mine });
  assert.is(sha(join(tmp, 'a.sqfs')), sha(join(tmp, 'none.sqfs')));
  // A swapped record carrying this user's seal is taken without decompressing it: the seal,
  // not a check of the payload, is what lets it through (so only this user may hold the secret).
  plantSwapped(cache, mine);
  const trusted = await build(items, join(tmp, 'b.sqfs'), { ...opts, cacheSecret: mine });
  assert.is(trusted.cacheMisses, 0);
  assert.is.not(sha(join(tmp, 'b.sqfs')), sha(join(tmp, 'none.sqfs')), 'the sealed record was used as it is');
  // Under another secret the planted record's seal is not one it trusts: decompressed, found
  // wrong, a miss, and compressed again (that record sealed with the other secret).
  const other = await build(items, join(tmp, 'c.sqfs'), { ...opts, cacheSecret: randomBytes(32) });
  assert.is(other.cacheMisses, 1);
  assert.is(sha(join(tmp, 'c.sqfs')), sha(join(tmp, 'none.sqfs')), 'another secret: same bytes as with no cache');
  // Without a secret every record is checked: all good now, all hits.
  const none = await build(items, join(tmp, 'd.sqfs'), opts);
  assert.is(none.cacheMisses, 0);
  assert.is(sha(join(tmp, 'd.sqfs')), sha(join(tmp, 'none.sqfs')), 'no secret: same bytes as with no cache');
});

Cache('the tables through the cache: a re-build compresses none of their blocks; a damaged or swapped record is a miss, the bytes unchanged; restricted ones are the group\'s', async () => {
  const items = tree();
  const cache = join(tmp, 'cache');
  // Many entries, so that the inode and directory tables fill several metadata blocks.
  for (let i = 0; i < 400; i++) items.push({ entry: { path: `L3/many-${String(i).padStart(3, '0')}`, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1_650_000_000, size: 0, linkname: 'a.txt' } });
  const opts: SquashOptions = { compressor: 'zstd', blockSize: BS, workers: 2, cacheDir: cache, tables: { tag: 'tables' } };
  await build(items, join(tmp, 'none.sqfs'), { ...opts, cacheDir: undefined });
  const none = sha(join(tmp, 'none.sqfs'));
  const tables = () => listCacheEntries(cache).filter((e) => e.tag === 'tables');
  await build(items, join(tmp, 'a.sqfs'), opts);
  const filed = tables();
  assert.ok(filed.length >= 3, `table blocks cached (${filed.length})`);
  assert.is(sha(join(tmp, 'a.sqfs')), none, 'cold: the bytes of a build without a cache');

  await build(items, join(tmp, 'b.sqfs'), opts);
  assert.is(tables().length, filed.length, 'the same tables again: no block compressed, none filed');
  assert.is(sha(join(tmp, 'b.sqfs')), none);

  // A payload damaged: that block is compressed and filed again, the rest found.
  const hit = filed.find((e) => !e.raw)!;
  flipRecordByte(hit, PACK_RECORD_HEADER + hit.payload.length - 1);
  await build(items, join(tmp, 'c.sqfs'), opts);
  assert.is(sha(join(tmp, 'c.sqfs')), none, 'a damaged table record changes no byte');
  assert.is(tables().length, filed.length, 'the damaged record replaced by one new record');
  // Another table block's payload under a block's key, its digest made consistent: decompressed, found wrong, a miss.
  plantSwapped(cache, undefined, (e) => e.tag === 'tables');
  await build(items, join(tmp, 'd.sqfs'), opts);
  assert.is(sha(join(tmp, 'd.sqfs')), none, 'a swapped table record changes no byte');

  // Tables of restricted content: their packs are the group's, no access for others.
  const gid = 4242;
  await build(items, join(tmp, 'e.sqfs'), { ...opts, cacheDir: join(tmp, 'cache2'), tables: { tag: 'tables', gid } });
  const packs = listCacheEntries(join(tmp, 'cache2')).filter((e) => e.tag === 'tables').map((e) => e.pack);
  assert.ok(packs.length > 0);
  for (const p of new Set(packs)) {
    const st = statSync(p);
    assert.is(st.gid, gid, `${p}: group`);
    assert.is(st.mode & 0o007, 0, `${p}: mode ${(st.mode & 0o777).toString(8)}`);
  }
  assert.is(sha(join(tmp, 'e.sqfs')), none);
});

Cache('changing one layer recompresses only that layer: fragments are packed per group', async () => {
  const cache = join(tmp, 'cache');
  const opts: SquashOptions = { compressor: 'gzip', blockSize: BS, workers: 2, cacheDir: cache };
  await build(tree(), join(tmp, 'a.sqfs'), opts);
  const tail = await build(tree('L2-tail'), join(tmp, 'b.sqfs'), opts);
  assert.is(tail.cacheMisses, 1, 'only L2 fragment block');
  const block = await build(tree('L2-block'), join(tmp, 'c.sqfs'), opts);
  assert.is(block.cacheMisses, 1, 'only the changed data block of L2/a.txt');
  assert.is.not(sha(join(tmp, 'a.sqfs')), sha(join(tmp, 'b.sqfs')));
  const ex = join(tmp, 'ex');
  mustRun('unsquashfs', ['-no-progress', '-d', ex, join(tmp, 'b.sqfs')]);
  assert.ok(readFileSync(join(ex, 'L2/c.txt')).equals(text(501, 99)));
});

Cache.run();

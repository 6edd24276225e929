/**
 * The block cache's keys by position (compose/image/shared/block-cache.ts): a block found by
 * where it sits in a layer is used as it is, digest included, only when this user's secret
 * sealed the record; any other record at that key must decompress to the block in hand, and
 * one that does not (another block's payload and digest, sealed by another secret or by
 * none) is a miss: the block is compressed again and its own digest computed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BlockCache } from '../compose/image/shared/block-cache.js';
import { makeCodec } from '../compose/image/shared/codecs.js';
import { compressCached } from '../compose/image/shared/compress-block.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('block cache: keys by position');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-bcache-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const codec = makeCodec({ name: 'gzip', level: 6 });
const NS = 'strata-test-block\0gzip\0';
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** A compressible 4 KiB block, different for each seed. */
const block = (seed: number) => Buffer.from(Array.from({ length: 4096 }, (_, i) => `${seed}:${i % 97} `).join('').slice(0, 4096));
const A = block(1);
const B = block(2);
const mine = randomBytes(32);
const place = { tag: 'bafylayer', at: 8192 };

/** A cache holding, at A's position, B's compressed payload and B's digest, sealed by `secret` (or by none). */
function forged(dir: string, secret?: Buffer): string {
  const cacheDir = join(dir, 'forged');
  const c = new BlockCache(cacheDir, NS, secret);
  c.put(c.positionKey(place.tag, place.at), A.length, { raw: false, data: codec.compress(B) }, { tag: place.tag }, createHash('sha256').update(B).digest());
  c.close();
  return cacheDir;
}

test('a record sealed by this user: found by position, its digest given, nothing hashed again', ({ dir }) => {
  const c = new BlockCache(dir, NS, mine);
  const cold = compressCached(codec, c, A, place);
  assert.is(cold.cache, 'miss');
  assert.is(hex(cold.digest), sha(A));
  const warm = compressCached(codec, c, A, place);
  assert.is(warm.cache, 'hit');
  assert.is(hex(warm.digest), sha(A));
  assert.ok(codec.decompress(warm.data, A.length).equals(A));
  // Another position (or layer) is another key, but the record is indexed by content too: the
  // same bytes elsewhere (the next version of the layer) are found once hashed.
  const moved = compressCached(codec, c, A, { tag: 'bafy-other-layer', at: 0 });
  assert.is(moved.cache, 'hit');
  assert.is(hex(moved.digest), sha(A));
  assert.ok(codec.decompress(moved.data, A.length).equals(A));
  assert.is(compressCached(codec, c, B, { ...place, at: 0 }).cache, 'miss', 'other bytes are not found by content');
  c.close();
});

test('a record by position whose raw digest lies is not found by content (unless this user sealed it)', ({ dir }) => {
  const other = new BlockCache(dir, NS, randomBytes(32));
  // A's payload, filed by position with B's digest: indexed under B's content key.
  other.put(other.positionKey(place.tag, place.at), A.length, { raw: false, data: codec.compress(A) }, place, createHash('sha256').update(B).digest());
  other.close();
  const c = new BlockCache(dir, NS, mine);
  const r = compressCached(codec, c, B, { tag: 'bafy-next-version', at: 0 });
  assert.is(r.cache, 'miss', 'the payload does not decompress to B');
  assert.ok(codec.decompress(r.data, B.length).equals(B), 'B\'s own bytes');
  c.close();
});

for (const [what, secret] of [['sealed by another secret', randomBytes(32)], ['not sealed', undefined]] as const) {
  test(`another block's payload at the position, ${what}: a miss, the block's own bytes and digest`, ({ dir }) => {
    const c = new BlockCache(forged(dir, secret), NS, mine);
    const r = compressCached(codec, c, A, place);
    assert.is(r.cache, 'miss');
    assert.is(hex(r.digest), sha(A));
    assert.ok(codec.decompress(r.data, A.length).equals(A));
    // The good record written in its place is used next time.
    const again = compressCached(codec, c, A, place);
    assert.is(again.cache, 'hit');
    assert.ok(codec.decompress(again.data, A.length).equals(A));
    c.close();
  });
}

test('a faithful record this user did not seal is used, with the digest computed here', ({ dir }) => {
  const other = new BlockCache(dir, NS, randomBytes(32));
  const key = other.positionKey(place.tag, place.at);
  // Faithful payload, but a lying raw digest: only a seal makes the recorded digest count.
  other.put(key, A.length, { raw: false, data: codec.compress(A) }, { tag: place.tag }, createHash('sha256').update(B).digest());
  other.close();
  const c = new BlockCache(dir, NS, mine);
  const r = compressCached(codec, c, A, place);
  assert.is(r.cache, 'hit');
  assert.is(hex(r.digest), sha(A));
  c.close();
});

test.run();

// The index a cache loads (RecordIndex): records stay bytes, found through slots by a key's
// first four bytes. Keys here are made to share those bytes in groups, so each lookup walks a
// chain of other keys' records; enough records to grow the table past its first size.
const index = suite<{ dir: string }>('block cache: the index');
index.before.each((ctx) => {
  ctx.dir = tempDir('strata-bcache-index-');
});
index.after.each((ctx) => removeDir(ctx.dir));

const N = 5000;
/** Key i: its first four bytes one of seven values, the rest i's own. */
const keyOf = (i: number) => {
  const b = Buffer.alloc(32, 0xa5);
  b.writeUInt32LE(i % 7, 0);
  b.writeUInt32LE(i, 4);
  return b.toString('hex');
};
const digestOf = (i: number) => createHash('sha256').update(`block ${i}`).digest();
const payload = (c: BlockCache, i: number) => c.get(keyOf(i), 64, () => true)?.data.toString();

index('every key is found with its latest record, in the cache that wrote it and after a reopen', ({ dir }) => {
  const c = new BlockCache(dir, NS);
  const at = { tag: 'bafylayer' };
  for (let i = 0; i < N; i++) c.put(keyOf(i), 64, { raw: false, data: Buffer.from(`first ${i}`) }, at, digestOf(i));
  for (let i = 0; i < N; i += 3) c.put(keyOf(i), 64, { raw: false, data: Buffer.from(`second ${i}`) }, at, digestOf(i));
  const check = (cache: BlockCache, what: string) => {
    for (let i = 0; i < N; i++) assert.is(payload(cache, i), i % 3 === 0 ? `second ${i}` : `first ${i}`, `${what}: key ${i}`);
    assert.is(payload(cache, N + 1), undefined, `${what}: a key never put`);
  };
  check(c, 'the writer');
  c.close();
  const again = new BlockCache(dir, NS);
  check(again, 'reopened');
  again.close();
});

index('a refused record is passed over for the key’s earlier one, and not offered again', ({ dir }) => {
  const c = new BlockCache(dir, NS);
  const at = { tag: 'bafylayer' };
  for (let i = 0; i < 30; i++) c.put(keyOf(i), 64, { raw: false, data: Buffer.from(`first ${i}`) }, at, digestOf(i));
  c.put(keyOf(3), 64, { raw: false, data: Buffer.from('second 3') }, at, digestOf(3));
  c.close();
  const again = new BlockCache(dir, NS);
  const offered: string[] = [];
  const got = again.get(keyOf(3), 64, (b) => {
    offered.push(b.data.toString());
    return b.data.toString().startsWith('first');
  });
  assert.equal(offered, ['second 3', 'first 3']);
  assert.is(got?.data.toString(), 'first 3');
  assert.is(payload(again, 3), 'first 3', 'the refused record stays forgotten');
  assert.is(again.get(keyOf(10), 64, () => false), undefined, 'every record of a key refused');
  assert.is(payload(again, 10), undefined, 'and then forgotten');
  // Another key of the same chain is untouched; a put after the refusals is found.
  assert.is(payload(again, 17), 'first 17');
  again.put(keyOf(10), 64, { raw: false, data: Buffer.from('third 10') }, at, digestOf(10));
  assert.is(payload(again, 10), 'third 10');
  again.close();
});

index('an index record claiming a payload as long as its block is passed over unread, nothing allocated for it', ({ dir }) => {
  const c = new BlockCache(dir, NS);
  const key = keyOf(1);
  c.put(key, 4096, { raw: false, data: Buffer.from('the real one') }, { tag: 'bafylayer' }, digestOf(1));
  c.close();
  // A later record of the same key in the index, naming 2 GiB at the start of the pack.
  const tagDirs = readdirSync(join(dir, 'image-blocks'));
  const nsDir = join(dir, 'image-blocks', tagDirs[0]!, readdirSync(join(dir, 'image-blocks', tagDirs[0]!))[0]!);
  const idx = readdirSync(nsDir).find((n) => n.endsWith('.idx'))!;
  const lie = Buffer.alloc(48);
  Buffer.from(key, 'hex').copy(lie, 0);
  lie.writeUInt32LE(2 ** 31 - 1, 40);
  appendFileSync(join(nsDir, idx), lie);
  const again = new BlockCache(dir, NS);
  const before = process.memoryUsage().arrayBuffers;
  const got = again.get(key, 4096, () => true);
  const grew = process.memoryUsage().arrayBuffers - before;
  assert.is(got?.data.toString(), 'the real one');
  assert.ok(grew < 64 * 2 ** 20, `a lookup allocated ${grew} bytes`);
  again.close();
});

index.run();

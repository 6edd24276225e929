/**
 * native/sha256.ts: a stream's digest is the digest of its bytes whatever the chunking, the
 * stream's size and size hint (hashed here, or on libuv's pool through the process's slots),
 * interleaving with other streams, a producer that never waits (the slots run out: buffers of
 * its own), more streams than slots each holding one half filled, and the caller reusing its
 * buffer right after update(); buffers handed over without a copy (updateOwned) are hashed in
 * order and released once hashed. abort() frees what the stream held. The addon's stream calls
 * refuse to be used out of order, or on an object of another kind (an extraction session).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { StreamHash, sha256Short } from '../native/sha256.js';
import { addon } from '../native/binding.js';
import { noise, seeded } from './helpers/random.js';

const test = suite('sha256 off the main thread');
const want = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** `data` cut into chunks of random sizes up to `max`, each passed through one reused buffer. */
async function hashChunked(data: Buffer, max: number, seed: number, wait: boolean, sizeHint?: number): Promise<string> {
  const rnd = seeded(seed);
  const h = new StreamHash(sizeHint);
  const scratch = Buffer.alloc(max);
  for (let off = 0; off < data.length; ) {
    const n = Math.min(data.length - off, 1 + Math.floor(rnd() * max));
    data.copy(scratch, 0, off, off + n);
    h.update(scratch.subarray(0, n));
    scratch.fill(0xa5); // the caller's buffer changes at once: the hash must have copied
    off += n;
    if (wait) await h.backlog();
  }
  return h.digest();
}

for (const [size, max] of [[0, 1], [1, 1], [1000, 7], [1 << 20, 1 << 20], [(1 << 20) + 1, 4096], [5_000_003, 300_000], [9 << 20, 3 << 20]] as const) {
  test(`${size} bytes in chunks up to ${max}: the same digest, waiting on the backlog or not`, async () => {
    const data = noise(size, size + 1);
    assert.is(await hashChunked(data, max, 1, true), want(data));
    assert.is(await hashChunked(data, max, 2, false), want(data));
    assert.is(await hashChunked(data, max, 3, true, size), want(data), 'with its size as the hint');
  });
}

test('a producer that never waits runs past the slots and still gets the right digest', async () => {
  const data = noise(40 << 20, 9);
  const h = new StreamHash();
  for (let off = 0; off < data.length; off += 1 << 20) h.update(data.subarray(off, off + (1 << 20)));
  assert.is(await h.digest(), want(data));
});

test('streams interleaved on the pool keep their own bytes; an aborted one frees its slots', async () => {
  const a = noise(6 << 20, 3);
  const b = noise(5 << 20, 4);
  const ha = new StreamHash();
  const hb = new StreamHash();
  const dropped = new StreamHash();
  for (let i = 0; i < 6; i++) {
    ha.update(a.subarray(i << 20, (i + 1) << 20));
    if (i < 5) hb.update(b.subarray(i << 20, (i + 1) << 20));
    dropped.update(noise(700_000, 10 + i));
    await ha.backlog();
  }
  dropped.abort();
  dropped.abort();
  const [da, db] = await Promise.all([ha.digest(), hb.digest()]);
  assert.is(da, want(a));
  assert.is(db, want(b));
  // Every slot is free again: a long stream that waits on the backlog never needs a copy.
  const c = noise(20 << 20, 5);
  assert.is(await hashChunked(c, 1 << 20, 6, true), want(c));
});

test('updateOwned: the caller\'s buffers hashed where they are, in order with copied chunks; each released once hashed', async () => {
  for (const hint of [undefined, 1 << 20]) {
    const data = noise(9 << 20, 77);
    const h = new StreamHash(hint);
    const released: number[] = [];
    const owned: Buffer[] = [];
    let off = 0;
    for (let i = 0; off < data.length; i++) {
      const n = Math.min(data.length - off, (1 << 20) + i * 4099);
      if (i % 3 === 2) h.update(data.subarray(off, off + n));
      else {
        const b = Buffer.from(data.subarray(off, off + n));
        owned.push(b);
        h.updateOwned(b, () => {
          released.push(i);
          b.fill(0x5a); // the buffer is the caller's again: changing it now must not change the digest
        });
      }
      off += n;
      await h.backlog();
    }
    assert.is(await h.digest(), want(data), `hint ${hint}`);
    assert.is(released.length, owned.length, 'every owned buffer released');
    assert.equal(released, [...released].sort((a, b) => a - b), 'released in order');
  }
});

test('more streams than slots, each holding a slot half filled, never wait on one another', async () => {
  const n = 12;
  const datas = Array.from({ length: n }, (_, i) => noise(3 << 19, 40 + i)); // 1.5 MiB each
  const hs = datas.map(() => new StreamHash());
  // Every stream takes a slot and leaves it half filled before any goes on.
  for (let i = 0; i < n; i++) {
    hs[i]!.update(datas[i]!.subarray(0, 1 << 19));
    await hs[i]!.backlog();
  }
  for (let i = 0; i < n; i++) {
    hs[i]!.update(datas[i]!.subarray(1 << 19));
    await hs[i]!.backlog();
  }
  const got = await Promise.all(hs.map((h) => h.digest()));
  got.forEach((d, i) => assert.is(d, want(datas[i]!), `stream ${i}`));
});

test('the addon\'s stream calls: one update at a time, one digest, a Uint8Array only', async () => {
  const a = addon();
  const s = a.hashOpen();
  const first = a.hashUpdate(s, Buffer.from('ab'));
  assert.throws(() => a.hashUpdate(s, Buffer.from('c')), /update outstanding/);
  assert.throws(() => a.hashDigest(s), /update outstanding/);
  await first;
  await a.hashUpdate(s, Buffer.from('c'));
  assert.throws(() => a.hashUpdate(s, 'c' as unknown as Uint8Array), /hashUpdate\(stream/);
  assert.throws(() => a.hashUpdate({}, Buffer.from('c')), /hashUpdate\(stream/);
  assert.is(a.hashDigest(s), want(Buffer.from('abc')));
  assert.throws(() => a.hashDigest(s), /already taken/);
  assert.throws(() => a.hashUpdate(s, Buffer.from('d')), /already taken/);
});

test('a hash stream and an extraction session are not taken for one another', async () => {
  const a = addon();
  const stream = a.hashOpen();
  assert.throws(() => a.extractRun(stream, Buffer.alloc(0), 0, true), /not an extraction session/);
  const blob = openSync('/dev/null', 'r');
  const root = openSync(tmpdir(), 'r');
  try {
    const session = a.extractOpen(blob, root);
    try {
      assert.throws(() => a.hashUpdate(session, Buffer.from('x')), /hashUpdate\(stream/);
      assert.throws(() => a.hashDigest(session), /hashDigest\(stream/);
    } finally {
      a.extractClose(session);
    }
  } finally {
    closeSync(blob);
    closeSync(root);
  }
  assert.is(a.hashDigest(stream), want(Buffer.alloc(0)));
});

test('sha256Short: the digest of every length, through the addon; digests kept stay as they were', () => {
  const kept: Array<[Buffer, string]> = [];
  for (let n = 0; n < 1200; n++) {
    const b = noise(n, n + 7);
    const d = sha256Short(b);
    assert.is(d.length, 32);
    assert.is(d.toString('hex'), want(b), `${n} bytes`);
    kept.push([d, want(b)]);
  }
  // 1,200 digests fill more than one slab: none was written over.
  for (const [d, hex] of kept) assert.is(d.toString('hex'), hex);
  const out = Buffer.alloc(32);
  addon().sha256Into(Buffer.from('abc'), out);
  assert.is(out.toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.throws(() => addon().sha256Into(Buffer.from('abc'), Buffer.alloc(31)), /sha256Into\(data/);
});

test('digest is given once; update after it is a programming error', async () => {
  const h = new StreamHash();
  h.update(Buffer.from('abc'));
  assert.is(await h.digest(), want(Buffer.from('abc')));
  assert.throws(() => h.update(Buffer.from('x')), /after digest/);
  await h.digest().then(
    () => assert.unreachable('a second digest'),
    (e: Error) => assert.match(e.message, /twice/),
  );
  h.abort();
});

test.run();

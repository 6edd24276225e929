/**
 * strata's lz4 block compressor (compose/image/shared/lz4.ts): its bytes are pinned, because
 * `strata-lz4-1` names them in cache keys and EROFS images rebuilt from a lock must not change
 * with a faster implementation. The digest below is the output of the first implementation
 * (the byte-at-a-time parse) over this corpus; every later one must give the same bytes, or a
 * new LZ4_VERSION. Also: every output decodes back, and is an exact-size buffer of its own
 * (what the worker pool can transfer without copying).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { LZ4_VERSION, lz4Compress, lz4Decompress } from '../compose/image/shared/lz4.js';
import { noise, seeded } from './helpers/random.js';

const PINNED = 'c93071bfe82313929d63cba9d66a0c3c923afcf7914803c353bb7d9231cc68d3';

/** Zeros, noise, text-like runs, repeats beyond the 64 KiB window, and text with noise in it, at the sizes around lz4's limits. */
function corpus(): Buffer[] {
  const rand = seeded(15);
  const words = ['lib', 'usr', 'openmpi', '.so.40', 'x86_64-linux-gnu', '\0\0\0\0', 'ELF', 'mpi_', '/', '\n', 'GLIBC_2.34', '        '];
  const text = (n: number) => {
    const parts: string[] = [];
    for (let len = 0; len < n; ) {
      const w = words[Math.floor(rand() * words.length)]!;
      parts.push(w);
      len += w.length;
    }
    return Buffer.from(parts.join('')).subarray(0, n);
  };
  const out: Buffer[] = [];
  for (const n of [0, 1, 4, 11, 12, 13, 16, 17, 31, 32, 33, 100, 4095, 4096, 65535, 65536, 65537, 131072]) {
    out.push(Buffer.alloc(n), noise(n, n + 1), text(n));
    const far = noise(70_000, n);
    const rep = Buffer.alloc(n);
    for (let i = 0; i < n; i++) rep[i] = far[i % 70_000]!;
    out.push(rep);
    const mixed = text(n);
    for (let i = 0; i + 64 < n; i += 64 + Math.floor(rand() * 512)) noise(Math.floor(rand() * 64), i).copy(mixed, i);
    out.push(mixed);
  }
  return out;
}

const test = suite('lz4 block compressor');

test(`the bytes ${LZ4_VERSION} names are unchanged`, () => {
  const h = createHash('sha256');
  for (const b of corpus()) h.update(lz4Compress(b));
  assert.is(h.digest('hex'), PINNED);
});

test('every output decodes to its input and owns its memory', () => {
  for (const b of corpus()) {
    const c = lz4Compress(b);
    assert.ok(lz4Decompress(c, b.length).equals(b), `round trip of ${b.length} bytes`);
    assert.is(c.byteOffset, 0);
    assert.is(c.buffer.byteLength, c.length, 'exact size, not a view of a larger buffer');
  }
});

test.run();

/**
 * The images' lz4 compressor (the vendored liblz4, native/lz4.ts) and strata's LZ4 decoder
 * (compose/image/shared/lz4.ts): every block decodes back with strata's decoder and with the
 * system's liblz4 (Python's lz4 module), the bytes are the same in a worker thread and pinned
 * for the vendored version and its match-table setting (the cache key names both), outputs are
 * exact-size buffers of their own (what the worker pool can transfer without copying), and bad
 * arguments are refused.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { lz4BlockVersion, lz4Compress, lz4Decompress } from '../compose/image/shared/lz4.js';
import { testIf } from './helpers/probe.js';
import { noise, seeded } from './helpers/random.js';

/**
 * liblz4 1.9.4 at LZ4_MEMORY_USAGE 16 over the corpus below. Checked when it was pinned
 * against a plain `gcc -O0` build of the vendored lz4.c (LZ4_compress_fast, acceleration 1)
 * over the same corpus: the same digest (and the same bytes as an -O2 build on the bench's
 * base.tar in 128 KiB blocks). A change means every lz4 image and cache key changes with it
 * (spec/decisions.md, Images).
 */
const PINNED = 'b1e1362936899ef4e408ae166ce83447647e4e3e50869a1567a4ae39f0469a6c';

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

/** A Python with the lz4 module (Debian's python3-lz4 binds the system liblz4), or undefined. */
function pythonWithLz4(): string | undefined {
  for (const py of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(py, ['-c', 'import lz4.block'], { stdio: 'ignore' }).status === 0) return py;
  }
  return undefined;
}
const PY = pythonWithLz4();

const test = suite('lz4 block compressor');

test('every output decodes to its input with strata’s decoder, and owns its memory', () => {
  for (const b of corpus()) {
    const c = lz4Compress(b);
    assert.ok(lz4Decompress(c, b.length).equals(b), `round trip of ${b.length} bytes`);
    assert.is(c.byteOffset, 0);
    assert.is(c.buffer.byteLength, c.length, 'exact size, not a view of a larger buffer');
  }
  const text = corpus()[corpus().length - 3]!;
  assert.ok(lz4Compress(text).length < text.length / 2, 'text-like input compresses');
});

testIf(test, { check: () => (PY ? undefined : 'no python3 with the lz4 module (python3-lz4)') }, 'the system liblz4 decodes every output to its input', () => {
  // One process for the whole corpus: [u32 raw length, u32 block length, block]… in, the
  // decoded blocks concatenated out.
  const blocks = corpus();
  const input = Buffer.concat(
    blocks.map((b) => {
      const c = lz4Compress(b);
      const head = Buffer.alloc(8);
      head.writeUInt32LE(b.length, 0);
      head.writeUInt32LE(c.length, 4);
      return Buffer.concat([head, c]);
    }),
  );
  const script = `
import sys, struct, lz4.block
data = sys.stdin.buffer.read(); out = sys.stdout.buffer; i = 0
while i < len(data):
    n, m = struct.unpack_from('<II', data, i); i += 8
    out.write(lz4.block.decompress(data[i:i + m], uncompressed_size=n) if n else b''); i += m
`;
  const r = spawnSync(PY!, ['-c', script], { input, maxBuffer: 1 << 26 });
  assert.is(r.status, 0, `python3 lz4.block.decompress: ${r.stderr?.toString()}`);
  assert.ok(r.stdout.equals(Buffer.concat(blocks)), 'the system liblz4 decodes the same bytes');
});

test('the bytes are the same in a worker thread, and pinned for the vendored version', async () => {
  const blocks = corpus();
  const h = createHash('sha256');
  for (const b of blocks) h.update(lz4Compress(b));
  const main = h.digest('hex');
  const addonPath = createRequire(import.meta.url).resolve('../../build/Release/strata_native.node');
  const inWorker = await new Promise<string>((resolve, reject) => {
    const w = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const { createHash } = require('node:crypto');
       const a = require(workerData.addonPath);
       const h = createHash('sha256');
       for (const b of workerData.blocks) h.update(a.lz4Compress(b));
       parentPort.postMessage(h.digest('hex'));`,
      { eval: true, workerData: { addonPath, blocks } },
    );
    w.once('message', resolve);
    w.once('error', reject);
  });
  assert.is(inWorker, main, 'a worker thread (its own match table) gives the same bytes');
  assert.is(lz4BlockVersion(), 'liblz4-1.9.4-m16');
  assert.is(main, PINNED);
});

test('bad arguments are refused', () => {
  assert.throws(() => lz4Compress('text' as unknown as Uint8Array), (e: Error) => e instanceof TypeError);
  assert.throws(() => lz4Compress(new Uint16Array(4) as unknown as Uint8Array), (e: Error) => e instanceof TypeError);
});

test.run();

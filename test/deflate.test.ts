/**
 * native/deflate.ts, the images' gzip compressor (the vendored libdeflate): its zlib streams
 * decode with Node's zlib and with the system's (Python's zlib module, the library mksquashfs
 * and the kernel's zlib follow), the bytes depend only on the level (same in a worker thread,
 * pinned for the vendored version), and bad arguments are refused.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';
import { libdeflateVersion, zlibCompress } from '../native/deflate.js';
import { noise, seeded } from './helpers/random.js';

const test = suite('deflate');

/** `n` bytes of text-like data: words from a small vocabulary, seeded. */
function words(n: number, seed: number): Buffer {
  const vocab = ['mpi', 'openmpi', 'lib', 'share', 'usr', 'include', '.so.40', 'hwloc', 'pmix', '\n', ' ', '/', 'ucx', '4.1.4'];
  const r = seeded(seed);
  let s = '';
  while (s.length < n) s += vocab[Math.floor(r() * vocab.length)];
  return Buffer.from(s.slice(0, n));
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** What the system's zlib (through Python) inflates `z` to. */
function systemInflate(z: Buffer): Buffer {
  const r = spawnSync('python3', ['-c', 'import sys, zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))'], { input: z, maxBuffer: 1 << 26 });
  assert.is(r.status, 0, `python3 zlib.decompress: ${r.stderr?.toString()}`);
  return r.stdout;
}

test('every level gives a zlib stream that Node and the system zlib inflate to the input', () => {
  const text = words(300_000, 1);
  const mixed = Buffer.concat([words(70_000, 2), noise(60_000, 3)]);
  for (const input of [text, mixed, Buffer.alloc(131072), Buffer.alloc(0)]) {
    for (const level of [0, 1, 6, 9, 12]) {
      const z = zlibCompress(input, level);
      assert.ok(zlib.inflateSync(z).equals(input), `level ${level}, ${input.length} bytes: node:zlib`);
      if (level === 6) assert.ok(systemInflate(z).equals(input), `level 6, ${input.length} bytes: system zlib`);
    }
  }
  assert.ok(zlibCompress(text, 9).length < zlibCompress(text, 1).length * 0.95, 'higher levels compress harder');
  const n = noise(131072, 4);
  assert.ok(zlibCompress(n, 6).length > n.length, 'incompressible input is still compressed whole (the caller stores it raw)');
});

test('the bytes depend only on the level: repeated, in a worker thread, and pinned for the vendored version', async () => {
  const input = Buffer.concat([words(200_000, 5), noise(20_000, 6), words(50_000, 7)]);
  const main = zlibCompress(input, 6);
  assert.ok(zlibCompress(input, 6).equals(main), 'repeated');
  const addonPath = createRequire(import.meta.url).resolve('../../build/Release/strata_native.node');
  const inWorker = await new Promise<Buffer>((resolve, reject) => {
    const w = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const a = require(workerData.addonPath);
       parentPort.postMessage(a.zlibCompress(workerData.input, 6));`,
      { eval: true, workerData: { addonPath, input } },
    );
    w.once('message', (m: Uint8Array) => resolve(Buffer.from(m)));
    w.once('error', reject);
  });
  assert.ok(inWorker.equals(main), 'a worker thread (its own compressor) gives the same bytes');
  // libdeflate 1.14's output for this input. A change means the vendored library's bytes
  // changed: every gzip image and cache key changes with it (spec/decisions.md, Images).
  assert.is(libdeflateVersion(), '1.14');
  assert.is(sha(main), PINNED_LEVEL6);
});

test('bad arguments are refused', () => {
  assert.throws(() => zlibCompress('text' as unknown as Uint8Array, 6), (e: Error) => e instanceof TypeError);
  assert.throws(() => zlibCompress(Buffer.alloc(1), 13), (e: Error) => e instanceof RangeError);
  assert.throws(() => zlibCompress(Buffer.alloc(1), -1), (e: Error) => e instanceof RangeError);
});

const PINNED_LEVEL6 = 'e3be053bd23d3e7fd261178094f40a3d9f20867731361734616da23580832f7a';

test.run();

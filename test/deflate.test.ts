/**
 * native/deflate.ts, the images' gzip compressor and decompressor (the vendored libdeflate):
 * its zlib streams decode with Node's zlib and with the system's (Python's zlib module, the
 * library mksquashfs and the kernel's zlib follow), the bytes depend only on the level (same
 * in a worker thread, pinned for the vendored version); it inflates what those zlibs make,
 * refuses damaged streams and ones that need more room than given without writing past it,
 * and bad arguments are refused.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';
import { libdeflateVersion, zlibCompress, zlibDecompress } from '../native/deflate.js';
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

/** What the system's zlib (through Python) deflates `raw` to at `level`. */
function systemDeflate(raw: Buffer, level: number): Buffer {
  const r = spawnSync('python3', ['-c', `import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), ${level}))`], { input: raw, maxBuffer: 1 << 26 });
  assert.is(r.status, 0, `python3 zlib.compress: ${r.stderr?.toString()}`);
  return r.stdout;
}

test('zlibDecompress inflates the streams of libdeflate, Node and the system zlib, and nothing past them', () => {
  const mixed = Buffer.concat([words(70_000, 8), noise(50_000, 9), Buffer.alloc(11_072)]);
  for (const input of [mixed, words(8192, 10), Buffer.alloc(131072), Buffer.alloc(0)]) {
    for (const z of [zlibCompress(input, 6), zlibCompress(input, 12), zlib.deflateSync(input), systemDeflate(input, 9)]) {
      const dst = Buffer.alloc(input.length);
      assert.is(zlibDecompress(dst, z), input.length);
      assert.ok(dst.equals(input), `${input.length} bytes`);
      // Bytes after the stream's end are not part of it (node:zlib's inflate ignores them too).
      assert.is(zlibDecompress(Buffer.alloc(input.length + 10), Buffer.concat([z, Buffer.from('after')])), input.length);
    }
  }
});

test('zlibDecompress refuses damaged streams and ones that need more room, writing nothing past its room', () => {
  const input = Buffer.concat([words(60_000, 11), noise(40_000, 12)]);
  const z = zlibCompress(input, 6);
  // Room for all but the last byte, inside a larger buffer whose tail must stay as it is.
  const whole = Buffer.alloc(input.length + 4096, 0xa5);
  assert.throws(() => zlibDecompress(whole.subarray(0, input.length - 1), z), /past the room/);
  assert.ok(whole.subarray(input.length - 1).every((b) => b === 0xa5), 'nothing written past the room');
  assert.throws(() => zlibDecompress(Buffer.alloc(input.length), z.subarray(0, z.length - 5)), /invalid zlib data/);
  const flipped = Buffer.from(z);
  flipped[z.length >> 1] ^= 0xff;
  assert.throws(() => zlibDecompress(Buffer.alloc(input.length * 2), flipped), /invalid zlib data/);
  assert.throws(() => zlibDecompress(Buffer.alloc(16), Buffer.from('not a zlib stream')), /invalid zlib data/);
  assert.throws(() => zlibDecompress(Buffer.alloc(16), Buffer.alloc(0)), /invalid zlib data/);
});

test('bad arguments are refused', () => {
  assert.throws(() => zlibCompress('text' as unknown as Uint8Array, 6), (e: Error) => e instanceof TypeError);
  assert.throws(() => zlibCompress(Buffer.alloc(1), 13), (e: Error) => e instanceof RangeError);
  assert.throws(() => zlibCompress(Buffer.alloc(1), -1), (e: Error) => e instanceof RangeError);
  assert.throws(() => zlibDecompress('room' as unknown as Uint8Array, Buffer.alloc(1)), (e: Error) => e instanceof TypeError);
  assert.throws(() => zlibDecompress(Buffer.alloc(1), 'text' as unknown as Uint8Array), (e: Error) => e instanceof TypeError);
});

const PINNED_LEVEL6 = 'e3be053bd23d3e7fd261178094f40a3d9f20867731361734616da23580832f7a';

test.run();

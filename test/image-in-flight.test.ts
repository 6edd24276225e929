/**
 * How many blocks an image writer keeps in flight to its compression pool (blocksInFlight,
 * compose/image/shared/codecs.ts): lz4, whose blocks are cheap, keeps more than gzip and zstd,
 * but its extra depth never holds more than 16 MiB of raw blocks, however many threads the
 * machine has and however large the blocks are; gzip and zstd keep the depth they had.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blocksInFlight, type CodecSpec } from '../compose/image/shared/codecs.js';

const test = suite('image blocks in flight');

const LZ4: CodecSpec = { name: 'lz4', level: 0 };
const GZIP: CodecSpec = { name: 'gzip', level: 6 };
const ZSTD: CodecSpec = { name: 'zstd', level: 6 };
const THREADS = [1, 2, 3, 4, 8, 16, 32, 64, 128];
const BLOCK_SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];

test('gzip and zstd keep six blocks a thread and four more, at every block size', () => {
  for (const codec of [GZIP, ZSTD]) {
    for (const threads of THREADS) {
      for (const size of BLOCK_SIZES) assert.is(blocksInFlight(codec, threads, size), threads * 6 + 4, `${codec.name} ${threads} threads ${size}`);
    }
  }
});

test('lz4 keeps 32 blocks a thread on two cores at the default block size', () => {
  assert.is(blocksInFlight(LZ4, 2, 131072), 68);
  assert.is(blocksInFlight(LZ4, 1, 131072), 36);
});

test('lz4 never keeps fewer than gzip and zstd, and its extra blocks never hold more than 16 MiB', () => {
  for (const threads of THREADS) {
    for (const size of BLOCK_SIZES) {
      const n = blocksInFlight(LZ4, threads, size);
      const base = threads * 6 + 4;
      assert.ok(n >= base, `${threads} threads ${size}: ${n} < ${base}`);
      assert.ok(n <= threads * 32 + 4, `${threads} threads ${size}: ${n}`);
      if (n > base) assert.ok(n * size <= 16 << 20, `${threads} threads of ${size}-byte blocks: ${n} blocks, ${(n * size) / 2 ** 20} MiB`);
    }
  }
  // Many threads: the bound, not 32 a thread (64 threads would have held 256 MiB of 128 KiB blocks).
  assert.is(blocksInFlight(LZ4, 64, 131072), 6 * 64 + 4);
  assert.is(blocksInFlight(LZ4, 8, 131072), 128);
});

test.run();

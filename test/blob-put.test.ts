/**
 * BlobStore.put's large blobs (store/blob-store.ts): announced at 8 MiB or more and on a local
 * disk filesystem, they are written past the page cache (O_DIRECT) in whole blocks, the last
 * padded and the file cut back to its size. Whatever the length and the chunks, the blob holds
 * exactly the bytes given, under their digest; fincore (util-linux) shows the page cache was
 * passed by (none of the blob's pages resident), and a small blob, or one on tmpfs, goes
 * through the page cache as before.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { BlobStore } from '../store/blob-store.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, ramDir, removeDir, tempDir } from './helpers/tmp.js';

const MiB = 1 << 20;
/** ext2/3/4, XFS, Btrfs: the filesystems blobs are written to with O_DIRECT. */
const LOCAL_DISK = new Set([0xef53, 0x58465342, 0x9123683e]);

/** Pages of `path` in the page cache, as fincore counts them. */
function residentPages(path: string): number {
  return Number(mustRun('fincore', ['--bytes', '--noheadings', '--output', 'PAGES', path]).stdout.toString().trim());
}

/** `data` as a stream of chunks of the sizes given, in turn. */
function* chunked(data: Buffer, sizes: number[]): Generator<Buffer> {
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(at, at + n);
    at += n;
  }
}

/** Puts `data` in `sizes` chunks; the blob's pages resident in the page cache right after. */
async function put(root: string, data: Buffer, sizes: number[], hint = data.length): Promise<number> {
  const blobs = new BlobStore(root);
  await blobs.init();
  try {
    const { hex, size } = await blobs.put(chunked(data, sizes), undefined, undefined, hint);
    const file = join(root, 'blobs', 'sha256', hex);
    const resident = residentPages(file); // before the file is read here
    assert.is(hex, createHash('sha256').update(data).digest('hex'), 'the digest');
    assert.is(size, data.length, 'the size');
    assert.is(statSync(file).size, data.length, 'the file is cut back to its size');
    assert.ok(readFileSync(file).equals(data), 'the bytes');
    return resident;
  } finally {
    await blobs.close();
  }
}

const disk = tempDir('strata-blob-put-');
const onDisk = LOCAL_DISK.has(Number(statfsSync(disk).type));
removeDir(disk);
const why = missing({ tools: ['fincore'] }) ?? (onDisk ? undefined : 'the temp dir is not on ext4, XFS or Btrfs');
if (why) skipSuite('blob put: large blobs past the page cache', why);
else {
  const test = suite('blob put: large blobs past the page cache');

  test('any length, any chunks: the bytes and the digest, and no page cached', async () => {
    const root = tempDir('strata-blob-put-');
    try {
      for (const [length, sizes] of [
        [8 * MiB, [MiB]],
        [8 * MiB + 1, [4096, 1]],
        [9 * MiB + 4095, [123457, 65536, 3]],
        [12 * MiB - 512, [3 * MiB]],
      ] as const) {
        assert.is(await put(root, randomBytes(length), [...sizes]), 0, `${length} bytes: written past the page cache`);
      }
    } finally {
      removeDir(root);
    }
  });

  test('a small blob, or one announced small, goes through the page cache', async () => {
    const root = tempDir('strata-blob-put-');
    try {
      assert.ok((await put(root, randomBytes(MiB + 7), [4096])) > 0, 'a small blob');
      assert.ok((await put(root, randomBytes(9 * MiB), [MiB], MiB)) > 0, 'announced small');
    } finally {
      removeDir(root);
    }
  });

  test.run();
}

const ram = ramDir('strata-blob-put-');
const onRam = Number(statfsSync(ram).type) === 0x01021994;
if (!onRam || missing({ tools: ['fincore'] })) {
  removeDir(ram);
  skipSuite('blob put: a large blob on tmpfs', 'no tmpfs with room at /dev/shm, or no fincore');
} else {
  const test = suite('blob put: a large blob on tmpfs');
  test('is written through the page cache (tmpfs has no other)', async () => {
    try {
      assert.ok((await put(ram, randomBytes(9 * MiB + 3), [MiB])) > 0);
    } finally {
      removeDir(ram);
    }
  });
  test.run();
}

/**
 * BlobStore.put's large blobs (store/blob-store.ts): announced at 8 MiB or more and on a local
 * disk filesystem, they are written past the page cache (O_DIRECT) in whole blocks, the last
 * padded and the file cut back to its size. Whatever the length and the chunks, the blob holds
 * exactly the bytes given, under their digest; fincore (util-linux) shows the page cache was
 * passed by (none of the blob's pages resident), and a small blob, or one on tmpfs, goes
 * through the page cache as before.
 *
 * BlobStore.stage, put in two steps: the digest once the bytes are written and hashed (what
 * an import needs to write the documents that name the blob), durability after. A refused or
 * mismatched blob rejects the first step and leaves nothing; a blob whose commit fails
 * rejects the second and leaves nothing either. Blobs made durable together pin through one
 * descriptor (a second, lost to the garbage collector, made Node print a warning).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
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

{
  const test = suite('blob stage: the digest before durability');
  const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  /** What is left in the store's tmp/ besides this process's pin file. */
  const leftInTmp = (root: string) => readdirSync(join(root, 'tmp')).filter((n) => !n.startsWith('pins-'));
  /** Runs `fn` with the blob store of a fresh store directory, closed and removed after. */
  const withBlobs = async (fn: (blobs: BlobStore, root: string) => Promise<void>) => {
    const root = tempDir('strata-blob-stage-');
    const blobs = new BlobStore(root);
    await blobs.init();
    try {
      await fn(blobs, root);
    } finally {
      await blobs.close();
      removeDir(root);
    }
  };

  test('gives the digest and the group, then the blob durable under it', () =>
    withBlobs(async (blobs, root) => {
      const data = randomBytes(3 * MiB + 5);
      const asked: string[] = [];
      const staged = await blobs.stage(chunked(data, [65536]), undefined, async (hex) => {
        asked.push(hex);
        return undefined;
      });
      assert.is(staged.hex, sha(data));
      assert.is(staged.size, data.length);
      assert.is(staged.gid, undefined);
      assert.equal(asked, [staged.hex], 'the group is decided before stage resolves');
      const done = await staged.durable;
      assert.equal(done, { hex: staged.hex, size: data.length, prior: 'absent' });
      assert.ok(readFileSync(blobs.blobPath(staged.hex)).equals(data), 'the bytes, under their digest');
      assert.is((await blobs.put([data])).prior, 'ok', 'the same bytes again: found intact');
      assert.equal(leftInTmp(root), []);
    }));

  test('a refusal or a digest mismatch rejects the first step and keeps nothing', () =>
    withBlobs(async (blobs, root) => {
      const data = randomBytes(MiB);
      const refused = new Error('restricted elsewhere');
      await blobs.stage([data], undefined, async () => Promise.reject(refused)).then(
        () => assert.unreachable('refused content was staged'),
        (e: unknown) => assert.is(e, refused),
      );
      await blobs.stage([data], 'ab'.repeat(32)).then(
        () => assert.unreachable('a mismatch was staged'),
        (e: unknown) => assert.match(String(e), /does not match sha256:abab/),
      );
      assert.not.ok(existsSync(blobs.blobPath(sha(data))), 'no blob');
      assert.equal(leftInTmp(root), [], 'no temp file');
    }));

  test('blobs made durable together share one pin file, opened once', () =>
    withBlobs(async (blobs, root) => {
      const pinFile = join(root, 'tmp', `pins-${process.pid}`);
      /** This process's descriptors open on the pin file. */
      const pinDescriptors = () =>
        readdirSync('/proc/self/fd').filter((fd) => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`) === pinFile;
          } catch {
            return false; // the directory's own descriptor, gone by now
          }
        }).length;
      // Committed in one turn of the event loop, as an import's layer, manifest and record can be.
      const data = [randomBytes(MiB), randomBytes(MiB + 1), randomBytes(3)];
      const tmps = data.map((d, i) => {
        const tmp = join(root, 'tmp', `${process.pid}-blob-${i}`);
        writeFileSync(tmp, d);
        return tmp;
      });
      await Promise.all(tmps.map((tmp, i) => blobs.commit(tmp, sha(data[i]!))));
      assert.is(pinDescriptors(), 1, 'one descriptor, not one per blob');
      for (const d of data) assert.ok(readFileSync(blobs.blobPath(sha(d))).equals(d), 'in place');
      assert.equal(readFileSync(pinFile, 'utf8').split('\n').filter(Boolean).sort(), data.map(sha).sort(), 'each blob pinned');
      await blobs.close();
      assert.is(pinDescriptors(), 0, 'closed with the store');
      assert.not.ok(existsSync(pinFile), 'and removed');
    }));

  test('a commit that fails rejects durable and leaves no temp file', () =>
    withBlobs(async (blobs, root) => {
      const data = randomBytes(2 * MiB);
      const staged = await blobs.stage([data]);
      // The rename into place follows the fsync and a stat, both on the thread pool: the
      // directory is gone before it.
      rmSync(join(root, 'blobs'), { recursive: true });
      await staged.durable.then(
        () => assert.unreachable('durable without its directory'),
        (e: unknown) => assert.is((e as NodeJS.ErrnoException).code, 'ENOENT'),
      );
      assert.equal(leftInTmp(root), [], 'no temp file');
    }));

  test.run();
}

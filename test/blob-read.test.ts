/**
 * BlobStore.read's two chunk lifetimes (store/blob-store.ts): by default every chunk is a
 * buffer of its own; with `transient`, chunks are read buffers filled again, and a chunk must
 * stay valid until the chunk after it has been asked for (the contract the image writers and
 * the sandbox rely on: StoreReader.readLayer). Both verify the digest at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BlobStore } from '../store/blob-store.js';

const content = randomBytes((7 << 20) + 12345); // several read chunks and a short last one

async function withBlob(fn: (blobs: BlobStore, hex: string) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'strata-blob-read-'));
  try {
    const blobs = new BlobStore(root);
    await blobs.init();
    await fn(blobs, await blobs.putBytes(content));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

test('transient chunks: each holds its bytes until the chunk after it is asked for', async () => {
  await withBlob(async (blobs, hex) => {
    let prev: { chunk: Buffer; at: number } | undefined;
    const buffers = new Set<ArrayBufferLike>();
    let at = 0;
    for await (const chunk of blobs.read(hex, 'test blob', { transient: true })) {
      // The chunk before this one is still the file's bytes (it was not read into again).
      if (prev) assert.ok(prev.chunk.equals(content.subarray(prev.at, prev.at + prev.chunk.length)), `chunk at ${prev.at} changed`);
      assert.ok(chunk.equals(content.subarray(at, at + chunk.length)), `chunk at ${at}`);
      buffers.add(chunk.buffer);
      prev = { chunk, at };
      at += chunk.length;
    }
    assert.is(at, content.length);
    assert.ok(buffers.size <= 3, `${buffers.size} buffers for ${Math.ceil(content.length / 2 ** 20)} chunks: they are not reused`);
  });
});

test('default chunks are buffers of their own, kept intact', async () => {
  await withBlob(async (blobs, hex) => {
    const kept: Buffer[] = [];
    for await (const chunk of blobs.read(hex, 'test blob')) kept.push(chunk);
    assert.ok(Buffer.concat(kept).equals(content));
    assert.is(new Set(kept.map((c) => c.buffer)).size, kept.length);
  });
});

test.run();

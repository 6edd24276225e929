/**
 * An image's temp file (compose/image/shared/output-file.ts): the sha256 commit reports is the
 * committed file's, whether it was read back whole or begun early over the first bytes
 * (hashAhead); a write into bytes already hashed throws instead of changing them; an abort
 * while that read goes on removes the temp file and leaves OUT as it was; the syncs every
 * 16 MiB change no byte.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { OutputFile } from '../compose/image/shared/output-file.js';

/** The error `run` rejects with, which must match `re`. */
async function rejects(run: () => Promise<unknown>, re: RegExp): Promise<void> {
  const e = await run().then(() => undefined, (err: unknown) => err);
  assert.instance(e, Error, `rejects with ${re}`);
  assert.match((e as Error).message, re);
}
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
/** Bytes that differ from place to place, so that a range read at the wrong offset shows. */
const pattern = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => ((i + seed) * 2654435761) >>> 24));

function withDir(body: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-output-'));
    try {
      await body(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('commit reports the sha256 of the file it commits, with and without hashAhead', withDir(async (dir) => {
  const head = pattern(3 << 20, 1);
  const tail = pattern(700_001, 2);
  for (const ahead of [false, true]) {
    const out = join(dir, `image-${ahead}`);
    const f = await OutputFile.create(out);
    await f.queueWrite(head.subarray(0, 1 << 20), 0); // queued writes go out before the read begins
    await f.writeAll(head.subarray(1 << 20), 1 << 20);
    if (ahead) await f.hashAhead(head.length);
    await f.writeAll(tail, head.length + 5); // past the hashed bytes, with a hole before it
    await f.setLength(head.length + 5 + tail.length, head.length + 5 + tail.length + 11);
    const digest = await f.commit();
    const bytes = readFileSync(out);
    assert.is(bytes.length, head.length + 5 + tail.length + 11);
    assert.is(digest, sha256(bytes), `ahead ${ahead}: the committed bytes' digest`);
  }
}));

test('hashAhead past the end of what is written: the bytes not written are zeros, and stay so', withDir(async (dir) => {
  const out = join(dir, 'image');
  const f = await OutputFile.create(out);
  await f.writeAll(Buffer.from('superblock'), 1024);
  await f.hashAhead(4096);
  await f.writeAll(Buffer.from('metadata'), 4096);
  const digest = await f.commit();
  const expect = Buffer.alloc(4096 + 8);
  expect.write('superblock', 1024);
  expect.write('metadata', 4096);
  assert.ok(readFileSync(out).equals(expect));
  assert.is(digest, sha256(expect));
}));

test('a write or truncation into the hashed bytes throws; abort during the read leaves OUT as it was', withDir(async (dir) => {
  const out = join(dir, 'image');
  writeFileSync(out, 'the previous image');
  const f = await OutputFile.create(out);
  await f.writeAll(pattern(8 << 20, 3), 0);
  await f.hashAhead(8 << 20);
  await rejects(() => f.writeAll(Buffer.from('x'), (8 << 20) - 1), /inside the 8388608 bytes already hashed/);
  await rejects(() => f.queueWrite(Buffer.from('x'), 0), /already hashed/);
  await rejects(() => f.setLength(100, 100), /already hashed/);
  await f.abort(); // waits for the read of the descriptor before closing it
  assert.is(readFileSync(out, 'utf8'), 'the previous image');
  assert.equal(readdirSync(dir), ['image'], 'no temp file left');
}));

test('past the sync steps: the file is what was written, rewrites included; an abort then removes it', withDir(async (dir) => {
  const out = join(dir, 'image');
  const chunk = pattern(1 << 20, 4);
  const f = await OutputFile.create(out);
  const n = 40; // synced at 16 and 32 MiB
  for (let i = 0; i < n; i++) await f.queueWrite(chunk, i << 20);
  const head = pattern(96, 5);
  await f.writeAll(head, 0); // a superblock written last, over pages already synced
  const digest = await f.commit();
  const expect = Buffer.concat(Array.from({ length: n }, () => chunk));
  head.copy(expect, 0);
  const bytes = readFileSync(out);
  assert.ok(bytes.equals(expect), 'the bytes as written');
  assert.is(digest, sha256(expect));

  writeFileSync(out, 'the previous image');
  const g = await OutputFile.create(out);
  await g.writeAll(pattern(20 << 20, 6), 0); // one sync started
  await g.abort(); // waits for it before closing the descriptor
  assert.is(readFileSync(out, 'utf8'), 'the previous image');
  assert.equal(readdirSync(dir), ['image'], 'no temp file left');
}));

test.run();

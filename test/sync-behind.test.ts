/**
 * native/sync-behind.ts: a file written to is synced once a step more bytes were written, on
 * the pool, one sync at a time; a sync that fails is left for the closing fsync to report. The
 * syncs are the real fdatasync of a real file; the handle only counts them on their way.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SyncBehind } from '../native/sync-behind.js';

const STEP = 1 << 20;

/** A file opened for writing in a fresh directory, and how many datasyncs it was asked for. */
function withFile(body: (fh: fsp.FileHandle, syncs: () => number, file: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-sync-behind-'));
    const file = join(dir, 'f');
    const fh = await fsp.open(file, 'wx');
    let n = 0;
    const datasync = fh.datasync.bind(fh);
    fh.datasync = () => {
      n++;
      return datasync();
    };
    try {
      await body(fh, () => n, file);
    } finally {
      await fh.close().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('a sync per step of bytes written, none before the first step', withFile(async (fh, syncs, file) => {
  const behind = new SyncBehind(fh, STEP);
  const piece = Buffer.alloc(STEP / 2, 7);
  const counts: number[] = [];
  for (let i = 0; i < 7; i++) {
    const { bytesWritten } = await fh.write(piece, 0, piece.length, i * piece.length);
    behind.wrote(bytesWritten);
    await behind.settled();
    counts.push(syncs());
  }
  assert.equal(counts, [0, 1, 1, 2, 2, 3, 3]);
  assert.ok(readFileSync(file).equals(Buffer.alloc(7 * piece.length, 7)));
}));

test('no second sync while one runs: the bytes wait for the next write after it', withFile(async (fh, syncs) => {
  const behind = new SyncBehind(fh, STEP);
  await fh.write(Buffer.alloc(4 * STEP, 1), 0, 4 * STEP, 0);
  behind.wrote(2 * STEP);
  behind.wrote(2 * STEP); // a step more, while the first sync runs
  assert.is(syncs(), 1);
  await behind.settled();
  assert.is(syncs(), 1);
  behind.wrote(1); // the bytes held over start the next one
  assert.is(syncs(), 2);
  await behind.settled();
}));

test('a sync that fails is not thrown: the closing fsync reports', withFile(async (fh, syncs) => {
  const behind = new SyncBehind(fh, STEP);
  await fh.close();
  behind.wrote(STEP);
  assert.is(syncs(), 1);
  await behind.settled();
  const closed = await fh.sync().catch((e: NodeJS.ErrnoException) => e);
  assert.instance(closed, Error);
}));

test.run();

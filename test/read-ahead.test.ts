/**
 * native/readahead.c (through native/readahead.ts): a file read in sequence on a thread of its
 * own. Every byte comes in order and once; a chunk stays intact through the take after it
 * (the tar reader hands out views of it); a seek drops what was read ahead; a file that
 * shrinks, or cannot be read, ends the reading or throws, never hangs or hands out stale
 * bytes. Then store/tar/reader.ts's sequential reading (readTarFile with `sequential`, the
 * ordered import's pass) against the same archive read without it, with bodies skipped past
 * what was read ahead.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ReadAhead } from '../native/readahead.js';
import { readTarFile } from '../store/tar/reader.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Blocks this thread for `ms`: the reading thread meanwhile fills all the ring it may. */
const pause = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Every chunk of `ra` to its end, each checked to be intact after the next take; at the third,
 * a pause long enough for the reading thread to fill the rest of the ring, after which the
 * chunk and the one before it must still be as they were.
 */
function takeAll(ra: ReadAhead): Buffer {
  const out: Buffer[] = [];
  let last: { chunk: Buffer; digest: string } | undefined;
  for (let chunk = ra.take(); chunk !== null; chunk = ra.take()) {
    if (last) assert.is(sha(last.chunk), last.digest, 'a chunk is intact through the take after it');
    const digest = sha(chunk);
    if (out.length === 2) {
      pause(100);
      assert.is(sha(chunk), digest, 'the chunk taken is intact while the ring fills');
      assert.is(sha(last!.chunk), last!.digest, 'and so is the one before it');
    }
    out.push(Buffer.from(chunk));
    last = { chunk, digest };
  }
  return Buffer.concat(out);
}

/**
 * Runs `fn` with a file of `size` random bytes open (read-write, so a test may truncate it),
 * its bytes, and the temp directory it is in; closes and removes them after.
 */
function withRandomFile(size: number, fn: (fd: number, data: Buffer, dir: string) => void): void {
  const dir = tempDir('strata-readahead-');
  try {
    const data = randomBytes(size);
    const path = join(dir, 'f');
    writeFileSync(path, data);
    const fd = openSync(path, 'r+');
    try {
      fn(fd, data, dir);
    } finally {
      closeSync(fd);
    }
  } finally {
    removeDir(dir);
  }
}

const test = suite('read-ahead: a file read in sequence on a thread of its own');

test('every byte in order, once, from any start; chunks intact through the next take', () => {
  // Larger than the ring (16 × 256 KiB), and not a multiple of a chunk.
  withRandomFile(9 * 1024 * 1024 + 12345, (fd, data) => {
    for (const from of [0, 1, 262144, data.length - 7, data.length]) {
      const ra = ReadAhead.start(fd, from, data.length)!;
      assert.ok(ra, 'the addon is built');
      const got = takeAll(ra);
      ra.close();
      assert.is(got.length, data.length - from, `from ${from}: the length`);
      assert.ok(got.equals(data.subarray(from)), `from ${from}: the bytes`);
    }
  });
});

test('a seek drops what was read ahead and reads on from its position', () => {
  withRandomFile(6 * 1024 * 1024, (fd, data) => {
    const ra = ReadAhead.start(fd, 0, data.length)!;
    const first = Buffer.from(ra.take()!);
    assert.ok(first.equals(data.subarray(0, first.length)));
    // Forward past everything read ahead, then back before it.
    for (const pos of [5 * 1024 * 1024 + 3, 100]) {
      ra.seek(pos);
      const next = Buffer.from(ra.take()!);
      assert.ok(next.length > 0, `after a seek to ${pos}: bytes`);
      assert.ok(next.equals(data.subarray(pos, pos + next.length)), `after a seek to ${pos}: the bytes from there`);
    }
    const rest = takeAll(ra);
    assert.ok(rest.equals(data.subarray(100 + 262144)), 'then the rest, in order');
    ra.seek(data.length);
    assert.is(ra.take(), null, 'a seek to the end: the end');
    ra.close();
    ra.close();
    assert.throws(() => ra.take(), /closed/, 'a take after close throws');
  });
});

test('a file shorter than announced ends where it ends; an unreadable one throws', () => {
  withRandomFile(3 * 1024 * 1024, (fd, data, dir) => {
    ftruncateSync(fd, 1024 * 1024 + 5);
    const ra = ReadAhead.start(fd, 0, data.length)!;
    const got = takeAll(ra);
    ra.close();
    assert.ok(got.equals(data.subarray(0, 1024 * 1024 + 5)), 'the bytes the file still has, no more');
    const sub = join(dir, 'd');
    mkdirSync(sub);
    const dfd = openSync(sub, 'r');
    try {
      const dra = ReadAhead.start(dfd, 0, 4096)!;
      try {
        assert.throws(() => dra.take(), (e: NodeJS.ErrnoException) => e.code === 'EISDIR' && e.syscall === 'read');
      } finally {
        dra.close();
      }
    } finally {
      closeSync(dfd);
    }
  });
});

test.run();

const why = missing({ tools: ['tar'] });
if (why) skipSuite('read-ahead: the tar reader', why);
else {
  const tarTest = suite('read-ahead: the tar reader');

  /** Each entry's path, offset and body digest (every other body not read: skipped by the reader). */
  async function entries(path: string, sequential: boolean): Promise<string[]> {
    const out: string[] = [];
    let i = 0;
    for await (const { header: h, body } of readTarFile(path, { sequential })) {
      if (i++ % 2 === 1 || h.size === 0) {
        out.push(`${h.path} ${h.offset} skipped`);
        continue;
      }
      const hash = createHash('sha256');
      for await (const c of body) hash.update(c);
      out.push(`${h.path} ${h.offset} ${hash.digest('hex')}`);
    }
    return out;
  }

  tarTest('a GNU tar read ahead gives what the reader gives without, bodies skipped past the ring included', async () => {
    const dir = tempDir('strata-readahead-tar-');
    try {
      const tree = join(dir, 'tree');
      mkdirSync(tree);
      // Files of 1 MiB (a skip past what was read ahead) between small ones.
      for (let i = 0; i < 40; i++) writeFileSync(join(tree, `f${String(i).padStart(2, '0')}`), randomBytes(i % 3 === 0 ? 1024 * 1024 + i : 700 + i));
      const tar = join(dir, 't.tar');
      mustRun('tar', ['--sort=name', '--format=pax', '-cf', tar, '-C', tree, '.']);
      const plain = await entries(tar, false);
      const ahead = await entries(tar, true);
      assert.equal(ahead, plain);
      assert.is(plain.length, 41);
      // And every body, read ahead, is the file's.
      for await (const { header: h, body } of readTarFile(tar, { sequential: true })) {
        if (h.type !== 'file') continue;
        const chunks: Buffer[] = [];
        for await (const c of body) chunks.push(Buffer.from(c));
        assert.ok(Buffer.concat(chunks).equals(readFileSync(join(tree, h.path))), h.path);
      }
    } finally {
      removeDir(dir);
    }
  });

  tarTest.run();
}

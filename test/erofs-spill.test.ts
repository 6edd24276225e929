/**
 * The EROFS writer's tail store (compose/image/erofs/spill.ts): what is appended, in tails or
 * in pieces that cross the end of what it keeps in memory (a segment's tails come back in
 * megabyte pieces), reads back byte for byte, by any range, and through readRange; readNow
 * answers without a read exactly where the bytes are at hand.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Spill, type SpillRef } from '../compose/image/erofs/spill.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const S = suite('EROFS tail store');
let tmp = '';

S.before.each(() => {
  tmp = tempDir('strata-spill-');
});

S.after.each(() => {
  removeDir(tmp);
});

/** Deterministic bytes: `n` of them from the counter `seed`. */
function bytes(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; i++) at += createHash('sha256').update(`${seed}:${i}`).digest().copy(out, at);
  return out;
}

S('tails and large pieces across the memory limit read back by any range', async () => {
  const path = join(tmp, 'tails');
  const spill = new Spill(path, 64 << 10);
  const parts: Buffer[] = [];
  const refs: SpillRef[] = [];
  const add = async (b: Buffer) => {
    refs.push(await spill.append(b));
    parts.push(b);
  };
  for (let i = 0; i < 20; i++) await add(bytes(i, 1000 + i * 37)); // tails, in memory
  await add(bytes(100, 3 << 20)); // one piece from memory past the limit: the rest goes to the file
  for (let i = 0; i < 50; i++) await add(bytes(200 + i, 4095 - i)); // tails, in the file
  await add(bytes(300, (1 << 20) + 5)); // a piece larger than the read-ahead
  const all = Buffer.concat(parts);
  assert.is(spill.size, all.length);
  assert.ok(existsSync(path), 'past the limit the bytes went to the file');

  for (let i = 0; i < refs.length; i++) assert.ok((await spill.read(refs[i]!)).equals(parts[i]!), `part ${i}`);
  // Ranges that are no one part: across parts, across the end of what is in memory.
  const memEnd = refs[20]!.off;
  for (const [off, len] of [
    [0, all.length],
    [500, 70_000],
    [memEnd - 10, 20],
    [memEnd - 3000, 5 << 20],
    [refs[21]!.off - 1, 4097],
  ] as const) {
    const l = Math.min(len, all.length - off);
    assert.ok((await spill.read({ off, len: l })).equals(all.subarray(off, off + l)), `range ${off}+${l}`);
  }
  const pieces: Buffer[] = [];
  await spill.readRange(7, all.length - 7, async (p) => void pieces.push(p));
  assert.ok(pieces.every((p) => p.length <= 1 << 20), 'readRange hands out pieces of at most a MiB');
  assert.ok(Buffer.concat(pieces).equals(all.subarray(7)));

  await spill.close();
  assert.not.ok(existsSync(path), 'close() removes the file');
});

S('readNow gives the bytes in memory and in the megabyte last read back, and nothing it would have to read', async () => {
  const spill = new Spill(join(tmp, 'tails'), 64 << 10);
  const parts: Buffer[] = [];
  const refs: SpillRef[] = [];
  // 60 tails of 1–4 KiB in memory, then 3,000 in the file (about 7 MiB: past the read-ahead).
  for (let i = 0; i < 3060; i++) {
    parts.push(bytes(i, 1000 + ((i * 97) % 3000)));
    refs.push(await spill.append(parts[i]!));
  }
  const inMemory = refs.findIndex((r) => r.off + r.len > 64 << 10);
  assert.ok(inMemory > 10 && inMemory < 60, `the file starts at tail ${inMemory}`);
  for (let i = 0; i < inMemory; i++) assert.ok(spill.readNow(refs[i]!)?.equals(parts[i]!), `tail ${i} from memory`);
  assert.is(spill.readNow(refs[inMemory + 1]!), undefined, 'in the file, before any read back');
  assert.is(spill.readNow(refs[3059]!), undefined, 'not yet written to the file');
  assert.ok(spill.readNow({ off: 0, len: 0 })?.equals(Buffer.alloc(0)));

  // In order, as the writer reads them: each read back either at hand or fetched, never different.
  let now = 0;
  for (let i = inMemory + 1; i < refs.length; i++) {
    const at = spill.readNow(refs[i]!);
    if (at) now++;
    assert.ok((at ?? (await spill.read(refs[i]!))).equals(parts[i]!), `tail ${i}`);
  }
  assert.ok(now > 2900, `most tails were at hand (${now})`);
  await spill.close();
});

S('what reads give stays right while held, and with one reader until the next read', async () => {
  // 600 tails of 2–4 KiB (1.8 MB): the first 10 or so in memory, the rest in the file.
  const parts = Array.from({ length: 600 }, (_, i) => bytes(5000 + i, 2000 + ((i * 131) % 2000)));
  const fill = async (spill: Spill): Promise<SpillRef[]> => {
    const refs: SpillRef[] = [];
    for (const p of parts) refs.push(await spill.append(p));
    return refs;
  };

  // Any number of readers (the writer's extent lists, read when files settle, in any order):
  // every answer is still right after every later read.
  const shared = new Spill(join(tmp, 'extents'), 32 << 10);
  const sharedRefs = await fill(shared);
  const held: Buffer[] = [];
  for (let i = parts.length - 1; i >= 0; i -= 7) held.push(await shared.read(sharedRefs[i]!));
  held.push(...(await Promise.all(sharedRefs.map((r) => shared.read(r)))));
  const expect = [...Array.from({ length: Math.ceil(parts.length / 7) }, (_, k) => parts[parts.length - 1 - 7 * k]!), ...parts];
  held.forEach((b, k) => assert.ok(b.equals(expect[k]!), `held answer ${k}`));
  await shared.close();

  // One reader (the tails: a group's extra part, the metadata pass): each answer right when it
  // comes, in sequence and out of it, and readRange's pieces right in its callback.
  const one = new Spill(join(tmp, 'tails'), 32 << 10, true);
  const refs = await fill(one);
  for (const i of [...parts.keys(), 550, 20, 599, 7, 180]) {
    assert.ok((one.readNow(refs[i]!) ?? (await one.read(refs[i]!))).equals(parts[i]!), `tail ${i}`);
  }
  const all = Buffer.concat(parts);
  const digest = createHash('sha256');
  let pieces = 0;
  await one.readRange(3, all.length - 3, async (p) => {
    digest.update(p);
    pieces++;
  });
  assert.is(digest.digest('hex'), createHash('sha256').update(all.subarray(3)).digest('hex'));
  assert.ok(pieces > 1);
  await one.close();
});

S.run();

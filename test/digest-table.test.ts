/**
 * The image writers' dedup index (compose/image/shared/digest-table.ts) against a Map: the
 * same answers through every growth, new keys refused past MAX_KEYS while known ones are still
 * found, and an empty table after release().
 */
import { createHash } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DigestTable } from '../compose/image/shared/digest-table.js';

const digest = (i: number): Buffer => createHash('sha256').update(`content ${i}`).digest().subarray(0, 16);

test('answers as a Map does while it grows', () => {
  const t = new DigestTable();
  const model = new Map<string, [number, number]>();
  for (let i = 0; i < 50_000; i++) {
    const d = digest(i % 40_000); // a fifth are repeats: the first copy must stay
    const key = d.toString('hex');
    if (!model.has(key)) {
      assert.is(t.get(d), undefined, `key ${i} before set`);
      model.set(key, [i, i * 7]);
      t.set(d, i, i * 7);
    }
    if (i % 997 === 0) for (const j of [0, i >> 1, i]) assert.equal(t.get(digest(j % 40_000)), model.get(digest(j % 40_000).toString('hex')));
  }
  for (let i = 0; i < 40_000; i++) assert.equal(t.get(digest(i)), model.get(digest(i).toString('hex')));
  assert.is(t.get(digest(123_456_789)), undefined);
  // 0 is a value like any other (the table marks empty slots itself).
  t.set(digest(-1), 0, 0);
  assert.equal(t.get(digest(-1)), [0, 0]);
});

test('takes no new key past MAX_KEYS, and keeps the ones it has', () => {
  const t = new DigestTable();
  const n = DigestTable.MAX_KEYS;
  const d = Buffer.alloc(16);
  // Distinct keys (word 1 is the number), spread over the table as sha256 prefixes are.
  const key = (i: number): Buffer => {
    d.writeUInt32LE(Math.imul(i + 1, 0x9e3779b1) >>> 0, 0);
    d.writeUInt32LE(i, 4);
    return d;
  };
  for (let i = 0; i < n + 10; i++) t.set(key(i), i, 1);
  for (const i of [0, n >> 1, n - 1]) assert.equal(t.get(key(i)), [i, 1], `key ${i}`);
  for (const i of [n, n + 9]) assert.is(t.get(key(i)), undefined, `key ${i} past the limit`);
  t.release();
  assert.is(t.get(key(0)), undefined);
  t.set(d, 5, 6);
  assert.equal(t.get(d), [5, 6]);
});

test.run();

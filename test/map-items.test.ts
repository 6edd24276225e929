/**
 * store/map-items.ts: one item out per item in, and `for await`'s protocol: the source is
 * closed when the consumer stops early and when the function throws (its error is the one the
 * consumer gets), a source's own error passes through, and nothing runs before iteration.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mapItems } from '../store/map-items.js';

const test = suite('mapItems');

/** A source of 0..n-1 that records whether it was closed and how far it was read. */
function counted(n: number, failAt = -1) {
  const seen = { started: false, read: 0, closed: false };
  async function* gen() {
    seen.started = true;
    try {
      for (let i = 0; i < n; i++) {
        if (i === failAt) throw new Error(`source failed at ${i}`);
        seen.read++;
        yield i;
      }
    } finally {
      seen.closed = true;
    }
  }
  return { source: gen(), seen };
}

test('maps every item in order, lazily', async () => {
  const { source, seen } = counted(5);
  const mapped = mapItems(source, (i) => i * 10);
  assert.is(seen.started, false, 'nothing runs before iteration');
  const out: number[] = [];
  for await (const x of mapped) out.push(x);
  assert.equal(out, [0, 10, 20, 30, 40]);
  assert.ok(seen.closed);
});

test('a consumer that stops early closes the source', async () => {
  const { source, seen } = counted(100);
  for await (const x of mapItems(source, (i) => i)) if (x === 2) break;
  assert.is(seen.read, 3);
  assert.ok(seen.closed, 'return() reached the source');
});

test("the function's error closes the source and reaches the consumer", async () => {
  const { source, seen } = counted(100);
  const out: number[] = [];
  try {
    for await (const x of mapItems(source, (i) => {
      if (i === 3) throw new Error('refused 3');
      return i;
    }))
      out.push(x);
    assert.unreachable('the error reaches the loop');
  } catch (e) {
    assert.match((e as Error).message, /refused 3/);
  }
  assert.equal(out, [0, 1, 2]);
  assert.ok(seen.closed, 'the source was closed');
  assert.is(seen.read, 4);
});

test("the source's error passes through", async () => {
  const { source } = counted(10, 2);
  const out: number[] = [];
  try {
    for await (const x of mapItems(source, (i) => i)) out.push(x);
    assert.unreachable('the error reaches the loop');
  } catch (e) {
    assert.match((e as Error).message, /source failed at 2/);
  }
  assert.equal(out, [0, 1]);
});

test('a map over a map is one step: both functions, in order, and the protocol kept', async () => {
  const { source, seen } = counted(100);
  const calls: string[] = [];
  const inner = mapItems(source, (i) => {
    calls.push(`f${i}`);
    return i + 1;
  });
  const outer = mapItems(inner, (i) => {
    calls.push(`g${i}`);
    if (i === 3) throw new Error('refused 3');
    return i * 10;
  });
  const out: number[] = [];
  try {
    for await (const x of outer) out.push(x);
    assert.unreachable('the error reaches the loop');
  } catch (e) {
    assert.match((e as Error).message, /refused 3/);
  }
  assert.equal(out, [10, 20]);
  assert.equal(calls, ['f0', 'g1', 'f1', 'g2', 'f2', 'g3']);
  assert.ok(seen.closed, 'the source was closed');
  // The inner map is still a map of its own.
  const again = counted(3);
  const plain: number[] = [];
  for await (const x of mapItems(again.source, (i) => i + 1)) plain.push(x);
  assert.equal(plain, [1, 2, 3]);
  // Awaiting a map is not taken for a promise (it has no `then`).
  assert.is(await Promise.resolve(inner), inner);
});

test.run();

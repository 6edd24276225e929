/**
 * store/map-items.ts: one item out per item in, and `for await`'s protocol: the source is
 * closed when the consumer stops early and when the function throws (its error is the one the
 * consumer gets), a source's own error passes through, and nothing runs before iteration.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { flatItems, forEachItem, mapItems, nextItem, nowIterator, type NowIterator } from '../store/map-items.js';

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

/**
 * A source holding items 0..n-1 of which `held` are there already (nextNow gives them); the
 * rest need next(). Records how each was taken and whether it was closed.
 */
function holding(n: number, held: Set<number>) {
  const seen = { now: 0, awaited: 0, closed: false };
  let i = 0;
  const it: NowIterator<number> & AsyncIterable<number> = {
    [Symbol.asyncIterator]() {
      return it;
    },
    nextNow() {
      if (i >= n) return null;
      if (!held.has(i)) return undefined;
      seen.now++;
      return i++;
    },
    async next() {
      if (i >= n) return { value: undefined, done: true };
      seen.awaited++;
      return { value: i++, done: false };
    },
    async return() {
      seen.closed = true;
      return { value: undefined, done: true };
    },
  };
  return { source: it, seen };
}

/** Every item, nextNow() first, as the canonical tar reads records. */
async function nowFirst<T>(it: NowIterator<T>): Promise<T[]> {
  const out: T[] = [];
  for (;;) {
    let x = it.nextNow?.();
    if (x === undefined) {
      const r = await it.next();
      x = r.done === true ? null : r.value;
    }
    if (x === null) return out;
    out.push(x);
  }
}

test("a source's held items are mapped without a promise, by a map over a map too", async () => {
  const { source, seen } = holding(6, new Set([1, 2, 4]));
  const mapped = mapItems(mapItems(source, (i) => i + 1), (i) => i * 10);
  assert.equal(await nowFirst(mapped[Symbol.asyncIterator]() as NowIterator<number>), [10, 20, 30, 40, 50, 60]);
  assert.equal([seen.now, seen.awaited], [3, 3]);
  // A source without nextNow gives a map without it.
  assert.is((mapItems(counted(1).source, (i) => i)[Symbol.asyncIterator]() as NowIterator<number>).nextNow, undefined);
});

test("the function's error in nextNow reaches next(), which closes the source", async () => {
  const { source, seen } = holding(6, new Set([0, 1, 2, 3, 4, 5]));
  const it = mapItems(source, (i) => {
    if (i === 2) throw new Error('refused 2');
    return i;
  })[Symbol.asyncIterator]() as NowIterator<number>;
  assert.is(it.nextNow!(), 0);
  assert.is(it.nextNow!(), 1);
  assert.is(it.nextNow!(), undefined, 'the error is left to next()');
  assert.not.ok(seen.closed);
  try {
    await it.next();
    assert.unreachable('next() gives the error');
  } catch (e) {
    assert.match((e as Error).message, /refused 2/);
  }
  assert.ok(seen.closed, 'the source was closed');
});

test('nowIterator: a plain iterable is held whole; an async one keeps its own iterator', async () => {
  const plain = nowIterator([1, 2, 3]);
  assert.equal([plain.nextNow!(), plain.nextNow!(), plain.nextNow!(), plain.nextNow!()], [1, 2, 3, null]);
  const { source } = holding(2, new Set([0]));
  assert.equal(await nowFirst(nowIterator(source)), [0, 1]);
});

test('nextItem: a held item at once, else a promise of it; null at the end', async () => {
  const { source, seen } = holding(2, new Set([0]));
  assert.is(nextItem(source), 0);
  const later = nextItem(source);
  assert.ok(later instanceof Promise);
  assert.is(await later, 1);
  assert.is(nextItem(source), null);
  assert.equal([seen.now, seen.awaited], [1, 1]);
});

/** A source of batches (arrays of consecutive numbers from 0) that records how it was read and whether it was closed. */
function batched(sizes: number[], failAfter = -1) {
  const seen = { batches: 0, closed: false };
  async function* gen() {
    try {
      let n = 0;
      for (const size of sizes) {
        if (seen.batches === failAfter) throw new Error(`source failed after ${failAfter} batches`);
        seen.batches++;
        yield Array.from({ length: size }, () => n++);
      }
    } finally {
      seen.closed = true;
    }
  }
  return { source: gen(), seen };
}

test('flatItems: each batch item by item; the rest of a batch without a promise, empty batches passed over', async () => {
  const { source, seen } = batched([3, 0, 2]);
  const it = flatItems(source)[Symbol.asyncIterator]() as NowIterator<number>;
  assert.is(it.nextNow!(), undefined, 'nothing held before the first batch');
  assert.equal(await it.next(), { value: 0, done: false });
  assert.equal([it.nextNow!(), it.nextNow!(), it.nextNow!()], [1, 2, undefined]);
  assert.equal(await it.next(), { value: 3, done: false }, 'the empty batch is passed over');
  assert.is(it.nextNow!(), 4);
  assert.equal(await it.next(), { value: undefined, done: true });
  assert.is(it.nextNow!(), null, 'null once the batches ended');
  assert.equal([seen.batches, seen.closed], [3, true]);
  const all: number[] = [];
  for await (const x of flatItems(batched([2, 2]).source)) all.push(x);
  assert.equal(all, [0, 1, 2, 3], 'for await reads it as any async iterable');
});

test("flatItems: stopping early closes the batches; their error passes through", async () => {
  const { source, seen } = batched([2, 2, 2]);
  for await (const x of flatItems(source)) if (x === 2) break;
  assert.equal([seen.batches, seen.closed], [2, true]);
  const failing = batched([2, 2], 1);
  const got: number[] = [];
  try {
    for await (const x of flatItems(failing.source)) got.push(x);
    assert.unreachable('the error reaches the consumer');
  } catch (e) {
    assert.match((e as Error).message, /failed after 1 batches/);
  }
  assert.equal(got, [0, 1]);
});

test('forEachItem: every item in order, held ones without a promise; f throwing closes the source', async () => {
  const { source, seen } = holding(5, new Set([1, 2, 3]));
  const out: number[] = [];
  await forEachItem(source, (i) => out.push(i));
  assert.equal(out, [0, 1, 2, 3, 4]);
  assert.equal([seen.now, seen.awaited], [3, 2]);
  const plain: string[] = [];
  await forEachItem(['a', 'b'], (x) => plain.push(x));
  assert.equal(plain, ['a', 'b'], 'a plain iterable too');
  const { source: batches, seen: bs } = batched([2, 2, 2]);
  try {
    await forEachItem(flatItems(batches), (i) => {
      if (i === 3) throw new Error('refused 3');
    });
    assert.unreachable('f\'s error reaches the caller');
  } catch (e) {
    assert.match((e as Error).message, /refused 3/);
  }
  assert.equal([bs.batches, bs.closed], [2, true], 'the source was closed at the error, not read on');
});

test.run();

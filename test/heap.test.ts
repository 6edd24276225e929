/**
 * store/heap.ts: the heap growth a large build asks V8 for after each full collection: a
 * headroom in bytes past the live old generation, less as the resident size nears its
 * ceiling, within V8's bounds of half to four times the live size.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { growingPercent, HEAP_HEADROOM, RSS_CEILING } from '../store/heap.js';

const test = suite('heap growth');
const MiB = 1 << 20;

test('a small live heap gets the whole headroom, in tens of percent', () => {
  // 32 MiB past 12 MiB live: 267 %, rounded to the nearest ten.
  assert.is(HEAP_HEADROOM, 32 * MiB);
  assert.is(growingPercent(12 * MiB, 100 * MiB), 270);
  assert.is(growingPercent(25 * MiB, 100 * MiB), 130);
});

test('the growth stays between half and four times the live size', () => {
  assert.is(growingPercent(1 * MiB, 100 * MiB), 400);
  assert.is(growingPercent(0, 100 * MiB), 400);
  assert.is(growingPercent(200 * MiB, 100 * MiB), 50);
});

test('the headroom shrinks as the resident size nears the ceiling, and is least past it', () => {
  assert.is(growingPercent(16 * MiB, RSS_CEILING - 32 * MiB), 200);
  assert.is(growingPercent(16 * MiB, RSS_CEILING - 16 * MiB), 100);
  assert.is(growingPercent(16 * MiB, RSS_CEILING - 4 * MiB), 50);
  assert.is(growingPercent(16 * MiB, RSS_CEILING), 50);
  assert.is(growingPercent(16 * MiB, RSS_CEILING + 64 * MiB), 50);
});

test.run();

/**
 * store/layer/merge.ts, LayerMerge's `large` option: the caller that sizes memory by the plan
 * (compose/heap.ts) is told once, as soon as the layers have given that many entries, while
 * the layer is still being read: before the plan is made, where a build's heap grew fastest.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerMerge } from '../store/layer/merge.js';
import type { LayerEntry } from '../store/types.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('layer merge: large plans');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-merge-');
});
test.after.each((ctx) => removeDir(ctx.dir));

/** A layer of `n` files under d/, in canonical order; `seen` counts the entries handed out. */
function layer(n: number, seen: { count: number }): (first: boolean) => Iterable<LayerEntry> {
  return function* (first) {
    yield { path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };
    for (let i = 0; i < n; i++) {
      if (!first) seen.count++;
      yield { path: `d/f${String(i).padStart(6, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1 };
    }
  };
}

test('told once, when the entries given reach the threshold, before the layer ends', async ({ dir }) => {
  const seen = { count: 0 };
  const calls: number[] = [];
  const merge = new LayerMerge({ tmpDir: dir, large: { entries: 1_000, reached: () => calls.push(seen.count) } });
  try {
    await merge.addLayer(layer(600, seen), 'a');
    assert.equal(calls, [], 'not yet: 601 entries');
    await merge.addLayer(layer(2_000, seen), 'b');
    // The directory d of layer b is the 602nd entry; the 1,000th is its 398th file.
    assert.equal(calls, [998], 'once, while layer b was read');
    await merge.addLayer(layer(2_000, seen), 'c');
    assert.equal(calls.length, 1, 'never again');
    assert.is(merge.plan().count, 2_002, 'the root, d and its 2,000 files: the plan as without the option');
  } finally {
    merge.dispose();
  }
});

test('a plan below the threshold never tells', async ({ dir }) => {
  let told = false;
  const merge = new LayerMerge({ tmpDir: dir, large: { entries: 10_000, reached: () => (told = true) } });
  try {
    await merge.addLayer(layer(5_000, { count: 0 }), 'a');
    await merge.addLayer(layer(4_000, { count: 0 }), 'b');
    merge.plan();
    assert.not.ok(told);
  } finally {
    merge.dispose();
  }
});

test.run();

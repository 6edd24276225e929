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

const links = suite<{ dir: string }>('layer merge: hard-link groups');
links.before.each((ctx) => {
  ctx.dir = tempDir('strata-merge-');
});
links.after.each((ctx) => removeDir(ctx.dir));

const node = (path: string, type: LayerEntry['type'], more: Partial<LayerEntry> = {}): LayerEntry => ({ path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 0, size: type === 'file' ? 1 : 0, ...more });

/** The plan's files and links: path, type, the path a link names or a file's body comes from. */
async function planLinks(dir: string, layers: LayerEntry[][]): Promise<string[][]> {
  const merge = new LayerMerge({ tmpDir: dir });
  try {
    for (const [i, entries] of layers.entries()) await merge.addLayer(() => entries, `l${i}`);
    const plan = merge.plan();
    return [...plan.entries()]
      .filter((p) => p.entry.type === 'file' || p.entry.type === 'hardlink')
      .map((p) => [p.entry.path, p.entry.type, p.entry.type === 'hardlink' ? p.entry.linkname! : p.contentPath!]);
  } finally {
    merge.dispose();
  }
}

links('groups as their layer made them are planned as they are', async ({ dir }) => {
  const layer = [node('a', 'dir'), node('a/f', 'file'), node('a/l', 'hardlink', { linkname: 'a/f' }), node('z', 'dir'), node('z/l', 'hardlink', { linkname: 'a/f' })];
  assert.equal(await planLinks(dir, [layer]), [
    ['a/f', 'file', 'a/f'],
    ['a/l', 'hardlink', 'a/f'],
    ['z/l', 'hardlink', 'a/f'],
  ]);
});

links('a link put before its file by a lower symlink becomes the file, and the file a link to it', async ({ dir }) => {
  // z -> b below: the upper layer's z/l lands at b/l, which sorts before its file c/f.
  const lower = [node('b', 'dir'), node('z', 'symlink', { linkname: 'b' })];
  const upper = [node('c', 'dir'), node('c/f', 'file'), node('z/l', 'hardlink', { linkname: 'c/f' })];
  assert.equal(await planLinks(dir, [lower, upper]), [
    ['b/l', 'file', 'c/f'],
    ['c/f', 'hardlink', 'b/l'],
  ]);
});
links.run();

const parents = suite<{ dir: string }>('layer merge: parents resolved');
parents.before.each((ctx) => {
  ctx.dir = tempDir('strata-merge-');
});
parents.after.each((ctx) => removeDir(ctx.dir));

/** Every entry of the plan, as path:type. */
async function planPaths(dir: string, layers: LayerEntry[][]): Promise<string[]> {
  const merge = new LayerMerge({ tmpDir: dir });
  try {
    for (const [i, entries] of layers.entries()) await merge.addLayer(() => entries, `l${i}`);
    return [...merge.plan().entries()].map((p) => `${p.entry.path}:${p.entry.type}`);
  } finally {
    merge.dispose();
  }
}

parents("a directory's parent resolution is kept across its subdirectories' entries, and dropped when the layer replaces it", async ({ dir }) => {
  // Below: p/d/up -> .. (so p/d/up/d is p/d itself), and p/e. The upper layer writes into p/d
  // (a directory, which goes with p/d), then, through p/d/up, replaces p/d with a symlink to e,
  // then writes p/d/b: that must be resolved again, through the new symlink, to p/e/b.
  const lower = [node('p', 'dir'), node('p/d', 'dir'), node('p/d/up', 'symlink', { linkname: '..' }), node('p/e', 'dir')];
  const upper = [node('p/d/a', 'dir'), node('p/d/up/d', 'symlink', { linkname: 'e' }), node('p/d/b', 'file')];
  const paths = await planPaths(dir, [lower, upper]);
  assert.equal(paths, ['.:dir', 'p:dir', 'p/d:symlink', 'p/e:dir', 'p/e/b:file'], 'p/d/b goes through the new symlink, not into the directory it replaced');
  // Siblings after a subdirectory's entries land in their own directory.
  const tree = [node('a', 'dir'), node('a/b', 'dir'), node('a/b/c', 'dir'), node('a/b/c/f', 'file'), node('a/b/g', 'file'), node('a/h', 'file')];
  assert.equal(await planPaths(dir, [tree]), ['.:dir', 'a:dir', 'a/b:dir', 'a/b/c:dir', 'a/b/c/f:file', 'a/b/g:file', 'a/h:file']);
});
parents("a file the layer wrote into a directory it then replaced with a symlink is refused in one line, naming both", async ({ dir }) => {
  // As above, with a file at p/d/a: it is left beneath the symlink p/d, where no output can put
  // it (umoci would drop it with the directory; strata refuses the layer, before any output).
  const lower = [node('p', 'dir'), node('p/d', 'dir'), node('p/d/up', 'symlink', { linkname: '..' }), node('p/e', 'dir')];
  const upper = [node('p/d/a', 'file'), node('p/d/up/d', 'symlink', { linkname: 'e' }), node('p/d/b', 'file')];
  try {
    await planPaths(dir, [lower, upper]);
    assert.unreachable('planned');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_LAYER_UNSAFE_PATH');
    assert.is((e as Error).message, "'p/d/a' lies beneath the symlink 'p/d'");
  }
});
parents.run();

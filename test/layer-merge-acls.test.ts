/**
 * store/layer/merge.ts, LayerMerge.aclEntries(): the entries with an ACL that the merged tree
 * keeps, which /.strata/acl.json lists. While few leaves carry one it answers without walking
 * the plan (from the leaves it tracked, the tree and the hides), so it is checked here against
 * that walk (walk(true), every final entry), on seeded random stacks that replace, white out,
 * hide behind opaque directories and reach through lower layers' symlinks; and on a stack with
 * more ACLs than it tracks, where it walks.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerMerge } from '../store/layer/merge.js';
import type { LayerEntry } from '../store/types.js';
import { comparePaths } from '../store/types.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('layer merge: the entries with an ACL');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-merge-acls-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const hasAcl = (e: LayerEntry) => Boolean(e.acl && (e.acl.access || e.acl.default));
/** What the ACL index keeps of an entry. */
const row = (e: LayerEntry) => [e.path, e.type, e.mode, e.gid, e.acl?.access ?? null, e.acl?.default ?? null];

/**
 * The two answers for `layers`, the leaves spilled past a small budget; undefined when the
 * merge refuses the stack (an unsafe layer: a loop of symlinks, a file written beneath a file).
 */
async function both(dir: string, layers: LayerEntry[][]): Promise<{ fast: unknown[]; walked: unknown[] } | undefined> {
  const merge = new LayerMerge({ tmpDir: dir, budget: 1 << 12 });
  try {
    let walked: unknown[];
    try {
      for (const [i, entries] of layers.entries()) await merge.addLayer(() => entries, `l${i}`);
      walked = [...merge.walk(true)].map((p) => p.entry).filter(hasAcl).map(row);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_LAYER_UNSAFE_PATH') throw e;
      return undefined;
    }
    return { fast: [...merge.aclEntries()].map(row), walked };
  } finally {
    merge.dispose();
  }
}

/** mulberry32: a small seeded generator, so a failure names the stack that made it. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ['a', 'b', 'lib', 'usr', 'x.y', 'x-y'];

/**
 * One random layer in canonical order: directories with files, symlinks (to directories of
 * the stack, relative or absolute), whiteouts and opaque markers, some with an ACL; nothing
 * below a file or symlink of its own.
 */
function randomLayer(rnd: () => number, layer: number): LayerEntry[] {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const acl = () => (rnd() < 0.4 ? { acl: rnd() < 0.8 ? { access: `user::rw-,group::r--,group:${layer}:rw-,mask::rw-,other::---` } : { default: 'user::rwx,group::r-x,other::---' } } : {});
  const entries = new Map<string, LayerEntry>();
  const base = { uid: 0, gid: layer, mtime: 0 };
  const grow = (dir: string, depth: number) => {
    const n = 1 + Math.floor(rnd() * 4);
    for (let i = 0; i < n; i++) {
      const name = pick(NAMES);
      const p = dir === '.' ? name : `${dir}/${name}`;
      if (entries.has(p)) continue;
      const r = rnd();
      if (r < 0.3 && depth < 3) {
        entries.set(p, { path: p, type: 'dir', mode: 0o755, size: 0, ...base, ...acl() });
        grow(p, depth + 1);
      } else if (r < 0.65) entries.set(p, { path: p, type: 'file', mode: 0o640, size: 1, ...base, ...acl() });
      else if (r < 0.8) {
        const target = pick(['usr', 'usr/lib', 'a', 'b/a', '/usr/lib', '../usr', '/a']);
        entries.set(p, { path: p, type: 'symlink', mode: 0o777, size: 0, linkname: target, ...base });
      } else if (r < 0.92) {
        const w = dir === '.' ? `.wh.${name}` : `${dir}/.wh.${name}`;
        entries.set(w, { path: w, type: 'file', mode: 0o600, size: 0, ...base });
      } else {
        const o = dir === '.' ? '.wh..wh..opq' : `${dir}/.wh..wh..opq`;
        entries.set(o, { path: o, type: 'file', mode: 0o600, size: 0, ...base });
      }
    }
  };
  grow('.', 0);
  if (rnd() < 0.3) entries.set('.', { path: '.', type: 'dir', mode: 0o755, size: 0, ...base, ...acl() });
  return [...entries.values()].sort((a, b) => comparePaths(a.path, b.path));
}

test('random stacks: the same entries, in the same order, as a walk of the plan', async ({ dir }) => {
  let compared = 0;
  let withAcls = 0;
  for (let seed = 1; seed <= 400; seed++) {
    const rnd = random(seed);
    const layers = Array.from({ length: 2 + Math.floor(rnd() * 4) }, (_, i) => randomLayer(rnd, i));
    const r = await both(dir, layers);
    if (!r) continue;
    compared++;
    if (r.walked.length > 0) withAcls++;
    assert.equal(r.fast, r.walked, `seed ${seed}`);
  }
  // The generator must give the check something to do: stacks the walk takes, most with ACLs.
  assert.ok(compared >= 200, `${compared} stacks compared`);
  assert.ok(withAcls >= 150, `${withAcls} of them with ACLs`);
});

test('what the upper layers do to a licensed file', async ({ dir }) => {
  const d = (path: string, more: Partial<LayerEntry> = {}): LayerEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, ...more });
  const f = (path: string, more: Partial<LayerEntry> = {}): LayerEntry => ({ path, type: 'file', mode: 0o640, uid: 0, gid: 7, mtime: 0, size: 1, ...more });
  const lic = { acl: { access: 'user::rw-,group::---,group:lic:r--,mask::r--,other::---' } };
  const lower = [d('opt'), d('opt/app'), f('opt/app/bin', lic), f('opt/app/key', lic), d('usr'), d('usr/lib'), f('usr/lib/x', lic)];
  const cases: Array<[string, LayerEntry[], string[]]> = [
    ['nothing above', [d('etc')], ['opt/app/bin', 'opt/app/key', 'usr/lib/x']],
    ['replaced by a file without one', [d('opt'), d('opt/app'), f('opt/app/key')], ['opt/app/bin', 'usr/lib/x']],
    ['replaced by a file with one', [d('opt'), d('opt/app'), f('opt/app/key', { ...lic, gid: 9 })], ['opt/app/bin', 'opt/app/key', 'usr/lib/x']],
    ['whited out', [d('opt'), d('opt/app'), f('opt/app/.wh.bin')], ['opt/app/key', 'usr/lib/x']],
    ['its directory whited out', [d('opt'), f('opt/.wh.app')], ['usr/lib/x']],
    ['behind an opaque directory', [d('opt'), d('opt/app'), f('opt/app/.wh..wh..opq'), f('opt/app/new')], ['usr/lib/x']],
    ['replaced by a directory', [d('opt'), d('opt/app'), d('opt/app/bin')], ['opt/app/key', 'usr/lib/x']],
    ['its directory replaced by a symlink', [d('opt'), { ...f('opt/app'), type: 'symlink', size: 0, linkname: '/usr' }], ['usr/lib/x']],
    ['reached through a symlink of the layer below', [d('usr'), { ...f('usr/l'), type: 'symlink', size: 0, linkname: 'lib' }], ['opt/app/bin', 'opt/app/key', 'usr/lib/x']],
  ];
  for (const [what, upper, want] of cases) {
    const r = (await both(dir, [lower, upper]))!;
    assert.ok(r, `${what}: the walk takes the stack`);
    assert.equal(r.fast, r.walked, what);
    assert.equal(r.fast.map((x) => (x as string[])[0]), want, what);
  }
  // A third layer writes through the second's symlink onto the licensed file: it replaces it.
  const link = [d('usr'), { ...f('usr/l'), type: 'symlink' as const, size: 0, linkname: 'lib' }];
  const r = (await both(dir, [lower, link, [d('usr'), f('usr/l/x')]]))!;
  assert.equal(r.fast, r.walked);
  assert.equal(r.fast.map((x) => (x as string[])[0]), ['opt/app/bin', 'opt/app/key']);
});

test('more ACLs than it keeps track of: the same entries, from the walk', async ({ dir }) => {
  const entries: LayerEntry[] = [{ path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }];
  for (let i = 0; i < 6000; i++) entries.push({ path: `d/f${String(i).padStart(5, '0')}`, type: 'file', mode: 0o640, uid: 0, gid: 0, mtime: 0, size: 1, acl: { access: 'user::rw-,group::r--,other::---' } });
  const upper: LayerEntry[] = [{ path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }, { path: 'd/.wh.f00007', type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: 0, size: 0 }];
  const r = (await both(dir, [entries, upper]))!;
  assert.is(r.walked.length, 5999);
  assert.equal(r.fast, r.walked);
});

test.run();

/**
 * store/layer/merge.ts, the leaves LayerMerge watches (LeafWatch): those with an ACL, which
 * aclEntries() lists for /.strata/acl.json, and the members of hard-link groups, from which
 * the plan chooses each group's leader. While they are few, which of them survive is found
 * without walking the plan (from the watched leaves, the tree and the hides); each answer is
 * checked here against the same merge told to watch nothing, which walks: on seeded random
 * stacks that replace, white out, hide behind opaque directories, reach through lower layers'
 * symlinks and link files; on named cases; and on a stack with more than it watches.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LayerMerge } from '../store/layer/merge.js';
import type { LayerEntry } from '../store/types.js';
import { comparePaths } from '../store/types.js';
import { seeded } from './helpers/random.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const test = suite<{ dir: string }>('layer merge: the leaves it watches');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-merge-watch-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const hasAcl = (e: LayerEntry) => Boolean(e.acl && (e.acl.access || e.acl.default));
/** What the ACL index keeps of an entry. */
const aclRow = (e: LayerEntry) => [e.path, e.type, e.mode, e.gid, e.acl?.access ?? null, e.acl?.default ?? null];
/** A planned file or link: path, type, layer, the path a link names, a file's body's path. */
const linkRow = (p: { entry: LayerEntry; layer: number; contentPath?: string }) => [p.entry.path, p.entry.type, p.layer, p.entry.linkname ?? null, p.contentPath ?? null];
const isLinkish = (p: { entry: LayerEntry }) => p.entry.type === 'file' || p.entry.type === 'hardlink';

interface Answers {
  acls: unknown[];
  /** The entries with an ACL that walk(true) gives: what `acls` must be. */
  aclsOfWalk: unknown[];
  /** The plan's files and links (walk()). */
  links: unknown[];
  /** The same as the layers hold them (walk(true)): where they differ, a group changed. */
  rawLinks: unknown[];
}

/** One merge's answers, its leaves spilled past a small budget; undefined when it refuses the stack. */
async function answers(dir: string, layers: LayerEntry[][], watch?: number): Promise<Answers | undefined> {
  const merge = new LayerMerge({ tmpDir: dir, budget: 1 << 12, watch });
  try {
    for (const [i, entries] of layers.entries()) await merge.addLayer(() => entries, `l${i}`);
    const acls = [...merge.aclEntries()].map(aclRow);
    const raw = [...merge.walk(true)];
    return {
      acls,
      aclsOfWalk: raw.map((p) => p.entry).filter(hasAcl).map(aclRow),
      links: [...merge.walk()].filter(isLinkish).map(linkRow),
      rawLinks: raw.filter(isLinkish).map(linkRow),
    };
  } catch (e) {
    // An unsafe layer (a loop of symlinks, a file written beneath a file): the walk's refusal.
    if ((e as { code?: string }).code !== 'ERR_LAYER_UNSAFE_PATH') throw e;
    return undefined;
  } finally {
    merge.dispose();
  }
}

/** The answers watched (`fast`) and walked, which must agree: both refuse, or both answer the same. */
async function both(dir: string, layers: LayerEntry[][]): Promise<{ fast: Answers; walked: Answers } | undefined> {
  const walked = await answers(dir, layers, 0);
  const fast = await answers(dir, layers);
  assert.is(fast === undefined, walked === undefined, 'both refuse the stack, or neither');
  if (!fast || !walked) return undefined;
  // Watching nothing still answers from the tree when no leaf has an ACL: both must be the walk's.
  assert.equal(walked.acls, walked.aclsOfWalk, 'unwatched: the ACLs of the walk');
  assert.equal(fast.acls, fast.aclsOfWalk, 'watched: the ACLs of the walk');
  return { fast, walked };
}

const NAMES = ['a', 'b', 'lib', 'usr', 'x.y', 'x-y'];

/**
 * One random layer in canonical order: directories with files, symlinks (to directories of
 * the stack, relative or absolute), whiteouts and opaque markers, some with an ACL, and hard
 * links to its own files (each after its file, as a tar holds them); nothing below a file or
 * symlink of its own.
 */
function randomLayer(rnd: () => number, layer: number): LayerEntry[] {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const acl = () => (rnd() < 0.4 ? { acl: rnd() < 0.8 ? { access: `user::rw-,group::r--,group:${layer}:rw-,mask::rw-,other::---` } : { default: 'user::rwx,group::r-x,other::---' } } : {});
  const entries = new Map<string, LayerEntry>();
  const base = { uid: 0, gid: layer, mtime: 0 };
  const dirs: string[] = [];
  const grow = (dir: string, depth: number) => {
    dirs.push(dir);
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
  // Hard links, each under a new name in a directory of this layer, after the file it names.
  const files = [...entries.values()].filter((e) => e.type === 'file' && !e.path.split('/').pop()!.startsWith('.wh.'));
  for (let i = Math.floor(rnd() * 4); i > 0 && files.length > 0; i--) {
    const file = pick(files);
    const dir = pick(dirs);
    const p = `${dir === '.' ? '' : `${dir}/`}${pick(['k', 'm', 'lnk', 'z'])}`;
    if (entries.has(p) || comparePaths(p, file.path) <= 0) continue;
    entries.set(p, { ...file, path: p, type: 'hardlink', size: 0, linkname: file.path });
  }
  if (rnd() < 0.3) entries.set('.', { path: '.', type: 'dir', mode: 0o755, size: 0, ...base, ...acl() });
  return [...entries.values()].sort((a, b) => comparePaths(a.path, b.path));
}

test('random stacks: the same ACL entries and the same hard-link groups as a walk of the plan', async ({ dir }) => {
  let compared = 0;
  let withAcls = 0;
  let groupsChanged = 0;
  for (let seed = 1; seed <= 400; seed++) {
    const rnd = seeded(seed);
    const layers = Array.from({ length: 2 + Math.floor(rnd() * 4) }, (_, i) => randomLayer(rnd, i));
    const r = await both(dir, layers);
    if (!r) continue;
    compared++;
    if (r.walked.acls.length > 0) withAcls++;
    const kinds = (rows: unknown[]) => JSON.stringify(rows.map((x) => { const [p, t, , to] = x as string[]; return [p, t, to]; }));
    if (kinds(r.walked.links) !== kinds(r.walked.rawLinks)) groupsChanged++;
    assert.equal(r.fast, r.walked, `seed ${seed}`);
  }
  // The generator must give the check something to do: stacks the walk takes, most with ACLs,
  // and many whose hard-link groups the upper layers change.
  assert.ok(compared >= 200, `${compared} stacks compared`);
  assert.ok(withAcls >= 150, `${withAcls} of them with ACLs`);
  assert.ok(groupsChanged >= 30, `${groupsChanged} of them with hard-link groups changed`);
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
    assert.equal(r.fast.acls.map((x) => (x as string[])[0]), want, what);
  }
  // A third layer writes through the second's symlink onto the licensed file: it replaces it.
  const link = [d('usr'), { ...f('usr/l'), type: 'symlink' as const, size: 0, linkname: 'lib' }];
  const r = (await both(dir, [lower, link, [d('usr'), f('usr/l/x')]]))!;
  assert.equal(r.fast, r.walked);
  assert.equal(r.fast.acls.map((x) => (x as string[])[0]), ['opt/app/bin', 'opt/app/key']);
});

test('what the upper layers do to a hard-link group', async ({ dir }) => {
  const d = (path: string): LayerEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 });
  const f = (path: string): LayerEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1 });
  const l = (path: string, to: string): LayerEntry => ({ ...f(path), type: 'hardlink', size: 0, linkname: to });
  const lower = [d('bin'), f('bin/gzip'), l('bin/gunzip', 'bin/gzip'), l('bin/zcat', 'bin/gzip'), d('usr'), d('usr/lib')];
  // [what, upper layer, the plan's files and links: path, type, the link's target or the file's body]
  const cases: Array<[string, LayerEntry[], string[][]]> = [
    ['nothing above', [d('etc')], [['bin/gunzip', 'hardlink', 'bin/gzip'], ['bin/gzip', 'file', 'bin/gzip'], ['bin/zcat', 'hardlink', 'bin/gzip']]],
    ['its file whited out', [d('bin'), f('bin/.wh.gzip')], [['bin/gunzip', 'file', 'bin/gzip'], ['bin/zcat', 'hardlink', 'bin/gunzip']]],
    ['its file replaced', [d('bin'), f('bin/gzip')], [['bin/gunzip', 'file', 'bin/gzip'], ['bin/gzip', 'file', 'bin/gzip'], ['bin/zcat', 'hardlink', 'bin/gunzip']]],
    ['a link replaced', [d('bin'), f('bin/zcat')], [['bin/gunzip', 'hardlink', 'bin/gzip'], ['bin/gzip', 'file', 'bin/gzip'], ['bin/zcat', 'file', 'bin/zcat']]],
    ['its directory whited out', [f('.wh.bin')], []],
  ];
  for (const [what, upper, want] of cases) {
    const r = (await both(dir, [lower, upper]))!;
    assert.ok(r, `${what}: the walk takes the stack`);
    assert.equal(r.fast, r.walked, what);
    assert.equal(r.fast.links.map((x) => { const [p, t, , to, body] = x as string[]; return [p, t, t === 'hardlink' ? to : body]; }), want, what);
  }
});

test('more ACLs than it keeps track of: the same entries, from the walk', async ({ dir }) => {
  const entries: LayerEntry[] = [{ path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }];
  for (let i = 0; i < 6000; i++) entries.push({ path: `d/f${String(i).padStart(5, '0')}`, type: 'file', mode: 0o640, uid: 0, gid: 0, mtime: 0, size: 1, acl: { access: 'user::rw-,group::r--,other::---' } });
  const upper: LayerEntry[] = [{ path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }, { path: 'd/.wh.f00007', type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: 0, size: 0 }];
  const r = (await both(dir, [entries, upper]))!;
  assert.is(r.walked.acls.length, 5999);
  assert.equal(r.fast, r.walked);
});

test('more hard links than it keeps track of: the same groups, from the walk', async ({ dir }) => {
  const d: LayerEntry = { path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };
  const f = (i: number): LayerEntry => ({ path: `d/f${String(i).padStart(5, '0')}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1 });
  const entries: LayerEntry[] = [d];
  for (let i = 0; i < 6000; i += 2) entries.push(f(i), { ...f(i + 1), type: 'hardlink', size: 0, linkname: f(i).path });
  // Each group's file whited out: every link becomes its group's file.
  const upper: LayerEntry[] = [d, ...Array.from({ length: 3000 }, (_, i) => ({ ...f(i * 2), path: `d/.wh.${f(i * 2).path.slice(2)}`, size: 0 }))];
  const r = (await both(dir, [entries, upper]))!;
  assert.is(r.walked.links.length, 3000);
  assert.ok(r.walked.links.every((x) => (x as string[])[1] === 'file'));
  assert.equal(r.fast, r.walked);
});

test.run();

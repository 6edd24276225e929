/**
 * The merge of layers with OCI semantics, as a tree built from the layers' headers before
 * anything is written, so each final path is written exactly once. Used by the composer (a
 * stack's layers) and by OCI image import (an image's layers become one module layer).
 *
 * - A layer's whiteouts (`.wh.<name>`) delete that path and everything below it from the
 *   layers beneath; an opaque marker (`.wh..wh..opq`) hides every lower child of its
 *   directory. Whiteouts never touch the layer that holds them.
 * - An upper entry replaces the lower entry whole (metadata, xattrs, ACLs). A directory over a
 *   directory keeps the lower children; anything else drops the lower subtree.
 * - An entry whose parent is missing gets an implicit directory (0755, root, mtime 0). A
 *   lower layer's symlink on the way is resolved inside the tree, as umoci and Docker do
 *   (Debian's merged /usr: `lib -> usr/lib`, an upper `lib/x.so` lands in usr/lib): absolute
 *   targets start at the root and `..` never leaves it, so nothing can point outside. An entry
 *   below a lower layer's file is refused.
 * - Hard links belong to their layer. If an upper layer replaced a group's first path, the
 *   first surviving member carries the content and the others link to it.
 */
import { StrataError, STORE_ERR } from '../errors.js';
import { baseName, printable, whiteoutTarget } from './path.js';
import { comparePaths, LayerEntry } from '../types.js';

export interface PlannedEntry {
  /** Final entry; for hard links, linkname is the final path of the group's file. */
  entry: LayerEntry;
  /** Index of the layer that provides it (layers.length for synthetic entries). */
  layer: number;
  /** For files: the path inside the layer's tar whose body is this file's content. */
  contentPath?: string;
}

export interface MergePlan {
  /** Every final entry, sorted by path (parents first), root first. */
  entries: PlannedEntry[];
  /** Per layer: content path in that layer's tar → final file path that takes it. */
  content: Array<Map<string, string>>;
}

export interface MergeNode {
  entry: LayerEntry;
  layer: number;
  /** `layer:path-in-layer` of the hard-link group this file or link belongs to. */
  group?: string;
  children?: Map<string, MergeNode>;
}

const ROOT_DEFAULT: LayerEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };

export function emptyTree(): MergeNode {
  return { entry: { ...ROOT_DEFAULT }, layer: -1, children: new Map() };
}

/** The files of a layer that hard links point at: their metadata outlives a whiteout of the path. */
export function hardLinkTargets(entries: LayerEntry[]): Map<string, LayerEntry> {
  const wanted = new Set(entries.filter((e) => e.type === 'hardlink').map((e) => e.linkname!));
  return new Map(entries.filter((e) => e.type === 'file' && wanted.has(e.path)).map((e) => [e.path, e]));
}

/** Applies one layer's entries (in canonical order) to the tree. Exported for tests. */
export function applyLayer(root: MergeNode, layer: number, entries: LayerEntry[], name: string): void {
  for (const e of entries) {
    const w = whiteoutTarget(e.path);
    if (!w) continue;
    if ('opaque' in w) {
      const dir = resolveDir(root, w.opaque, layer, name, e.path, false)?.node;
      if (dir?.children) for (const [k, child] of dir.children) if (child.layer < layer) dir.children.delete(k);
    } else {
      const parent = resolveDir(root, parentPath(w.hides), layer, name, e.path, false)?.node;
      const child = parent?.children?.get(baseName(w.hides));
      if (child && child.layer < layer) parent!.children!.delete(baseName(w.hides));
    }
  }
  for (const e of entries) {
    if (whiteoutTarget(e.path)) continue;
    if (e.path === '.') {
      root.entry = e;
      root.layer = layer;
      continue;
    }
    const dir = resolveDir(root, parentPath(e.path), layer, name, e.path, true)!.node;
    const key = baseName(e.path);
    const old = dir.children!.get(key);
    // Entries are the caller's fresh objects, owned by the tree from here on (no copy: a
    // large stack holds one object per entry, not several).
    const node: MergeNode = { entry: e, layer };
    if (e.type === 'dir') node.children = old?.entry.type === 'dir' ? old.children : new Map();
    if (e.type === 'file') node.group = `${layer}:${e.path}`;
    if (e.type === 'hardlink') node.group = `${layer}:${e.linkname}`;
    dir.children!.set(key, node);
  }
}

/** Symlinks followed while resolving one path, at most (as Linux's MAXSYMLINKS). */
const MAX_HOPS = 40;

/**
 * The directory node at `dir` (a path in the layer's terms), following lower layers' symlinks
 * inside the tree the way umoci's securejoin does: an absolute target starts again at the
 * root, `..` never climbs above it, and after MAX_HOPS links it gives up. With `create`,
 * missing directories are made (0755, root, mtime 0). A file (or device) in the way is an
 * error: nothing can be written beneath it. Returns the node and its path in the tree.
 */
function resolveDir(
  root: MergeNode,
  dir: string,
  layer: number,
  name: string,
  entryPath: string,
  create: boolean,
): { node: MergeNode; path: string } | undefined {
  const chain: Array<{ node: MergeNode; name: string }> = [];
  const pending = dir === '.' ? [] : dir.split('/');
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      chain.pop();
      continue;
    }
    const cur = chain.length > 0 ? chain[chain.length - 1]!.node : root;
    let next = cur.children!.get(part);
    if (!next) {
      if (!create) return undefined;
      next = { entry: { path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }, layer, children: new Map() };
      cur.children!.set(part, next);
    } else if (next.entry.type === 'symlink') {
      if (++hops > MAX_HOPS) {
        throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `layer ${name} writes '${printable(entryPath)}' through a loop of symlinks`, {
          hint: 'the lower layers\' symlinks point at each other',
        });
      }
      const target = next.entry.linkname ?? '';
      if (target.startsWith('/')) chain.length = 0;
      pending.unshift(...target.split('/'));
      continue;
    } else if (next.entry.type !== 'dir') {
      const at = [...chain.map((c) => c.name), part].join('/');
      throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `layer ${name} writes '${printable(entryPath)}' beneath the ${next.entry.type} '${printable(at)}' of a lower layer`, {
        hint: 'nothing can be written beneath a file; the upper layer must replace it with a directory entry',
      });
    }
    chain.push({ node: next, name: part });
  }
  return { node: chain.length > 0 ? chain[chain.length - 1]!.node : root, path: chain.length > 0 ? chain.map((c) => c.name).join('/') : '.' };
}

function parentPath(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

export function lookup(root: MergeNode, p: string): MergeNode | undefined {
  if (p === '.') return root;
  let n: MergeNode | undefined = root;
  for (const part of p.split('/')) {
    n = n?.children?.get(part);
    if (!n) return undefined;
  }
  return n;
}

export function flatten(root: MergeNode, linkTargets: Array<Map<string, LayerEntry>>): MergePlan {
  const nLayers = linkTargets.length;
  const entries: PlannedEntry[] = [];
  // A node's hard-link group names the layer and the path in that layer's tar, which may
  // differ from the final path when a lower symlink was resolved on the way.
  const groupOf = new Map<PlannedEntry, string>();
  const walk = (n: MergeNode, p: string) => {
    n.entry.path = p;
    const pe: PlannedEntry = { entry: n.entry, layer: Math.max(n.layer, 0) };
    entries.push(pe);
    if (n.group) groupOf.set(pe, n.group);
    if (!n.children) return;
    const names = [...n.children.keys()].sort((a, b) => comparePaths(a, b));
    for (const name of names) walk(n.children.get(name)!, p === '.' ? name : `${p}/${name}`);
  };
  const groups = new Map<string, PlannedEntry[]>();
  walk(root, '.');
  if (root.layer < 0) entries[0]!.layer = nLayers;
  // Hard-link groups: the surviving members, in final order.
  for (const pe of entries) {
    const g = groupOf.get(pe);
    if (g) (groups.get(g) ?? groups.set(g, []).get(g)!).push(pe);
  }
  const content: Array<Map<string, string>> = Array.from({ length: nLayers }, () => new Map());
  for (const [g, members] of groups) {
    const [layerText, ...rest] = g.split(':');
    const layer = Number(layerText);
    const leaderPath = rest.join(':');
    const leader = members[0]!;
    if (leader.entry.type === 'hardlink') {
      // The group's file was replaced or whited out above, or sorts after a link now: the
      // first surviving member takes its content and the inode's metadata.
      const src = members.find((m) => m.entry.type === 'file')?.entry ?? linkTargets[layer]!.get(leaderPath)!;
      leader.entry = { ...src, path: leader.entry.path, type: 'file', linkname: undefined };
    }
    leader.contentPath = leaderPath;
    content[layer]!.set(leaderPath, leader.entry.path);
    for (const m of members.slice(1)) m.entry = { ...m.entry, type: 'hardlink', size: 0, linkname: leader.entry.path };
  }
  return { entries, content };
}



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
 * - An entry whose parent is missing gets an implicit directory (0755, root, mtime 0); an entry
 *   below a symlink or a file of a lower layer is refused: writing through it could leave the
 *   tree, and resolving it would make the result depend on link targets.
 * - Hard links belong to their layer. If an upper layer replaced a group's first path, the
 *   first surviving member carries the content and the others link to it.
 */
import { StrataError, ERR } from './errors.js';
import { ancestors, baseName, printable, whiteoutTarget } from './layer-path.js';
import { comparePaths, LayerEntry } from './types.js';

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
      const dir = lookup(root, w.opaque);
      if (dir?.children) for (const [k, child] of dir.children) if (child.layer < layer) dir.children.delete(k);
    } else {
      const parent = lookup(root, parentPath(w.hides));
      const child = parent?.children?.get(baseName(w.hides));
      if (child && child.layer < layer) parent!.children!.delete(baseName(w.hides));
    }
  }
  for (const e of entries) {
    if (whiteoutTarget(e.path)) continue;
    if (e.path === '.') {
      root.entry = { ...e };
      root.layer = layer;
      continue;
    }
    let dir = root;
    for (const a of ancestors(e.path)) {
      const key = baseName(a);
      let next = dir.children!.get(key);
      if (!next) {
        next = { entry: { path: a, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }, layer, children: new Map() };
        dir.children!.set(key, next);
      } else if (next.entry.type !== 'dir') {
        const what = next.entry.type === 'symlink' ? 'the symlink' : `the ${next.entry.type}`;
        throw new StrataError(ERR.LAYER_UNSAFE_PATH, `layer ${name} writes '${printable(e.path)}' beneath ${what} '${printable(a)}' of a lower layer`, {
          hint: 'refusing to write through it; the upper layer must replace it with a directory entry',
        });
      }
      dir = next;
    }
    const key = baseName(e.path);
    const old = dir.children!.get(key);
    const node: MergeNode = { entry: { ...e }, layer };
    if (e.type === 'dir') node.children = old?.entry.type === 'dir' ? old.children : new Map();
    if (e.type === 'file') node.group = `${layer}:${e.path}`;
    if (e.type === 'hardlink') node.group = `${layer}:${e.linkname}`;
    dir.children!.set(key, node);
  }
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
  const walk = (n: MergeNode, p: string) => {
    entries.push({ entry: { ...n.entry, path: p }, layer: Math.max(n.layer, 0) });
    if (!n.children) return;
    const names = [...n.children.keys()].sort((a, b) => comparePaths(a, b));
    for (const name of names) walk(n.children.get(name)!, p === '.' ? name : `${p}/${name}`);
  };
  const groups = new Map<string, PlannedEntry[]>();
  walk(root, '.');
  if (root.layer < 0) entries[0]!.layer = nLayers;
  // Hard-link groups: the surviving members, in final order.
  for (const pe of entries) {
    const g = pe.entry.type === 'file' || pe.entry.type === 'hardlink' ? groupOf(pe) : undefined;
    if (g) (groups.get(g) ?? groups.set(g, []).get(g)!).push(pe);
  }
  const content: Array<Map<string, string>> = Array.from({ length: nLayers }, () => new Map());
  const files = new Map<string, PlannedEntry>();
  for (const pe of entries) if (pe.entry.type === 'file') files.set(`${pe.layer}:${pe.entry.path}`, pe);
  for (const [g, members] of groups) {
    const [layerText, ...rest] = g.split(':');
    const layer = Number(layerText);
    const leaderPath = rest.join(':');
    const leader = members[0]!;
    if (leader.entry.type === 'hardlink') {
      // The group's file was replaced or whited out above: the first surviving link takes its
      // content and the inode's metadata.
      const src = files.get(g)?.entry ?? linkTargets[layer]!.get(leaderPath)!;
      leader.entry = { ...src, path: leader.entry.path, type: 'file', linkname: undefined };
    }
    leader.contentPath = leaderPath;
    content[layer]!.set(leaderPath, leader.entry.path);
    for (const m of members.slice(1)) m.entry = { ...m.entry, type: 'hardlink', size: 0, linkname: leader.entry.path };
  }
  return { entries, content };
}

function groupOf(pe: PlannedEntry): string {
  return pe.entry.type === 'file' ? `${pe.layer}:${pe.entry.path}` : `${pe.layer}:${pe.entry.linkname}`;
}


/**
 * The merge of layers with OCI semantics, planned from the layers' headers before anything is
 * written, so each final path is written exactly once. Used by the composer (a stack's layers)
 * and by OCI image import (an image's layers become one module layer).
 *
 * - A layer's whiteouts (`.wh.<name>`) delete that path and everything below it from the
 *   layers beneath; an opaque marker (`.wh..wh..opq`) hides every lower child of its
 *   directory. Whiteouts never touch the layer that holds them (they are applied before its
 *   entries).
 * - An upper entry replaces the lower entry whole (metadata, xattrs, ACLs). A directory over a
 *   directory keeps the lower children; anything else drops the lower subtree.
 * - An entry whose parent is missing gets an implicit directory (0755, root, mtime 0). A
 *   lower layer's symlink on the way is resolved inside the tree, as umoci and Docker do
 *   (Debian's merged /usr: `lib -> usr/lib`, an upper `lib/x.so` lands in usr/lib): absolute
 *   targets start at the root and `..` never leaves it, so nothing can point outside. An entry
 *   below a lower layer's file is refused.
 * - Hard links belong to their layer. If an upper layer replaced a group's first path, the
 *   first surviving member carries the content and the others link to it.
 *
 * Memory does not grow with the number of files. Only directories and symlinks live in memory
 * (they are what paths resolve through); every other entry ("leaf") goes, under its final
 * path, into a SpillSorter (store/spill.ts) that moves to disk past its budget. What removes
 * leaves is kept as *hides*: "below path P (or at it), nothing of a layer under L survives",
 * one per whiteout, opaque marker or replaced directory. The plan is then one ordered walk
 * that merges the directory tree with the sorted leaves and drops what a hide covers; it is
 * re-run, not stored, each time a caller iterates the plan's entries.
 *
 * Hard-link groups go through sorters too: a layer's links by the path they name (which marks
 * its linked files as they come), the linked files' entries, and, once the layers are in, each
 * surviving member under its final path, sorted by group, which gives the group its leader.
 * The few leaves of a kind some callers need (those with an ACL, the members of hard-link
 * groups) are watched as they come (LeafWatch, at most 4,096 of each), so that finding which
 * of them survive takes no walk of the plan.
 *
 * Memory: the directories and symlinks of the stack and the hides, plus the sorters' budgets
 * and the watched leaves.
 */
import { createHash, type Hash } from 'node:crypto';
import { StrataError, STORE_ERR } from '../errors.js';
import { SpillSorter, defaultBudget, textCodec, type RecordCodec } from '../spill.js';
import { forEachItem } from '../map-items.js';
import { decodeEntry, encodeEntry, entrySize } from './entry-codec.js';
import { baseName, isBelow, parentOf, printable, whiteoutTarget } from './path.js';
import { comparePaths, LayerEntry } from '../types.js';

export interface PlannedEntry {
  /** Final entry; for hard links, linkname is the final path of the group's file. */
  entry: LayerEntry;
  /** Index of the layer that provides it (the number of layers for synthetic entries). */
  layer: number;
  /** For files: the path inside the layer's tar whose body is this file's content. */
  contentPath?: string;
}

/** A file of the plan as its layer holds it: the path of its body in the layer's tar. */
export interface PlannedFile {
  contentPath: string;
  entry: LayerEntry;
}

export interface MergePlan {
  /** Number of final entries. */
  readonly count: number;
  /** Bytes of file content the plan writes. */
  readonly bytes: number;
  /** The final root entry. */
  readonly root: LayerEntry;
  /** Every final entry, sorted by path (parents first), root first. Re-iterable. */
  entries(): Iterable<PlannedEntry>;
  /**
   * Every final entry but the regular files, in the same order: what a tree writer makes
   * before and after the contents (directories, symlinks, nodes, hard links). Kept aside when
   * the plan is fixed, so it costs what it holds, not a walk of the plan. Re-iterable.
   */
  others(): Iterable<PlannedEntry>;
  /** The files whose content is in layer `layer`, in that layer's canonical order. Re-iterable. */
  files(layer: number): Iterable<PlannedFile>;
  /** What the plan takes from layer `layer`, counted as the plan was made (no walk). */
  layerFiles(layer: number): LayerFiles;
  /** Removes the spill files. Call once the plan is no longer used. */
  dispose(): void;
}

/** The planned files of one layer: how many, their bytes, how many carry an ACL, and their fingerprint. */
export interface LayerFiles {
  count: number;
  bytes: number;
  acls: number;
  /**
   * sha256 (hex) of each planned file's path in the layer and size (`path\0size\n`), in the
   * plan's order: which bodies of the layer the plan takes, and how long each is. Only for a
   * layer of at most the `fingerprints` files plan() was asked for (else undefined).
   */
  digest?: string;
}

/**
 * A layer's entries in canonical order, read twice: first (`first` true) only its whiteouts and
 * hard links are needed (a source may give just those, or everything), then all of them.
 */
export type EntrySource = (first: boolean) => Iterable<LayerEntry> | AsyncIterable<LayerEntry>;

interface Node {
  entry: LayerEntry;
  layer: number;
  children?: Map<string, Node>;
}

/**
 * A leaf under its final path; `tarPath` when the layer holds it under another path; `linked`
 * for a file that hard links of its layer name.
 */
interface Leaf {
  entry: LayerEntry;
  layer: number;
  tarPath?: string;
  linked?: boolean;
}



/** Nothing of a layer below `layer` survives below `path`, nor at it when `self`. */
interface Hide {
  path: string;
  layer: number;
  self: boolean;
}

/**
 * A path resolution passed where nothing was in the tree (and, creating, made a directory):
 * a leaf of a lower layer alive there at that moment is an error, as in the layer's terms
 * something is written beneath a file.
 */
interface Claim {
  path: string;
  layer: number;
  name: string;
  entryPath: string;
}

const ROOT_DEFAULT: LayerEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };
/** Symlinks followed while resolving one path, at most (as Linux's MAXSYMLINKS). */
const MAX_HOPS = 40;
/**
 * The most leaves of one kind (LeafWatch: those with an ACL, the members of hard-link groups)
 * the merge keeps track of; past it, what needs them walks the plan instead.
 */
const WATCHED_LEAVES_MAX = 4096;

const hasAcl = (e: LayerEntry): boolean => Boolean(e.acl && (e.acl.access || e.acl.default));

/**
 * The leaves of one kind (those `keeps` picks) by final path, each dropped by any leaf pushed
 * after it at its path, while there are at most `max`; then it gives up (`leaves` undefined).
 * Of the leaves at one final path, the one pushed last is the only one that can survive: a hide
 * that covers it covers those pushed before it, which are of its layer or below. So the watched
 * leaves that survive are those no node of the tree took the place of and no hide of a layer
 * above covers (LayerMerge.surviving), found without a walk of the plan.
 */
class LeafWatch {
  leaves: Map<string, Leaf> | undefined = new Map();
  constructor(
    private readonly keeps: (l: Leaf) => boolean,
    private readonly max: number,
  ) {}

  /** A leaf pushed to the merge (nothing once the watch gave up). */
  push(leaf: Leaf): void {
    const leaves = this.leaves;
    if (!leaves) return;
    const at = leaf.entry.path;
    if (!this.keeps(leaf)) leaves.delete(at);
    else if (leaves.size < this.max || leaves.has(at)) leaves.set(at, leaf);
    else this.leaves = undefined;
  }
}

/** The hides by the path they lie at. */
function byPath(hides: readonly Hide[]): Map<string, Hide[]> {
  const m = new Map<string, Hide[]>();
  for (const h of hides) {
    const at = m.get(h.path);
    if (at) at.push(h);
    else m.set(h.path, [h]);
  }
  return m;
}

const leafCodec: RecordCodec<Leaf> = {
  encode: (l) => encodeEntry(l.entry, l.linked ? [l.layer, l.tarPath ?? null, 1] : l.tarPath === undefined ? [l.layer] : [l.layer, l.tarPath]),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    const [layer, tarPath, linked] = extra as [number, (string | null)?, 1?];
    const leaf: Leaf = { entry, layer };
    if (typeof tarPath === 'string') leaf.tarPath = tarPath;
    if (linked) leaf.linked = true;
    return leaf;
  },
  size: (l) => entrySize(l.entry) + (l.tarPath?.length ?? 0) * 2 + 32,
};

/** A planned entry with its content's path (the members of hard-link groups). */
const memberCodec: RecordCodec<PlannedEntry> = {
  encode: (p) => encodeEntry(p.entry, p.contentPath === undefined ? [p.layer] : [p.layer, p.contentPath]),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    const [layer, contentPath] = extra as [number, string?];
    return contentPath === undefined ? { entry, layer } : { entry, layer, contentPath };
  },
  size: (p) => entrySize(p.entry) + (p.contentPath?.length ?? 0) * 2 + 32,
};

const plannedCodec: RecordCodec<PlannedEntry> = {
  encode: (p) => encodeEntry(p.entry, p.layer),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    return { entry, layer: extra as number };
  },
  size: (p) => entrySize(p.entry) + 16,
};

const fileCodec: RecordCodec<PlannedFile> = {
  encode: (f) => encodeEntry(f.entry, f.contentPath === f.entry.path ? undefined : f.contentPath),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    return { entry, contentPath: (extra as string | undefined) ?? entry.path };
  },
  size: (f) => entrySize(f.entry) + 32,
};

export interface LayerMergeOptions {
  /** Directory for spill runs (strata's tmp/). */
  tmpDir: string;
  /** Bytes of leaves held in memory before they spill (default defaultBudget()). */
  budget?: number;
  /**
   * Called once, as soon as the layers have given `entries` entries: a caller that sizes its
   * memory by the plan acts before the plan's own allocations, the largest, are made.
   */
  large?: { entries: number; reached(): void };
  /** The most leaves of one kind kept track of (LeafWatch; default WATCHED_LEAVES_MAX; 0: always walk). */
  watch?: number;
}

export class LayerMerge {
  private readonly root: Node = { entry: { ...ROOT_DEFAULT }, layer: -1, children: new Map() };
  private readonly leaves: SpillSorter<Leaf>;
  private readonly hides: Hide[] = [];
  private readonly claims: Claim[] = [];
  /** Layers applied so far. */
  private nLayers = 0;
  /** The files hard links name, by layer and path in it (their metadata outlives a whiteout of the path). */
  private readonly linkedFiles: SpillSorter<Leaf>;
  /** Each surviving member of a hard-link group under its final path, as planned (groupMembers), once asked for. */
  private members: SpillSorter<PlannedEntry> | undefined;
  private readonly sorters: Array<SpillSorter<unknown>> = [];
  /** False while no entry of the layers applied so far carries an ACL (then none of the tree does). */
  private aclSeen = false;
  /** The leaves with an ACL (aclEntries()) and the members of hard-link groups (groupMembers()). */
  private readonly aclWatch: LeafWatch;
  private readonly linkWatch: LeafWatch;
  /** The hides by the path they lie at, once surviving() asked (forgotten when a layer is applied). */
  private hidesByPath: Map<string, Hide[]> | undefined;
  /** Entries the layers have given so far (LayerMergeOptions.large). */
  private taken = 0;

  constructor(private readonly opts: LayerMergeOptions) {
    this.leaves = new SpillSorter<Leaf>({ compare: (a, b) => comparePaths(a.entry.path, b.entry.path), codec: leafCodec, dir: opts.tmpDir, budget: opts.budget });
    this.sorters.push(this.leaves as SpillSorter<unknown>);
    this.linkedFiles = this.sorter<Leaf>((a, b) => a.layer - b.layer || comparePaths(a.entry.path, b.entry.path), leafCodec);
    const max = opts.watch ?? WATCHED_LEAVES_MAX;
    this.aclWatch = new LeafWatch((l) => hasAcl(l.entry), max);
    this.linkWatch = new LeafWatch((l) => l.entry.type === 'hardlink' || l.linked === true, max);
  }

  /** A sorter spilling to the merge's directory, disposed with it. */
  private sorter<T>(compare: (a: T, b: T) => number, codec: RecordCodec<T>, budget = this.opts.budget): SpillSorter<T> {
    const s = new SpillSorter<T>({ compare, codec, dir: this.opts.tmpDir, budget });
    this.sorters.push(s as SpillSorter<unknown>);
    return s;
  }

  /** Layers applied so far. */
  get layers(): number {
    return this.nLayers;
  }

  /**
   * Applies the next layer: `read` gives its entries in canonical order, and is called twice
   * (whiteouts and hard-link names first, then the entries).
   */
  async addLayer(read: EntrySource, name: string): Promise<void> {
    const layer = this.nLayers;
    this.hidesByPath = undefined;
    const linked = this.sorter<string>(comparePaths, textCodec);
    await forEachItem(read(true), (e) => {
      if (e.type === 'hardlink') linked.push(e.linkname!);
      const w = whiteoutTarget(e.path);
      if (!w) return;
      if ('opaque' in w) {
        const at = this.resolveDir(w.opaque, layer, name, e.path, false);
        if (at?.node.children) {
          for (const [k, child] of at.node.children) if (child.layer < layer) at.node.children.delete(k);
          this.hides.push({ path: at.path, layer, self: false });
        }
      } else {
        const at = this.resolveDir(parentOf(w.hides), layer, name, e.path, false);
        if (!at) return;
        const key = baseName(w.hides);
        const child = at.node.children!.get(key);
        if (child && child.layer < layer) at.node.children!.delete(key);
        this.hides.push({ path: join(at.path, key), layer, self: true });
      }
    });
    this.nLayers++;
    // The files the links name, met in path order as the entries come.
    const names = linked.count > 0 ? linked.sorted()[Symbol.iterator]() : undefined;
    let named = names?.next();
    // The parents resolved along the current path, outermost first: a layer's entries come in
    // path order, so siblings follow each other, and a directory's entries go on after those of
    // its subdirectories, whose resolutions are dropped as the path leaves them. Forgotten when a
    // node is replaced by another kind (a resolution may change).
    const resolved: Array<{ dir: string; at: { node: Node; path: string } }> = [];
    const parentAt = (dir: string, entryPath: string): { node: Node; path: string } => {
      for (let top = resolved.at(-1); top !== undefined; top = resolved.at(-1)) {
        if (top.dir === dir) return top.at;
        if (isBelow(dir, top.dir)) break;
        resolved.pop();
      }
      const at = this.resolveDir(dir, layer, name, entryPath, true)!;
      resolved.push({ dir, at });
      return at;
    };
    await forEachItem(read(false), (e) => {
      if (++this.taken === this.opts.large?.entries) this.opts.large.reached();
      if (whiteoutTarget(e.path)) return;
      if (hasAcl(e)) this.aclSeen = true;
      let isLinked = false;
      if (named && !named.done) {
        while (!named.done && comparePaths(named.value, e.path) < 0) named = names!.next();
        isLinked = e.type === 'file' && !named.done && named.value === e.path;
        if (isLinked) this.linkedFiles.push({ entry: e, layer });
      }
      if (e.path === '.') {
        this.root.entry = e;
        this.root.layer = layer;
        return;
      }
      const dir = parentOf(e.path);
      const at = parentAt(dir, e.path);
      const key = baseName(e.path);
      const finalPath = at.path === dir ? e.path : join(at.path, key);
      const old = at.node.children!.get(key);
      if (e.type === 'dir' || e.type === 'symlink') {
        // Entries are the caller's fresh objects, owned by the tree from here on.
        const node: Node = { entry: e, layer };
        if (e.type === 'dir') node.children = old?.entry.type === 'dir' ? old.children : new Map();
        else if (old?.children) this.hides.push({ path: finalPath, layer, self: false });
        if (e.type === 'symlink' || (old && old.entry.type !== 'dir')) resolved.length = 0;
        at.node.children!.set(key, node);
        return;
      }
      if (old) {
        resolved.length = 0;
        at.node.children!.delete(key);
        if (old.children) this.hides.push({ path: finalPath, layer, self: false });
      }
      const leaf: Leaf = { entry: finalPath === e.path ? e : { ...e, path: finalPath }, layer };
      if (finalPath !== e.path) leaf.tarPath = e.path;
      if (isLinked) leaf.linked = true;
      this.leaves.push(leaf);
      this.aclWatch.push(leaf);
      this.linkWatch.push(leaf);
    });
    linked.dispose();
  }

  /** True when `p` (a final path) is a directory of the tree so far. */
  isDir(p: string): boolean {
    return this.nodeAt(p)?.entry.type === 'dir';
  }

  /** The tree's node at `p` (a final path), if any. */
  private nodeAt(p: string): Node | undefined {
    if (p === '.') return this.root;
    let n: Node | undefined = this.root;
    for (const part of p.split('/')) {
      n = n?.children?.get(part);
      if (!n) return undefined;
    }
    return n;
  }

  /**
   * The final entries that carry an ACL, in path order, as the layers hold them: those of
   * walk(true). Where few leaves carry one (LeafWatch) they are found without that walk, which
   * reads every leaf of the stack back: the tree's nodes with an ACL, and each watched leaf that
   * survives. Errors in the layers that walk() reports are left for the plan's walk.
   */
  *aclEntries(): Generator<LayerEntry> {
    if (!this.aclSeen) return;
    const leaves = this.surviving(this.aclWatch);
    if (!leaves) {
      for (const { entry } of this.walk(true)) if (hasAcl(entry)) yield entry;
      return;
    }
    let i = 0;
    for (const { node, path } of dfs(this.root, '.')) {
      for (; i < leaves.length && comparePaths(leaves[i]!.entry.path, path) < 0; i++) yield leaves[i]!.entry;
      if (hasAcl(node.entry)) yield node.entry.path === path ? node.entry : { ...node.entry, path };
    }
    for (; i < leaves.length; i++) yield leaves[i]!.entry;
  }

  /**
   * The leaves `watch` kept that are final entries (those of walk(true)), in path order: each
   * one no node of the tree took the place of and no hide of a layer above it covers.
   * Undefined when the watch gave up.
   */
  private surviving(watch: LeafWatch): Leaf[] | undefined {
    if (!watch.leaves) return undefined;
    if (watch.leaves.size === 0) return [];
    const hidesAt = (this.hidesByPath ??= byPath(this.hides));
    // Hides that cover `p` lie at it or at one of its ancestors ('.' included).
    const covered = (p: string, layer: number) => {
      for (let at = p; ; at = parentOf(at)) {
        if (hidesAt.get(at)?.some((h) => h.layer > layer && (h.path !== p || h.self))) return true;
        if (at === '.') return false;
      }
    };
    return [...watch.leaves.values()]
      .filter((l) => !this.nodeAt(l.entry.path) && !covered(l.entry.path, l.layer))
      .sort((a, b) => comparePaths(a.entry.path, b.entry.path));
  }

  /**
   * The final entries of the layers applied so far, in path order. With `raw`, hard-link
   * groups are left as the layers hold them (no leader chosen), for callers that only look at
   * the entries' own metadata.
   */
  *walk(raw = false): Generator<PlannedEntry> {
    if (raw) {
      yield* this.survivors((top) => ({ entry: top.entry, layer: top.layer }));
      return;
    }
    const members = this.groupMembers()?.sorted()[Symbol.iterator]();
    let m = members?.next();
    yield* this.survivors((top) => {
      const e = top.entry;
      if (m && !m.done && m.value.entry.path === e.path) {
        const planned = m.value;
        m = members!.next();
        return planned;
      }
      return e.type === 'file' || e.type === 'hardlink' ? { entry: e, layer: top.layer, contentPath: top.tarPath ?? e.path } : { entry: e, layer: top.layer };
    });
  }

  /**
   * The members of hard-link groups that the plan changes, under their final paths, sorted:
   * a group's first survivor in path order (its leader) becomes the file if it was a link
   * (the group's file was whited out or replaced above, or sorts after it now), and every
   * other member a link to it. Found from the surviving members sorted by group (watched
   * while there are few, else from a walk of the survivors); none when the layers hold no
   * links, or when every group is as its layer made it.
   */
  private groupMembers(): SpillSorter<PlannedEntry> | undefined {
    if (this.members || this.linkedFiles.count === 0) return this.members;
    // Each surviving member, its tarPath the group's (the file's path in its layer's tar).
    const byGroup = this.sorter<Leaf>((a, b) => a.layer - b.layer || comparePaths(a.tarPath!, b.tarPath!) || comparePaths(a.entry.path, b.entry.path), leafCodec);
    // Whether a member lies elsewhere than its layer put it, and how many linked files survive.
    let moved = false;
    let filesKept = 0;
    const member = (top: Leaf): undefined => {
      const e = top.entry;
      if (e.type !== 'hardlink' && !top.linked) return undefined;
      if (top.tarPath !== undefined) moved = true;
      else if (e.type !== 'hardlink') filesKept++;
      byGroup.push({ entry: e, layer: top.layer, tarPath: e.type === 'hardlink' ? e.linkname! : top.tarPath ?? e.path });
      return undefined;
    };
    // The members that survive: those the merge watched, while few, else a walk of the plan.
    const watched = this.surviving(this.linkWatch);
    if (watched) watched.forEach(member);
    else for (const walk = this.survivors(member); !walk.next().done; );
    const members = (this.members = this.sorter<PlannedEntry>((a, b) => comparePaths(a.entry.path, b.entry.path), memberCodec));
    if (!moved && filesKept === this.linkedFiles.count) {
      // Every group's file survives where its layer put it, so it is still its group's first
      // name (a layer's links come after their file) and every surviving link names it: no
      // member changes.
      byGroup.dispose();
      return members;
    }
    const files = this.linkedFiles.sorted()[Symbol.iterator]();
    let f = files.next();
    let group: { layer: number; path: string; leader: string; file?: LayerEntry } | undefined;
    for (const { entry: e, layer, tarPath } of byGroup.sorted()) {
      const path = tarPath!;
      if (group?.layer === layer && group.path === path) {
        // A link that names the leader already is planned as its layer holds it (walk()).
        const unchanged = e.type === 'hardlink' && e.linkname === group.leader && e.size === 0;
        if (group.file && !unchanged) members.push({ entry: { ...e, type: 'hardlink', size: 0, linkname: group.leader }, layer });
        continue;
      }
      while (!f.done && (f.value.layer < layer || (f.value.layer === layer && comparePaths(f.value.entry.path, path) < 0))) f = files.next();
      const file = !f.done && f.value.layer === layer && f.value.entry.path === path ? f.value.entry : undefined;
      group = { layer, path, leader: e.path, file };
      if (file && e.type === 'hardlink') members.push({ entry: { ...file, path: e.path, type: 'file', linkname: undefined }, layer, contentPath: path });
    }
    byGroup.dispose();
    return members;
  }

  /**
   * The final entries in path order: the tree's nodes as they are, each surviving leaf as
   * `make` makes it (undefined: left out).
   */
  private *survivors(make: (top: Leaf) => PlannedEntry | undefined): Generator<PlannedEntry> {
    const nLayers = this.nLayers;
    const hides = [...this.hides].sort((a, b) => comparePaths(a.path, b.path));
    const claims = [...this.claims].sort((a, b) => comparePaths(a.path, b.path));
    const active: Hide[] = [];
    let hi = 0;
    let ci = 0;
    const leaves = this.leaves.sorted()[Symbol.iterator]();
    let leaf = leaves.next();
    const tree = dfs(this.root, '.');
    let node = tree.next();
    // The last leaf or symlink passed: nothing may follow below it (a layer that wrote into a
    // directory and then replaced it with a symlink leaves its own earlier leaves there).
    let lastPath: string | undefined;
    let lastType = '';
    const cands: Leaf[] = [];
    // Whether a hide of a layer in (from, to] covers `p`.
    const covered = (p: string, from: number, to: number) => active.some((h) => h.layer > from && h.layer <= to && (h.path !== p || h.self));

    while (!node.done || !leaf.done) {
      const p = node.done ? leaf.value!.entry.path : leaf.done ? node.value.path : comparePaths(node.value.path, leaf.value.entry.path) <= 0 ? node.value.path : leaf.value.entry.path;
      let n: Node | undefined;
      if (!node.done && node.value.path === p) {
        n = node.value.node;
        node = tree.next();
      }
      cands.length = 0;
      while (!leaf.done && leaf.value.entry.path === p) {
        cands.push(leaf.value);
        leaf = leaves.next();
      }
      while (active.length > 0 && !atOrBelow(p, active[active.length - 1]!.path)) active.pop();
      for (; hi < hides.length && comparePaths(hides[hi]!.path, p) <= 0; hi++) if (atOrBelow(p, hides[hi]!.path)) active.push(hides[hi]!);
      for (; ci < claims.length && comparePaths(claims[ci]!.path, p) <= 0; ci++) {
        const c = claims[ci]!;
        if (c.path !== p) continue;
        const blocker = [...cands].reverse().find((l) => l.layer < c.layer && !covered(p, l.layer, c.layer));
        if (blocker) {
          throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `layer ${c.name} writes '${printable(c.entryPath)}' beneath the ${blocker.entry.type} '${printable(p)}' of a lower layer`, {
            hint: 'nothing can be written beneath a file; the upper layer must replace it with a directory entry',
          });
        }
      }
      if (n) {
        if (n.entry.type === 'symlink') {
          lastPath = p;
          lastType = 'symlink';
        }
        yield { entry: n.entry.path === p ? n.entry : { ...n.entry, path: p }, layer: n.layer < 0 ? nLayers : n.layer };
        continue;
      }
      let top: Leaf | undefined;
      for (let i = cands.length - 1; i >= 0 && !top; i--) if (!covered(p, cands[i]!.layer, Infinity)) top = cands[i];
      if (!top) continue;
      if (lastPath !== undefined && atOrBelow(p, lastPath)) {
        throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `'${printable(p)}' lies beneath the ${lastType} '${printable(lastPath)}'`);
      }
      lastPath = p;
      lastType = top.entry.type;
      const planned = make(top);
      if (planned) yield planned;
    }
  }

  /**
   * Fixes the plan: one walk sorts each layer's files by their place in the layer, keeps every
   * other entry aside in path order (both spilling past the budget), and counts, per layer
   * too (`layerFiles`, fingerprinted for layers of at most `fingerprints` files). Apply no
   * layer after this.
   */
  plan({ fingerprints = 0 }: { fingerprints?: number } = {}): MergePlan {
    const nLayers = this.nLayers;
    const budget = Math.max(4 << 20, Math.floor((this.opts.budget ?? defaultBudget()) / Math.max(1, nLayers + 1)));
    const files = Array.from({ length: nLayers }, () => this.sorter<PlannedFile>((a, b) => comparePaths(a.contentPath, b.contentPath), fileCodec, budget));
    const perLayer = Array.from({ length: nLayers }, () => new LayerCount(fingerprints));
    // Pushed in path order already: the sort keeps that order (equal keys never meet).
    const others = this.sorter<PlannedEntry>((a, b) => comparePaths(a.entry.path, b.entry.path), plannedCodec, budget);
    let count = 0;
    let bytes = 0;
    let root: LayerEntry | undefined;
    for (const pe of this.walk()) {
      root ??= pe.entry;
      count++;
      if (pe.entry.type !== 'file') {
        others.push(pe);
        continue;
      }
      bytes += pe.entry.size;
      if (pe.layer < nLayers) {
        files[pe.layer]!.push({ contentPath: pe.contentPath!, entry: pe.entry });
        perLayer[pe.layer]!.add(pe.contentPath!, pe.entry);
      }
    }
    const summaries = perLayer.map((c) => c.done());
    return {
      count,
      bytes,
      root: root!,
      entries: () => ({ [Symbol.iterator]: () => this.walk() }),
      others: () => ({ [Symbol.iterator]: () => others.sorted() }),
      files: (layer) => ({ [Symbol.iterator]: () => files[layer]!.sorted() }),
      layerFiles: (layer) => ({ ...summaries[layer]! }),
      dispose: () => this.dispose(),
    };
  }

  dispose(): void {
    for (const s of this.sorters) s.dispose();
  }

  /**
   * The directory node at `dir` (a path in the layer's terms), following symlinks inside the
   * tree the way umoci's securejoin does: an absolute target starts again at the root, `..`
   * never climbs above it, and after MAX_HOPS links it gives up. With `create`, missing
   * directories are made (0755, root, mtime 0). Where nothing is in the tree a claim is
   * recorded: a lower layer's leaf there is an error, found by walk(). Returns the node and
   * its final path.
   */
  private resolveDir(dir: string, layer: number, name: string, entryPath: string, create: boolean): { node: Node; path: string } | undefined {
    const chain: Array<{ node: Node; name: string }> = [];
    const pending = dir === '.' ? [] : dir.split('/');
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        chain.pop();
        continue;
      }
      const cur = chain.length > 0 ? chain[chain.length - 1]!.node : this.root;
      let next = cur.children!.get(part);
      if (!next) {
        this.claims.push({ path: [...chain.map((c) => c.name), part].join('/'), layer, name, entryPath });
        if (!create) return undefined;
        next = { entry: { path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 }, layer, children: new Map() };
        cur.children!.set(part, next);
      } else if (next.entry.type === 'symlink') {
        if (++hops > MAX_HOPS) {
          throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `layer ${name} writes '${printable(entryPath)}' through a loop of symlinks`, {
            hint: "the lower layers' symlinks point at each other",
          });
        }
        const target = next.entry.linkname ?? '';
        if (target.startsWith('/')) chain.length = 0;
        pending.unshift(...target.split('/'));
        continue;
      }
      chain.push({ node: next, name: part });
    }
    return { node: chain.length > 0 ? chain[chain.length - 1]!.node : this.root, path: chain.length > 0 ? chain.map((c) => c.name).join('/') : '.' };
  }
}

/** One layer's LayerFiles as the plan's walk meets its files; the fingerprint given up past `max` files. */
class LayerCount {
  private count = 0;
  private bytes = 0;
  private acls = 0;
  private hash: Hash | undefined;
  private text = '';

  constructor(private readonly max: number) {
    if (max > 0) this.hash = createHash('sha256');
  }

  add(contentPath: string, e: LayerEntry): void {
    this.count++;
    this.bytes += e.size;
    if (e.acl) this.acls++;
    if (!this.hash) return;
    if (this.count > this.max) {
      this.hash = undefined;
      this.text = '';
      return;
    }
    this.text += `${contentPath}\0${e.size}\n`;
    if (this.text.length >= 1 << 16) {
      this.hash.update(this.text);
      this.text = '';
    }
  }

  done(): LayerFiles {
    const out: LayerFiles = { count: this.count, bytes: this.bytes, acls: this.acls };
    if (this.hash) out.digest = this.hash.update(this.text).digest('hex');
    return out;
  }
}

/** The tree's nodes in path order (children by comparePaths of their names), with their final paths. */
function* dfs(root: Node, rootPath: string): Generator<{ node: Node; path: string }> {
  // An explicit stack, children pushed in reverse: a recursive yield* would pass every node
  // up through one generator per level.
  const stack: Array<{ node: Node; path: string }> = [{ node: root, path: rootPath }];
  while (stack.length > 0) {
    const top = stack.pop()!;
    yield top;
    const children = top.node.children;
    if (!children || children.size === 0) continue;
    const names = [...children.keys()].sort(comparePaths);
    for (let i = names.length - 1; i >= 0; i--) stack.push({ node: children.get(names[i]!)!, path: join(top.path, names[i]!) });
  }
}

const atOrBelow = (p: string, dir: string) => p === dir || isBelow(p, dir);

function join(dir: string, name: string): string {
  return dir === '.' ? name : `${dir}/${name}`;
}


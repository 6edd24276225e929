/**
 * The hard links of a SquashFS image as the writer's finish() needs them, in memory bounded
 * whatever their number: the links themselves go through external sorters (store/spill.ts),
 * and each group (the names of one inode) has a fixed slot of 16 bytes in typed arrays.
 *
 * A group is a path some link names (its target), numbered in path order. Once every entry is
 * added, resolve() sorts the links by target, which counts each group's names, and writes two
 * sorted lists: the targets, and the links by their own path, each with its target's group and
 * its place in the order links were added (error messages name the first link in that order).
 * finish()'s two passes over the entries come in path order too, so each reads both lists
 * beside its walk with a cursor: an entry learns its group as it is met.
 *
 * Rarer shapes cost memory per link, as they did before (spec/squashfs.md, Inodes):
 * - a link naming another link: its target's group is folded into the group at the end of
 *   the chain, through Maps of such groups (the group each names, and the end it folds into),
 *   the latter kept for both passes;
 * - a link naming a path that sorts after it: the inode is written where the link is met, so
 *   the writer holds the target's record from the first pass to the second (writer.ts, early).
 * No hard links, no cost: the writer makes none of this until a link is added.
 */
import { comparePaths, SpillSorter, textCodec, type RecordCodec } from '../../../store/index.js';
import { StrataError, IMAGE_ERR } from '../errors.js';

/** A link as added: its path, the path it names, and how many links were added before it. */
interface AddedLink {
  link: string;
  target: string;
  seq: number;
}

/**
 * Both link records are `f64 seq, u32 n, UTF-8 text` (decoding this is about three times
 * faster than NUL-joined strings): an added link's `n` is its target's byte length, the text
 * the target then the link; a link row's `n` its group, the text its path.
 */
function linkBytes(seq: number, n: number, text: string): Buffer {
  const b = Buffer.allocUnsafe(12 + Buffer.byteLength(text));
  b.writeDoubleLE(seq, 0);
  b.writeUInt32LE(n, 8);
  b.write(text, 12);
  return b;
}

const addedCodec: RecordCodec<AddedLink> = {
  encode: (a) => linkBytes(a.seq, Buffer.byteLength(a.target), a.target + a.link),
  decode: (b) => {
    const t = b.readUInt32LE(8);
    return { seq: b.readDoubleLE(0), target: b.toString('utf8', 12, 12 + t), link: b.toString('utf8', 12 + t) };
  },
  size: (a) => 64 + 2 * (a.link.length + a.target.length),
};

/** A link as finish() reads it, by its path: the group of the path it names, and its seq. */
interface LinkRow {
  path: string;
  group: number;
  seq: number;
}

const linkCodec: RecordCodec<LinkRow> = {
  encode: (r) => linkBytes(r.seq, r.group, r.path),
  decode: (b) => ({ seq: b.readDoubleLE(0), group: b.readUInt32LE(8), path: b.toString('utf8', 12) }),
  size: (r) => 48 + 2 * r.path.length,
};

/** Where an inode was written: what a directory entry naming it needs. */
export interface Placed {
  ino: number;
  refBlock: number;
  refOffset: number;
  type: number;
}

/** Group state bits, for finish()'s first pass. */
const SEEN = 1; // its target was met, not a directory or a link
const NUMBERED = 2; // its inode has a number
const LATER = 4; // numbered where a link was met, before its target
const FOLDED = 8; // its target is a link: the group is part of another

/** Entries the writer cannot store (ERR_IMAGE_INPUT). */
const usage = (msg: string) => new StrataError(IMAGE_ERR.INPUT, msg);

export class HardLinks {
  private readonly added: SpillSorter<AddedLink>;
  /** The targets in path order (a group's number is its target's place in them). */
  private targets: SpillSorter<string> | undefined;
  private links: SpillSorter<LinkRow> | undefined;
  /** What walks are reading (closed when the next walk begins, or by dispose()). */
  private readonly reading: Array<Generator<unknown>> = [];
  private groups = 0;
  /** Per group: its link count (all its names) until its inode is written, then that inode's number. */
  private countOrIno = new Uint32Array(0);
  /** Per group: where its inode was written, and its type (0: not written yet). */
  private refBlock = new Float64Array(0);
  private refOffset = new Uint16Array(0);
  private type = new Uint8Array(0);
  private state = new Uint8Array(0);
  /** Groups whose target is a link → the group of the chain's end (only when there are such links). */
  private folded: Map<number, number> | undefined;

  constructor(private readonly scratchDir: string) {
    this.added = new SpillSorter<AddedLink>({ compare: (a, b) => comparePaths(a.target, b.target), codec: addedCodec, dir: scratchDir });
  }

  /** A hard link at `link` naming `target`. */
  add(link: string, target: string): void {
    this.added.push({ link, target, seq: this.added.count });
  }

  /**
   * Groups the links (once every entry is added, before the first pass): counts each group's
   * names and folds chains of links into the group of their end. Throws for a link whose chain
   * loops (the first such link added).
   */
  resolve(): void {
    // Targets come in order (their sorter only stores them); links in their targets' order,
    // which is theirs when a tree's links mirror another tree (a Spack view, a conda env).
    const targets = new SpillSorter<string>({ compare: comparePaths, codec: textCodec, dir: this.scratchDir });
    const links = new SpillSorter<LinkRow>({ compare: (a, b) => comparePaths(a.path, b.path), codec: linkCodec, dir: this.scratchDir });
    [this.targets, this.links] = [targets, links];
    let target: string | undefined;
    for (const { link, target: t, seq } of this.added.sorted()) {
      if (t !== target) {
        target = t;
        this.grow();
        this.countOrIno[this.groups++] = 1;
        targets.push(t);
      }
      this.countOrIno[this.groups - 1]!++;
      links.push({ path: link, group: this.groups - 1, seq });
    }
    this.added.dispose();
    this.foldChains();
  }

  /**
   * Links naming links (found by reading the targets beside the links; mostly none): each
   * named link's group is folded into the group at the end of its chain (the first path on it
   * that is not a link), found in memory, from a Map of the named links.
   */
  private foldChains(): void {
    /** The group of a named link → the group of the path it names. */
    const next = new Map<number, number>();
    for (const { self, link } of this.namedLinks()) next.set(self, link.group);
    if (next.size === 0) return;
    const folded = new Map<number, number>();
    const loops = new Set<number>();
    for (const self of next.keys()) {
      let g = self;
      for (let hops = 0; next.has(g) && hops <= next.size; hops++) g = next.get(g)!;
      if (next.has(g)) loops.add(self);
      else folded.set(self, g);
    }
    if (loops.size > 0) {
      let first: LinkRow | undefined;
      for (const link of this.linksOnce()) if (loops.has(link.group) && (!first || link.seq < first.seq)) first = link;
      throw usage(`hard link loop at ${first!.path}`);
    }
    for (const [self, end] of folded) {
      this.countOrIno[end]! += this.countOrIno[self]! - 1;
      this.state[self]! |= FOLDED;
    }
    this.folded = folded;
  }

  /** The targets in path order, each with its group. */
  private *targetGroups(): Generator<{ path: string; group: number }> {
    let group = 0;
    for (const path of this.targets!.sorted()) yield { path, group: group++ };
  }

  /**
   * The links in path order, a path added twice as a link once, as a Map of links would hold
   * it: the group of the last added, the seq of the first.
   */
  private *linksOnce(): Generator<LinkRow> {
    let at: LinkRow | undefined;
    let latest = -1;
    for (const row of this.links!.sorted()) {
      if (at?.path !== row.path) {
        if (at) yield at;
        at = { ...row };
        latest = row.seq;
        continue;
      }
      if (row.seq > latest) [at.group, latest] = [row.group, row.seq];
      at.seq = Math.min(at.seq, row.seq);
    }
    if (at) yield at;
  }

  /** The links that are targets too: each one's group as a target, and its row. */
  private *namedLinks(): Generator<{ self: number; link: LinkRow }> {
    const targets = this.targetGroups();
    try {
      let t = targets.next();
      for (const link of this.linksOnce()) {
        while (!t.done && comparePaths(t.value.path, link.path) < 0) t = targets.next();
        if (!t.done && t.value.path === link.path) yield { self: t.value.group, link };
      }
    } finally {
      targets.return(undefined);
    }
  }

  /**
   * A cursor over the targets and the links for a walk of the entries in path order: given
   * each entry that is not a directory, in order, the group it belongs to (a link's, its
   * target's), or -1.
   */
  walk(): (path: string, isLink: boolean) => number {
    this.closeReads();
    const targets = this.targets!.sorted();
    const links = this.links!.sorted();
    this.reading.push(targets, links);
    let target = targets.next();
    let targetGroup = 0;
    let link = links.next();
    return (path, isLink) => {
      let group = -1;
      if (isLink) {
        while (!link.done && comparePaths(link.value.path, path) < 0) link = links.next();
        for (; !link.done && link.value.path === path; link = links.next()) group = link.value.group;
        return group < 0 ? -1 : (this.folded?.get(group) ?? group);
      }
      for (; !target.done && comparePaths(target.value, path) < 0; targetGroup++) target = targets.next();
      if (target.done || target.value !== path) return -1;
      group = targetGroup++;
      target = targets.next();
      return this.state[group]! & FOLDED ? -1 : group;
    };
  }

  private closeReads(): void {
    for (const r of this.reading.splice(0)) r.return(undefined);
  }

  /** The first pass met the group's target. */
  meet(group: number): void {
    this.state[group]! |= SEEN;
  }

  /** True for a group numbered where one of its links was met, before its target. */
  numberedAtLink(group: number): boolean {
    return (this.state[group]! & LATER) !== 0;
  }

  /** Numbers the group's inode where one of its names is met: true the first time. */
  number(group: number, atLink: boolean): boolean {
    if (this.state[group]! & NUMBERED) return false;
    this.state[group]! |= atLink ? NUMBERED | LATER : NUMBERED;
    return true;
  }

  /**
   * After the first pass: throws for the first link added whose target was not met (missing,
   * a directory, or a link whose chain ends so).
   */
  checkTargets(): void {
    let missing = false;
    for (let g = 0; g < this.groups && !missing; g++) missing = (this.state[g]! & (SEEN | FOLDED)) === 0;
    if (!missing) return;
    const fails = (group: number) => !(this.state[this.folded?.get(group) ?? group]! & SEEN);
    const targets = new Map<number, string>();
    for (const { path, group } of this.targetGroups()) if (fails(group)) targets.set(group, path);
    let first: LinkRow | undefined;
    for (const link of this.linksOnce()) if (fails(link.group) && (!first || link.seq < first.seq)) first = link;
    throw usage(`hard link ${first!.path} points at ${targets.get(first!.group)!}, which is not in the image`);
  }

  /** The group's link count (until its inode is written). */
  nlink(group: number): number {
    return this.countOrIno[group]!;
  }

  /** Where the group's inode was written, if it was. */
  placed(group: number): Placed | undefined {
    const type = this.type[group]!;
    if (type === 0) return undefined;
    return { ino: this.countOrIno[group]!, refBlock: this.refBlock[group]!, refOffset: this.refOffset[group]!, type };
  }

  /** Records where the group's inode was written. */
  place(group: number, at: Placed): void {
    this.countOrIno[group] = at.ino;
    this.refBlock[group] = at.refBlock;
    this.refOffset[group] = at.refOffset;
    this.type[group] = at.type;
  }

  /** Room for one more group (the arrays double). */
  private grow(): void {
    if (this.groups < this.state.length) return;
    const n = Math.max(1024, this.state.length * 2);
    this.countOrIno = grown(this.countOrIno, new Uint32Array(n));
    this.refBlock = grown(this.refBlock, new Float64Array(n));
    this.refOffset = grown(this.refOffset, new Uint16Array(n));
    this.type = grown(this.type, new Uint8Array(n));
    this.state = grown(this.state, new Uint8Array(n));
  }

  /** Removes the spill files. Safe to call more than once. */
  dispose(): void {
    this.closeReads();
    this.added.dispose();
    this.targets?.dispose();
    this.links?.dispose();
  }
}

function grown<A extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(old: A, into: A): A {
  into.set(old);
  return into;
}

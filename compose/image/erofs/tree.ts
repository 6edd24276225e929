/**
 * The EROFS image's tree, laid out at finish() in bounded memory: the entries (files with
 * where their data went) come back from the external sorter in inode order and are read three
 * times, keeping only directories, hard-link groups and what is shared:
 *
 *  1. survey: the tree checks (parents, duplicates, hard links), each directory's size and
 *     link count, the most common mtime (the build time) and the xattrs two or more inodes
 *     share;
 *  2. placement: every inode's form and size, its slot (its nid) and the blocks of its late
 *     data; each name goes, with the nid it names, to a second sorter in directory order;
 *  3. writing: the same placement again, directory blocks from those names, inodes into a
 *     window of metadata blocks that are written once no later inode can land in them.
 *
 * Memory: a record per directory, 9 bytes per hard-link group (HardLinks; none per link), the
 * shared xattrs, the child names of the open directories, the sorters' budgets and the
 * metadata window. The bytes are those of laying the whole tree out in memory (spec/erofs.md).
 */
import { baseName as baseOf, compareNames, comparePaths, parentOf, decodeEntry, encodeEntry, entrySize, isBelow, SpillSorter, stringsCodec, textCodec, type LayerEntry, type RecordCodec } from '../../../store/index.js';
import { aclXattrFromText } from '../../../native/acl.js';
import { WideList } from '../shared/wide-list.js';
import {
  ADVISE,
  BLOCK_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  COMPACT_SIZE,
  DIRENT_SIZE,
  EXTENDED_SIZE,
  FT,
  INODE_SLOT,
  LAYOUT,
  LCLUSTER,
  LCLUSTER_INDEX_SIZE,
  LI_D0_CBLKCNT,
  MAX_SHARED_PER_INODE,
  NAME_MAX,
  NULL_ADDR,
  S_IF,
  XATTR_BODY_HEADER,
  XATTR_VALUE_MAX,
  align,
  encodeDevice,
  fullIndexOffset,
  splitXattrName,
  writeDirent,
  writeHeadIndex,
  writeInode,
  writeMapHeader,
  writeNonheadIndex,
  writeXattrEntry,
  xattrEntrySize,
} from './format.js';
import type { Spill, SpillRef } from './spill.js';
import { inputError as usage } from '../shared/entry-rules.js';

/** Block runs of a flat file: `count` blocks from `addr` (NULL_ADDR = a hole). */
export interface Run {
  addr: number;
  count: number;
}

/** One compressed extent: `lclusters` × 4096 bytes of the file (the last may be short). */
export interface Extent {
  lclusters: number;
  /** true: stored raw, one PLAIN lcluster per block from pblk on (pblk NULL_ADDR: the zero block). */
  plain: boolean;
  pblk: number;
  /** Compressed extents: blocks of the pcluster. */
  blocks: number;
}

export type FileData =
  | { kind: 'flat'; size: number; runs: Run[]; tail?: SpillRef; tailZero: boolean }
  | { kind: 'z'; size: number; extents: Extent[] };

/** One entry of the image: a name, and for a regular file where its data went. */
export interface Rec {
  /** The entry's place in inode order (inodeKey); rebuilt from the entry when read back. */
  key: string;
  entry: LayerEntry;
  data?: FileData;
}

/**
 * Inode order as a path order: a directory, then its other entries by name, then its
 * subdirectories by name, each with its own entries. Every component carries a flag that
 * sorts first, 0 for an entry that is not a directory and 1 for a directory, so comparePaths
 * (components by UTF-8 bytes, a parent before its children) puts keys in that order.
 */
export function inodeKey(path: string, dir: boolean): string {
  if (path === '.') return '';
  let key = '';
  let from = 0;
  for (;;) {
    const slash = path.indexOf('/', from);
    const last = slash < 0;
    key += (last && !dir ? '\u0000' : '\u0001') + (last ? path.slice(from) : path.slice(from, slash + 1));
    if (last) return key;
    from = slash + 1;
  }
}

export const compareRecs = (a: Rec, b: Rec): number => comparePaths(a.key, b.key);

/**
 * A file's data as the bytes of its record's extra: a kind byte (0 flat, 1 compressed), the
 * size, the count of runs or extents and each of them, every number an f64; a flat file's
 * then a flags byte (1 a tail, 2 a tail of zeros) and the tail's offset and length. Written
 * into one buffer reused for every record (the entry codec copies it at once); read back
 * without an array or a string in between: each of the three passes decodes every record.
 */
let dataOut = Buffer.allocUnsafe(4096);

function encodeData(d: FileData): Buffer {
  const n = d.kind === 'z' ? d.extents.length : d.runs.length;
  const len = d.kind === 'z' ? 13 + 25 * n : 13 + 16 * n + 17;
  if (dataOut.length < len) dataOut = Buffer.allocUnsafe(Math.max(len, 2 * dataOut.length));
  const b = dataOut;
  b[0] = d.kind === 'z' ? 1 : 0;
  b.writeDoubleLE(d.size, 1);
  b.writeUInt32LE(n, 9);
  let o = 13;
  if (d.kind === 'z') {
    for (const x of d.extents) {
      b.writeDoubleLE(x.lclusters, o);
      b[o + 8] = x.plain ? 1 : 0;
      b.writeDoubleLE(x.pblk, o + 9);
      b.writeDoubleLE(x.blocks, o + 17);
      o += 25;
    }
    return b.subarray(0, o);
  }
  for (const r of d.runs) {
    b.writeDoubleLE(r.addr, o);
    b.writeDoubleLE(r.count, o + 8);
    o += 16;
  }
  b[o] = (d.tail ? 1 : 0) | (d.tailZero ? 2 : 0);
  b.writeDoubleLE(d.tail?.off ?? 0, o + 1);
  b.writeDoubleLE(d.tail?.len ?? 0, o + 9);
  return b.subarray(0, o + 17);
}

function decodeData(b: Buffer): FileData {
  const size = b.readDoubleLE(1);
  const n = b.readUInt32LE(9);
  let o = 13;
  if (b[0] === 1) {
    if (b.length !== 13 + 25 * n) throw new Error(`EROFS record: ${b.length} bytes of data for ${n} extents`);
    const extents = new Array<Extent>(n);
    for (let i = 0; i < n; i++, o += 25) {
      extents[i] = { lclusters: b.readDoubleLE(o), plain: b[o + 8] === 1, pblk: b.readDoubleLE(o + 9), blocks: b.readDoubleLE(o + 17) };
    }
    return { kind: 'z', size, extents };
  }
  if (b.length !== 13 + 16 * n + 17) throw new Error(`EROFS record: ${b.length} bytes of data for ${n} runs`);
  const runs = new Array<Run>(n);
  for (let i = 0; i < n; i++, o += 16) runs[i] = { addr: b.readDoubleLE(o), count: b.readDoubleLE(o + 8) };
  const flags = b[o]!;
  const d: FileData = { kind: 'flat', size, runs, tailZero: (flags & 2) !== 0 };
  if (flags & 1) d.tail = { off: b.readDoubleLE(o + 1), len: b.readDoubleLE(o + 9) };
  return d;
}

export const recCodec: RecordCodec<Rec> = {
  encode: (r) => encodeEntry(r.entry, r.data ? encodeData(r.data) : undefined),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    const r: Rec = { key: inodeKey(entry.path, entry.type === 'dir'), entry };
    if (extra !== undefined) r.data = decodeData(extra as Buffer);
    return r;
  },
  size: (r) => entrySize(r.entry) + r.key.length * 2 + (r.data ? 64 + 32 * (r.data.kind === 'z' ? r.data.extents.length : r.data.runs.length) : 0),
};

/** A compressed file's extents as bytes (4 u32 each), for the table of first copies. */
export function encodeExtents(extents: Extent[]): Buffer {
  const b = Buffer.alloc(16 * extents.length);
  extents.forEach((x, i) => {
    b.writeUInt32LE(x.lclusters, 16 * i);
    b.writeUInt32LE(x.plain ? 1 : 0, 16 * i + 4);
    b.writeUInt32LE(x.pblk >>> 0, 16 * i + 8);
    b.writeUInt32LE(x.blocks, 16 * i + 12);
  });
  return b;
}

export function decodeExtents(b: Buffer): Extent[] {
  const out: Extent[] = [];
  for (let o = 0; o < b.length; o += 16) {
    out.push({ lclusters: b.readUInt32LE(o), plain: b.readUInt32LE(o + 4) === 1, pblk: b.readUInt32LE(o + 8), blocks: b.readUInt32LE(o + 12) });
  }
  return out;
}

const FILE_TYPE: Record<string, number> = { file: FT.REG, dir: FT.DIR, symlink: FT.LNK, char: FT.CHR, block: FT.BLK, fifo: FT.FIFO };
const MODE_TYPE: Record<string, number> = { file: S_IF.REG, dir: S_IF.DIR, symlink: S_IF.LNK, char: S_IF.CHR, block: S_IF.BLK, fifo: S_IF.FIFO };
const DEFAULT_ROOT: LayerEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };

interface XattrItem {
  index: number;
  suffix: Buffer;
  value: Buffer;
  key: string;
}

/** What the layout decided for one inode. */
interface Plan {
  extended: boolean;
  layout: number;
  shared: number[];
  inline: XattrItem[];
  xattrSize: number;
  /** Inode + xattr body. */
  fixed: number;
  /** Bytes after fixed: inline tail, chunk map or compressed index area. */
  extra: number;
  /** Inline data length (FLAT_INLINE). */
  inlineLen: number;
  size: number;
  /** raw_blkaddr / rdev / compressed blocks / chunk format. */
  u: number;
  chunkBits?: number;
  /** Chunk-based files: the block address of every chunk. */
  chunks?: number[];
  /** Where the late data goes (directory blocks, a long symlink, a tail in a block of its own). */
  late?: number;
}

/** A directory as the survey leaves it. */
interface DirInfo {
  size: number;
  nlink: number;
  nid: number;
}

interface Survey {
  dirs: Map<string, DirInfo>;
  /** The hard-link groups, when there are hard links, with the inodes laid out at a link. */
  links?: HardLinks;
  moved?: SpillSorter<Moved>;
  buildTime: number;
  sharedItems: XattrItem[];
  sharedId: Map<string, number>;
  sharedBytes: number;
}

/** A name in a directory, with the inode it names: directory blocks are built from these. */
interface Dirent {
  parent: string;
  /** inodeKey of the parent directory. */
  key: string;
  name: string;
  nid: number;
  type: number;
}

/**
 * A name as the dirent sorter spills it: nid (f64), type (u8), the parent's UTF-8 length (u32),
 * the parent, the name. The names of a directory come together, so decoding keeps the last
 * parent's inode key instead of building it again for each of its names.
 */
const direntCodec: RecordCodec<Dirent> = (() => {
  let lastParent = '';
  let lastKey = inodeKey('', true);
  return {
    encode: (d) => {
      const parentLen = Buffer.byteLength(d.parent);
      const b = Buffer.allocUnsafe(13 + parentLen + Buffer.byteLength(d.name));
      b.writeDoubleLE(d.nid, 0);
      b[8] = d.type;
      b.writeUInt32LE(parentLen, 9);
      b.write(d.parent, 13);
      b.write(d.name, 13 + parentLen);
      return b;
    },
    decode: (b) => {
      const parentLen = b.readUInt32LE(9);
      const parent = b.toString(undefined, 13, 13 + parentLen);
      if (parent !== lastParent) {
        lastParent = parent;
        lastKey = inodeKey(parent, true);
      }
      return { parent, key: lastKey, name: b.toString(undefined, 13 + parentLen), nid: b.readDoubleLE(0), type: b[8]! };
    },
    size: (d) => 96 + (d.parent.length + d.key.length + d.name.length) * 2,
  };
})();

export interface TreeInput {
  records: SpillSorter<Rec>;
  /** Hard links as added: grouped, then read again for the links' names (HardLinks). */
  links: SpillSorter<LinkRec>;
  tails: Spill;
  scratchDir: string;
  /** The first free byte after the file data (a block boundary). */
  pos: number;
  /** The compression algorithm of compressed files' map headers. */
  alg: number;
  /** The shared zero block (PLAIN extents of zeros point at it). */
  zeroBlock: number;
  /** Writes `b` (or the buffers of `b` one after the other) at `at`. */
  write(b: Uint8Array | readonly Uint8Array[], at: number): Promise<void>;
  /**
   * Told the layout once every inode and block is placed, before the metadata is written (the
   * writer's superblock needs nothing more); writeTree goes on when it settles. Nothing is
   * written below `pos` after that.
   */
  placed?(layout: TreeResult): Promise<void>;
}

export interface TreeResult {
  rootNid: number;
  inodes: number;
  buildTime: number;
  xattrBlkaddr: number;
  metaBlkaddr: number;
  /** Image size (a block boundary). */
  end: number;
  usedChunks: boolean;
}

/** Lays out and writes directories, shared xattrs and inodes after the file data. */
export async function writeTree(input: TreeInput): Promise<TreeResult> {
  const survey = await surveyTree(input, input.links.count > 0 ? groupLinks(input.links, input.scratchDir) : undefined);
  const links = survey.links;
  const dirents = new SpillSorter<Dirent>({ compare: (a, b) => comparePaths(a.key, b.key) || compareNames(a.name, b.name), codec: direntCodec, dir: input.scratchDir });
  try {
    // Placement: nids and late-data blocks, and every name with the nid it names.
    const placing = new Layout(input.pos, survey);
    let rootNid = 0;
    const addName = (path: string, nid: number, type: number) => {
      const parent = parentOf(path);
      dirents.push({ parent, key: inodeKey(parent, true), name: baseOf(path), nid, type });
    };
    for (const { rec, inode, group, nlink } of names(input.records, survey)) {
      const path = rec.entry.path;
      let nid: number;
      let type: number;
      if (inode) {
        nid = placing.place(inode, nlink).nid;
        type = FILE_TYPE[inode.entry.type]!;
        if (group >= 0) links!.nid[group] = nid;
        if (type === FT.DIR) {
          survey.dirs.get(path)!.nid = nid;
          const up = path === '.' ? nid : survey.dirs.get(parentOf(path))!.nid;
          dirents.push({ parent: path, key: rec.key, name: '.', nid, type: FT.DIR });
          dirents.push({ parent: path, key: rec.key, name: '..', nid: up, type: FT.DIR });
        }
      } else {
        nid = links!.nid[group]!;
        type = links!.flags[group]! & FT_MASK;
      }
      if (path === '.') rootNid = nid;
      else if (rec.entry.type !== 'hardlink') addName(path, nid, type);
    }
    // The links' names, now that every group's inode has its nid.
    if (links) for (const [path, group] of links.members()) addName(path, links.nid[group]!, links.flags[group]! & FT_MASK);
    if (rootNid > 0xffff) throw usage('the root directory does not fit the superblock');
    const lateEnd = placing.pos;
    const xattrBlkaddr = survey.sharedBytes > 0 ? lateEnd / BLOCK_SIZE : 0;
    const metaBlkaddr = (lateEnd + align(survey.sharedBytes, BLOCK_SIZE)) / BLOCK_SIZE;
    const layout = resultOf(rootNid, survey, xattrBlkaddr, metaBlkaddr, placing);
    await input.placed?.(layout);
    if (survey.sharedBytes > 0) {
      const shared = Buffer.alloc(survey.sharedBytes);
      let at = 0;
      for (const it of survey.sharedItems) at += writeXattrEntry(shared, at, it.index, it.suffix, it.value);
      await input.write(shared.subarray(0, at), lateEnd);
    }

    // Writing: the same placement again, now with every directory's names. The writes go on
    // behind it (WritesBehind); a tail at hand (Spill.readNow) is taken without a promise.
    const writing = new Layout(input.pos, survey);
    const writes = new WritesBehind(input.write);
    const meta = new MetaArea(metaBlkaddr * BLOCK_SIZE, writes);
    const named = dirents.sorted();
    let next = named.next();
    for (const { rec, inode, nlink } of names(input.records, survey)) {
      if (!inode) continue;
      const { nid, plan: p, ino } = writing.place(inode, nlink);
      const e = inode.entry;
      let inlineBytes: Buffer | undefined;
      if (e.type === 'dir') {
        // Block by block as the names come (a directory of a million names is 24 MB): the
        // full blocks written behind, up to DIR_WRITE bytes a write, the inline tail kept.
        const full = p.layout === LAYOUT.FLAT_INLINE ? p.size - p.inlineLen : p.size;
        const blocks = new DirBlocks();
        let off = 0;
        let run: Buffer[] = [];
        let runAt = 0;
        const flush = () => {
          if (run.length > 0) writes.push(run, p.late! * BLOCK_SIZE + runAt);
          run = [];
        };
        const emit = (b: Buffer) => {
          const head = Math.max(0, Math.min(b.length, full - off));
          if (head > 0) {
            if (run.length === 0) runAt = off;
            run.push(b.subarray(0, head));
          }
          if (head < b.length) inlineBytes = b.subarray(head);
          off += b.length;
          if (off - runAt >= DIR_WRITE) flush();
        };
        while (!next.done && next.value.key === rec.key) {
          const block = blocks.add(next.value);
          next = named.next();
          if (!block) continue;
          emit(block);
          if (writes.behind) await writes.catchUp();
        }
        emit(blocks.end());
        flush();
        if (off !== p.size) throw new Error(`EROFS writer: directory ${e.path} came out ${off} bytes, planned ${p.size}`);
      } else if (e.type === 'symlink') {
        const bytes = Buffer.from(e.linkname!);
        const full = p.layout === LAYOUT.FLAT_INLINE ? bytes.length - p.inlineLen : bytes.length;
        if (full > 0) writes.push(bytes.subarray(0, full), p.late! * BLOCK_SIZE);
        if (p.layout === LAYOUT.FLAT_INLINE) inlineBytes = bytes.subarray(full);
      } else if (p.late !== undefined) {
        const d = inode.data as Extract<FileData, { kind: 'flat' }>;
        // A copy: the write goes on behind, past the next read of the tails.
        writes.push(Buffer.from(input.tails.readNow(d.tail!) ?? (await input.tails.read(d.tail!))), p.late * BLOCK_SIZE);
      }
      if (p.layout === LAYOUT.FLAT_INLINE && !inlineBytes) {
        const d = inode.data as Extract<FileData, { kind: 'flat' }>;
        inlineBytes = input.tails.readNow(d.tail!) ?? (await input.tails.read(d.tail!));
      }
      // Most inodes are written straight into their metadata block; one larger than a block
      // (a long extent list, many xattrs) is made whole first.
      const at = nid * INODE_SLOT;
      const len = p.fixed + p.extra;
      const slot = meta.slot(at, len);
      const out = slot ?? Buffer.alloc(len);
      encodeWhole(out, inode, p, ino, writing.nlinkOf(inode, nlink), inlineBytes, input);
      if (!slot) meta.put(at, out);
      if (meta.due) meta.settle(writing.placer.openBlocks());
      if (writes.behind) await writes.catchUp();
    }
    meta.settle([], true);
    await writes.drain();
    const written = resultOf(rootNid, survey, xattrBlkaddr, metaBlkaddr, writing);
    for (const k of Object.keys(layout) as (keyof TreeResult)[]) {
      if (written[k] !== layout[k]) throw new Error(`EROFS writer: the metadata came out with ${k} ${written[k]}, placed as ${layout[k]}`);
    }
    return layout;
  } finally {
    dirents.dispose();
    survey.moved?.dispose();
    links?.dispose();
  }
}

/** What a pass of the layout (the placement's, then the writing's) gives the superblock. */
function resultOf(rootNid: number, survey: Survey, xattrBlkaddr: number, metaBlkaddr: number, pass: Layout): TreeResult {
  return {
    rootNid,
    inodes: pass.ino,
    buildTime: survey.buildTime,
    xattrBlkaddr,
    metaBlkaddr,
    end: align(metaBlkaddr * BLOCK_SIZE + pass.placer.size, BLOCK_SIZE),
    usedChunks: pass.usedChunks,
  };
}

/** The records in inode order, the root first (a default one when none was added). */
function* inOrder(records: SpillSorter<Rec>): Generator<Rec> {
  let first = true;
  for (const r of records.sorted()) {
    if (first && r.entry.path !== '.') yield { key: '', entry: DEFAULT_ROOT };
    first = false;
    yield r;
  }
  if (first) yield { key: '', entry: DEFAULT_ROOT };
}

/** A name in inode order, with the inode laid out at it and its hard-link group (-1: none). */
interface Name {
  rec: Rec;
  inode: Rec | undefined;
  group: number;
  /** The inode's names (a directory's link count is the survey's). */
  nlink: number;
}

/**
 * The names of the image in inode order, with the inode laid out at each: an inode comes with
 * the first of its names (a hard link's target may come with a link that sorts before it).
 * Hard links come only where an inode is laid out: the others' names are their group's
 * (HardLinks.members).
 */
function* names(records: SpillSorter<Rec>, s: Survey): Generator<Name> {
  const links = s.links;
  if (!links) {
    for (const rec of inOrder(records)) yield { rec, inode: rec, group: -1, nlink: 1 };
    return;
  }
  const walk = new LinkWalk(links, s.moved);
  try {
    for (const rec of inOrder(records)) {
      if (rec.entry.type === 'hardlink') {
        const moved = walk.movedAt(rec.key);
        if (moved) yield { rec, inode: moved.rec, group: moved.group, nlink: moved.nlink };
        continue;
      }
      const owner = walk.seek(rec.key);
      if (!owner) yield { rec, inode: rec, group: -1, nlink: 1 };
      else yield { rec, inode: links.flags[owner.group]! & MOVED ? undefined : rec, group: owner.group, nlink: owner.nlink };
    }
  } finally {
    walk.close();
  }
}

// ---------------------------------------------------------------------------------------
// Hard links, in memory bounded whatever their number. Links are grouped by the path they
// name, the group's owner: sorted by that path (as added, through the writer's sorter), each
// run of links is a group. A group is a slot in two typed arrays (9 bytes); what is per name
// goes through sorters and is read beside the records in inode order (LinkWalk): the owners
// with their link count (`owners`), and the inodes whose first name in inode order is a link
// (`moved`, found by the survey and laid out at that link). The links' own names go into the
// directories after placement, from the sorted links, with their group's nid.
//
// That grouping is right when no link names a link (or itself) and no path is a link twice,
// as compose's plan guarantees. Otherwise (the walk meets a link that is an owner, or a
// survey that failed finds it so) the links are grouped in memory as they were before,
// following chains and refusing loops (groupInMemory), and the survey runs again.

/** A hard link as added: its path, the path it names (`key`: that path's inodeKey as a non-directory), the links added before it. */
export interface LinkRec {
  key: string;
  path: string;
  target: string;
  seq: number;
}

/**
 * The inode a group of links names, under its path's inodeKey: its names (the links and its
 * own), its first name in inode order when that is a link (else ''), and the link its errors
 * name (the first added) with the path that link names.
 */
interface Owner {
  key: string;
  path: string;
  group: number;
  nlink: number;
  first: string;
  link: string;
  target: string;
  seq: number;
}

/** A target not met as a non-directory, looked for as a directory (its inodeKey as one). */
interface Probe {
  key: string;
  path: string;
  link: string;
}

/** An inode laid out at a link, its first name (`path`, `key` its inodeKey). */
interface Moved {
  key: string;
  path: string;
  group: number;
  nlink: number;
  rec: Rec;
}

const byKey = (a: { key: string }, b: { key: string }): number => comparePaths(a.key, b.key);
export const compareLinks = byKey;
const strings = stringsCodec<string[]>();

/** Records of paths as NUL-joined strings, their inode keys (which hold NULs) rebuilt when read back. */
export const linkCodec: RecordCodec<LinkRec> = {
  encode: (l) => strings.encode([l.path, l.target, String(l.seq)]),
  decode: (b) => {
    const [path, target, seq] = strings.decode(b) as [string, string, string];
    return { key: inodeKey(target, false), path, target, seq: Number(seq) };
  },
  size: (l) => 96 + 2 * (l.key.length + l.path.length + l.target.length),
};

const ownerCodec: RecordCodec<Owner> = {
  encode: (o) => strings.encode([o.path, String(o.group), String(o.nlink), o.first, o.link, o.target, String(o.seq)]),
  decode: (b) => {
    const [path, group, nlink, first, link, target, seq] = strings.decode(b) as [string, string, string, string, string, string, string];
    return { key: inodeKey(path, false), path, group: Number(group), nlink: Number(nlink), first, link, target, seq: Number(seq) };
  },
  size: (o) => 160 + 2 * (o.key.length + o.path.length + o.first.length + o.link.length + o.target.length),
};

const probeCodec: RecordCodec<Probe> = {
  encode: (p) => strings.encode([p.path, p.link]),
  decode: (b) => {
    const [path, link] = strings.decode(b) as [string, string];
    return { key: inodeKey(path, true), path, link };
  },
  size: (p) => 80 + 2 * (p.key.length + p.path.length + p.link.length),
};

/** f64 group, f64 link count, u32 length and the path (UTF-8), then the record. */
const movedCodec: RecordCodec<Moved> = {
  encode: (m) => {
    const rec = recCodec.encode(m.rec);
    const path = Buffer.from(m.path);
    const b = Buffer.allocUnsafe(20 + path.length + rec.length);
    b.writeDoubleLE(m.group, 0);
    b.writeDoubleLE(m.nlink, 8);
    b.writeUInt32LE(path.length, 16);
    path.copy(b, 20);
    rec.copy(b, 20 + path.length);
    return b;
  },
  decode: (b) => {
    const end = 20 + b.readUInt32LE(16);
    const path = b.toString('utf8', 20, end);
    return { key: inodeKey(path, false), path, group: b.readDoubleLE(0), nlink: b.readDoubleLE(8), rec: recCodec.decode(b.subarray(end)) };
  },
  size: (m) => 64 + 2 * (m.key.length + m.path.length) + recCodec.size(m.rec),
};

/** Low bits of HardLinks.flags: the FT of the group's inode. */
const FT_MASK = 0x7;
/** The group's first name is a link: the inode is laid out there. */
const MOVED = 0x8;

/** The groups of hard links: per group a slot in `nid` and `flags`, per name a record in the sorters. */
class HardLinks {
  /** Per group: its inode's nid (placement). */
  readonly nid: Float64Array;
  /** Per group: FT | MOVED (survey). */
  readonly flags: Uint8Array;

  constructor(
    readonly owners: SpillSorter<Owner>,
    groups: number,
    /** Where the links' groups are read from: the links as added (a run each), or the map groupInMemory made. */
    private readonly added: SpillSorter<LinkRec> | Map<string, number>,
  ) {
    this.nid = new Float64Array(groups);
    this.flags = new Uint8Array(groups);
  }

  /** Every link's path with its group. */
  *members(): Generator<[string, number]> {
    if (this.added instanceof Map) {
      yield* this.added;
      return;
    }
    let group = -1;
    let key: string | undefined;
    for (const l of this.added.sorted()) {
      if (l.key !== key) {
        key = l.key;
        group++;
      }
      yield [l.path, group];
    }
  }

  /**
   * Whether the groups are right: no link's path is an owner (a link naming a link, or itself)
   * and no path is a link twice. Asked only when a survey failed: one that walks to the end
   * has met every link and found none an owner, and a path twice fails it. The links are
   * sorted by their own paths for it.
   */
  direct(dir: string): boolean {
    if (this.added instanceof Map) return true;
    const paths = new SpillSorter<string>({ compare: comparePaths, codec: textCodec, dir });
    const os = this.owners.sorted();
    try {
      for (const l of this.added.sorted()) paths.push(inodeKey(l.path, false));
      let o = os.next();
      let prev: string | undefined;
      for (const key of paths.sorted()) {
        if (key === prev) return false;
        prev = key;
        while (!o.done && comparePaths(o.value.key, key) < 0) o = os.next();
        if (!o.done && o.value.key === key) return false;
      }
      return true;
    } finally {
      os.return(undefined);
      paths.dispose();
    }
  }

  dispose(): void {
    this.owners.dispose();
  }
}

/** Groups the links as added by the path they name (right unless HardLinks.direct says otherwise). */
function groupLinks(links: SpillSorter<LinkRec>, dir: string): HardLinks {
  const owners = new SpillSorter<Owner>({ compare: byKey, codec: ownerCodec, dir });
  try {
    let groups = 0;
    let owner: Owner | undefined;
    let firstKey = '';
    for (const l of links.sorted()) {
      if (owner?.key !== l.key) {
        if (owner) owners.push(owner);
        owner = { key: l.key, path: l.target, group: groups++, nlink: 1, first: '', link: l.path, target: l.target, seq: l.seq };
        firstKey = l.key;
      }
      owner.nlink++;
      const key = inodeKey(l.path, false);
      if (comparePaths(key, firstKey) < 0) [owner.first, firstKey] = [l.path, key];
    }
    owners.push(owner!);
    return new HardLinks(owners, groups, links);
  } catch (e) {
    owners.dispose();
    throw e;
  }
}

/**
 * Groups links some of which name links (followed to a path that is not one; a loop is
 * refused) or share a path (the last added counts), as a map of links did before: the shapes
 * compose's plan never gives, grouped in memory, a few strings per link.
 */
function groupInMemory(links: SpillSorter<LinkRec>, dir: string): HardLinks {
  const targetOf = new Map<string, string>();
  for (const l of [...links.sorted()].sort((a, b) => a.seq - b.seq)) targetOf.set(l.path, l.target);
  const byPath = new Map<string, Owner>();
  const groupOf = new Map<string, number>();
  let seq = 0;
  for (const [path, target] of targetOf) {
    let t = target;
    for (let hops = 0; targetOf.has(t); hops++) {
      if (hops > targetOf.size) throw usage(`hard link loop at ${path}`);
      t = targetOf.get(t)!;
    }
    let o = byPath.get(t);
    if (!o) byPath.set(t, (o = { key: inodeKey(t, false), path: t, group: byPath.size, nlink: 1, first: '', link: path, target, seq }));
    o.nlink++;
    if (comparePaths(inodeKey(path, false), inodeKey(o.first || t, false)) < 0) o.first = path;
    groupOf.set(path, o.group);
    seq++;
  }
  const owners = new SpillSorter<Owner>({ compare: byKey, codec: ownerCodec, dir });
  for (const o of byPath.values()) owners.push(o);
  return new HardLinks(owners, byPath.size, groupOf);
}

/**
 * A walk's cursors over the groups, beside the records in inode order: the owner a record is,
 * the inode laid out at a link. Owners passed over (not met as a non-directory) go to
 * `missed`.
 */
class LinkWalk {
  private readonly owners: Generator<Owner>;
  private readonly moved: Generator<Moved> | undefined;
  private owner: IteratorResult<Owner>;
  private next: IteratorResult<Moved> | undefined;

  constructor(
    links: HardLinks,
    moved: SpillSorter<Moved> | undefined,
    private readonly missed?: (o: Owner) => void,
  ) {
    this.owners = links.owners.sorted();
    this.owner = this.owners.next();
    this.moved = moved?.sorted();
    this.next = this.moved?.next();
  }

  /** The owner whose key is `key`, if any, past the ones before it (all of them when undefined). */
  seek(key: string | undefined): Owner | undefined {
    while (!this.owner.done && (key === undefined || comparePaths(this.owner.value.key, key) < 0)) {
      this.missed?.(this.owner.value);
      this.owner = this.owners.next();
    }
    if (this.owner.done || this.owner.value.key !== key) return undefined;
    const o = this.owner.value;
    this.owner = this.owners.next();
    return o;
  }

  /** The inode laid out at the link `key`, if it is one's first name (links come in inode order). */
  movedAt(key: string): Moved | undefined {
    if (!this.next || this.next.done || this.next.value.key !== key) return undefined;
    const m = this.next.value;
    this.next = this.moved!.next();
    return m;
  }

  /** Closes the sorters' run files (a walk may stop early). */
  close(): void {
    this.owners.return(undefined);
    this.moved?.return(undefined);
  }
}

/**
 * An open directory during the survey: its names so far, each list in name order (its other
 * entries, with their types, come before its subdirectories); a wide directory's go through
 * spilling queues (WideList), so its names do not all stay in memory.
 */
interface Frame {
  path: string;
  files: WideList<string>;
  types: WideList<string>;
  dirs: WideList<string>;
}

/**
 * The survey, and the hard-link groups it was made with: groupLinks' when they are right,
 * else groupInMemory's (the survey runs again with those). A hard link's target not met as a
 * non-directory fails the build with the first error the walk meets: a link naming a
 * directory is refused at that directory, but the walk only learns that no file of that path
 * came once it has passed the directory's place among its parent's files. So when a target
 * was not met, the walk runs again knowing the directories to look for. Disposes `links` when
 * it throws or replaces them.
 */
async function surveyTree(input: TreeInput, links: HardLinks | undefined): Promise<Survey> {
  if (!links) return (await survey(input, undefined))!;
  const missed = new SpillSorter<Probe>({ compare: byKey, codec: probeCodec, dir: input.scratchDir });
  try {
    let failure: unknown;
    try {
      const s = await survey(input, links, missed);
      if (s) return s;
    } catch (e) {
      failure = e;
    }
    if (failure !== undefined && links.direct(input.scratchDir)) {
      if (missed.count === 0) throw failure;
      await survey(input, links, undefined, missed.sorted());
      throw failure; // not reached: a target is missing, so that survey fails too
    }
  } catch (e) {
    links.dispose();
    throw e;
  } finally {
    missed.dispose();
  }
  links.dispose();
  return surveyTree(input, groupInMemory(input.links, input.scratchDir));
}

/**
 * One walk of the survey. With hard links it also learns each group's inode type and keeps
 * the inodes laid out at a link (`moved`); targets not met go to `missed`, or with `probes`
 * (those targets again, as directories) a directory among them is refused where it is met.
 * Undefined when a link is an owner (the groups are wrong: surveyTree).
 */
async function survey(input: TreeInput, links: HardLinks | undefined, missed?: SpillSorter<Probe>, probes?: Generator<Probe>): Promise<Survey | undefined> {
  const dirs = new Map<string, DirInfo>();
  const mtimes = new Map<number, number>();
  const xattrKeys = new SpillSorter<string>({
    compare: (a, b) => (a < b ? -1 : a > b ? 1 : 0),
    codec: textCodec,
    dir: input.scratchDir,
  });
  let moved: SpillSorter<Moved> | undefined;
  let walk: LinkWalk | undefined;
  /** The group not met whose first link was added first (its error comes last). */
  let missing: Owner | undefined;
  if (links) {
    moved = new SpillSorter<Moved>({ compare: byKey, codec: movedCodec, dir: input.scratchDir });
    walk = new LinkWalk(links, undefined, (o) => {
      if (!missing || o.seq < missing.seq) missing = o;
      missed?.push({ key: inodeKey(o.path, true), path: o.path, link: o.link });
    });
  }
  let probe = probes?.next();
  const stack: Frame[] = [];
  const open = (path: string): Frame => ({ path, files: new WideList(textCodec, input.scratchDir), types: new WideList(textCodec, input.scratchDir), dirs: new WideList(textCodec, input.scratchDir) });
  const release = (f: Frame) => {
    f.files.dispose();
    f.types.dispose();
    f.dirs.dispose();
  };
  try {
    const close = (f: Frame) => {
      try {
        dirs.set(f.path, { size: dirSizeOf(f), nlink: 2 + f.dirs.length, nid: -1 });
      } finally {
        release(f);
      }
    };
    let prev: string | undefined;
    for (const rec of inOrder(input.records)) {
      const e = rec.entry;
      const path = e.path;
      if (rec.key === prev) throw usage(`duplicate path in EROFS image: ${path}`);
      prev = rec.key;
      const owner = walk?.seek(rec.key);
      if (path !== '.') {
        const parent = parentOf(path);
        while (stack.length > 1 && parent !== stack[stack.length - 1]!.path && !isBelow(parent, stack[stack.length - 1]!.path)) close(stack.pop()!);
        const top = stack[stack.length - 1]!;
        if (top.path !== parent) {
          const step = top.path === '.' ? path.slice(0, path.indexOf('/')) : path.slice(0, path.indexOf('/', top.path.length + 1));
          const type = step === parent ? typeOf(top, baseOf(step)) : undefined;
          if (type !== undefined) throw usage(`parent of ${path} is a ${type}, not a directory`);
          throw usage(`parent directory of ${path} is missing`, 'add every directory of the tree');
        }
        const name = baseOf(path);
        if (Buffer.byteLength(name) > NAME_MAX) throw usage(`name longer than ${NAME_MAX} bytes: ${path}`);
        if (e.type === 'dir') top.dirs.push(name);
        else {
          top.files.push(name);
          top.types.push(e.type);
        }
      }
      if (e.type === 'dir') stack.push(open(path));
      if (e.type === 'hardlink') {
        if (owner) {
          moved!.dispose();
          return undefined;
        }
        continue;
      }
      if (owner) {
        if (e.type === 'dir') throw usage(`hard link ${owner.link} points at a directory`);
        const g = owner.group;
        links!.flags[g] = FILE_TYPE[e.type]!;
        if (owner.first) {
          moved!.push({ key: inodeKey(owner.first, false), path: owner.first, group: g, nlink: owner.nlink, rec });
          links!.flags[g] |= MOVED;
        }
      } else if (probe && e.type === 'dir') {
        while (!probe.done && comparePaths(probe.value.key, rec.key) < 0) probe = probes!.next();
        if (!probe.done && probe.value.key === rec.key) throw usage(`hard link ${probe.value.link} points at a directory`);
      }
      const t = clampTime(e.mtime);
      mtimes.set(t, (mtimes.get(t) ?? 0) + 1);
      for (const it of xattrItems(e)) xattrKeys.push(it.key);
    }
    while (stack.length > 0) close(stack.pop()!);
    walk?.seek(undefined);
    if (missing) throw usage(`hard link ${missing.link} points at ${missing.target}, which is not in the image`);

    // build_time: the most common mtime (ties: the smallest), so most inodes can be compact.
    let buildTime = 0;
    let best = -1;
    for (const [t, c] of mtimes) if (c > best || (c === best && t < buildTime)) [buildTime, best] = [t, c];

    // Xattrs: an (index, name, value) on two or more inodes goes to the shared area once.
    const sharedItems: XattrItem[] = [];
    let run: string | undefined;
    let count = 0;
    const endRun = () => {
      if (run !== undefined && count >= 2) sharedItems.push(itemOfKey(run));
    };
    for (const k of xattrKeys.sorted()) {
      if (k === run) {
        count++;
        continue;
      }
      endRun();
      run = k;
      count = 1;
    }
    endRun();
    sharedItems.sort((a, b) => a.index - b.index || Buffer.compare(a.suffix, b.suffix) || Buffer.compare(a.value, b.value));
    const sharedId = new Map<string, number>();
    let sharedBytes = 0;
    for (const it of sharedItems) {
      sharedId.set(it.key, sharedBytes / 4);
      sharedBytes += xattrEntrySize(it.suffix.length, it.value.length);
    }
    return { dirs, links, moved, buildTime, sharedItems, sharedId, sharedBytes };
  } catch (e) {
    moved?.dispose();
    throw e;
  } finally {
    // Directories a failure left open: their queues' run files go.
    for (const f of stack) release(f);
    xattrKeys.dispose();
    walk?.close();
    probes?.return(undefined);
  }
}

/** The type of the entry named `name` among `f`'s other entries (not its subdirectories), if one is. */
function typeOf(f: Frame, name: string): string | undefined {
  let i = 0;
  for (const n of f.files) {
    if (n === name) break;
    i++;
  }
  if (i === f.files.length) return undefined;
  for (const t of f.types) if (i-- === 0) return t;
  return undefined;
}

/** Directory size: ".", ".." and the names in byte order, split into blocks (dirBlocks). */
function dirSizeOf(f: Frame): number {
  let blocks = 0;
  let used = 0;
  let last: string | undefined;
  for (const name of mergeNames(f.files, f.dirs)) {
    if (name === last) throw usage(`duplicate path in EROFS image: ${f.path === '.' ? name : `${f.path}/${name}`}`);
    last = name;
    const need = DIRENT_SIZE + Buffer.byteLength(name);
    if (used + need > BLOCK_SIZE) {
      blocks++;
      used = 0;
    }
    used += need;
  }
  return blocks * BLOCK_SIZE + used;
}

/** ".", ".." and two lists sorted by name bytes, merged in that order (equal names both come, in that order too). */
function* mergeNames(a: Iterable<string>, b: Iterable<string>): Generator<string> {
  const sources = [['.', '..'][Symbol.iterator](), a[Symbol.iterator](), b[Symbol.iterator]()];
  const heads = sources.map((it) => it.next());
  for (;;) {
    let from = -1;
    for (let k = 0; k < heads.length; k++) {
      const h = heads[k]!;
      if (!h.done && (from < 0 || compareNames(h.value, heads[from]!.value as string) < 0)) from = k;
    }
    if (from < 0) return;
    yield heads[from]!.value as string;
    heads[from] = sources[from]!.next();
  }
}

function itemOfKey(key: string): XattrItem {
  const a = key.indexOf('\0');
  const b = key.indexOf('\0', a + 1);
  return { index: Number(key.slice(0, a)), suffix: Buffer.from(key.slice(a + 1, b)), value: Buffer.from(key.slice(b + 1), 'latin1'), key };
}

function xattrItems(e: LayerEntry): XattrItem[] {
  const items: XattrItem[] = [];
  const add = (index: number, suffix: string, value: Buffer, name: string) => {
    if (value.length > XATTR_VALUE_MAX) throw usage(`${e.path}: xattr ${name} is ${value.length} bytes, EROFS holds at most ${XATTR_VALUE_MAX}`);
    const s = Buffer.from(suffix);
    if (s.length > NAME_MAX) throw usage(`${e.path}: xattr name ${name} is too long`);
    items.push({ index, suffix: s, value, key: `${index}\0${suffix}\0${value.toString('latin1')}` });
  };
  for (const [name, value] of e.xattrs ?? []) {
    if (name.startsWith('system.')) continue;
    const s = splitXattrName(name);
    if (!s) throw usage(`${e.path}: xattr ${name} cannot be stored in EROFS`, 'only user.*, trusted.* and security.* (and POSIX ACLs) are supported');
    add(s.index, s.suffix, Buffer.from(value), name);
  }
  const acl = e.acl;
  if (acl?.access) add(2, '', aclXattrFromText(acl.access), 'system.posix_acl_access');
  if (acl?.default) add(3, '', aclXattrFromText(acl.default), 'system.posix_acl_default');
  items.sort((a, b) => a.index - b.index || Buffer.compare(a.suffix, b.suffix));
  return items;
}

/**
 * Inode slots and late-data blocks in inode order. Run twice over the same inodes (placement,
 * then writing), it gives the same answers both times.
 */
class Layout {
  readonly placer = new Placer();
  ino = 0;
  usedChunks = false;

  constructor(
    /** Next free data byte: late data goes here, in inode order. */
    public pos: number,
    private readonly s: Survey,
  ) {}

  /** The link count of inode `r`, which has `names` names (names()). */
  nlinkOf(r: Rec, names: number): number {
    return r.entry.type === 'dir' ? this.s.dirs.get(r.entry.path)!.nlink : names;
  }

  place(r: Rec, names: number): { nid: number; plan: Plan; ino: number } {
    const p = this.plan(r, names);
    const nid = this.placer.place(p.fixed + p.extra) / INODE_SLOT;
    const ino = this.ino++;
    // Late data: directory blocks and symlink targets beyond the inline part, lone tails.
    const e = r.entry;
    if (e.type === 'dir' || e.type === 'symlink') {
      const full = p.layout === LAYOUT.FLAT_INLINE ? p.size - p.inlineLen : p.size;
      if (full > 0) {
        p.late = p.u = this.pos / BLOCK_SIZE;
        this.pos += align(full, BLOCK_SIZE);
      }
    } else if (r.data?.kind === 'flat' && r.data.tail) {
      if (p.layout === LAYOUT.FLAT_PLAIN) {
        p.late = p.u = this.pos / BLOCK_SIZE;
        this.pos += BLOCK_SIZE;
      } else if (p.layout === LAYOUT.CHUNK_BASED && p.chunks![p.chunks!.length - 1] === -2) {
        p.late = p.chunks![p.chunks!.length - 1] = this.pos / BLOCK_SIZE;
        this.pos += BLOCK_SIZE;
      }
    }
    return { nid, plan: p, ino };
  }

  private plan(r: Rec, names: number): Plan {
    const e = r.entry;
    const items = xattrItems(e);
    const shared: number[] = [];
    const inline: XattrItem[] = [];
    for (const it of items) {
      const id = this.s.sharedId.get(it.key);
      if (id !== undefined && shared.length < MAX_SHARED_PER_INODE) shared.push(id);
      else inline.push(it);
    }
    let xattrSize = 0;
    if (items.length > 0) {
      xattrSize = XATTR_BODY_HEADER + 4 * shared.length;
      for (const it of inline) xattrSize += xattrEntrySize(it.suffix.length, it.value.length);
    }
    if (xattrSize > XATTR_BODY_HEADER + 4 * 0xfffe) throw usage(`${e.path}: xattrs too large for EROFS`);

    let size = 0;
    switch (e.type) {
      case 'file':
        size = r.data!.size;
        break;
      case 'symlink':
        size = Buffer.byteLength(e.linkname!);
        if (size >= BLOCK_SIZE) throw usage(`${e.path}: symlink target longer than ${BLOCK_SIZE - 1} bytes`);
        break;
      case 'dir':
        size = this.s.dirs.get(e.path)!.size;
        break;
      case 'char':
      case 'block': {
        const major = e.devmajor ?? 0;
        const minor = e.devminor ?? 0;
        if (!Number.isInteger(major) || !Number.isInteger(minor) || major < 0 || major > 0xfff || minor < 0 || minor > 0xfffff) {
          throw usage(`${e.path}: device ${major}:${minor} does not fit a 12-bit major and 20-bit minor`);
        }
        break;
      }
    }
    for (const v of [e.uid, e.gid]) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw usage(`${e.path}: uid/gid ${v} out of range`);
    }
    const mtime = clampTime(e.mtime);
    const extended = mtime !== this.s.buildTime || e.uid > 0xffff || e.gid > 0xffff || this.nlinkOf(r, names) > 0xffff || size > 0xffffffff;
    const fixed = (extended ? EXTENDED_SIZE : COMPACT_SIZE) + xattrSize;
    const p: Plan = { extended, layout: LAYOUT.FLAT_PLAIN, shared, inline, xattrSize, fixed, extra: 0, inlineLen: 0, size, u: 0 };

    const canInline = (len: number) => len > 0 && fixed + len <= BLOCK_SIZE;
    switch (e.type) {
      case 'char':
      case 'block':
        p.u = encodeDevice(e.devmajor ?? 0, e.devminor ?? 0);
        break;
      case 'fifo':
        break;
      case 'symlink':
      case 'dir': {
        const tail = size % BLOCK_SIZE;
        if (canInline(tail)) {
          p.layout = LAYOUT.FLAT_INLINE;
          p.inlineLen = tail;
          p.extra = tail;
          p.u = NULL_ADDR; // the first full block, when there are any (place())
        }
        break;
      }
      case 'file': {
        const d = r.data!;
        if (d.kind === 'z') {
          p.layout = LAYOUT.COMPRESSED_FULL;
          const lclusters = d.extents.reduce((s, x) => s + x.lclusters, 0);
          p.extra = fullIndexOffset(fixed) - fixed + LCLUSTER_INDEX_SIZE * lclusters;
          p.u = d.extents.reduce((s, x) => s + (x.plain ? x.lclusters : x.blocks), 0);
          break;
        }
        const tail = d.size % BLOCK_SIZE;
        const holes = d.runs.some((x) => x.addr === NULL_ADDR);
        if (!holes && (tail === 0 || canInline(tail))) {
          p.layout = tail === 0 ? LAYOUT.FLAT_PLAIN : LAYOUT.FLAT_INLINE;
          p.u = d.runs.length > 0 ? d.runs[0]!.addr : NULL_ADDR;
          p.inlineLen = tail;
          p.extra = tail;
        } else if (!holes && d.runs.length === 0) {
          p.layout = LAYOUT.FLAT_PLAIN; // a lone tail that cannot be inline: its own block (place())
        } else {
          // Holes, or a tail that must go to a block of its own: a chunk map. The tail block
          // is placed by place() (or is a hole when all zero).
          p.layout = LAYOUT.CHUNK_BASED;
          const blocks = Math.ceil(d.size / BLOCK_SIZE);
          const runs = [...d.runs];
          if (tail > 0) runs.push({ addr: d.tailZero ? NULL_ADDR : -2, count: 1 }); // -2: placeholder
          let bits = Math.min(Math.ceil(Math.log2(Math.max(blocks, 1))), 20);
          let at = 0;
          for (const x of runs) {
            if (at > 0) bits = Math.min(bits, ctz(at));
            at += x.count;
          }
          p.chunkBits = bits;
          const per = 2 ** bits;
          const chunks: number[] = [];
          for (const x of runs) {
            for (let k = 0; k < x.count; k += per) chunks.push(x.addr === NULL_ADDR || x.addr === -2 ? x.addr : x.addr + k);
          }
          p.chunks = chunks;
          p.u = bits & CHUNK_FORMAT_BLKBITS_MASK;
          p.extra = 4 * chunks.length;
          this.usedChunks = true;
        }
        break;
      }
    }
    return p;
  }
}

/**
 * One inode with its xattr body and what follows it (inline data, chunk map, lcluster indexes),
 * written into `out`, which is exactly its size (plan.fixed + plan.extra).
 */
function encodeWhole(out: Buffer, r: Rec, p: Plan, ino: number, nlink: number, inlineBytes: Buffer | undefined, input: TreeInput): void {
  const e = r.entry;
  let at = writeInode(out, 0, {
    extended: p.extended,
    layout: p.layout,
    xattrIcount: p.xattrSize === 0 ? 0 : (p.xattrSize - XATTR_BODY_HEADER) / 4 + 1,
    mode: MODE_TYPE[e.type]! | (e.mode & 0o7777),
    nlink,
    size: BigInt(p.size),
    u: p.u,
    ino,
    uid: e.uid,
    gid: e.gid,
    mtime: BigInt(clampTime(e.mtime)),
    mtimeNsec: 0,
  });
  if (p.xattrSize > 0) {
    out.fill(0, at, at + XATTR_BODY_HEADER);
    out.writeUInt8(p.shared.length, at + 4);
    at += XATTR_BODY_HEADER;
    for (const id of p.shared) at = out.writeUInt32LE(id, at);
    for (const it of p.inline) at += writeXattrEntry(out, at, it.index, it.suffix, it.value);
  }
  if (p.layout === LAYOUT.FLAT_INLINE) at += inlineBytes!.copy(out, at);
  else if (p.layout === LAYOUT.CHUNK_BASED) {
    for (const a of p.chunks!) at = out.writeUInt32LE(a >>> 0, at);
  } else if (p.layout === LAYOUT.COMPRESSED_FULL) {
    const header = fullIndexOffset(p.fixed) - p.fixed;
    out.fill(0, at, at + header);
    writeMapHeader(out, at + header - 16, ADVISE.BIG_PCLUSTER_1, input.alg, 0);
    at += header;
    at = writeCompressedIndexes(out, at, (r.data as Extract<FileData, { kind: 'z' }>).extents, input.zeroBlock);
  }
  if (at !== out.length) throw new Error(`EROFS writer: the inode of ${e.path} came out ${at} bytes, planned ${out.length}`);
}

const OPEN_BLOCKS = 32;

/** Metadata space: first fit among the last OPEN_BLOCKS blocks with room, 32-byte aligned. */
class Placer {
  private readonly open: { blk: number; used: number }[] = [];
  private next = 0; // next unallocated block

  get size(): number {
    return this.next * BLOCK_SIZE;
  }

  /** Blocks that may still take an inode. */
  openBlocks(): number[] {
    return this.open.map((o) => o.blk);
  }

  place(bytes: number): number {
    const size = align(bytes, INODE_SLOT);
    if (size <= BLOCK_SIZE) {
      for (let i = 0; i < this.open.length; i++) {
        const o = this.open[i]!;
        if (o.used + size > BLOCK_SIZE) continue;
        const at = o.blk * BLOCK_SIZE + o.used;
        o.used += size;
        if (o.used === BLOCK_SIZE) this.open.splice(i, 1);
        return at;
      }
      const blk = this.next++;
      if (size < BLOCK_SIZE) this.keep({ blk, used: size });
      return blk * BLOCK_SIZE;
    }
    const at = this.next * BLOCK_SIZE;
    this.next += Math.ceil(size / BLOCK_SIZE);
    if (size % BLOCK_SIZE) this.keep({ blk: this.next - 1, used: size % BLOCK_SIZE });
    return at;
  }

  private keep(o: { blk: number; used: number }): void {
    this.open.push(o);
    if (this.open.length > OPEN_BLOCKS) this.open.shift();
  }
}

/** Blocks of finished inodes held before they are written together. */
const META_BATCH = 256;
/** Written metadata blocks kept for reuse at most (the runs of WRITES_BEHIND writes in flight). */
const SPARE_BLOCKS = 2 * META_BATCH;
/** Writes of the writing pass in flight at most (WritesBehind). */
const WRITES_BEHIND = 4;
/** A directory's blocks go to the file in writes of at most about this many bytes. */
const DIR_WRITE = 256 << 10;

/**
 * The writing pass's writes (metadata runs, directory blocks, tails in blocks of their own),
 * going on behind it, WRITES_BEHIND at most in flight: a large tree's metadata area holds its
 * files' tails (a hundred megabytes at 100,000 small files), and waiting for each write held
 * the layout up for about half a second there. A buffer handed to push() is never changed
 * again. A failed write fails the pass when it is next waited for (catchUp, drain).
 */
class WritesBehind {
  /** Oldest first. */
  private readonly inFlight: Promise<void>[] = [];

  constructor(private readonly write: TreeInput['write']) {}

  /** Starts writing `b` at `at`; `done` is called once it is written (not if it fails). */
  push(b: Uint8Array | readonly Uint8Array[], at: number, done?: () => void): void {
    const written = this.write(b, at);
    if (done) written.then(done, () => undefined);
    // Handled when waited for; until then a failure must not count as unhandled.
    written.catch(() => undefined);
    this.inFlight.push(written);
  }

  /** More writes in flight than WRITES_BEHIND: catchUp() before going on. */
  get behind(): boolean {
    return this.inFlight.length > WRITES_BEHIND;
  }

  async catchUp(): Promise<void> {
    while (this.behind) await this.inFlight.shift();
  }

  /** Waits for every write. */
  async drain(): Promise<void> {
    while (this.inFlight.length > 0) await this.inFlight.shift();
  }
}

/**
 * The metadata area as inodes land in it (in inode order, not nid order): blocks in memory
 * until no later inode can land in them (they are not among the placer's open blocks), then
 * written in runs, a run's blocks in one writev. A written block is used again for a later
 * one: a tree of 100,000 small files has a hundred megabytes of metadata (their tails are
 * inline), and a new block for every 4 KiB, with a copy of each run, was garbage that set off
 * a full collection of the heap every 40 ms (spec/decisions.md, Caches and speed).
 */
class MetaArea {
  private readonly blocks = new Map<number, Buffer>();
  /** Blocks whose writes are done, to be zeroed and used again. */
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly base: number,
    private readonly writes: WritesBehind,
  ) {}

  /**
   * The `len` bytes at `at` as a view of their block (zeros until written), when they lie in
   * one block; undefined when they cross into the next (put() them).
   */
  slot(at: number, len: number): Buffer | undefined {
    const o = at % BLOCK_SIZE;
    return o + len <= BLOCK_SIZE ? this.block(Math.floor(at / BLOCK_SIZE)).subarray(o, o + len) : undefined;
  }

  put(at: number, b: Buffer): void {
    for (let off = 0; off < b.length; ) {
      const o = (at + off) % BLOCK_SIZE;
      const n = Math.min(BLOCK_SIZE - o, b.length - off);
      b.copy(this.block(Math.floor((at + off) / BLOCK_SIZE)), o, off, off + n);
      off += n;
    }
  }

  /** Block `blk`, a new one (zeros) the first time; one handed out before gets a new one too. */
  private block(blk: number): Buffer {
    let block = this.blocks.get(blk);
    if (!block) this.blocks.set(blk, (block = this.spare.pop()?.fill(0) ?? Buffer.alloc(BLOCK_SIZE)));
    return block;
  }

  private reuse(written: Buffer[]): void {
    for (const b of written) if (this.spare.length < SPARE_BLOCKS) this.spare.push(b);
  }

  /** True when enough blocks are held for settle() to hand them out (asked per inode). */
  get due(): boolean {
    return this.blocks.size >= META_BATCH;
  }

  /** Writes the blocks no inode can land in any more (all of them with `all`); a block written is never changed. */
  settle(open: number[], all = false): void {
    if (!all && !this.due) return;
    const ready = [...this.blocks.keys()].filter((b) => all || !open.includes(b)).sort((a, b) => a - b);
    for (let i = 0; i < ready.length; ) {
      let j = i + 1;
      while (j < ready.length && ready[j] === ready[j - 1]! + 1) j++;
      const run = ready.slice(i, j).map((b) => this.blocks.get(b)!);
      this.writes.push(run, this.base + ready[i]! * BLOCK_SIZE, () => this.reuse(run));
      for (let k = i; k < j; k++) this.blocks.delete(ready[k]!);
      i = j;
    }
  }
}

export function clampTime(t: number): number {
  if (!Number.isFinite(t) || t < 0) return 0;
  return Math.min(Math.floor(t), Number.MAX_SAFE_INTEGER);
}

function ctz(n: number): number {
  let c = 0;
  while (n > 0 && n % 2 === 0) {
    n /= 2;
    c++;
  }
  return c;
}

/**
 * A directory's blocks from its names in order: entries never straddle a block, each block's
 * dirents come first, then their names; every block but the last is BLOCK_SIZE long, zeros
 * after the names. add() gives the block that the new name did not fit in, when there is one.
 */
class DirBlocks {
  private names: Buffer[] = [];
  private dirents: Dirent[] = [];
  private used = 0;

  add(d: Dirent): Buffer | undefined {
    const name = Buffer.from(d.name);
    const need = DIRENT_SIZE + name.length;
    let done: Buffer | undefined;
    if (this.used + need > BLOCK_SIZE) done = this.block(BLOCK_SIZE);
    this.names.push(name);
    this.dirents.push(d);
    this.used += need;
    return done;
  }

  /** The last block, as long as its names. */
  end(): Buffer {
    return this.block(this.used);
  }

  private block(size: number): Buffer {
    const out = Buffer.alloc(size);
    let nameoff = this.dirents.length * DIRENT_SIZE;
    for (let i = 0; i < this.dirents.length; i++) {
      writeDirent(out, i * DIRENT_SIZE, this.dirents[i]!.nid, nameoff, this.dirents[i]!.type);
      nameoff += this.names[i]!.copy(out, nameoff);
    }
    this.names = [];
    this.dirents = [];
    this.used = 0;
    return out;
  }
}

/**
 * Full lcluster indexes of a compressed file. A compressed extent of n lclusters: HEAD1 at
 * its first (blkaddr = pcluster start), then NONHEAD with delta[0] = distance back to the
 * head (the first one instead carries CBLKCNT | pcluster blocks) and delta[1] = distance to
 * the next head. A plain extent: one PLAIN head per lcluster, each its own 4096-byte block.
 * Written at `at` of `out`; returns the offset past them.
 */
function writeCompressedIndexes(out: Buffer, at: number, extents: Extent[], zeroBlock: number): number {
  for (const x of extents) {
    if (x.plain) {
      for (let k = 0; k < x.lclusters; k++) {
        writeHeadIndex(out, at, LCLUSTER.PLAIN, 0, x.pblk === NULL_ADDR ? zeroBlock : x.pblk + k);
        at += LCLUSTER_INDEX_SIZE;
      }
    } else {
      writeHeadIndex(out, at, LCLUSTER.HEAD1, 0, x.pblk);
      at += LCLUSTER_INDEX_SIZE;
      for (let k = 1; k < x.lclusters; k++) {
        writeNonheadIndex(out, at, k === 1 ? LI_D0_CBLKCNT | x.blocks : k, x.lclusters - k);
        at += LCLUSTER_INDEX_SIZE;
      }
    }
  }
  return at;
}

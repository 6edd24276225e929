/**
 * The EROFS image's tree, laid out at finish() in bounded memory: the entries (files with
 * where their data went) come back from the external sorter in inode order and are read three
 * times, keeping only directories, hard links and what is shared:
 *
 *  1. survey: the tree checks (parents, duplicates, hard links), each directory's size and
 *     link count, the most common mtime (the build time) and the xattrs two or more inodes
 *     share;
 *  2. placement: every inode's form and size, its slot (its nid) and the blocks of its late
 *     data; each name goes, with the nid it names, to a second sorter in directory order;
 *  3. writing: the same placement again, directory blocks from those names, inodes into a
 *     window of metadata blocks that are written once no later inode can land in them.
 *
 * Memory: a record per directory and per hard-link target, the shared xattrs, the child names
 * of the open directories, the sorters' budgets and the metadata window. The bytes are those
 * of laying the whole tree out in memory (spec/erofs.md).
 */
import { baseName as baseOf, compareNames, comparePaths, parentOf, decodeEntry, encodeEntry, entrySize, isBelow, SpillSorter, type LayerEntry, type RecordCodec } from '../../../store/index.js';
import { aclFromText, aclToXattr } from '../../../native/acl.js';
import { StrataError, IMAGE_ERR } from '../errors.js';
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
  encodeDirent,
  encodeHeadIndex,
  encodeInode,
  encodeMapHeader,
  encodeNonheadIndex,
  encodeXattrEntry,
  fullIndexOffset,
  splitXattrName,
  xattrEntrySize,
} from './format.js';
import type { Spill, SpillRef } from './spill.js';

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

/** Entries the writer cannot store (ERR_IMAGE_INPUT). */
export const usage = (msg: string, hint?: string) => new StrataError(IMAGE_ERR.INPUT, msg, hint ? { hint } : {});

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

function encodeData(d: FileData): unknown {
  if (d.kind === 'z') return ['z', d.size, d.extents.flatMap((x) => [x.lclusters, x.plain ? 1 : 0, x.pblk, x.blocks])];
  return ['f', d.size, d.runs.flatMap((r) => [r.addr, r.count]), d.tail ? [d.tail.off, d.tail.len] : null, d.tailZero ? 1 : 0];
}

function decodeData(x: unknown): FileData {
  const a = x as [string, number, number[], ([number, number] | null)?, number?];
  const n = a[2];
  if (a[0] === 'z') {
    const extents: Extent[] = [];
    for (let i = 0; i < n.length; i += 4) extents.push({ lclusters: n[i]!, plain: n[i + 1] === 1, pblk: n[i + 2]!, blocks: n[i + 3]! });
    return { kind: 'z', size: a[1], extents };
  }
  const runs: Run[] = [];
  for (let i = 0; i < n.length; i += 2) runs.push({ addr: n[i]!, count: n[i + 1]! });
  const d: FileData = { kind: 'flat', size: a[1], runs, tailZero: a[4] === 1 };
  if (a[3]) d.tail = { off: a[3][0], len: a[3][1] };
  return d;
}

export const recCodec: RecordCodec<Rec> = {
  encode: (r) => encodeEntry(r.entry, r.data ? encodeData(r.data) : undefined),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    const r: Rec = { key: inodeKey(entry.path, entry.type === 'dir'), entry };
    if (extra !== undefined) r.data = decodeData(extra);
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

/** An inode that hard links name: its link count and the first of its names in inode order. */
interface Owner {
  nlink: number;
  first: string;
  firstKey: string;
  /** Its record, kept when its first name is a link (the inode is laid out there). */
  rec?: Rec;
  type?: LayerEntry['type'];
  nid: number;
}

interface Survey {
  dirs: Map<string, DirInfo>;
  /** Hard link path → the path of the inode it names. */
  ownerOf: Map<string, string>;
  owners: Map<string, Owner>;
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

const direntCodec: RecordCodec<Dirent> = {
  encode: (d) => Buffer.from(JSON.stringify([d.parent, d.name, d.nid, d.type])),
  decode: (b) => {
    const [parent, name, nid, type] = JSON.parse(b.toString('utf8')) as [string, string, number, number];
    return { parent, key: inodeKey(parent, true), name, nid, type };
  },
  size: (d) => 96 + (d.parent.length + d.key.length + d.name.length) * 2,
};

export interface TreeInput {
  records: SpillSorter<Rec>;
  /** Hard links as added: path → the path it names. */
  links: Map<string, string>;
  tails: Spill;
  scratchDir: string;
  /** The first free byte after the file data (a block boundary). */
  pos: number;
  /** The compression algorithm of compressed files' map headers. */
  alg: number;
  /** The shared zero block (PLAIN extents of zeros point at it). */
  zeroBlock: number;
  write(b: Uint8Array, at: number): Promise<void>;
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
  const survey = await surveyTree(input);
  const dirents = new SpillSorter<Dirent>({ compare: (a, b) => comparePaths(a.key, b.key) || compareNames(a.name, b.name), codec: direntCodec, dir: input.scratchDir });
  try {
    // Placement: nids and late-data blocks, and every name with the nid it names.
    const placing = new Layout(input.pos, survey);
    let rootNid = 0;
    for (const { rec, inode } of names(input.records, survey)) {
      const path = rec.entry.path;
      let nid: number;
      let type: LayerEntry['type'];
      if (inode) {
        nid = placing.place(inode).nid;
        type = inode.entry.type;
        const owner = survey.owners.get(inode.entry.path);
        if (owner) owner.nid = nid;
        if (type === 'dir') {
          survey.dirs.get(path)!.nid = nid;
          const up = path === '.' ? nid : survey.dirs.get(parentOf(path))!.nid;
          dirents.push({ parent: path, key: rec.key, name: '.', nid, type: FT.DIR });
          dirents.push({ parent: path, key: rec.key, name: '..', nid: up, type: FT.DIR });
        }
      } else {
        const owner = survey.owners.get(survey.ownerOf.get(path) ?? path)!;
        nid = owner.nid;
        type = owner.type!;
      }
      if (path === '.') rootNid = nid;
      else {
        const parent = parentOf(path);
        dirents.push({ parent, key: inodeKey(parent, true), name: baseOf(path), nid, type: FILE_TYPE[type]! });
      }
    }
    if (rootNid > 0xffff) throw usage('the root directory does not fit the superblock');
    const lateEnd = placing.pos;
    const xattrBlkaddr = survey.sharedBytes > 0 ? lateEnd / BLOCK_SIZE : 0;
    const metaBlkaddr = (lateEnd + align(survey.sharedBytes, BLOCK_SIZE)) / BLOCK_SIZE;
    if (survey.sharedBytes > 0) {
      await input.write(Buffer.concat(survey.sharedItems.map((it) => encodeXattrEntry(it.index, it.suffix, it.value))), lateEnd);
    }

    // Writing: the same placement again, now with every directory's names.
    const writing = new Layout(input.pos, survey);
    const meta = new MetaArea(metaBlkaddr * BLOCK_SIZE, input.write);
    const named = dirents.sorted();
    let next = named.next();
    for (const { rec, inode } of names(input.records, survey)) {
      if (!inode) continue;
      const { nid, plan: p, ino } = writing.place(inode);
      const e = inode.entry;
      let inlineBytes: Buffer | undefined;
      let bytes: Buffer | undefined;
      if (e.type === 'dir') {
        const list: Dirent[] = [];
        while (!next.done && next.value.key === rec.key) {
          list.push(next.value);
          next = named.next();
        }
        bytes = dirBytes(list);
        if (bytes.length !== p.size) throw new Error(`EROFS writer: directory ${e.path} came out ${bytes.length} bytes, planned ${p.size}`);
      } else if (e.type === 'symlink') bytes = Buffer.from(e.linkname!);
      if (bytes) {
        const full = p.layout === LAYOUT.FLAT_INLINE ? bytes.length - p.inlineLen : bytes.length;
        if (full > 0) await input.write(bytes.subarray(0, full), p.late! * BLOCK_SIZE);
        if (p.layout === LAYOUT.FLAT_INLINE) inlineBytes = bytes.subarray(full);
      } else if (p.late !== undefined) {
        const d = inode.data as Extract<FileData, { kind: 'flat' }>;
        await input.write(await input.tails.read(d.tail!), p.late * BLOCK_SIZE);
      }
      if (p.layout === LAYOUT.FLAT_INLINE && !inlineBytes) {
        const d = inode.data as Extract<FileData, { kind: 'flat' }>;
        inlineBytes = await input.tails.read(d.tail!);
      }
      meta.put(nid * INODE_SLOT, encodeWhole(inode, p, ino, writing.nlinkOf(inode), inlineBytes, input));
      await meta.settle(writing.placer.openBlocks());
    }
    await meta.settle([], true);
    return {
      rootNid,
      inodes: writing.ino,
      buildTime: survey.buildTime,
      xattrBlkaddr,
      metaBlkaddr,
      end: align(metaBlkaddr * BLOCK_SIZE + writing.placer.size, BLOCK_SIZE),
      usedChunks: writing.usedChunks,
    };
  } finally {
    dirents.dispose();
  }
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

/**
 * Every name of the image in inode order, with the inode laid out at it: an inode comes with
 * the first of its names (a hard link's target may come with a link that sorts before it).
 */
function* names(records: SpillSorter<Rec>, s: Survey): Generator<{ rec: Rec; inode: Rec | undefined }> {
  for (const rec of inOrder(records)) {
    const path = rec.entry.path;
    if (rec.entry.type === 'hardlink') {
      const owner = s.owners.get(s.ownerOf.get(path)!)!;
      yield { rec, inode: owner.first === path ? owner.rec : undefined };
      continue;
    }
    const owner = s.owners.get(path);
    yield { rec, inode: owner && owner.first !== path ? undefined : rec };
  }
}

/** An open directory during the survey: its names so far (others, then subdirectories). */
interface Frame {
  path: string;
  files: string[];
  types: LayerEntry['type'][];
  dirs: string[];
}

async function surveyTree(input: TreeInput): Promise<Survey> {
  const { ownerOf, owners } = resolveLinks(input.links);
  const dirs = new Map<string, DirInfo>();
  const mtimes = new Map<number, number>();
  const xattrKeys = new SpillSorter<string>({
    compare: (a, b) => (a < b ? -1 : a > b ? 1 : 0),
    codec: { encode: (k) => Buffer.from(k), decode: (b) => b.toString(), size: (k) => 48 + k.length * 2 },
    dir: input.scratchDir,
  });
  try {
    const stack: Frame[] = [];
    const close = (f: Frame) => dirs.set(f.path, { size: dirSizeOf(f), nlink: 2 + f.dirs.length, nid: -1 });
    let prev: string | undefined;
    for (const rec of inOrder(input.records)) {
      const e = rec.entry;
      const path = e.path;
      if (rec.key === prev) throw usage(`duplicate path in EROFS image: ${path}`);
      prev = rec.key;
      if (path !== '.') {
        const parent = parentOf(path);
        while (stack.length > 1 && parent !== stack[stack.length - 1]!.path && !isBelow(parent, stack[stack.length - 1]!.path)) close(stack.pop()!);
        const top = stack[stack.length - 1]!;
        if (top.path !== parent) {
          const step = top.path === '.' ? path.slice(0, path.indexOf('/')) : path.slice(0, path.indexOf('/', top.path.length + 1));
          const i = step === parent ? top.files.indexOf(baseOf(step)) : -1;
          if (i >= 0) throw usage(`parent of ${path} is a ${top.types[i]!}, not a directory`);
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
      if (e.type === 'dir') stack.push({ path, files: [], types: [], dirs: [] });
      if (e.type === 'hardlink') continue;
      const owner = owners.get(path);
      if (owner) {
        if (e.type === 'dir') {
          const link = [...ownerOf].find(([, o]) => o === path)![0];
          throw usage(`hard link ${link} points at a directory`);
        }
        owner.type = e.type;
        if (owner.first !== path) owner.rec = rec;
      }
      const t = clampTime(e.mtime);
      mtimes.set(t, (mtimes.get(t) ?? 0) + 1);
      for (const it of xattrItems(e)) xattrKeys.push(it.key);
    }
    while (stack.length > 0) close(stack.pop()!);
    for (const [link, owner] of ownerOf) {
      if (owners.get(owner)!.type === undefined) throw usage(`hard link ${link} points at ${input.links.get(link)!}, which is not in the image`);
    }

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
    return { dirs, ownerOf, owners, buildTime, sharedItems, sharedId, sharedBytes };
  } finally {
    xattrKeys.dispose();
  }
}

/** Follows hard links to the inodes they name (not a link); the targets are checked by the survey. */
function resolveLinks(links: Map<string, string>): { ownerOf: Map<string, string>; owners: Map<string, Owner> } {
  const ownerOf = new Map<string, string>();
  const owners = new Map<string, Owner>();
  for (const [path, target] of links) {
    let t = target;
    for (let hops = 0; links.has(t); hops++) {
      if (hops > links.size) throw usage(`hard link loop at ${path}`);
      t = links.get(t)!;
    }
    ownerOf.set(path, t);
    let o = owners.get(t);
    if (!o) owners.set(t, (o = { nlink: 1, first: t, firstKey: inodeKey(t, false), nid: -1 }));
    o.nlink++;
    const k = inodeKey(path, false);
    if (comparePaths(k, o.firstKey) < 0) [o.first, o.firstKey] = [path, k];
  }
  return { ownerOf, owners };
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

/** ".", ".." and two lists sorted by name bytes, merged in that order (equal names both come). */
function* mergeNames(a: string[], b: string[]): Generator<string> {
  const dots = ['.', '..'];
  let [i, j, k] = [0, 0, 0];
  for (;;) {
    let pick = k < dots.length ? dots[k] : undefined;
    let from = 0;
    if (i < a.length && (pick === undefined || compareNames(a[i]!, pick) < 0)) [pick, from] = [a[i], 1];
    if (j < b.length && (pick === undefined || compareNames(b[j]!, pick) < 0)) [pick, from] = [b[j], 2];
    if (pick === undefined) return;
    if (from === 0) k++;
    else if (from === 1) i++;
    else j++;
    yield pick;
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
  if (acl?.access) add(2, '', aclToXattr(aclFromText(acl.access)), 'system.posix_acl_access');
  if (acl?.default) add(3, '', aclToXattr(aclFromText(acl.default)), 'system.posix_acl_default');
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

  nlinkOf(r: Rec): number {
    const e = r.entry;
    if (e.type === 'dir') return this.s.dirs.get(e.path)!.nlink;
    return this.s.owners.get(e.path)?.nlink ?? 1;
  }

  place(r: Rec): { nid: number; plan: Plan; ino: number } {
    const p = this.plan(r);
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

  private plan(r: Rec): Plan {
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
    const extended = mtime !== this.s.buildTime || e.uid > 0xffff || e.gid > 0xffff || this.nlinkOf(r) > 0xffff || size > 0xffffffff;
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

/** One inode with its xattr body and what follows it (inline data, chunk map, lcluster indexes). */
function encodeWhole(r: Rec, p: Plan, ino: number, nlink: number, inlineBytes: Buffer | undefined, input: TreeInput): Buffer {
  const e = r.entry;
  const parts: Buffer[] = [
    encodeInode({
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
    }),
  ];
  if (p.xattrSize > 0) {
    const h = Buffer.alloc(XATTR_BODY_HEADER + 4 * p.shared.length);
    h.writeUInt8(p.shared.length, 4);
    p.shared.forEach((id, i) => h.writeUInt32LE(id, XATTR_BODY_HEADER + 4 * i));
    parts.push(h, ...p.inline.map((it) => encodeXattrEntry(it.index, it.suffix, it.value)));
  }
  if (p.layout === LAYOUT.FLAT_INLINE) parts.push(inlineBytes!);
  else if (p.layout === LAYOUT.CHUNK_BASED) {
    const b = Buffer.alloc(4 * p.chunks!.length);
    p.chunks!.forEach((a, i) => b.writeUInt32LE(a >>> 0, 4 * i));
    parts.push(b);
  } else if (p.layout === LAYOUT.COMPRESSED_FULL) {
    parts.push(Buffer.alloc(fullIndexOffset(p.fixed) - p.fixed - 16));
    parts.push(encodeMapHeader(ADVISE.BIG_PCLUSTER_1, input.alg, 0), Buffer.alloc(8));
    parts.push(compressedIndexes((r.data as Extract<FileData, { kind: 'z' }>).extents, input.zeroBlock));
  }
  return Buffer.concat(parts);
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

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);
/** Blocks of finished inodes held before they are written together. */
const META_BATCH = 256;

/**
 * The metadata area as inodes land in it (in inode order, not nid order): blocks in memory
 * until no later inode can land in them (they are not among the placer's open blocks), then
 * written in runs.
 */
class MetaArea {
  private readonly blocks = new Map<number, Buffer>();

  constructor(
    private readonly base: number,
    private readonly write: (b: Uint8Array, at: number) => Promise<void>,
  ) {}

  put(at: number, b: Buffer): void {
    for (let off = 0; off < b.length; ) {
      const blk = Math.floor((at + off) / BLOCK_SIZE);
      const o = (at + off) % BLOCK_SIZE;
      const n = Math.min(BLOCK_SIZE - o, b.length - off);
      let block = this.blocks.get(blk);
      if (!block) this.blocks.set(blk, (block = Buffer.alloc(BLOCK_SIZE)));
      b.copy(block, o, off, off + n);
      off += n;
    }
  }

  /** Writes the blocks no inode can land in any more (all of them with `all`). */
  async settle(open: number[], all = false): Promise<void> {
    if (!all && this.blocks.size < META_BATCH) return;
    const ready = [...this.blocks.keys()].filter((b) => all || !open.includes(b)).sort((a, b) => a - b);
    for (let i = 0; i < ready.length; ) {
      let j = i + 1;
      while (j < ready.length && ready[j] === ready[j - 1]! + 1) j++;
      const run = ready.slice(i, j).map((b) => this.blocks.get(b) ?? ZERO_BLOCK);
      await this.write(run.length === 1 ? run[0]! : Buffer.concat(run), this.base + ready[i]! * BLOCK_SIZE);
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

/** Directory blocks: dirents then names, as many as fit a 4096-byte block, the names in byte order. */
function dirBytes(list: Dirent[]): Buffer {
  const names = list.map((d) => Buffer.from(d.name));
  const blocks: { start: number; end: number; bytes: number }[] = [];
  let start = 0;
  let used = 0;
  for (let i = 0; i < list.length; i++) {
    const need = DIRENT_SIZE + names[i]!.length;
    if (used + need > BLOCK_SIZE) {
      blocks.push({ start, end: i, bytes: used });
      start = i;
      used = 0;
    }
    used += need;
  }
  blocks.push({ start, end: list.length, bytes: used });
  const out = Buffer.alloc((blocks.length - 1) * BLOCK_SIZE + blocks[blocks.length - 1]!.bytes);
  blocks.forEach((b, bi) => {
    const base = bi * BLOCK_SIZE;
    let nameoff = (b.end - b.start) * DIRENT_SIZE;
    for (let i = b.start; i < b.end; i++) {
      encodeDirent(BigInt(list[i]!.nid), nameoff, list[i]!.type).copy(out, base + (i - b.start) * DIRENT_SIZE);
      names[i]!.copy(out, base + nameoff);
      nameoff += names[i]!.length;
    }
  });
  return out;
}

/**
 * Full lcluster indexes of a compressed file. A compressed extent of n lclusters: HEAD1 at
 * its first (blkaddr = pcluster start), then NONHEAD with delta[0] = distance back to the
 * head (the first one instead carries CBLKCNT | pcluster blocks) and delta[1] = distance to
 * the next head. A plain extent: one PLAIN head per lcluster, each its own 4096-byte block.
 */
function compressedIndexes(extents: Extent[], zeroBlock: number): Buffer {
  const total = extents.reduce((s, x) => s + x.lclusters, 0);
  const out = Buffer.alloc(total * LCLUSTER_INDEX_SIZE);
  let at = 0;
  for (const x of extents) {
    if (x.plain) {
      for (let k = 0; k < x.lclusters; k++) {
        const blk = x.pblk === NULL_ADDR ? zeroBlock : x.pblk + k;
        encodeHeadIndex(LCLUSTER.PLAIN, 0, blk).copy(out, (at + k) * LCLUSTER_INDEX_SIZE);
      }
    } else {
      encodeHeadIndex(LCLUSTER.HEAD1, 0, x.pblk).copy(out, at * LCLUSTER_INDEX_SIZE);
      for (let k = 1; k < x.lclusters; k++) {
        const d0 = k === 1 ? LI_D0_CBLKCNT | x.blocks : k;
        encodeNonheadIndex(d0, x.lclusters - k).copy(out, (at + k) * LCLUSTER_INDEX_SIZE);
      }
    }
    at += x.lclusters;
  }
  return out;
}

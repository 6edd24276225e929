/**
 * The directory table and the directory index.
 *
 * Directory table (metadata blocks): per directory, a listing of runs
 * `header, entry × (count + 1)`, entries sorted by name bytes (unsigned, memcmp order — the
 * kernel's lookup relies on it).
 *
 *   Header (12): 0 u32 count (entries − 1, ≤ 255)  4 u32 start (inode table block start,
 *                relative, of every entry in the run)  8 u32 inodeNumber (reference)
 *   Entry (8 + name): 0 u16 offset (into the inode block)  2 s16 inodeNumber − reference
 *                4 u16 basic inode type  6 u16 nameSize (len − 1)  8 u8[] name
 *
 * The directory inode's fileSize is the listing's bytes + 3 (the kernel's invented "." and
 * ".."); an empty directory has fileSize 3 and no listing.
 *
 * Directory index (in an EXT_DIR inode, after its fixed part), one entry per indexed run:
 *   0 u32 index (byte offset of the run's header within the listing)  4 u32 start (directory
 *   table block start, relative, of the block holding that header)  8 u32 nameSize (len − 1)
 *   12 u8[] name (the run's first name)
 * so a lookup in a large directory skips to the last run whose first name is ≤ the name.
 *
 * Runs (strata's writer, the same choices as mksquashfs, so `sqfsdiff` sees the same inode
 * types): a new header when 256 entries are reached, when the entry's inode lies in another
 * inode metadata block, when its number is more than ±32767 from the header's, or when the
 * run would reach past 8 KiB of listing from the last indexed header; a run started more than
 * 8 KiB after that header gets an index entry.
 */
import { METADATA_SIZE, type Cursor, type MetaReader, type MetaWriter, type Region } from './metadata.js';

export const DIR_HEADER_SIZE = 12;
export const DIR_ENTRY_SIZE = 8;
export const DIR_INDEX_SIZE = 12;
/** Entries per directory header (count stored off by one). */
export const DIR_HEADER_MAX = 256;
/** Longest entry name the kernel accepts (name size stored off by one). */
export const MAX_NAME = 256;
/** Directory inode fileSize = listing bytes + this. */
export const DIR_SIZE_BIAS = 3;

export interface DirIndexEntry {
  /** Byte offset of the run's header in the listing. */
  index: number;
  /** Relative start of the directory-table block holding it. */
  start: number;
  name: Buffer;
}

/** Writes a directory index entry into `b` at `o`; returns the offset after it. */
export function encodeDirIndex(e: DirIndexEntry, b: Buffer, o: number): number {
  o = b.writeUInt32LE(e.index, o);
  o = b.writeUInt32LE(e.start, o);
  o = b.writeUInt32LE(e.name.length - 1, o);
  return o + e.name.copy(b, o);
}

/** One child of a directory being written, with its inode's position and number. */
export interface DirChild {
  name: Buffer;
  ino: number;
  /** Relative start of the inode-table block holding its inode, and the offset in it. */
  refBlock: number;
  refOffset: number;
  basicType: number;
}

/** Where a written listing is, for the directory inode. */
export interface WrittenListing {
  blockIndex: number;
  blockOffset: number;
  /** Listing bytes + DIR_SIZE_BIAS. */
  fileSize: number;
  index: DirIndexEntry[];
}

/**
 * Writes the listing of `children` (sorted by name bytes) to the directory table `dirs` as they
 * come: one run (at most DIR_HEADER_MAX children) is held at a time, and goes to the table once
 * the next child starts another. Nothing else may write to `dirs` until it returns.
 */
export function encodeDirectory(children: Iterable<DirChild>, dirs: MetaWriter): WrittenListing {
  const blockIndex = dirs.block;
  const blockOffset = dirs.offset;
  const firstBlock = dirs.flushed;
  const index: DirIndexEntry[] = [];
  let run: DirChild[] = [];
  let at = 0; // where the run's header is in the listing
  let base = 0;
  let block = 0;
  let indexed = false;
  let size = 0;
  let lastIndexed = 0;
  const buf = Buffer.allocUnsafe(DIR_HEADER_SIZE + DIR_HEADER_MAX * (DIR_ENTRY_SIZE + MAX_NAME));
  const writeRun = () => {
    let o = buf.writeUInt32LE(run.length - 1, 0);
    o = buf.writeUInt32LE(block, o);
    o = buf.writeUInt32LE(base, o);
    for (const c of run) {
      o = buf.writeUInt16LE(c.refOffset, o);
      o = buf.writeInt16LE(c.ino - base, o);
      o = buf.writeUInt16LE(c.basicType, o);
      o = buf.writeUInt16LE(c.name.length - 1, o);
      o += c.name.copy(buf, o);
    }
    dirs.write(buf.subarray(0, o));
    // The run's header is in the table now: its block (flushed or still open) has its start.
    if (indexed) index.push({ index: at, start: dirs.blockStart(firstBlock + Math.floor((blockOffset + at) / METADATA_SIZE)), name: run[0]!.name });
  };
  for (const c of children) {
    const n = c.name.length;
    if (run.length === 0 || run.length === DIR_HEADER_MAX || block !== c.refBlock || Math.abs(c.ino - base) > 32767 || size + n - lastIndexed > METADATA_SIZE) {
      const next = run.length > 0 && size + DIR_ENTRY_SIZE + n - lastIndexed > METADATA_SIZE;
      if (run.length > 0) writeRun();
      if (next) lastIndexed = size;
      run = [];
      at = size;
      base = c.ino;
      block = c.refBlock;
      indexed = next;
      size += DIR_HEADER_SIZE;
    }
    run.push(c);
    size += DIR_ENTRY_SIZE + n;
  }
  if (run.length > 0) writeRun();
  return { blockIndex, blockOffset, fileSize: size + DIR_SIZE_BIAS, index };
}

// ---------------------------------------------------------------------------------------
// Reading.

/** A listed entry: name, where its inode is (absolute block position), number and basic type. */
export interface DirEntry {
  name: string;
  ref: { block: number; offset: number };
  number: number;
  type: number;
}

/** What reading listings needs from the image. */
export interface ListingContext {
  meta: MetaReader;
  dirRegion: Region;
  inodeRegion: Region;
  inodeTableStart: number;
  directoryTableStart: number;
  bytesUsed: number;
  inodes: number;
  corrupt(what: string): Error;
  /** A name's bytes as text (the reader refuses what is not UTF-8). */
  text(bytes: Uint8Array, what: string): string;
}

/** A directory inode's listing: absolute start, size (fileSize), index entries and where they are. */
export interface Listing {
  start: { block: number; offset: number };
  size: number;
  indexCount: number;
  indexAt?: { block: number; offset: number };
}

/**
 * The entry of `find` in a listing (an array of it, or an empty one), starting from the
 * directory index when there is one; every field read on the way checked.
 */
export async function readListing(ctx: ListingContext, dir: Listing, where: string, find: Buffer): Promise<DirEntry[]> {
  let remaining = runBytes(ctx, dir, where);
  if (remaining === 0) return [];
  let c = ctx.meta.cursor(ctx.dirRegion, dir.start.block, dir.start.offset);
  if (dir.indexCount > 0 && dir.indexAt) {
    const ic = ctx.meta.cursor(ctx.inodeRegion, dir.indexAt.block, dir.indexAt.offset);
    let best: { index: number; start: number } | undefined;
    for (let i = 0; i < dir.indexCount; i++) {
      const e = await ic.read(DIR_INDEX_SIZE);
      const len = e.readUInt32LE(8) + 1;
      if (len > MAX_NAME) throw ctx.corrupt(`${where}: index name of ${len} bytes`);
      const name = await ic.read(len);
      if (Buffer.compare(name, find) > 0) break;
      best = { index: e.readUInt32LE(0), start: e.readUInt32LE(4) };
    }
    if (best) {
      if (best.index > remaining || best.start >= ctx.bytesUsed - ctx.directoryTableStart) {
        throw ctx.corrupt(`${where}: index entry points outside the listing`);
      }
      c = ctx.meta.cursor(ctx.dirRegion, ctx.directoryTableStart + best.start, (dir.start.offset + best.index) % METADATA_SIZE);
      remaining -= best.index;
    }
  }
  for await (const run of runsAt(ctx, c, remaining, where)) {
    for (let i = 0; i < run.entries.length; i++) {
      const cmp = Buffer.compare(run.names[i]!, find);
      if (cmp === 0) return [run.entries[i]!];
      if (cmp > 0) return [];
    }
  }
  return [];
}

/**
 * The entries of a listing in stored (byte) order, a header's run at a time, every field
 * checked as it is read; each iteration reads from the start.
 */
export function listingEntries(ctx: ListingContext, dir: Listing, where: string): AsyncIterable<DirEntry[]> {
  return {
    async *[Symbol.asyncIterator]() {
      const remaining = runBytes(ctx, dir, where);
      if (remaining === 0) return;
      const c = ctx.meta.cursor(ctx.dirRegion, dir.start.block, dir.start.offset);
      for await (const run of runsAt(ctx, c, remaining, where)) yield run.entries;
    },
  };
}

/** The bytes of a listing's runs: none for an empty directory (size 0, or the bias alone); below the bias otherwise, corrupt. */
function runBytes(ctx: ListingContext, dir: Listing, where: string): number {
  if (dir.size >= DIR_SIZE_BIAS) return dir.size - DIR_SIZE_BIAS;
  if (dir.size === 0) return 0;
  throw ctx.corrupt(`${where}: listing size ${dir.size}`);
}

/** The runs in the `remaining` bytes of a listing at `c` (a header next): each header's entries, with their names' bytes. */
async function* runsAt(ctx: ListingContext, c: Cursor, remaining: number, where: string): AsyncGenerator<{ entries: DirEntry[]; names: Buffer[] }> {
  let prev: Buffer | undefined;
  while (remaining > 0) {
    if (remaining < DIR_HEADER_SIZE) throw ctx.corrupt(`${where}: listing ends inside a header`);
    const h = c.now(DIR_HEADER_SIZE) ?? (await c.read(DIR_HEADER_SIZE));
    remaining -= DIR_HEADER_SIZE;
    const count = h.readUInt32LE(0) + 1;
    const start = h.readUInt32LE(4);
    const base = h.readUInt32LE(8);
    if (count > DIR_HEADER_MAX) throw ctx.corrupt(`${where}: header with ${count} entries`);
    if (start >= ctx.directoryTableStart - ctx.inodeTableStart) throw ctx.corrupt(`${where}: inode block ${start} outside the inode table`);
    const entries: DirEntry[] = [];
    const names: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      if (remaining < DIR_ENTRY_SIZE + 1) throw ctx.corrupt(`${where}: listing ends inside an entry`);
      const e = c.now(DIR_ENTRY_SIZE) ?? (await c.read(DIR_ENTRY_SIZE));
      const nameLen = e.readUInt16LE(6) + 1;
      remaining -= DIR_ENTRY_SIZE;
      if (nameLen > MAX_NAME || nameLen > remaining) throw ctx.corrupt(`${where}: entry name of ${nameLen} bytes`);
      // Views into cached blocks are never written to, so keeping them is safe.
      const nameBytes = c.now(nameLen) ?? (await c.read(nameLen));
      remaining -= nameLen;
      const offset = e.readUInt16LE(0);
      const number = base + e.readInt16LE(2);
      const type = e.readUInt16LE(4);
      if (nameBytes.includes(0x2f) || nameBytes.includes(0) || (nameBytes[0] === 0x2e && (nameLen === 1 || (nameLen === 2 && nameBytes[1] === 0x2e)))) {
        throw ctx.corrupt(`${where}: invalid entry name ${JSON.stringify(nameBytes.toString('utf8'))}`);
      }
      if (prev && Buffer.compare(prev, nameBytes) >= 0) throw ctx.corrupt(`${where}: entries out of order or repeated at ${JSON.stringify(nameBytes.toString('utf8'))}`);
      prev = nameBytes;
      if (type < 1 || type > 7) throw ctx.corrupt(`${where}: entry of unknown type ${type}`);
      if (offset >= METADATA_SIZE) throw ctx.corrupt(`${where}: entry inode offset ${offset}`);
      if (number < 1 || number > ctx.inodes) throw ctx.corrupt(`${where}: entry inode number ${number}`);
      entries.push({
        name: ctx.text(nameBytes, `entry ${JSON.stringify(nameBytes.toString('utf8'))} of the ${where}`),
        ref: { block: ctx.inodeTableStart + start, offset },
        number,
        type,
      });
      names.push(nameBytes);
    }
    yield { entries, names };
  }
}

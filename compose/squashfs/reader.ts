/**
 * strata's SquashFS 4.0 reader: walks an image as LayerEntry values, reads files streaming.
 * Layouts are documented in format.ts; this file only adds how they are read safely.
 *
 * Hostile input: every offset, count and length read from the image is checked against the
 * file size and the table bounds from the superblock before it is used or allocated; every
 * loop is bounded by bytes actually decoded; a directory inode seen twice is a cycle. Any
 * inconsistency is a StrataError ERR_IMAGE_CORRUPT with one line naming the image and the
 * byte position; an unsupported compressor (lzo, lzma), xz filter (other than x86 BCJ)
 * or a name that is not UTF-8 is ERR_IMAGE_UNSUPPORTED. I/O errors of the
 * image file itself (EACCES, EIO) are passed through as Node's fs errors.
 *
 * Concurrency: one read-only file handle, positional reads; calls may overlap. Decompressed
 * metadata blocks and fragment blocks are kept in small LRU caches (a few MiB at most).
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { LayerEntry } from '../../store/index.js';
import { StrataError, IMAGE_ERR } from '../image/errors.js';
import {
  MAGIC,
  SUPERBLOCK_SIZE,
  METADATA_SIZE,
  METADATA_UNCOMPRESSED,
  DATA_UNCOMPRESSED,
  DATA_SIZE_MASK,
  MIN_BLOCK_SIZE,
  MAX_BLOCK_SIZE,
  INVALID_FRAG,
  INVALID_XATTR,
  DIR_HEADER_MAX,
  MAX_NAME,
  DIR_SIZE_BIAS,
  FLAG,
  INODE,
  XATTR_PREFIXES,
  XATTR_VALUE_OOL,
  basicType,
  decodeDevice,
} from './format.js';
import { decompressorFor, UnsupportedBlockError, type Decompress } from './decompress.js';

const COMPRESSOR_NAMES: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };
const U64_ABSENT = 0xffffffffffffffffn;
const UTF8 = new TextDecoder('utf-8', { fatal: true });
/** Longest symlink target accepted (Linux PATH_MAX). */
const MAX_SYMLINK = 4096;
/** Linux XATTR_NAME_MAX / XATTR_SIZE_MAX. */
const MAX_XATTR_NAME = 255;
const MAX_XATTR_VALUE = 65536;
const META_CACHE_BLOCKS = 512;
const FRAG_CACHE_BLOCKS = 8;
/** readFile() refuses files larger than this; use openFile() for those. */
export const READ_FILE_MAX = 1 << 30;

/** What the superblock says, validated. Offsets are absolute byte positions. */
export interface SquashfsSuperblock {
  compressor: string;
  blockSize: number;
  inodes: number;
  bytesUsed: number;
  mkfsTime: number;
  fragments: number;
  ids: number;
  flags: number;
  /** Where the data area starts (after the superblock and any compressor options). */
  dataStart: number;
  inodeTableStart: number;
  directoryTableStart: number;
  fragmentTableStart: number | undefined;
  exportTableStart: number | undefined;
  idTableStart: number;
  xattrTableStart: number | undefined;
}

/** An entry of the image: a LayerEntry plus the inode number and link count it came from. */
export type ImageEntry = LayerEntry & { inode: number; nlink: number };

export interface WalkOptions {
  /** Called for each entry walk() leaves out: what ('socket') and its path. */
  onSkip?(what: string, path: string): void;
}

interface Pos {
  /** Absolute position of a metadata block's u16 header. */
  block: number;
  /** Offset into its uncompressed payload. */
  offset: number;
}

/** A byte range metadata blocks of one table may occupy. */
interface Region {
  name: string;
  start: number;
  end: number;
}

interface MetaBlock {
  data: Buffer;
  next: number;
}

interface Inode {
  at: Pos;
  type: number;
  basic: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  number: number;
  nlink: number;
  xattr: number;
  // directories
  dirStart?: Pos;
  dirSize?: number;
  indexCount?: number;
  indexAt?: Pos;
  // regular files
  blocksStart?: number;
  fileSize?: number;
  frag?: number;
  fragOffset?: number;
  blockListAt?: Pos;
  // symlinks
  target?: string;
  // devices
  rdev?: number;
}

interface DirEntry {
  name: string;
  ref: Pos;
  number: number;
  type: number;
}

const INODE_FIXED: Record<number, number> = {
  [INODE.BASIC_DIR]: 16,
  [INODE.BASIC_FILE]: 16,
  [INODE.BASIC_SYMLINK]: 8,
  [INODE.BASIC_BLOCK]: 8,
  [INODE.BASIC_CHAR]: 8,
  [INODE.BASIC_FIFO]: 4,
  [INODE.BASIC_SOCKET]: 4,
  [INODE.EXT_DIR]: 24,
  [INODE.EXT_FILE]: 40,
  [INODE.EXT_SYMLINK]: 8,
  [INODE.EXT_BLOCK]: 12,
  [INODE.EXT_CHAR]: 12,
  [INODE.EXT_FIFO]: 8,
  [INODE.EXT_SOCKET]: 8,
};

class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly limit: number) {}
  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: K, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value as K);
  }
}

/** Reads a stream of records across consecutive metadata blocks of one region. */
class Cursor {
  private data: Buffer | undefined;
  private next = 0;
  constructor(
    private readonly img: SquashfsImage,
    private readonly region: Region,
    private block: number,
    private offset: number,
  ) {}

  get pos(): Pos {
    return { block: this.block, offset: this.offset };
  }

  /** The next `n` bytes as a view when they are in the loaded block, else undefined (then use read). */
  now(n: number): Buffer | undefined {
    if (this.data === undefined || this.offset + n > this.data.length) return undefined;
    const b = this.data.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  /** The next `n` bytes (a view when they lie in one block, else a copy). */
  async read(n: number): Promise<Buffer> {
    if (this.data === undefined) await this.load();
    if (this.offset + n <= this.data!.length) {
      const b = this.data!.subarray(this.offset, this.offset + n);
      this.offset += n;
      return b;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (this.offset >= this.data!.length) {
        this.block = this.next;
        this.offset = 0;
        await this.load();
        continue;
      }
      const take = Math.min(need, this.data!.length - this.offset);
      parts.push(this.data!.subarray(this.offset, this.offset + take));
      this.offset += take;
      need -= take;
    }
    return Buffer.concat(parts, n);
  }

  private async load(): Promise<void> {
    const m = await this.img.metaBlock(this.block, this.region);
    if (this.offset > m.data.length) {
      throw this.img.corrupt(`offset ${this.offset} beyond the ${this.region.name} metadata block at byte ${this.block}`);
    }
    this.data = m.data;
    this.next = m.next;
  }
}

/**
 * A SquashFS 4.0 image opened for reading. Open with SquashfsImage.open(), close() when done.
 */
export class SquashfsImage {
  readonly superblock: Readonly<SquashfsSuperblock>;
  // Filled by init() from the small tables before the image is handed out.
  private ids: number[] = [];
  private fragmentList: number[] = [];
  private xattrKvStart = 0;
  private xattrIds = 0;
  private xattrList: number[] = [];
  private readonly metaCache = new Lru<number, MetaBlock>(META_CACHE_BLOCKS);
  private readonly fragCache = new Lru<number, Buffer>(FRAG_CACHE_BLOCKS);
  private readonly xattrCache = new Lru<number, Map<string, Buffer>>(256);
  private readonly fileInodes = new WeakMap<object, Inode>();
  private readonly inodeRegion: Region;
  private readonly dirRegion: Region;
  private readonly tableRegion: Region;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly fileSize: number,
    sb: SquashfsSuperblock,
    private readonly decompress: Decompress,
    private readonly rootRef: Pos,
  ) {
    this.superblock = sb;
    this.inodeRegion = { name: 'inode table', start: sb.inodeTableStart, end: sb.directoryTableStart };
    this.dirRegion = { name: 'directory table', start: sb.directoryTableStart, end: sb.bytesUsed };
    this.tableRegion = { name: 'lookup table', start: sb.directoryTableStart, end: sb.bytesUsed };
  }

  /**
   * Opens `path` and validates the superblock and the small tables (ids, fragment and xattr
   * locations). Throws ERR_IMAGE_CORRUPT for anything that is not a sound SquashFS 4.0
   * image, ERR_IMAGE_UNSUPPORTED for a compressor strata cannot decode (lzo, lzma). The
   * caller must close() the image.
   */
  static async open(path: string): Promise<SquashfsImage> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const img = await SquashfsImage.init(path, fh, size);
      return img;
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw toImageError(path, e);
    }
  }

  private static async init(path: string, fh: FileHandle, fileSize: number): Promise<SquashfsImage> {
    const notSquash = (why: string) =>
      new StrataError(IMAGE_ERR.CORRUPT, `${path} is not a SquashFS 4.0 image (${why})`, {
        hint: 'give a SquashFS image made by strata, mksquashfs or gensquashfs',
      });
    const truncated = (what: string, at: number | bigint) =>
      new StrataError(IMAGE_ERR.CORRUPT, `${path} is truncated (${what} at byte ${at} beyond end of file at ${fileSize})`, {
        hint: 'the file is incomplete; copy or download it again',
      });
    const bad = (why: string) => new StrataError(IMAGE_ERR.CORRUPT, `${path}: corrupt superblock (${why})`, { hint: HINT });

    const head = Buffer.alloc(SUPERBLOCK_SIZE);
    const { bytesRead } = await fh.read(head, 0, SUPERBLOCK_SIZE, 0);
    if (bytesRead < 4 || head.readUInt32LE(0) !== MAGIC) {
      if (bytesRead >= 4 && head.readUInt32BE(0) === MAGIC) throw notSquash('big-endian SquashFS 3.x or older');
      throw notSquash('no "hsqs" magic');
    }
    if (bytesRead < SUPERBLOCK_SIZE) throw truncated('superblock end', SUPERBLOCK_SIZE);
    const major = head.readUInt16LE(28);
    const minor = head.readUInt16LE(30);
    if (major !== 4 || minor !== 0) throw notSquash(`version ${major}.${minor}`);

    const u64 = (off: number): bigint => head.readBigUInt64LE(off);
    const inodes = head.readUInt32LE(4);
    const mkfsTime = head.readUInt32LE(8);
    const blockSize = head.readUInt32LE(12);
    const fragments = head.readUInt32LE(16);
    const compId = head.readUInt16LE(20);
    const blockLog = head.readUInt16LE(22);
    const flags = head.readUInt16LE(24);
    const ids = head.readUInt16LE(26);

    if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
      throw bad(`block size ${blockSize}`);
    }
    if (1 << blockLog !== blockSize) throw bad(`block log ${blockLog} does not match block size ${blockSize}`);
    const compressor = COMPRESSOR_NAMES[compId];
    if (compressor === undefined) throw bad(`unknown compressor id ${compId}`);
    const decompress = decompressorFor(compressor);
    if (decompress === undefined) {
      throw new StrataError(IMAGE_ERR.UNSUPPORTED, `${path} is compressed with ${compressor}, which strata cannot read`, {
        hint: 'rebuild it with -comp gzip, zstd, xz or lz4, or extract it with unsquashfs',
      });
    }
    if (inodes === 0) throw bad('no inodes');
    if (ids === 0) throw bad('empty id table');

    // Truncation first: any table start past the end of the file means the tail is missing.
    const bytesUsedBig = u64(40);
    if (bytesUsedBig > BigInt(fileSize)) throw truncated('image end', bytesUsedBig);
    const bytesUsed = Number(bytesUsedBig);
    const table = (name: string, off: number, optional: boolean): number | undefined => {
      const v = u64(off);
      if (optional && v === U64_ABSENT) return undefined;
      if (v > BigInt(fileSize)) throw truncated(`${name} table`, v);
      if (v >= bytesUsedBig || v < BigInt(SUPERBLOCK_SIZE)) throw bad(`${name} table at byte ${v} outside the image (${bytesUsed} bytes)`);
      return Number(v);
    };
    const idTableStart = table('id', 48, false)!;
    const xattrTableStart = table('xattr', 56, true);
    const inodeTableStart = table('inode', 64, false)!;
    const directoryTableStart = table('directory', 72, false)!;
    const fragmentTableStart = table('fragment', 80, true);
    const exportTableStart = table('export', 88, true);

    // The kernel's order: data, inodes, directories, fragments, export, ids, xattrs.
    if (!(inodeTableStart < directoryTableStart)) throw bad('inode table does not precede the directory table');
    for (const [name, t] of [['fragment', fragmentTableStart], ['export', exportTableStart], ['id', idTableStart], ['xattr', xattrTableStart]] as const) {
      if (t !== undefined && t <= directoryTableStart) throw bad(`${name} table at byte ${t} precedes the directory table`);
    }
    if (fragments > 0 && fragmentTableStart === undefined) throw bad(`${fragments} fragments but no fragment table`);

    let dataStart = SUPERBLOCK_SIZE;
    const sb: SquashfsSuperblock = {
      compressor, blockSize, inodes, bytesUsed, mkfsTime, fragments, ids, flags, dataStart,
      inodeTableStart, directoryTableStart, fragmentTableStart, exportTableStart, idTableStart, xattrTableStart,
    };
    const rootBig = u64(32);
    const rootRef: Pos = { block: inodeTableStart + Number(rootBig >> 16n), offset: Number(rootBig & 0xffffn) };
    if (rootBig >> 16n >= BigInt(directoryTableStart - inodeTableStart) || rootRef.offset >= METADATA_SIZE) {
      throw bad(`root inode reference ${rootBig} outside the inode table`);
    }

    const img = new SquashfsImage(path, fh, fileSize, sb, decompress, rootRef);

    if (flags & FLAG.COMPRESSOR_OPTIONS) {
      const opts = await img.metaBlock(SUPERBLOCK_SIZE, { name: 'compressor options', start: SUPERBLOCK_SIZE, end: inodeTableStart });
      dataStart = opts.next;
      sb.dataStart = dataStart;
      if (compressor === 'lz4' && (opts.data.length < 8 || opts.data.readUInt32LE(0) !== 1)) {
        throw new StrataError(IMAGE_ERR.UNSUPPORTED, `${path} uses an LZ4 format version strata cannot read`, {
          hint: 'rebuild it with mksquashfs -comp lz4 or another compressor',
        });
      }
    }

    // Id table: u64 block locations, then u32 ids.
    const idBlocks = Math.ceil((ids * 4) / METADATA_SIZE);
    const idLocs = await img.locations('id', idTableStart, idBlocks);
    const idBytes = await img.lookupTable('id', idLocs, ids * 4);
    for (let i = 0; i < ids; i++) img.ids.push(idBytes.readUInt32LE(i * 4));

    if (fragmentTableStart !== undefined && fragments > 0) {
      img.fragmentList = await img.locations('fragment', fragmentTableStart, Math.ceil((fragments * 16) / METADATA_SIZE));
    }

    if (xattrTableStart !== undefined) {
      const h = await img.readAt(xattrTableStart, 16, 'xattr table header');
      const kv = h.readBigUInt64LE(0);
      const count = h.readUInt32LE(8);
      if (kv >= BigInt(xattrTableStart) || kv <= BigInt(directoryTableStart)) throw bad(`xattr key/value area at byte ${kv} outside the image`);
      img.xattrKvStart = Number(kv);
      img.xattrIds = count;
      img.xattrList = await img.locations('xattr id', xattrTableStart + 16, Math.ceil((count * 16) / METADATA_SIZE));
      for (const l of img.xattrList) {
        if (l < Number(kv) || l >= xattrTableStart) throw bad(`xattr id block at byte ${l} outside the xattr table`);
      }
    }
    return img;
  }

  /** Builds the one-line corruption error for this image. (Internal, used by Cursor.) */
  corrupt(what: string): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.path}: ${what}`, { hint: HINT });
  }

  private blockError(e: unknown, what: string): StrataError {
    const msg = (e as Error).message;
    if (e instanceof UnsupportedBlockError) {
      return new StrataError(IMAGE_ERR.UNSUPPORTED, `${this.path}: ${what.replace('corrupt ', '')} uses a feature strata cannot decode (${msg})`, {
        hint: 'rebuild the image without it, or extract it with unsquashfs',
        cause: e,
      });
    }
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.path}: ${what} (${this.superblock.compressor}: ${msg})`, { hint: HINT, cause: e });
  }

  /** `n` bytes at absolute `pos`; the range must lie within the image. (Internal.) */
  async readAt(pos: number, n: number, what: string): Promise<Buffer> {
    if (pos < 0 || n < 0 || pos + n > this.superblock.bytesUsed) {
      if (pos + n > this.fileSize) {
        throw new StrataError(IMAGE_ERR.CORRUPT, `${this.path} is truncated (${what} at byte ${pos} beyond end of file at ${this.fileSize})`, {
          hint: 'the file is incomplete; copy or download it again',
        });
      }
      throw this.corrupt(`${what} at byte ${pos} (+${n}) outside the image`);
    }
    const b = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const { bytesRead } = await this.fh.read(b, done, n - done, pos + done);
      if (bytesRead === 0) throw this.corrupt(`${what} at byte ${pos}: file shrank while reading`);
      done += bytesRead;
    }
    return b;
  }

  /** The metadata block whose u16 header is at absolute `pos`, decompressed (cached). (Internal.) */
  async metaBlock(pos: number, region: Region): Promise<MetaBlock> {
    if (pos < region.start || pos + 2 > region.end) {
      throw this.corrupt(`${region.name} metadata block at byte ${pos} outside the table (bytes ${region.start}..${region.end})`);
    }
    const hit = this.metaCache.get(pos);
    if (hit && hit.next <= region.end) return hit;
    const h = (await this.readAt(pos, 2, `${region.name} metadata block`)).readUInt16LE(0);
    const size = h & ~METADATA_UNCOMPRESSED & 0xffff;
    if (size === 0 || size > METADATA_SIZE) throw this.corrupt(`corrupt metadata block at byte ${pos} (size ${size})`);
    if (pos + 2 + size > region.end) throw this.corrupt(`corrupt metadata block at byte ${pos} (runs past the ${region.name})`);
    const raw = await this.readAt(pos + 2, size, `${region.name} metadata block`);
    let data: Buffer;
    if (h & METADATA_UNCOMPRESSED) data = raw;
    else {
      try {
        data = this.decompress(raw, METADATA_SIZE);
      } catch (e) {
        throw this.blockError(e, `corrupt metadata block at byte ${pos}`);
      }
      if (data.length === 0) throw this.corrupt(`corrupt metadata block at byte ${pos} (empty)`);
    }
    const m = { data, next: pos + 2 + size };
    this.metaCache.set(pos, m);
    return m;
  }

  /** `count` u64 block locations at `at` (stored raw), each checked to lie in the image. */
  private async locations(name: string, at: number, count: number): Promise<number[]> {
    if (at + count * 8 > this.superblock.bytesUsed) {
      if (at + count * 8 > this.fileSize) {
        throw new StrataError(IMAGE_ERR.CORRUPT, `${this.path} is truncated (${name} table at byte ${at} beyond end of file at ${this.fileSize})`, {
          hint: 'the file is incomplete; copy or download it again',
        });
      }
      throw this.corrupt(`${name} table at byte ${at} holds ${count} block locations, more than the image has room for`);
    }
    const b = await this.readAt(at, count * 8, `${name} table`);
    const out: number[] = [];
    for (let i = 0; i < count; i++) {
      const v = b.readBigUInt64LE(i * 8);
      if (v < BigInt(this.superblock.directoryTableStart) || v >= BigInt(at)) {
        throw this.corrupt(`${name} table block ${i} at byte ${v} outside the table area`);
      }
      out.push(Number(v));
    }
    return out;
  }

  /** The first `bytes` bytes of a lookup table stored in the blocks at `locs`. */
  private async lookupTable(name: string, locs: number[], bytes: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let have = 0;
    for (const l of locs) {
      const m = await this.metaBlock(l, this.tableRegion);
      parts.push(m.data);
      have += m.data.length;
    }
    if (have < bytes) throw this.corrupt(`${name} table holds ${have} bytes, ${bytes} expected`);
    return Buffer.concat(parts, have).subarray(0, bytes);
  }

  /** One `size`-byte entry of a lookup table (entries never straddle blocks: 8192 % size == 0). */
  private async lookupEntry(name: string, locs: number[], region: Region, index: number, size: number): Promise<Buffer> {
    const blk = Math.floor((index * size) / METADATA_SIZE);
    const off = (index * size) % METADATA_SIZE;
    const l = locs[blk];
    if (l === undefined) throw this.corrupt(`${name} index ${index} beyond the table`);
    const m = await this.metaBlock(l, region);
    if (off + size > m.data.length) throw this.corrupt(`${name} index ${index} beyond the table's block at byte ${l}`);
    return m.data.subarray(off, off + size);
  }

  /** Names and targets must be UTF-8, as in layers (the tar reader refuses the same). */
  private utf8(b: Uint8Array, what: string): string {
    try {
      return UTF8.decode(b);
    } catch {
      throw new StrataError(IMAGE_ERR.UNSUPPORTED, `${this.path}: ${what} is not valid UTF-8`, {
        hint: 'rebuild the image with UTF-8 file names, or extract it with unsquashfs',
      });
    }
  }

  private id(index: number, at: Pos): number {
    const v = this.ids[index];
    if (v === undefined) throw this.corrupt(`inode at byte ${at.block}+${at.offset} uses id index ${index} of ${this.ids.length}`);
    return v;
  }

  /** Reads and checks the inode at `ref`. */
  private async readInode(ref: Pos): Promise<Inode> {
    const where = `inode at byte ${ref.block}+${ref.offset}`;
    if (ref.offset >= METADATA_SIZE) throw this.corrupt(`${where}: offset beyond a metadata block`);
    const c = new Cursor(this, this.inodeRegion, ref.block, ref.offset);
    const h = await c.read(16);
    const type = h.readUInt16LE(0);
    const fixedSize = INODE_FIXED[type];
    if (fixedSize === undefined) throw this.corrupt(`${where}: unknown inode type ${type}`);
    const number = h.readUInt32LE(12);
    if (number < 1 || number > this.superblock.inodes) {
      throw this.corrupt(`${where}: inode number ${number} outside 1..${this.superblock.inodes}`);
    }
    const mode = h.readUInt16LE(2);
    if (mode & ~0o7777) throw this.corrupt(`${where}: mode ${mode.toString(8)} has type bits`);
    const ino: Inode = {
      at: ref,
      type,
      basic: basicType(type),
      mode,
      uid: this.id(h.readUInt16LE(4), ref),
      gid: this.id(h.readUInt16LE(6), ref),
      mtime: h.readUInt32LE(8),
      number,
      nlink: 1,
      xattr: INVALID_XATTR,
    };
    const b = await c.read(fixedSize);
    const u64 = (off: number): number => {
      const v = b.readBigUInt64LE(off);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.corrupt(`${where}: value ${v} out of range`);
      return Number(v);
    };
    switch (type) {
      case INODE.BASIC_DIR:
        ino.dirStart = { block: b.readUInt32LE(0), offset: b.readUInt16LE(10) };
        ino.nlink = b.readUInt32LE(4);
        ino.dirSize = b.readUInt16LE(8);
        ino.indexCount = 0;
        break;
      case INODE.EXT_DIR:
        ino.nlink = b.readUInt32LE(0);
        ino.dirSize = b.readUInt32LE(4);
        ino.dirStart = { block: b.readUInt32LE(8), offset: b.readUInt16LE(18) };
        ino.indexCount = b.readUInt16LE(16);
        ino.xattr = b.readUInt32LE(20);
        ino.indexAt = c.pos;
        break;
      case INODE.BASIC_FILE:
        ino.blocksStart = b.readUInt32LE(0);
        ino.frag = b.readUInt32LE(4);
        ino.fragOffset = b.readUInt32LE(8);
        ino.fileSize = b.readUInt32LE(12);
        ino.blockListAt = c.pos;
        break;
      case INODE.EXT_FILE:
        ino.blocksStart = u64(0);
        ino.fileSize = u64(8);
        ino.nlink = b.readUInt32LE(24);
        ino.frag = b.readUInt32LE(28);
        ino.fragOffset = b.readUInt32LE(32);
        ino.xattr = b.readUInt32LE(36);
        ino.blockListAt = c.pos;
        break;
      case INODE.BASIC_SYMLINK:
      case INODE.EXT_SYMLINK: {
        ino.nlink = b.readUInt32LE(0);
        const n = b.readUInt32LE(4);
        if (n === 0 || n > MAX_SYMLINK) throw this.corrupt(`${where}: symlink target of ${n} bytes`);
        const t = await c.read(n);
        if (t.includes(0)) throw this.corrupt(`${where}: symlink target contains a NUL byte`);
        ino.target = this.utf8(t, `symlink target of the ${where}`);
        if (type === INODE.EXT_SYMLINK) ino.xattr = (await c.read(4)).readUInt32LE(0);
        break;
      }
      case INODE.BASIC_BLOCK:
      case INODE.BASIC_CHAR:
      case INODE.EXT_BLOCK:
      case INODE.EXT_CHAR:
        ino.nlink = b.readUInt32LE(0);
        ino.rdev = b.readUInt32LE(4);
        if (type > 7) ino.xattr = b.readUInt32LE(8);
        break;
      default: // fifo, socket
        ino.nlink = b.readUInt32LE(0);
        if (type > 7) ino.xattr = b.readUInt32LE(4);
    }
    if (ino.xattr !== INVALID_XATTR && ino.xattr >= this.xattrIds) {
      throw this.corrupt(`${where}: xattr index ${ino.xattr} beyond the xattr table (${this.xattrIds} entries)`);
    }
    if (ino.dirStart) {
      const rel = ino.dirStart.block;
      if (rel >= this.superblock.bytesUsed - this.superblock.directoryTableStart || ino.dirStart.offset >= METADATA_SIZE) {
        throw this.corrupt(`${where}: directory listing at ${rel}+${ino.dirStart.offset} outside the directory table`);
      }
      ino.dirStart = { block: this.superblock.directoryTableStart + rel, offset: ino.dirStart.offset };
    }
    if (ino.fileSize !== undefined && ino.fileSize > 2 ** 50) throw this.corrupt(`${where}: file size ${ino.fileSize}`);
    return ino;
  }

  /** The inode's extended attributes (cached per xattr index). */
  private async xattrs(index: number): Promise<Map<string, Buffer> | undefined> {
    if (index === INVALID_XATTR) return undefined;
    const hit = this.xattrCache.get(index);
    if (hit) return hit;
    const idRegion: Region = { name: 'xattr id table', start: this.xattrKvStart, end: this.superblock.xattrTableStart! };
    const e = await this.lookupEntry('xattr id', this.xattrList, idRegion, index, 16);
    const ref = e.readBigUInt64LE(0);
    const count = e.readUInt32LE(8);
    // e[12..16] is a size the kernel uses for listxattr; nothing here depends on it.
    const where = `xattr set ${index}`;
    const at = (r: bigint): Pos => ({ block: this.xattrKvStart + Number(r >> 16n), offset: Number(r & 0xffffn) });
    const kvEnd = this.xattrList[0] ?? this.superblock.xattrTableStart!;
    const kvRegion: Region = { name: 'xattr key/value area', start: this.xattrKvStart, end: kvEnd };
    const start = at(ref);
    if (start.block >= kvEnd || start.offset >= METADATA_SIZE) throw this.corrupt(`${where}: reference ${ref} outside the xattr table`);
    const c = new Cursor(this, kvRegion, start.block, start.offset);
    const out = new Map<string, Buffer>();
    for (let i = 0; i < count; i++) {
      const k = await c.read(4);
      const t = k.readUInt16LE(0);
      const nameLen = k.readUInt16LE(2);
      const prefix = XATTR_PREFIXES[t & ~XATTR_VALUE_OOL];
      if (prefix === undefined || (t & ~XATTR_VALUE_OOL) > 0xff) throw this.corrupt(`${where}: unknown name prefix id ${t}`);
      if (nameLen === 0 || nameLen + prefix.length > MAX_XATTR_NAME) throw this.corrupt(`${where}: name of ${nameLen} bytes`);
      const nameBytes = await c.read(nameLen);
      if (nameBytes.includes(0)) throw this.corrupt(`${where}: name contains a NUL byte`);
      const name = prefix + this.utf8(nameBytes, `an xattr name in ${where}`);
      const vlen = (await c.read(4)).readUInt32LE(0);
      let value: Buffer;
      if (t & XATTR_VALUE_OOL) {
        if (vlen !== 8) throw this.corrupt(`${where}: out-of-line value reference of ${vlen} bytes`);
        const vref = (await c.read(8)).readBigUInt64LE(0);
        const vp = at(vref);
        if (vp.block >= kvEnd || vp.offset >= METADATA_SIZE) throw this.corrupt(`${where}: value reference ${vref} outside the xattr table`);
        const vc = new Cursor(this, kvRegion, vp.block, vp.offset);
        const n = (await vc.read(4)).readUInt32LE(0);
        if (n > MAX_XATTR_VALUE) throw this.corrupt(`${where}: value of ${n} bytes`);
        value = Buffer.from(await vc.read(n));
      } else {
        if (vlen > MAX_XATTR_VALUE) throw this.corrupt(`${where}: value of ${vlen} bytes`);
        value = Buffer.from(await c.read(vlen));
      }
      if (out.has(name)) throw this.corrupt(`${where}: attribute ${name} stored twice`);
      out.set(name, value);
    }
    // Byte order of names, whatever order the writer stored them in (native/xattr.ts does the same).
    const sorted = new Map([...out].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    this.xattrCache.set(index, sorted);
    return sorted;
  }

  /**
   * The listing of directory inode `dir`, in stored (byte) order. With `find`, returns at the
   * matching entry (or once past where it would be), using the directory index when present.
   */
  private async readDir(dir: Inode, path: string, find?: Buffer): Promise<DirEntry[]> {
    const where = `directory ${q(path)}`;
    const size = dir.dirSize!;
    if (size < DIR_SIZE_BIAS) {
      if (size === 0) return [];
      throw this.corrupt(`${where}: listing size ${size}`);
    }
    let remaining = size - DIR_SIZE_BIAS;
    let c = new Cursor(this, this.dirRegion, dir.dirStart!.block, dir.dirStart!.offset);
    if (find && dir.indexCount! > 0) {
      const ic = new Cursor(this, this.inodeRegion, dir.indexAt!.block, dir.indexAt!.offset);
      let best: { index: number; start: number } | undefined;
      for (let i = 0; i < dir.indexCount!; i++) {
        const e = await ic.read(12);
        const len = e.readUInt32LE(8) + 1;
        if (len > MAX_NAME) throw this.corrupt(`${where}: index name of ${len} bytes`);
        const name = await ic.read(len);
        if (Buffer.compare(name, find) > 0) break;
        best = { index: e.readUInt32LE(0), start: e.readUInt32LE(4) };
      }
      if (best) {
        if (best.index > remaining || best.start >= this.superblock.bytesUsed - this.superblock.directoryTableStart) {
          throw this.corrupt(`${where}: index entry points outside the listing`);
        }
        c = new Cursor(this, this.dirRegion, this.superblock.directoryTableStart + best.start, (dir.dirStart!.offset + best.index) % METADATA_SIZE);
        remaining -= best.index;
      }
    }
    const out: DirEntry[] = [];
    let prev: Buffer | undefined;
    while (remaining > 0) {
      if (remaining < 12) throw this.corrupt(`${where}: listing ends inside a header`);
      const h = c.now(12) ?? (await c.read(12));
      remaining -= 12;
      const count = h.readUInt32LE(0) + 1;
      const start = h.readUInt32LE(4);
      const base = h.readUInt32LE(8);
      if (count > DIR_HEADER_MAX) throw this.corrupt(`${where}: header with ${count} entries`);
      if (start >= this.superblock.directoryTableStart - this.superblock.inodeTableStart) {
        throw this.corrupt(`${where}: inode block ${start} outside the inode table`);
      }
      for (let i = 0; i < count; i++) {
        if (remaining < 9) throw this.corrupt(`${where}: listing ends inside an entry`);
        const e = c.now(8) ?? (await c.read(8));
        const nameLen = e.readUInt16LE(6) + 1;
        remaining -= 8;
        if (nameLen > MAX_NAME || nameLen > remaining) throw this.corrupt(`${where}: entry name of ${nameLen} bytes`);
        // Views into cached blocks are never written to, so keeping them is safe.
        const nameBytes = c.now(nameLen) ?? (await c.read(nameLen));
        remaining -= nameLen;
        const offset = e.readUInt16LE(0);
        const number = base + e.readInt16LE(2);
        const type = e.readUInt16LE(4);
        if (nameBytes.includes(0x2f) || nameBytes.includes(0) || (nameBytes[0] === 0x2e && (nameLen === 1 || (nameLen === 2 && nameBytes[1] === 0x2e)))) {
          throw this.corrupt(`${where}: invalid entry name ${JSON.stringify(nameBytes.toString('utf8'))}`);
        }
        if (prev && Buffer.compare(prev, nameBytes) >= 0) throw this.corrupt(`${where}: entries out of order or repeated at ${JSON.stringify(nameBytes.toString('utf8'))}`);
        prev = nameBytes;
        if (type < 1 || type > 7) throw this.corrupt(`${where}: entry of unknown type ${type}`);
        if (offset >= METADATA_SIZE) throw this.corrupt(`${where}: entry inode offset ${offset}`);
        if (number < 1 || number > this.superblock.inodes) throw this.corrupt(`${where}: entry inode number ${number}`);
        const ent = { name: this.utf8(nameBytes, `entry ${JSON.stringify(nameBytes.toString('utf8'))} of the ${where}`), ref: { block: this.superblock.inodeTableStart + start, offset }, number, type };
        if (find) {
          const cmp = Buffer.compare(nameBytes, find);
          if (cmp === 0) return [ent];
          if (cmp > 0) return [];
          continue;
        }
        out.push(ent);
      }
    }
    return find ? [] : out;
  }

  /** The inode a directory entry names, checked against what the entry says about it. */
  private async entryInode(de: DirEntry, path: string): Promise<Inode> {
    const ino = await this.readInode(de.ref);
    if (ino.basic !== de.type) throw this.corrupt(`entry ${q(path)} says type ${de.type}, its inode is type ${ino.type}`);
    if (ino.number !== de.number) throw this.corrupt(`entry ${q(path)} says inode ${de.number}, its inode is ${ino.number}`);
    return ino;
  }

  private async toEntry(path: string, ino: Inode, hardlinkTo?: string): Promise<ImageEntry> {
    const type = hardlinkTo !== undefined ? 'hardlink' : TYPE_NAMES[ino.basic]!;
    const e: ImageEntry = {
      path,
      type,
      mode: ino.mode,
      uid: ino.uid,
      gid: ino.gid,
      mtime: ino.mtime,
      size: type === 'file' ? ino.fileSize! : 0,
      inode: ino.number,
      nlink: ino.nlink,
    };
    if (hardlinkTo !== undefined) e.linkname = hardlinkTo;
    else if (ino.target !== undefined) e.linkname = ino.target;
    if (ino.rdev !== undefined) {
      const d = decodeDevice(ino.rdev);
      e.devmajor = d.major;
      e.devminor = d.minor;
    }
    const x = await this.xattrs(ino.xattr);
    if (x && x.size > 0) e.xattrs = new Map(x);
    if (ino.basic === INODE.BASIC_FILE) this.fileInodes.set(e, ino);
    return e;
  }

  /**
   * Every entry, the root '.' first, then depth first in directory (byte) order: the order
   * of canonical paths (comparePaths). The first path of an inode with nlink > 1 is its
   * own type, later paths are 'hardlink' entries whose linkname is that first path.
   * Sockets have no EntryType: they are left out and reported through opts.onSkip.
   * xattrs are listed in byte order of their names.
   * Entries of type 'file' can be passed to openFile() while the walk goes on.
   */
  async *walk(opts: WalkOptions = {}): AsyncGenerator<ImageEntry> {
    try {
      const root = await this.readInode(this.rootRef);
      if (root.basic !== INODE.BASIC_DIR) throw this.corrupt(`root inode is type ${root.type}, not a directory`);
      yield await this.toEntry('.', root);
      const seenDirs = new Set<number>([root.number]);
      const firstPath = new Map<number, string>();
      const stack: { path: string; list: DirEntry[]; i: number }[] = [{ path: '.', list: await this.readDir(root, '.'), i: 0 }];
      while (stack.length > 0) {
        const top = stack[stack.length - 1]!;
        const de = top.list[top.i++];
        if (de === undefined) {
          stack.pop();
          continue;
        }
        const path = top.path === '.' ? de.name : `${top.path}/${de.name}`;
        const ino = await this.entryInode(de, path);
        if (ino.basic === INODE.BASIC_DIR) {
          if (seenDirs.has(ino.number)) throw this.corrupt(`directory ${q(path)} (inode ${ino.number}) appears twice: a cycle`);
          seenDirs.add(ino.number);
          yield await this.toEntry(path, ino);
          stack.push({ path, list: await this.readDir(ino, path), i: 0 });
          continue;
        }
        if (ino.basic === INODE.BASIC_SOCKET) {
          opts.onSkip?.('socket', path);
          continue;
        }
        if (ino.nlink > 1) {
          const first = firstPath.get(ino.number);
          if (first !== undefined) {
            yield await this.toEntry(path, ino, first);
            continue;
          }
          firstPath.set(ino.number, path);
        }
        yield await this.toEntry(path, ino);
      }
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  /** The inode at canonical `path` without following symlinks, or undefined. */
  private async resolve(path: string): Promise<{ ino: Inode; path: string } | undefined> {
    const parts = splitPath(path);
    if (parts === undefined) return undefined;
    let ino = await this.readInode(this.rootRef);
    if (ino.basic !== INODE.BASIC_DIR) throw this.corrupt(`root inode is type ${ino.type}, not a directory`);
    let cur = '.';
    for (const name of parts) {
      if (ino.basic !== INODE.BASIC_DIR) return undefined;
      const [de] = await this.readDir(ino, cur, Buffer.from(name));
      if (de === undefined) return undefined;
      cur = cur === '.' ? name : `${cur}/${name}`;
      ino = await this.entryInode(de, cur);
    }
    return { ino, path: cur };
  }

  /**
   * The entry at `path` ('.', 'a/b', '/a/b' or './a/b'), not following symlinks; undefined
   * when there is none. A hard-linked file is reported as type 'file' with its nlink (which
   * path came first is only known to walk()). A socket is reported as undefined.
   */
  async stat(path: string): Promise<ImageEntry | undefined> {
    try {
      const r = await this.resolve(path);
      if (r === undefined || r.ino.basic === INODE.BASIC_SOCKET) return undefined;
      return await this.toEntry(r.path, r.ino);
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  /** The whole content of the regular file at `path` (meant for small files). */
  async readFile(path: string): Promise<Buffer> {
    const e = await this.stat(path);
    if (e === undefined || e.type !== 'file') {
      throw new StrataError(IMAGE_ERR.NOT_FOUND, `${this.path} has no regular file ${path}`, { hint: 'list the image with `strata inspect`' });
    }
    if (e.size > READ_FILE_MAX) throw new StrataError(IMAGE_ERR.TOO_LARGE, `${this.path}: ${path} is too large to read whole (${e.size} bytes)`);
    const parts: Buffer[] = [];
    for await (const b of this.openFile(e)) parts.push(b);
    return Buffer.concat(parts, e.size);
  }

  /**
   * The content of a regular file, as chunks of at most one block, read on demand (bounded
   * memory; holes come back as zero-filled chunks). `file` is a path or an entry of type
   * 'file' (or a 'hardlink' to a file) from walk()/stat() of this image. Chunks are fresh
   * buffers the caller may keep.
   */
  async *openFile(file: string | ImageEntry): AsyncGenerator<Buffer> {
    try {
      let ino: Inode | undefined;
      let path: string;
      if (typeof file === 'string') {
        const r = await this.resolve(file);
        if (r === undefined || r.ino.basic !== INODE.BASIC_FILE) {
          throw new StrataError(IMAGE_ERR.NOT_FOUND, `${this.path} has no regular file ${file}`, { hint: 'list the image with `strata inspect`' });
        }
        ino = r.ino;
        path = r.path;
      } else {
        ino = this.fileInodes.get(file);
        path = file.path;
        if (ino === undefined) throw new StrataError(IMAGE_ERR.NOT_FOUND, `openFile: ${file.path} is not a file entry of ${this.path}`);
      }
      yield* this.content(ino, path);
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  private async *content(ino: Inode, path: string): AsyncGenerator<Buffer> {
    const sb = this.superblock;
    const bs = sb.blockSize;
    const size = ino.fileSize!;
    const hasFrag = ino.frag !== INVALID_FRAG;
    const nBlocks = hasFrag ? Math.floor(size / bs) : Math.ceil(size / bs);
    const where = `file ${q(path)}`;
    let pos = ino.blocksStart!;
    if (nBlocks > 0 && (pos < sb.dataStart || pos >= sb.inodeTableStart)) {
      throw this.corrupt(`${where}: data at byte ${pos} outside the data area`);
    }
    const list = new Cursor(this, this.inodeRegion, ino.blockListAt!.block, ino.blockListAt!.offset);
    for (let i = 0; i < nBlocks; ) {
      const batch = Math.min(nBlocks - i, 256);
      const words = Buffer.from(await list.read(batch * 4));
      for (let j = 0; j < batch; j++, i++) {
        const w = words.readUInt32LE(j * 4);
        const want = !hasFrag && i === nBlocks - 1 ? size - i * bs : bs;
        if (w === 0) {
          yield Buffer.alloc(want);
          continue;
        }
        const onDisk = w & DATA_SIZE_MASK;
        if ((w & ~(DATA_SIZE_MASK | DATA_UNCOMPRESSED)) !== 0 || onDisk > bs || onDisk === 0) {
          throw this.corrupt(`${where}: block ${i} has size word 0x${w.toString(16)}`);
        }
        if (pos + onDisk > sb.inodeTableStart) throw this.corrupt(`${where}: block ${i} at byte ${pos} runs past the data area`);
        const data = await this.dataBlock(pos, onDisk, (w & DATA_UNCOMPRESSED) !== 0, `${where}: block ${i}`);
        pos += onDisk;
        if (data.length === want) yield data;
        else if (data.length < want && want === bs && !(i === nBlocks - 1 && !hasFrag)) {
          const full = Buffer.alloc(bs);
          data.copy(full);
          yield full;
        } else {
          throw this.corrupt(`${where}: block ${i} at byte ${pos - onDisk} holds ${data.length} bytes, ${want} expected`);
        }
      }
    }
    if (hasFrag) {
      const tail = size % bs;
      if (tail === 0) return;
      const frag = await this.fragment(ino.frag!, where);
      const off = ino.fragOffset!;
      if (off + tail > frag.length) throw this.corrupt(`${where}: tail at ${off}+${tail} beyond fragment ${ino.frag} (${frag.length} bytes)`);
      yield Buffer.from(frag.subarray(off, off + tail));
    }
  }

  private async dataBlock(pos: number, onDisk: number, stored: boolean, what: string): Promise<Buffer> {
    const raw = await this.readAt(pos, onDisk, what);
    if (stored) return raw;
    try {
      return this.decompress(raw, this.superblock.blockSize);
    } catch (e) {
      throw this.blockError(e, `${what}: corrupt data block at byte ${pos}`);
    }
  }

  private async fragment(index: number, where: string): Promise<Buffer> {
    const hit = this.fragCache.get(index);
    if (hit) return hit;
    if (index >= this.superblock.fragments) throw this.corrupt(`${where}: fragment ${index} of ${this.superblock.fragments}`);
    const e = await this.lookupEntry('fragment', this.fragmentList, this.tableRegion, index, 16);
    const start = e.readBigUInt64LE(0);
    const w = e.readUInt32LE(8);
    const onDisk = w & DATA_SIZE_MASK;
    const sb = this.superblock;
    if ((w & ~(DATA_SIZE_MASK | DATA_UNCOMPRESSED)) !== 0 || onDisk === 0 || onDisk > sb.blockSize) {
      throw this.corrupt(`fragment ${index} has size word 0x${w.toString(16)}`);
    }
    if (start < BigInt(sb.dataStart) || start + BigInt(onDisk) > BigInt(sb.inodeTableStart)) {
      throw this.corrupt(`fragment ${index} at byte ${start} outside the data area`);
    }
    const data = await this.dataBlock(Number(start), onDisk, (w & DATA_UNCOMPRESSED) !== 0, `fragment ${index}`);
    this.fragCache.set(index, data);
    return data;
  }

  /** Closes the file handle. Iterators still running fail afterwards. */
  async close(): Promise<void> {
    await this.fh.close();
  }
}

const HINT = 'the image is damaged; rebuild it or copy it again';

/** A path for a one-line message: quoted, control characters escaped. */
export function q(s: string): string {
  return /[\x00-\x1f\x7f']/.test(s) ? JSON.stringify(s) : `'${s}'`;
}

const TYPE_NAMES: Record<number, LayerEntry['type']> = {
  [INODE.BASIC_DIR]: 'dir',
  [INODE.BASIC_FILE]: 'file',
  [INODE.BASIC_SYMLINK]: 'symlink',
  [INODE.BASIC_BLOCK]: 'block',
  [INODE.BASIC_CHAR]: 'char',
  [INODE.BASIC_FIFO]: 'fifo',
};

/** Path components of '.', 'a/b', '/a/b', './a/b'; undefined for '..' or NUL. */
function splitPath(path: string): string[] | undefined {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..' || p.includes('\0'))) return undefined;
  return parts;
}

/**
 * Errors from parsing hostile bytes become ERR_IMAGE_CORRUPT; StrataErrors and system
 * errors (with an errno) pass through unchanged.
 */
function toImageError(path: string, e: unknown): unknown {
  if (e instanceof StrataError) return e;
  if (e && typeof e === 'object' && 'errno' in e) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new StrataError(IMAGE_ERR.CORRUPT, `${path}: corrupt image (${msg})`, { hint: HINT, cause: e });
}

/**
 * strata's SquashFS 4.0 reader: walks an image as LayerEntry values, reads files streaming.
 * Layouts and their decoders are in this folder's structure files; this file adds how an
 * image is read safely.
 *
 * Hostile input: every offset, count and length read from the image is checked against the
 * file size and the table bounds from the superblock before it is used or allocated; every
 * loop is bounded by bytes actually decoded; a directory inode seen twice is a cycle; holes
 * cost nothing but their size words (no zero-filled memory, contentPieces()). Any inconsistency is
 * a StrataError ERR_IMAGE_CORRUPT with one line naming the image and the byte position; an
 * unsupported compressor (lzo, lzma), xz filter (other than x86 BCJ) or a name that is not
 * UTF-8 is ERR_IMAGE_UNSUPPORTED. I/O errors of the image file itself (EACCES, EIO) are
 * passed through as Node's fs errors. Only a regular file is read (a FIFO or device could
 * block or never end); like any reader of a path, `open` follows symlinks to the image.
 *
 * Concurrency: one read-only file handle, positional reads on the calling thread (the page
 * cache answers most of them at once; a trip through libuv's pool cost more than the read);
 * calls may overlap. Decompressed metadata blocks and fragment blocks are kept in small LRU
 * caches (a few MiB at most) that share a load in flight.
 */
import { constants as C, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { LayerEntry } from '../../../store/index.js';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { decompressor, UnsupportedBlockError, type Decompress } from '../shared/codecs.js';
import { COMPRESSOR_NAMES, unreadableOptions } from './compressor.js';
import { decodeSizeWord, fileBlockCount } from './data.js';
import { listingEntries, readListing, type DirEntry, type Listing, type ListingContext } from './directory.js';
import { readFragmentEntry, readFragmentLocations } from './fragment-table.js';
import { readIdTable } from './id-table.js';
import { decodeDevice, decodeInode, INODE, INODE_HEADER_SIZE, INVALID_FRAG, INVALID_XATTR, readSymlinkTail, type DecodedInode } from './inode.js';
import { METADATA_SIZE, MetaReader, type Region } from './metadata.js';
import { LoadCache } from '../shared/lru.js';
import type { Piece } from '../shared/piece.js';
import { KIND, walkImage, type WalkOptions, type WalkSource } from '../shared/walk.js';
import { decodeSuperblock, FLAG, INVALID_TABLE, MAGIC, SUPERBLOCK_SIZE, validBlockSize } from './superblock.js';
import type { TableSource } from './table.js';
import { readXattrHeader, readXattrSet, type XattrTableInfo } from './xattr-table.js';

const UTF8 = new TextDecoder('utf-8', { fatal: true });
/** Longest symlink target accepted (Linux PATH_MAX). */
const MAX_SYMLINK = 4096;
/**
 * Decoded fragment blocks kept, in bytes (at least 8 blocks). A file stored once for several
 * names (deduplication) points at the fragment of its first copy, often far behind the walk:
 * with 8 blocks kept, the 200,000-file test tree decoded its 1,571 fragments 2,539 times.
 */
const FRAG_CACHE_BYTES = 16 << 20;
/** readFile() refuses files larger than this; use openFile() for those. */
export const READ_FILE_MAX = 1 << 30;
/** Largest file size accepted (2^50 bytes: more than any image could describe sensibly). */
const MAX_FILE_SIZE = 2 ** 50;

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

export type { WalkOptions };

interface Pos {
  /** Absolute position of a metadata block's u16 header. */
  block: number;
  /** Offset into its uncompressed payload. */
  offset: number;
}

/** A checked inode: uid and gid resolved, positions absolute. */
interface Inode extends DecodedInode {
  at: Pos;
  uid: number;
  gid: number;
  target?: string;
  dirStart?: Pos;
}

const HINT = 'the image is damaged; rebuild it or copy it again';

/**
 * A SquashFS 4.0 image opened for reading. Open with SquashfsImage.open(), close() when done.
 */
export class SquashfsImage {
  readonly superblock: Readonly<SquashfsSuperblock>;
  // Filled by init() from the small tables before the image is handed out.
  private ids: number[] = [];
  private fragmentList: number[] = [];
  private xattrTable: XattrTableInfo | undefined;
  private readonly meta: MetaReader;
  private readonly fragCache: LoadCache<number, Buffer>;
  private readonly xattrCache = new LoadCache<number, Map<string, Buffer>>(256);
  private readonly fileInodes = new WeakMap<object, Inode>();
  private readonly inodeRegion: Region;
  private readonly dirRegion: Region;
  private readonly tableRegion: Region;
  private readonly listing: ListingContext;
  private readonly source: TableSource;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly fileSize: number,
    sb: SquashfsSuperblock,
    decompress: Decompress,
    private readonly rootRef: Pos,
  ) {
    this.superblock = sb;
    this.fragCache = new LoadCache(Math.max(8, Math.floor(FRAG_CACHE_BYTES / sb.blockSize)));
    this.inodeRegion = { name: 'inode table', start: sb.inodeTableStart, end: sb.directoryTableStart };
    this.dirRegion = { name: 'directory table', start: sb.directoryTableStart, end: sb.bytesUsed };
    this.tableRegion = { name: 'lookup table', start: sb.directoryTableStart, end: sb.bytesUsed };
    const self = this;
    this.source = {
      bytesUsed: sb.bytesUsed,
      fileSize,
      decompress,
      readAt: (pos, n, what) => self.readAt(pos, n, what),
      corrupt: (what) => self.corrupt(what),
      blockError: (e, what) => self.blockError(e, what),
      truncated: (what, at) => self.truncated(what, at),
    };
    this.meta = new MetaReader(this.source);
    this.listing = {
      meta: this.meta,
      dirRegion: this.dirRegion,
      inodeRegion: this.inodeRegion,
      inodeTableStart: sb.inodeTableStart,
      directoryTableStart: sb.directoryTableStart,
      bytesUsed: sb.bytesUsed,
      inodes: sb.inodes,
      corrupt: (what) => this.corrupt(what),
      text: (b, what) => this.utf8(b, what),
    };
  }

  /**
   * Opens `path` and validates the superblock and the small tables (ids, fragment and xattr
   * locations). Throws ERR_IMAGE_CORRUPT for anything that is not a sound SquashFS 4.0
   * image (a FIFO, device or directory included: nothing is read from those), and
   * ERR_IMAGE_UNSUPPORTED for a compressor strata cannot decode (lzo, lzma). The caller must
   * close() the image.
   */
  static async open(path: string): Promise<SquashfsImage> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused right after.
    const fh = await open(path, C.O_RDONLY | C.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) {
        throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is not a SquashFS 4.0 image (not a regular file)`, {
          hint: 'give the image file itself',
        });
      }
      return await SquashfsImage.init(path, fh, st.size);
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
    const s = decodeSuperblock(head);
    if (s.versionMajor !== 4 || s.versionMinor !== 0) throw notSquash(`version ${s.versionMajor}.${s.versionMinor}`);
    const { blockSize, blockLog, inodeCount: inodes, idCount: ids, fragmentCount: fragments, flags } = s;
    if (!validBlockSize(blockSize)) throw bad(`block size ${blockSize}`);
    if (1 << blockLog !== blockSize) throw bad(`block log ${blockLog} does not match block size ${blockSize}`);
    const compressor = COMPRESSOR_NAMES[s.compressor];
    if (compressor === undefined) throw bad(`unknown compressor id ${s.compressor}`);
    const decompress = decompressor(compressor);
    if (decompress === undefined) {
      throw new StrataError(IMAGE_ERR.UNSUPPORTED, `${path} is compressed with ${compressor}, which strata cannot read`, {
        hint: 'rebuild it with -comp gzip, zstd, xz or lz4, or extract it with unsquashfs',
      });
    }
    if (inodes === 0) throw bad('no inodes');
    if (ids === 0) throw bad('empty id table');

    // Truncation first: any table start past the end of the file means the tail is missing.
    if (s.bytesUsed > BigInt(fileSize)) throw truncated('image end', s.bytesUsed);
    const bytesUsed = Number(s.bytesUsed);
    const table = (name: string, v: bigint, optional: boolean): number | undefined => {
      if (optional && v === INVALID_TABLE) return undefined;
      if (v > BigInt(fileSize)) throw truncated(`${name} table`, v);
      if (v >= s.bytesUsed || v < BigInt(SUPERBLOCK_SIZE)) throw bad(`${name} table at byte ${v} outside the image (${bytesUsed} bytes)`);
      return Number(v);
    };
    const idTableStart = table('id', s.idTableStart, false)!;
    const xattrTableStart = table('xattr', s.xattrIdTableStart, true);
    const inodeTableStart = table('inode', s.inodeTableStart, false)!;
    const directoryTableStart = table('directory', s.directoryTableStart, false)!;
    const fragmentTableStart = table('fragment', s.fragmentTableStart, true);
    const exportTableStart = table('export', s.exportTableStart, true);

    // The kernel's order: data, inodes, directories, fragments, export, ids, xattrs.
    if (!(inodeTableStart < directoryTableStart)) throw bad('inode table does not precede the directory table');
    for (const [name, t] of [['fragment', fragmentTableStart], ['export', exportTableStart], ['id', idTableStart], ['xattr', xattrTableStart]] as const) {
      if (t !== undefined && t <= directoryTableStart) throw bad(`${name} table at byte ${t} precedes the directory table`);
    }
    if (fragments > 0 && fragmentTableStart === undefined) throw bad(`${fragments} fragments but no fragment table`);

    const sb: SquashfsSuperblock = {
      compressor, blockSize, inodes, bytesUsed, mkfsTime: s.mkfsTime, fragments, ids, flags, dataStart: SUPERBLOCK_SIZE,
      inodeTableStart, directoryTableStart, fragmentTableStart, exportTableStart, idTableStart, xattrTableStart,
    };
    const rootRef: Pos = { block: inodeTableStart + Number(s.rootInode >> 16n), offset: Number(s.rootInode & 0xffffn) };
    if (s.rootInode >> 16n >= BigInt(directoryTableStart - inodeTableStart) || rootRef.offset >= METADATA_SIZE) {
      throw bad(`root inode reference ${s.rootInode} outside the inode table`);
    }

    const img = new SquashfsImage(path, fh, fileSize, sb, decompress, rootRef);

    if (flags & FLAG.COMPRESSOR_OPTIONS) {
      const opts = await img.meta.block(SUPERBLOCK_SIZE, { name: 'compressor options', start: SUPERBLOCK_SIZE, end: inodeTableStart });
      sb.dataStart = opts.next;
      const why = unreadableOptions(compressor, opts.data);
      if (why !== undefined) {
        throw new StrataError(IMAGE_ERR.UNSUPPORTED, `${path} uses ${why}`, { hint: `rebuild it with mksquashfs -comp ${compressor} or another compressor` });
      }
    }

    img.ids = await readIdTable(img.source, img.meta, img.tableRegion, idTableStart, ids, directoryTableStart);
    if (fragmentTableStart !== undefined && fragments > 0) {
      img.fragmentList = await readFragmentLocations(img.source, fragmentTableStart, fragments, directoryTableStart);
    }
    if (xattrTableStart !== undefined) img.xattrTable = await readXattrHeader(img.source, xattrTableStart, directoryTableStart, bad);
    return img;
  }

  private corrupt(what: string): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.path}: ${what}`, { hint: HINT });
  }

  private truncated(what: string, at: number | bigint): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.path} is truncated (${what} at byte ${at} beyond end of file at ${this.fileSize})`, {
      hint: 'the file is incomplete; copy or download it again',
    });
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

  /** `n` bytes at absolute `pos`; the range must lie within the image. */
  private async readAt(pos: number, n: number, what: string): Promise<Buffer> {
    if (pos < 0 || n < 0 || pos + n > this.superblock.bytesUsed) {
      if (pos + n > this.fileSize) throw this.truncated(what, pos);
      throw this.corrupt(`${what} at byte ${pos} (+${n}) outside the image`);
    }
    const b = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const bytesRead = readSync(this.fh.fd, b, done, n - done, pos + done);
      if (bytesRead === 0) throw this.corrupt(`${what} at byte ${pos}: file shrank while reading`);
      done += bytesRead;
    }
    return b;
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
    const c = this.meta.cursor(this.inodeRegion, ref.block, ref.offset);
    const d = await decodeInode(c, (why) => this.corrupt(`${where}: ${why}`));
    if (d.number < 1 || d.number > this.superblock.inodes) {
      throw this.corrupt(`${where}: inode number ${d.number} outside 1..${this.superblock.inodes}`);
    }
    if (d.mode & ~0o7777) throw this.corrupt(`${where}: mode ${d.mode.toString(8)} has type bits`);
    // Checked in place, not copied: a copy of every inode read was 40 % of a walk's time.
    const ino = d as Inode;
    ino.at = ref;
    ino.uid = this.id(d.uidIndex, ref);
    ino.gid = this.id(d.gidIndex, ref);
    if (Number.isNaN(ino.blocksStart) || Number.isNaN(ino.fileSize) || Number.isNaN(ino.sparse)) {
      throw this.corrupt(`${where}: a 64-bit value out of range`);
    }
    if (d.targetSize !== undefined) {
      if (d.targetSize === 0 || d.targetSize > MAX_SYMLINK) throw this.corrupt(`${where}: symlink target of ${d.targetSize} bytes`);
      const t = await readSymlinkTail(c, ino);
      if (t.includes(0)) throw this.corrupt(`${where}: symlink target contains a NUL byte`);
      ino.target = this.utf8(t, `symlink target of the ${where}`);
    }
    const xattrIds = this.xattrTable?.count ?? 0;
    if (ino.xattr !== INVALID_XATTR && ino.xattr >= xattrIds) {
      throw this.corrupt(`${where}: xattr index ${ino.xattr} beyond the xattr table (${xattrIds} entries)`);
    }
    if (ino.dirBlock !== undefined) {
      const rel = ino.dirBlock;
      if (rel >= this.superblock.bytesUsed - this.superblock.directoryTableStart || ino.dirOffset! >= METADATA_SIZE) {
        throw this.corrupt(`${where}: directory listing at ${rel}+${ino.dirOffset} outside the directory table`);
      }
      ino.dirStart = { block: this.superblock.directoryTableStart + rel, offset: ino.dirOffset! };
    }
    if (ino.fileSize !== undefined && ino.fileSize > MAX_FILE_SIZE) throw this.corrupt(`${where}: file size ${ino.fileSize}`);
    return ino;
  }

  /**
   * The link count of the inode an entry names, from its header and the field that holds it
   * (walk.ts's survey): -1 for a directory, 0 for a socket, as the entry says (inode() checks
   * that its inode agrees; the survey relies on nothing else).
   */
  private async links(de: DirEntry): Promise<number> {
    if (de.type === INODE.BASIC_DIR) return -1;
    if (de.type === INODE.BASIC_SOCKET) return 0;
    if (de.ref.offset >= METADATA_SIZE) throw this.corrupt(`inode at byte ${de.ref.block}+${de.ref.offset}: offset beyond a metadata block`);
    const c = this.meta.cursor(this.inodeRegion, de.ref.block, de.ref.offset);
    const type = (await c.read(INODE_HEADER_SIZE)).readUInt16LE(0);
    if (type === INODE.BASIC_FILE) return 1;
    // nlink is the first field after the header but in an extended file's (after 24 bytes).
    return type === INODE.EXT_FILE ? (await c.read(28)).readUInt32LE(24) : (await c.read(4)).readUInt32LE(0);
  }

  /** The inode's extended attributes (cached per xattr index). */
  private async xattrs(index: number): Promise<Map<string, Buffer> | undefined> {
    if (index === INVALID_XATTR || !this.xattrTable) return undefined;
    const table = this.xattrTable;
    return this.xattrCache.get(index, () => readXattrSet(this.meta, table, index, (b, what) => this.utf8(b, what)));
  }

  private listingOf(dir: Inode): Listing {
    return { start: dir.dirStart!, size: dir.dirSize!, indexCount: dir.indexCount!, indexAt: dir.indexAt };
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
   * own type, later paths are 'hardlink' entries whose linkname is that first path, known
   * without memory per link (shared/walk.ts; opts.scratchDir takes its spill files).
   * Sockets have no EntryType: they are left out and reported through opts.onSkip.
   * xattrs are listed in byte order of their names.
   * Entries of type 'file' can be passed to openFile() while the walk goes on.
   */
  walk(opts: WalkOptions = {}): AsyncGenerator<ImageEntry> {
    return walkImage(this.walkSource, opts);
  }

  /** What the shared walk reads of this image (shared/walk.ts). */
  private readonly walkSource: WalkSource<DirEntry, Inode, ImageEntry> = {
    root: async () => {
      const root = await this.readInode(this.rootRef);
      if (root.basic !== INODE.BASIC_DIR) throw this.corrupt(`root inode is type ${root.type}, not a directory`);
      return root;
    },
    listing: (dir, path) => listingEntries(this.listing, this.listingOf(dir), `directory ${q(path)}`),
    name: (de) => de.name,
    inode: (de, path) => this.entryInode(de, path),
    links: (de) => this.links(de),
    key: (de) => de.number,
    kind: (ino) => (ino.basic === INODE.BASIC_DIR ? KIND.DIR : ino.basic === INODE.BASIC_SOCKET ? KIND.SOCKET : KIND.OTHER),
    number: (ino) => ino.number,
    nlink: (ino) => ino.nlink,
    cycle: (path, ino) => this.corrupt(`directory ${q(path)} (inode ${ino.number}) appears twice: a cycle`),
    entry: (path, ino, linkTo) => this.toEntry(path, ino, linkTo),
    error: (e) => toImageError(this.path, e),
  };

  /** The inode at canonical `path` without following symlinks, or undefined. */
  private async resolve(path: string): Promise<{ ino: Inode; path: string } | undefined> {
    const parts = splitPath(path);
    if (parts === undefined) return undefined;
    let ino = await this.readInode(this.rootRef);
    if (ino.basic !== INODE.BASIC_DIR) throw this.corrupt(`root inode is type ${ino.type}, not a directory`);
    let cur = '.';
    for (const name of parts) {
      if (ino.basic !== INODE.BASIC_DIR) return undefined;
      const [de] = await readListing(this.listing, this.listingOf(ino), `directory ${q(cur)}`, Buffer.from(name));
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

  /**
   * The whole content of the regular file at `path` (meant for small files); a file larger
   * than `max` bytes (default READ_FILE_MAX) is ERR_IMAGE_TOO_LARGE, before anything is read.
   */
  async readFile(path: string, max = READ_FILE_MAX): Promise<Buffer> {
    const e = await this.stat(path);
    if (e === undefined || e.type !== 'file') {
      throw new StrataError(IMAGE_ERR.NOT_FOUND, `${this.path} has no regular file ${path}`, { hint: 'list the image with `strata inspect`' });
    }
    if (e.size > max) throw new StrataError(IMAGE_ERR.TOO_LARGE, `${this.path}: ${path} is too large to read whole (${e.size} bytes)`);
    const parts: Buffer[] = [];
    for await (const b of this.openFile(e)) parts.push(b);
    return Buffer.concat(parts, e.size);
  }

  private async fileInode(file: string | ImageEntry): Promise<{ ino: Inode; path: string }> {
    if (typeof file === 'string') {
      const r = await this.resolve(file);
      if (r === undefined || r.ino.basic !== INODE.BASIC_FILE) {
        throw new StrataError(IMAGE_ERR.NOT_FOUND, `${this.path} has no regular file ${file}`, { hint: 'list the image with `strata inspect`' });
      }
      return r;
    }
    const ino = this.fileInodes.get(file);
    if (ino === undefined) throw new StrataError(IMAGE_ERR.NOT_FOUND, `openFile: ${file.path} is not a file entry of ${this.path}`);
    return { ino, path: file.path };
  }

  /**
   * The content of a regular file, as chunks of at most one block, read on demand (bounded
   * memory; holes come back as zero-filled chunks — use contentPieces() to skip them). `file`
   * is a path or an entry of type 'file' (or a 'hardlink' to a file) from walk()/stat() of this
   * image. Chunks are fresh buffers the caller may keep.
   */
  async *openFile(file: string | ImageEntry): AsyncGenerator<Buffer> {
    const bs = this.superblock.blockSize;
    for await (const x of this.contentPieces(file)) {
      if (x.data) yield x.data;
      else for (let left = x.length; left > 0; left -= bs) yield Buffer.alloc(Math.min(bs, left));
    }
  }

  /**
   * The content of a regular file as pieces in file order: data of at most one block, and holes
   * (runs of sparse blocks, one piece each, no `data`). Work and memory grow with the blocks
   * stored, not with the size of the holes. The pieces cover the file exactly. A piece's data
   * may be a view of a decoded block the reader keeps: copy what is kept.
   * One generator per file, with nothing between it and the blocks: extraction reads a file
   * this way, and for a tree of small files each layer of generators (a promise and a turn
   * of the microtask queue per step) cost more than reading the file did.
   */
  async *contentPieces(file: string | ImageEntry): AsyncGenerator<Piece> {
    try {
      const { ino, path } = await this.fileInode(file);
      const sb = this.superblock;
      const bs = sb.blockSize;
      const size = ino.fileSize!;
      const hasFrag = ino.frag !== INVALID_FRAG;
      const nBlocks = fileBlockCount(size, bs, hasFrag);
      const where = `file ${q(path)}`;
      let pos = ino.blocksStart!;
      let offset = 0;
      let hole = 0;
      const list = nBlocks > 0 ? this.meta.cursor(this.inodeRegion, ino.blockListAt!.block, ino.blockListAt!.offset) : undefined;
      for (let i = 0; i < nBlocks; ) {
        const batch = Math.min(nBlocks - i, 2048);
        const words = Buffer.from(await list!.read(batch * 4));
        for (let j = 0; j < batch; j++, i++) {
          const w = words.readUInt32LE(j * 4);
          const want = !hasFrag && i === nBlocks - 1 ? size - i * bs : bs;
          if (w === 0) {
            hole += want;
            continue;
          }
          const word = decodeSizeWord(w, bs);
          if (word === undefined || word.onDisk === 0) throw this.corrupt(`${where}: block ${i} has size word 0x${w.toString(16)}`);
          // Where the data area is is checked only for blocks stored: a file of holes alone may
          // point anywhere (mksquashfs and strata leave it at the end of the data).
          if (pos < sb.dataStart || pos + word.onDisk > sb.inodeTableStart) {
            throw this.corrupt(`${where}: block ${i} at byte ${pos} ${pos < sb.dataStart ? 'outside' : 'runs past'} the data area`);
          }
          const data = await this.dataBlock(pos, word.onDisk, word.stored, `${where}: block ${i}`);
          pos += word.onDisk;
          if (hole > 0) {
            yield { offset, length: hole };
            offset += hole;
            hole = 0;
          }
          if (data.length === want) yield { offset, length: want, data };
          else if (data.length < want && want === bs && !(i === nBlocks - 1 && !hasFrag)) {
            const full = Buffer.alloc(bs);
            data.copy(full);
            yield { offset, length: bs, data: full };
          } else {
            throw this.corrupt(`${where}: block ${i} at byte ${pos - word.onDisk} holds ${data.length} bytes, ${want} expected`);
          }
          offset += want;
        }
      }
      if (hole > 0) {
        yield { offset, length: hole };
        offset += hole;
      }
      if (hasFrag) {
        const tail = size % bs;
        if (tail === 0) return;
        const frag = await this.fragment(ino.frag!, where);
        const off = ino.fragOffset!;
        if (off + tail > frag.length) throw this.corrupt(`${where}: tail at ${off}+${tail} beyond fragment ${ino.frag} (${frag.length} bytes)`);
        yield { offset, length: tail, data: frag.subarray(off, off + tail) };
      }
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  private async dataBlock(pos: number, onDisk: number, stored: boolean, what: string): Promise<Buffer> {
    const raw = await this.readAt(pos, onDisk, what);
    if (stored) return raw;
    try {
      return this.source.decompress(raw, this.superblock.blockSize);
    } catch (e) {
      throw this.blockError(e, `${what}: corrupt data block at byte ${pos}`);
    }
  }

  private async fragment(index: number, where: string): Promise<Buffer> {
    if (index >= this.superblock.fragments) throw this.corrupt(`${where}: fragment ${index} of ${this.superblock.fragments}`);
    return this.fragCache.get(index, () => this.loadFragment(index));
  }

  private async loadFragment(index: number): Promise<Buffer> {
    const { start, word: w } = await readFragmentEntry(this.meta, this.tableRegion, this.fragmentList, index);
    const sb = this.superblock;
    const word = decodeSizeWord(w, sb.blockSize);
    if (word === undefined || word.onDisk === 0) throw this.corrupt(`fragment ${index} has size word 0x${w.toString(16)}`);
    if (start < BigInt(sb.dataStart) || start + BigInt(word.onDisk) > BigInt(sb.inodeTableStart)) {
      throw this.corrupt(`fragment ${index} at byte ${start} outside the data area`);
    }
    return this.dataBlock(Number(start), word.onDisk, word.stored, `fragment ${index}`);
  }

  /** Closes the file handle. Iterators still running fail afterwards. */
  async close(): Promise<void> {
    await this.fh.close();
  }
}

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

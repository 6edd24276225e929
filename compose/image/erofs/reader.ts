/**
 * strata's EROFS reader: walks an image as LayerEntry values (xattrs and POSIX ACLs
 * included), reads files streaming. Its API mirrors SquashfsImage (open / stat / readFile /
 * openFile / walk / close), so an extractor can take either. Layouts: format.ts.
 *
 * Reads what strata writes and what mkfs.erofs writes with the same features: compact and
 * extended inodes; flat, inline, chunk-based (block map or indexes) and compressed data
 * with full lcluster indexes; lz4 and zstd pclusters (big pclusters, zero
 * padding); shared and inline xattrs. Refused as ERR_IMAGE_UNSUPPORTED: other block sizes
 * than 4096 bytes, extra devices, tail-packed or fragment pclusters, long xattr name
 * prefixes, compact lcluster indexes (mkfs.erofs's default for compressed files), lzma
 * and deflate, interlaced plain pclusters.
 *
 * Hostile input: every nid, block address, count and length is checked against the image
 * size before use; allocations are bounded by the format's own limits (a block, a 1 MiB
 * pcluster, a 12 MiB extent, 64 KiB xattr values); loops are bounded by bytes decoded; a
 * directory met twice is a cycle. Anything inconsistent is one StrataError
 * ERR_IMAGE_CORRUPT naming the image and what is wrong. I/O errors of the image file
 * itself pass through as Node's fs errors.
 *
 * Reads are positional and on the calling thread: the reads are small (a metadata block, a
 * pcluster) and the page cache answers most of them at once, where a trip through libuv's
 * pool cost more than the read (a million-file unsquash took 45 s instead of 28). Calls may
 * overlap; decoded blocks are kept in small caches that share a load in flight.
 */
import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { LayerEntry } from '../../../store/index.js';
import { aclFromXattr, aclToText } from '../../../native/acl.js';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { decoderFor, type PclusterDecoder } from './codec.js';
import { LoadCache } from '../shared/lru.js';
import type { Piece } from '../shared/piece.js';
import { KIND, walkImage, type WalkOptions, type WalkSource } from '../shared/walk.js';
import {
  ADVISE,
  ALG_NAMES,
  BLOCK_BITS,
  BLOCK_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  CHUNK_FORMAT_INDEXES,
  COMPACT_SIZE,
  DIRENT_SIZE,
  FEATURE_INCOMPAT,
  FT,
  I_FORMAT_ALL,
  INODE_SLOT,
  LAYOUT,
  LCLUSTER,
  LI_D0_CBLKCNT,
  MAGIC,
  NAME_MAX,
  NULL_ADDR,
  PCLUSTER_MAX,
  S_IF,
  S_IFMT,
  SUPERBLOCK_SIZE,
  SUPER_OFFSET,
  XATTR_BODY_HEADER,
  XATTR_ENTRY_HEADER,
  XATTR_INDEX,
  XATTR_PREFIX,
  align,
  decodeDevice,
  decodeInode,
  decodeSuperblock,
  inodeSize,
  xattrBodySize,
  type InodeCore,
  type Superblock,
} from './format.js';

/** readFile() refuses files larger than this; use openFile() for those. */
export const READ_FILE_MAX = 1 << 30;
/** Largest decompressed extent the kernel accepts (Z_EROFS_PCLUSTER_MAX_DSIZE). */
const EXTENT_MAX = 12 << 20;
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const META_CACHE_BLOCKS = 1024;
const READ_CHUNK = 1 << 20;
const KNOWN_INCOMPAT = FEATURE_INCOMPAT.ZERO_PADDING | FEATURE_INCOMPAT.COMPR_CFGS | FEATURE_INCOMPAT.CHUNKED_FILE;

/** What the superblock says, validated. */
export interface ErofsSuperblock {
  blockSize: number;
  inodes: number;
  blocks: number;
  buildTime: number;
  rootNid: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  featureCompat: number;
  featureIncompat: number;
  /** Compression algorithms the image may use ('lz4', 'zstd', …); empty when uncompressed. */
  compressors: string[];
}

/** An entry of the image: a LayerEntry plus the inode's nid and link count. */
export type ImageEntry = LayerEntry & { inode: number; nlink: number };

export type { WalkOptions };

interface Inode extends InodeCore {
  nid: number;
  /** Absolute byte position of the inode. */
  pos: number;
  /** Absolute position just past inode + xattr body. */
  end: number;
  xattrSize: number;
}

interface DirEntry {
  name: string;
  nid: number;
  type: number;
}

const HINT = 'the image is damaged; rebuild it or copy it again';

/** A path for a one-line message: quoted, control characters escaped. */
function q(s: string): string {
  return /[\x00-\x1f\x7f']/.test(s) ? JSON.stringify(s) : `'${s}'`;
}

const TYPE_OF_MODE: Record<number, LayerEntry['type'] | 'socket'> = {
  [S_IF.REG]: 'file',
  [S_IF.DIR]: 'dir',
  [S_IF.LNK]: 'symlink',
  [S_IF.CHR]: 'char',
  [S_IF.BLK]: 'block',
  [S_IF.FIFO]: 'fifo',
  [S_IF.SOCK]: 'socket',
};
const FT_OF_MODE: Record<number, number> = {
  [S_IF.REG]: FT.REG,
  [S_IF.DIR]: FT.DIR,
  [S_IF.LNK]: FT.LNK,
  [S_IF.CHR]: FT.CHR,
  [S_IF.BLK]: FT.BLK,
  [S_IF.FIFO]: FT.FIFO,
  [S_IF.SOCK]: FT.SOCK,
};

/** Where a piece of a file's content is stored: bytes of the image, zeros, or a compressed extent. */
type Stored =
  | { kind: 'raw'; la: number; len: number; pa: number }
  | { kind: 'zero'; la: number; len: number }
  | { kind: 'inline'; la: number; len: number; pa: number }
  | { kind: 'z'; la: number; len: number; pa: number; plen: number; alg: number; plain: boolean };

export class ErofsImage {
  readonly superblock: Readonly<ErofsSuperblock>;
  private readonly metaCache = new LoadCache<number, Buffer>(META_CACHE_BLOCKS);
  private readonly extentCache = new LoadCache<string, { data: Buffer; zero: boolean }>(8);
  private readonly fileInodes = new WeakMap<object, Inode>();
  private readonly sb: Superblock;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly fileSize: number,
    sb: Superblock,
    info: ErofsSuperblock,
    private readonly algs: number,
  ) {
    this.sb = sb;
    this.superblock = info;
  }

  /**
   * Opens `path` and validates the superblock. Throws ERR_IMAGE_CORRUPT for anything that
   * is not a sound EROFS image, ERR_IMAGE_UNSUPPORTED for features strata does not read.
   * The caller must close() the image.
   */
  static async open(path: string): Promise<ErofsImage> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      return await ErofsImage.init(path, fh, size);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw toImageError(path, e);
    }
  }

  private static async init(path: string, fh: FileHandle, fileSize: number): Promise<ErofsImage> {
    const head = Buffer.alloc(SUPERBLOCK_SIZE);
    const { bytesRead } = await fh.read(head, 0, SUPERBLOCK_SIZE, SUPER_OFFSET);
    if (bytesRead < 4 || head.readUInt32LE(0) !== MAGIC) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is not an EROFS image (no magic at byte ${SUPER_OFFSET})`, {
        hint: 'give an EROFS image made by strata or mkfs.erofs',
      });
    }
    if (bytesRead < SUPERBLOCK_SIZE) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is truncated (superblock ends past the end of the file at ${fileSize})`, {
        hint: 'the file is incomplete; copy or download it again',
      });
    }
    const sb = decodeSuperblock(head);
    const bad = (why: string) => new StrataError(IMAGE_ERR.CORRUPT, `${path}: corrupt EROFS superblock (${why})`, { hint: HINT });
    const unsupported = (why: string) =>
      new StrataError(IMAGE_ERR.UNSUPPORTED, `${path}: EROFS ${why} is not supported by strata's reader`, {
        hint: 'mount the image with the kernel, or rebuild it with strata',
      });
    if (sb.blkszbits !== BLOCK_BITS) {
      if (sb.blkszbits < 9 || sb.blkszbits > 16) throw bad(`block size bits ${sb.blkszbits}`);
      throw unsupported(`block size ${2 ** sb.blkszbits}`);
    }
    const unknown = sb.featureIncompat & ~KNOWN_INCOMPAT;
    if (unknown) {
      const names: string[] = [];
      if (unknown & FEATURE_INCOMPAT.DEVICE_TABLE) names.push('device table');
      if (unknown & FEATURE_INCOMPAT.ZTAILPACKING) names.push('tail packing');
      if (unknown & FEATURE_INCOMPAT.FRAGMENTS) names.push('fragments/dedupe');
      if (unknown & FEATURE_INCOMPAT.XATTR_PREFIXES) names.push('long xattr prefixes');
      throw unsupported(`feature ${names.length ? names.join(', ') : `0x${unknown.toString(16)}`}`);
    }
    if (sb.extraDevices !== 0) throw unsupported('multi-device image');
    const blocks = sb.blocks;
    if (blocks * BLOCK_SIZE > fileSize) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is truncated (${blocks} blocks of ${BLOCK_SIZE} bytes claimed, file has ${fileSize} bytes)`, {
        hint: 'the file is incomplete; copy or download it again',
      });
    }
    if (sb.metaBlkaddr >= Math.max(blocks, 1) && blocks > 0) throw bad(`metadata block ${sb.metaBlkaddr} past the image's ${blocks} blocks`);
    if (sb.xattrBlkaddr >= Math.max(blocks, 1) && sb.xattrBlkaddr !== 0) throw bad(`xattr block ${sb.xattrBlkaddr} past the image's ${blocks} blocks`);
    let algs = 0;
    const compressors: string[] = [];
    if (sb.featureIncompat & FEATURE_INCOMPAT.COMPR_CFGS) {
      algs = sb.u1;
      for (let a = 0; a < 16; a++) if (algs & (1 << a)) compressors.push(ALG_NAMES[a] ?? `algorithm ${a}`);
    } else {
      algs = 1; // lz4 is implied
    }
    const info: ErofsSuperblock = {
      blockSize: BLOCK_SIZE,
      inodes: Number(sb.inos),
      blocks,
      buildTime: Number(sb.buildTime),
      rootNid: sb.rootNid,
      metaBlkaddr: sb.metaBlkaddr,
      xattrBlkaddr: sb.xattrBlkaddr,
      featureCompat: sb.featureCompat,
      featureIncompat: sb.featureIncompat,
      compressors,
    };
    return new ErofsImage(path, fh, fileSize, sb, info, algs);
  }

  private corrupt(what: string): StrataError {
    return new StrataError(IMAGE_ERR.CORRUPT, `${this.path}: corrupt EROFS image (${what})`, { hint: HINT });
  }

  private unsupported(what: string): StrataError {
    return new StrataError(IMAGE_ERR.UNSUPPORTED, `${this.path}: ${what} is not supported by strata's reader`, {
      hint: 'mount the image with the kernel, or rebuild it with strata',
    });
  }

  /** The image's bytes end here (the superblock's block count, or the file when smaller). */
  private get limit(): number {
    return Math.min(this.fileSize, Math.max(this.sb.blocks, 1) * BLOCK_SIZE);
  }

  private async readAt(pos: number, n: number, what: string): Promise<Buffer> {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + n > this.limit) {
      throw this.corrupt(`${what} at byte ${pos}+${n} past the end of the image at ${this.limit}`);
    }
    const b = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const bytesRead = readSync(this.fh.fd, b, got, n - got, pos + got);
      if (bytesRead === 0) throw this.corrupt(`${what}: short read at byte ${pos + got}`);
      got += bytesRead;
    }
    return b;
  }

  private block(blk: number, what: string): Promise<Buffer> {
    return this.metaCache.get(blk, () => this.readAt(blk * BLOCK_SIZE, BLOCK_SIZE, what));
  }

  /** `n` bytes of metadata at absolute `pos` (through the block cache; may span blocks). */
  private async meta(pos: number, n: number, what: string): Promise<Buffer> {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + n > this.limit) {
      throw this.corrupt(`${what} at byte ${pos}+${n} past the end of the image at ${this.limit}`);
    }
    const first = Math.floor(pos / BLOCK_SIZE);
    const off = pos % BLOCK_SIZE;
    if (off + n <= BLOCK_SIZE) return (await this.block(first, what)).subarray(off, off + n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (let blk = first; got < n; blk++) {
      const b = await this.block(blk, what);
      const from = blk === first ? off : 0;
      const k = Math.min(BLOCK_SIZE - from, n - got);
      b.copy(out, got, from, from + k);
      got += k;
    }
    return out;
  }

  private async readInode(nid: number, where: string): Promise<Inode> {
    const pos = this.sb.metaBlkaddr * BLOCK_SIZE + nid * INODE_SLOT;
    const what = `inode ${nid} of ${q(where)}`;
    const head = await this.meta(pos, COMPACT_SIZE, what);
    const format = head.readUInt16LE(0);
    if (format & ~I_FORMAT_ALL) throw this.corrupt(`${what} has i_format 0x${format.toString(16)}`);
    const isize = inodeSize(format);
    const raw = isize === COMPACT_SIZE ? head : await this.meta(pos, isize, what);
    const core = decodeInode(raw, this.sb.buildTime, this.sb.buildTimeNsec);
    if (core.layout > LAYOUT.CHUNK_BASED) throw this.corrupt(`${what} has data layout ${core.layout}`);
    if (TYPE_OF_MODE[core.mode & S_IFMT] === undefined) throw this.corrupt(`${what} has mode 0${core.mode.toString(8)}`);
    const xattrSize = xattrBodySize(core.xattrIcount);
    if (core.xattrIcount !== 0 && core.xattrIcount < 1) throw this.corrupt(`${what} xattr count`);
    const end = pos + isize + xattrSize;
    if (end > this.limit) throw this.corrupt(`${what}: xattrs run past the end of the image`);
    if (core.size > BigInt(Number.MAX_SAFE_INTEGER)) throw this.corrupt(`${what} has size ${core.size}`);
    // The decoded core becomes the inode in place, not copied (see the SquashFS reader).
    const ino = core as Inode;
    ino.nid = nid;
    ino.pos = pos;
    ino.end = end;
    ino.xattrSize = xattrSize;
    return ino;
  }

  /** Xattrs of an inode as full names (ACLs as system.posix_acl_*), in stored order. */
  private async xattrs(ino: Inode, where: string): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    if (ino.xattrSize === 0) return out;
    const what = `xattrs of ${q(where)}`;
    if (ino.xattrSize < XATTR_BODY_HEADER) throw this.corrupt(`${what}: body of ${ino.xattrSize} bytes`);
    const body = await this.meta(ino.end - ino.xattrSize, ino.xattrSize, what);
    const shared = body.readUInt8(4);
    let at = XATTR_BODY_HEADER + 4 * shared;
    if (at > body.length) throw this.corrupt(`${what}: ${shared} shared xattrs do not fit the body`);
    while (at < body.length) {
      if (at + XATTR_ENTRY_HEADER > body.length) throw this.corrupt(`${what}: entry header past the body`);
      const nameLen = body.readUInt8(at);
      const valueLen = body.readUInt16LE(at + 2);
      const size = align(XATTR_ENTRY_HEADER + nameLen + valueLen, 4);
      if (at + XATTR_ENTRY_HEADER + nameLen + valueLen > body.length) throw this.corrupt(`${what}: entry past the body`);
      this.addXattr(out, body.subarray(at, at + XATTR_ENTRY_HEADER + nameLen + valueLen), what);
      at += size;
    }
    for (let i = 0; i < shared; i++) {
      const id = body.readUInt32LE(XATTR_BODY_HEADER + 4 * i);
      const pos = this.sb.xattrBlkaddr * BLOCK_SIZE + id * 4;
      const h = await this.meta(pos, XATTR_ENTRY_HEADER, `${what}: shared xattr ${id}`);
      const n = XATTR_ENTRY_HEADER + h.readUInt8(0) + h.readUInt16LE(2);
      this.addXattr(out, await this.meta(pos, n, `${what}: shared xattr ${id}`), what);
    }
    return out;
  }

  private addXattr(out: Map<string, Buffer>, e: Buffer, what: string): void {
    const nameLen = e.readUInt8(0);
    const index = e.readUInt8(1);
    if (index & 0x80) throw this.unsupported('a long xattr name prefix');
    const prefix = XATTR_PREFIX[index];
    if (prefix === undefined) throw this.corrupt(`${what}: xattr name index ${index}`);
    let suffix: string;
    try {
      suffix = UTF8.decode(e.subarray(XATTR_ENTRY_HEADER, XATTR_ENTRY_HEADER + nameLen));
    } catch {
      throw this.unsupported(`an xattr name that is not UTF-8 (${what})`);
    }
    const isAcl = index === XATTR_INDEX.ACL_ACCESS || index === XATTR_INDEX.ACL_DEFAULT;
    if (isAcl ? nameLen !== 0 : nameLen === 0) throw this.corrupt(`${what}: xattr name of ${nameLen} bytes for index ${index}`);
    const name = prefix + suffix;
    if (name.includes('\0')) throw this.corrupt(`${what}: NUL in an xattr name`);
    if (out.has(name)) throw this.corrupt(`${what}: xattr ${name} twice`);
    out.set(name, Buffer.from(e.subarray(XATTR_ENTRY_HEADER + nameLen)));
  }

  /**
   * The pieces of an inode's data, in order, covering [0, size). Compressed files are
   * mapped from their lcluster indexes in one pass (O(lclusters), read in 4 KiB batches).
   */
  private async *stored(ino: Inode, where: string): AsyncGenerator<Stored> {
    const size = Number(ino.size);
    if (size === 0) return;
    const what = `data of ${q(where)}`;
    const nblocks = Math.ceil(size / BLOCK_SIZE);
    switch (ino.layout) {
      case LAYOUT.FLAT_PLAIN:
      case LAYOUT.FLAT_INLINE: {
        const inline = ino.layout === LAYOUT.FLAT_INLINE;
        const onDisk = inline ? (nblocks - 1) * BLOCK_SIZE : size;
        if (onDisk > 0) {
          const pa = ino.u * BLOCK_SIZE;
          if (ino.u === NULL_ADDR || pa + onDisk > this.limit) throw this.corrupt(`${what}: blocks at ${ino.u} past the end of the image`);
          yield { kind: 'raw', la: 0, len: onDisk, pa };
        }
        if (inline) {
          const len = size - onDisk;
          const pa = ino.end;
          if ((pa % BLOCK_SIZE) + len > BLOCK_SIZE) throw this.corrupt(`${what}: inline data crosses a block boundary`);
          yield { kind: 'inline', la: onDisk, len, pa };
        }
        return;
      }
      case LAYOUT.CHUNK_BASED: {
        const fmt = ino.u & 0xffff;
        if (fmt & ~(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES)) throw this.corrupt(`${what}: chunk format 0x${fmt.toString(16)}`);
        const bits = BLOCK_BITS + (fmt & CHUNK_FORMAT_BLKBITS_MASK);
        if (bits > 40) throw this.corrupt(`${what}: chunk size 2^${bits}`);
        const chunk = 2 ** bits;
        const unit = fmt & CHUNK_FORMAT_INDEXES ? 8 : 4;
        const count = Math.ceil(size / chunk);
        const base = align(ino.end, unit);
        for (let i = 0; i < count; ) {
          const batch = Math.min(count - i, BLOCK_SIZE / unit);
          const map = await this.meta(base + i * unit, batch * unit, `${what}: chunk map`);
          for (let j = 0; j < batch; j++, i++) {
            const blk = map.readUInt32LE(j * unit + (unit - 4));
            if (unit === 8 && map.readUInt16LE(j * unit + 2) !== 0) throw this.unsupported('a chunk on another device');
            const la = i * chunk;
            const len = Math.min(chunk, size - la);
            if (blk === NULL_ADDR) yield { kind: 'zero', la, len };
            else {
              const pa = blk * BLOCK_SIZE;
              if (pa + len > this.limit) throw this.corrupt(`${what}: chunk ${i} at block ${blk} past the end of the image`);
              yield { kind: 'raw', la, len, pa };
            }
          }
        }
        return;
      }
      case LAYOUT.COMPRESSED_FULL:
      case LAYOUT.COMPRESSED_COMPACT:
        yield* this.compressedPieces(ino, size, what);
        return;
      default:
        throw this.corrupt(`${what}: data layout ${ino.layout}`);
    }
  }

  private async *compressedPieces(ino: Inode, size: number, what: string): AsyncGenerator<Stored> {
    const hpos = align(ino.end, 8);
    const h = await this.meta(hpos, 8, `${what}: map header`);
    if (h.readUInt8(7) & 0x80) throw this.unsupported('a file stored in the packed inode');
    const advise = h.readUInt16LE(4);
    const algs = [h.readUInt8(6) & 15, h.readUInt8(6) >> 4];
    if ((h.readUInt8(7) & 7) !== 0) throw this.unsupported('a logical cluster size other than 4096');
    if (advise & (ADVISE.INLINE_PCLUSTER | ADVISE.FRAGMENT_PCLUSTER)) throw this.unsupported('a tail-packed or fragment pcluster');
    if (advise & ADVISE.INTERLACED_PCLUSTER) throw this.unsupported('an interlaced plain pcluster');
    if (!(this.sb.featureIncompat & FEATURE_INCOMPAT.BIG_PCLUSTER) && advise & (ADVISE.BIG_PCLUSTER_1 | ADVISE.BIG_PCLUSTER_2)) {
      throw this.corrupt(`${what}: big pclusters without the superblock feature`);
    }
    const lclusters = Math.ceil(size / BLOCK_SIZE);
    if (ino.layout === LAYOUT.COMPRESSED_COMPACT) throw this.unsupported('compact compression indexes (mkfs.erofs without -Elegacy-compress)');
    const index = this.fullIndexes(hpos + 16, lclusters, what);
    // Walk the lclusters: a HEAD starts an extent that runs to the next HEAD (or EOF).
    let head: { la: number; type: number; pblk: number; blocks: number; lcn: number } | undefined;
    let first = true;
    const finish = (end: number): Stored => {
      const x = head!;
      const len = end - x.la;
      if (len <= 0 || len > EXTENT_MAX) throw this.corrupt(`${what}: extent at ${x.la} of ${len} bytes`);
      const plen = x.blocks * BLOCK_SIZE;
      const pa = x.pblk * BLOCK_SIZE;
      if (x.pblk === NULL_ADDR || pa + plen > this.limit) throw this.corrupt(`${what}: pcluster at block ${x.pblk} past the end of the image`);
      if (x.type === LCLUSTER.PLAIN) {
        if (len > plen) throw this.corrupt(`${what}: plain extent of ${len} bytes in ${plen}`);
        return { kind: 'z', la: x.la, len, pa, plen, alg: -1, plain: true };
      }
      const alg = algs[x.type === LCLUSTER.HEAD2 ? 1 : 0]!;
      return { kind: 'z', la: x.la, len, pa, plen, alg, plain: false };
    };
    for await (const li of index) {
      if (li.type === LCLUSTER.NONHEAD) {
        if (first) throw this.corrupt(`${what}: first logical cluster is not a head`);
        if (li.cblkcnt !== undefined) {
          if (head!.lcn + 1 !== li.lcn) throw this.corrupt(`${what}: CBLKCNT not at the first non-head cluster`);
          const big = head!.type === LCLUSTER.HEAD2 ? ADVISE.BIG_PCLUSTER_2 : ADVISE.BIG_PCLUSTER_1;
          if (head!.type === LCLUSTER.PLAIN || !(advise & big)) throw this.corrupt(`${what}: CBLKCNT without big pclusters`);
          if (li.cblkcnt === 0 || li.cblkcnt * BLOCK_SIZE > PCLUSTER_MAX) throw this.corrupt(`${what}: pcluster of ${li.cblkcnt} blocks`);
          head!.blocks = li.cblkcnt;
        }
        continue;
      }
      const la = li.lcn * BLOCK_SIZE + li.clusterofs;
      if (first) {
        if (li.clusterofs !== 0) throw this.corrupt(`${what}: first extent starts at ${li.clusterofs}`);
        first = false;
      } else if (la > head!.la) {
        yield finish(Math.min(la, size));
      } else if (la !== head!.la) {
        throw this.corrupt(`${what}: extents out of order at logical cluster ${li.lcn}`);
      }
      // A head at or past the end (mkfs.erofs marks where the last extent ends) starts nothing.
      if (la >= size) {
        head = undefined;
        break;
      }
      head = { la, type: li.type, pblk: li.blkaddr, blocks: 1, lcn: li.lcn };
    }
    if (head && head.la < size) yield finish(size);
  }

  private async *fullIndexes(base: number, count: number, what: string): AsyncGenerator<Lcluster> {
    for (let i = 0; i < count; ) {
      const batch = Math.min(count - i, 512);
      const b = await this.meta(base + i * 8, batch * 8, `${what}: lcluster indexes`);
      for (let j = 0; j < batch; j++, i++) {
        const advise = b.readUInt16LE(j * 8);
        const type = advise & 3;
        if (type === LCLUSTER.NONHEAD) {
          const d0 = b.readUInt16LE(j * 8 + 4);
          yield { lcn: i, type, clusterofs: 0, blkaddr: 0, cblkcnt: d0 & LI_D0_CBLKCNT ? d0 & ~LI_D0_CBLKCNT : undefined };
        } else {
          const clusterofs = b.readUInt16LE(j * 8 + 2);
          if (clusterofs >= BLOCK_SIZE) throw this.corrupt(`${what}: cluster offset ${clusterofs}`);
          yield { lcn: i, type, clusterofs, blkaddr: b.readUInt32LE(j * 8 + 4) };
        }
      }
    }
  }

  /** Decompressed (or plain) bytes of one extent, cached by position, and whether all are zero. */
  private extent(p: Extract<Stored, { kind: 'z' }>, what: string): Promise<{ data: Buffer; zero: boolean }> {
    return this.extentCache.get(`${p.pa}:${p.len}`, () => this.loadExtent(p, what));
  }

  private async loadExtent(p: Extract<Stored, { kind: 'z' }>, what: string): Promise<{ data: Buffer; zero: boolean }> {
    const src = await this.readAt(p.pa, p.plen, what);
    let out: Buffer;
    if (p.plain) out = src.subarray(0, p.len);
    else {
      if (!(this.algs & (1 << p.alg))) throw this.corrupt(`${what}: algorithm ${p.alg} not announced by the superblock`);
      const dec: PclusterDecoder | undefined = decoderFor(p.alg);
      if (!dec) throw this.unsupported(`${ALG_NAMES[p.alg] ?? `algorithm ${p.alg}`} compression`);
      let start = 0;
      if (this.sb.featureIncompat & FEATURE_INCOMPAT.ZERO_PADDING) {
        while (start < src.length && src[start] === 0) start++;
        if (start >= BLOCK_SIZE || start === src.length) throw this.corrupt(`${what}: pcluster at byte ${p.pa} is all padding`);
      }
      try {
        out = dec(src.subarray(start), p.len);
      } catch (e) {
        throw this.corrupt(`${what}: pcluster at byte ${p.pa} does not decompress (${e instanceof Error ? e.message : String(e)})`);
      }
      if (out.length !== p.len) throw this.corrupt(`${what}: pcluster at byte ${p.pa} gives ${out.length} bytes, ${p.len} expected`);
    }
    return { data: out, zero: isZero(out) };
  }

  /** The listing of a directory: entries other than "." and "..", in stored order, a block at a time. */
  private async *dirEntries(dir: Inode, where: string): AsyncGenerator<DirEntry[]> {
    const size = Number(dir.size);
    const what = `directory ${q(where)}`;
    let seen = 0;
    for await (const chunk of this.content(dir, where)) {
      for (let off = 0; off < chunk.length; off += BLOCK_SIZE) {
        const blk = chunk.subarray(off, off + BLOCK_SIZE);
        const maxsize = Math.min(size - seen, BLOCK_SIZE);
        seen += blk.length;
        if (blk.length < DIRENT_SIZE) throw this.corrupt(`${what}: block of ${blk.length} bytes`);
        const nameoff0 = blk.readUInt16LE(8);
        if (nameoff0 < DIRENT_SIZE || nameoff0 % DIRENT_SIZE !== 0 || nameoff0 >= maxsize) throw this.corrupt(`${what}: first name offset ${nameoff0}`);
        const n = nameoff0 / DIRENT_SIZE;
        const entries: DirEntry[] = [];
        for (let i = 0; i < n; i++) {
          const at = i * DIRENT_SIZE;
          const nameoff = blk.readUInt16LE(at + 8);
          let len: number;
          if (i + 1 < n) len = blk.readUInt16LE(at + DIRENT_SIZE + 8) - nameoff;
          else {
            const z = blk.indexOf(0, nameoff);
            len = (z < 0 || z > maxsize ? maxsize : z) - nameoff;
          }
          if (nameoff < nameoff0 || len <= 0 || len > NAME_MAX || nameoff + len > maxsize) throw this.corrupt(`${what}: bad entry ${i} of a block`);
          const raw = blk.subarray(nameoff, nameoff + len);
          let name: string;
          try {
            name = UTF8.decode(raw);
          } catch {
            throw this.unsupported(`a name that is not UTF-8 in ${what}`);
          }
          if (name === '.' || name === '..') continue;
          if (name.includes('/') || name.includes('\0')) throw this.corrupt(`${what}: entry name ${q(name)}`);
          const nid = blk.readBigUInt64LE(at);
          if (nid > BigInt(Number.MAX_SAFE_INTEGER) / BigInt(INODE_SLOT)) throw this.corrupt(`${what}: entry ${q(name)} has nid ${nid}`);
          entries.push({ name, nid: Number(nid), type: blk.readUInt8(at + 10) });
        }
        yield entries;
      }
    }
  }

  /**
   * The link count of the inode an entry names, from its mode and nlink fields alone (walk.ts's
   * survey): -1 for a directory, 0 for a socket.
   */
  private async links(de: DirEntry): Promise<number> {
    const pos = this.sb.metaBlkaddr * BLOCK_SIZE + de.nid * INODE_SLOT;
    const head = await this.meta(pos, COMPACT_SIZE, `inode ${de.nid}`);
    const fmt = head.readUInt16LE(4) & S_IFMT;
    if (fmt === S_IF.DIR) return -1;
    if (fmt === S_IF.SOCK) return 0;
    return head.readUInt16LE(0) & 1 ? (await this.meta(pos + 44, 4, `inode ${de.nid}`)).readUInt32LE(0) : head.readUInt16LE(6);
  }

  private async entryInode(de: DirEntry, path: string): Promise<Inode> {
    const ino = await this.readInode(de.nid, path);
    const ft = FT_OF_MODE[ino.mode & S_IFMT];
    if (de.type !== FT.UNKNOWN && de.type !== ft) throw this.corrupt(`entry ${q(path)} says type ${de.type}, its inode is type ${ft}`);
    return ino;
  }

  private async toEntry(path: string, ino: Inode, hardlinkTo?: string): Promise<ImageEntry> {
    const kind = TYPE_OF_MODE[ino.mode & S_IFMT] as LayerEntry['type'];
    const type = hardlinkTo !== undefined ? 'hardlink' : kind;
    const e: ImageEntry = {
      path,
      type,
      mode: ino.mode & 0o7777,
      uid: ino.uid,
      gid: ino.gid,
      mtime: Number(ino.mtime),
      size: type === 'file' ? Number(ino.size) : 0,
      inode: ino.nid,
      nlink: ino.nlink,
    };
    if (hardlinkTo !== undefined) e.linkname = hardlinkTo;
    else if (kind === 'symlink') {
      if (ino.size <= 0n || ino.size >= BigInt(BLOCK_SIZE)) throw this.corrupt(`symlink ${q(path)} has a target of ${ino.size} bytes`);
      const parts: Buffer[] = [];
      for await (const c of this.content(ino, path)) parts.push(c);
      try {
        e.linkname = UTF8.decode(Buffer.concat(parts));
      } catch {
        throw this.unsupported(`a symlink target that is not UTF-8 (${q(path)})`);
      }
    }
    if (kind === 'char' || kind === 'block') {
      const d = decodeDevice(ino.u);
      e.devmajor = d.major;
      e.devminor = d.minor;
    }
    const x = await this.xattrs(ino, path);
    for (const [name, value] of x) {
      if (name === 'system.posix_acl_access' || name === 'system.posix_acl_default') {
        let text: string;
        try {
          text = aclToText(aclFromXattr(value));
        } catch (err) {
          throw this.corrupt(`${name} of ${q(path)}: ${err instanceof Error ? err.message : String(err)}`);
        }
        e.acl ??= {};
        if (name.endsWith('access')) e.acl.access = text;
        else e.acl.default = text;
        continue;
      }
      e.xattrs ??= new Map();
      e.xattrs.set(name, value);
    }
    if (e.xattrs) e.xattrs = new Map([...e.xattrs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
    if (kind === 'file') this.fileInodes.set(e, ino);
    return e;
  }

  /**
   * Every entry, the root '.' first, then depth first in name order: the order of canonical
   * paths (comparePaths). The first path of an inode with nlink > 1 is its own type, later
   * paths are 'hardlink' entries whose linkname is that first path, known without memory
   * per link (shared/walk.ts; opts.scratchDir takes its spill files). Sockets are left out and
   * reported through opts.onSkip. POSIX ACLs come back in `acl` (canonical text), other
   * xattrs in `xattrs` by name. Entries of type 'file' can be passed to openFile().
   */
  walk(opts: WalkOptions = {}): AsyncGenerator<ImageEntry> {
    return walkImage(this.walkSource, opts);
  }

  /** What the shared walk reads of this image (shared/walk.ts). */
  private readonly walkSource: WalkSource<DirEntry, Inode, ImageEntry> = {
    root: async () => {
      const root = await this.readInode(this.sb.rootNid, '.');
      if ((root.mode & S_IFMT) !== S_IF.DIR) throw this.corrupt('the root inode is not a directory');
      return root;
    },
    listing: (dir, path) => this.listing(dir, path),
    name: (de) => de.name,
    inode: (de, path) => this.entryInode(de, path),
    links: (de) => this.links(de),
    key: (de) => de.nid,
    kind: (ino) => {
      const fmt = ino.mode & S_IFMT;
      return fmt === S_IF.DIR ? KIND.DIR : fmt === S_IF.SOCK ? KIND.SOCKET : KIND.OTHER;
    },
    number: (ino) => ino.nid,
    nlink: (ino) => ino.nlink,
    cycle: (path, ino) => this.corrupt(`directory ${q(path)} (nid ${ino.nid}) appears twice: a cycle`),
    entry: (path, ino, linkTo) => this.toEntry(path, ino, linkTo),
    error: (e) => toImageError(this.path, e),
  };

  /** A directory's entries sorted by name bytes (the order they are stored in, checked as they are read), a block at a time; each iteration reads from the start. */
  private listing(dir: Inode, path: string): AsyncIterable<DirEntry[]> {
    return { [Symbol.asyncIterator]: () => this.sortedBlocks(dir, path) };
  }

  private async *sortedBlocks(dir: Inode, path: string): AsyncGenerator<DirEntry[]> {
    let prev: Buffer | undefined;
    for await (const block of this.dirEntries(dir, path)) {
      for (const de of block) {
        const b = Buffer.from(de.name);
        if (prev && Buffer.compare(prev, b) >= 0) throw this.corrupt(`directory ${q(path)} is not sorted at ${q(de.name)}`);
        prev = b;
      }
      yield block;
    }
  }

  private async resolve(path: string): Promise<{ ino: Inode; path: string } | undefined> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.some((p) => p === '..' || p.includes('\0'))) return undefined;
    let ino = await this.readInode(this.sb.rootNid, '.');
    if ((ino.mode & S_IFMT) !== S_IF.DIR) throw this.corrupt('the root inode is not a directory');
    let cur = '.';
    for (const name of parts) {
      if ((ino.mode & S_IFMT) !== S_IF.DIR) return undefined;
      let found: DirEntry | undefined;
      for await (const block of this.dirEntries(ino, cur)) {
        found = block.find((de) => de.name === name);
        if (found) break;
      }
      if (!found) return undefined;
      cur = cur === '.' ? name : `${cur}/${name}`;
      ino = await this.entryInode(found, cur);
    }
    return { ino, path: cur };
  }

  /**
   * The entry at `path` ('.', 'a/b', '/a/b' or './a/b'), not following symlinks; undefined
   * when there is none. A hard-linked file is reported as type 'file' with its nlink.
   * A socket is reported as undefined.
   */
  async stat(path: string): Promise<ImageEntry | undefined> {
    try {
      const r = await this.resolve(path);
      if (r === undefined || (r.ino.mode & S_IFMT) === S_IF.SOCK) return undefined;
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
   * The content of a regular file as chunks of at most 1 MiB, read on demand (bounded
   * memory; holes come back as zero-filled chunks, one per hole piece, not per block).
   * `file` is a path or an entry of type 'file' (or a 'hardlink' to a file) from
   * walk()/stat() of this image. Chunks are fresh buffers the caller may keep.
   */
  async *openFile(file: string | ImageEntry): AsyncGenerator<Buffer> {
    try {
      const { ino, path } = await this.fileInode(file);
      yield* this.content(ino, path);
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  /**
   * The content of a regular file as pieces in order: data (at most 1 MiB, or one compressed
   * extent) with its bytes, and holes (no `data`) whole — hole chunks and all-zero compressed
   * extents, consecutive ones merged — so a sparse file costs O(extents) to copy: an
   * extractor seeks over holes instead of writing zeros. Same `file` as openFile().
   */
  async *contentPieces(file: string | ImageEntry): AsyncGenerator<Piece> {
    try {
      const { ino, path } = await this.fileInode(file);
      yield* this.pieces(ino, path);
    } catch (e) {
      throw toImageError(this.path, e);
    }
  }

  /** An inode's content as bytes, holes as zeros (chunks of at most READ_CHUNK). */
  private async *content(ino: Inode, path: string): AsyncGenerator<Buffer> {
    for await (const x of this.pieces(ino, path)) {
      if (x.data) {
        yield x.data;
        continue;
      }
      for (let done = 0; done < x.length; ) {
        const n = Math.min(READ_CHUNK, x.length - done);
        yield Buffer.alloc(n);
        done += n;
      }
    }
  }

  /** An inode's content as pieces (contentPieces). */
  private async *pieces(ino: Inode, path: string): AsyncGenerator<Piece> {
    const size = Number(ino.size);
    let at = 0;
    const what = `data of ${q(path)}`;
    // Consecutive holes (hole chunks, all-zero extents) are given as one.
    let hole: Piece | undefined;
    for await (const p of this.stored(ino, path)) {
      if (p.la !== at) throw this.corrupt(`${what}: piece at ${p.la}, expected ${at}`);
      if (p.len <= 0 || p.la + p.len > size) throw this.corrupt(`${what}: piece ${p.la}+${p.len} beyond size ${size}`);
      at += p.len;
      let zero = p.kind === 'zero';
      let data: Buffer | undefined;
      if (p.kind === 'z') {
        const x = await this.extent(p, what);
        zero = x.zero;
        if (!zero) data = x.data;
      }
      if (zero) {
        if (hole) hole.length += p.len;
        else hole = { offset: p.la, length: p.len };
        continue;
      }
      if (hole) {
        yield hole;
        hole = undefined;
      }
      switch (p.kind) {
        case 'z':
          yield { offset: p.la, length: p.len, data: data! };
          break;
        case 'raw':
          for (let done = 0; done < p.len; ) {
            const n = Math.min(READ_CHUNK, p.len - done);
            yield { offset: p.la + done, length: n, data: await this.readAt(p.pa + done, n, what) };
            done += n;
          }
          break;
        case 'inline':
          yield { offset: p.la, length: p.len, data: Buffer.from(await this.meta(p.pa, p.len, what)) };
          break;
      }
    }
    if (hole) yield hole;
    if (at !== size) throw this.corrupt(`${what}: data ends at ${at}, size is ${size}`);
  }

  private async fileInode(file: string | ImageEntry): Promise<{ ino: Inode; path: string }> {
    let ino: Inode | undefined;
    let path: string;
    if (typeof file === 'string') {
      const r = await this.resolve(file);
      if (r === undefined || (r.ino.mode & S_IFMT) !== S_IF.REG) {
        throw new StrataError(IMAGE_ERR.NOT_FOUND, `${this.path} has no regular file ${file}`, { hint: 'list the image with `strata inspect`' });
      }
      ino = r.ino;
      path = r.path;
    } else {
      ino = this.fileInodes.get(file);
      path = file.path;
      if (ino === undefined && file.type === 'hardlink' && file.linkname !== undefined) ino = (await this.resolve(file.linkname))?.ino;
      if (ino === undefined || (ino.mode & S_IFMT) !== S_IF.REG) {
        throw new StrataError(IMAGE_ERR.NOT_FOUND, `openFile: ${file.path} is not a file entry of ${this.path}`);
      }
    }
    return { ino, path };
  }

  /** Closes the file handle. Iterators still running fail afterwards. */
  async close(): Promise<void> {
    await this.fh.close();
  }
}

interface Lcluster {
  lcn: number;
  type: number;
  clusterofs: number;
  blkaddr: number;
  cblkcnt?: number;
}

let zeros = Buffer.alloc(0);
function isZero(b: Buffer): boolean {
  if (zeros.length < b.length) zeros = Buffer.alloc(b.length);
  return b.equals(zeros.subarray(0, b.length));
}

/**
 * Errors from parsing hostile bytes become ERR_IMAGE_CORRUPT; StrataErrors and system
 * errors (with an errno) pass through unchanged.
 */
function toImageError(path: string, e: unknown): unknown {
  if (e instanceof StrataError) return e;
  if (e && typeof e === 'object' && 'errno' in e) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new StrataError(IMAGE_ERR.CORRUPT, `${path}: corrupt EROFS image (${msg})`, { hint: HINT, cause: e });
}

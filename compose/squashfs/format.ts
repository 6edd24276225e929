/**
 * SquashFS 4.0 on-disk format: constants, layouts and the small pure encoders/decoders both
 * strata's writer (writer.ts) and reader (reader.ts) share. Facts from the kernel's
 * fs/squashfs and squashfs-tools-ng doc/format.adoc; the code is ours.
 *
 * Every integer is little-endian. Image layout, in this order (the kernel insists on it):
 *
 *   0       superblock (96 bytes, below)
 *   96      compressor options: one metadata block, stored uncompressed, only when
 *           FLAG.COMPRESSOR_OPTIONS is set
 *   …       data blocks and fragment blocks (no headers, no alignment)
 *   …       inode table       (metadata blocks)
 *   …       directory table   (metadata blocks)
 *   …       fragment table    (metadata blocks of FragmentEntry, then u64[] block locations)
 *   …       export table      (metadata blocks of u64 inode refs, then u64[] block locations)
 *   …       id table          (metadata blocks of u32 ids, then u64[] block locations)
 *   …       xattr table       (key/value metadata blocks, id metadata blocks, XattrIdTable
 *                              header, u64[] id block locations)
 *   bytes_used … padded with zeros to a multiple of 4096 (PAD).
 *
 * Metadata block: u16 header + payload. header & 0x7fff = on-disk payload size (≤ 8192),
 * header & 0x8000 = payload stored uncompressed. A payload decompresses to ≤ 8192 bytes
 * (exactly 8192 except the last block of a table). Records may straddle blocks.
 *
 * Metadata reference (inode ref, xattr ref, …): u64 = (blockStart << 16) | offset, where
 * blockStart is the on-disk position of the block's u16 header relative to the start of its
 * table and offset is a byte offset into the block's uncompressed payload (< 8192).
 *
 * Data block size word (file inode block list, fragment entry): u32; bits 0..23 = on-disk
 * size, bit 24 (DATA_UNCOMPRESSED) = stored uncompressed. The value 0 is a sparse block:
 * block_size zero bytes, nothing on disk.
 */

export const MAGIC = 0x73717368; // "hsqs" on disk
export const VERSION_MAJOR = 4;
export const VERSION_MINOR = 0;
export const SUPERBLOCK_SIZE = 96;
export const METADATA_SIZE = 8192;
export const METADATA_UNCOMPRESSED = 0x8000;
export const DATA_UNCOMPRESSED = 1 << 24;
export const DATA_SIZE_MASK = 0x00ffffff;
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 1048576;
export const DEFAULT_BLOCK_SIZE = 131072;
/** The image file is padded to a multiple of this (kernel device block size 1 KiB or 4 KiB). */
export const PAD = 4096;
/** "Absent" value for u64 table starts (xattr, fragment, export). */
export const INVALID_TABLE = 0xffffffffffffffffn;
/** "No fragment" in a file inode's frag index; "no xattrs" in an inode's xattr index. */
export const INVALID_FRAG = 0xffffffff;
export const INVALID_XATTR = 0xffffffff;
/** Entries per directory header (count stored off by one). */
export const DIR_HEADER_MAX = 256;
/** Longest entry name the kernel accepts (name size stored off by one, ≤ 255). */
export const MAX_NAME = 256;
/** Directory inode file_size = listing bytes + this (the kernel's invented "." and ".."). */
export const DIR_SIZE_BIAS = 3;
/** Max distinct uids+gids: inodes hold a u16 index, but the superblock's u16 id count cannot say 65536. */
export const MAX_IDS = 65535;

/** Superblock compressor ids. */
export const COMPRESSOR = { gzip: 1, lzma: 2, lzo: 3, xz: 4, lz4: 5, zstd: 6 } as const;
export type CompressorName = keyof typeof COMPRESSOR;

/** Superblock flags (informational except COMPRESSOR_OPTIONS, the only one the kernel tests). */
export const FLAG = {
  UNCOMPRESSED_INODES: 0x0001,
  UNCOMPRESSED_DATA: 0x0002,
  CHECK: 0x0004, // unused
  UNCOMPRESSED_FRAGMENTS: 0x0008,
  NO_FRAGMENTS: 0x0010,
  ALWAYS_FRAGMENTS: 0x0020,
  DUPLICATES: 0x0040,
  EXPORTABLE: 0x0080,
  UNCOMPRESSED_XATTRS: 0x0100,
  NO_XATTRS: 0x0200,
  COMPRESSOR_OPTIONS: 0x0400,
  UNCOMPRESSED_IDS: 0x0800,
} as const;

/**
 * Superblock, 96 bytes at offset 0:
 *
 *   off size field
 *    0  u32  magic               MAGIC
 *    4  u32  inodeCount
 *    8  u32  mkfsTime            seconds since the epoch (strata: caller's value, default 0)
 *   12  u32  blockSize           power of two, 4096..1048576
 *   16  u32  fragmentCount       entries in the fragment table
 *   20  u16  compressor          COMPRESSOR id
 *   22  u16  blockLog            log2(blockSize)
 *   24  u16  flags               FLAG bits
 *   26  u16  idCount             entries in the id table
 *   28  u16  versionMajor        4
 *   30  u16  versionMinor        0
 *   32  u64  rootInode           metadata ref of the root directory inode
 *   40  u64  bytesUsed           image size before padding
 *   48  u64  idTableStart        absolute; points at the id table's u64[] block locations
 *   56  u64  xattrIdTableStart   absolute; points at the XattrIdTable header, or INVALID_TABLE
 *   64  u64  inodeTableStart     absolute; first inode metadata block
 *   72  u64  directoryTableStart absolute; first directory metadata block
 *   80  u64  fragmentTableStart  absolute; fragment u64[] block locations, or INVALID_TABLE
 *   88  u64  exportTableStart    absolute; export u64[] block locations, or INVALID_TABLE
 */
export interface Superblock {
  inodeCount: number;
  mkfsTime: number;
  blockSize: number;
  fragmentCount: number;
  compressor: number;
  blockLog: number;
  flags: number;
  idCount: number;
  versionMajor: number;
  versionMinor: number;
  rootInode: bigint;
  bytesUsed: bigint;
  idTableStart: bigint;
  xattrIdTableStart: bigint;
  inodeTableStart: bigint;
  directoryTableStart: bigint;
  fragmentTableStart: bigint;
  exportTableStart: bigint;
}

export function encodeSuperblock(s: Superblock): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(s.inodeCount, 4);
  b.writeUInt32LE(s.mkfsTime, 8);
  b.writeUInt32LE(s.blockSize, 12);
  b.writeUInt32LE(s.fragmentCount, 16);
  b.writeUInt16LE(s.compressor, 20);
  b.writeUInt16LE(s.blockLog, 22);
  b.writeUInt16LE(s.flags, 24);
  b.writeUInt16LE(s.idCount & 0xffff, 26);
  b.writeUInt16LE(s.versionMajor, 28);
  b.writeUInt16LE(s.versionMinor, 30);
  b.writeBigUInt64LE(s.rootInode, 32);
  b.writeBigUInt64LE(s.bytesUsed, 40);
  b.writeBigUInt64LE(s.idTableStart, 48);
  b.writeBigUInt64LE(s.xattrIdTableStart, 56);
  b.writeBigUInt64LE(s.inodeTableStart, 64);
  b.writeBigUInt64LE(s.directoryTableStart, 72);
  b.writeBigUInt64LE(s.fragmentTableStart, 80);
  b.writeBigUInt64LE(s.exportTableStart, 88);
  return b;
}

/** Decodes without validating anything but the buffer length; callers check magic/version. */
export function decodeSuperblock(b: Uint8Array): Superblock & { magic: number } {
  if (b.length < SUPERBLOCK_SIZE) throw new RangeError('superblock: need 96 bytes');
  const v = Buffer.from(b.buffer, b.byteOffset, b.length);
  return {
    magic: v.readUInt32LE(0),
    inodeCount: v.readUInt32LE(4),
    mkfsTime: v.readUInt32LE(8),
    blockSize: v.readUInt32LE(12),
    fragmentCount: v.readUInt32LE(16),
    compressor: v.readUInt16LE(20),
    blockLog: v.readUInt16LE(22),
    flags: v.readUInt16LE(24),
    idCount: v.readUInt16LE(26),
    versionMajor: v.readUInt16LE(28),
    versionMinor: v.readUInt16LE(30),
    rootInode: v.readBigUInt64LE(32),
    bytesUsed: v.readBigUInt64LE(40),
    idTableStart: v.readBigUInt64LE(48),
    xattrIdTableStart: v.readBigUInt64LE(56),
    inodeTableStart: v.readBigUInt64LE(64),
    directoryTableStart: v.readBigUInt64LE(72),
    fragmentTableStart: v.readBigUInt64LE(80),
    exportTableStart: v.readBigUInt64LE(88),
  };
}

/**
 * Compressor options (payload of the metadata block after the superblock):
 *   gzip: u32 level (1..9, default 9), u16 windowBits (8..15, default 15), u16 strategies
 *         (bit field, 0 = zlib default)                                       — 8 bytes
 *   zstd: u32 level (1..22, default 15)                                         — 4 bytes
 *   xz:   u32 dictionary size, u32 filters                                      — 8 bytes
 *   lz4:  u32 version (must be 1), u32 flags (1 = HC)  — always present for lz4 — 8 bytes
 * "gzip" data is a zlib stream (RFC 1950 header + deflate + adler32), not a gzip file.
 */
export const GZIP_DEFAULT_LEVEL = 9;
export const GZIP_WINDOW_BITS = 15;
export const ZSTD_DEFAULT_LEVEL = 15;

/** Inode types (common header `type`). Directory entries always store the basic type. */
export const INODE = {
  BASIC_DIR: 1,
  BASIC_FILE: 2,
  BASIC_SYMLINK: 3,
  BASIC_BLOCK: 4,
  BASIC_CHAR: 5,
  BASIC_FIFO: 6,
  BASIC_SOCKET: 7,
  EXT_DIR: 8,
  EXT_FILE: 9,
  EXT_SYMLINK: 10,
  EXT_BLOCK: 11,
  EXT_CHAR: 12,
  EXT_FIFO: 13,
  EXT_SOCKET: 14,
} as const;

/** Basic type of any inode type (ext types are basic + 7). */
export function basicType(t: number): number {
  return t > 7 ? t - 7 : t;
}

/**
 * Inode layouts (all start with the 16-byte common header):
 *
 * Common header (16):
 *    0 u16 type   2 u16 mode (permission bits & 0o7777, no S_IFMT)   4 u16 uidIndex
 *    6 u16 gidIndex   8 u32 mtime   12 u32 inodeNumber (1..inodeCount)
 *
 * BASIC_DIR (32 total):
 *   16 u32 blockIndex (dir table block start, relative)  20 u32 nlink
 *   24 u16 fileSize (listing + 3)  26 u16 blockOffset  28 u32 parentInode
 * EXT_DIR (40 total + index):
 *   16 u32 nlink  20 u32 fileSize  24 u32 blockIndex  28 u32 parentInode
 *   32 u16 indexCount  34 u16 blockOffset  36 u32 xattrIndex
 *   then indexCount × DirIndex: u32 index (byte offset of a header within the listing),
 *        u32 start (dir table block start, relative), u32 nameSize (len − 1), name bytes
 * BASIC_FILE (32 total + blocks):
 *   16 u32 blocksStart (absolute)  20 u32 fragIndex  24 u32 fragOffset  28 u32 fileSize
 *   32 u32[] blockSizes
 * EXT_FILE (56 total + blocks):
 *   16 u64 blocksStart  24 u64 fileSize  32 u64 sparse (bytes saved by holes)
 *   40 u32 nlink  44 u32 fragIndex  48 u32 fragOffset  52 u32 xattrIndex  56 u32[] blockSizes
 *   blockSizes has floor(size / blockSize) entries with a fragment, ceil(…) without.
 * BASIC_SYMLINK / EXT_SYMLINK:
 *   16 u32 nlink  20 u32 targetSize  24 u8[targetSize] target  (ext: then u32 xattrIndex)
 * BASIC_BLOCK / BASIC_CHAR (24) / EXT_ (28):
 *   16 u32 nlink  20 u32 rdev (encodeDevice)  (ext: 24 u32 xattrIndex)
 * BASIC_FIFO / BASIC_SOCKET (20) / EXT_ (24):
 *   16 u32 nlink  (ext: 20 u32 xattrIndex)
 */
export const INODE_HEADER_SIZE = 16;

/** Linux new_encode_dev: minor low byte | major << 8 | minor high bits << 12. */
export function encodeDevice(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}
export function decodeDevice(dev: number): { major: number; minor: number } {
  return { major: (dev >>> 8) & 0xfff, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/**
 * Directory table: per directory, a listing of runs `header, entry × (count + 1)`, entries
 * sorted by name bytes (unsigned, memcmp order — the kernel's lookup relies on it).
 *
 * Header (12): 0 u32 count (entries − 1, ≤ 255)  4 u32 start (inode table block start,
 *              relative, of every entry in the run)  8 u32 inodeNumber (reference)
 * Entry (8 + name): 0 u16 offset (into the inode block)  2 s16 inodeNumber − reference
 *              4 u16 basic inode type  6 u16 nameSize (len − 1)  8 u8[] name
 *
 * A new header starts when 256 entries are reached, the entry's inode lies in another
 * inode metadata block, or its inode number is more than ±32767 from the reference.
 */
export const DIR_HEADER_SIZE = 12;
export const DIR_ENTRY_SIZE = 8;
export const DIR_INDEX_SIZE = 12;

/** Fragment table entry (16): 0 u64 start (absolute)  8 u32 size word  12 u32 unused (0). */
export const FRAGMENT_ENTRY_SIZE = 16;
/** Export table entry: u64 inode ref; entry i is inode number i + 1. */
export const EXPORT_ENTRY_SIZE = 8;
/** Id table entry: u32 uid or gid. */
export const ID_ENTRY_SIZE = 4;

/**
 * Xattr table.
 * Key/value area (metadata blocks), per pair:
 *   key:   u16 type (XATTR prefix id | XATTR_VALUE_OOL), u16 nameSize, u8[] name (no prefix)
 *   value: u32 valueSize, u8[] value — or, when the key has XATTR_VALUE_OOL, valueSize = 8
 *          and a u64 ref (relative to the kv area start) to another value record
 *          (u32 size + bytes) holding the real value.
 * Xattr id entry (16), in the id metadata blocks that directly follow the kv area:
 *   0 u64 ref to the inode's first pair  8 u32 count (pairs)  12 u32 size (bytes of the
 *   pairs as stored, OOL pairs counting their 8-byte reference)
 * XattrIdTable header (16, uncompressed, at superblock.xattrIdTableStart):
 *   0 u64 kvStart (absolute)  8 u32 idCount  12 u32 unused (0), then u64[] id block locations.
 */
export const XATTR = { user: 0, trusted: 1, security: 2 } as const;
export const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'] as const;
export const XATTR_VALUE_OOL = 0x0100;
export const XATTR_ID_ENTRY_SIZE = 16;
export const XATTR_ID_TABLE_HEADER_SIZE = 16;

/** Splits "trusted.foo" into its prefix id and the stored name; undefined if unsupported. */
export function splitXattrName(name: string): { type: number; rest: string } | undefined {
  for (let i = 0; i < XATTR_PREFIXES.length; i++) {
    const p = XATTR_PREFIXES[i]!;
    if (name.startsWith(p) && name.length > p.length) return { type: i, rest: name.slice(p.length) };
  }
  return undefined;
}

/** (blockStart << 16) | offset as a bigint (blockStart may exceed 2^32). */
export function metaRef(blockStart: number, offset: number): bigint {
  return (BigInt(blockStart) << 16n) | BigInt(offset);
}
export function splitMetaRef(ref: bigint): { blockStart: number; offset: number } {
  return { blockStart: Number(ref >> 16n), offset: Number(ref & 0xffffn) };
}

/** Number of u32 block-size words of a file inode. */
export function fileBlockCount(size: number, blockSize: number, hasFragment: boolean): number {
  return hasFragment ? Math.floor(size / blockSize) : Math.ceil(size / blockSize);
}

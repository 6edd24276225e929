/**
 * The SquashFS 4.0 superblock and the image layout it describes. Facts from the kernel's
 * fs/squashfs and squashfs-tools-ng doc/format.adoc; the code is ours. Every integer in a
 * SquashFS image is little-endian. Image layout, in this order (the kernel insists on it):
 *
 *   0       superblock (96 bytes, below)
 *   96      compressor options: one metadata block, stored uncompressed, only when
 *           FLAG.COMPRESSOR_OPTIONS is set (compressor.ts)
 *   …       data blocks and fragment blocks (data.ts; no headers, no alignment)
 *   …       inode table       (metadata blocks, inode.ts)
 *   …       directory table   (metadata blocks, directory.ts)
 *   …       fragment table    (lookup table of FragmentEntry, fragment-table.ts)
 *   …       export table      (lookup table of inode refs, export-table.ts)
 *   …       id table          (lookup table of u32 ids, id-table.ts)
 *   …       xattr table       (key/value metadata blocks, id metadata blocks, header and
 *                              u64[] id block locations, xattr-table.ts)
 *   bytes_used … padded with zeros to a multiple of 4096 (PAD).
 *
 * Metadata blocks and references: metadata.ts; lookup tables: table.ts.
 */

export const MAGIC = 0x73717368; // "hsqs" on disk
export const VERSION_MAJOR = 4;
export const VERSION_MINOR = 0;
export const SUPERBLOCK_SIZE = 96;
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 1048576;
export const DEFAULT_BLOCK_SIZE = 131072;
/** The image file is padded to a multiple of this (kernel device block size 1 KiB or 4 KiB). */
export const PAD = 4096;
/** "Absent" value for u64 table starts (xattr, fragment, export). */
export const INVALID_TABLE = 0xffffffffffffffffn;

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

/** True for a power of two in MIN_BLOCK_SIZE..MAX_BLOCK_SIZE. */
export function validBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0;
}

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

/** Decodes the fields as stored, validating nothing but the length; the reader checks them. */
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

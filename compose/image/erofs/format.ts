/**
 * EROFS on-disk structures as strata writes and reads them: constants, and the encode and
 * decode of each structure side by side. Facts from the kernel's fs/erofs/erofs_fs.h and
 * erofs-utils; spec/erofs.md tells which of them strata uses and how. All little-endian.
 *
 * Image (block size 4096, blkszbits 12):
 *   0..1023      unused (zeros)
 *   1024..1151   superblock (128 bytes, no extension slots)
 *   1152..       compression configurations when COMPR_CFGS: for each algorithm bit set in
 *                available_compr_algs, low bit first, a record at a 4-byte aligned offset:
 *                le16 size, then `size` bytes
 *   block 1..    data blocks; then the shared xattr area (xattr_blkaddr); then the metadata
 *                area (meta_blkaddr): inodes, each 32-byte aligned, addressed by
 *                nid = (byte offset − meta_blkaddr × 4096) / 32
 *
 * Superblock (offset 1024):
 *    0 le32 magic 0xE0F5E1E2        4 le32 checksum (crc32c; 0, SB_CHKSUM not set)
 *    8 le32 feature_compat         12 u8 blkszbits          13 u8 sb_extslots
 *   14 le16 root_nid               16 le64 inos (inode count)
 *   24 le64 build_time (seconds: the mtime of every compact inode)
 *   32 le32 build_time_nsec        36 le32 blocks (image size / block size)
 *   40 le32 meta_blkaddr           44 le32 xattr_blkaddr
 *   48 u8[16] uuid                 64 u8[16] volume_name
 *   80 le32 feature_incompat       84 le16 available_compr_algs (or lz4_max_distance)
 *   86 le16 extra_devices          88 le16 devt_slotoff     90 u8 dirblkbits
 *   91 u8 xattr_prefix_count       92 le32 xattr_prefix_start
 *   96 le64 packed_nid            104 u8 xattr_filter_reserved, 23 reserved bytes
 *
 * Inodes. i_format: bit 0 = extended (64 bytes) or compact (32 bytes), bits 1..3 = data
 * layout. i_xattr_icount: 0 = no xattrs, else the inline xattr body is 12 + 4 × (icount − 1)
 * bytes right after the inode.
 *   compact (32):   0 le16 i_format  2 le16 i_xattr_icount  4 le16 i_mode  6 le16 i_nlink
 *                   8 le32 i_size   12 le32 reserved (0)   16 le32 i_u     20 le32 i_ino
 *                  24 le16 i_uid   26 le16 i_gid          28 le32 reserved
 *                  mtime = superblock build_time
 *   extended (64):  0 le16 i_format  2 le16 i_xattr_icount  4 le16 i_mode  6 le16 reserved
 *                   8 le64 i_size   16 le32 i_u            20 le32 i_ino
 *                  24 le32 i_uid   28 le32 i_gid          32 le64 i_mtime 40 le32 i_mtime_nsec
 *                  44 le32 i_nlink 48 u8[16] reserved
 *   i_u: raw_blkaddr (flat layouts), rdev (devices, Linux new_encode_dev), compressed_blocks
 *   (compressed layouts), or chunk info { le16 format, le16 reserved } (chunk-based).
 *
 * Xattr body: { le32 h_name_filter (0), u8 h_shared_count, u8[7] reserved,
 *   le32 shared ids[h_shared_count] } then entries; an entry (inline or shared) is
 *   { u8 e_name_len, u8 e_name_index, le16 e_value_size, name suffix, value } padded to 4.
 *   A shared id is (byte offset in the shared area) / 4.
 *
 * Directory data: blocks of 4096 bytes; in each block n dirents { le64 nid, le16 nameoff,
 *   u8 file_type, u8 reserved } then the n names (no terminator); n = nameoff[0] / 12. The
 *   last name of a block ends at the first NUL or at the block's end (the directory's
 *   i_size for its last block). Names sorted by bytes across the whole directory; "." and
 *   ".." are real entries.
 *
 * Compressed files (layout COMPRESSED_FULL): after inode and xattrs, at the next 8-byte
 *   boundary, the map header { le32 reserved/fragment offset, le16 h_advise,
 *   u8 h_algorithmtype, u8 h_clusterbits } and 8 reserved bytes, then one 8-byte lcluster
 *   index per 4096 bytes of file: { le16 di_advise (bits 0-1 type, bit 15 partial ref),
 *   le16 di_clusterofs, le32 blkaddr | le16 delta[2] }.
 */

export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;
export const SUPER_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 128;
export const MAGIC = 0xe0f5e1e2;
export const NAME_MAX = 255;
export const INODE_SLOT = 32;
export const COMPACT_SIZE = 32;
export const EXTENDED_SIZE = 64;
export const XATTR_BODY_HEADER = 12;
export const XATTR_ENTRY_HEADER = 4;
export const DIRENT_SIZE = 12;
export const NULL_ADDR = 0xffffffff;
/** Linux XATTR_SIZE_MAX is 65536; e_value_size is 16 bits, so one less here. */
export const XATTR_VALUE_MAX = 0xffff;
/** erofs-utils before 1.6 refuse more shared xattrs per inode than this. */
export const MAX_SHARED_PER_INODE = 128;
/** Largest encoded pcluster the kernel accepts (Z_EROFS_PCLUSTER_MAX_SIZE). */
export const PCLUSTER_MAX = 1 << 20;

export const FEATURE_COMPAT = { SB_CHKSUM: 0x1, MTIME: 0x2, XATTR_FILTER: 0x4 } as const;
export const FEATURE_INCOMPAT = {
  ZERO_PADDING: 0x1,
  /** Same bit: compression configurations and big pclusters. */
  COMPR_CFGS: 0x2,
  BIG_PCLUSTER: 0x2,
  CHUNKED_FILE: 0x4,
  DEVICE_TABLE: 0x8,
  ZTAILPACKING: 0x10,
  FRAGMENTS: 0x20,
  XATTR_PREFIXES: 0x40,
} as const;

export const LAYOUT = { FLAT_PLAIN: 0, COMPRESSED_FULL: 1, FLAT_INLINE: 2, COMPRESSED_COMPACT: 3, CHUNK_BASED: 4 } as const;

export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const CHUNK_FORMAT_INDEXES = 0x20;

export const XATTR_INDEX = { USER: 1, ACL_ACCESS: 2, ACL_DEFAULT: 3, TRUSTED: 4, LUSTRE: 5, SECURITY: 6 } as const;
/** Name prefixes of the indexes strata writes (the ACL ones are whole names). */
export const XATTR_PREFIX: Record<number, string> = {
  [XATTR_INDEX.USER]: 'user.',
  [XATTR_INDEX.ACL_ACCESS]: 'system.posix_acl_access',
  [XATTR_INDEX.ACL_DEFAULT]: 'system.posix_acl_default',
  [XATTR_INDEX.TRUSTED]: 'trusted.',
  [XATTR_INDEX.LUSTRE]: 'lustre.',
  [XATTR_INDEX.SECURITY]: 'security.',
};

export const FT = { UNKNOWN: 0, REG: 1, DIR: 2, CHR: 3, BLK: 4, FIFO: 5, SOCK: 6, LNK: 7 } as const;

export const S_IFMT = 0o170000;
export const S_IF = { SOCK: 0o140000, LNK: 0o120000, REG: 0o100000, BLK: 0o060000, DIR: 0o040000, CHR: 0o020000, FIFO: 0o010000 } as const;

export const ALG = { LZ4: 0, LZMA: 1, DEFLATE: 2, ZSTD: 3 } as const;
export const ALG_NAMES: Record<number, string> = { 0: 'lz4', 1: 'lzma', 2: 'deflate', 3: 'zstd' };

export const ADVISE = {
  COMPACTED_2B: 0x1,
  BIG_PCLUSTER_1: 0x2,
  BIG_PCLUSTER_2: 0x4,
  INLINE_PCLUSTER: 0x8,
  INTERLACED_PCLUSTER: 0x10,
  FRAGMENT_PCLUSTER: 0x20,
} as const;
export const LCLUSTER = { PLAIN: 0, HEAD1: 1, NONHEAD: 2, HEAD2: 3 } as const;
export const LI_PARTIAL_REF = 1 << 15;
export const LI_D0_CBLKCNT = 1 << 11;
/** Map header (8) + 8 reserved bytes before the first full lcluster index. */
export const FULL_INDEX_HEAD = 16;
export const LCLUSTER_INDEX_SIZE = 8;

export interface Superblock {
  featureCompat: number;
  blkszbits: number;
  extslots: number;
  rootNid: number;
  inos: bigint;
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  uuid: Buffer;
  volumeName: Buffer;
  featureIncompat: number;
  /** available_compr_algs with COMPR_CFGS, else lz4_max_distance. */
  u1: number;
  extraDevices: number;
  dirblkbits: number;
  xattrPrefixCount: number;
  packedNid: bigint;
}

export function encodeSuperblock(s: Superblock): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(s.featureCompat, 8);
  b.writeUInt8(s.blkszbits, 12);
  b.writeUInt8(s.extslots, 13);
  b.writeUInt16LE(s.rootNid, 14);
  b.writeBigUInt64LE(s.inos, 16);
  b.writeBigUInt64LE(s.buildTime, 24);
  b.writeUInt32LE(s.buildTimeNsec, 32);
  b.writeUInt32LE(s.blocks, 36);
  b.writeUInt32LE(s.metaBlkaddr, 40);
  b.writeUInt32LE(s.xattrBlkaddr, 44);
  s.uuid.copy(b, 48, 0, 16);
  s.volumeName.copy(b, 64, 0, 16);
  b.writeUInt32LE(s.featureIncompat, 80);
  b.writeUInt16LE(s.u1, 84);
  b.writeUInt16LE(s.extraDevices, 86);
  b.writeUInt8(s.dirblkbits, 90);
  b.writeUInt8(s.xattrPrefixCount, 91);
  b.writeBigUInt64LE(s.packedNid, 96);
  return b;
}

/** Decodes the 128 bytes at offset 1024; the caller checks the magic first. */
export function decodeSuperblock(b: Buffer): Superblock {
  return {
    featureCompat: b.readUInt32LE(8),
    blkszbits: b.readUInt8(12),
    extslots: b.readUInt8(13),
    rootNid: b.readUInt16LE(14),
    inos: b.readBigUInt64LE(16),
    buildTime: b.readBigUInt64LE(24),
    buildTimeNsec: b.readUInt32LE(32),
    blocks: b.readUInt32LE(36),
    metaBlkaddr: b.readUInt32LE(40),
    xattrBlkaddr: b.readUInt32LE(44),
    uuid: Buffer.from(b.subarray(48, 64)),
    volumeName: Buffer.from(b.subarray(64, 80)),
    featureIncompat: b.readUInt32LE(80),
    u1: b.readUInt16LE(84),
    extraDevices: b.readUInt16LE(86),
    dirblkbits: b.readUInt8(90),
    xattrPrefixCount: b.readUInt8(91),
    packedNid: b.readBigUInt64LE(96),
  };
}

/** An inode's fixed part, both forms. */
export interface InodeCore {
  extended: boolean;
  layout: number;
  xattrIcount: number;
  /** File type and permission bits (st_mode). */
  mode: number;
  nlink: number;
  size: bigint;
  /** raw_blkaddr / rdev / compressed_blocks / chunk format, by layout and type. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
  /** Extended only (compact inodes take the superblock's build time). */
  mtime: bigint;
  mtimeNsec: number;
}

/** Writes inode `i` at `off` of `b` (32 or 64 bytes, as `inodeSize` says); returns its size. */
export function writeInode(b: Buffer, off: number, i: InodeCore): number {
  const format = (i.extended ? 1 : 0) | (i.layout << 1);
  const size = i.extended ? EXTENDED_SIZE : COMPACT_SIZE;
  b.fill(0, off, off + size);
  b.writeUInt16LE(format, off);
  b.writeUInt16LE(i.xattrIcount, off + 2);
  b.writeUInt16LE(i.mode, off + 4);
  b.writeUInt32LE(i.u >>> 0, off + 16);
  b.writeUInt32LE(i.ino >>> 0, off + 20);
  if (!i.extended) {
    b.writeUInt16LE(i.nlink, off + 6);
    b.writeUInt32LE(Number(i.size), off + 8);
    b.writeUInt16LE(i.uid, off + 24);
    b.writeUInt16LE(i.gid, off + 26);
    return size;
  }
  b.writeBigUInt64LE(i.size, off + 8);
  b.writeUInt32LE(i.uid >>> 0, off + 24);
  b.writeUInt32LE(i.gid >>> 0, off + 28);
  b.writeBigUInt64LE(i.mtime, off + 32);
  b.writeUInt32LE(i.mtimeNsec, off + 40);
  b.writeUInt32LE(i.nlink >>> 0, off + 44);
  return size;
}

/**
 * Decodes an inode from `b` (at least 32 bytes; 64 when bit 0 of i_format says extended,
 * which the caller checks with `inodeSize`). Compact inodes get `buildTime` as mtime.
 */
export function decodeInode(b: Buffer, buildTime: bigint, buildTimeNsec: number): InodeCore {
  const format = b.readUInt16LE(0);
  const extended = (format & 1) === 1;
  const layout = (format >> 1) & 7;
  if (!extended) {
    return {
      extended,
      layout,
      xattrIcount: b.readUInt16LE(2),
      mode: b.readUInt16LE(4),
      nlink: b.readUInt16LE(6),
      size: BigInt(b.readUInt32LE(8)),
      u: b.readUInt32LE(16),
      ino: b.readUInt32LE(20),
      uid: b.readUInt16LE(24),
      gid: b.readUInt16LE(26),
      mtime: buildTime,
      mtimeNsec: buildTimeNsec,
    };
  }
  return {
    extended,
    layout,
    xattrIcount: b.readUInt16LE(2),
    mode: b.readUInt16LE(4),
    nlink: b.readUInt32LE(44),
    size: b.readBigUInt64LE(8),
    u: b.readUInt32LE(16),
    ino: b.readUInt32LE(20),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    mtime: b.readBigUInt64LE(32),
    mtimeNsec: b.readUInt32LE(40),
  };
}

/** The i_format bits that are defined (version bit and 3 layout bits). */
export const I_FORMAT_ALL = 0xf;

export function inodeSize(format: number): number {
  return format & 1 ? EXTENDED_SIZE : COMPACT_SIZE;
}

export function xattrBodySize(icount: number): number {
  return icount === 0 ? 0 : XATTR_BODY_HEADER + 4 * (icount - 1);
}

/** Bytes an xattr entry takes, padding included. */
export function xattrEntrySize(nameLen: number, valueLen: number): number {
  return align(XATTR_ENTRY_HEADER + nameLen + valueLen, 4);
}

/** Writes an xattr entry at `off` of `b`, padding included; returns its size (`xattrEntrySize`). */
export function writeXattrEntry(b: Buffer, off: number, index: number, name: Buffer, value: Buffer): number {
  const size = xattrEntrySize(name.length, value.length);
  b.writeUInt8(name.length, off);
  b.writeUInt8(index, off + 1);
  b.writeUInt16LE(value.length, off + 2);
  name.copy(b, off + XATTR_ENTRY_HEADER);
  value.copy(b, off + XATTR_ENTRY_HEADER + name.length);
  b.fill(0, off + XATTR_ENTRY_HEADER + name.length + value.length, off + size);
  return size;
}

/** The index and name suffix of a full xattr name, or undefined when EROFS has no index for it. */
export function splitXattrName(full: string): { index: number; suffix: string } | undefined {
  if (full === 'system.posix_acl_access') return { index: XATTR_INDEX.ACL_ACCESS, suffix: '' };
  if (full === 'system.posix_acl_default') return { index: XATTR_INDEX.ACL_DEFAULT, suffix: '' };
  for (const index of [XATTR_INDEX.USER, XATTR_INDEX.TRUSTED, XATTR_INDEX.SECURITY]) {
    const p = XATTR_PREFIX[index]!;
    if (full.startsWith(p) && full.length > p.length) return { index, suffix: full.slice(p.length) };
  }
  return undefined;
}

/** Writes a dirent (12 bytes) at `off` of `b`. */
export function writeDirent(b: Buffer, off: number, nid: number, nameoff: number, fileType: number): void {
  b.writeUInt32LE(nid % 2 ** 32, off);
  b.writeUInt32LE(Math.floor(nid / 2 ** 32), off + 4);
  b.writeUInt16LE(nameoff, off + 8);
  b.writeUInt8(fileType, off + 10);
  b.writeUInt8(0, off + 11);
}

/** Writes the map header of a compressed inode (8 bytes) at `off` of `b`. */
export function writeMapHeader(b: Buffer, off: number, advise: number, algorithm: number, clusterbits: number): void {
  b.fill(0, off, off + 8);
  b.writeUInt16LE(advise, off + 4);
  b.writeUInt8(algorithm & 0xf, off + 6);
  b.writeUInt8(clusterbits, off + 7);
}

/** Writes a head lcluster index (HEAD1, PLAIN) at `off` of `b`. */
export function writeHeadIndex(b: Buffer, off: number, type: number, clusterofs: number, blkaddr: number): void {
  b.writeUInt16LE(type, off);
  b.writeUInt16LE(clusterofs, off + 2);
  b.writeUInt32LE(blkaddr >>> 0, off + 4);
}

/** Writes a NONHEAD lcluster index at `off` of `b`. */
export function writeNonheadIndex(b: Buffer, off: number, delta0: number, delta1: number): void {
  b.writeUInt16LE(LCLUSTER.NONHEAD, off);
  b.writeUInt16LE(0, off + 2);
  b.writeUInt16LE(delta0, off + 4);
  b.writeUInt16LE(delta1, off + 6);
}

/** Linux new_encode_dev: 12-bit major, 20-bit minor. */
export function encodeDevice(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function decodeDevice(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Full-index area of a compressed inode that starts `metaStart` bytes after its inode start. */
export function fullIndexOffset(inodeAndXattrs: number): number {
  return align(inodeAndXattrs, 8) + FULL_INDEX_HEAD;
}

/**
 * Inodes: the records of the inode table (metadata blocks, metadata.ts).
 *
 * Every inode starts with the 16-byte common header:
 *    0 u16 type   2 u16 mode (permission bits & 0o7777, no S_IFMT)   4 u16 uidIndex
 *    6 u16 gidIndex (indexes into the id table)   8 u32 mtime   12 u32 inodeNumber (1..count)
 *
 * Then, by type:
 * BASIC_DIR (32 total):
 *   16 u32 blockIndex (dir table block start, relative)  20 u32 nlink
 *   24 u16 fileSize (listing + 3)  26 u16 blockOffset  28 u32 parentInode
 * EXT_DIR (40 total + index):
 *   16 u32 nlink  20 u32 fileSize  24 u32 blockIndex  28 u32 parentInode
 *   32 u16 indexCount  34 u16 blockOffset  36 u32 xattrIndex
 *   then indexCount directory index entries (directory.ts)
 * BASIC_FILE (32 total + blocks):
 *   16 u32 blocksStart (absolute)  20 u32 fragIndex  24 u32 fragOffset  28 u32 fileSize
 *   32 u32[] block size words (data.ts)
 * EXT_FILE (56 total + blocks):
 *   16 u64 blocksStart  24 u64 fileSize  32 u64 sparse (bytes saved by holes)
 *   40 u32 nlink  44 u32 fragIndex  48 u32 fragOffset  52 u32 xattrIndex  56 u32[] size words
 * BASIC_SYMLINK / EXT_SYMLINK:
 *   16 u32 nlink  20 u32 targetSize  24 u8[targetSize] target  (ext: then u32 xattrIndex)
 * BASIC_BLOCK / BASIC_CHAR (24) / EXT_ (28):
 *   16 u32 nlink  20 u32 rdev (encodeDevice)  (ext: 24 u32 xattrIndex)
 * BASIC_FIFO / BASIC_SOCKET (20) / EXT_ (24):
 *   16 u32 nlink  (ext: 20 u32 xattrIndex)
 *
 * "No fragment" is fragIndex 0xffffffff; "no xattrs" is xattrIndex 0xffffffff. Directory
 * entries always carry the basic type (extended = basic + 7).
 */
import type { Cursor } from './metadata.js';
import type { DirIndexEntry } from './directory.js';
import { DIR_INDEX_SIZE, encodeDirIndex } from './directory.js';

/** Inode types (common header `type`). */
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

export const INODE_HEADER_SIZE = 16;
export const INVALID_FRAG = 0xffffffff;
export const INVALID_XATTR = 0xffffffff;

/** Basic type of any inode type (ext types are basic + 7). */
export function basicType(t: number): number {
  return t > 7 ? t - 7 : t;
}

/** Bytes after the common header, before any variable part, by type. */
const FIXED: Record<number, number> = {
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

/** Linux new_encode_dev: minor low byte | major << 8 | minor high bits << 12. */
export function encodeDevice(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}
export function decodeDevice(dev: number): { major: number; minor: number } {
  return { major: (dev >>> 8) & 0xfff, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/** The common header's fields (ids as indexes into the id table). */
export interface InodeHeader {
  mode: number;
  uidIndex: number;
  gidIndex: number;
  mtime: number;
  number: number;
}

/** An inode's type-specific fields. `xattr` is INVALID_XATTR when there are none. */
export type InodeBody =
  | { kind: 'dir'; nlink: number; fileSize: number; blockIndex: number; blockOffset: number; parent: number; xattr: number; index: DirIndexEntry[] }
  | { kind: 'file'; nlink: number; blocksStart: number; fileSize: number; sparse: number; fragIndex: number; fragOffset: number; xattr: number; sizes: number[] }
  | { kind: 'symlink'; nlink: number; target: Buffer; xattr: number }
  | { kind: 'char' | 'block'; nlink: number; rdev: number; xattr: number }
  | { kind: 'fifo' | 'socket'; nlink: number; xattr: number };

const BASIC: Record<InodeBody['kind'], number> = {
  dir: INODE.BASIC_DIR,
  file: INODE.BASIC_FILE,
  symlink: INODE.BASIC_SYMLINK,
  block: INODE.BASIC_BLOCK,
  char: INODE.BASIC_CHAR,
  fifo: INODE.BASIC_FIFO,
  socket: INODE.BASIC_SOCKET,
};

/**
 * The type an inode is written with: extended when the fields do not fit the basic form
 * (xattrs; a file with links, a size or start past 4 GiB; a directory with an index or a
 * listing over 64 KiB) or when `extended` asks for it.
 */
export function inodeType(body: InodeBody, extended = false): number {
  let ext = extended || body.xattr !== INVALID_XATTR;
  if (body.kind === 'file') ext ||= body.nlink > 1 || body.fileSize > 0xffffffff || body.blocksStart > 0xffffffff;
  if (body.kind === 'dir') ext ||= body.fileSize > 0xffff || body.index.length > 0;
  return BASIC[body.kind] + (ext ? 7 : 0);
}

/** Bytes of an inode of `type` (from inodeType) after its header. */
function bodySize(ext: boolean, body: InodeBody): number {
  switch (body.kind) {
    case 'dir':
      return ext ? 24 + body.index.reduce((n, x) => n + DIR_INDEX_SIZE + x.name.length, 0) : 16;
    case 'file':
      return (ext ? 40 : 16) + 4 * body.sizes.length;
    case 'symlink':
      return 8 + body.target.length + (ext ? 4 : 0);
    case 'char':
    case 'block':
      return ext ? 12 : 8;
    default:
      return ext ? 8 : 4;
  }
}

/** The bytes of an inode of `type` (from inodeType), in one buffer of exactly its size. */
export function encodeInode(type: number, h: InodeHeader, body: InodeBody): Buffer {
  const ext = type > 7;
  const b = Buffer.allocUnsafe(INODE_HEADER_SIZE + bodySize(ext, body));
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(h.mode & 0o7777, 2);
  b.writeUInt16LE(h.uidIndex, 4);
  b.writeUInt16LE(h.gidIndex, 6);
  b.writeUInt32LE(h.mtime, 8);
  let o = b.writeUInt32LE(h.number, 12);
  switch (body.kind) {
    case 'dir':
      if (ext) {
        o = b.writeUInt32LE(body.nlink, o);
        o = b.writeUInt32LE(body.fileSize, o);
        o = b.writeUInt32LE(body.blockIndex, o);
        o = b.writeUInt32LE(body.parent, o);
        o = b.writeUInt16LE(body.index.length, o);
        o = b.writeUInt16LE(body.blockOffset, o);
        o = b.writeUInt32LE(body.xattr, o);
        for (const x of body.index) o = encodeDirIndex(x, b, o);
      } else {
        o = b.writeUInt32LE(body.blockIndex, o);
        o = b.writeUInt32LE(body.nlink, o);
        o = b.writeUInt16LE(body.fileSize, o);
        o = b.writeUInt16LE(body.blockOffset, o);
        o = b.writeUInt32LE(body.parent, o);
      }
      break;
    case 'file':
      if (ext) {
        o = b.writeBigUInt64LE(BigInt(body.blocksStart), o);
        o = b.writeBigUInt64LE(BigInt(body.fileSize), o);
        o = b.writeBigUInt64LE(BigInt(body.sparse), o);
        o = b.writeUInt32LE(body.nlink, o);
        o = b.writeUInt32LE(body.fragIndex, o);
        o = b.writeUInt32LE(body.fragOffset, o);
        o = b.writeUInt32LE(body.xattr, o);
      } else {
        o = b.writeUInt32LE(body.blocksStart, o);
        o = b.writeUInt32LE(body.fragIndex, o);
        o = b.writeUInt32LE(body.fragOffset, o);
        o = b.writeUInt32LE(body.fileSize, o);
      }
      for (const w of body.sizes) o = b.writeUInt32LE(w, o);
      break;
    case 'symlink':
      o = b.writeUInt32LE(body.nlink, o);
      o = b.writeUInt32LE(body.target.length, o);
      o += body.target.copy(b, o);
      if (ext) o = b.writeUInt32LE(body.xattr, o);
      break;
    case 'char':
    case 'block':
      o = b.writeUInt32LE(body.nlink, o);
      o = b.writeUInt32LE(body.rdev >>> 0, o);
      if (ext) o = b.writeUInt32LE(body.xattr, o);
      break;
    default:
      o = b.writeUInt32LE(body.nlink, o);
      if (ext) o = b.writeUInt32LE(body.xattr, o);
  }
  if (o !== b.length) throw new Error(`SquashFS inode of type ${type}: wrote ${o} of ${b.length} bytes`);
  return b;
}

/**
 * An inode as stored, before the reader checks it against the image: the header, the fields
 * (u64 values as numbers, or NaN past 2^53), and where its variable parts start.
 */
export interface DecodedInode extends InodeHeader {
  type: number;
  basic: number;
  nlink: number;
  xattr: number;
  /** Directories: listing position (block relative to the directory table), size, index. */
  dirBlock?: number;
  dirOffset?: number;
  dirSize?: number;
  parent?: number;
  indexCount?: number;
  /** Position of the first directory index entry (EXT_DIR). */
  indexAt?: { block: number; offset: number };
  /** Regular files. */
  blocksStart?: number;
  fileSize?: number;
  sparse?: number;
  frag?: number;
  fragOffset?: number;
  /** Position of the first block size word. */
  blockListAt?: { block: number; offset: number };
  /** Symlinks: the target size (the target itself follows at targetAt). */
  targetSize?: number;
  rdev?: number;
}

/**
 * Reads an inode's header and fixed part at the cursor (symlink targets are left to the
 * caller: `readSymlinkTail`). Throws `bad(why)` for an unknown type.
 */
export async function decodeInode(c: Cursor, bad: (why: string) => Error): Promise<DecodedInode> {
  const h = await c.read(INODE_HEADER_SIZE);
  const type = h.readUInt16LE(0);
  const fixed = FIXED[type];
  if (fixed === undefined) throw bad(`unknown inode type ${type}`);
  const ino: DecodedInode = {
    type,
    basic: basicType(type),
    mode: h.readUInt16LE(2),
    uidIndex: h.readUInt16LE(4),
    gidIndex: h.readUInt16LE(6),
    mtime: h.readUInt32LE(8),
    number: h.readUInt32LE(12),
    nlink: 1,
    xattr: INVALID_XATTR,
  };
  const b = await c.read(fixed);
  const u64 = (off: number): number => {
    const v = b.readBigUInt64LE(off);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? NaN : Number(v);
  };
  switch (type) {
    case INODE.BASIC_DIR:
      ino.dirBlock = b.readUInt32LE(0);
      ino.nlink = b.readUInt32LE(4);
      ino.dirSize = b.readUInt16LE(8);
      ino.dirOffset = b.readUInt16LE(10);
      ino.parent = b.readUInt32LE(12);
      ino.indexCount = 0;
      break;
    case INODE.EXT_DIR:
      ino.nlink = b.readUInt32LE(0);
      ino.dirSize = b.readUInt32LE(4);
      ino.dirBlock = b.readUInt32LE(8);
      ino.parent = b.readUInt32LE(12);
      ino.indexCount = b.readUInt16LE(16);
      ino.dirOffset = b.readUInt16LE(18);
      ino.xattr = b.readUInt32LE(20);
      ino.indexAt = c.pos;
      break;
    case INODE.BASIC_FILE:
      ino.blocksStart = b.readUInt32LE(0);
      ino.frag = b.readUInt32LE(4);
      ino.fragOffset = b.readUInt32LE(8);
      ino.fileSize = b.readUInt32LE(12);
      ino.sparse = 0;
      ino.blockListAt = c.pos;
      break;
    case INODE.EXT_FILE:
      ino.blocksStart = u64(0);
      ino.fileSize = u64(8);
      ino.sparse = u64(16);
      ino.nlink = b.readUInt32LE(24);
      ino.frag = b.readUInt32LE(28);
      ino.fragOffset = b.readUInt32LE(32);
      ino.xattr = b.readUInt32LE(36);
      ino.blockListAt = c.pos;
      break;
    case INODE.BASIC_SYMLINK:
    case INODE.EXT_SYMLINK:
      ino.nlink = b.readUInt32LE(0);
      ino.targetSize = b.readUInt32LE(4);
      break;
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
  return ino;
}

/** A symlink's target (`targetSize` bytes, already checked by the caller) and, for EXT_SYMLINK, its xattr index. */
export async function readSymlinkTail(c: Cursor, ino: DecodedInode): Promise<Buffer> {
  const t = Buffer.from(await c.read(ino.targetSize!));
  if (ino.type === INODE.EXT_SYMLINK) ino.xattr = (await c.read(4)).readUInt32LE(0);
  return t;
}

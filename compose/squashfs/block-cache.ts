/**
 * Content-addressed cache of compressed SquashFS blocks (data and fragment blocks), so that
 * re-squashing a stack after one layer changed recompresses only that layer's blocks.
 *
 * Key: sha256 of the UTF-8 string
 *   "strata-squashfs-block-v1\0<compressor>\0<library version>\0<level>\0<blockSize>\0<sha256 hex of the raw block>"
 * so a different compressor build (zlib or libzstd version) never serves stale bytes.
 *
 * Storage: <cacheDir>/squashfs-blocks/<identity>/, where <identity> is the first 16 hex digits
 * of sha256 of the key prefix above (one directory per compressor, version, level, block size).
 * Every writer (one per worker thread per run) appends to pack files of its own,
 * `<pid>-<thread>-<random>.pack` and `.idx`; nothing ever rewrites a pack, so concurrent
 * builds need no locking. One file per block would cost a create and a rename per block,
 * which on a cold build of a real stack costs as much as compressing it.
 *
 * Pack record (little-endian):
 *    0  4  magic "SQBP"
 *    4  u32 flags       bit 0: compression did not shrink the block (stored raw); no payload
 *    8  u32 rawLength   length of the uncompressed block
 *   12  u32 payloadLength
 *   16  32  key
 *   48  32  sha256 of the payload
 *   80  …   payload: the compressed block
 *
 * Index record (48 bytes, appended after its pack record is written):
 *    0  32  key
 *   32  u64 offset of the pack record
 *   40  u32 payloadLength
 *   44  u32 reserved (0)
 *
 * A lookup reads the record and checks magic, key, lengths and payload digest: a short, torn,
 * foreign or corrupt record is a miss (the block is compressed again and appended anew; a
 * later index entry for a key wins). The whole directory is safe to delete.
 * Methods are synchronous: they run in worker threads, off the main event loop.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

export const CACHE_SUBDIR = 'squashfs-blocks';
const MAGIC = Buffer.from('SQBP');
const HEADER = 80;
const INDEX_RECORD = 48;
const FLAG_RAW = 1;

export interface CachedBlock {
  /** True when the block is stored uncompressed in the image. */
  raw: boolean;
  /** Compressed bytes (empty when `raw`). */
  data: Buffer;
}

interface Location {
  pack: string;
  offset: number;
  payloadLength: number;
}

export interface CacheIdentity {
  compressor: string;
  version: string;
  level: number;
  blockSize: number;
}

export class BlockCache {
  private readonly dir: string;
  private readonly prefix: string;
  private index: Map<string, Location> | undefined;
  private readonly fds = new Map<string, number>();
  private writer: { pack: string; fd: number; idx: number; offset: number } | undefined;

  /** `cacheDir` is the store's cache/ root. */
  constructor(cacheDir: string, identity: CacheIdentity) {
    this.prefix = keyPrefix(identity);
    this.dir = path.join(cacheDir, CACHE_SUBDIR, createHash('sha256').update(this.prefix).digest('hex').slice(0, 16));
  }

  key(rawDigestHex: string): string {
    return createHash('sha256').update(this.prefix + rawDigestHex).digest('hex');
  }

  /** Returns the cached block or undefined (missing or failed verification). Never throws. */
  get(key: string, rawLength: number): CachedBlock | undefined {
    const loc = this.load().get(key);
    if (!loc) return undefined;
    try {
      const buf = Buffer.allocUnsafe(HEADER + loc.payloadLength);
      const got = fs.readSync(this.fd(loc.pack), buf, 0, buf.length, loc.offset);
      return got === buf.length ? decodeRecord(buf, key, rawLength) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Best effort: a failure to write (full disk, read-only cache) only costs a later miss. */
  put(key: string, rawLength: number, block: CachedBlock): void {
    const payload = block.raw ? Buffer.alloc(0) : block.data;
    const head = Buffer.alloc(HEADER);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(block.raw ? FLAG_RAW : 0, 4);
    head.writeUInt32LE(rawLength, 8);
    head.writeUInt32LE(payload.length, 12);
    Buffer.from(key, 'hex').copy(head, 16);
    createHash('sha256').update(payload).digest().copy(head, 48);
    try {
      const w = this.openWriter();
      const offset = w.offset;
      fs.writevSync(w.fd, [head, payload], offset);
      w.offset += HEADER + payload.length;
      const rec = Buffer.alloc(INDEX_RECORD);
      Buffer.from(key, 'hex').copy(rec, 0);
      rec.writeBigUInt64LE(BigInt(offset), 32);
      rec.writeUInt32LE(payload.length, 40);
      fs.writeSync(w.idx, rec);
      this.load().set(key, { pack: w.pack, offset, payloadLength: payload.length });
    } catch {
      /* the block is simply not cached */
    }
  }

  /** Closes every file this cache opened. The cache stays usable (files reopen on demand). */
  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
    if (this.writer) fs.closeSync(this.writer.idx);
    this.writer = undefined;
  }

  private load(): Map<string, Location> {
    if (this.index) return this.index;
    this.index = new Map();
    for (const e of readIndexes(this.dir)) this.index.set(e.key, e);
    return this.index;
  }

  private fd(pack: string): number {
    let fd = this.fds.get(pack);
    if (fd === undefined) {
      fd = fs.openSync(pack, 'r');
      this.fds.set(pack, fd);
    }
    return fd;
  }

  private openWriter(): NonNullable<BlockCache['writer']> {
    if (this.writer) return this.writer;
    fs.mkdirSync(this.dir, { recursive: true });
    const base = path.join(this.dir, `${process.pid}-${threadId}-${randomBytes(6).toString('hex')}`);
    const fd = fs.openSync(`${base}.pack`, 'wx');
    const idx = fs.openSync(`${base}.idx`, 'wx');
    this.writer = { pack: `${base}.pack`, fd, idx, offset: 0 };
    this.fds.set(this.writer.pack, fd);
    return this.writer;
  }
}

function keyPrefix(identity: CacheIdentity): string {
  return `strata-squashfs-block-v1\0${identity.compressor}\0${identity.version}\0${identity.level}\0${identity.blockSize}\0`;
}

function decodeRecord(buf: Buffer, key: string, rawLength: number): CachedBlock | undefined {
  if (buf.length < HEADER || !buf.subarray(0, 4).equals(MAGIC)) return undefined;
  if (buf.readUInt32LE(8) !== rawLength) return undefined;
  if (buf.subarray(16, 48).toString('hex') !== key) return undefined;
  const payload = buf.subarray(HEADER, HEADER + buf.readUInt32LE(12));
  if (payload.length !== buf.readUInt32LE(12)) return undefined;
  if (!createHash('sha256').update(payload).digest().equals(buf.subarray(48, HEADER))) return undefined;
  const raw = (buf.readUInt32LE(4) & FLAG_RAW) !== 0;
  if (raw ? payload.length !== 0 : payload.length === 0 || payload.length >= rawLength) return undefined;
  return { raw, data: payload };
}

/** Every index record under `dir`, in file-name then append order (later ones win). */
function readIndexes(dir: string): Array<Location & { key: string }> {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.idx')).sort();
  } catch {
    return [];
  }
  const out: Array<Location & { key: string }> = [];
  for (const name of names) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(path.join(dir, name));
    } catch {
      continue;
    }
    const pack = path.join(dir, `${name.slice(0, -4)}.pack`);
    for (let o = 0; o + INDEX_RECORD <= buf.length; o += INDEX_RECORD) {
      out.push({
        key: buf.subarray(o, o + 32).toString('hex'),
        pack,
        offset: Number(buf.readBigUInt64LE(o + 32)),
        payloadLength: buf.readUInt32LE(o + 40),
      });
    }
  }
  return out;
}

/** One cached block as stored, for inspection (tests, `strata store gc` reports). */
export interface CacheEntry {
  key: string;
  pack: string;
  /** Offset of the record in its pack; its payload starts HEADER bytes later. */
  offset: number;
  raw: boolean;
  rawLength: number;
  payload: Buffer;
}

export const PACK_RECORD_HEADER = HEADER;

/**
 * Every readable entry in the cache under `cacheDir` (all identities), in index order. An
 * entry whose record fails verification is left out, as a lookup would miss it.
 */
export function listCacheEntries(cacheDir: string): CacheEntry[] {
  const root = path.join(cacheDir, CACHE_SUBDIR);
  let dirs: string[];
  try {
    dirs = fs.readdirSync(root).sort();
  } catch {
    return [];
  }
  const out: CacheEntry[] = [];
  for (const d of dirs) {
    for (const loc of readIndexes(path.join(root, d))) {
      let buf: Buffer;
      try {
        const fd = fs.openSync(loc.pack, 'r');
        try {
          buf = Buffer.alloc(HEADER + loc.payloadLength);
          if (fs.readSync(fd, buf, 0, buf.length, loc.offset) !== buf.length) continue;
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        continue;
      }
      const rawLength = buf.readUInt32LE(8);
      const block = decodeRecord(buf, loc.key, rawLength);
      if (block) out.push({ key: loc.key, pack: loc.pack, offset: loc.offset, raw: block.raw, rawLength, payload: block.data });
    }
  }
  return out;
}

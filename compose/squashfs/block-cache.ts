/**
 * Content-addressed cache of compressed SquashFS blocks (data and fragment blocks), so that
 * re-squashing a stack after one layer changed recompresses only that layer's blocks.
 *
 * Key: sha256 hex of the UTF-8 string
 *   "strata-squashfs-block-v1\0<compressor>\0<library version>\0<level>\0<blockSize>\0<sha256 hex of the raw block>"
 * so a different compressor build (zlib or libzstd version) never serves stale bytes.
 *
 * Files: <cacheDir>/squashfs-blocks/<key[0..2]>/<key>, written to a unique temporary name in
 * the same directory and renamed into place (readers see a whole file or none).
 *
 * File layout:
 *    0  4  magic "SQBC"
 *    4  u32 flags     bit 0: compression did not shrink the block (store it raw); no payload
 *    8  u32 rawLength length of the uncompressed block
 *   12  32  sha256 of the payload
 *   44  …   payload: the compressed block
 *
 * A missing, short, foreign or corrupt file (bad magic, length or payload digest) is a miss;
 * the caller recompresses and the entry is rewritten. The whole directory is safe to delete.
 * Methods are synchronous: they run in worker threads, off the main event loop.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

export const CACHE_SUBDIR = 'squashfs-blocks';
const MAGIC = Buffer.from('SQBC');
const HEADER = 44;
const FLAG_RAW = 1;

export interface CachedBlock {
  /** True when the block is stored uncompressed in the image. */
  raw: boolean;
  /** Compressed bytes (empty when `raw`). */
  data: Buffer;
}

export class BlockCache {
  private readonly dir: string;
  private readonly prefix: string;
  private seq = 0;
  /** Subdirectories known to exist (a cache write would otherwise mkdir every time). */
  private readonly made = new Set<string>();

  /** `cacheDir` is the store's cache/ root; `identity` is compressor, version, level, block size. */
  constructor(cacheDir: string, identity: { compressor: string; version: string; level: number; blockSize: number }) {
    this.dir = path.join(cacheDir, CACHE_SUBDIR);
    this.prefix = `strata-squashfs-block-v1\0${identity.compressor}\0${identity.version}\0${identity.level}\0${identity.blockSize}\0`;
  }

  key(rawDigestHex: string): string {
    return createHash('sha256').update(this.prefix + rawDigestHex).digest('hex');
  }

  private file(key: string): string {
    return path.join(this.dir, key.slice(0, 2), key);
  }

  /** Returns the cached block or undefined (missing or failed verification). Never throws. */
  get(key: string, rawLength: number): CachedBlock | undefined {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(this.file(key));
    } catch {
      return undefined;
    }
    if (buf.length < HEADER || !buf.subarray(0, 4).equals(MAGIC)) return undefined;
    const flags = buf.readUInt32LE(4);
    if (buf.readUInt32LE(8) !== rawLength) return undefined;
    const payload = buf.subarray(HEADER);
    const digest = createHash('sha256').update(payload).digest();
    if (!digest.equals(buf.subarray(12, HEADER))) return undefined;
    const raw = (flags & FLAG_RAW) !== 0;
    if (raw ? payload.length !== 0 : payload.length === 0 || payload.length >= rawLength) return undefined;
    return { raw, data: payload };
  }

  /** Best effort: a failure to write (full disk, read-only cache) only costs a later miss. */
  put(key: string, rawLength: number, block: CachedBlock): void {
    const final = this.file(key);
    const tmp = `${final}.tmp-${process.pid}-${threadId}-${this.seq++}`;
    const payload = block.raw ? Buffer.alloc(0) : block.data;
    const head = Buffer.alloc(HEADER);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(block.raw ? FLAG_RAW : 0, 4);
    head.writeUInt32LE(rawLength, 8);
    createHash('sha256').update(payload).digest().copy(head, 12);
    try {
      const dir = path.dirname(final);
      if (!this.made.has(dir)) {
        fs.mkdirSync(dir, { recursive: true });
        this.made.add(dir);
      }
      const fd = fs.openSync(tmp, 'w');
      try {
        fs.writevSync(fd, [head, payload]);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, final);
    } catch {
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    }
  }
}

/**
 * Segments: the bytes one group of files (a layer) added to an image, kept so that a later
 * build with the same group places them again without reading the layer.
 *
 * An image writer lays out its data group by group. What a group adds depends on its own
 * files and on which of their contents were already stored before it; where it starts only
 * moves it. A writer names the group by a key (the options and the group's identity, its
 * caller's digest of a layer, its entry list and the files taken from it) and records, at the
 * end of the group, the bytes the group wrote and what it needs to place them again (`meta`,
 * the writer's own encoding: positions relative to the group, and each dedup lookup's answer).
 * A build that reaches the same key, wherever the group now starts, and whose earlier groups
 * give every lookup the same answer, copies the bytes into its image and applies the meta:
 * the layer is not read, no block is looked up.
 *
 * A writer may keep an *extra* part beside the bytes: data the group needs that does not go
 * into the image where the group is (EROFS: its files' tails, written with the metadata at
 * the end). It is read back, and checked, before the group is placed.
 *
 * The cache is untrusted input (block-cache.ts), and segments are only ever trusted, never
 * checked another way: a segment is used only when it carries this user's seal (an HMAC
 * under the cache secret of the header, which holds the key, the lengths and the sha256 of
 * the extra part, the meta and the bytes), its meta hashes to what the header says (checked
 * before the meta is used), its extra part too (checked as it is read), and its bytes do too
 * (hashed as they are copied, while the writer goes on with the groups after it; a mismatch
 * drops the segment and fails the build with ERR_SEGMENT_DAMAGED, which the composer answers
 * by building again without segments). So a segment is always what this user's own build
 * wrote for that key, from layers it verified. Without a secret there are no segments.
 *
 * Storage, beside the block packs of the same tag and namespace (so pruning and restrictions
 * treat both alike):
 *
 *   image-blocks/<tag>/<namespace id>/<HMAC-SHA256(secret, "strata-segment-name\0" + key) hex>.seg
 *
 * written under a temporary name and renamed into place (a reader sees a whole segment or
 * none); a restricted tag's segments are 0640, owned by its group, like its packs.
 *
 * Segment file (little-endian):
 *    0  4   magic "SQS2"
 *    4  u32 flags (0)
 *    8  32  key
 *   40  u64 length of the bytes
 *   48  u32 length of the meta
 *   52  u32 reserved (0)
 *   56  32  sha256 of the meta
 *   88  32  sha256 of the bytes
 *  120  u64 length of the extra part
 *  128  32  sha256 of the extra part
 *  160  32  seal: HMAC-SHA256(secret, bytes 0..160)
 *  192  …   the extra part, the meta, then the bytes
 *
 * Nothing here throws but BuildSegments.settle() (a placed segment found damaged): a segment
 * that cannot be read is a miss, one that cannot be written is simply not there next time.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { addon } from '../../../native/binding.js';
import { IMAGE_ERR, StrataError } from '../errors.js';
import { BLOCK_CACHE_DIR, namespaceDir, namespaceId, tagDir } from './block-cache.js';
import type { DigestTable } from './digest-table.js';

const MAGIC = Buffer.from('SQS2');
const HEADER = 192;
const SEALED = 160;
/** The extra part is read back and written in pieces of this size. */
const EXTRA_CHUNK = 1 << 20;
export const SEGMENT_SUFFIX = '.seg';

/** A sealed segment found for a key: its meta (checked), its bytes still to be copied. */
export interface FoundSegment {
  meta: Buffer;
  length: number;
  extraLength: number;
  /** Hands the extra part to `each` piece by piece, in order; true when it was the sealed one. */
  readExtra(each: (piece: Buffer) => Promise<void>): Promise<boolean>;
  /**
   * Writes the bytes to descriptor `fd` from `at` (on a thread of libuv's pool, hashed as
   * they go, their writeback started: `fd` is an image about to be synced) and checks them:
   * true when they are the sealed bytes.
   */
  copyInto(fd: number, at: number): Promise<boolean>;
  close(): Promise<void>;
  /** Removes the segment (its bytes were found wrong). */
  drop(): Promise<void>;
}

/**
 * Groups of more files than this are not recorded: a recorded group's meta is held until the
 * group ends (about 60 bytes a file for SquashFS), and a build placing it holds its files' records.
 */
export const SEGMENT_MAX_FILES = 100_000;

const META_CHUNK = 64 << 10;

/** A segment's meta as a writer encodes it, in chunks of its own (no buffer grows by copying). */
export class MetaChunks {
  readonly done: Buffer[] = [];
  private cur = Buffer.allocUnsafe(META_CHUNK);
  private used = 0;
  private total = 0;

  /** Room for `n` more bytes; returns the buffer and where to write. */
  room(n: number): [Buffer, number] {
    if (this.used + n > this.cur.length) {
      this.done.push(this.cur.subarray(0, this.used));
      this.cur = Buffer.allocUnsafe(Math.max(META_CHUNK, n));
      this.used = 0;
    }
    const at = this.used;
    this.used += n;
    this.total += n;
    return [this.cur, at];
  }

  /** Bytes encoded so far. */
  get length(): number {
    return this.total;
  }

  all(): Buffer[] {
    return [...this.done, this.cur.subarray(0, this.used)];
  }
}

/**
 * Whether a dedup lookup answers as it did when the group was recorded: a content the group
 * stored itself must not be there yet, one it found must be. `digest`: the content's sha256;
 * `local`: the contents the group stored so far (they are not in the writer's tables until
 * the group is placed).
 */
export function agrees(own: boolean, digest: Buffer, local: DigestTable, held: (digest: Buffer) => boolean): boolean {
  const there = local.has(digest) || held(digest);
  if (own) local.set(digest, 0, 0);
  return own !== there;
}

/**
 * Reads a segment's meta front to back (little-endian), as the writers encode it with
 * MetaChunks. A read past the end throws RangeError. `bytes` gives views of the meta, not
 * copies: they are valid while the meta is.
 */
export class MetaCursor {
  private o = 0;
  private readonly dv: DataView;

  constructor(private readonly b: Buffer) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  u8(): number {
    return this.dv.getUint8(this.o++);
  }

  u32(): number {
    const v = this.dv.getUint32(this.o, true);
    this.o += 4;
    return v;
  }

  f64(): number {
    const v = this.dv.getFloat64(this.o, true);
    this.o += 8;
    return v;
  }

  bytes(n: number): Buffer {
    if (this.o + n > this.b.length) throw new RangeError('segment meta ends early');
    this.o += n;
    return this.b.subarray(this.o - n, this.o);
  }

  /** Every byte read: a meta with more after what its counts announce is not one of ours. */
  get atEnd(): boolean {
    return this.o === this.b.length;
  }
}

export class SegmentCache {
  private readonly root: string;
  private readonly ns: string;

  /** `namespace` as the block cache's (what decides the bytes besides the content); `secret` the user's. */
  constructor(
    cacheDir: string,
    namespace: string,
    private readonly secret: Uint8Array,
  ) {
    this.root = path.join(cacheDir, BLOCK_CACHE_DIR);
    this.ns = namespaceId(namespace);
  }

  /**
   * A segment's file is named by the key under this user's secret: users who share a cache
   * (staff writing one store) each keep their own segment of a layer instead of replacing
   * each other's, which the other could not use.
   */
  private file(tag: string, key: Buffer): string {
    const name = createHmac('sha256', this.secret).update('strata-segment-name\0').update(key).digest('hex');
    return path.join(this.root, tagDir(tag), this.ns, `${name}${SEGMENT_SUFFIX}`);
  }

  /** The segment of `key` filed under `tag`, when there is one this user sealed; else undefined. */
  async open(tag: string, key: Buffer): Promise<FoundSegment | undefined> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.file(tag, key), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch {
      return undefined;
    }
    try {
      const head = Buffer.alloc(HEADER);
      if ((await fh.read(head, 0, HEADER, 0)).bytesRead !== HEADER) throw new Error('short');
      if (!head.subarray(0, 4).equals(MAGIC) || !head.subarray(8, 40).equals(key)) throw new Error('foreign');
      if (!timingSafeEqual(seal(this.secret, head), head.subarray(SEALED, HEADER))) throw new Error('unsealed');
      const length = Number(head.readBigUInt64LE(40));
      const metaLength = head.readUInt32LE(48);
      const extraLength = Number(head.readBigUInt64LE(120));
      if ((await fh.stat()).size !== HEADER + extraLength + metaLength + length) throw new Error('torn');
      const meta = Buffer.alloc(metaLength);
      if ((await fh.read(meta, 0, metaLength, HEADER + extraLength)).bytesRead !== metaLength) throw new Error('short');
      if (!createHash('sha256').update(meta).digest().equals(head.subarray(56, 88))) throw new Error('meta');
      const bytesDigest = head.subarray(88, 120).toString('hex');
      const extraDigest = Buffer.from(head.subarray(128, 160));
      const at = HEADER + extraLength + metaLength;
      const file = this.file(tag, key);
      return {
        meta,
        length,
        extraLength,
        readExtra: async (each) => {
          const h = createHash('sha256');
          const piece = Buffer.allocUnsafe(Math.min(EXTRA_CHUNK, extraLength));
          for (let off = 0; off < extraLength; ) {
            const n = Math.min(piece.length, extraLength - off);
            const bytesRead = await fh.read(piece, 0, n, HEADER + off).then((r) => r.bytesRead, () => 0);
            if (bytesRead <= 0) return false;
            h.update(piece.subarray(0, bytesRead));
            await each(Buffer.from(piece.subarray(0, bytesRead)));
            off += bytesRead;
          }
          return h.digest().equals(extraDigest);
        },
        copyInto: async (fd, to) => {
          const digest = await addon()
            .hashCopy(fh.fd, at, length, fd, to, true)
            .catch(() => undefined);
          if (digest !== bytesDigest) return false;
          // Used now: what the cache's pruning keeps longest (block-cache.ts).
          const now = new Date();
          await fsp.utimes(file, now, now).catch(() => undefined);
          return true;
        },
        close: () => fh.close().catch(() => undefined),
        drop: () => fsp.rm(file, { force: true }).catch(() => undefined),
      };
    } catch {
      await fh.close().catch(() => undefined);
      return undefined;
    }
  }

  /**
   * Starts the segment of `key` under `tag` (`gid`: readable by that group only): its extra
   * part goes in first (NewSegment.appendExtra), then finish() records the meta and the bytes.
   * Best effort: undefined when the file cannot be made; a segment that fails later is not
   * there next time.
   */
  async create(tag: string, gid: number | undefined, key: Buffer): Promise<NewSegment | undefined> {
    let tmp: string | undefined;
    let fh: fsp.FileHandle | undefined;
    try {
      const dir = namespaceDir(this.root, tag, this.ns, gid);
      tmp = path.join(dir, `.${key.toString('hex')}-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
      fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      if (gid !== undefined) {
        // Created 0600; group access only once the group is right (never a moment open to others).
        await fh.chown(-1, gid);
        await fh.chmod(0o640);
      } else {
        await fh.chmod(0o644 & ~process.umask());
      }
      return new NewSegment(this.secret, key, tmp, fh, this.file(tag, key));
    } catch {
      await fh?.close().catch(() => undefined);
      if (tmp !== undefined) await fsp.rm(tmp, { force: true }).catch(() => undefined);
      return undefined;
    }
  }
}

/**
 * One build's segments, for a writer: the key of each group, the segments it placed (their
 * bytes copied in the background) and the ones it is recording (written in the background).
 * settle() before the image is committed, abandon() when the build stops.
 */
export class BuildSegments {
  /** Groups placed from segments. */
  hits = 0;
  private readonly base: Buffer;
  private readonly writes: Promise<void>[] = [];
  private readonly copies: Promise<boolean>[] = [];

  /** `base`: what decides a group's bytes besides its files and what came before it (the format and its options); `use`: place groups from segments (else only record them). */
  constructor(
    private readonly cache: SegmentCache,
    base: string,
    private readonly use: boolean,
  ) {
    this.base = createHash('sha256').update(base).digest();
  }

  /**
   * A group begins: its key (the writer's base, the caller's identity of the group and its
   * name), and whether `place` took the segment this user sealed under it (when this build
   * uses segments and there is one; a segment `place` turns down is closed).
   */
  async begin(identity: string, group: string, place: (found: FoundSegment) => boolean | Promise<boolean>): Promise<{ key: Buffer; placed: boolean }> {
    const key = createHash('sha256').update(this.base).update(`\0${identity}\0${group}\0`).digest();
    const found = this.use ? await this.cache.open(group, key) : undefined;
    if (!found) return { key, placed: false };
    if (await place(found)) return { key, placed: true };
    await found.close();
    return { key, placed: false };
  }

  /** The group is placed from `found`: its bytes are copied to `fd` at `at` while the writer goes on (settle() checks them). */
  place(found: FoundSegment, fd: number, at: number): void {
    this.copies.push(
      found.copyInto(fd, at).then(async (ok) => {
        if (!ok) await found.drop();
        await found.close();
        return ok;
      }),
    );
    this.hits++;
  }

  /** Starts recording a segment (SegmentCache.create). */
  create(tag: string, gid: number | undefined, key: Buffer): Promise<NewSegment | undefined> {
    return this.cache.create(tag, gid, key);
  }

  /** A segment being written in the background (it reads the image: settle() waits for it). */
  saving(write: Promise<void>): void {
    this.writes.push(write);
  }

  /** Waits for every write and copy; throws ERR_SEGMENT_DAMAGED when a placed segment's bytes were not the sealed ones (it is removed). */
  async settle(): Promise<void> {
    await Promise.all(this.writes.splice(0));
    if ((await Promise.all(this.copies.splice(0))).includes(false)) {
      throw new StrataError(IMAGE_ERR.SEGMENT_DAMAGED, 'a segment of the block cache was damaged (it was removed)', {
        hint: 'build again: the layers are read instead',
      });
    }
  }

  /** Waits for every write and copy, whatever they found. */
  async abandon(): Promise<void> {
    await Promise.all([...this.writes.splice(0), ...this.copies.splice(0)]);
  }
}

/** A segment being written under a temporary name (SegmentCache.create). Nothing here throws. */
export class NewSegment {
  private extraLength = 0;
  private readonly extraHash = createHash('sha256');
  private failed = false;

  constructor(
    private readonly secret: Uint8Array,
    private readonly key: Buffer,
    private readonly tmp: string,
    private readonly fh: fsp.FileHandle,
    private readonly dest: string,
  ) {}

  /** Appends to the extra part (all of it before finish()). */
  async appendExtra(b: Buffer): Promise<void> {
    if (this.failed) return;
    try {
      await writeAll(this.fh, b, HEADER + this.extraLength);
      this.extraHash.update(b);
      this.extraLength += b.length;
    } catch {
      this.failed = true;
    }
  }

  /** Records `meta` and `length` bytes of `src` from `start`, seals the header and renames the segment into place; resolves when done or given up. */
  async finish(meta: Buffer, src: fsp.FileHandle, start: number, length: number): Promise<void> {
    let placed = false;
    try {
      if (this.failed) return;
      const at = HEADER + this.extraLength;
      await writeAll(this.fh, meta, at);
      const bytesDigest = await addon().hashCopy(src.fd, start, length, this.fh.fd, at + meta.length);
      const head = Buffer.alloc(HEADER);
      MAGIC.copy(head, 0);
      this.key.copy(head, 8);
      head.writeBigUInt64LE(BigInt(length), 40);
      head.writeUInt32LE(meta.length, 48);
      createHash('sha256').update(meta).digest().copy(head, 56);
      Buffer.from(bytesDigest, 'hex').copy(head, 88);
      head.writeBigUInt64LE(BigInt(this.extraLength), 120);
      this.extraHash.digest().copy(head, 128);
      seal(this.secret, head).copy(head, SEALED);
      await writeAll(this.fh, head, 0);
      await this.fh.close();
      await fsp.rename(this.tmp, this.dest);
      placed = true;
    } catch {
      /* not recorded: the next build reads the layer */
    } finally {
      if (!placed) await this.abandon();
    }
  }

  /** Gives the segment up: its temporary file is removed. */
  async abandon(): Promise<void> {
    this.failed = true;
    await this.fh.close().catch(() => undefined);
    await fsp.rm(this.tmp, { force: true }).catch(() => undefined);
  }
}

async function writeAll(fh: fsp.FileHandle, b: Buffer, at: number): Promise<void> {
  for (let off = 0; off < b.length; ) {
    const { bytesWritten } = await fh.write(b, off, b.length - off, at + off);
    if (bytesWritten <= 0) throw new Error('short write');
    off += bytesWritten;
  }
}

function seal(secret: Uint8Array, head: Buffer): Buffer {
  return createHmac('sha256', secret).update(head.subarray(0, SEALED)).digest();
}

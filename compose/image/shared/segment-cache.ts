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
 * The cache is untrusted input (block-cache.ts), and segments are only ever trusted, never
 * checked another way: a segment is used only when it carries this user's seal (an HMAC
 * under the cache secret of the header, which holds the key, both lengths and the sha256 of
 * the meta and of the bytes), its meta hashes to what the header says (checked before the
 * meta is used) and its bytes do too (hashed as they are copied, while the writer goes on
 * with the groups after it; a mismatch drops the segment and fails the build with
 * ERR_SEGMENT_DAMAGED, which the composer answers by building again without segments). So a
 * segment is always what this user's own build wrote for that key, from layers it verified.
 * Without a secret there are no segments.
 *
 * Storage, beside the block packs of the same tag and namespace (so pruning and restrictions
 * treat both alike):
 *
 *   image-blocks/<tag>/<namespace id>/<key hex>.seg
 *
 * written under a temporary name and renamed into place (a reader sees a whole segment or
 * none); a restricted tag's segments are 0640, owned by its group, like its packs.
 *
 * Segment file (little-endian):
 *    0  4   magic "SQS1"
 *    4  u32 flags (0)
 *    8  32  key
 *   40  u64 length of the bytes
 *   48  u32 length of the meta
 *   52  u32 reserved (0)
 *   56  32  sha256 of the meta
 *   88  32  sha256 of the bytes
 *  120  32  seal: HMAC-SHA256(secret, bytes 0..120)
 *  152  …   meta, then the bytes
 *
 * Nothing here throws: a segment that cannot be read is a miss, one that cannot be written is
 * simply not there next time.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { addon } from '../../../native/binding.js';
import { BLOCK_CACHE_DIR, namespaceDir, namespaceId, tagDir } from './block-cache.js';

const MAGIC = Buffer.from('SQS1');
const HEADER = 152;
const SEALED = 120;
export const SEGMENT_SUFFIX = '.seg';

/** A sealed segment found for a key: its meta (checked), its bytes still to be copied. */
export interface FoundSegment {
  meta: Buffer;
  length: number;
  /**
   * Writes the bytes to descriptor `fd` from `at` (on a thread of libuv's pool, hashed as
   * they go) and checks them: true when they are the sealed bytes.
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
 * stored itself must not be there yet, one it found must be. `local`: the keys the group
 * stored so far (they are not in the writer's tables until the group is placed).
 */
export function agrees(own: boolean, key: string, local: Set<string>, held: (key: string) => boolean): boolean {
  const there = local.has(key) || held(key);
  if (own) local.add(key);
  return own !== there;
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

  private file(tag: string, key: Buffer): string {
    return path.join(this.root, tagDir(tag), this.ns, `${key.toString('hex')}${SEGMENT_SUFFIX}`);
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
      if ((await fh.stat()).size !== HEADER + metaLength + length) throw new Error('torn');
      const meta = Buffer.alloc(metaLength);
      if ((await fh.read(meta, 0, metaLength, HEADER)).bytesRead !== metaLength) throw new Error('short');
      if (!createHash('sha256').update(meta).digest().equals(head.subarray(56, 88))) throw new Error('meta');
      const bytesDigest = head.subarray(88, 120).toString('hex');
      const at = HEADER + metaLength;
      const file = this.file(tag, key);
      return {
        meta,
        length,
        copyInto: async (fd, to) => {
          const digest = await addon()
            .hashCopy(fh.fd, at, length, fd, to)
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
   * Records `length` bytes of `src` from `start` as the segment of `key` under `tag`, with
   * `meta`; `gid`: readable by that group only. Best effort: resolves when done or given up.
   */
  async write(tag: string, gid: number | undefined, key: Buffer, meta: Buffer, src: fsp.FileHandle, start: number, length: number): Promise<void> {
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
      await writeAll(fh, meta, HEADER);
      const bytesDigest = await addon().hashCopy(src.fd, start, length, fh.fd, HEADER + meta.length);
      const head = Buffer.alloc(HEADER);
      MAGIC.copy(head, 0);
      key.copy(head, 8);
      head.writeBigUInt64LE(BigInt(length), 40);
      head.writeUInt32LE(meta.length, 48);
      createHash('sha256').update(meta).digest().copy(head, 56);
      Buffer.from(bytesDigest, 'hex').copy(head, 88);
      seal(this.secret, head).copy(head, SEALED);
      await writeAll(fh, head, 0);
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, this.file(tag, key));
      tmp = undefined;
    } catch {
      /* not recorded: the next build reads the layer */
    } finally {
      await fh?.close().catch(() => undefined);
      if (tmp !== undefined) await fsp.rm(tmp, { force: true }).catch(() => undefined);
    }
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

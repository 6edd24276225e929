/**
 * The blob directory: `blobs/sha256/<hex>`, written through `tmp/`.
 *
 * Contract:
 * - put* is idempotent: a resolved promise means the content is durable at its digest (data
 *   fsynced, renamed into place, directory fsynced). Writing content that already exists
 *   replaces the stored file with the freshly hashed copy, so a damaged blob is repaired.
 * - read* verifies the digest at the end of the stream and throws ERR_DIGEST_MISMATCH instead of
 *   ending cleanly, so a consumer that commits only on a clean end never keeps bad bytes.
 * - Every blob a process is about to make durable is first recorded in that process's pin file
 *   (`tmp/pins-<pid>`), so a concurrent `gc` never removes a blob whose index entry is not yet
 *   written. Pins of processes that are gone are removed when the store opens.
 */
import { createHash } from 'node:crypto';
import * as fsSync from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError, STORE_ERR } from './errors.js';
import { StreamHash } from '../native/sha256.js';
import { alignedBuffer } from '../native/fsops.js';
import { SyncBehind } from '../native/sync-behind.js';

const HEX = /^[0-9a-f]{64}$/;
const WRITES_IN_FLIGHT = 8;
/** Small chunks are gathered into writes of this size. */
const WRITE_SIZE = 1 << 20;
/** Reads of a blob stream are this large. */
const READ_SIZE = 1 << 20;
/** A put announced at least this large is written past the page cache (O_DIRECT) where it can be. */
const DIRECT_MIN = 8 << 20;
/** What O_DIRECT asks of a write's buffer, offset and length: a multiple of the logical block (4096 covers them all). */
const DIRECT_ALIGN = 4096;
/**
 * The filesystems a blob is written to with O_DIRECT (statfs f_type): ext2/3/4, XFS, Btrfs,
 * local disks whose direct writes are plain block I/O. A network filesystem keeps the page
 * cache (NFS turns each direct write into a request the server must answer on its own).
 */
const DIRECT_FILESYSTEMS = new Set([0xef53, 0x58465342, 0x9123683e]);

/** A put whose bytes are written and hashed (BlobStore.stage): the digest, and its durability to come. */
export interface StagedPut {
  hex: string;
  size: number;
  /** The group the blob is restricted to (what `groupOf` answered), if any. */
  gid: number | undefined;
  /** Resolves once the blob is durable at its digest, as put() does. */
  durable: Promise<PutResult>;
}

export interface PutResult {
  hex: string;
  size: number;
  /** What the store held under this digest before: nothing, these bytes, or damaged bytes (now good). */
  prior: 'absent' | 'ok' | 'damaged';
}

/**
 * `tmp` created for writing with O_DIRECT, or undefined where the filesystem refuses the flag
 * at open (EINVAL; the file may have been made all the same, and is removed).
 */
async function openDirect(tmp: string): Promise<fsp.FileHandle | undefined> {
  const { O_WRONLY, O_CREAT, O_EXCL, O_DIRECT } = fsSync.constants;
  try {
    return await fsp.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_DIRECT, 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    await fsp.rm(tmp, { force: true });
    return undefined;
  }
}

export class BlobStore {
  readonly blobDir: string;
  readonly tmpDir: string;
  /** This process's pin file, opened by the first pin (one promise: puts commit concurrently). */
  private pinFile: Promise<fsp.FileHandle> | undefined;
  /** Blob directories of the stores below this one on the store path: read, never written. */
  private readonly lowerDirs: string[];
  /** Blobs this process holds open (`hold`): readable even after a concurrent gc unlinks them. */
  private readonly held = new Map<string, fsp.FileHandle>();
  /**
   * Whether large blobs are written with O_DIRECT: tmp/ is on one of DIRECT_FILESYSTEMS, and
   * the addon is there for the aligned buffers.
   */
  private direct: Promise<boolean> | undefined;

  /**
   * `root` is the store directory; `tmpDir` where in-flight files go (the store's tmp/ for its
   * writer, the user's cache for a reader); `lowers` are store directories read after this one.
   */
  constructor(readonly root: string, tmpDir = path.join(root, 'tmp'), lowers: string[] = []) {
    this.blobDir = path.join(root, 'blobs', 'sha256');
    this.tmpDir = tmpDir;
    this.lowerDirs = lowers.map((l) => path.join(l, 'blobs', 'sha256'));
  }

  /**
   * Creates the directories (the store's writer only). tmp/ is 0700: a restricted layer is
   * whole in it before it gets its group, so no one else may look in.
   */
  async init(): Promise<void> {
    await fsp.mkdir(this.blobDir, { recursive: true });
    await fsp.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    await fsp.chmod(this.tmpDir, 0o700);
    await this.removeStaleTmp();
  }

  /** Where blob `hex` is (or would be) written in this store. */
  blobPath(hex: string): string {
    if (!HEX.test(hex)) throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${hex}' is not a sha256 digest`);
    return path.join(this.blobDir, hex);
  }

  /** Where blob `hex` can be read: this store's copy, else the first store below that has it. */
  readPath(hex: string): string {
    const own = this.blobPath(hex);
    if (this.lowerDirs.length === 0 || fsSync.existsSync(own)) return own;
    for (const d of this.lowerDirs) {
      const p = path.join(d, hex);
      if (fsSync.existsSync(p)) return p;
    }
    return own;
  }

  /**
   * Opens blob `hex` and keeps it open until close(), so reads of it in this process succeed
   * even if a concurrent gc removes the name (POSIX keeps an unlinked open file readable).
   * A missing or unreadable blob is not held; reading it later reports why.
   */
  async hold(hex: string): Promise<void> {
    if (this.held.has(hex)) return;
    const fh = await fsp.open(this.readPath(hex), 'r').catch(() => undefined);
    if (fh) this.held.set(hex, fh);
  }

  /** Restricts a blob to a group: owned by `gid`, 0640 (the tmp file before it is committed). */
  static async restrict(file: string, gid: number): Promise<void> {
    await fsp.chown(file, process.geteuid?.() ?? 0, gid);
    await fsp.chmod(file, 0o640);
  }

  /** A fresh temp path owned by this process (name starts with its pid). */
  tmpPath(tag: string): string {
    return path.join(this.tmpDir, `${process.pid}-${tag}-${Math.random().toString(36).slice(2, 10)}`);
  }

  async has(hex: string): Promise<boolean> {
    if (this.held.has(hex)) return true;
    try {
      await fsp.access(this.readPath(hex));
      return true;
    } catch {
      return false;
    }
  }

  async size(hex: string): Promise<number> {
    const fh = this.held.get(hex);
    return (fh ? await fh.stat() : await fsp.stat(this.readPath(hex))).size;
  }

  /**
   * Streams `source` into the store; resolves once the blob is durable at its digest. If
   * `expectHex` is given, a mismatch is an error and nothing is kept. `groupOf`, when given, is
   * asked once the digest is known and before the blob becomes visible: a gid makes the blob
   * group-only (0640); it may throw to refuse the content. `sizeHint`: the stream's length
   * when known, or about it (a small stream is hashed inline; a wrong hint costs only speed).
   * A chunk of `source` is not kept once the next is asked for.
   */
  async put(...args: Parameters<BlobStore['stage']>): Promise<PutResult> {
    return (await this.stage(...args)).durable;
  }

  /**
   * put() in two steps. The promise resolves once every byte is written and hashed, the
   * digest checked against `expectHex` and the blob's group decided (`groupOf` asked; a
   * refusal rejects it, and nothing is kept); `durable` then resolves as put's promise would,
   * once the data is fsynced, renamed into place and its directory fsynced. What needs only
   * the digest (a document naming the blob) can be made while the disk flushes; an index
   * update naming the blob waits for `durable`. If `durable` rejects, the blob is not in the
   * store (its temp file is removed). It never rejects unobserved: a caller that gives up
   * first need not wait for it.
   */
  async stage(
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    expectHex?: string,
    groupOf?: (hex: string) => Promise<number | undefined>,
    sizeHint?: number,
  ): Promise<StagedPut> {
    const tmp = this.tmpPath('blob');
    // A large blob goes to the disk from the put's own buffers, past the page cache (O_DIRECT),
    // where the filesystem takes it: the blob is not read again soon, and filling the page
    // cache with it cost more CPU than the rest of the import (below, spec/decisions.md).
    const direct = (sizeHint ?? 0) >= DIRECT_MIN && (await this.directWrites()) ? await openDirect(tmp) : undefined;
    const fh = direct ?? (await fsp.open(tmp, 'wx', 0o644));
    // Through the page cache, the disk takes a large blob while the rest is produced, durable a
    // step behind the writes. A direct write is not synced by steps: the import of a large tar
    // is as fast as the disk, and a flush among its writes held them back (mpi.tar's import
    // 1.96 → 2.18 s, spec/decisions.md).
    const behind = direct ? undefined : new SyncBehind(fh);
    const newBuffer = () => (direct ? alignedBuffer(WRITE_SIZE) : Buffer.allocUnsafe(WRITE_SIZE));
    // A large stream is hashed off the main thread (native/sha256.ts); a list of buffers is its own hint.
    const hash = new StreamHash(sizeHint ?? (Array.isArray(source) ? source.reduce((n: number, b: Uint8Array) => n + b.byteLength, 0) : undefined));
    let size = 0;
    let hex: string;
    let synced: Promise<void> | undefined;
    // Every chunk is copied into WRITE_SIZE buffers of the put's own before the next is asked
    // for: a producer may reuse a chunk's buffer as soon as it is resumed (store/sources/tar.ts
    // does). A full buffer is hashed and written from where it is, up to WRITES_IN_FLIGHT
    // positional writes in the thread pool, and recycled once both are done, so a large import
    // does not fault in a fresh buffer per MiB (mpi.tar's import 0.84x the wall time and 138
    // against 192 MiB peak RSS of writing large chunks as they came, in buffers never reused).
    const inflight = new Set<Promise<unknown>>();
    const spare: Buffer[] = [];
    let gather: Buffer = newBuffer();
    let gathered = 0;
    /** Writes `bytes` at `at`, waiting only while WRITES_IN_FLIGHT are; `written` once it is done. */
    const writeAt = async (bytes: Uint8Array, at: number, written: () => void) => {
      const p = fh.write(bytes, 0, bytes.byteLength, at).then(() => {
        behind?.wrote(bytes.byteLength);
        written();
      });
      inflight.add(p);
      void p.finally(() => inflight.delete(p)).catch(() => undefined);
      if (inflight.size >= WRITES_IN_FLIGHT) await Promise.race(inflight);
    };
    /**
     * Hashes and writes the gathered bytes, which end where `size` is now, from their buffer
     * (no copy for the hash: the buffer is the put's own); it is reused once both are done.
     */
    const flush = async () => {
      const buf = gather;
      const n = gathered;
      gather = spare.pop() ?? newBuffer();
      gathered = 0;
      let users = 2;
      const done = () => {
        if (--users === 0) spare.push(buf);
      };
      hash.updateOwned(buf.subarray(0, n), done);
      // A direct write is of whole blocks: the last is padded with zeros, cut off by the truncate.
      const length = direct ? Math.ceil(n / DIRECT_ALIGN) * DIRECT_ALIGN : n;
      if (length > n) buf.fill(0, n, length);
      await writeAt(buf.subarray(0, length), size - n, done);
      const backlog = hash.backlog();
      if (backlog) await backlog;
    };
    /** Closes the temp file once no sync is at work on it. */
    const close = async () => {
      await Promise.allSettled([synced, behind?.settled()]);
      await fh.close();
    };
    try {
      for await (const chunk of source) {
        for (let off = 0; off < chunk.byteLength; ) {
          const n = Math.min(WRITE_SIZE - gathered, chunk.byteLength - off);
          gather.set(n === chunk.byteLength ? chunk : chunk.subarray(off, off + n), gathered);
          gathered += n;
          off += n;
          size += n;
          if (gathered === WRITE_SIZE) await flush();
        }
      }
      if (gathered > 0) await flush();
      await Promise.all(inflight);
      if (direct) await fh.truncate(size);
      // The disk flushes while the digest is finished and the group decided.
      synced = fh.sync();
      synced.catch(() => undefined);
      hex = await hash.digest();
    } catch (e) {
      hash.abort();
      await Promise.allSettled(inflight);
      await close().catch(() => {});
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    let gid: number | undefined;
    try {
      if (expectHex !== undefined && hex !== expectHex) {
        throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `content does not match sha256:${expectHex} (got sha256:${hex})`);
      }
      gid = await groupOf?.(hex);
    } catch (e) {
      await close().catch(() => {});
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    const durable = (async (): Promise<PutResult> => {
      let prior: 'absent' | 'ok' | 'damaged';
      try {
        try {
          await synced;
        } finally {
          await close();
        }
        if (gid !== undefined) await BlobStore.restrict(tmp, gid);
        prior = await this.prior(hex, size);
        await this.commit(tmp, hex);
      } catch (e) {
        await fsp.rm(tmp, { force: true });
        throw e;
      }
      return { hex, size, prior };
    })();
    durable.catch(() => undefined);
    return { hex, size, gid, durable };
  }

  private directWrites(): Promise<boolean> {
    return (this.direct ??= (async () => {
      if (fsSync.constants.O_DIRECT === undefined) return false;
      try {
        alignedBuffer(DIRECT_ALIGN);
        return DIRECT_FILESYSTEMS.has(Number((await fsp.statfs(this.tmpDir)).type));
      } catch {
        return false;
      }
    })());
  }

  async putBytes(bytes: Uint8Array, groupOf?: (hex: string) => Promise<number | undefined>): Promise<string> {
    return (await this.put([bytes], undefined, groupOf)).hex;
  }

  /** What this store held under `hex` before a put of `size` bytes: nothing, the same bytes, or damage. */
  private async prior(hex: string, size: number): Promise<'absent' | 'ok' | 'damaged'> {
    const st = await fsp.stat(this.blobPath(hex)).catch(() => undefined);
    if (!st) return 'absent';
    if (st.size !== size) return 'damaged';
    return (await this.check(hex).catch(() => 'corrupt')) === 'ok' ? 'ok' : 'damaged';
  }

  /**
   * Moves a fully written, fsynced temp file into place as blob `hex` (already verified by the
   * caller). An existing blob is replaced, not kept: the new bytes are known good, the old ones
   * may have rotted, and re-importing or re-pulling is how `verify` tells users to repair it.
   */
  async commit(tmp: string, hex: string): Promise<void> {
    await this.pin(hex);
    await fsp.rename(tmp, this.blobPath(hex));
    await fsyncDir(this.blobDir);
  }

  /**
   * Reads a blob, verifying its digest when the stream ends. The digest is computed off the
   * main thread (native/sha256.ts); the next chunk is read while the caller handles this one.
   * With `transient`, chunks are read into a ring of three buffers: the chunk the caller has and
   * the next one (being read) stay valid, so a chunk may be kept until the chunk after it is
   * asked for, no longer. Without it every chunk is a buffer of its own.
   */
  async *read(hex: string, what?: string, opts: { transient?: boolean } = {}): AsyncGenerator<Buffer> {
    let fh = this.held.get(hex);
    const own = !fh;
    if (!fh) {
      try {
        fh = await fsp.open(this.readPath(hex), 'r');
      } catch (e) {
        throw this.unreadable(hex, what, e);
      }
    }
    const hash = new StreamHash((await fh.stat()).size);
    try {
      let pos = 0;
      const ring = opts.transient ? [0, 1, 2].map(() => Buffer.allocUnsafeSlow(READ_SIZE)) : undefined;
      let turn = 0;
      const readAt = async (at: number) => {
        const buf = ring ? ring[turn++ % ring.length]! : Buffer.allocUnsafeSlow(READ_SIZE);
        const { bytesRead } = await fh.read(buf, 0, READ_SIZE, at);
        return buf.subarray(0, bytesRead);
      };
      let next = readAt(0);
      for (;;) {
        const chunk = await next;
        if (chunk.length === 0) break;
        pos += chunk.length;
        const behind = hash.backlog();
        if (behind) await behind;
        next = readAt(pos);
        next.catch(() => undefined); // awaited on the next turn, unless the caller stops first
        hash.update(chunk);
        yield chunk;
      }
      if ((await hash.digest()) !== hex) throw this.mismatch(hex, what);
    } finally {
      hash.abort(); // a no-op once digested
      if (own) await fh.close().catch(() => undefined);
    }
  }

  /**
   * Blob `hex` opened for a reader that reads and verifies it itself: its descriptor (the held
   * one, else one of its own until `close`) and its size. Errors as `read` reports them.
   */
  async open(hex: string, what?: string): Promise<{ fd: number; size: number; close(): Promise<void> }> {
    const held = this.held.get(hex);
    let fh = held;
    if (!fh) {
      try {
        fh = await fsp.open(this.readPath(hex), 'r');
      } catch (e) {
        throw this.unreadable(hex, what, e);
      }
    }
    const file = fh;
    return { fd: file.fd, size: (await file.stat()).size, close: async () => (held ? undefined : file.close()) };
  }

  async readBytes(hex: string, what?: string): Promise<Buffer> {
    let buf: Buffer;
    try {
      const fh = this.held.get(hex);
      buf = fh ? await readAllAt(fh) : await fsp.readFile(this.readPath(hex));
    } catch (e) {
      throw this.unreadable(hex, what, e);
    }
    if (createHash('sha256').update(buf).digest('hex') !== hex) throw this.mismatch(hex, what);
    return buf;
  }

  /** Hashes a stored blob; 'ok' when its content matches its name. */
  async check(hex: string): Promise<'ok' | 'missing' | 'corrupt' | 'unreadable'> {
    try {
      for await (const _ of this.read(hex)) void _;
      return 'ok';
    } catch (e) {
      if (e instanceof StrataError && e.code === STORE_ERR.BLOB_MISSING) return 'missing';
      if (e instanceof StrataError && e.code === STORE_ERR.ACCESS_DENIED) return 'unreadable';
      if (e instanceof StrataError && e.code === STORE_ERR.DIGEST_MISMATCH) return 'corrupt';
      throw e;
    }
  }

  async *list(): AsyncGenerator<string> {
    for (const name of (await fsp.readdir(this.blobDir)).sort()) if (HEX.test(name)) yield name;
  }

  async remove(hex: string): Promise<void> {
    await fsp.rm(this.blobPath(hex), { force: true });
  }

  /** Digests pinned by live processes (this one included). */
  async livePins(): Promise<Set<string>> {
    const pins = new Set<string>();
    for (const name of await fsp.readdir(this.tmpDir)) {
      const m = /^pins-(\d+)$/.exec(name);
      if (!m || !processAlive(Number(m[1]))) continue;
      const text = await fsp.readFile(path.join(this.tmpDir, name), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (HEX.test(line)) pins.add(line);
    }
    return pins;
  }

  async close(): Promise<void> {
    for (const fh of this.held.values()) await fh.close().catch(() => {});
    this.held.clear();
    if (this.pinFile) {
      const fh = await this.pinFile.catch(() => undefined);
      this.pinFile = undefined;
      await fh?.close();
      await fsp.rm(path.join(this.tmpDir, `pins-${process.pid}`), { force: true });
    }
  }

  private async pin(hex: string): Promise<void> {
    this.pinFile ??= fsp.open(path.join(this.tmpDir, `pins-${process.pid}`), 'a').catch((e: unknown) => {
      this.pinFile = undefined;
      throw e;
    });
    const fh = await this.pinFile;
    // O_APPEND: concurrent pins each add their line whole.
    await fh.write(`${hex}\n`);
    await fh.datasync();
  }

  /** A blob that cannot be opened: missing, or (EACCES) restricted to a group the user is not in. */
  private unreadable(hex: string, what: string | undefined, e: unknown): StrataError {
    if ((e as NodeJS.ErrnoException).code === 'EACCES') {
      return new StrataError(STORE_ERR.ACCESS_DENIED, `${what ?? 'blob'} sha256:${hex} is not readable by you`, {
        hint: 'it belongs to a restricted module; ask your site staff for access',
      });
    }
    return new StrataError(STORE_ERR.BLOB_MISSING, `${what ?? 'blob'} sha256:${hex} is missing from the store`, {
      hint: 'run `strata store verify`; re-import or pull the module',
    });
  }

  /** The error for blob `hex` found not to match its digest; `cause`: what was met first (a parser's failure). */
  mismatch(hex: string, what?: string, cause?: unknown): StrataError {
    return new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what ?? 'blob'} sha256:${hex} is corrupt (its content no longer matches its digest)`, {
      hint: 'run `strata store verify`, then re-import or pull the module',
      ...(cause === undefined ? {} : { cause }),
    });
  }

  /** Removes temp files and pin files left by processes that no longer run. */
  private async removeStaleTmp(): Promise<void> {
    for (const name of await fsp.readdir(this.tmpDir)) {
      const m = /^(?:pins-)?(\d+)(?:-|$)/.exec(name);
      if (m && processAlive(Number(m[1]))) continue;
      await fsp.rm(path.join(this.tmpDir, name), { recursive: true, force: true });
    }
  }
}

async function readAllAt(fh: fsp.FileHandle): Promise<Buffer> {
  const { size } = await fh.stat();
  const buf = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const { bytesRead } = await fh.read(buf, off, size - off, off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return buf.subarray(0, off);
}

export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

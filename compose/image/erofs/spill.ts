/**
 * An append-only byte store for what the EROFS writer must keep until finish() (the inline
 * tails of files, at most 4095 bytes each): in memory up to `memoryLimit` bytes, then in a
 * temp file beside the image, so memory does not grow with the number of files.
 * read() may be called in any order once the appends are done, for any range appended;
 * close() removes the file.
 *
 * What read() and readNow() give is a view, not a copy (a copy only for bytes that span two
 * chunks in memory): bytes in memory are never changed (a chunk is only appended to), and each
 * read back from the file gets a buffer of its own, unless the store has one reader at a time
 * (`oneReader`): then the file is read back into one reused megabyte, and what read() and
 * readNow() give is valid until the next read(). A large tree's metadata pass reads a hundred
 * megabytes of tails through here, and a new buffer for each read, or a copy of each tail, was
 * garbage the collector had to count and collect (spec/decisions.md, Caches and speed).
 */
import fs from 'node:fs/promises';

export interface SpillRef {
  off: number;
  len: number;
}

const CHUNK = 1 << 20;
const EMPTY = Buffer.alloc(0);

export class Spill {
  private readonly chunks: Buffer[] = [];
  private cur = Buffer.allocUnsafe(CHUNK);
  private used = 0;
  private inMemory = 0;
  private fh: fs.FileHandle | undefined;
  /** Bytes in the file; `pending` holds the next ones, written a chunk at a time. */
  private fileBytes = 0;
  private pending: Buffer | undefined;
  private pendingUsed = 0;
  /** Spilled data begins at this logical offset (everything before it is in memory). */
  private fileStart = -1;
  /** The bytes last read back from the file, at `off` of the spilled part. */
  private readCache: { off: number; data: Buffer } | undefined;
  /** What the file is read back into when there is one reader (`oneReader`). */
  private readBuffer: Buffer | undefined;

  constructor(
    private readonly path: string,
    private readonly memoryLimit = 64 << 20,
    /** Reads come one at a time, each used (or copied) before the next: the file is read back into one buffer. */
    private readonly oneReader = false,
  ) {}

  /** Total bytes appended. */
  get size(): number {
    return this.fileStart < 0 ? this.inMemory + this.used : this.fileStart + this.fileBytes + this.pendingUsed;
  }

  async append(b: Uint8Array): Promise<SpillRef> {
    const off = this.size;
    if (this.fileStart < 0 && this.inMemory + this.used + b.length <= this.memoryLimit) {
      let at = 0;
      while (at < b.length) {
        const n = Math.min(CHUNK - this.used, b.length - at);
        this.cur.set(b.subarray(at, at + n), this.used);
        this.used += n;
        at += n;
        if (this.used === CHUNK) {
          this.chunks.push(this.cur);
          this.inMemory += CHUNK;
          this.cur = Buffer.allocUnsafe(CHUNK);
          this.used = 0;
        }
      }
      return { off, len: b.length };
    }
    if (this.fileStart < 0) {
      this.fileStart = off;
      this.fh = await fs.open(this.path, 'wx+', 0o600);
    }
    // Past the memory limit: through one chunk-sized buffer, so a small tail is a copy, not a write.
    this.pending ??= Buffer.allocUnsafe(CHUNK);
    let at = 0;
    while (at < b.length) {
      const n = Math.min(CHUNK - this.pendingUsed, b.length - at);
      this.pending.set(b.subarray(at, at + n), this.pendingUsed);
      this.pendingUsed += n;
      at += n;
      if (this.pendingUsed === CHUNK) await this.flushPending();
    }
    return { off, len: b.length };
  }

  private async flushPending(): Promise<void> {
    for (let at = 0; at < this.pendingUsed; ) {
      const { bytesWritten } = await this.fh!.write(this.pending!, at, this.pendingUsed - at, this.fileBytes);
      if (bytesWritten <= 0) throw new Error(`short write to ${this.path}`);
      at += bytesWritten;
      this.fileBytes += bytesWritten;
    }
    this.pendingUsed = 0;
  }

  /**
   * The bytes of `ref` when they are at hand without a read (in memory, or in the megabyte
   * last read back from the file); undefined when read() must fetch them.
   */
  readNow(ref: SpillRef): Buffer | undefined {
    if (ref.len === 0) return EMPTY;
    const memEnd = this.fileStart < 0 ? this.size : this.fileStart;
    if (ref.off + ref.len <= memEnd) return this.fromMemory(ref);
    if (ref.off < memEnd) return undefined;
    const rel = ref.off - this.fileStart;
    const c = this.readCache;
    if (rel + ref.len > this.fileBytes || !c || rel < c.off || rel + ref.len > c.off + c.data.length) return undefined;
    return c.data.subarray(rel - c.off, rel - c.off + ref.len);
  }

  async read(ref: SpillRef): Promise<Buffer> {
    const now = this.readNow(ref);
    if (now) return now;
    const memEnd = this.fileStart < 0 ? this.size : this.fileStart;
    if (ref.off < memEnd && ref.off + ref.len > memEnd) {
      // Across the end of what is in memory (bytes appended in one piece, not tail by tail).
      const head = await this.read({ off: ref.off, len: memEnd - ref.off });
      return Buffer.concat([head, await this.read({ off: memEnd, len: ref.off + ref.len - memEnd })]);
    }
    // Spilled tails are read back in roughly the order they were written: read ahead a MiB.
    const rel = ref.off - this.fileStart;
    if (rel + ref.len > this.fileBytes) {
      await this.flushPending();
      const now = this.readNow(ref);
      if (now) return now;
    }
    const n = Math.min(Math.max(CHUNK, ref.len), this.fileBytes - rel);
    let data: Buffer;
    if (this.oneReader) {
      if (!this.readBuffer || this.readBuffer.length < n) this.readBuffer = Buffer.allocUnsafe(Math.max(CHUNK, n));
      data = this.readBuffer.subarray(0, n);
      this.readCache = undefined;
    } else data = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.fh!.read(data, got, n - got, rel + got);
      if (bytesRead <= 0) throw new Error(`short read from ${this.path}`);
      got += bytesRead;
    }
    this.readCache = { off: rel, data };
    return data.subarray(0, ref.len);
  }

  /** Bytes that are all in memory: a view of their chunk, or a copy when they span two. */
  private fromMemory(ref: SpillRef): Buffer {
    const ci = Math.floor(ref.off / CHUNK);
    const co = ref.off % CHUNK;
    if (co + ref.len <= CHUNK) return (ci < this.chunks.length ? this.chunks[ci]! : this.cur).subarray(co, co + ref.len);
    const out = Buffer.allocUnsafe(ref.len);
    let at = 0;
    let pos = ref.off;
    while (at < ref.len) {
      const ci = Math.floor(pos / CHUNK);
      const co = pos % CHUNK;
      const src = ci < this.chunks.length ? this.chunks[ci]! : this.cur;
      const n = Math.min(CHUNK - co, ref.len - at);
      src.copy(out, at, co, co + n);
      at += n;
      pos += n;
    }
    return out;
  }

  /**
   * Hands `len` bytes from `off` to `each` in pieces of at most a MiB, in order (with no append
   * meanwhile). The pieces end where the chunks do, so that each is a view, not a copy.
   */
  async readRange(off: number, len: number, each: (piece: Buffer) => Promise<void>): Promise<void> {
    for (const end = off + len; off < end; ) {
      const n = Math.min(CHUNK - (off % CHUNK), end - off);
      await each(await this.read({ off, len: n }));
      off += n;
    }
  }

  async close(): Promise<void> {
    this.chunks.length = 0;
    this.readCache = undefined;
    this.readBuffer = undefined;
    if (this.fh) {
      await this.fh.close().catch(() => undefined);
      this.fh = undefined;
    }
    if (this.fileStart >= 0) await fs.rm(this.path, { force: true });
  }
}

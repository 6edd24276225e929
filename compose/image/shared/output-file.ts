/**
 * An image file written under a temporary name beside its destination and renamed over it
 * when complete: one temp file, one rename per image; readers of OUT see the old file or the
 * new one, never a part.
 *
 * The temp file is `.strata-tmp-<host>-<pid>-<random>` in OUT's directory (`host`: 8 hex
 * digits of the hostname's sha256), created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: a name
 * planted there (a symlink to a victim file, a file of another user) makes the open fail, it
 * is never followed or reused. Its content is for the builder alone while it is written; on
 * commit it gets its final group and mode, then rename(2) replaces OUT — a symlink named OUT
 * is replaced, not followed — and the directory is synced.
 *
 * The sha256 an image is reported with is read back from the temp file at commit. A writer that
 * knows its first bytes final before the end (EROFS: the superblock, given the layout, and the
 * file data, before the metadata is written) starts it over them with hashAhead(), and commit
 * reads back only the rest; a write below that point after it throws.
 *
 * Leftovers: a killed build leaves its temp file. Creating an output first removes the temp
 * files in that directory of processes of this host that no longer run (their pid is gone);
 * files of other hosts (a shared filesystem) or live processes are left alone.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { addon } from '../../../native/binding.js';
import { SyncBehind } from '../../../native/sync-behind.js';

/** Queued writes go out once this many bytes are queued. */
const WRITE_BEHIND = 1 << 20;
const HOST = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);
const TEMP = /^\.strata-tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{12}$/;

/** The final access of an output: for everyone (the umask's say), or for one group only. */
export interface OutputAccess {
  /** The file's group gets read access, others none. */
  gid?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temp files of dead processes of this host from `dir`; returns how many. Never throws. */
export async function removeStaleTemps(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    const m = TEMP.exec(name);
    if (!m || m[1] !== HOST || Number(m[2]) === process.pid || alive(Number(m[2]))) continue;
    try {
      await fs.unlink(path.join(dir, name));
      n++;
    } catch {
      /* not ours to remove */
    }
  }
  return n;
}

export class OutputFile {
  private done = false;
  /** Writes queued by queueWrite: consecutive, starting at queuedAt. */
  private queued: Uint8Array[] = [];
  private queuedAt = 0;
  private queuedBytes = 0;
  /** hashAhead's sha256 stream, the bytes it covers, and its read of them (on the pool). */
  private ahead: { stream: unknown; length: number; read: Promise<void> } | undefined;
  /**
   * The file synced a step behind the writer (on the pool), so that commit's fsync has only
   * the last step left (spec/decisions.md, Caches and speed). Writers that copy into the file
   * themselves start the writeback of what they copied (hashCopy's `writeback`).
   */
  private readonly behind: SyncBehind;

  private constructor(
    /** Where the file ends up. */
    readonly path: string,
    /** The temp file being written. */
    readonly tmpPath: string,
    readonly fh: fs.FileHandle,
    private readonly access: OutputAccess,
  ) {
    this.behind = new SyncBehind(fh);
  }

  /** Creates the temp file for `out` (after removing stale ones). Errors are the open's (EACCES, ENOENT…). */
  static async create(out: string, access: OutputAccess = {}): Promise<OutputFile> {
    const abs = path.resolve(out);
    const dir = path.dirname(abs);
    await removeStaleTemps(dir);
    const tmp = path.join(dir, `.strata-tmp-${HOST}-${process.pid}-${randomBytes(6).toString('hex')}`);
    const fh = await fs.open(tmp, C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    return new OutputFile(abs, tmp, fh, access);
  }

  /** Positional write of the whole buffer, or of the buffers one after the other (a short write is finished, never left as a gap). */
  async writeAll(b: Uint8Array | readonly Uint8Array[], at: number): Promise<void> {
    await this.flush();
    await (b instanceof Uint8Array ? this.writeAt(b, at) : this.writevAt(b, at));
  }

  /**
   * Queues a positional write of `b`, which must not change until it is written: writes that
   * continue one another go out together, once WRITE_BEHIND bytes are queued or at the next
   * writeAll, flush, setLength or commit (one system call, one wake-up of the thread
   * pool, per megabyte instead of per block).
   */
  async queueWrite(b: Uint8Array, at: number): Promise<void> {
    this.checkPast(at);
    if (this.queued.length > 0 && at !== this.queuedAt + this.queuedBytes) await this.flush();
    if (this.queued.length === 0) this.queuedAt = at;
    this.queued.push(b);
    this.queuedBytes += b.length;
    if (this.queuedBytes >= WRITE_BEHIND) await this.flush();
  }

  /** Forgets queued bytes at or past `pos` (a writer that moved its position back over them). */
  discardFrom(pos: number): void {
    while (this.queued.length > 0 && this.queuedAt + this.queuedBytes > pos) {
      const last = this.queued.pop()!;
      const start = this.queuedAt + this.queuedBytes - last.length;
      this.queuedBytes -= last.length;
      if (start < pos) {
        const keep = last.subarray(0, pos - start);
        this.queued.push(keep);
        this.queuedBytes += keep.length;
      }
    }
  }

  /** Writes whatever queueWrite holds. */
  async flush(): Promise<void> {
    if (this.queued.length === 0) return;
    const bufs = this.queued;
    const at = this.queuedAt;
    this.queued = [];
    this.queuedBytes = 0;
    await this.writevAt(bufs, at);
  }

  /** Positional write of the buffers one after the other (one writev; a short one is finished). */
  private async writevAt(bufs: readonly Uint8Array[], at: number): Promise<void> {
    this.checkPast(at);
    const { bytesWritten } = await this.fh.writev(bufs as Uint8Array[], at);
    const total = bufs.reduce((n, b) => n + b.length, 0);
    this.behind.wrote(bytesWritten);
    if (bytesWritten < total) await this.writeAt(Buffer.concat(bufs).subarray(bytesWritten), at + bytesWritten);
  }

  private async writeAt(b: Uint8Array, at: number): Promise<void> {
    this.checkPast(at);
    for (let off = 0; off < b.length; ) {
      const { bytesWritten } = await this.fh.write(b, off, b.length - off, at + off);
      if (bytesWritten <= 0) throw new Error(`short write to ${this.tmpPath}`);
      off += bytesWritten;
      this.behind.wrote(bytesWritten);
    }
  }

  /**
   * Ends the file at `length` bytes followed by zeros up to `padded`: whatever was written at or
   * past `length` before (a writer that moved its position back) is gone, the padding is zeros.
   */
  async setLength(length: number, padded: number): Promise<void> {
    await this.flush();
    this.checkPast(length);
    await this.fh.truncate(length);
    if (padded > length) await this.fh.truncate(padded);
  }

  /**
   * Starts the file's sha256 over its first `length` bytes as they are now: read back on a
   * thread of libuv's pool while the writer goes on past them. commit() then reads back only
   * what follows. From here on a write (or a truncation) below `length` throws: the digest
   * would no longer be the file's.
   */
  async hashAhead(length: number): Promise<void> {
    if (this.ahead) throw new Error('OutputFile.hashAhead: called twice');
    await this.flush();
    // Bytes not written yet are zeros: nothing may write them now.
    if ((await this.fh.stat()).size < length) await this.fh.truncate(length);
    const a = addon();
    const stream = a.hashOpen();
    const read = a.hashRead(stream, this.fh.fd, 0, length);
    // Awaited by commit (or abort); a failure before then is not an unhandled rejection.
    read.catch(() => undefined);
    this.ahead = { stream, length, read };
  }

  private checkPast(at: number): void {
    if (this.ahead && at < this.ahead.length) throw new Error(`image writer: a write at ${at}, inside the ${this.ahead.length} bytes already hashed`);
  }

  /**
   * sha256 (hex) of the temp file as it is now, read through its descriptor and hashed on a
   * thread of libuv's pool (no chunk passes through the JS thread): after what hashAhead read,
   * if it was called.
   */
  private async sha256(): Promise<string> {
    const size = (await this.fh.stat()).size;
    const a = addon();
    if (!this.ahead) return a.hashCopy(this.fh.fd, 0, size, -1, 0);
    const { stream, length, read } = this.ahead;
    await read;
    await a.hashRead(stream, this.fh.fd, length, size - length);
    return a.hashDigest(stream);
  }

  /**
   * Finishes the file: sets the final group and mode, syncs it while reading it back for its
   * sha256 (the fsync writes the page cache out on the thread pool as the hash reads it, so
   * neither waits for the other), renames it over the destination and syncs the directory.
   * Returns the sha256 (hex) of the file as committed.
   */
  async commit(): Promise<string> {
    await this.flush();
    const umask = process.umask();
    let mode = 0o666 & ~umask;
    if (this.access.gid !== undefined) {
      await this.fh.chown(-1, this.access.gid);
      mode &= 0o660;
    }
    await this.fh.chmod(mode);
    const [sha256] = await Promise.all([this.sha256(), this.fh.sync()]);
    await this.behind.settled();
    await this.fh.close();
    await fs.rename(this.tmpPath, this.path);
    this.done = true;
    const d = await fs.open(path.dirname(this.path), C.O_RDONLY | C.O_DIRECTORY).catch(() => undefined);
    if (d) {
      await d.sync().catch(() => undefined);
      await d.close();
    }
    return sha256;
  }

  /** Closes and removes the temp file. Safe to call more than once, and after commit (a no-op). */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    // The descriptor stays open until hashAhead's read of it, and a sync started, are over.
    await this.ahead?.read.catch(() => undefined);
    await this.behind.settled();
    await this.fh.close().catch(() => undefined);
    await fs.rm(this.tmpPath, { force: true });
  }
}

/**
 * File contents written behind the JS thread. Copying file data into the page cache is most of
 * the kernel's work in writing a tree, and a writer that calls write(2) itself does it on the
 * JS thread, between reading one layer chunk and the next. Here each chunk is copied into a
 * slab of our own and written (pwrite) on libuv's pool, so the copy into the page cache runs on
 * the other core while JS reads, verifies and plans; a file's metadata is applied, and its
 * descriptor closed, on the JS thread once all its writes are done (in `FileWrites.close`).
 * Writes go in batches (native writeBatch), at most two at once: a tree is mostly small files,
 * and a pool round trip per file (a thread woken, a callback) costs about what the write does.
 * While two batches run, the next one fills; it starts when one of them ends.
 *
 * Memory is bounded: chunks are copied into 1 MiB slabs, reused once every write from them is
 * done, and at most LIMIT bytes are being written at once (`write` waits for room).
 *
 * Failures: a write that fails (ENOSPC, EIO) or a `then` that throws is kept and thrown by the
 * next `write` or by `drain`; a file whose writes failed is closed without its metadata.
 */
import * as fs from 'node:fs';
import * as util from 'node:util';
import { writeBatch, type BatchWrite } from '../../native/fsops.js';

const SLAB = 1 << 20;
/** Bytes being written at once (queued or running), at most. */
const LIMIT = 16 << 20;
/** Batches running at once (libuv's pool has four threads; layer reads and file creation need the others). */
const RUNNING = 2;

interface Piece extends BatchWrite {
  slab: Slab;
  file: FileWrites;
}

interface Slab {
  buf: Buffer;
  used: number;
  refs: number;
}

export class WriteBehind {
  private readonly free: Slab[] = [];
  private cur: Slab | undefined;
  private inFlight = 0;
  private pendingFiles = 0;
  private failure: unknown;
  private wake: (() => void) | undefined;
  private batch: Piece[] = [];
  private running = 0;

  /** `shape` turns a failed write of a file into the error the build reports (TreeWriter.failure). */
  constructor(private readonly shape: (path: string, err: unknown) => unknown) {}

  /** A file's writes, at increasing positions from 0. */
  open(fd: number, path: string): FileWrites {
    return new FileWrites(this, fd, path);
  }

  /** Waits until every file opened is written and closed; throws the first failure. */
  async drain(): Promise<void> {
    await this.settled();
    this.check();
  }

  /** Waits until every file opened is written and closed (or failed); never throws. */
  async settled(): Promise<void> {
    while (this.pendingFiles > 0) {
      this.flush();
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** @internal */
  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** @internal Copies `chunk` into slabs and writes it at `pos` of `fd`, each piece begun and settled on `file`. */
  async put(file: FileWrites, fd: number, chunk: Uint8Array, pos: number): Promise<void> {
    for (let off = 0; off < chunk.byteLength; ) {
      this.check();
      while (this.inFlight >= LIMIT) {
        this.flush();
        await new Promise<void>((r) => (this.wake = r));
      }
      const slab = this.slab();
      const n = Math.min(chunk.byteLength - off, SLAB - slab.used);
      const at = slab.used;
      slab.buf.set(chunk.subarray(off, off + n), at);
      slab.used += n;
      slab.refs++;
      this.inFlight += n;
      file.begin();
      this.batch.push({ fd, buf: slab.buf, offset: at, length: n, position: pos + off, slab, file });
      this.flush();
      off += n;
    }
  }

  /** Starts the batch being filled, if it has pieces and may run now (else a batch ending does). */
  private flush(): void {
    if (this.batch.length === 0 || this.running >= RUNNING) return;
    const pieces = this.batch;
    this.batch = [];
    this.running++;
    const done = (results?: Int32Array, err?: unknown) => {
      this.running--;
      for (let i = 0; i < pieces.length; i++) {
        const p = pieces[i]!;
        this.inFlight -= p.length;
        if (--p.slab.refs === 0 && p.slab !== this.cur) this.free.push(p.slab);
        const r = results?.[i] ?? -1;
        p.file.settle(r === 0 ? undefined : this.shape(p.file.path, err ?? errnoError(-r, p.file.path)));
      }
      this.flush();
      this.poke();
    };
    writeBatch(pieces).then(
      (r) => done(r),
      (e) => done(undefined, e),
    );
  }

  /** @internal */
  fileOpened(): void {
    this.pendingFiles++;
  }

  /** @internal */
  fileClosed(err?: unknown): void {
    this.pendingFiles--;
    if (err !== undefined && this.failure === undefined) this.failure = err;
    this.poke();
  }

  /** The slab being filled, or a fresh one once it is full. */
  private slab(): Slab {
    if (this.cur && this.cur.used < SLAB) return this.cur;
    const old = this.cur;
    this.cur = this.free.pop() ?? { buf: Buffer.allocUnsafeSlow(SLAB), used: 0, refs: 0 };
    this.cur.used = 0;
    if (old && old.refs === 0) this.free.push(old);
    return this.cur;
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/** The writes of one file: `write` its chunks in order, then `close` once. */
export class FileWrites {
  private pos = 0;
  private pending = 1; // the caller's own hold, released by close()
  private err: unknown;
  private then: (() => void) | undefined;

  constructor(
    private readonly behind: WriteBehind,
    private readonly fd: number,
    /** For messages. */
    readonly path: string,
  ) {
    behind.fileOpened();
  }

  /** Queues `chunk` (copied: the caller may reuse it at once); waits only for room. */
  async write(chunk: Uint8Array): Promise<void> {
    const pos = this.pos;
    this.pos += chunk.byteLength;
    await this.behind.put(this, this.fd, chunk, pos);
  }

  /**
   * No more writes: once they are all done, `then` runs on the JS thread (the file's metadata,
   * and closing the descriptor: `then` owns it, also when it throws); without `then`, or after
   * a failed write, the descriptor is only closed.
   */
  close(then?: () => void): void {
    this.then = then;
    this.settle();
  }

  /** @internal A write of this file started. */
  begin(): void {
    this.pending++;
  }

  /** @internal A write of this file ended (or, once, the caller's close()). */
  settle(err?: unknown): void {
    if (err !== undefined && this.err === undefined) this.err = err;
    if (--this.pending > 0) return;
    let failure = this.err;
    if (failure === undefined && this.then) {
      try {
        this.then();
      } catch (e) {
        failure = e;
      }
    } else {
      try {
        fs.closeSync(this.fd);
      } catch (e) {
        failure ??= e;
      }
    }
    this.behind.fileClosed(failure);
  }
}

/** An error shaped like Node's fs errors, for a write that failed with `errno`. */
function errnoError(errno: number, path: string): NodeJS.ErrnoException {
  const [code, desc] = util.getSystemErrorMap().get(-errno) ?? ['EIO', 'i/o error'];
  return Object.assign(new Error(`${code}: ${desc}, write '${path}'`), { code, errno: -errno, syscall: 'write', path });
}

/**
 * An external sorter: records go in in any order and come out sorted, with memory bounded by
 * a budget whatever their number. Below the budget nothing touches the disk (the common
 * case: a stack of tens of thousands of entries sorts in memory as before). Past it, the
 * records held are sorted and written to a run file; reading merges the runs.
 *
 * Runs: byte ranges of one file per sorter, each a sequence of records `u32le length, bytes`.
 * The file never has a name while it is used, so nothing can open it, and the kernel frees it
 * when its descriptor closes, at dispose() (call it in a finally) or however the process ends:
 * a process killed mid-build (the OOM killer, a batch system's time limit) leaves no run
 * behind, in /tmp or the store's tmp/. Where `dir`'s filesystem can make a file without a name
 * (O_TMPFILE: ext4, XFS, Btrfs, tmpfs) it is made so; elsewhere (NFS) it is created O_EXCL
 * (0600, never through a symlink) under a random name and unlinked at once.
 *
 * Stability: records that compare equal come out in the order they were pushed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AT_FDCWD, openat, tmpfileFlag } from '../native/fsops.js';

export interface RecordCodec<T> {
  /** `t` as bytes; they may be a view of the codec's own buffer, valid until its next call. */
  encode(t: T): Buffer;
  /** A record back from `b`, a view valid only during the call: keep nothing that views it. */
  decode(b: Buffer): T;
  /** Approximate bytes `t` holds in memory (for the budget). */
  size(t: T): number;
}

/**
 * A record of strings that hold no NUL (paths, JSON text, numbers written out), as the strings
 * joined by NUL: the spill form of the path-keyed tables built beside an entry list (an image's
 * ACL index, hard-link groups). Size: two bytes a character, plus the array.
 */
export function stringsCodec<T extends readonly string[]>(): RecordCodec<T> {
  return {
    encode: (t) => Buffer.from(t.join('\0')),
    decode: (b) => b.toString().split('\0') as unknown as T,
    size: (t) => t.reduce((n, s) => n + 2 * s.length, 64),
  };
}

/** A record that is one string (a path): its UTF-8 bytes. */
export const textCodec: RecordCodec<string> = {
  encode: (s) => Buffer.from(s),
  decode: (b) => b.toString(),
  size: (s) => 48 + 2 * s.length,
};

export interface SpillOptions<T> {
  compare(a: T, b: T): number;
  codec: RecordCodec<T>;
  /** Directory for run files (must exist; strata's tmp/). */
  dir: string;
  /** Bytes of records held in memory before a run is written (default 8 MiB). */
  budget?: number;
}

/** Bytes a run file is written in, and read in at most. */
const READ_CHUNK = 256 << 10;
/** The least a run is read in, however many runs a merge reads. */
const MIN_READ_CHUNK = 16 << 10;

/**
 * The buffer each source of a merge is read through: together at most half the budget (a
 * million-entry build once merged fifty runs; at 256 KiB each that was 14 MiB), each between
 * MIN_READ_CHUNK and READ_CHUNK.
 */
function mergeChunk(budget: number, sources: number): number {
  return Math.max(MIN_READ_CHUNK, Math.min(READ_CHUNK, Math.floor(budget / 2 / sources)));
}

/**
 * The default memory budget of a sorter: $STRATA_MEMORY_BUDGET bytes (tests set it tiny to
 * force spilling), else 8 MiB: the estimate counts encoded bytes, and the objects held take two
 * to three times that in the heap.
 */
export function defaultBudget(): number {
  const env = Number(process.env.STRATA_MEMORY_BUDGET);
  return Number.isSafeInteger(env) && env > 0 ? env : 8 << 20;
}

export class SpillSorter<T> {
  /** Records held in memory, in push order until sorted (a stable sort keeps it among equals). */
  private heldRecords: T[] = [];
  /** Whether heldRecords is sorted already (no push since the last sort): a sorter read again is not sorted again. */
  private heldSorted = true;
  private heldBytes = 0;
  private pushed = 0;
  /** The run file's descriptor (its name is gone), from the first run written until dispose(). */
  private fd: number | undefined;
  /** Bytes written to the run file: where the next run starts. */
  private written = 0;
  /**
   * The runs in push order, cut where a run does not start at or after the end of the one
   * before. A chain is read as one sorted source: input that comes mostly in order (a layer's
   * entries, a plan's files) merges a few chains instead of dozens of runs, each record taking
   * a comparison or two instead of a dozen.
   */
  private readonly chains: Run[][] = [];
  /** The last record of the latest run. */
  private lastOfRuns: T | undefined;
  private readonly budget: number;
  private disposed = false;

  constructor(private readonly opts: SpillOptions<T>) {
    this.budget = opts.budget ?? defaultBudget();
  }

  /** Number of records pushed. */
  get count(): number {
    return this.pushed;
  }

  /** Records held in memory (the rest are in run files). */
  get held(): number {
    return this.heldRecords.length;
  }

  /** How many sorted sources of run files a read merges (chains; see `chains`). */
  get chainCount(): number {
    return this.chains.length;
  }

  /** True once a run has been written (the records no longer all fit the budget). */
  get spilled(): boolean {
    return this.chains.length > 0;
  }

  push(t: T): void {
    this.heldRecords.push(t);
    this.heldSorted = false;
    this.pushed++;
    this.heldBytes += this.opts.codec.size(t) + 48;
    if (this.heldBytes >= this.budget) this.flush();
  }

  /** Array.prototype.sort is stable: records that compare equal stay in push order. */
  private sortHeld(): void {
    if (this.heldSorted) return;
    this.heldRecords.sort(this.opts.compare);
    this.heldSorted = true;
  }

  private flush(): void {
    this.sortHeld();
    const fd = (this.fd ??= openUnnamed(this.opts.dir));
    const run: Run = { start: this.written, end: this.written };
    // Records are copied into one chunk as they are encoded (an encoder may hand back a view
    // of its own buffer, valid until its next call), and the chunk written when full.
    let chunk = Buffer.allocUnsafe(READ_CHUNK);
    let used = 0;
    const write = () => {
      writeAll(fd, chunk.subarray(0, used), run.end);
      run.end += used;
      used = 0;
    };
    try {
      for (const t of this.heldRecords) {
        const body = this.opts.codec.encode(t);
        if (used + 4 + body.length > chunk.length) {
          write();
          if (4 + body.length > chunk.length) chunk = Buffer.allocUnsafe(4 + body.length);
        }
        chunk.writeUInt32LE(body.length, used);
        body.copy(chunk, used + 4);
        used += 4 + body.length;
      }
      if (used > 0) write();
    } finally {
      // A run cut short by a failed write is never read; the next one starts past its bytes.
      this.written = run.end;
    }
    const first = this.heldRecords[0];
    const chain = this.chains[this.chains.length - 1];
    if (chain && first !== undefined && this.opts.compare(this.lastOfRuns as T, first) <= 0) chain.push(run);
    else this.chains.push([run]);
    this.lastOfRuns = this.heldRecords[this.heldRecords.length - 1] ?? this.lastOfRuns;
    this.heldRecords = [];
    this.heldSorted = true;
    this.heldBytes = 0;
  }

  /** Every record pushed so far, sorted. May be called again, also after more pushes. */
  *sorted(): Generator<T> {
    if (this.disposed) throw new Error('SpillSorter: already disposed');
    // Once it has spilled, a sorter is read from disk alone: the records still held become the
    // last run, so a finished sorter holds no records while others fill (a build keeps several).
    if (this.chains.length > 0 && this.heldRecords.length > 0) this.flush();
    this.sortHeld();
    if (this.chains.length === 0) {
      for (const t of this.heldRecords) yield t;
      return;
    }
    // Each chain of runs is a sorted source; ties go to the earlier chain (chains are in push
    // order), which keeps the merge stable. The records still held became the last run above.
    const chunk = mergeChunk(this.budget, this.chains.length);
    const fd = this.fd!;
    // Every read is checked for a dispose() since the last: the descriptor is closed then, and
    // its number may be another file's by now.
    const live = () => {
      if (this.disposed) throw new Error('SpillSorter: disposed while it was read');
    };
    yield* merge(
      this.chains.map((c) => readChain(fd, [...c], this.opts.codec, chunk, live)),
      this.opts.compare,
    );
  }

  /** Frees the run file (closes its descriptor). Safe to call more than once. */
  dispose(): void {
    this.disposed = true;
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.chains.length = 0;
    this.lastOfRuns = undefined;
    this.heldRecords = [];
    this.heldSorted = true;
  }
}

/** A run: the byte range [start, end) of the sorter's run file. */
interface Run {
  start: number;
  end: number;
}

/** What open(2) says when `dir`'s filesystem or the kernel cannot make a file without a name. */
const NO_TMPFILE = new Set(['EOPNOTSUPP', 'EISDIR', 'EINVAL']);

/**
 * A new file in `dir`, open for reading and writing, that has no name: O_TMPFILE|O_EXCL (0600;
 * it can never be linked into a directory) where the filesystem allows, else openNamedUnlinked.
 */
export function openUnnamed(dir: string): number {
  try {
    return openat(AT_FDCWD, dir, tmpfileFlag() | fs.constants.O_RDWR | fs.constants.O_EXCL, 0o600);
  } catch (e) {
    if (!NO_TMPFILE.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
  }
  return openNamedUnlinked(dir);
}

/**
 * A new file in `dir`, open for reading and writing, with its name already gone: created
 * O_EXCL|O_NOFOLLOW (0600) under a random name, so that nothing planted there is opened, and
 * unlinked before anything is written to it. The name exists between the two calls.
 */
export function openNamedUnlinked(dir: string): number {
  const file = path.join(dir, `spill-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    fs.unlinkSync(file);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

function writeAll(fd: number, b: Buffer, at: number): void {
  for (let off = 0; off < b.length; ) off += fs.writeSync(fd, b, off, b.length - off, at + off);
}

/**
 * The records of a chain's runs, one run after the other, read by position from the run file
 * through one buffer (`chunk` bytes, larger only for a record that needs it): a merge holds a
 * buffer per chain, and refills reuse it. One generator for the whole chain: a record costs
 * one step, not two. `live` throws once the sorter is disposed.
 */
function* readChain<T>(fd: number, runs: Run[], codec: RecordCodec<T>, chunk: number, live: () => void): Generator<T> {
  let buf = Buffer.allocUnsafe(chunk);
  for (const run of runs) {
    let pos = run.start; // the run's next byte not yet in buf
    let start = 0; // unread bytes are buf[start, end)
    let end = 0;
    const need = (n: number): boolean => {
      while (end - start < n && pos < run.end) {
        if (start > 0) {
          buf.copy(buf, 0, start, end);
          end -= start;
          start = 0;
        }
        if (buf.length < n) {
          const bigger = Buffer.allocUnsafe(n);
          buf.copy(bigger, 0, 0, end);
          buf = bigger;
        }
        live();
        const got = fs.readSync(fd, buf, end, Math.min(buf.length - end, run.end - pos), pos);
        if (got === 0) throw new Error(`spill run at byte ${run.start} ends early, at ${pos}`);
        pos += got;
        end += got;
      }
      return end - start >= n;
    };
    for (;;) {
      if (!need(4)) break;
      const len = buf.readUInt32LE(start);
      if (!need(4 + len)) throw new Error(`spill run at byte ${run.start} is truncated`);
      const body = buf.subarray(start + 4, start + 4 + len);
      start += 4 + len;
      yield codec.decode(body);
    }
  }
}

/**
 * The records of sorted `sources` in one sorted sequence; records that compare equal come from
 * the earlier source first. A binary heap of source numbers, least head at the root, and a
 * gallop: the root's source goes on yielding while its records stay below the runner-up's
 * head, one comparison each. The sources are mostly long stretches in order (a layer's
 * entries, the chains of a plan), so most records never touch the heap, and no record is
 * wrapped in an object of its own.
 */
export function* merge<T>(sources: Array<Iterator<T>>, compare: (a: T, b: T) => number): Generator<T> {
  const heads: T[] = new Array<T>(sources.length);
  const heap: number[] = [];
  /** Source a's head goes before source b's. */
  const before = (a: number, b: number): boolean => {
    const c = compare(heads[a]!, heads[b]!);
    return c < 0 || (c === 0 && a < b);
  };
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      let m = i;
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
      if (l + 1 < heap.length && before(heap[l + 1]!, heap[m]!)) m = l + 1;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let s = 0; s < sources.length; s++) {
    const n = sources[s]!.next();
    if (n.done) continue;
    heads[s] = n.value;
    heap.push(s);
    for (let i = heap.length - 1; i > 0 && before(heap[i]!, heap[(i - 1) >> 1]!); i = (i - 1) >> 1) {
      [heap[i], heap[(i - 1) >> 1]] = [heap[(i - 1) >> 1]!, heap[i]!];
    }
  }
  while (heap.length > 0) {
    const s = heap[0]!;
    const src = sources[s]!;
    yield heads[s]!;
    let n = src.next();
    if (heap.length === 1) {
      for (; !n.done; n = src.next()) yield n.value;
      return;
    }
    // The runner-up is the lesser child of the root; s yields on while it stays ahead of it.
    const r = heap.length > 2 && before(heap[2]!, heap[1]!) ? heap[2]! : heap[1]!;
    const rival = heads[r]!;
    for (; !n.done; n = src.next()) {
      const c = compare(n.value, rival);
      if (c > 0 || (c === 0 && s > r)) break;
      yield n.value;
    }
    if (n.done) heap[0] = heap.pop()!;
    else heads[s] = n.value;
    siftDown(0);
  }
}

/**
 * sha256 of a stream, computed off the main thread once the stream is large.
 *
 * Every layer an output reads and every layer an import writes is hashed as it streams. On the
 * main thread that was the largest single cost of a warm re-squash and of an import (about
 * 0.5 ms per MiB with the CPU's SHA instructions), on the thread that also parses the tar and
 * feeds the compression workers. Here a large stream is hashed on libuv's thread pool through
 * the addon (native/sha256.c), a slot at a time, overlapping that work on the other core. Until
 * 2026-11 one worker thread per process did it; a worker is a JS isolate of its own, about 40 ms
 * of CPU to start and a message each way per slot, on machines where two cores are all there is.
 *
 * A stream its caller knows to fit one slot (a size hint: records, manifests, the smallest
 * layers) is hashed on the calling thread as it comes: on the pool it would be one job the
 * caller only waits for. Any other stream goes to the pool. (The limit was 32 MiB while the
 * other side was a worker thread; with the pool, a 20 MiB import hashed on the main thread
 * spent 13 ms of its 160 there: spec/decisions.md.) update() copies the bytes into the
 * stream's current slot (a copy costs a fifth of the hash); a full slot is queued, and the
 * stream's slots are hashed one after the other, in order, each on whichever pool thread is
 * free. Slots come from one process-wide set of SLOTS buffers of SLOT bytes, made as needed and
 * reused; when none is free, update() fills a buffer of its own instead. A stream with BEHIND
 * slots waiting is behind: a producer that awaits backlog() before reading more holds at most
 * BEHIND + 1 slots, and one or two such streams never need a buffer of their own. (The limit is
 * the stream's own, not the set's: streams that each hold a slot half filled never wait on
 * one another.)
 *
 * Without the addon (or a libcrypto it can find) every stream is hashed on the calling thread.
 *
 * Contract: update() never keeps the caller's buffer (it is copied before update returns);
 * updateOwned() hashes the caller's buffer where it is and says when it is the caller's again;
 * digest() resolves to the lowercase hex digest, once; abort() drops the stream (always safe,
 * also after digest).
 */
import { createHash, hash, type Hash } from 'node:crypto';
import { addon, type NativeAddon } from './binding.js';

/** The slots shared by every stream of the process: SLOTS of SLOT bytes. */
const SLOTS = 8;
const SLOT = 1 << 20;
/** Streams announced as no longer than this are hashed on the calling thread as they come. */
const SMALL_STREAM = SLOT;
/** A stream with this many slots handed over and not yet hashed is behind (backlog()). */
const BEHIND = 4;

/** sha256Short's state: the addon's call (null: not there), and the slab digests are cut from. */
const SLAB = 32 * 1024;
let slab = Buffer.allocUnsafe(0);
let slabUsed = SLAB;
let native: ((data: Uint8Array, out: Uint8Array) => void) | null | undefined;

/**
 * sha256 of one short buffer (a small file, a file's tail) on the calling thread: through the
 * addon's low-level libcrypto call it costs half what Node's one-call hash does for a
 * kilobyte, whose setup outweighs the bytes (0.63 against 1.3 µs here); Node's hash where the
 * addon cannot. The digest is a view of a slab that is never reused, so it may be kept.
 */
export function sha256Short(data: Uint8Array): Buffer {
  if (native === undefined) {
    try {
      const a = addon();
      a.sha256Into(new Uint8Array(0), Buffer.alloc(32));
      native = a.sha256Into;
    } catch {
      native = null;
    }
  }
  if (native === null) return hash('sha256', data, 'buffer') as unknown as Buffer;
  if (slabUsed === SLAB) {
    slab = Buffer.allocUnsafe(SLAB);
    slabUsed = 0;
  }
  const out = slab.subarray(slabUsed, slabUsed + 32);
  slabUsed += 32;
  native(data, out);
  return out;
}

/** The addon's stream calls, or null when this process hashes every stream on the calling thread. */
let streams: Pick<NativeAddon, 'hashOpen' | 'hashUpdate' | 'hashDigest'> | null | undefined;
function streamCalls(): typeof streams {
  if (streams === undefined) {
    try {
      const a = addon();
      a.hashDigest(a.hashOpen());
      streams = a;
    } catch {
      streams = null;
    }
  }
  return streams;
}

/** The process's slots: made as needed up to SLOTS, handed back once hashed. */
const slots = {
  made: 0,
  free: [] as Uint8Array[],
  take(): Uint8Array | undefined {
    if (this.free.length > 0) return this.free.pop();
    if (this.made === SLOTS) return undefined;
    this.made++;
    return new Uint8Array(SLOT);
  },
  give(b: Uint8Array): void {
    this.free.push(b);
  },
};

export class StreamHash {
  /** The hash, when this stream is hashed here (a size hint of at most SMALL_STREAM bytes, or no addon). */
  private readonly here: Hash | undefined;
  /** The addon's stream, when it is hashed on the pool. */
  private readonly stream: unknown;
  /** The updates queued so far, in order: settles once every slot handed over is hashed. */
  private chain: Promise<void> = Promise.resolve();
  /** The slot being filled (a process slot, or a buffer of its own when none was free) and how far. */
  private fill: { bytes: Uint8Array; pooled: boolean } | undefined;
  private filled = 0;
  private ended = false;
  /** Slots handed over and not yet hashed, and who waits for that to drop below BEHIND. */
  private queued = 0;
  private caughtUp: (() => void) | undefined;

  /** `sizeHint`: the stream's length, or a bound on it, when the caller knows it. */
  constructor(sizeHint?: number) {
    const calls = sizeHint !== undefined && sizeHint <= SMALL_STREAM ? null : streamCalls();
    if (calls) this.stream = calls.hashOpen();
    else this.here = createHash('sha256');
  }

  update(chunk: Uint8Array): void {
    if (this.ended) throw new Error('StreamHash: update after digest or abort');
    if (chunk.byteLength === 0) return;
    if (this.here) this.here.update(chunk);
    else this.copy(chunk);
  }

  /**
   * Hashes `bytes` without copying them: the caller leaves them unchanged until `release` is
   * called (at once when the stream is hashed here, else once they are hashed), and must not
   * hand them to anyone who could (a transfer to another thread detaches them). For a producer
   * whose buffers are its own, such as a blob being written: one copy of every byte less.
   */
  updateOwned(bytes: Uint8Array, release: () => void): void {
    if (this.ended) throw new Error('StreamHash: update after digest or abort');
    if (this.here || bytes.byteLength === 0) {
      this.here?.update(bytes);
      release();
      return;
    }
    this.hand();
    this.queue(bytes, release);
  }

  /**
   * Undefined, or a promise to await before producing more: the hashing of this stream is
   * behind. A producer that awaits it holds at most BEHIND + 1 slots.
   */
  backlog(): Promise<void> | undefined {
    if (this.queued < BEHIND) return undefined;
    return new Promise<void>((resolve) => {
      const before = this.caughtUp;
      this.caughtUp = () => {
        before?.();
        resolve();
      };
    });
  }

  /** The hex digest of every byte given. */
  async digest(): Promise<string> {
    if (this.ended) throw new Error('StreamHash: digest twice');
    this.ended = true;
    if (this.here) return this.here.digest('hex');
    this.hand();
    await this.chain;
    return streams!.hashDigest(this.stream);
  }

  /** Drops the stream (its bytes are no longer needed); slots queued are handed back once hashed. */
  abort(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.fill?.pooled) slots.give(this.fill.bytes);
    this.fill = undefined;
  }

  private copy(chunk: Uint8Array): void {
    for (let off = 0; off < chunk.byteLength; ) {
      if (!this.fill) {
        const b = slots.take();
        this.fill = b ? { bytes: b, pooled: true } : { bytes: new Uint8Array(SLOT), pooled: false };
      }
      const n = Math.min(SLOT - this.filled, chunk.byteLength - off);
      this.fill.bytes.set(n === chunk.byteLength ? chunk : chunk.subarray(off, off + n), this.filled);
      this.filled += n;
      off += n;
      if (this.filled === SLOT) this.hand();
    }
  }

  /** Queues the filled part of the current slot; the slot goes back once it is hashed. */
  private hand(): void {
    const f = this.fill;
    if (!f || this.filled === 0) return;
    const bytes = f.bytes.subarray(0, this.filled);
    this.fill = undefined;
    this.filled = 0;
    this.queue(bytes, () => {
      if (f.pooled) slots.give(f.bytes);
    });
  }

  /** Hashes `bytes` after everything queued before; `release` once they are hashed (or never will be). */
  private queue(bytes: Uint8Array, release: () => void): void {
    const stream = this.stream;
    this.queued++;
    const done = () => {
      release();
      if (--this.queued < BEHIND && this.caughtUp) {
        const resolve = this.caughtUp;
        this.caughtUp = undefined;
        resolve();
      }
    };
    // After a failed update the rest are not hashed: digest() rejects with the first failure.
    this.chain = this.chain.then(() => streams!.hashUpdate(stream, bytes)).finally(done);
    this.chain.catch(() => undefined);
  }
}

/**
 * sha256 of a stream, computed off the main thread once the stream is large.
 *
 * Every layer an output reads, every layer an import writes and every image written is hashed
 * as it streams. On the main thread that was the largest single cost of a warm re-squash and
 * of an import (about 0.5 ms per MiB with the CPU's SHA instructions), on the thread that also
 * parses the tar and feeds the compression workers. Here one worker thread per process hashes
 * every large stream instead, overlapping that work on the other core.
 *
 * A stream its caller knows to be at most SMALL_STREAM bytes (a size hint: records, manifests,
 * small layers) is hashed on the calling thread as it comes: starting the worker thread costs
 * more CPU than hashing a few MiB. Any other stream goes to the worker. Bytes cross through a
 * ring of SLOTS shared slots of SLOT bytes, made once per process: update() copies into the
 * current slot (a copy costs a fifth of the hash), a full slot is posted by index and comes
 * back free once hashed.
 * Nothing is allocated per chunk on either side, so memory stays at the ring's size (a
 * SharedArrayBuffer posted per chunk stays alive until the worker's heap is collected, which
 * on a thread that allocates almost nothing is rarely: a 650 MB stack held 1 GB that way).
 * When no slot is free, update() hands over a copy of its own instead; a producer that awaits
 * backlog() before reading more never needs one.
 *
 * Messages on one port arrive in order, so the worker hashes the bytes in the order given.
 *
 * Contract: update() never keeps the caller's buffer (it is copied before update returns);
 * digest() resolves to the lowercase hex digest, once; abort() drops the stream (always safe,
 * also after digest). A worker that fails rejects the digests waiting on it; the next stream
 * starts a new worker.
 */
import { createHash, hash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { addon } from './binding.js';

/** Streams announced as no longer than this are hashed on the calling thread as they come. */
const SMALL_STREAM = 32 << 20;
/** The ring: SLOTS slots of SLOT bytes shared with the worker. */
const SLOTS = 8;
const SLOT = 1 << 20;

// The worker: plain CommonJS evaluated from a string, so it needs no module loader (it runs the
// same from dist/ and from source under tsx). In: [op, stream id, slot | buffer, length];
// out: [0, slot] once a slot's bytes are hashed (-1 for a buffer of its own), [id, hex].
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = workerData.ring;
const slot = workerData.slot;
const open = new Map();
const hashOf = (id) => {
  let h = open.get(id);
  if (!h) open.set(id, (h = createHash('sha256')));
  return h;
};
parentPort.on('message', ([op, id, where, len]) => {
  if (op === 'u') {
    hashOf(id).update(new Uint8Array(ring, where * slot, len));
    parentPort.postMessage([0, where]);
  } else if (op === 'b') {
    hashOf(id).update(new Uint8Array(where, 0, len));
    parentPort.postMessage([0, -1]);
  } else if (op === 'd') {
    const h = hashOf(id);
    open.delete(id);
    parentPort.postMessage([id, h.digest('hex')]);
  } else {
    open.delete(id);
  }
});
`;

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
/**
 * The resource limits of strata's worker threads (this one and the image writers' pool): a
 * small young generation. By default each thread grows it to 16 MiB or more, for threads that
 * hold little but short-lived buffers; on the bench's cold zstd squash (two compression
 * workers and this one) the limit took peak RSS from 312 to about 270 MiB at the same speed.
 */
export const WORKER_LIMITS = { maxYoungGenerationSizeMb: 2 };

interface Waiter {
  resolve(hex: string): void;
  reject(e: unknown): void;
}

/** The process's hashing worker and its ring; the worker holds the process open only while someone waits on it. */
class HashWorker {
  private worker: Worker | undefined;
  private readonly ring = new SharedArrayBuffer(SLOTS * SLOT);
  private free: number[] = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);
  private readonly waiting = new Map<number, Waiter>();
  private slotWaiters: Array<() => void> = [];
  private nextId = 1;
  /** Counts workers that failed: a stream begun on an earlier one can no longer be finished. */
  generation = 0;

  open(): number {
    return this.nextId++;
  }

  /** A free slot's index and its bytes, or undefined when every slot is in flight. */
  takeSlot(): { index: number; bytes: Uint8Array } | undefined {
    const index = this.free.pop();
    return index === undefined ? undefined : { index, bytes: new Uint8Array(this.ring, index * SLOT, SLOT) };
  }

  returnSlot(index: number): void {
    this.free.push(index);
    if (this.slotWaiters.length > 0) {
      const ws = this.slotWaiters;
      this.slotWaiters = [];
      for (const resolve of ws) resolve();
    }
    this.settle();
  }

  post(msg: unknown[], transfer?: ArrayBuffer[]): void {
    this.start().postMessage(msg, transfer);
  }

  /** Resolves once a slot is free; undefined when one is. */
  slotFree(): Promise<void> | undefined {
    if (this.free.length > 0) return undefined;
    this.start().ref();
    return new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  digest(id: number): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const w = this.start();
      w.ref();
      w.postMessage(['d', id]);
    });
  }

  /** Lets the process exit when no one waits on the worker. */
  private settle(): void {
    if (this.waiting.size === 0 && this.slotWaiters.length === 0) this.worker?.unref();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { ring: this.ring, slot: SLOT }, resourceLimits: WORKER_LIMITS });
    w.unref();
    w.on('message', ([id, value]: [number, number | string]) => {
      if (id === 0) {
        if ((value as number) >= 0) this.returnSlot(value as number);
        return;
      }
      const waiter = this.waiting.get(id);
      this.waiting.delete(id);
      this.settle();
      waiter?.resolve(value as string);
    });
    const fail = (e: unknown) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.generation++;
      // Slots in flight died with the worker's queue: all free again.
      this.free = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);
      const waiters = [...this.waiting.values()];
      this.waiting.clear();
      const ws = this.slotWaiters;
      this.slotWaiters = [];
      for (const resolve of ws) resolve();
      for (const waiter of waiters) waiter.reject(e);
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`the sha256 worker exited (code ${code})`)));
    this.worker = w;
    return w;
  }
}

let shared: HashWorker | undefined;

export class StreamHash {
  /** The hash, when this stream is hashed here (a size hint of at most SMALL_STREAM bytes). */
  private readonly here: Hash | undefined;
  private readonly worker: HashWorker | undefined;
  private readonly id: number = 0;
  private readonly generation: number = 0;
  /** Bytes handed to the worker: none, and the digest is the empty stream's, with no worker started. */
  private sent = 0;
  /** The slot being filled (or a buffer of its own when no slot was free) and how far. */
  private fill: { index: number; bytes: Uint8Array } | undefined;
  private filled = 0;
  private ended = false;

  /** `sizeHint`: the stream's length, or a bound on it, when the caller knows it. */
  constructor(sizeHint?: number) {
    if (sizeHint !== undefined && sizeHint <= SMALL_STREAM) {
      this.here = createHash('sha256');
      return;
    }
    this.worker = shared ??= new HashWorker();
    this.id = this.worker.open();
    this.generation = this.worker.generation;
  }

  update(chunk: Uint8Array): void {
    if (this.ended) throw new Error('StreamHash: update after digest or abort');
    if (chunk.byteLength === 0) return;
    if (this.here) this.here.update(chunk);
    else this.send(chunk);
  }

  /**
   * Undefined, or a promise to await before producing more: every slot is in flight, the
   * worker is behind. A producer that awaits it holds memory at the ring's size.
   */
  backlog(): Promise<void> | undefined {
    return this.worker?.slotFree();
  }

  /** The hex digest of every byte given. */
  async digest(): Promise<string> {
    if (this.ended) throw new Error('StreamHash: digest twice');
    this.ended = true;
    if (this.here) return this.here.digest('hex');
    if (this.sent === 0) return createHash('sha256').digest('hex');
    this.post();
    this.alive();
    return this.worker!.digest(this.id);
  }

  /** Drops the stream (its bytes are no longer needed). */
  abort(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.worker || this.sent === 0) return;
    if (this.fill && this.fill.index >= 0 && this.worker.generation === this.generation) this.worker.returnSlot(this.fill.index);
    this.fill = undefined;
    this.worker.post(['x', this.id]);
  }

  /** Throws when the worker that holds this stream's state has failed since it began. */
  private alive(): void {
    if (this.worker!.generation !== this.generation) throw new Error('the sha256 worker failed while hashing a stream');
  }

  private send(chunk: Uint8Array): void {
    this.alive();
    this.sent += chunk.byteLength;
    for (let off = 0; off < chunk.byteLength; ) {
      this.fill ??= this.worker!.takeSlot() ?? { index: -1, bytes: new Uint8Array(SLOT) };
      const n = Math.min(SLOT - this.filled, chunk.byteLength - off);
      this.fill.bytes.set(chunk.subarray(off, off + n), this.filled);
      this.filled += n;
      off += n;
      if (this.filled === SLOT) this.post();
    }
  }

  /** Hands the filled part of the current slot to the worker. */
  private post(): void {
    const f = this.fill;
    if (!f || this.filled === 0) return;
    if (f.index >= 0) this.worker!.post(['u', this.id, f.index, this.filled]);
    else this.worker!.post(['b', this.id, f.bytes.buffer, this.filled], [f.bytes.buffer as ArrayBuffer]);
    this.fill = undefined;
    this.filled = 0;
  }
}

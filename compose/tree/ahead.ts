/**
 * Files created ahead of their writing. Creating a file is, with copying its data, the kernel's
 * costly part of writing a tree (on ext4 without a journal, within minutes of large deletions,
 * the inode allocator's scan past recently freed inodes is most of GNU tar's time), and a tree writer that creates each file just before writing it waits
 * for that on the JS thread. Here the writer announces the files it will write, in the order
 * it will write them (`want`), and they are created in batches on libuv's pool, two batches at
 * a time, while the JS thread reads layers and writes the files created before: `take` gives
 * each file's descriptor when its turn comes.
 *
 * A file is created exactly as TreeWriter.createFile creates it (openBeneath, 0600, O_EXCL):
 * the same safety, only on another thread. A creation that failed in a batch is done again in
 * place by `create` (the writer's createFile), which throws the error the writer would have
 * thrown, or succeeds. `settle` waits for every batch still running and closes what was never
 * taken; call it before the root descriptor is closed.
 */
import * as fs from 'node:fs';
import { constants as C } from 'node:fs';
import { openBeneathBatch } from '../../native/fsops.js';

/** Files per batch: one pool round trip creates this many. */
const BATCH = 32;
/** Batches running at once (libuv's pool has four threads; layer reads need the others). */
const RUNNING = 2;
/** How far ahead of the file being written the writer announces files. */
export const AHEAD_DEPTH = BATCH * (RUNNING + 1);

interface Batch {
  paths: string[];
  fds?: Int32Array;
  started: boolean;
  done: Promise<void>;
  start(): void;
}

interface Slot {
  path: string;
  batch: Batch;
  index: number;
}

export class CreateAhead {
  private readonly queue: Slot[] = [];
  private open: Batch | undefined;
  private readonly waiting: Batch[] = [];
  /** The batches running on the pool. */
  private readonly started = new Set<Batch>();
  private settled = false;

  constructor(
    private readonly root: number,
    /** Creates one file in place, throwing the writer's error: TreeWriter.createFile. */
    private readonly create: (p: string) => number,
  ) {}

  /** Announces that `p` is the next file to be written (after those announced before). */
  want(p: string): void {
    const batch = (this.open ??= this.newBatch());
    this.queue.push({ path: p, batch, index: batch.paths.length });
    batch.paths.push(p);
    if (batch.paths.length >= BATCH) this.cut();
  }

  /**
   * The descriptor of the new file `p`. Files announced before `p` and not taken are given up
   * (closed; they stay empty: the caller's build is failing, see forEachPlannedFile); a path
   * never announced is created in place.
   */
  async take(p: string): Promise<number> {
    const at = this.queue[0]?.path === p ? 0 : this.queue.findIndex((s) => s.path === p);
    if (at < 0) return this.create(p);
    const dropped = this.queue.splice(0, at + 1);
    const slot = dropped.pop()!;
    if (slot.batch === this.open) this.cut();
    for (const s of dropped) await this.release(s);
    await slot.batch.done;
    const fd = slot.batch.fds![slot.index]!;
    return fd >= 0 ? fd : this.create(p);
  }

  /** Waits for the batches still running and closes every descriptor not taken. */
  async settle(): Promise<void> {
    this.settled = true;
    await Promise.all([...this.started].map((b) => b.done));
    for (const s of this.queue.splice(0)) if (s.batch.started) await this.release(s);
  }

  private async release(s: Slot): Promise<void> {
    await s.batch.done;
    const fd = s.batch.fds?.[s.index] ?? -1;
    if (fd >= 0) fs.closeSync(fd);
  }

  private newBatch(): Batch {
    let resolve!: () => void;
    const batch: Batch = {
      paths: [],
      started: false,
      done: new Promise<void>((r) => (resolve = r)),
      start: () => {
        batch.started = true;
        this.started.add(batch);
        openBeneathBatch(this.root, batch.paths, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600).then(
          (fds) => (batch.fds = fds),
          () => (batch.fds = new Int32Array(batch.paths.length).fill(-1)),
        ).finally(() => {
          this.started.delete(batch);
          resolve();
          this.pump();
        });
      },
    };
    return batch;
  }

  /** Closes the batch being filled and starts what may run. */
  private cut(): void {
    if (this.open === undefined) return;
    this.waiting.push(this.open);
    this.open = undefined;
    this.pump();
  }

  private pump(): void {
    while (!this.settled && this.started.size < RUNNING && this.waiting.length > 0) this.waiting.shift()!.start();
  }
}

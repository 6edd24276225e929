/**
 * Files whose contents this thread has in memory (read out of an image), written into the
 * tree a batch at a time by a thread of libuv's pool (native/files.ts): creating, writing and
 * finishing a small file is a handful of system calls, which cost more than reading it out of
 * the image did when they were made here one by one. One batch is written while the next
 * fills, so the two cores share the work.
 *
 * Owner, mode, access ACL and mtime follow the writer's own policy (TreeWriter.plainFinish); a
 * file it cannot finish there (xattrs, say) comes back open and TreeWriter.finishFile finishes
 * it here.
 *
 * Memory: at most two batches, of BATCH_FILES files or BATCH_BYTES of content each (and the
 * files of the readers in flight, waiting for room), and the buffers a batch is packed into
 * for the pool (as large as the largest batch). A file larger than HELD_MAX is not held: the
 * caller writes it as it reads it.
 */
import { BatchBuffers, writeFiles, type HeldFile } from '../../native/files.js';
import type { LayerEntry } from '../../store/index.js';
import type { TreeWriter } from './writer.js';

/** The largest file held; larger ones are written as they are read. */
export const HELD_MAX = 1 << 20;
const BATCH_FILES = 512;
const BATCH_BYTES = 8 << 20;

interface Batch {
  files: HeldFile[];
  entries: LayerEntry[];
  refused: Array<(() => void) | undefined>;
  bytes: number;
  /** Settles once the batch is written and finished. */
  written: Promise<void>;
  done(error?: unknown): void;
}

function newBatch(): Batch {
  let done!: (error?: unknown) => void;
  const written = new Promise<void>((resolve, reject) => {
    done = (error) => (error === undefined ? resolve() : reject(error));
  });
  // A batch nobody waits on must not fail the process: its failure also reaches flush().
  written.catch(() => {});
  return { files: [], entries: [], refused: [], bytes: 0, written, done };
}

export class HeldFiles {
  private batch = newBatch();
  /** The batch on the pool, if any: settles when it is written and finished (rejects when it failed). */
  private running: Promise<void> = Promise.resolve();
  /**
   * Settles when the batch before the last one sent is done. Until then the last one waits to
   * go to the pool, and no file is added: however fast files come (readers of several files at
   * once, reads the page cache answers at once), two batches at most.
   */
  private room: Promise<void> = Promise.resolve();
  /** What every batch is packed into: one batch is written at a time (send). */
  private readonly buffers = new BatchBuffers();

  constructor(private readonly w: TreeWriter) {}

  /**
   * Holds file `e` (its content `pieces`, its size `size`; see HeldFile), once there is room.
   * When it fills the batch, the batch goes to the pool. Gives the promise that it is
   * written, for wait().
   */
  async hold(e: LayerEntry, pieces: HeldFile['pieces'], size: number): Promise<{ written: Promise<void> }> {
    await this.room;
    const b = this.batch;
    const finish = this.w.plainFinish(e);
    b.files.push({ path: e.path, pieces, size, finish });
    b.entries.push(e);
    b.refused.push(finish?.refused);
    for (const p of pieces) b.bytes += p.data.length;
    if (b.files.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) {
      this.room = this.send();
      await this.room;
    }
    return { written: b.written };
  }

  /** Waits until a held file is written (a hard link to it comes): its batch goes now if it is still filling. */
  async wait(written: Promise<void>): Promise<void> {
    if (written === this.batch.written) this.room = this.send();
    await written;
  }

  /** Writes what is held; resolves once every batch is written, or rejects with the first failure. */
  async flush(): Promise<void> {
    if (this.batch.files.length > 0) void this.send();
    await this.running;
  }

  /** Waits for the batches on the pool (whatever came of them): before the tree is discarded. */
  async settled(): Promise<void> {
    await this.running.catch(() => {});
  }

  /**
   * Queues the filling batch behind the one on the pool (a chain, so that `running` is always
   * the last) and starts a new one; gives the batch before: the room for the next.
   */
  private send(): Promise<void> {
    const b = this.batch;
    this.batch = newBatch();
    const before = this.running;
    const p = before.then(
      () => this.write(b),
      (e: unknown) => {
        b.done(e);
        throw e;
      },
    );
    // Its failure is thrown where it is awaited (hold, flush, wait), not as an unhandled rejection meanwhile.
    p.catch(() => {});
    this.running = p;
    return before;
  }

  private async write(b: Batch): Promise<void> {
    try {
      const r = await writeFiles(this.w.root, b.files, this.buffers);
      this.w.settleBatch(b.entries, b.refused, r);
      b.done();
    } catch (e) {
      b.done(e);
      throw e;
    }
  }
}

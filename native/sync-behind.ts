/**
 * A file kept durable a step behind its writer: once `step` more bytes were written to it,
 * fdatasync on a thread of libuv's pool, one at a time, while the writer goes on. The
 * closing fsync, which alone makes the file durable, then has only the last step left.
 *
 * Why a sync and not a writeback hint (sync_file_range): a disk with a volatile write cache
 * (or a virtual one, or a network filesystem) still holds what a hint sent it, and the closing
 * fsync's flush writes all of it out at once. Measured on the benchmark's host: the closing
 * fsync of the EROFS re-build's 312 MB image 0.40 s → 13 ms. It is for a writer slower than
 * the disk (an image, a blob through the page cache): among the writes of one as fast as the
 * disk (a large blob written with O_DIRECT) the flushes held the writes back
 * (spec/decisions.md, Caches and speed).
 *
 * Every sync is a hint: its failure is left for the closing fsync to report. The caller
 * closes the file only after `settled()`.
 */
import type { FileHandle } from 'node:fs/promises';

/** A file is synced once this many more bytes were written to it. */
export const SYNC_STEP = 16 << 20;

export class SyncBehind {
  /** Bytes written since the last sync started. */
  private unsynced = 0;
  private running: Promise<void> | undefined;

  constructor(
    private readonly fh: FileHandle,
    private readonly step = SYNC_STEP,
  ) {}

  /** A write of `n` more bytes returned. */
  wrote(n: number): void {
    this.unsynced += n;
    if (this.unsynced < this.step || this.running) return;
    this.unsynced = 0;
    this.running = this.fh
      .datasync()
      .catch(() => undefined)
      .finally(() => (this.running = undefined));
  }

  /** Resolves once no sync started here is at work on the file (before it is closed). */
  async settled(): Promise<void> {
    await this.running;
  }
}

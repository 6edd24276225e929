/**
 * A file read in sequence on a thread of its own, ahead of the thread that parses it
 * (native/readahead.c): reading a large archive then costs the parsing thread no read(2) at
 * all while the reader keeps ahead, and the page cache's copying goes to the other core.
 */
import { addon } from './binding.js';

/** Buffers in the ring, and the bytes of each. */
const SLOTS = 16;
const SLOT = 256 * 1024;

export class ReadAhead {
  private readonly slots: Buffer[];
  private next = 0;
  private open = true;

  private constructor(private readonly handle: unknown, slots: Buffer[]) {
    this.slots = slots;
  }

  /**
   * Reads [from, end) of `fd` (which the caller keeps open until close()); undefined where the
   * addon is not built: the caller reads for itself.
   */
  static start(fd: number, from: number, end: number): ReadAhead | undefined {
    let a;
    try {
      a = addon();
    } catch {
      return undefined;
    }
    const slots = Array.from({ length: SLOTS }, () => Buffer.allocUnsafeSlow(SLOT));
    return new ReadAhead(a.readAheadOpen(fd, from, end, slots), slots);
  }

  /**
   * The next bytes of the file, null at its end. The chunk is a view of the ring, intact until
   * the take after the next (the chunk before the last one is read over then).
   */
  take(): Buffer | null {
    const n = addon().readAheadTake(this.handle);
    if (n === 0) return null;
    const b = this.slots[this.next]!;
    this.next = (this.next + 1) % SLOTS;
    return n === b.length ? b : b.subarray(0, n);
  }

  /** Drops what was read ahead; the next take gives the bytes from `pos`. */
  seek(pos: number): void {
    addon().readAheadSeek(this.handle, pos);
  }

  /** Stops the reading thread (and waits for it); the fd is the caller's to close after. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    addon().readAheadClose(this.handle);
  }
}

/**
 * The children of a directory the image writers hold open (its listing is written when it
 * closes, after its subdirectories'), given back in the order they came. A directory of a few
 * thousand names keeps them as an array; past `HELD` they go through a SpillSorter used as a
 * queue (every record compares equal, so a read gives them back in push order), which writes
 * them to its run file past its budget. So a directory of a million files costs the writer
 * the sorter's budget, not a million objects (a SquashFS image of one such directory peaked at
 * 459 MiB, an EROFS image at 391 MiB; spec/decisions.md, Caches and speed).
 */
import { SpillSorter, type RecordCodec } from '../../../store/index.js';

/** Names an open directory keeps as objects before they go to the queue. */
const HELD = 4096;

export class WideList<T> {
  private held: T[] = [];
  private queue: SpillSorter<T> | undefined;
  private n = 0;

  /** `dir`: where the queue's run file goes (the writer's scratch directory). */
  constructor(
    private readonly codec: RecordCodec<T>,
    private readonly dir: string,
  ) {}

  get length(): number {
    return this.n;
  }

  push(t: T): void {
    this.n++;
    if (this.queue) {
      this.queue.push(t);
      return;
    }
    this.held.push(t);
    if (this.held.length < HELD) return;
    this.queue = new SpillSorter<T>({ compare: () => 0, codec: this.codec, dir: this.dir });
    for (const h of this.held) this.queue.push(h);
    this.held = [];
  }

  /** Every record pushed, in push order (it may be read more than once). */
  *[Symbol.iterator](): Generator<T> {
    if (this.queue) yield* this.queue.sorted();
    else yield* this.held;
  }

  /** Frees the queue's run file. Safe to call more than once. */
  dispose(): void {
    this.queue?.dispose();
    this.queue = undefined;
    this.held = [];
  }
}

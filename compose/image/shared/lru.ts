/**
 * The readers' small caches of decoded blocks (metadata, fragments, extents, xattr sets).
 *
 * What is kept is the load itself, not only its result: readers run several files at once
 * (compose/tree/image.ts keeps a few in flight), and files that share a block ask for it
 * together. Each block is read and decompressed once; everyone waiting shares that one load.
 * A load that fails is dropped, so the next asker tries again and gets its own error.
 */
export class LoadCache<K, V> {
  private readonly map = new Map<K, Promise<V>>();
  /**
   * The key asked for last, which is already the most recently used: most asks are for the
   * block of the ask before (a run of inodes, a directory's listing), and moving it to the
   * end of the map again (a delete and a set) was most of the cache's cost.
   */
  private last: K | undefined;

  /** Keeps the `limit` most recently used values. */
  constructor(private readonly limit: number) {}

  /** The value for `k`: kept, already loading, or loaded now by `load`. */
  get(k: K, load: () => Promise<V>): Promise<V> {
    const kept = this.map.get(k);
    if (kept !== undefined) {
      if (k !== this.last) {
        this.map.delete(k);
        this.map.set(k, kept);
        this.last = k;
      }
      return kept;
    }
    const p = load();
    this.map.set(k, p);
    this.last = k;
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value as K);
    p.catch(() => {
      if (this.map.get(k) === p) this.map.delete(k);
    });
    return p;
  }
}

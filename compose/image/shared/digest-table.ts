/**
 * Two numbers per distinct content, by the first 16 bytes of the content's sha256: where the
 * image writers find an earlier copy of a tail or a file (SquashFS: fragment index and offset;
 * EROFS: where a file's extents are recorded).
 *
 * An open-addressing table in one typed array, 24 bytes a slot (four words of key, two of
 * value), kept at most three quarters full and grown by half, so a million distinct contents
 * cost about 32 MiB, and growing never holds more than 2.5 times the live slots (a writer told
 * how many files to expect sizes it once and never grows it). It stops
 * taking new keys at 2^20 (contents after that are stored again), a choice that depends only on
 * the order of the calls, so images stay deterministic. `release()` gives the memory back once
 * a writer has placed its last content.
 */
export class DigestTable {
  /** Keys taken at most; after that `set` ignores new keys. */
  static readonly MAX_KEYS = 1 << 20;
  private static readonly WORDS = 6;
  private static readonly MIN_SLOTS = 4096;
  private slots: number;
  private used = 0;
  /** Per slot: key words 0–3, then the two values, the first stored plus one (0: empty). */
  private table: Uint32Array;

  /** `expected`: how many keys are likely to come (sizes the table once; 0 = start small and grow). */
  constructor(expected = 0) {
    this.slots = Math.max(DigestTable.MIN_SLOTS, Math.ceil((Math.min(expected, DigestTable.MAX_KEYS) * 4) / 3) + 1);
    this.table = new Uint32Array(this.slots * DigestTable.WORDS);
  }

  /** Keys held; `set` of a new key is ignored once this reaches MAX_KEYS. */
  get size(): number {
    return this.used;
  }

  has(digest: Buffer): boolean {
    return this.table[this.find(digest) * DigestTable.WORDS + 4] !== 0;
  }

  get(digest: Buffer): [number, number] | undefined {
    const at = this.find(digest) * DigestTable.WORDS;
    const a = this.table[at + 4]!;
    return a === 0 ? undefined : [a - 1, this.table[at + 5]!];
  }

  set(digest: Buffer, a: number, b: number): void {
    if (a >= 0xffffffff) throw new RangeError(`DigestTable: value ${a} out of range`);
    let at = this.find(digest) * DigestTable.WORDS;
    if (this.table[at + 4] === 0) {
      if (this.used >= DigestTable.MAX_KEYS) return;
      if ((this.used + 1) * 4 > this.slots * 3) {
        this.grow();
        at = this.find(digest) * DigestTable.WORDS;
      }
      this.used++;
      for (let k = 0; k < 4; k++) this.table[at + k] = digest.readUInt32LE(k * 4);
    }
    this.table[at + 4] = a + 1;
    this.table[at + 5] = b;
  }

  /** Drops every key and the memory that held them; the table is empty (and small) after. */
  release(): void {
    this.slots = DigestTable.MIN_SLOTS;
    this.used = 0;
    this.table = new Uint32Array(this.slots * DigestTable.WORDS);
  }

  /** The home slot of a key: its first word scaled to the table (any size, not only powers of two). */
  private home(word0: number): number {
    return Math.floor((word0 / 0x1_0000_0000) * this.slots);
  }

  /** The slot of `digest`, or the empty slot where it would go. */
  private find(digest: Buffer): number {
    const t = this.table;
    const w0 = digest.readUInt32LE(0);
    for (let i = this.home(w0); ; i = i + 1 === this.slots ? 0 : i + 1) {
      const at = i * DigestTable.WORDS;
      if (t[at + 4] === 0) return i;
      if (t[at] === w0 && t[at + 1] === digest.readUInt32LE(4) && t[at + 2] === digest.readUInt32LE(8) && t[at + 3] === digest.readUInt32LE(12)) return i;
    }
  }

  private grow(): void {
    const old = this.table;
    this.slots = Math.ceil(this.slots * 1.5);
    this.table = new Uint32Array(this.slots * DigestTable.WORDS);
    const W = DigestTable.WORDS;
    for (let at = 0; at < old.length; at += W) {
      if (old[at + 4] === 0) continue;
      let i = this.home(old[at]!);
      while (this.table[i * W + 4] !== 0) i = i + 1 === this.slots ? 0 : i + 1;
      this.table.set(old.subarray(at, at + W), i * W);
    }
  }
}

/**
 * Two numbers per distinct content, by the first 16 bytes of the content's sha256: where the
 * image writers find an earlier copy of a tail or a file (SquashFS: fragment index and offset;
 * EROFS: where a file's extents are recorded). An open-addressing table in typed arrays, 24
 * bytes a slot, so a million distinct contents cost 48 MiB, not a Map entry each. It stops
 * taking new keys at 2^21 slots half full (about a million; contents after that are stored
 * again), a choice that depends only on the order of the calls, so images stay deterministic.
 */
export class DigestTable {
  private static readonly MAX_SLOTS = 1 << 21;
  private slots = 1 << 12;
  private used = 0;
  private keys = new Uint32Array(this.slots * 4);
  private values = new Uint32Array(this.slots * 2);
  private full = new Uint8Array(this.slots);

  get(digest: Buffer): [number, number] | undefined {
    const i = this.find(digest);
    return this.full[i] ? [this.values[i * 2]!, this.values[i * 2 + 1]!] : undefined;
  }

  set(digest: Buffer, a: number, b: number): void {
    if ((this.used + 1) * 2 > this.slots) {
      if (this.slots >= DigestTable.MAX_SLOTS) return;
      this.grow();
    }
    const i = this.find(digest);
    if (!this.full[i]) this.used++;
    this.full[i] = 1;
    for (let k = 0; k < 4; k++) this.keys[i * 4 + k] = digest.readUInt32LE(k * 4);
    this.values[i * 2] = a;
    this.values[i * 2 + 1] = b;
  }

  /** The slot of `digest`, or the empty slot where it would go. */
  private find(digest: Buffer): number {
    const mask = this.slots - 1;
    for (let i = digest.readUInt32LE(0) & mask; ; i = (i + 1) & mask) {
      if (!this.full[i]) return i;
      let k = 0;
      while (k < 4 && this.keys[i * 4 + k] === digest.readUInt32LE(k * 4)) k++;
      if (k === 4) return i;
    }
  }

  private grow(): void {
    const [keys, values, full, n] = [this.keys, this.values, this.full, this.slots];
    this.slots *= 2;
    this.keys = new Uint32Array(this.slots * 4);
    this.values = new Uint32Array(this.slots * 2);
    this.full = new Uint8Array(this.slots);
    this.used = 0;
    const key = Buffer.alloc(16);
    for (let i = 0; i < n; i++) {
      if (!full[i]) continue;
      for (let k = 0; k < 4; k++) key.writeUInt32LE(keys[i * 4 + k]!, k * 4);
      this.set(key, values[i * 2]!, values[i * 2 + 1]!);
    }
  }
}

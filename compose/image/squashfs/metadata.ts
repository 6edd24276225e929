/**
 * Metadata blocks: the container of every SquashFS table but the data.
 *
 *   u16 header   header & 0x7fff = on-disk payload size (1..8192),
 *                header & 0x8000 = payload stored uncompressed
 *   payload      decompresses to ≤ 8192 bytes (exactly 8192 except in a table's last block)
 *
 * A table is a run of metadata blocks; records may straddle blocks. A metadata reference
 * (inode ref, xattr ref, …) is a u64 `(blockStart << 16) | offset`: blockStart is the on-disk
 * position of the block's u16 header relative to the start of its table, offset a byte
 * offset into the block's uncompressed payload (< 8192).
 *
 * `MetaWriter` packs a stream of bytes into blocks (the writer); `MetaReader` reads blocks
 * back, bounded to the byte range a table may occupy, and `Cursor` reads records across
 * consecutive blocks (the reader).
 */
import type { Codec, Decompress } from '../shared/codecs.js';
import type { StrataError } from '../errors.js';
import { LoadCache } from '../shared/lru.js';

export const METADATA_SIZE = 8192;
export const METADATA_UNCOMPRESSED = 0x8000;

/** (blockStart << 16) | offset as a bigint (blockStart may exceed 2^32). */
export function metaRef(blockStart: number, offset: number): bigint {
  return (BigInt(blockStart) << 16n) | BigInt(offset);
}
export function splitMetaRef(ref: bigint): { blockStart: number; offset: number } {
  return { blockStart: Number(ref >> 16n), offset: Number(ref & 0xffffn) };
}

/** The u16 header and payload of one metadata block holding `raw` (stored raw when compression does not shrink it). */
export function encodeMetaBlock(raw: Uint8Array, codec: Pick<Codec, 'compress'>): Buffer {
  const c = codec.compress(raw);
  const head = Buffer.alloc(2);
  if (c.length < raw.length) {
    head.writeUInt16LE(c.length, 0);
    return Buffer.concat([head, c]);
  }
  head.writeUInt16LE(METADATA_UNCOMPRESSED | raw.length, 0);
  return Buffer.concat([head, raw]);
}

/** Packs a stream of bytes into metadata blocks, compressing each as it fills. */
export class MetaWriter {
  private readonly blocks: Buffer[] = [];
  private cur = Buffer.alloc(METADATA_SIZE);
  private used = 0;
  /** On-disk bytes of the blocks flushed so far = relative start of the open block. */
  private disk = 0;
  /** Relative on-disk start of every flushed block, in order. */
  readonly starts: number[] = [];

  constructor(private readonly codec: Pick<Codec, 'compress'>) {}

  /** Relative on-disk start of the open block (the blockStart of a reference made now). */
  get block(): number {
    return this.disk;
  }
  /** Offset into the open block (the offset of a reference made now). */
  get offset(): number {
    return this.used;
  }
  /** Number of blocks flushed so far (the index of the open block). */
  get flushed(): number {
    return this.starts.length;
  }

  write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      const n = Math.min(METADATA_SIZE - this.used, b.length - off);
      this.cur.set(b.subarray(off, off + n), this.used);
      this.used += n;
      off += n;
      if (this.used === METADATA_SIZE) this.flush();
    }
  }

  private flush(): void {
    const block = encodeMetaBlock(this.cur.subarray(0, this.used), this.codec);
    this.starts.push(this.disk);
    this.blocks.push(block);
    this.disk += block.length;
    this.cur = Buffer.alloc(METADATA_SIZE);
    this.used = 0;
  }

  /** Relative on-disk start of block number `i` (flushed, or the open one). */
  blockStart(i: number): number {
    return i < this.starts.length ? this.starts[i]! : this.disk;
  }

  /** Flushes the open block and returns the table's bytes. */
  end(): Buffer {
    if (this.used > 0) this.flush();
    return Buffer.concat(this.blocks);
  }
}

// ---------------------------------------------------------------------------------------
// Reading.

/** A byte range the metadata blocks of one table may occupy (absolute positions). */
export interface Region {
  name: string;
  start: number;
  end: number;
}

export interface MetaBlock {
  data: Buffer;
  /** Absolute position right after this block (where the next block of the table starts). */
  next: number;
}

/** What a MetaReader needs from the image it reads. */
export interface MetaSource {
  /** `n` bytes at absolute `pos` (checked against the image's bounds). */
  readAt(pos: number, n: number, what: string): Promise<Buffer>;
  decompress: Decompress;
  /** The one-line corruption error for this image. */
  corrupt(what: string): StrataError;
  /** The error for a block the decompressor refused. */
  blockError(e: unknown, what: string): StrataError;
}

/** Reads metadata blocks, decompressed and kept in a small LRU cache (512 blocks, ≤ 4 MiB). */
export class MetaReader {
  private readonly cache = new LoadCache<number, MetaBlock>(512);
  constructor(readonly src: MetaSource) {}

  /** The block whose u16 header is at absolute `pos`, which must lie within `region`. */
  async block(pos: number, region: Region): Promise<MetaBlock> {
    if (pos < region.start || pos + 2 > region.end) {
      throw this.src.corrupt(`${region.name} metadata block at byte ${pos} outside the table (bytes ${region.start}..${region.end})`);
    }
    const m = await this.cache.get(pos, () => this.load(pos, region));
    if (m.next > region.end) throw this.src.corrupt(`corrupt metadata block at byte ${pos} (runs past the ${region.name})`);
    return m;
  }

  private async load(pos: number, region: Region): Promise<MetaBlock> {
    const h = (await this.src.readAt(pos, 2, `${region.name} metadata block`)).readUInt16LE(0);
    const size = h & ~METADATA_UNCOMPRESSED & 0xffff;
    if (size === 0 || size > METADATA_SIZE) throw this.src.corrupt(`corrupt metadata block at byte ${pos} (size ${size})`);
    if (pos + 2 + size > region.end) throw this.src.corrupt(`corrupt metadata block at byte ${pos} (runs past the ${region.name})`);
    const raw = await this.src.readAt(pos + 2, size, `${region.name} metadata block`);
    let data: Buffer;
    if (h & METADATA_UNCOMPRESSED) data = raw;
    else {
      try {
        data = this.src.decompress(raw, METADATA_SIZE);
      } catch (e) {
        throw this.src.blockError(e, `corrupt metadata block at byte ${pos}`);
      }
      if (data.length === 0) throw this.src.corrupt(`corrupt metadata block at byte ${pos} (empty)`);
    }
    return { data, next: pos + 2 + size };
  }

  /** A cursor at absolute block position `block`, byte `offset` of its payload. */
  cursor(region: Region, block: number, offset: number): Cursor {
    return new Cursor(this, region, block, offset);
  }
}

/** Reads a stream of records across consecutive metadata blocks of one region. */
export class Cursor {
  private data: Buffer | undefined;
  private next = 0;
  constructor(
    private readonly meta: MetaReader,
    private readonly region: Region,
    private block: number,
    private offset: number,
  ) {}

  /** Where the next byte comes from: absolute block position and payload offset. */
  get pos(): { block: number; offset: number } {
    return { block: this.block, offset: this.offset };
  }

  /** The next `n` bytes as a view when they are in the loaded block, else undefined (then use read). */
  now(n: number): Buffer | undefined {
    if (this.data === undefined || this.offset + n > this.data.length) return undefined;
    const b = this.data.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  /** The next `n` bytes (a view when they lie in one block, else a copy). Views are never written to. */
  async read(n: number): Promise<Buffer> {
    if (this.data === undefined) await this.load();
    if (this.offset + n <= this.data!.length) {
      const b = this.data!.subarray(this.offset, this.offset + n);
      this.offset += n;
      return b;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (this.offset >= this.data!.length) {
        this.block = this.next;
        this.offset = 0;
        await this.load();
        continue;
      }
      const take = Math.min(need, this.data!.length - this.offset);
      parts.push(this.data!.subarray(this.offset, this.offset + take));
      this.offset += take;
      need -= take;
    }
    return Buffer.concat(parts, n);
  }

  private async load(): Promise<void> {
    const m = await this.meta.block(this.block, this.region);
    if (this.offset > m.data.length) {
      throw this.meta.src.corrupt(`offset ${this.offset} beyond the ${this.region.name} metadata block at byte ${this.block}`);
    }
    this.data = m.data;
    this.next = m.next;
  }
}

/**
 * Lookup tables: the form of the fragment, export, id and xattr-id tables.
 *
 *   metadata blocks of fixed-size records (records never straddle blocks: 8192 % size == 0)
 *   u64[] absolute positions of those blocks, stored raw — the superblock points here
 *
 * The reader takes the block positions from the u64 array, each checked to lie between the
 * directory table and the array itself.
 */
import type { Codec } from '../shared/codecs.js';
import type { StrataError } from '../errors.js';
import { METADATA_SIZE, MetaWriter, type MetaReader, type MetaSource, type Region } from './metadata.js';

/**
 * The bytes of a lookup table of `records` that will start at absolute `at`: the metadata
 * blocks, then the u64 block positions. `locations` is the absolute position of the u64 array.
 */
export function encodeLookupTable(records: Iterable<Uint8Array>, codec: Pick<Codec, 'compress'>, at: number): { bytes: Buffer; locations: number } {
  const m = new MetaWriter(codec);
  for (const r of records) m.write(r);
  const blocks = m.end();
  return { bytes: Buffer.concat([blocks, encodeLocations(m.starts.map((s) => at + s))]), locations: at + blocks.length };
}

/** A u64 array of absolute block positions. */
export function encodeLocations(positions: readonly number[]): Buffer {
  const b = Buffer.alloc(8 * positions.length);
  positions.forEach((p, i) => b.writeBigUInt64LE(BigInt(p), 8 * i));
  return b;
}

/** Blocks needed for `count` records of `size` bytes. */
export function tableBlocks(count: number, size: number): number {
  return Math.ceil((count * size) / METADATA_SIZE);
}

/** What reading a table needs beyond metadata blocks: the image's extent. */
export interface TableSource extends MetaSource {
  readonly bytesUsed: number;
  readonly fileSize: number;
  truncated(what: string, at: number | bigint): StrataError;
}

/** `count` u64 block positions at `at`, each in [floor, at). */
export async function readLocations(src: TableSource, name: string, at: number, count: number, floor: number): Promise<number[]> {
  if (at + count * 8 > src.bytesUsed) {
    if (at + count * 8 > src.fileSize) throw src.truncated(`${name} table`, at);
    throw src.corrupt(`${name} table at byte ${at} holds ${count} block locations, more than the image has room for`);
  }
  const b = await src.readAt(at, count * 8, `${name} table`);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const v = b.readBigUInt64LE(i * 8);
    if (v < BigInt(floor) || v >= BigInt(at)) throw src.corrupt(`${name} table block ${i} at byte ${v} outside the table area`);
    out.push(Number(v));
  }
  return out;
}

/** The first `bytes` bytes of a table stored in the blocks at `locs`. */
export async function readTable(meta: MetaReader, region: Region, name: string, locs: readonly number[], bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  for (const l of locs) {
    const m = await meta.block(l, region);
    parts.push(m.data);
    have += m.data.length;
  }
  if (have < bytes) throw meta.src.corrupt(`${name} table holds ${have} bytes, ${bytes} expected`);
  return Buffer.concat(parts, have).subarray(0, bytes);
}

/** Record `index` (of `size` bytes) of a table stored in the blocks at `locs`. */
export async function readRecord(meta: MetaReader, region: Region, name: string, locs: readonly number[], index: number, size: number): Promise<Buffer> {
  const blk = Math.floor((index * size) / METADATA_SIZE);
  const off = (index * size) % METADATA_SIZE;
  const l = locs[blk];
  if (l === undefined) throw meta.src.corrupt(`${name} index ${index} beyond the table`);
  const m = await meta.block(l, region);
  if (off + size > m.data.length) throw meta.src.corrupt(`${name} index ${index} beyond the table's block at byte ${l}`);
  return m.data.subarray(off, off + size);
}

/**
 * The fragment table: one 16-byte entry per fragment block, as a lookup table (table.ts).
 *
 *   0 u64 start (absolute position of the fragment block)  8 u32 size word (data.ts)
 *   12 u32 unused (0)
 *
 * A fragment block packs the tails (size % blockSize bytes) of several files; a file inode
 * names its tail by fragment index and byte offset in the uncompressed block.
 */
import type { Codec } from '../shared/codecs.js';
import { encodeLookupTable, readLocations, readRecord, tableBlocks, type TableSource } from './table.js';
import type { MetaReader, Region } from './metadata.js';

export const FRAGMENT_ENTRY_SIZE = 16;

export interface FragmentEntry {
  start: number;
  word: number;
}

export function encodeFragmentEntry(f: FragmentEntry): Buffer {
  const b = Buffer.alloc(FRAGMENT_ENTRY_SIZE);
  b.writeBigUInt64LE(BigInt(f.start), 0);
  b.writeUInt32LE(f.word, 8);
  return b;
}

/** The fragment table's bytes when it starts at absolute `at` (see encodeLookupTable). */
export function encodeFragmentTable(entries: readonly FragmentEntry[], codec: Pick<Codec, 'compress'>, at: number): { bytes: Buffer; locations: number } {
  return encodeLookupTable(entries.map(encodeFragmentEntry), codec, at);
}

/** Block locations of a table of `count` fragments at `at`. */
export function readFragmentLocations(src: TableSource, at: number, count: number, floor: number): Promise<number[]> {
  return readLocations(src, 'fragment', at, tableBlocks(count, FRAGMENT_ENTRY_SIZE), floor);
}

/** Entry `index` (its start as a bigint: the caller checks it against the data area). */
export async function readFragmentEntry(meta: MetaReader, region: Region, locs: readonly number[], index: number): Promise<{ start: bigint; word: number }> {
  const e = await readRecord(meta, region, 'fragment', locs, index, FRAGMENT_ENTRY_SIZE);
  return { start: e.readBigUInt64LE(0), word: e.readUInt32LE(8) };
}

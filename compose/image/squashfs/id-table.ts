/**
 * The id table: every distinct uid and gid of the image's inodes, as u32 records of a lookup
 * table (table.ts); inodes hold u16 indexes into it. The superblock's u16 idCount cannot say
 * 65536, so an image has at most 65535 ids. strata writes them ascending.
 */
import type { Codec } from '../shared/codecs.js';
import { encodeLookupTable, readLocations, readTable, tableBlocks, type TableSource } from './table.js';
import type { MetaReader, Region } from './metadata.js';

export const ID_ENTRY_SIZE = 4;
export const MAX_IDS = 65535;

/** The ids of an image being written: ascending, with each one's index. */
export class IdTable {
  readonly ids: number[];
  private readonly index: Map<number, number>;
  /** `values` in any order, repeats allowed; the caller checks the count against MAX_IDS. */
  constructor(values: Iterable<number>) {
    this.ids = [...new Set(values)].sort((a, b) => a - b);
    this.index = new Map(this.ids.map((v, i) => [v, i]));
  }
  indexOf(id: number): number {
    return this.index.get(id)!;
  }
  /** The table's bytes when it starts at absolute `at` (see encodeLookupTable). */
  encode(codec: Pick<Codec, 'compress'>, at: number): { bytes: Buffer; locations: number } {
    return encodeLookupTable(
      this.ids.map((v) => {
        const b = Buffer.alloc(ID_ENTRY_SIZE);
        b.writeUInt32LE(v >>> 0, 0);
        return b;
      }),
      codec,
      at,
    );
  }
}

/** Reads the `count` ids of the table whose block locations are at `at`. */
export async function readIdTable(src: TableSource, meta: MetaReader, region: Region, at: number, count: number, floor: number): Promise<number[]> {
  const locs = await readLocations(src, 'id', at, tableBlocks(count, ID_ENTRY_SIZE), floor);
  const bytes = await readTable(meta, region, 'id', locs, count * ID_ENTRY_SIZE);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(bytes.readUInt32LE(i * ID_ENTRY_SIZE));
  return out;
}

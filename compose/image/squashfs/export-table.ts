/**
 * The export table (for NFS export): a lookup table (table.ts) of u64 inode references,
 * entry i for inode number i + 1. strata writes it always (FLAG.EXPORTABLE), as mksquashfs
 * does; strata's reader finds inodes through directories and does not read it.
 */
import type { Codec } from '../shared/codecs.js';
import { encodeLookupTable } from './table.js';

export const EXPORT_ENTRY_SIZE = 8;

/** The export table's bytes when it starts at absolute `at`; `refs[i]` is inode i + 1's reference. */
export function encodeExportTable(refs: readonly bigint[], codec: Pick<Codec, 'compress'>, at: number): { bytes: Buffer; locations: number } {
  return encodeLookupTable(
    refs.map((r) => {
      const b = Buffer.alloc(EXPORT_ENTRY_SIZE);
      b.writeBigUInt64LE(r, 0);
      return b;
    }),
    codec,
    at,
  );
}

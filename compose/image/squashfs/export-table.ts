/**
 * The export table (for NFS export): a lookup table (table.ts) of u64 inode references,
 * entry i for inode number i + 1. strata writes it always (FLAG.EXPORTABLE), as mksquashfs
 * does; strata's reader finds inodes through directories and does not read it.
 */
import type { Codec } from '../shared/codecs.js';
import { encodeLookupTable } from './table.js';

export const EXPORT_ENTRY_SIZE = 8;

/**
 * The export table's bytes when it starts at absolute `at`; `refs` holds inode i + 1's
 * reference as a u64 (little-endian) at byte 8i: one buffer, not an object per inode.
 */
export function encodeExportTable(refs: Buffer, codec: Pick<Codec, 'compress'>, at: number): { bytes: Buffer; locations: number } {
  return encodeLookupTable(
    (function* () {
      for (let i = 0; i < refs.length; i += EXPORT_ENTRY_SIZE) yield refs.subarray(i, i + EXPORT_ENTRY_SIZE);
    })(),
    codec,
    at,
  );
}

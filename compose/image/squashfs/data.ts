/**
 * File data: data blocks and their size words.
 *
 * A file's content is `floor(size / blockSize)` full blocks (`ceil` when it has no fragment)
 * stored back to back from the inode's blocksStart, then optionally a tail (< blockSize) in a
 * fragment block (fragment-table.ts). Blocks have no headers; each has a u32 size word in the
 * file inode's block list (and each fragment block one in its fragment table entry):
 *
 *   bits 0..23  on-disk size (≤ blockSize)
 *   bit 24      DATA_UNCOMPRESSED: the block is stored as it is
 *   0           a sparse block: blockSize zero bytes, nothing on disk
 */

export const DATA_UNCOMPRESSED = 1 << 24;
export const DATA_SIZE_MASK = 0x00ffffff;

/** The size word of a block of `onDisk` bytes (0: a hole). */
export function encodeSizeWord(onDisk: number, stored: boolean): number {
  return stored ? (onDisk | DATA_UNCOMPRESSED) >>> 0 : onDisk;
}

/** A size word's parts; undefined when reserved bits are set or the size exceeds `blockSize`. */
export function decodeSizeWord(w: number, blockSize: number): { onDisk: number; stored: boolean } | undefined {
  const onDisk = w & DATA_SIZE_MASK;
  if ((w & ~(DATA_SIZE_MASK | DATA_UNCOMPRESSED)) !== 0 || onDisk > blockSize) return undefined;
  return { onDisk, stored: (w & DATA_UNCOMPRESSED) !== 0 };
}

/** Number of u32 block-size words of a file inode. */
export function fileBlockCount(size: number, blockSize: number, hasFragment: boolean): number {
  return hasFragment ? Math.floor(size / blockSize) : Math.ceil(size / blockSize);
}

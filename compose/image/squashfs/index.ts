/**
 * SquashFS 4.0, as strata writes and reads it. One file per on-disk structure, each with its
 * encoder and decoder side by side (the split of squashfs-tools-ng's libsquashfs):
 *
 *   superblock.ts       superblock, image layout, flags
 *   compressor.ts       compressor ids, the options block, which codecs strata writes
 *   metadata.ts         metadata blocks and references; MetaWriter, MetaReader, Cursor
 *   table.ts            lookup tables (blocks of records + u64 block locations)
 *   inode.ts            inodes, devices
 *   directory.ts        directory listings and the directory index
 *   id-table.ts         uids and gids
 *   xattr-table.ts      extended attributes
 *   fragment-table.ts   fragment blocks
 *   export-table.ts     inode lookup for NFS export
 *   data.ts             data block size words
 *   block-job.ts        the writer's compression job (worker threads)
 *   writer.ts, reader.ts
 */
export { SquashfsWriter, checkSquashOptions, type SquashOptions, type SquashResult, type GroupOptions, type SquashCompressor } from './writer.js';
export { SquashfsImage, READ_FILE_MAX, q, type ImageEntry, type WalkOptions, type SquashfsSuperblock } from './reader.js';

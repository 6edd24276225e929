/**
 * The image format library: writes and reads trees of entries as image files. It knows
 * nothing of modules, stores or locks (compose/ builds on it). Formats live in their folders
 * (squashfs/, erofs/; open.ts opens either by its magic); what both share is in shared/:
 *
 *   shared/codecs.ts       gzip, zstd, lz4 compressors and decompressors (+ xz decoding)
 *   shared/worker-pool.ts  worker threads running jobs of one kind (compression)
 *   shared/block-cache.ts  content-addressed cache of compressed blocks, its size and pruning
 *   shared/segment-cache.ts  what a group (a layer) added to an image, sealed, to place again
 *   shared/compress-block.ts  one block through cache (verified) and codec
 *   shared/output-file.ts  temp file beside OUT, O_EXCL|O_NOFOLLOW, one rename
 *   shared/serial.ts       a writer's calls one after another, its first failure kept
 *   shared/walk.ts         the readers' walk, hard links known through sorters
 */
export * from './squashfs/index.js';
export { ErofsWriter, checkErofsOptions, type ErofsOptions, type ErofsResult, type ErofsCompressor } from './erofs/writer.js';
export { ErofsImage } from './erofs/reader.js';
export { openImage, imageFormat, formatOf, type ImageReader, type ImageFormat, type Piece } from './open.js';
export { blockCacheUsage, pruneBlockCache, parseByteSize, listCacheEntries, BLOCK_CACHE_DIR, type BlockCacheUsage, type PruneOptions, type PruneResult, type CacheEntry } from './shared/block-cache.js';
export { removeStaleTemps, type OutputAccess } from './shared/output-file.js';
export { SEGMENT_MAX_FILES } from './shared/segment-cache.js';

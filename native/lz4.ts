/**
 * LZ4 blocks (the raw block format, no frame) from the vendored liblz4 (native/lz4.c,
 * native/vendor/lz4): the images' lz4 compressor. Whole blocks, synchronous, one match table
 * per thread; the bytes depend only on the liblz4 version and its build setting, which
 * `lz4Version()` names (spec/decisions.md, Images).
 */
import { addon } from './binding.js';

/** Compresses `src` into one LZ4 block: an exact-size Buffer that owns its memory. Throws only on bad arguments or when memory runs out. */
export function lz4Compress(src: Uint8Array): Buffer {
  return addon().lz4Compress(src);
}

/** The vendored liblz4's version and match-table setting, e.g. "1.9.4-m16": part of every lz4 cache key. */
export function lz4Version(): string {
  return addon().lz4Version;
}

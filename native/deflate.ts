/**
 * gzip blocks (zlib-wrapped DEFLATE, RFC 1950) from the vendored libdeflate
 * (native/deflate.c, native/vendor/libdeflate): the images' gzip compressor. Whole blocks,
 * synchronous, one compressor per level per thread; the bytes depend only on the libdeflate
 * version and the level (spec/decisions.md, Images).
 */
import { addon } from './binding.js';

/** Compresses `src` at libdeflate `level` (0–12) into a zlib stream. Throws only on bad arguments or when memory runs out. */
export function zlibCompress(src: Uint8Array, level: number): Buffer {
  return addon().zlibCompress(src, level);
}

/** The vendored libdeflate's version, e.g. "1.14": part of every gzip cache key. */
export function libdeflateVersion(): string {
  return addon().libdeflateVersion;
}

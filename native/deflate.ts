/**
 * gzip blocks (zlib-wrapped DEFLATE, RFC 1950) from the vendored libdeflate
 * (native/deflate.c, native/vendor/libdeflate): the images' gzip compressor and decompressor.
 * Whole blocks, synchronous, one compressor per level and one decompressor per thread; the
 * bytes depend only on the libdeflate version and the level (spec/decisions.md, Images).
 */
import { addon } from './binding.js';

/** Compresses `src` at libdeflate `level` (0–12) into a zlib stream. Throws only on bad arguments or when memory runs out. */
export function zlibCompress(src: Uint8Array, level: number): Buffer {
  return addon().zlibCompress(src, level);
}

/**
 * Inflates the zlib stream at the start of `src` (bytes after its end are ignored) into `dst`;
 * returns how many bytes it wrote. Throws when the stream is not valid or needs more room
 * than `dst` has.
 */
export function zlibDecompress(dst: Uint8Array, src: Uint8Array): number {
  return addon().zlibDecompress(dst, src);
}

/** The vendored libdeflate's version, e.g. "1.14": part of every gzip cache key. */
export function libdeflateVersion(): string {
  return addon().libdeflateVersion;
}

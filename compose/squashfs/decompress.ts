/**
 * Block decompressors for the SquashFS reader. Each one takes one on-disk block and the
 * largest size it may expand to (8192 for metadata, the block size for data) and returns
 * the uncompressed bytes, never allocating more than that bound. Any malformed input throws
 * a plain Error; the reader turns it into ERR_IMAGE_CORRUPT naming the block's position.
 *
 *   gzip  zlib stream (RFC 1950), node:zlib
 *   zstd  one zstd frame, libzstd through zstd-napi's low-level binding
 *   lz4   raw LZ4 block (no frame header), decoded here
 *   xz    one .xz stream with a single LZMA2 filter, decoded in xz.ts (BCJ filters are
 *         refused with UnsupportedBlockError)
 *   lzo, lzma: not supported (decompressorFor returns undefined)
 */
import { createRequire } from 'node:module';
import { inflateSync } from 'node:zlib';
import { xz, XzUnsupportedError } from './xz.js';

/** A well-formed block using a feature strata does not decode (e.g. an xz BCJ filter). */
export { XzUnsupportedError as UnsupportedBlockError };

export type Decompress = (src: Buffer, maxOut: number) => Buffer;

interface ZstdBinding {
  decompress(dst: Uint8Array, src: Uint8Array): number;
}

let zstdBinding: ZstdBinding | undefined;

function zstd(src: Buffer, maxOut: number): Buffer {
  zstdBinding ??= createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
  const dst = Buffer.allocUnsafe(maxOut);
  const n = zstdBinding.decompress(dst, src);
  return dst.subarray(0, n);
}

function gzip(src: Buffer, maxOut: number): Buffer {
  return inflateSync(src, { maxOutputLength: maxOut });
}

/**
 * LZ4 block format: sequences of
 *   token (u8: literal length << 4 | match length − 4), [literal length extension bytes,
 *   each added, continuing while 255], literals, u16 match offset, [match length extension]
 * The last sequence has literals only.
 */
export function lz4(src: Buffer, maxOut: number): Buffer {
  const out = Buffer.allocUnsafe(maxOut);
  let ip = 0;
  let op = 0;
  const end = src.length;
  const bad = (why: string) => new Error(`${why} at input byte ${ip}`);
  while (ip < end) {
    const token = src[ip++]!;
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (ip >= end) throw bad('truncated literal length');
        b = src[ip++]!;
        lit += b;
      } while (b === 255);
    }
    if (ip + lit > end) throw bad('literals beyond input');
    if (op + lit > maxOut) throw bad('output too large');
    src.copy(out, op, ip, ip + lit);
    ip += lit;
    op += lit;
    if (ip === end) break;
    if (ip + 2 > end) throw bad('truncated match offset');
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) throw bad('match offset out of range');
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (ip >= end) throw bad('truncated match length');
        b = src[ip++]!;
        len += b;
      } while (b === 255);
    }
    if (op + len > maxOut) throw bad('output too large');
    let from = op - offset;
    if (offset >= len) {
      out.copy(out, op, from, from + len);
      op += len;
    } else {
      for (let i = 0; i < len; i++) out[op++] = out[from++]!;
    }
  }
  return out.subarray(0, op);
}

/** The decompressor for a superblock compressor name, or undefined when strata has none. */
export function decompressorFor(name: string): Decompress | undefined {
  switch (name) {
    case 'gzip':
      return gzip;
    case 'zstd':
      return zstd;
    case 'lz4':
      return lz4;
    case 'xz':
      return xz;
    default:
      return undefined;
  }
}

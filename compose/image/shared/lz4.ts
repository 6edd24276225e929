/**
 * LZ4 block format (no frame header), as the kernel's LZ4_decompress_safe reads it: a
 * sequence of
 *
 *   token (u8: literal count << 4 | match length − 4; a nibble of 15 means more bytes follow)
 *   [255…, n]  extra literal count, each byte added, continuing while 255
 *   literals
 *   u16 LE     match offset (1..65535, back from the current output position)
 *   [255…, n]  extra match length
 *
 * ending with a literals-only sequence. A match may not start in the last 12 bytes
 * (MFLIMIT) and the last 5 bytes are always literals (LASTLITERALS).
 *
 * The compressor is the vendored liblz4 (native/lz4.ts); `lz4BlockVersion()` names its
 * bytes in cache keys. The decoder here is the one every format and the block cache use.
 */
import { lz4Compress, lz4Version } from '../../../native/lz4.js';

export { lz4Compress };

/** Identity of the compressor's bytes, for cache keys: "liblz4-" and the addon's lz4Version. */
export function lz4BlockVersion(): string {
  return `liblz4-${lz4Version()}`;
}

/**
 * Decodes one block into at most `maxOut` bytes; malformed input throws a plain Error. The
 * block ends with its input. With `untilFull` it is decoded as the kernel's
 * LZ4_decompress_safe_partial reads an EROFS pcluster: up to `maxOut` bytes and no further,
 * the sequence that crosses it cut there. mkfs.erofs (erofs-utils 1.5) writes streams that
 * go on past the extent they serve, and without the 0PADDING feature follows a stream with
 * zeros to its block's end.
 */
export function lz4Decompress(src: Uint8Array, maxOut: number, untilFull = false): Buffer {
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
    if (op + lit > maxOut) {
      if (!untilFull) throw bad('output too large');
      lit = maxOut - op;
    }
    out.set(src.subarray(ip, ip + lit), op);
    ip += lit;
    op += lit;
    if (ip === end || (untilFull && op === maxOut)) break;
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
    if (op + len > maxOut) {
      if (!untilFull) throw bad('output too large');
      len = maxOut - op;
    }
    let from = op - offset;
    if (offset >= len) {
      out.copy(out, op, from, from + len);
      op += len;
    } else {
      for (let i = 0; i < len; i++) out[op++] = out[from++]!;
    }
    if (untilFull && op === maxOut) break;
  }
  return out.subarray(0, op);
}

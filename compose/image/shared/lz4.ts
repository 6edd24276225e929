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
 * The compressor is strata's own (greedy, a 64 Ki-entry hash of 4-byte sequences), so its
 * output is fixed by this file, not by a library build: `LZ4_VERSION` names it in cache keys.
 * The decoder is the one every format and the block cache use.
 */

/** Identity of the compressor below; change it whenever its output could change. */
export const LZ4_VERSION = 'strata-lz4-1';

const MINMATCH = 4;
const MFLIMIT = 12;
const LASTLITERALS = 5;
const HASH_LOG = 16;

/** The match table and the output scratch: one each per thread, reused by every call (a call runs to its end synchronously). */
const table = new Int32Array(1 << HASH_LOG);
let scratch = Buffer.allocUnsafeSlow(0);

function read32(b: Uint8Array, i: number): number {
  return b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
}

/**
 * Greedy parse: at each position, the last earlier position with the same 4-byte hash is the
 * only candidate; a candidate within 64 KiB holding the same 4 bytes is extended as far as it
 * goes and taken. The result is an exact-size Buffer of its own (whole, so a worker can
 * transfer it instead of copying a larger scratch buffer).
 */
export function lz4Compress(src: Uint8Array): Buffer {
  const n = src.length;
  const bound = n + Math.ceil(n / 255) + 16;
  if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound);
  const out = scratch;
  table.fill(-1);
  let op = 0;
  let anchor = 0;
  let ip = 0;
  const matchEnd = n - LASTLITERALS;
  while (ip + MFLIMIT <= n) {
    const seq = read32(src, ip);
    const h = Math.imul(seq, 2654435761) >>> (32 - HASH_LOG);
    const ref = table[h]!;
    table[h] = ip;
    if (ref >= 0 && ip - ref <= 0xffff && read32(src, ref) === seq) {
      // Four bytes at a time while all four are before matchEnd, then byte by byte: the same
      // length as a byte loop to the first difference or matchEnd.
      let len = MINMATCH;
      while (ip + len + 4 <= matchEnd && read32(src, ref + len) === read32(src, ip + len)) len += 4;
      while (ip + len < matchEnd && src[ref + len] === src[ip + len]) len++;
      op = writeSequence(out, op, src, anchor, ip, ip - ref, len);
      ip += len;
      anchor = ip;
    } else {
      ip++;
    }
  }
  op = writeSequence(out, op, src, anchor, n, 0, 0);
  const result = Buffer.allocUnsafeSlow(op);
  out.copy(result, 0, 0, op);
  return result;
}

/** One sequence: token, literals, and (unless `offset` is 0, the last sequence) the match. */
function writeSequence(out: Buffer, op: number, src: Uint8Array, anchor: number, litEnd: number, offset: number, matchLen: number): number {
  const lit = litEnd - anchor;
  const ml = matchLen - MINMATCH;
  out[op++] = (Math.min(lit, 15) << 4) | (offset ? Math.min(ml, 15) : 0);
  if (lit >= 15) op = writeLength(out, op, lit - 15);
  if (lit < 32) {
    for (let i = anchor; i < litEnd; i++) out[op++] = src[i]!;
  } else {
    out.set(src.subarray(anchor, litEnd), op);
    op += lit;
  }
  if (!offset) return op;
  out[op++] = offset & 0xff;
  out[op++] = offset >>> 8;
  if (ml >= 15) op = writeLength(out, op, ml - 15);
  return op;
}

function writeLength(out: Buffer, op: number, v: number): number {
  for (; v >= 255; v -= 255) out[op++] = 255;
  out[op++] = v;
  return op;
}

/** Decodes one block into at most `maxOut` bytes; malformed input throws a plain Error. */
export function lz4Decompress(src: Uint8Array, maxOut: number): Buffer {
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
    out.set(src.subarray(ip, ip + lit), op);
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

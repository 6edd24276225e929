/**
 * A small .xz decoder for SquashFS blocks (squashfs-tools and the kernel: one xz stream per
 * block, CRC32 or no check, a single LZMA2 filter). Written from the xz file format and
 * LZMA2 descriptions; bounded: it never writes past `maxOut` and rejects anything else.
 *
 * .xz stream, as used here:
 *   stream header (12): FD 37 7A 58 5A 00 | u8 0 | u8 check (0 none, 1 CRC32) | u32 CRC32
 *   block header: u8 size ((n + 1) × 4 bytes in all) | u8 flags (bits 0-1 filters − 1,
 *     bit 6 compressed size present, bit 7 uncompressed size present) | [VLI sizes] |
 *     per filter: VLI id, VLI props size, props | zero padding | u32 CRC32 of the header
 *   LZMA2 data | zero padding to a multiple of 4 | check (CRC32 of the output, LE)
 *   index and stream footer (not needed to decode; ignored)
 * VLI: 7 bits per byte, least significant first, high bit = more bytes (at most 9).
 *
 * LZMA2 chunks, each starting with a control byte:
 *   0x00            end of data
 *   0x01 / 0x02     stored chunk, with / without dictionary reset: u16 BE (size − 1), bytes
 *   0x80 | r << 5 | u[20..16]   LZMA chunk: u16 BE u[15..0] (unpacked − 1), u16 BE
 *                   (packed − 1), [props byte when r ≥ 2]; r: 0 nothing reset, 1 state
 *                   reset, 2 state reset + new props, 3 that + dictionary reset.
 *   props byte = (pb × 5 + lp) × 9 + lc, lc + lp ≤ 4.
 *
 * Filter chains: LZMA2 alone, or x86 BCJ (id 0x04, mksquashfs -Xbcj x86) then LZMA2. Other
 * BCJ filters (powerpc, ia64, arm, armthumb, sparc) throw XzUnsupportedError.
 */

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(b: Uint8Array, start = 0, end = b.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

class XzError extends Error {}

const fail = (why: string): never => {
  throw new XzError(why);
};

/** Thrown for valid xz that uses features strata does not decode (BCJ, delta filters). */
export class XzUnsupportedError extends XzError {}

const MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const FILTER_LZMA2 = 0x21;
const FILTER_X86 = 0x04;

/** Decodes one .xz stream holding one block; the output is at most `maxOut` bytes. */
export function xz(input: Uint8Array, maxOut: number): Buffer {
  const src = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (src.length < 12 + 12) fail('stream too short');
  for (let i = 0; i < 6; i++) if (src[i] !== MAGIC[i]) fail('bad stream magic');
  if (src[6] !== 0 || (src[7]! & 0xf0) !== 0) fail('bad stream flags');
  const check = src[7]!;
  if (check !== 0 && check !== 1) throw new XzUnsupportedError(`check type ${check} (only none and CRC32)`);
  if (crc32(src, 6, 8) !== src.readUInt32LE(8)) fail('stream header CRC mismatch');
  let p = 12;
  const hb = src[p]!;
  if (hb === 0) return Buffer.alloc(0); // index right away: no blocks
  const hsize = (hb + 1) * 4;
  if (p + hsize > src.length) fail('block header beyond input');
  if (crc32(src, p, p + hsize - 4) !== src.readUInt32LE(p + hsize - 4)) fail('block header CRC mismatch');
  const hend = p + hsize - 4;
  const flags = src[p + 1]!;
  if (flags & 0x3c) fail('reserved block flags set');
  let q = p + 2;
  const vli = (): number => {
    let v = 0;
    for (let i = 0; i < 9; i++) {
      if (q >= hend) fail('truncated block header');
      const b = src[q++]!;
      v += (b & 0x7f) * 2 ** (7 * i);
      if (!(b & 0x80)) {
        if (b === 0 && i > 0) fail('non-minimal VLI');
        return v;
      }
    }
    return fail('VLI too long');
  };
  const compressedSize = flags & 0x40 ? vli() : undefined;
  const uncompressedSize = flags & 0x80 ? vli() : undefined;
  if (uncompressedSize !== undefined && uncompressedSize > maxOut) fail(`block of ${uncompressedSize} bytes, at most ${maxOut} expected`);
  const nFilters = (flags & 3) + 1;
  let dictProp = -1;
  let x86Start: number | undefined;
  for (let i = 0; i < nFilters; i++) {
    const id = vli();
    const psize = vli();
    if (q + psize > hend) fail('filter properties beyond header');
    if (i === nFilters - 1) {
      if (id !== FILTER_LZMA2) fail(`last filter is 0x${id.toString(16)}, not LZMA2`);
      if (psize !== 1) fail('LZMA2 properties size');
      dictProp = src[q]!;
    } else if (id === FILTER_X86 && i === 0 && nFilters === 2) {
      if (psize !== 0 && psize !== 4) fail('x86 filter properties size');
      x86Start = psize === 4 ? src.readUInt32LE(q) : 0;
    } else {
      throw new XzUnsupportedError(`filter 0x${id.toString(16)} (strata decodes LZMA2 alone or with the x86 BCJ filter)`);
    }
    q += psize;
  }
  if (dictProp > 40) fail('LZMA2 dictionary size');
  for (; q < hend; q++) if (src[q] !== 0) fail('block header padding');
  p += hsize;
  const dataEnd = compressedSize !== undefined ? p + compressedSize : src.length;
  if (dataEnd > src.length) fail('compressed data beyond input');
  const out = Buffer.allocUnsafe(maxOut);
  const { n, end } = lzma2(src, p, dataEnd, out);
  if (compressedSize !== undefined && end !== dataEnd) fail('compressed size mismatch');
  if (uncompressedSize !== undefined && n !== uncompressedSize) fail('uncompressed size mismatch');
  if (x86Start !== undefined) unfilterX86(out, n, x86Start);
  p = end;
  while (p & 3) {
    if (src[p] !== 0) fail('block padding');
    p++;
  }
  if (check === 1) {
    if (p + 4 > src.length) fail('check beyond input');
    if (crc32(out, 0, n) !== src.readUInt32LE(p)) fail('CRC32 of the data does not match');
  }
  return out.subarray(0, n);
}

// LZMA constants.
const STATES = 12;
const POS_STATES_MAX = 16;
const LEN_LOW = 8;
const LEN_MID = 8;
const LEN_HIGH = 256;
const MATCH_MIN = 2;
const DIST_STATES = 4;
const DIST_SLOTS = 64;
const END_POS_MODEL = 14;
const FULL_DISTANCES = 128;
const ALIGN_BITS = 4;

class LenDecoder {
  choice = new Uint16Array(2);
  low = new Uint16Array(POS_STATES_MAX * LEN_LOW);
  mid = new Uint16Array(POS_STATES_MAX * LEN_MID);
  high = new Uint16Array(LEN_HIGH);
  reset(): void {
    this.choice.fill(1024);
    this.low.fill(1024);
    this.mid.fill(1024);
    this.high.fill(1024);
  }
}

/** Decodes LZMA2 chunks from src[start, end) into out; returns bytes written and where it stopped. */
function lzma2(src: Buffer, start: number, end: number, out: Buffer): { n: number; end: number } {
  let ip = start;
  let op = 0;
  let dictStart = 0;
  let needDictReset = true;
  let haveProps = false;
  let lc = 0;
  let lp = 0;
  let pb = 0;
  // Probabilities.
  const isMatch = new Uint16Array(STATES * POS_STATES_MAX);
  const isRep = new Uint16Array(STATES);
  const isRepG0 = new Uint16Array(STATES);
  const isRepG1 = new Uint16Array(STATES);
  const isRepG2 = new Uint16Array(STATES);
  const isRep0Long = new Uint16Array(STATES * POS_STATES_MAX);
  const posSlot = new Uint16Array(DIST_STATES * DIST_SLOTS);
  const posSpecial = new Uint16Array(FULL_DISTANCES - END_POS_MODEL + 1);
  const align = new Uint16Array(1 << ALIGN_BITS);
  const lenDec = new LenDecoder();
  const repLenDec = new LenDecoder();
  let literal = new Uint16Array(0x300 << 4);
  let state = 0;
  let rep0 = 0;
  let rep1 = 0;
  let rep2 = 0;
  let rep3 = 0;

  const resetState = () => {
    isMatch.fill(1024);
    isRep.fill(1024);
    isRepG0.fill(1024);
    isRepG1.fill(1024);
    isRepG2.fill(1024);
    isRep0Long.fill(1024);
    posSlot.fill(1024);
    posSpecial.fill(1024);
    align.fill(1024);
    lenDec.reset();
    repLenDec.reset();
    literal.fill(1024);
    state = 0;
    rep0 = rep1 = rep2 = rep3 = 0;
  };

  // Range decoder over the current chunk's packed bytes.
  let range = 0;
  let code = 0;
  let rp = 0;
  let rend = 0;
  const next = (): number => {
    if (rp >= rend) fail('LZMA chunk data exhausted');
    return src[rp++]!;
  };
  const bit = (probs: Uint16Array, i: number): number => {
    const prob = probs[i]!;
    const bound = (range >>> 11) * prob;
    let b: number;
    if (code < bound) {
      range = bound;
      probs[i] = prob + ((2048 - prob) >>> 5);
      b = 0;
    } else {
      range -= bound;
      code -= bound;
      probs[i] = prob - (prob >>> 5);
      b = 1;
    }
    if (range < 0x1000000) {
      range = (range * 256) >>> 0;
      code = ((code * 256) >>> 0) + next();
    }
    return b;
  };
  const tree = (probs: Uint16Array, base: number, bits: number): number => {
    let m = 1;
    for (let i = 0; i < bits; i++) m = (m << 1) | bit(probs, base + m);
    return m - (1 << bits);
  };
  const reverse = (probs: Uint16Array, base: number, bits: number): number => {
    let m = 1;
    let r = 0;
    for (let i = 0; i < bits; i++) {
      const b = bit(probs, base + m);
      m = (m << 1) | b;
      r |= b << i;
    }
    return r;
  };
  const direct = (bits: number): number => {
    let r = 0;
    for (let i = 0; i < bits; i++) {
      range >>>= 1;
      let b = 0;
      if (code >= range) {
        code -= range;
        b = 1;
      }
      r = r * 2 + b;
      if (range < 0x1000000) {
        range = (range * 256) >>> 0;
        code = ((code * 256) >>> 0) + next();
      }
    }
    return r;
  };
  const length = (d: LenDecoder, posState: number): number => {
    if (bit(d.choice, 0) === 0) return tree(d.low, posState * LEN_LOW, 3);
    if (bit(d.choice, 1) === 0) return LEN_LOW + tree(d.mid, posState * LEN_MID, 3);
    return LEN_LOW + LEN_MID + tree(d.high, 0, 8);
  };

  for (;;) {
    if (ip >= end) fail('LZMA2 data ends without an end marker');
    const control = src[ip++]!;
    if (control === 0x00) break;
    if (control === 0x01 || control === 0x02) {
      if (ip + 2 > end) fail('truncated stored chunk header');
      const size = src.readUInt16BE(ip) + 1;
      ip += 2;
      if (control === 0x01) {
        needDictReset = false;
        dictStart = op;
      } else if (needDictReset) fail('first chunk does not reset the dictionary');
      if (ip + size > end) fail('stored chunk beyond input');
      if (op + size > out.length) fail('output too large');
      src.copy(out, op, ip, ip + size);
      ip += size;
      op += size;
      continue;
    }
    if (control < 0x80) fail(`invalid chunk control byte 0x${control.toString(16)}`);
    if (ip + 4 > end) fail('truncated LZMA chunk header');
    const unpacked = ((control & 0x1f) << 16) + src.readUInt16BE(ip) + 1;
    const packed = src.readUInt16BE(ip + 2) + 1;
    ip += 4;
    const reset = (control >>> 5) & 3;
    if (reset === 3) {
      needDictReset = false;
      dictStart = op;
    } else if (needDictReset) fail('first chunk does not reset the dictionary');
    if (reset >= 2) {
      if (ip >= end) fail('truncated LZMA chunk properties');
      let pr = src[ip++]!;
      if (pr >= 9 * 5 * 5) fail('invalid LZMA properties');
      lc = pr % 9;
      pr = (pr / 9) | 0;
      lp = pr % 5;
      pb = (pr / 5) | 0;
      if (lc + lp > 4) fail('lc + lp > 4');
      literal = new Uint16Array(0x300 << (lc + lp));
      haveProps = true;
    } else if (!haveProps) fail('LZMA chunk without properties');
    if (reset >= 1) resetState();
    if (op + unpacked > out.length) fail('output too large');
    if (ip + packed > end) fail('LZMA chunk beyond input');
    rp = ip;
    rend = ip + packed;
    if (next() !== 0) fail('range coder does not start with 0');
    code = 0;
    for (let i = 0; i < 4; i++) code = ((code * 256) >>> 0) + next();
    range = 0xffffffff;
    if (code === range) fail('corrupt range coder start');

    const limit = op + unpacked;
    const pbMask = (1 << pb) - 1;
    const lpMask = (1 << lp) - 1;
    while (op < limit) {
      const posState = op & pbMask;
      if (bit(isMatch, state * POS_STATES_MAX + posState) === 0) {
        const prev = op > dictStart ? out[op - 1]! : 0;
        const base = 0x300 * (((op & lpMask) << lc) + (prev >>> (8 - lc)));
        let sym = 1;
        if (state >= 7) {
          if (rep0 >= op - dictStart) fail('match distance beyond the dictionary');
          let matchByte = out[op - rep0 - 1]!;
          while (sym < 0x100) {
            const mb = (matchByte >>> 7) & 1;
            matchByte <<= 1;
            const b = bit(literal, base + ((1 + mb) << 8) + sym);
            sym = (sym << 1) | b;
            if (mb !== b) break;
          }
        }
        while (sym < 0x100) sym = (sym << 1) | bit(literal, base + sym);
        out[op++] = sym & 0xff;
        state = state < 4 ? 0 : state < 10 ? state - 3 : state - 6;
        continue;
      }
      let len: number;
      if (bit(isRep, state) === 0) {
        len = length(lenDec, posState);
        state = state < 7 ? 7 : 10;
        const lenState = Math.min(len, DIST_STATES - 1);
        const slot = tree(posSlot, lenState * DIST_SLOTS, 6);
        let dist: number;
        if (slot < 4) dist = slot;
        else {
          const nd = (slot >>> 1) - 1;
          dist = (2 | (slot & 1)) * 2 ** nd;
          if (slot < END_POS_MODEL) dist += reverse(posSpecial, dist - slot, nd);
          else dist += direct(nd - ALIGN_BITS) * 16 + reverse(align, 0, ALIGN_BITS);
        }
        rep3 = rep2;
        rep2 = rep1;
        rep1 = rep0;
        rep0 = dist;
        if (dist === 0xffffffff) fail('unexpected end-of-payload marker');
      } else {
        if (bit(isRepG0, state) === 0) {
          if (bit(isRep0Long, state * POS_STATES_MAX + posState) === 0) {
            if (rep0 >= op - dictStart) fail('match distance beyond the dictionary');
            state = state < 7 ? 9 : 11;
            out[op] = out[op - rep0 - 1]!;
            op++;
            continue;
          }
        } else {
          let dist: number;
          if (bit(isRepG1, state) === 0) dist = rep1;
          else {
            if (bit(isRepG2, state) === 0) dist = rep2;
            else {
              dist = rep3;
              rep3 = rep2;
            }
            rep2 = rep1;
          }
          rep1 = rep0;
          rep0 = dist;
        }
        len = length(repLenDec, posState);
        state = state < 7 ? 8 : 11;
      }
      len += MATCH_MIN;
      if (rep0 >= op - dictStart) fail('match distance beyond the dictionary');
      if (op + len > limit) fail('match beyond the chunk');
      let from = op - rep0 - 1;
      for (let i = 0; i < len; i++) out[op++] = out[from++]!;
    }
    if (rp !== rend) fail('LZMA chunk size mismatch');
    ip = rend;
  }
  return { n: op, end: ip };
}

const X86_ALLOWED = [true, true, true, false, true, false, false, false];
const X86_BIT = [0, 1, 2, 2, 3, 3, 3, 3];
const msByte = (b: number) => b === 0 || b === 0xff;

/**
 * Undoes the x86 BCJ filter in place on buf[0, n) (a whole stream, starting at stream
 * position `start`): the encoder turned the relative targets of E8/E9 (call/jmp rel32)
 * instructions into absolute ones; the decoder subtracts the position again, tracking the
 * same recent-prefix mask as the encoder so both pick the same instructions.
 */
function unfilterX86(buf: Buffer, n: number, start: number): void {
  let prevMask = 0;
  let prevPos = start - 5;
  let i = 0;
  while (i + 5 <= n) {
    const b0 = buf[i]!;
    if (b0 !== 0xe8 && b0 !== 0xe9) {
      i++;
      continue;
    }
    const here = start + i;
    const gap = here - prevPos;
    prevPos = here;
    if (gap > 5) prevMask = 0;
    else for (let k = 0; k < gap; k++) prevMask = ((prevMask & 0x77) << 1) & 0xff;
    const b4 = buf[i + 4]!;
    if (msByte(b4) && X86_ALLOWED[(prevMask >>> 1) & 7] && prevMask >>> 1 < 0x10) {
      let src = ((b4 << 24) | (buf[i + 3]! << 16) | (buf[i + 2]! << 8) | buf[i + 1]!) >>> 0;
      let dest: number;
      for (;;) {
        dest = (src - (here + 5)) >>> 0;
        if (prevMask === 0) break;
        const bit = X86_BIT[prevMask >>> 1]!;
        if (!msByte((dest >>> (24 - bit * 8)) & 0xff)) break;
        src = (dest ^ (2 ** (32 - bit * 8) - 1)) >>> 0;
      }
      dest &= 0x01ffffff;
      if (dest & 0x01000000) dest |= 0xff000000;
      buf.writeUInt32LE(dest >>> 0, i + 1);
      i += 5;
      prevMask = 0;
    } else {
      i++;
      prevMask |= 1;
      if (msByte(b4)) prevMask |= 0x10;
    }
  }
}

/**
 * The ustar header block: its byte layout, and its encode and decode side by side. The reader
 * (reader.ts) and the writer (writer.ts) both go through here.
 *
 * Header block (512 bytes, all numbers octal ASCII unless GNU base-256, see below):
 *
 *   off  len  field            off  len  field (ustar "ustar\0" "00")
 *     0  100  name             257    6  magic    "ustar\0" (POSIX) / "ustar " (GNU, + " \0")
 *   100    8  mode             263    2  version
 *   108    8  uid              265   32  uname
 *   116    8  gid              297   32  gname
 *   124   12  size             329    8  devmajor
 *   136   12  mtime            337    8  devminor
 *   148    8  chksum           345  155  prefix (POSIX only; GNU keeps atime/ctime/sparse
 *   156    1  typeflag                   maps there, star a 131-byte prefix + "tar\0" at 508)
 *   157  100  linkname
 *
 * - chksum: sum of the 512 bytes with the chksum field read as 8 spaces; old writers summed
 *   signed chars, so the decoder accepts both sums. The encoder writes 6 octal digits, NUL,
 *   space.
 * - Numbers: octal digits ended by space or NUL, or GNU base-256 when the first byte has its
 *   high bit set (the rest of the field is a big-endian two's complement number, 0xff first
 *   meaning negative). The encoder writes zero-padded octal filling the field but its last
 *   byte, which is NUL (8-byte fields: 7 digits, 12-byte fields: 11 digits), never base-256:
 *   what does not fit goes to a pax record (pax.ts).
 * - Typeflags: '0' (or NUL, or '7' contiguous) file, '1' hard link, '2' symlink, '3' char,
 *   '4' block, '5' directory, '6' fifo; 'x'/'g' pax, 'L'/'K' GNU long name/link, others
 *   refused by the reader.
 */
import { printable } from '../../native/errors.js';
import { StrataError, STORE_ERR } from '../errors.js';
import type { EntryType } from '../types.js';

export const BLOCK = 512;

/** [offset, length] of each field. */
export const FIELD = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const;
type NumericField = 'mode' | 'uid' | 'gid' | 'size' | 'mtime' | 'devmajor' | 'devminor';

/**
 * A numeric field: its name (for messages) and where it is. Callers name it as a constant
 * property (NUMERIC.size), which TurboFan folds: FIELD[name] inside the codec saw seven names
 * and went megamorphic (a generic lookup per field, 1.5 % of a large import's main thread).
 */
interface NumericAt {
  name: NumericField;
  off: number;
  len: number;
}
const numericAt = (name: NumericField): NumericAt => ({ name, off: FIELD[name][0], len: FIELD[name][1] });
export const NUMERIC = {
  mode: numericAt('mode'), uid: numericAt('uid'), gid: numericAt('gid'), size: numericAt('size'),
  mtime: numericAt('mtime'), devmajor: numericAt('devmajor'), devminor: numericAt('devminor'),
} as const;

/** Largest values the octal fields hold (7 and 11 digits). */
export const MAX_OCTAL_8 = 0o7777777;
export const MAX_OCTAL_12 = 0o77777777777;

export const TYPEFLAG: Record<EntryType, string> = {
  file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6',
};
export const ENTRY_TYPE: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file',
  '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

// ---- errors the codec raises (one line; names through printable) ----------------------

export function tarCorrupt(msg: string, hint?: string): StrataError {
  return new StrataError(STORE_ERR.TAR_CORRUPT, msg, hint === undefined ? {} : { hint });
}
export function tarTruncated(msg: string): StrataError {
  return new StrataError(STORE_ERR.TAR_TRUNCATED, msg, { hint: 'the archive is incomplete; download or copy it again' });
}
export function tarUnsupported(msg: string, hint: string): StrataError {
  return new StrataError(STORE_ERR.TAR_UNSUPPORTED, msg, { hint });
}

const utf8Lossy = new TextDecoder('utf-8');
/** A raw name from an archive, quoted for a message. */
export function showName(raw: Buffer | string): string {
  return `"${printable(typeof raw === 'string' ? raw : utf8Lossy.decode(raw))}"`;
}

// ---- decode ------------------------------------------------------------------------------

/**
 * Where an entry is, for an error message: a string, or an EntryAt, whose text is made only
 * if a message is.
 */
export type Where = string | EntryAt;

/**
 * An entry's place, `at byte N`, and once its name is known `'name' at byte N`. One object per
 * header, and text only for a message: the offset's digits and the name's escape would
 * otherwise be made for every header of every layer read.
 */
export class EntryAt {
  /** The entry's name, once it is decoded. */
  name: string | undefined;
  constructor(readonly offset: number) {}
  toString(): string {
    return this.name === undefined ? `at byte ${this.offset}` : `${showName(this.name)} at byte ${this.offset}`;
  }
}

export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

export function hasUstarMagic(b: Buffer): boolean {
  return b.length >= 262 && b.toString('latin1', 257, 262) === 'ustar';
}

/** 'posix' for "ustar\0", 'gnu' for "ustar ", 'v7' for neither. */
export function flavourOf(b: Buffer): 'posix' | 'gnu' | 'v7' {
  // Byte by byte: no string made per header.
  if (b[257] !== 0x75 || b[258] !== 0x73 || b[259] !== 0x74 || b[260] !== 0x61 || b[261] !== 0x72) return 'v7';
  return b[262] === 0 ? 'posix' : b[262] === 0x20 ? 'gnu' : 'v7';
}

export function checksumOk(b: Buffer): boolean {
  // The sum with the checksum field read as spaces, bytes unsigned and (old tars) signed: a
  // signed sum is the unsigned one less 256 for every byte of 0x80 or more. Every header of
  // a million-entry import goes through this, so no branch per byte, and four bytes at a
  // time when the block is aligned for it.
  const [unsigned, high] = (b.byteOffset & 3) === 0 ? sumWords(b) : sumBytes(b);
  const stored = parseOctal(b, 148, 8);
  return stored === unsigned || stored === unsigned - 256 * high;
}

/** [the unsigned byte sum with the checksum field as spaces, the bytes of 0x80 or more]. */
function sumBytes(b: Buffer): [number, number] {
  let unsigned = 8 * 0x20;
  let high = 0;
  for (let i = 0; i < BLOCK; i++) {
    if (i === 148) i = 156;
    const c = b[i]!;
    unsigned += c;
    high += c >> 7;
  }
  return [unsigned, high];
}

/**
 * sumBytes over 32-bit words: two 16-bit lanes of byte sums and four 8-bit lanes of high-bit
 * counts, which 128 words cannot overflow (lanes up to 65,280 and 128). Words 37 and 38 are
 * the checksum field.
 */
function sumWords(b: Buffer): [number, number] {
  const w = wordsOf(b.buffer);
  const at = b.byteOffset >> 2;
  let pairs = 0;
  let highs = 0;
  for (let i = 0; i < BLOCK / 4; i++) {
    if (i === 37) i = 39;
    const x = w[at + i]!;
    pairs += (x & 0x00ff00ff) + ((x >>> 8) & 0x00ff00ff);
    highs += (x >>> 7) & 0x01010101;
  }
  const unsigned = 8 * 0x20 + (pairs & 0xffff) + Math.floor(pairs / 0x10000);
  const high = (highs & 0xff) + ((highs >>> 8) & 0xff) + ((highs >>> 16) & 0xff) + (highs >>> 24);
  return [unsigned, high];
}

/**
 * The 32-bit words of `buffer`, as one view kept for the buffer the headers came from last: a
 * reader's headers come from a few buffers it reuses, and a view per header was garbage the
 * import made a million times over.
 */
function wordsOf(buffer: ArrayBufferLike): Uint32Array<ArrayBufferLike> {
  if (buffer !== lastBuffer) {
    lastWords = new Uint32Array(buffer, 0, buffer.byteLength >> 2);
    lastBuffer = buffer;
  }
  return lastWords;
}
let lastBuffer: ArrayBufferLike | undefined;
let lastWords: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

/** Octal digits after optional leading spaces/NULs, ended by space, NUL or the field end;
 *  NaN when anything else is found. */
function parseOctal(b: Buffer, off: number, len: number): number {
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c === 0x20 || c === 0) break;
    if (c < 0x30 || c > 0x37) return NaN;
    v = v * 8 + (c - 0x30);
  }
  for (; i < end; i++) if (b[i] !== 0x20 && b[i] !== 0) return NaN;
  return v;
}

/** A numeric field: octal, or GNU base-256 when the high bit of its first byte is set. */
export function decodeNumber(b: Buffer, { name, off, len }: NumericAt, where: Where): number {
  if ((b[off]! & 0x80) === 0) {
    const v = parseOctal(b, off, len);
    if (Number.isNaN(v)) throw tarCorrupt(`invalid ${name} field in the header ${where}`);
    return v;
  }
  // Base-256: drop the marker bit of byte 0; 0xff leading means a negative number.
  let v = BigInt(b[off]! & 0x7f);
  for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(b[i]!);
  if (b[off] === 0xff) v -= 1n << BigInt(len * 8 - 1);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw tarUnsupported(`${name} of the entry ${where} is too large`, 'repack the archive');
  }
  return Number(v);
}

/** Bytes of a NUL-terminated (or field-filling) string field. */
export function decodeString(b: Buffer, name: 'name' | 'linkname' | 'uname' | 'gname' | 'prefix'): Buffer {
  const [off, len] = FIELD[name];
  return cstring(b.subarray(off, off + len));
}

/** The entry name of a header block: POSIX prefix + '/' + name (star's shorter prefix too). */
export function decodePath(b: Buffer): Buffer {
  const name = decodeString(b, 'name');
  if (flavourOf(b) !== 'posix') return Buffer.from(name);
  const star = b.toString('latin1', 508, 512) === 'tar\0';
  const [off] = FIELD.prefix;
  const prefix = cstring(b.subarray(off, off + (star ? 131 : 155)));
  return prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), name]) : Buffer.from(name);
}

/**
 * A text field (NUL-terminated, or filling the field) as a string, as `decode` would give it
 * from decodeString's bytes: ASCII, nearly every field, is read directly; anything else is
 * handed to `decode` (which may refuse it) as a view of the bytes.
 */
export function fieldText(b: Buffer, off: number, len: number, decode: (bytes: Buffer) => string): string {
  const stop = off + len;
  let end = off;
  let high = 0;
  for (; end < stop; end++) {
    const c = b[end]!;
    if (c === 0) break;
    high |= c;
  }
  if (end === off) return '';
  // ASCII reads the same in every encoding: UTF-8, the default, skips the encoding lookup.
  return high < 0x80 ? b.toString(undefined, off, end) : decode(b.subarray(off, end));
}

/** The entry name of a header block as text: decodePath's bytes through `decode`. */
export function pathText(b: Buffer, flavour: 'posix' | 'gnu' | 'v7', decode: (bytes: Buffer) => string): string {
  const [noff, nlen] = FIELD.name;
  const name = fieldText(b, noff, nlen, decode);
  if (flavour !== 'posix') return name;
  const star = b[508] === 0x74 && b[509] === 0x61 && b[510] === 0x72 && b[511] === 0;
  const prefix = fieldText(b, FIELD.prefix[0], star ? 131 : 155, decode);
  // The '/' between is ASCII: decoding the two apart accepts and gives what decoding the
  // joined bytes would.
  return prefix.length > 0 ? `${prefix}/${name}` : name;
}

export function cstring(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

// ---- encode ------------------------------------------------------------------------------

export interface UstarFields {
  /** The name field: bytes, or a string whose UTF-8 fits the field (the caller checked). */
  name: Buffer | string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  flag: string;
  /** As `name`. */
  linkname: Buffer | string;
  devmajor: number;
  devminor: number;
  /** The entry's path, for RangeError messages. */
  where: string;
}

/** One POSIX ustar block (magic "ustar\0" "00", empty uname/gname/prefix). Throws RangeError
 *  for a number that does not fit its octal field. */
export function encodeUstar(f: UstarFields): Buffer {
  // From Node's shared pool: Buffer.alloc would make an ArrayBuffer per header, which at a
  // million entries was a tenth of an import's time (allocation and collection).
  const b = Buffer.allocUnsafe(BLOCK);
  writeUstar(b, 0, f);
  return b;
}

/**
 * encodeUstar's block written at b[at, at + 512). Every field is written as bytes, the
 * checksum summed as they go (the block is zeros elsewhere, the checksum field counts as eight
 * spaces): no string per number. A RangeError leaves the block partly written.
 */
export function writeUstar(b: Buffer, at: number, f: UstarFields): void {
  b.fill(0, at, at + BLOCK);
  let sum = 8 * 0x20 + MAGIC_SUM;
  sum += copyField(b, at, f.name, FIELD.name);
  sum += writeOctal(b, at, NUMERIC.mode, f.mode, f.where);
  sum += writeOctal(b, at, NUMERIC.uid, f.uid, f.where);
  sum += writeOctal(b, at, NUMERIC.gid, f.gid, f.where);
  sum += writeOctal(b, at, NUMERIC.size, f.size, f.where);
  sum += writeOctal(b, at, NUMERIC.mtime, f.mtime, f.where);
  const flag = f.flag.charCodeAt(0);
  b[at + FIELD.typeflag[0]] = flag;
  sum += flag;
  sum += copyField(b, at, f.linkname, FIELD.linkname);
  MAGIC.copy(b, at + FIELD.magic[0]);
  sum += writeOctal(b, at, NUMERIC.devmajor, f.devmajor, f.where);
  sum += writeOctal(b, at, NUMERIC.devminor, f.devminor, f.where);
  // Six octal digits, NUL, space (sum < 8 * 512 * 255 < 8^6).
  for (let i = at + 153, v = sum; i >= at + 148; i--, v >>>= 3) b[i] = 0x30 + (v & 7);
  b[at + 154] = 0;
  b[at + 155] = 0x20;
}

/** "ustar\0" "00", and the sum of its bytes. */
const MAGIC = Buffer.from('ustar\x0000', 'latin1');
const MAGIC_SUM = MAGIC.reduce((a, x) => a + x, 0);

/** Copies `src` (at most the field's length) into its field; returns the sum of its bytes. */
function copyField(b: Buffer, at: number, src: Buffer | string, [off, len]: readonly [number, number]): number {
  const start = at + off;
  let sum = 0;
  if (typeof src !== 'string') {
    const n = Math.min(src.length, len);
    for (let i = 0; i < n; i++) sum += b[start + i] = src[i]!;
    return sum;
  }
  // An ASCII string that fits (most names) a code at a time; anything else through Buffer.write.
  if (src.length <= len) {
    let k = 0;
    for (; k < src.length; k++) {
      const c = src.charCodeAt(k);
      if (c >= 0x80) break;
      sum += b[start + k] = c;
    }
    if (k === src.length) return sum;
    sum = 0;
  }
  const n = b.write(src, start, len, 'utf8');
  for (let i = start; i < start + n; i++) sum += b[i]!;
  return sum;
}

/**
 * `v` as zero-padded octal filling the field but its last byte, which is NUL; returns the sum
 * of the bytes written.
 */
function writeOctal(b: Buffer, at: number, { name, off: field, len }: NumericAt, v: number, where: string): number {
  const off = at + field;
  if (!Number.isSafeInteger(v) || v < 0 || v > (len === 8 ? MAX_OCTAL_8 : MAX_OCTAL_12)) {
    throw new RangeError(`${name} ${v} of ${JSON.stringify(where)} does not fit a tar header`);
  }
  let sum = 0;
  let i = off + len - 2;
  // Above 2^31 - 1 (sizes past 2 GiB, mtimes past 2038) by division, then with integer steps.
  for (; v > 0x7fffffff; i--) {
    const d = v % 8;
    b[i] = 0x30 + d;
    sum += 0x30 + d;
    v = (v - d) / 8;
  }
  for (; i >= off; i--, v >>>= 3) {
    const c = 0x30 + (v & 7);
    b[i] = c;
    sum += c;
  }
  return sum;
}

/** At most `max` bytes of `b`, not cutting a UTF-8 sequence. */
export function truncateUtf8(b: Buffer, max: number): Buffer {
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** One block of zeros, shared by every padding: never written to. */
const ZEROS = Buffer.alloc(BLOCK);

/**
 * Zero bytes that pad a body of `size` bytes to the next 512-byte boundary: a view of one
 * shared block, so the caller must not write to it (or transfer it to another thread).
 */
export function encodePadding(size: number): Buffer {
  return ZEROS.subarray(0, padding(size));
}
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

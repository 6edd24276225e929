/**
 * Deterministic tar encoding for canonical layer tars and exports: the same header always
 * gives the same bytes.
 *
 * Every header is a POSIX ustar block (magic "ustar\0", version "00"; byte layout in
 * header.ts) with:
 * - numbers as zero-padded octal filling the field but its last byte, which is NUL
 *   (mode/uid/gid/devmajor/devminor: 7 digits, size/mtime: 11 digits); the checksum as 6
 *   digits, NUL, space;
 * - empty uname and gname, an empty prefix field (long names go to pax, never split);
 * - devmajor/devminor written for 'char' and 'block' only, "0000000" otherwise.
 *
 * A pax 'x' header precedes the entry when a value does not fit: path or linkname longer than
 * 100 bytes, uid/gid > 0o7777777, size > 0o77777777777, mtime negative or > 0o77777777777,
 * or when `pax` records are given. The field that did not fit then holds a deterministic
 * stand-in (the first bytes of a long name cut at a UTF-8 boundary, 0 for numbers). The pax
 * header block itself is fixed: name "PaxHeader", mode 0o644, uid/gid 0, mtime 0, and its
 * records sorted by the bytes of their keys.
 */
import type { EntryType } from '../types.js';
import { BLOCK, encodePadding, encodeUstar, MAX_OCTAL_12 as MAX_11, MAX_OCTAL_8 as MAX_7, TYPEFLAG, truncateUtf8, writeUstar } from './header.js';
import { encodePaxRecords } from './pax.js';

export { encodePadding };

export interface TarWriteHeader {
  /** Path as written into the archive (directories end with '/'). UTF-8, no NUL. */
  path: string;
  type: EntryType;
  /** Permission bits (& 0o7777 is written). */
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds since the epoch; may be negative (then carried by pax). */
  mtime: number;
  /** Bytes of body that follow the header (0 for everything but files). */
  size: number;
  /** Symlink target or hard-link target path. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /**
   * Extra pax records, e.g. ['SCHILY.xattr.user.x', <raw bytes>], ['SCHILY.acl.access',
   * <text>]. Keys must not contain '=' or '\n', nor repeat, nor name a record the writer
   * generates itself (path, linkpath, uid, gid, size, mtime).
   */
  pax?: Array<[key: string, value: Buffer]>;
}

const GENERATED = new Set(['path', 'linkpath', 'uid', 'gid', 'size', 'mtime']);

/** Two zero blocks that end an archive. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

/**
 * The header of `h` written at out[at, at + 512) when it is one ustar block (no pax header
 * needed, every value valid): the bytes encodeHeader gives, without a buffer of its own, for
 * the many small entries of a layer. Returns false, having written nothing, otherwise; the
 * caller then uses encodeHeader, which also reports what is invalid. Device numbers that do not
 * fit throw RangeError, as encodeHeader's do.
 */
export function encodeHeaderInto(out: Buffer, at: number, h: TarWriteHeader): boolean {
  const link = h.linkname ?? '';
  if ((h.pax !== undefined && h.pax.length > 0) || h.path.length === 0 || !fitsField(h.path) || !fitsField(link)) return false;
  const { mode, uid, gid, size, mtime } = h;
  if (!Number.isSafeInteger(mode) || mode < 0 || !Number.isSafeInteger(uid) || uid < 0 || uid > MAX_7 || !Number.isSafeInteger(gid) || gid < 0 || gid > MAX_7) return false;
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_11 || !Number.isSafeInteger(mtime) || mtime < 0 || mtime > MAX_11) return false;
  const dev = h.type === 'char' || h.type === 'block';
  writeUstar(out, at, {
    name: h.path,
    mode: mode & 0o7777,
    uid,
    gid,
    size,
    mtime,
    flag: TYPEFLAG[h.type],
    linkname: link,
    devmajor: dev ? (h.devmajor ?? 0) : 0,
    devminor: dev ? (h.devminor ?? 0) : 0,
    where: h.path,
  });
  return true;
}

/** Whether `s` fits a name field as it is: at most 100 bytes of UTF-8, no NUL. */
function fitsField(s: string): boolean {
  // A UTF-16 unit is at most three bytes of UTF-8: 33 of them always fit.
  return s.length <= 100 && (s.length <= 33 || Buffer.byteLength(s, 'utf8') <= 100) && !s.includes('\0');
}

/**
 * The header block(s) of one entry: [pax 'x' header + its records, padded] + ustar block.
 * The caller writes `size` body bytes and encodePadding(size) after it. Throws RangeError
 * for values no tar can hold (non-integers, NUL in a name, invalid pax keys).
 */
export function encodeHeader(h: TarWriteHeader): Buffer {
  const records: Array<[string, Buffer]> = [];
  const path = Buffer.from(h.path, 'utf8');
  const link = Buffer.from(h.linkname ?? '', 'utf8');
  if (path.length === 0) throw new RangeError('tar entry path is empty');
  if (path.includes(0)) throw new RangeError(`tar entry path ${JSON.stringify(h.path)} contains NUL`);
  if (link.includes(0)) throw new RangeError(`link target of ${JSON.stringify(h.path)} contains NUL`);
  for (const [k, v] of [['mode', h.mode], ['uid', h.uid], ['gid', h.gid], ['size', h.size], ['mtime', h.mtime]] as const) {
    if (!Number.isSafeInteger(v)) throw new RangeError(`${k} of ${JSON.stringify(h.path)} is not an integer: ${v}`);
    if (k !== 'mtime' && v < 0) throw new RangeError(`${k} of ${JSON.stringify(h.path)} is negative: ${v}`);
  }

  if (path.length > 100) records.push(['path', path]);
  if (link.length > 100) records.push(['linkpath', link]);
  if (h.uid > MAX_7) records.push(['uid', Buffer.from(String(h.uid))]);
  if (h.gid > MAX_7) records.push(['gid', Buffer.from(String(h.gid))]);
  if (h.size > MAX_11) records.push(['size', Buffer.from(String(h.size))]);
  if (h.mtime < 0 || h.mtime > MAX_11) records.push(['mtime', Buffer.from(String(h.mtime))]);
  if (h.pax !== undefined) {
    const seen = new Set<string>();
    for (const [k, v] of h.pax) {
      if (k.length === 0 || k.includes('=') || k.includes('\n') || k.includes('\0')) {
        throw new RangeError(`pax key ${JSON.stringify(k)} of ${JSON.stringify(h.path)} is not valid`);
      }
      if (GENERATED.has(k) || seen.has(k)) {
        throw new RangeError(`pax key ${JSON.stringify(k)} of ${JSON.stringify(h.path)} is repeated or reserved`);
      }
      seen.add(k);
      records.push([k, v]);
    }
  }

  const dev = h.type === 'char' || h.type === 'block';
  const main = encodeUstar({
    name: truncateUtf8(path, 100),
    mode: h.mode & 0o7777,
    uid: h.uid > MAX_7 ? 0 : h.uid,
    gid: h.gid > MAX_7 ? 0 : h.gid,
    size: h.size > MAX_11 ? 0 : h.size,
    mtime: h.mtime < 0 || h.mtime > MAX_11 ? 0 : h.mtime,
    flag: TYPEFLAG[h.type],
    linkname: truncateUtf8(link, 100),
    devmajor: dev ? (h.devmajor ?? 0) : 0,
    devminor: dev ? (h.devminor ?? 0) : 0,
    where: h.path,
  });
  if (records.length === 0) return main;

  const body = encodePaxRecords(records);
  const paxHeader = encodeUstar({
    name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: 0,
    flag: 'x', linkname: Buffer.alloc(0), devmajor: 0, devminor: 0, where: h.path,
  });
  return Buffer.concat([paxHeader, body, encodePadding(body.length), main]);
}

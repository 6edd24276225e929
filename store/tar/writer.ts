/**
 * Deterministic tar encoding for canonical layer tars and exports: the same header always
 * gives the same bytes.
 *
 * Every header is a POSIX ustar block (magic "ustar\0", version "00"; byte layout in
 * tar-reader.ts) with:
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

const BLOCK = 512;
const MAX_7 = 0o7777777;
const MAX_11 = 0o77777777777;
const GENERATED = new Set(['path', 'linkpath', 'uid', 'gid', 'size', 'mtime']);

/** Two zero blocks that end an archive. */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

const TYPEFLAG: Record<EntryType, string> = {
  file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6',
};

/** Zero bytes that pad a body of `size` bytes to the next 512-byte boundary. */
export function encodePadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
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
  const main = ustar({
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
  const paxHeader = ustar({
    name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: 0,
    flag: 'x', linkname: Buffer.alloc(0), devmajor: 0, devminor: 0, where: h.path,
  });
  return Buffer.concat([paxHeader, body, encodePadding(body.length), main]);
}

/** `<len> <key>=<value>\n` records, sorted by key bytes; len counts the whole record. */
function encodePaxRecords(records: Array<[string, Buffer]>): Buffer {
  const keyed = records.map(([k, v]) => [Buffer.from(k, 'utf8'), v] as const);
  keyed.sort((a, b) => Buffer.compare(a[0], b[0]));
  const parts: Buffer[] = [];
  for (const [k, v] of keyed) {
    const rest = k.length + v.length + 3; // ' ', '=', '\n'
    let len = rest + String(rest).length;
    if (String(len).length !== String(rest).length) len = rest + String(len).length;
    parts.push(Buffer.from(`${len} `), k, Buffer.from('='), v, Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

interface Fields {
  name: Buffer; mode: number; uid: number; gid: number; size: number; mtime: number;
  flag: string; linkname: Buffer; devmajor: number; devminor: number; where: string;
}

function ustar(f: Fields): Buffer {
  const b = Buffer.alloc(BLOCK);
  f.name.copy(b, 0);
  octal(b, 100, 8, f.mode, 'mode', f.where);
  octal(b, 108, 8, f.uid, 'uid', f.where);
  octal(b, 116, 8, f.gid, 'gid', f.where);
  octal(b, 124, 12, f.size, 'size', f.where);
  octal(b, 136, 12, f.mtime, 'mtime', f.where);
  b.write(f.flag, 156, 'latin1');
  f.linkname.copy(b, 157);
  b.write('ustar\x0000', 257, 'latin1');
  octal(b, 329, 8, f.devmajor, 'devmajor', f.where);
  octal(b, 337, 8, f.devminor, 'devminor', f.where);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

function octal(b: Buffer, off: number, len: number, v: number, what: string, where: string): void {
  const s = v.toString(8);
  if (!Number.isSafeInteger(v) || v < 0 || s.length > len - 1) {
    throw new RangeError(`${what} ${v} of ${JSON.stringify(where)} does not fit a tar header`);
  }
  b.write(s.padStart(len - 1, '0') + '\0', off, 'latin1');
}

/** At most `max` bytes of `b`, not cutting a UTF-8 sequence. */
function truncateUtf8(b: Buffer, max: number): Buffer {
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

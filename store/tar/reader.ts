/**
 * strata's streaming tar reader: POSIX ustar + pax, GNU and old-GNU, v7, star, bsdtar.
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
 *   signed chars, so both sums are accepted.
 * - Numbers: octal digits ended by space or NUL, or GNU base-256 when the first byte has its
 *   high bit set (the rest of the field is a big-endian two's complement number, 0xff first
 *   meaning negative).
 * - A pax 'x' header's body is records `<len> <key>=<value>\n`, `len` counting the whole
 *   record in bytes. Values are bytes, not text: SCHILY.xattr.* values are raw xattr bytes
 *   (0xff and '\n' included). A 'g' header sets records for every later entry; an 'x' one
 *   for the next entry only, overriding 'g'. `path`, `linkpath`, `uid`, `gid`, `size`,
 *   `mtime`, `uname`, `gname` override the header fields.
 * - GNU 'L' / 'K' headers carry the next entry's long name / link target as their body.
 * - The archive ends with a zero block (normally two; a lone one is accepted).
 */
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { StrataError, STORE_ERR } from '../errors.js';
import type { EntryType } from '../types.js';

export interface TarHeader {
  /**
   * The entry's path exactly as stored (a trailing '/' on directories kept): pax `path`,
   * else GNU 'L' long name, else ustar prefix + '/' + name. Decoded as UTF-8; a name that is
   * not valid UTF-8 is refused (ERR_TAR_UNSUPPORTED). Path safety is NOT judged here.
   */
  path: string;
  type: EntryType;
  /** Permission bits, mode & 0o7777. */
  mode: number;
  uid: number;
  gid: number;
  /**
   * Bytes of body that follow. Regular files, and hard links carrying data in pax archives;
   * 0 for directories, symlinks, devices, fifos and non-pax hard links whatever the
   * header's size field says.
   */
  size: number;
  /** Whole seconds since the epoch: floor of pax `mtime` (may be negative), else the field. */
  mtime: number;
  /** pax `linkpath`, else GNU 'K' long link, else the linkname field; '' when none. */
  linkname: string;
  /** Device numbers for 'char' and 'block'; 0 for every other type. */
  devmajor: number;
  devminor: number;
  /** User and group names as stored (pax overrides), '' when absent. Lossy UTF-8 decode. */
  uname: string;
  gname: string;
  /**
   * Extended attributes by name, values byte-exact: `SCHILY.xattr.<name>` (raw bytes, as GNU
   * tar, star, umoci write them) and `LIBARCHIVE.xattr.<%-escaped name>` (base64, bsdtar).
   * When both name the same attribute the SCHILY raw value wins (bsdtar writes both, equal).
   * system.posix_acl_* xattrs are kept here as found; turning them into ACL text is ingest's.
   */
  xattrs: Map<string, Buffer>;
  /** `SCHILY.acl.access` / `SCHILY.acl.default` text exactly as stored (GNU: newline
   *  separated, bsdtar: comma separated). */
  aclAccess?: string;
  aclDefault?: string;
  /** Every pax record that applies to this entry: global 'g' records merged under 'x' ones. */
  pax: Map<string, Buffer>;
  /** Byte offset of this entry's own header block in the (decompressed) stream. */
  offset: number;
  /** Byte offset of the entry's body in the (decompressed) stream: a plain archive on disk
   *  can be read again by offset, without buffering. */
  dataOffset: number;
}

export interface TarEntry {
  header: TarHeader;
  /**
   * The entry's data, exactly `header.size` bytes. Read it (or not) before asking for the
   * next entry: moving on drains what is left, and the old body cannot be read afterwards.
   * Chunks are views into the input's buffers, valid until the consumer drops them; copy
   * one that must outlive a large input chunk. An archive that ends inside the body makes
   * the iteration throw ERR_TAR_TRUNCATED.
   */
  body: AsyncIterable<Buffer>;
}

const BLOCK = 512;
/** Metadata bodies (pax headers, GNU long names) are read whole; bound them. */
const MAX_PAX_SIZE = 64 * 1024 * 1024;
const MAX_LONGNAME_SIZE = 1024 * 1024;
const EMPTY: Buffer = Buffer.alloc(0);

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Lossy = new TextDecoder('utf-8');

/**
 * A pull-based byte source that hands out views of its chunks, copying only when a requested
 * block straddles two of them. Subclasses say where chunks come from and how to skip.
 */
abstract class ChunkInput {
  protected cur: Buffer = EMPTY;
  /** Absolute offset of the next byte handed out. */
  offset = 0;

  /** Makes `cur` non-empty; false at the end of the input. */
  protected abstract fill(): Promise<boolean>;
  /** Skips n bytes; returns how many were skipped (fewer only at end of input). */
  abstract skip(n: number): Promise<number>;
  abstract drain(): Promise<void>;
  abstract close(): Promise<void>;

  /** Exactly n bytes, or fewer only when the input ends. */
  async read(n: number): Promise<Buffer> {
    if (this.cur.length === 0) await this.fill();
    if (this.cur.length >= n) {
      const b = this.cur.subarray(0, n);
      this.cur = this.cur.subarray(n);
      this.offset += n;
      return b;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) return out.subarray(0, got);
      const k = Math.min(n - got, this.cur.length);
      this.cur.copy(out, got, 0, k);
      this.cur = this.cur.subarray(k);
      this.offset += k;
      got += k;
    }
    return out;
  }

  /** Up to max bytes from the current chunk (no copy); empty at end of input. */
  async take(max: number): Promise<Buffer> {
    if (this.cur.length === 0 && !(await this.fill())) return EMPTY;
    const b = this.cur.length <= max ? this.cur : this.cur.subarray(0, max);
    this.cur = this.cur.length <= max ? EMPTY : this.cur.subarray(max);
    this.offset += b.length;
    return b;
  }
}

/** Chunks from an async iterable (a stream, a decompressor). */
class Input extends ChunkInput {
  private readonly it: AsyncIterator<Uint8Array>;
  private ended = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    super();
    this.it = source[Symbol.asyncIterator]();
  }

  protected async fill(): Promise<boolean> {
    while (this.cur.length === 0) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      const v = r.value;
      this.cur = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
    return true;
  }

  async skip(n: number): Promise<number> {
    let done = 0;
    while (done < n) {
      const b = await this.take(n - done);
      if (b.length === 0) break;
      done += b.length;
    }
    return done;
  }

  async drain(): Promise<void> {
    this.cur = EMPTY;
    while (await this.fill()) this.cur = EMPTY;
  }

  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.it.return?.();
    }
  }
}

/**
 * A plain archive on disk, read by position: `skip` moves past a body without reading it, so
 * a pass over the headers costs the headers only.
 */
class FileInput extends ChunkInput {
  private fh: FileHandle | undefined;
  private size = 0;
  /** File position of the byte after cur. */
  private pos = 0;

  constructor(private readonly path: string) {
    super();
  }

  private async open(): Promise<FileHandle> {
    if (!this.fh) {
      this.fh = await openFile(this.path, 'r');
      this.size = (await this.fh.stat()).size;
    }
    return this.fh;
  }

  protected async fill(): Promise<boolean> {
    if (this.cur.length > 0) return true;
    const fh = await this.open();
    if (this.pos >= this.size) return false;
    const buf = Buffer.allocUnsafe(Math.min(FILE_CHUNK, this.size - this.pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, this.pos);
    if (bytesRead === 0) return false;
    this.pos += bytesRead;
    this.cur = buf.subarray(0, bytesRead);
    return true;
  }

  async skip(n: number): Promise<number> {
    await this.open();
    if (n <= this.cur.length) {
      this.cur = this.cur.subarray(n);
      this.offset += n;
      return n;
    }
    const skipped = Math.min(n, this.cur.length + (this.size - this.pos));
    this.pos += skipped - this.cur.length;
    this.cur = EMPTY;
    this.offset += skipped;
    return skipped;
  }

  async drain(): Promise<void> {
    await this.open();
    this.offset += this.cur.length + (this.size - this.pos);
    this.cur = EMPTY;
    this.pos = this.size;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }
}

const FILE_CHUNK = 256 * 1024;

function corrupt(msg: string, hint?: string): StrataError {
  return new StrataError(STORE_ERR.TAR_CORRUPT, msg, hint === undefined ? {} : { hint });
}
function truncated(msg: string): StrataError {
  return new StrataError(STORE_ERR.TAR_TRUNCATED, msg, {
    hint: 'the archive is incomplete; download or copy it again',
  });
}
function unsupported(msg: string, hint: string): StrataError {
  return new StrataError(STORE_ERR.TAR_UNSUPPORTED, msg, { hint });
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function checksumOk(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c >= 0x80 ? c - 0x100 : c;
  }
  const stored = parseOctal(b, 148, 8);
  return stored === unsigned || stored === signed;
}

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

/** A numeric header field: octal, or GNU base-256 when the high bit of byte 0 is set. */
function parseNumber(b: Buffer, off: number, len: number, field: string, where: string): number {
  if ((b[off]! & 0x80) === 0) {
    const v = parseOctal(b, off, len);
    if (Number.isNaN(v)) throw corrupt(`invalid ${field} field in the header ${where}`);
    return v;
  }
  // Base-256: drop the marker bit of byte 0; 0xff leading means a negative number.
  let v = BigInt(b[off]! & 0x7f);
  for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(b[i]!);
  if (b[off] === 0xff) v -= 1n << BigInt(len * 8 - 1);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw unsupported(`${field} of the entry ${where} is too large`, 'repack the archive');
  }
  return Number(v);
}

/** Bytes of a NUL-terminated (or field-filling) string field. */
function field(b: Buffer, off: number, len: number): Buffer {
  const f = b.subarray(off, off + len);
  const z = f.indexOf(0);
  return z < 0 ? f : f.subarray(0, z);
}

function cstring(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function showName(raw: Buffer): string {
  return JSON.stringify(utf8Lossy.decode(raw));
}

/**
 * Parses a pax extended header body into `into` (later records override earlier ones).
 * Values are copied out of the input buffer. Trailing NUL padding is tolerated.
 */
function parsePax(data: Buffer, into: Map<string, Buffer>, where: string, global: boolean): void {
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) {
      for (let j = i; j < data.length; j++) {
        if (data[j] !== 0) throw corrupt(`malformed pax record in the pax header ${where}`);
      }
      return;
    }
    let len = 0;
    let j = i;
    while (j < data.length && data[j]! >= 0x30 && data[j]! <= 0x39 && j - i < 12) {
      len = len * 10 + (data[j]! - 0x30);
      j++;
    }
    if (j === i || data[j] !== 0x20 || len <= j - i + 1 || i + len > data.length) {
      throw corrupt(`malformed pax record at byte ${i} of the pax header ${where}`);
    }
    const end = i + len; // one past the record's '\n'
    if (data[end - 1] !== 0x0a) {
      throw corrupt(`malformed pax record at byte ${i} of the pax header ${where} (no newline)`);
    }
    const eq = data.indexOf(0x3d, j + 1);
    if (eq < 0 || eq >= end - 1 || eq === j + 1) {
      throw corrupt(`malformed pax record at byte ${i} of the pax header ${where} (no key=value)`);
    }
    let key: string;
    try {
      key = utf8.decode(data.subarray(j + 1, eq));
    } catch {
      throw unsupported(
        `pax record key at byte ${i} of the pax header ${where} is not valid UTF-8`,
        'repack the archive with UTF-8 names',
      );
    }
    const value = Buffer.from(data.subarray(eq + 1, end - 1));
    // POSIX: an empty value in a global record removes the keyword's default.
    if (global && value.length === 0) into.delete(key);
    else into.set(key, value);
    i = end;
  }
}

function paxInteger(v: Buffer, key: string, where: string): number {
  const s = v.toString('latin1');
  if (!/^[0-9]{1,16}$/.test(s)) throw corrupt(`malformed pax ${key} value ${JSON.stringify(s)} ${where}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw unsupported(`pax ${key} of the entry ${where} is too large`, 'repack the archive');
  return n;
}

/** Floor of a pax decimal time `[-]digits[.digits]`. */
function paxTime(v: Buffer, where: string): number {
  const s = v.toString('latin1');
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]*))?$/.exec(s);
  if (m === null) throw corrupt(`malformed pax mtime value ${JSON.stringify(s)} ${where}`);
  const whole = Number(m[2]);
  const frac = m[3] !== undefined && /[1-9]/.test(m[3]);
  if (m[1] === '-') return frac ? -whole - 1 : -whole === 0 ? 0 : -whole;
  return whole;
}

const TYPES: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file',
  '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

const SPARSE_HINT = 'repack without --sparse';

/**
 * Reads a tar stream entry by entry. Memory is bounded: bodies stream through as views of
 * the input chunks; only pax headers (≤ 64 MiB) and GNU long names (≤ 1 MiB) are held.
 *
 * Errors (StrataError, one line naming the entry or byte offset):
 * - ERR_TAR_CORRUPT: not a tar at all (first block has neither a valid checksum nor ustar
 *   magic, or the input is empty), a later header with a bad checksum, a malformed pax
 *   record or numeric field;
 * - ERR_TAR_TRUNCATED: input ends inside a header or body, or without an end-of-archive
 *   zero block;
 * - ERR_TAR_UNSUPPORTED: sparse ('S', GNU.sparse.*), multi-volume ('M'), incremental dump
 *   directory ('D'), volume label ('V') and unknown entry types; names that are not UTF-8.
 *
 * After the end-of-archive block the rest of the input is read and discarded, so that a
 * decompressor's trailer is checked and a tee'd hash sees every byte. Stopping the
 * iteration early closes the source.
 */
export function readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  return parseTar(new Input(source));
}

/**
 * readTar over a plain (uncompressed) archive on disk. Bodies that are not read are skipped
 * by position, not read, so a pass over the headers costs the headers only.
 */
export function readTarFile(path: string): AsyncGenerator<TarEntry> {
  return parseTar(new FileInput(path));
}

async function* parseTar(input: ChunkInput): AsyncGenerator<TarEntry> {
  const globalPax = new Map<string, Buffer>();
  let localPax: Map<string, Buffer> | null = null;
  let longName: Buffer | null = null;
  let longLink: Buffer | null = null;
  let first = true;
  let finished = false;
  /** Offset of an 'x'/'L'/'K' header still waiting for its entry, else -1. */
  let pendingAt = -1;
  let sawPax = false;

  const readMeta = async (size: number, max: number, what: string, where: string): Promise<Buffer> => {
    if (size > max) throw corrupt(`${what} ${where} is ${size} bytes, larger than strata accepts (${max})`);
    const data = await input.read(size);
    if (data.length < size) throw truncated(`archive ends inside the ${what} ${where}`);
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if ((await input.skip(pad)) < pad) throw truncated(`archive ends inside the ${what} ${where}`);
    return data;
  };

  try {
    for (;;) {
      const off = input.offset;
      const blk = await input.read(BLOCK);
      if (blk.length < BLOCK) {
        if (first && blk.length === 0) {
          throw corrupt('not a tar archive: the input is empty', 'is it the right file?');
        }
        if (first && !hasUstarMagic(blk)) throw notATar();
        if (blk.length === 0) {
          throw truncated(`archive ends at byte ${off} without an end-of-archive block`);
        }
        throw truncated(`archive ends inside the header at byte ${off}`);
      }
      if (isZeroBlock(blk)) {
        if (pendingAt >= 0) {
          throw corrupt(`the extended header at byte ${pendingAt} is followed by the end of the archive, not by an entry`);
        }
        // A leading zero block is an empty archive (`tar -cf x.tar -T /dev/null`).
        finished = true;
        await input.drain();
        return;
      }
      if (!checksumOk(blk)) {
        if (first && !hasUstarMagic(blk)) throw notATar();
        throw corrupt(`bad header checksum at byte ${off}`, 'the archive is damaged');
      }
      first = false;

      const where = `at byte ${off}`;
      const flag = String.fromCharCode(blk[156]!);
      const magic = blk.toString('latin1', 257, 263);
      const posix = magic === 'ustar\0';
      const gnu = magic === 'ustar ';
      const rawSize = parseNumber(blk, 124, 12, 'size', where);

      if (flag === 'x' || flag === 'g') {
        sawPax = true;
        if (flag === 'x' && pendingAt < 0) pendingAt = off;
        const data = await readMeta(rawSize, MAX_PAX_SIZE, 'pax header', where);
        if (flag === 'g') parsePax(data, globalPax, where, true);
        else parsePax(data, (localPax ??= new Map()), where, false);
        continue;
      }
      if (flag === 'L' || flag === 'K') {
        if (pendingAt < 0) pendingAt = off;
        const data = await readMeta(rawSize, MAX_LONGNAME_SIZE, 'GNU long name', where);
        if (flag === 'L') longName = Buffer.from(cstring(data));
        else longLink = Buffer.from(cstring(data));
        continue;
      }

      // The entry proper.
      let pax: Map<string, Buffer>;
      if (localPax === null) pax = new Map(globalPax);
      else if (globalPax.size === 0) pax = localPax;
      else {
        pax = new Map(globalPax);
        for (const [k, v] of localPax) pax.set(k, v);
      }

      let rawPath: Buffer;
      const pp = pax.get('path');
      if (pp !== undefined && pp.length > 0) rawPath = pp;
      else if (longName !== null) rawPath = longName;
      else {
        const name = field(blk, 0, 100);
        let prefix = EMPTY;
        if (posix) {
          const star = blk.toString('latin1', 508, 512) === 'tar\0';
          prefix = field(blk, 345, star ? 131 : 155);
        }
        rawPath = prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), name]) : Buffer.from(name);
      }
      let rawLink: Buffer;
      const pl = pax.get('linkpath');
      if (pl !== undefined && pl.length > 0) rawLink = pl;
      else if (longLink !== null) rawLink = longLink;
      else rawLink = field(blk, 157, 100);
      localPax = null;
      longName = null;
      longLink = null;
      pendingAt = -1;

      let isSparse = flag === 'S';
      for (const k of pax.keys()) if (k.startsWith('GNU.sparse.')) isSparse = true;
      if (isSparse) {
        const real = pax.get('GNU.sparse.name') ?? rawPath;
        throw unsupported(
          `${showName(real)} ${where} is a sparse file (GNU tar --sparse); strata does not import sparse entries`,
          SPARSE_HINT,
        );
      }
      let type = TYPES[flag];
      if (type === undefined) throw refuseType(flag, rawPath, where);

      let path: string;
      let linkname: string;
      try {
        path = utf8.decode(rawPath);
      } catch {
        throw unsupported(`entry name ${showName(rawPath)} ${where} is not valid UTF-8`, 'repack the archive with UTF-8 file names');
      }
      try {
        linkname = utf8.decode(rawLink);
      } catch {
        throw unsupported(`link target of ${JSON.stringify(path)} ${where} is not valid UTF-8`, 'repack the archive with UTF-8 file names');
      }
      // Pre-POSIX tars mark directories only by the trailing slash.
      if (flag === '\0' && path.endsWith('/')) type = 'dir';

      const ew = `${JSON.stringify(path)} ${where}`;
      let size = rawSize;
      const ps = pax.get('size');
      if (ps !== undefined && ps.length > 0) size = paxInteger(ps, 'size', ew);
      let uid = parseNumber(blk, 108, 8, 'uid', ew);
      let gid = parseNumber(blk, 116, 8, 'gid', ew);
      let mtime = parseNumber(blk, 136, 12, 'mtime', ew);
      const pu = pax.get('uid');
      if (pu !== undefined && pu.length > 0) uid = paxInteger(pu, 'uid', ew);
      const pg = pax.get('gid');
      if (pg !== undefined && pg.length > 0) gid = paxInteger(pg, 'gid', ew);
      const pm = pax.get('mtime');
      if (pm !== undefined && pm.length > 0) mtime = paxTime(pm, ew);
      const mode = parseNumber(blk, 100, 8, 'mode', ew) & 0o7777;

      let devmajor = 0;
      let devminor = 0;
      if ((type === 'char' || type === 'block') && (posix || gnu)) {
        devmajor = parseNumber(blk, 329, 8, 'devmajor', ew);
        devminor = parseNumber(blk, 337, 8, 'devminor', ew);
      }
      let uname = '';
      let gname = '';
      if (posix || gnu) {
        uname = utf8Lossy.decode(field(blk, 265, 32));
        gname = utf8Lossy.decode(field(blk, 297, 32));
      }
      const pun = pax.get('uname');
      if (pun !== undefined && pun.length > 0) uname = utf8Lossy.decode(pun);
      const pgn = pax.get('gname');
      if (pgn !== undefined && pgn.length > 0) gname = utf8Lossy.decode(pgn);

      const xattrs = new Map<string, Buffer>();
      let aclAccess: string | undefined;
      let aclDefault: string | undefined;
      for (const [k, v] of pax) {
        if (k.startsWith('LIBARCHIVE.xattr.')) {
          const name = decodeLibarchiveName(k.slice(17), ew);
          if (!xattrs.has(name)) xattrs.set(name, Buffer.from(v.toString('latin1'), 'base64'));
        } else if (k === 'SCHILY.acl.access') aclAccess = paxText(v, k, ew);
        else if (k === 'SCHILY.acl.default') aclDefault = paxText(v, k, ew);
      }
      // Raw SCHILY values win over base64 ones for the same name.
      for (const [k, v] of pax) if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice(13), v);

      // Only files carry a body, and hard links in pax archives ("hard link with data");
      // older writers (Solaris tar, star) put the target's size on a link and no data.
      const dataSize = type === 'file' || (type === 'hardlink' && sawPax) ? size : 0;
      const header: TarHeader = {
        path, type, mode, uid, gid, size: dataSize, mtime, linkname, devmajor, devminor,
        uname, gname, xattrs, pax, offset: off, dataOffset: input.offset,
      };
      if (aclAccess !== undefined) header.aclAccess = aclAccess;
      if (aclDefault !== undefined) header.aclDefault = aclDefault;

      const state = { remaining: dataSize, live: true };
      const body = (async function* (): AsyncGenerator<Buffer> {
        if (!state.live) throw new Error(`the body of ${ew} was read after moving to the next entry`);
        while (state.remaining > 0) {
          const c = await input.take(state.remaining);
          if (c.length === 0) {
            throw truncated(`archive ends inside the body of ${ew} (${state.remaining} of ${dataSize} bytes missing)`);
          }
          state.remaining -= c.length;
          yield c;
        }
      })();
      try {
        yield { header, body };
      } finally {
        state.live = false;
      }
      if (state.remaining > 0) {
        const r = state.remaining;
        if ((await input.skip(r)) < r) {
          throw truncated(`archive ends inside the body of ${ew} (${dataSize} bytes expected)`);
        }
        state.remaining = 0;
      }
      const pad = (BLOCK - (dataSize % BLOCK)) % BLOCK;
      if (pad > 0 && (await input.skip(pad)) < pad) {
        throw truncated(`archive ends inside the padding after ${ew}`);
      }
    }
  } finally {
    if (!finished || input instanceof FileInput) await input.close();
  }
}

function hasUstarMagic(b: Buffer): boolean {
  return b.length >= 262 && b.toString('latin1', 257, 262) === 'ustar';
}

function notATar(): StrataError {
  return corrupt('not a tar archive', 'is it compressed with something other than gzip or zstd?');
}

function paxText(v: Buffer, key: string, where: string): string {
  try {
    return utf8.decode(v);
  } catch {
    throw unsupported(`pax ${key} of ${where} is not valid UTF-8`, 'repack the archive');
  }
}

/** libarchive writes xattr names in pax keys with '%XX' escapes for '%', '=' and
 *  non-printable bytes. */
function decodeLibarchiveName(s: string, where: string): string {
  if (!s.includes('%')) return s;
  const bytes = Buffer.from(s, 'utf8');
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === 0x25 && i + 2 < bytes.length && isHex(bytes[i + 1]!) && isHex(bytes[i + 2]!)) {
      out.push(parseInt(String.fromCharCode(bytes[i + 1]!, bytes[i + 2]!), 16));
      i += 2;
    } else out.push(c);
  }
  try {
    return utf8.decode(Buffer.from(out));
  } catch {
    throw unsupported(`an xattr name of ${where} is not valid UTF-8`, 'repack the archive');
  }
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function refuseType(flag: string, rawPath: Buffer, where: string): StrataError {
  const name = `${showName(rawPath)} ${where}`;
  switch (flag) {
    case 'M':
      return unsupported(
        `${name} continues a file from another volume (GNU tar --multi-volume); strata does not import multi-volume archives`,
        'repack as a single-volume archive',
      );
    case 'D':
      return unsupported(
        `${name} is an incremental-dump directory (GNU tar --listed-incremental); strata does not import incremental archives`,
        'repack as a full, non-incremental archive',
      );
    case 'V':
      return unsupported(
        `the archive has a volume label ${showName(rawPath)} (GNU tar --label); strata does not import labelled archives`,
        'repack without --label',
      );
    case 'N':
      return unsupported(`${name} is an old GNU long-name entry (type 'N'); strata does not import it`, 'repack with a current tar');
    default: {
      const shown = /^[\x21-\x7e]$/.test(flag) ? `'${flag}'` : `0x${flag.charCodeAt(0).toString(16).padStart(2, '0')}`;
      return unsupported(`${name} has an entry type strata does not know (${shown})`, 'repack with GNU tar --format=pax');
    }
  }
}

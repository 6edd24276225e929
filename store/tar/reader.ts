/**
 * strata's streaming tar reader: POSIX ustar + pax, GNU and old-GNU, v7, star, bsdtar.
 * The header block's layout and codec are in header.ts, pax records in pax.ts.
 *
 * - GNU 'L' / 'K' headers carry the next entry's long name / link target as their body.
 * - The archive ends with a zero block (normally two; a lone one is accepted).
 * - User and group names (uname, gname, and their pax records) are not read: a canonical
 *   layer keeps numeric ids only, and decoding them cost two strings per entry.
 */
import { readSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { ReadAhead } from '../../native/readahead.js';
import type { StrataError } from '../errors.js';
import type { EntryType } from '../types.js';
import {
  BLOCK, checksumOk, cstring, decodeNumber, decodePath, ENTRY_TYPE, FIELD, fieldText, flavourOf, hasUstarMagic, isZeroBlock, NUMERIC,
  EntryAt, padding, pathText, showName, tarCorrupt, tarTruncated, tarUnsupported,
} from './header.js';
import { addXattrs, decodePaxRecords, GlobalPax, isXattrKey, paxInteger, paxText, paxTime } from './pax.js';

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
  /**
   * Extended attributes by name, values byte-exact: `SCHILY.xattr.<name>` (raw bytes, as GNU
   * tar, star, umoci write them) and `LIBARCHIVE.xattr.<%-escaped name>` (base64, bsdtar).
   * When both name the same attribute the SCHILY raw value wins (bsdtar writes both, equal).
   * system.posix_acl_* xattrs are kept here as found; turning them into ACL text is ingest's.
   * Global ('g') xattr records are in it too; the map may be shared by several entries, so
   * it must not be modified (copy it).
   */
  xattrs: ReadonlyMap<string, Buffer>;
  /** `SCHILY.acl.access` / `SCHILY.acl.default` text exactly as stored (GNU: newline
   *  separated, bsdtar: comma separated). */
  aclAccess?: string;
  aclDefault?: string;
  /**
   * The records of this entry's own pax 'x' header. Global ('g') records are not repeated
   * here: they are applied once, to the fields above (pax.ts, GlobalPax).
   */
  pax: ReadonlyMap<string, Buffer>;
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
  body: TarBody;
}

/**
 * An entry's body: its chunks, asked for with a promise (as any async iterable) or, when the
 * input holds the next one already, without (`nextNow`). A tree of small files is a body per
 * entry, nearly every one in the chunk the header came in, and each chunk awaited cost two
 * promises and a turn of the microtask queue.
 */
export interface TarBody extends AsyncIterable<Buffer>, AsyncIterator<Buffer, undefined> {
  /** The next chunk when the input holds it; null at the body's end; undefined when only next() can give it. */
  nextNow(): Buffer | null | undefined;
}

/** Metadata bodies (pax headers, GNU long names) are read whole; bound them. */
const MAX_PAX_SIZE = 64 * 1024 * 1024;
const MAX_LONGNAME_SIZE = 1024 * 1024;
const EMPTY: Buffer = Buffer.alloc(0);

const utf8 = new TextDecoder('utf-8', { fatal: true });
const strictUtf8 = (b: Buffer): string => utf8.decode(b);

/**
 * A pull-based byte source that hands out views of its chunks, copying only when a requested
 * block straddles two of them. Subclasses say where chunks come from and how to skip. The
 * unread bytes are `buf[at..]`: a cursor, so that handing out a view makes one object, not
 * two. `readNow` and `skipNow` answer from those bytes without a promise (a header and its
 * padding mostly are there already).
 */
abstract class ChunkInput {
  protected buf: Buffer = EMPTY;
  protected at = 0;
  /** Absolute offset of the next byte handed out. */
  offset = 0;

  /** Makes the unread bytes non-empty; false at the end of the input. */
  protected abstract fill(): Promise<boolean>;
  /** Skips n bytes; returns how many were skipped (fewer only at end of input). */
  abstract skip(n: number): Promise<number>;
  abstract drain(): Promise<void>;
  abstract close(): Promise<void>;

  protected get unread(): number {
    return this.buf.length - this.at;
  }

  /** Whether the input holds n unread bytes already. */
  holds(n: number): boolean {
    return this.unread >= n;
  }

  /** The next n bytes when the input holds them already, not consumed; else undefined. */
  peekNow(n: number): Buffer | undefined {
    return this.unread < n ? undefined : this.buf.subarray(this.at, this.at + n);
  }

  /** Exactly n bytes when the input holds them already, else undefined (nothing consumed). */
  readNow(n: number): Buffer | undefined {
    if (this.unread < n) return undefined;
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    this.offset += n;
    return b;
  }

  /** Skips n bytes when the input holds them already (true), else does nothing (false). */
  skipNow(n: number): boolean {
    if (this.unread < n) return false;
    this.at += n;
    this.offset += n;
    return true;
  }

  /** Exactly n bytes, or fewer only when the input ends. */
  async read(n: number): Promise<Buffer> {
    if (this.unread === 0) await this.fill();
    const now = this.readNow(n);
    if (now) return now;
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (this.unread === 0 && !(await this.fill())) return out.subarray(0, got);
      const k = Math.min(n - got, this.unread);
      this.buf.copy(out, got, this.at, this.at + k);
      this.at += k;
      this.offset += k;
      got += k;
    }
    return out;
  }

  /** Up to max bytes from the current chunk (no copy); empty at end of input. */
  async take(max: number): Promise<Buffer> {
    if (this.unread === 0 && !(await this.fill())) return EMPTY;
    return this.takeNow(max)!;
  }

  /** take, when the input holds bytes already; else undefined. */
  takeNow(max: number): Buffer | undefined {
    if (this.unread === 0) return undefined;
    const n = Math.min(max, this.unread);
    const b = this.at === 0 && n === this.buf.length ? this.buf : this.buf.subarray(this.at, this.at + n);
    this.at += n;
    this.offset += n;
    return b;
  }

  /** Makes `b` the unread bytes. */
  protected load(b: Buffer): void {
    this.buf = b;
    this.at = 0;
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
    while (this.unread === 0) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      const v = r.value;
      this.load(Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    }
    return true;
  }

  async skip(n: number): Promise<number> {
    if (this.skipNow(n)) return n;
    let done = 0;
    while (done < n) {
      const b = await this.take(n - done);
      if (b.length === 0) break;
      done += b.length;
    }
    return done;
  }

  async drain(): Promise<void> {
    this.load(EMPTY);
    while (await this.fill()) this.load(EMPTY);
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
  /** File position of the byte after buf. */
  private pos = 0;
  /**
   * How much the next fill reads: after a skip past buf (a body not read) the next bytes are
   * most likely a header, so a little is read and the size grows back as reads continue in
   * order. Reading FILE_CHUNK bytes after every large body read most of an archive of large
   * files only to skip it (base.tar's header pass: 0.33 s against 0.07 s).
   */
  private want = FILE_CHUNK;
  /**
   * The two buffers fills take turns with: a chunk handed out stays intact through the next
   * fill, and the reader itself keeps no view across one (long names and pax values are
   * copied). A fresh buffer per fill had every byte of a layer allocated, faulted in and
   * collected: the 100,000-file import read 171 MB that way.
   */
  private readonly turns: Buffer[] = [];
  private turn = 0;

  /**
   * The archive read ahead on a thread of its own, for a reader that takes every byte in order
   * (native/readahead.ts): reading was a sixth of the main thread's time in an import of many
   * small files, copied from the page cache while the other core mostly waited.
   */
  private ahead: ReadAhead | undefined;

  constructor(
    private readonly path: string,
    private readonly sequential: boolean,
  ) {
    super();
  }

  private async open(): Promise<FileHandle> {
    if (!this.fh) {
      this.fh = await openFile(this.path, 'r');
      this.size = (await this.fh.stat()).size;
      if (this.sequential) this.ahead = ReadAhead.start(this.fh.fd, 0, this.size);
    }
    return this.fh;
  }

  protected async fill(): Promise<boolean> {
    if (this.unread > 0) return true;
    const fh = await this.open();
    if (this.pos >= this.size) return false;
    if (this.ahead !== undefined) {
      // Each chunk intact through the next fill, as with the two buffers below.
      const chunk = this.ahead.take();
      if (chunk === null) return false;
      this.pos += chunk.length;
      this.load(chunk);
      return true;
    }
    this.turn ^= 1;
    const whole = (this.turns[this.turn] ??= Buffer.allocUnsafe(FILE_CHUNK));
    const buf = whole.subarray(0, Math.min(this.want, this.size - this.pos));
    this.want = Math.min(FILE_CHUNK, this.want * 4);
    // A read from a plain file on the calling thread: one through the thread pool costs a
    // round trip per header (about 30 µs per entry of base.tar) for a read the page cache serves.
    const bytesRead = readSync(fh.fd, buf, 0, buf.length, this.pos);
    if (bytesRead === 0) return false;
    this.pos += bytesRead;
    this.load(buf.subarray(0, bytesRead));
    return true;
  }

  async skip(n: number): Promise<number> {
    await this.open();
    if (this.skipNow(n)) return n;
    const skipped = Math.min(n, this.unread + (this.size - this.pos));
    this.pos += skipped - this.unread;
    this.load(EMPTY);
    this.want = AFTER_SKIP;
    this.ahead?.seek(this.pos);
    this.offset += skipped;
    return skipped;
  }

  async drain(): Promise<void> {
    await this.open();
    this.offset += this.unread + (this.size - this.pos);
    this.load(EMPTY);
    this.pos = this.size;
    this.stopAhead();
  }

  async close(): Promise<void> {
    this.stopAhead();
    await this.fh?.close();
    this.fh = undefined;
  }

  private stopAhead(): void {
    this.ahead?.close();
    this.ahead = undefined;
  }
}

const FILE_CHUNK = 256 * 1024;
/** What the first fill after a skip past the buffered bytes reads: a header and a little more. */
const AFTER_SKIP = 16 * 1024;

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
export function readTar(source: AsyncIterable<Uint8Array>): TarEntries {
  return new TarReader(new Input(source));
}

/**
 * readTar over a plain (uncompressed) archive on disk. Bodies that are not read are skipped
 * by position, not read, so a pass over the headers costs the headers only. A body's chunk is
 * valid until the next one is asked for (the reader's buffers are reused): keep a copy.
 * `sequential`: the caller reads every body, so the archive is read ahead of it on a thread of
 * its own (a skip past what was read ahead drops it and reads on from there).
 */
export function readTarFile(path: string, opts: { sequential?: boolean } = {}): TarEntries {
  return new TarReader(new FileInput(path, opts.sequential ?? false));
}

/**
 * A tar stream's entries, asked for one at a time (`for await`, or `next()` and `nextNow()`
 * in turn; never two requests at once). Asking for the next entry moves past the body of the
 * one before, read or not.
 */
export interface TarEntries extends AsyncIterableIterator<TarEntry> {
  /**
   * The next entry when the input holds all of its headers already, without a promise; null
   * after the last; undefined when only next() can give it (more bytes are needed, the
   * archive ends here, or the input is damaged: next() then throws what it found).
   */
  nextNow(): TarEntry | null | undefined;
  /** Stops early: no more entries, and the input is closed. */
  return(): Promise<IteratorResult<TarEntry, undefined>>;
}

/**
 * The reader itself: an iterator, not an async generator, so that an entry whose headers are
 * in the input's buffer already costs no promise (`nextNow`). A layer of small files has
 * nearly every header there; as a generator each entry cost a queued request, a resumption
 * and a turn of the microtask queue (spec/decisions.md, Caches and speed).
 *
 * One header block is handled in three steps that both ways of asking share: `check` (the
 * block alone; nothing changes, so the synchronous way can still give up), the bytes of a
 * metadata header's body (taken from the buffer, or awaited), and `apply`.
 */
class TarReader implements TarEntries {
  private readonly globalPax = new GlobalPax();
  private localPax: Map<string, Buffer> | null = null;
  private longName: Buffer | null = null;
  private longLink: Buffer | null = null;
  private first = true;
  /** The end-of-archive block was read and the rest of the input drained. */
  private finished = false;
  /** No more entries: the end, an error, or the consumer stopped. */
  private done = false;
  private closed = false;
  /** An error the synchronous way met, which next() throws once the input is closed. */
  private failed = false;
  private failure: unknown;
  /** Offset of an 'x'/'L'/'K' header still waiting for its entry, else -1. */
  private pendingAt = -1;
  private sawPax = false;
  /** Bytes of 'x' records gathered for the next entry. */
  private pendingPax = 0;
  /** The entry handed out last: its unread body and padding come before the next header. */
  private body: Body | undefined;
  private pad = 0;

  // The block `check` looked at last, for `apply` (fields, not an object per block).
  private flag = '';
  private flavour: ReturnType<typeof flavourOf> = 'posix';
  private rawSize = 0;
  private where: EntryAt = new EntryAt(0);

  constructor(private readonly input: ChunkInput) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  nextNow(): TarEntry | null | undefined {
    if (this.done) return this.failed ? undefined : null;
    const input = this.input;
    try {
      if (!this.leaveNow()) return undefined;
      for (;;) {
        const blk = input.peekNow(BLOCK);
        // The end of the archive, and a short block, are next()'s to handle.
        if (blk === undefined || isZeroBlock(blk)) return undefined;
        this.check(blk, input.offset);
        const meta = isMeta(this.flag);
        if (!input.holds(meta ? BLOCK + this.rawSize + padding(this.rawSize) : BLOCK)) return undefined;
        input.skipNow(BLOCK);
        let data = EMPTY;
        if (meta) {
          data = input.readNow(this.rawSize)!;
          input.skipNow(padding(this.rawSize));
        }
        const entry = this.apply(blk, data);
        if (entry !== undefined) return entry;
      }
    } catch (e) {
      this.done = true;
      this.failed = true;
      this.failure = e;
      return undefined;
    }
  }

  async next(): Promise<IteratorResult<TarEntry, undefined>> {
    const now = this.nextNow();
    if (now === null) return DONE;
    if (now !== undefined) return { value: now, done: false };
    const input = this.input;
    try {
      if (this.failed) {
        this.failed = false;
        throw this.failure;
      }
      await this.leave();
      for (;;) {
        const off = input.offset;
        const blk = input.readNow(BLOCK) ?? (await input.read(BLOCK));
        if (blk.length < BLOCK) {
          if (this.first && blk.length === 0) {
            throw tarCorrupt('not a tar archive: the input is empty', 'is it the right file?');
          }
          if (this.first && !hasUstarMagic(blk)) throw notATar();
          if (blk.length === 0) {
            throw tarTruncated(`archive ends at byte ${off} without an end-of-archive block`);
          }
          throw tarTruncated(`archive ends inside the header at byte ${off}`);
        }
        if (isZeroBlock(blk)) {
          if (this.pendingAt >= 0) {
            throw tarCorrupt(`the extended header at byte ${this.pendingAt} is followed by the end of the archive, not by an entry`);
          }
          // A leading zero block is an empty archive (`tar -cf x.tar -T /dev/null`).
          this.done = true;
          this.finished = true;
          await input.drain();
          await this.close();
          return DONE;
        }
        this.check(blk, off);
        const entry = this.apply(blk, isMeta(this.flag) ? await this.readMeta() : EMPTY);
        if (entry !== undefined) return { value: entry, done: false };
      }
    } catch (e) {
      this.done = true;
      await this.close();
      throw e;
    }
  }

  async return(): Promise<IteratorResult<TarEntry, undefined>> {
    if (this.body !== undefined) this.body.live = false;
    this.done = true;
    this.failed = false;
    await this.close();
    return DONE;
  }

  /** Closes the input once; a stream drained to its end is closed already. */
  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.finished || this.input instanceof FileInput) await this.input.close();
  }

  /** Moves past the last entry's unread body and padding when the input holds them (true). */
  private leaveNow(): boolean {
    const body = this.body;
    if (body === undefined) return true;
    body.live = false;
    if (body.remaining > 0) {
      if (!this.input.skipNow(body.remaining)) return false;
      body.remaining = 0;
    }
    if (this.pad > 0) {
      if (!this.input.skipNow(this.pad)) return false;
      this.pad = 0;
    }
    this.body = undefined;
    return true;
  }

  private async leave(): Promise<void> {
    const body = this.body;
    if (body === undefined) return;
    body.live = false;
    const input = this.input;
    if (body.remaining > 0) {
      const r = body.remaining;
      if (!input.skipNow(r) && (await input.skip(r)) < r) {
        throw tarTruncated(`archive ends inside the body of ${body.where} (${body.size} bytes expected)`);
      }
      body.remaining = 0;
    }
    const pad = this.pad;
    if (pad > 0 && !input.skipNow(pad) && (await input.skip(pad)) < pad) {
      throw tarTruncated(`archive ends inside the padding after ${body.where}`);
    }
    this.pad = 0;
    this.body = undefined;
  }

  /**
   * Checks a header block (not the zero block) that starts at byte `off`, and a metadata
   * header's size, before anything is taken from the input. Changes nothing but the fields
   * `apply` reads.
   */
  private check(blk: Buffer, off: number): void {
    if (!checksumOk(blk)) {
      if (this.first && !hasUstarMagic(blk)) throw notATar();
      throw tarCorrupt(`bad header checksum at byte ${off}`, 'the archive is damaged');
    }
    const where = new EntryAt(off);
    const flag = String.fromCharCode(blk[156]!);
    const rawSize = decodeNumber(blk, NUMERIC.size, where);
    this.where = where;
    this.flag = flag;
    this.flavour = flavourOf(blk);
    this.rawSize = rawSize;
    if (flag === 'x') {
      // Several 'x' headers may precede one entry; together they are held to one header's bound.
      const pending = this.pendingPax + Math.max(rawSize, 0);
      if (pending > MAX_PAX_SIZE) throw tarCorrupt(`pax headers ${where} give one entry ${pending} bytes of records, more than strata accepts (${MAX_PAX_SIZE})`);
    }
    if (flag === 'x' || flag === 'g') checkMetaSize(rawSize, MAX_PAX_SIZE, 'pax header', where);
    else if (flag === 'L' || flag === 'K') checkMetaSize(rawSize, MAX_LONGNAME_SIZE, 'GNU long name', where);
  }

  /** A metadata header's body and padding, awaited. */
  private async readMeta(): Promise<Buffer> {
    const size = this.rawSize;
    const what = this.flag === 'x' || this.flag === 'g' ? 'pax header' : 'GNU long name';
    const data = await this.input.read(size);
    if (data.length < size) throw tarTruncated(`archive ends inside the ${what} ${this.where}`);
    const pad = padding(size);
    if ((await this.input.skip(pad)) < pad) throw tarTruncated(`archive ends inside the ${what} ${this.where}`);
    return data;
  }

  /**
   * The checked block, taken: a metadata header (`data`, its body) is kept for the entry it
   * precedes (undefined); an entry's header gives the entry, its body starting at the input's
   * offset.
   */
  private apply(blk: Buffer, data: Buffer): TarEntry | undefined {
    const { flag, flavour, rawSize, where, globalPax } = this;
    const off = where.offset;
    this.first = false;
    if (flag === 'x' || flag === 'g') {
      this.sawPax = true;
      if (flag === 'g') globalPax.apply(data, where);
      else {
        if (this.pendingAt < 0) this.pendingAt = off;
        this.pendingPax += Math.max(rawSize, 0);
        const local = (this.localPax ??= new Map());
        decodePaxRecords(data, where, (k, v) => local.set(k, v));
      }
      return undefined;
    }
    if (flag === 'L' || flag === 'K') {
      if (this.pendingAt < 0) this.pendingAt = off;
      if (flag === 'L') this.longName = Buffer.from(cstring(data));
      else this.longLink = Buffer.from(cstring(data));
      return undefined;
    }

    // The entry proper.
    const local: ReadonlyMap<string, Buffer> = this.localPax ?? NO_RECORDS;
    const paxPath = paxValue(local, globalPax, 'path');
    const paxLink = paxValue(local, globalPax, 'linkpath');
    const longPath = this.longName;
    const longTarget = this.longLink;
    this.localPax = null;
    this.longName = null;
    this.longLink = null;
    this.pendingAt = -1;
    this.pendingPax = 0;

    let isSparse = flag === 'S' || globalPax.sparse;
    for (const k of local.keys()) if (k.startsWith('GNU.sparse.')) isSparse = true;
    if (isSparse) {
      const real = local.get('GNU.sparse.name') ?? globalPax.get('GNU.sparse.name') ?? rawPathOf(paxPath, longPath, blk);
      throw tarUnsupported(
        `${showName(real)} ${where} is a sparse file (GNU tar --sparse); strata does not import sparse entries`,
        SPARSE_HINT,
      );
    }
    let type = ENTRY_TYPE[flag];
    if (type === undefined) throw refuseType(flag, rawPathOf(paxPath, longPath, blk), String(where));

    let path: string;
    let linkname: string;
    try {
      const p = paxPath ?? longPath;
      path = p !== undefined && p !== null ? strictUtf8(p) : pathText(blk, flavour, strictUtf8);
    } catch {
      throw tarUnsupported(`entry name ${showName(rawPathOf(paxPath, longPath, blk))} ${where} is not valid UTF-8`, 'repack the archive with UTF-8 file names');
    }
    try {
      const l = paxLink ?? longTarget;
      linkname = l !== undefined && l !== null ? strictUtf8(l) : fieldText(blk, FIELD.linkname[0], FIELD.linkname[1], strictUtf8);
    } catch {
      throw tarUnsupported(`link target of ${showName(path)} ${where} is not valid UTF-8`, 'repack the archive with UTF-8 file names');
    }
    // Pre-POSIX tars mark directories only by the trailing slash.
    if (flag === '\0' && path.endsWith('/')) type = 'dir';

    where.name = path; // from here on, messages name the entry
    let size = rawSize;
    const ps = paxValue(local, globalPax, 'size');
    if (ps !== undefined) size = paxInteger(ps, 'size', where);
    let uid = decodeNumber(blk, NUMERIC.uid, where);
    let gid = decodeNumber(blk, NUMERIC.gid, where);
    let mtime = decodeNumber(blk, NUMERIC.mtime, where);
    const pu = paxValue(local, globalPax, 'uid');
    if (pu !== undefined) uid = paxInteger(pu, 'uid', where);
    const pg = paxValue(local, globalPax, 'gid');
    if (pg !== undefined) gid = paxInteger(pg, 'gid', where);
    const pm = paxValue(local, globalPax, 'mtime');
    if (pm !== undefined) mtime = paxTime(pm, where);
    const mode = decodeNumber(blk, NUMERIC.mode, where) & 0o7777;
    if (size < 0 || uid < 0 || gid < 0) throw tarCorrupt(`negative size or owner (${size}, ${uid}:${gid}) in the header of ${where}`, 'the archive is damaged');

    let devmajor = 0;
    let devminor = 0;
    const ustar = flavour !== 'v7';
    if ((type === 'char' || type === 'block') && ustar) {
      devmajor = decodeNumber(blk, NUMERIC.devmajor, where);
      devminor = decodeNumber(blk, NUMERIC.devminor, where);
      if (devmajor < 0 || devminor < 0) throw tarCorrupt(`negative device number ${devmajor}:${devminor} in the header of ${where}`, 'the archive is damaged');
    }

    // The global xattrs are shared; an entry with xattr records of its own gets a copy.
    let xattrs = globalPax.xattrs(where);
    let ownXattrs = false;
    for (const k of local.keys()) if (isXattrKey(k)) ownXattrs = true;
    if (ownXattrs) {
      const m = new Map<string, Buffer>();
      addXattrs(local, m, where);
      for (const [k, v] of xattrs) if (!m.has(k)) m.set(k, v);
      xattrs = m;
    }
    const acc = local.get('SCHILY.acl.access') ?? globalPax.get('SCHILY.acl.access');
    const dfl = local.get('SCHILY.acl.default') ?? globalPax.get('SCHILY.acl.default');

    // Only files carry a body, and hard links in pax archives ("hard link with data");
    // older writers (Solaris tar, star) put the target's size on a link and no data.
    const dataSize = type === 'file' || (type === 'hardlink' && this.sawPax) ? size : 0;
    const header: TarHeader = {
      path, type, mode, uid, gid, size: dataSize, mtime, linkname, devmajor, devminor,
      xattrs, pax: local, offset: off, dataOffset: this.input.offset,
    };
    if (acc !== undefined) header.aclAccess = paxText(acc, 'SCHILY.acl.access', where);
    if (dfl !== undefined) header.aclDefault = paxText(dfl, 'SCHILY.acl.default', where);

    const body = new Body(this.input, dataSize, where);
    this.body = body;
    this.pad = padding(dataSize);
    return { header, body };
  }
}

/** Header types whose body is metadata for the entry that follows. */
function isMeta(flag: string): boolean {
  return flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K';
}

function checkMetaSize(size: number, max: number, what: string, where: EntryAt): void {
  if (size < 0) throw tarCorrupt(`${what} ${where} has a negative size`, 'the archive is damaged');
  if (size > max) throw tarCorrupt(`${what} ${where} is ${size} bytes, larger than strata accepts (${max})`);
}

const NO_RECORDS: ReadonlyMap<string, Buffer> = new Map();

/** An entry's pax value for `key`: its own record, else the global one; empty is none. */
function paxValue(local: ReadonlyMap<string, Buffer>, globalPax: GlobalPax, key: string): Buffer | undefined {
  const v = local.get(key) ?? globalPax.get(key);
  return v !== undefined && v.length > 0 ? v : undefined;
}

/** An entry's name as its bytes, for a message. */
function rawPathOf(paxPath: Buffer | undefined, longPath: Buffer | null, blk: Buffer): Buffer {
  return paxPath ?? longPath ?? decodePath(blk);
}
const DONE: IteratorReturnResult<undefined> = { value: undefined, done: true };

/**
 * An entry's body: its own iterator (no generator, whose every step costs promises of its
 * own; a million-file layer has a million bodies). It hands out what the input holds without
 * waiting, and refuses to be read once the reader has moved to the next entry.
 */
class Body implements TarBody {
  /** Bytes of the body not yet handed out. */
  remaining: number;
  /** False once the reader has moved on. */
  live = true;
  private closed = false;

  constructor(
    private readonly input: ChunkInput,
    readonly size: number,
    readonly where: EntryAt,
  ) {
    this.remaining = size;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  nextNow(): Buffer | null | undefined {
    if (!this.live) throw new Error(`the body of ${this.where} was read after moving to the next entry`);
    if (this.closed || this.remaining === 0) return null;
    const c = this.input.takeNow(this.remaining);
    if (c !== undefined) this.remaining -= c.length;
    return c;
  }

  async next(): Promise<IteratorResult<Buffer, undefined>> {
    const now = this.nextNow();
    if (now === null) return DONE;
    if (now !== undefined) return { value: now, done: false };
    const c = await this.input.take(this.remaining);
    if (c.length === 0) {
      throw tarTruncated(`archive ends inside the body of ${this.where} (${this.remaining} of ${this.size} bytes missing)`);
    }
    this.remaining -= c.length;
    return { value: c, done: false };
  }

  /** A consumer that stops early (a `break`) gets no more of the body. */
  async return(): Promise<IteratorResult<Buffer, undefined>> {
    this.closed = true;
    return DONE;
  }
}

function notATar(): StrataError {
  return tarCorrupt('not a tar archive', 'is it compressed with something other than gzip or zstd?');
}

function refuseType(flag: string, rawPath: Buffer, where: string): StrataError {
  const name = `${showName(rawPath)} ${where}`;
  switch (flag) {
    case 'M':
      return tarUnsupported(
        `${name} continues a file from another volume (GNU tar --multi-volume); strata does not import multi-volume archives`,
        'repack as a single-volume archive',
      );
    case 'D':
      return tarUnsupported(
        `${name} is an incremental-dump directory (GNU tar --listed-incremental); strata does not import incremental archives`,
        'repack as a full, non-incremental archive',
      );
    case 'V':
      return tarUnsupported(
        `the archive has a volume label ${showName(rawPath)} (GNU tar --label); strata does not import labelled archives`,
        'repack without --label',
      );
    case 'N':
      return tarUnsupported(`${name} is an old GNU long-name entry (type 'N'); strata does not import it`, 'repack with a current tar');
    default: {
      const shown = /^[\x21-\x7e]$/.test(flag) ? `'${flag}'` : `0x${flag.charCodeAt(0).toString(16).padStart(2, '0')}`;
      return tarUnsupported(`${name} has an entry type strata does not know (${shown})`, 'repack with GNU tar --format=pax');
    }
  }
}

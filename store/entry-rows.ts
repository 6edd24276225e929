/**
 * The text of a cached entry list (cache/entries/<hex>.rows, local-store.ts): `[`, then a row
 * per entry, each on a line of its own and all but the last ending in `,`, then `\n]\n`. A row
 * is the entry's EntryRow array (local-store.ts) as JSON.stringify writes it:
 *
 *   [path, type, mode, uid, gid, mtime, size]              most entries
 *   [path, type, mode, uid, gid, mtime, size, linkname]    links (and anything with a linkname)
 *   [..., linkname or "", devmajor, devminor]              devices
 *
 * An import writes one row per entry and a layer read whose list is not cached hashes one per
 * entry, so rows are encoded straight into bytes here, in a buffer reused for the whole list,
 * instead of being built as strings and joined: at 100,000 entries the strings were a sixth of
 * an import's time.
 */
import type { LayerEntry } from './types.js';

/** Bytes of rows gathered before they are handed on. */
const CHUNK = 1 << 20;
/** The most bytes a number takes as JSON writes it ("-1.2345678901234567e+308"). */
const NUMBER_MAX = 24;
/** Strings JSON escapes: a quote, a backslash, a control character, any surrogate. */
const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const NEWLINE = 0x0a;
const TYPE_TEXT = new Map<string, Buffer>(['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'].map((t) => [t, Buffer.from(`,"${t}",`, 'latin1')]));

/**
 * Writes an entry list's bytes as entries come: `out` gets them a chunk at a time, as a view
 * valid only during the call (it writes or hashes them at once).
 */
export class EntryListBytes {
  private buf: Buffer;
  private used = 0;
  private first = true;

  /** `chunk`: bytes gathered before `out` gets them (smaller in tests). */
  constructor(
    private readonly out: (bytes: Buffer) => void,
    chunk = CHUNK,
  ) {
    this.buf = Buffer.allocUnsafe(chunk);
    this.buf[this.used++] = 0x5b; // [
  }

  add(e: LayerEntry): void {
    const hasLink = e.linkname !== undefined || e.devmajor !== undefined;
    const linkname = e.linkname ?? '';
    // UTF-8 takes at most 3 bytes per UTF-16 unit, an escape 6 ("\u001f").
    const bound = 16 + 6 * e.path.length + (hasLink ? 6 * linkname.length : 0) + 8 * (NUMBER_MAX + 1);
    if (this.used + bound > this.buf.length) {
      this.flush();
      if (bound > this.buf.length) this.buf = Buffer.allocUnsafe(bound);
    }
    const b = this.buf;
    let at = this.used;
    if (!this.first) b[at++] = COMMA;
    this.first = false;
    b[at++] = NEWLINE;
    b[at++] = 0x5b; // [
    at = writeString(b, at, e.path);
    const type = TYPE_TEXT.get(e.type);
    at += type ? type.copy(b, at) : b.write(`,"${e.type}",`, at, 'utf8');
    at = writeNumber(b, at, e.mode);
    b[at++] = COMMA;
    at = writeNumber(b, at, e.uid);
    b[at++] = COMMA;
    at = writeNumber(b, at, e.gid);
    b[at++] = COMMA;
    at = writeNumber(b, at, e.mtime);
    b[at++] = COMMA;
    at = writeNumber(b, at, e.size);
    if (hasLink) {
      b[at++] = COMMA;
      at = writeString(b, at, linkname);
    }
    if (e.devmajor !== undefined) {
      b[at++] = COMMA;
      at = writeNumber(b, at, e.devmajor);
      b[at++] = COMMA;
      at = writeNumber(b, at, e.devminor ?? 0);
    }
    b[at++] = 0x5d; // ]
    this.used = at;
  }

  /** Writes the list's end and hands on what is left. */
  end(): void {
    if (this.used + 3 > this.buf.length) this.flush();
    this.used += this.buf.write('\n]\n', this.used, 'latin1');
    this.flush();
  }

  private flush(): void {
    if (this.used > 0) this.out(this.buf.subarray(0, this.used));
    this.used = 0;
  }
}

/** `s` as JSON writes it, at `at`; returns where it ends. */
function writeString(b: Buffer, at: number, s: string): number {
  // Most paths are printable ASCII that JSON leaves as it is: copied a code at a time (a
  // Buffer.write per string cost more than the copy).
  let i = at + 1;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c < 0x20 || c === QUOTE || c === BACKSLASH || c >= 0x80) return writeOtherString(b, at, s);
    b[i++] = c;
  }
  b[at] = QUOTE;
  b[i++] = QUOTE;
  return i;
}

function writeOtherString(b: Buffer, at: number, s: string): number {
  if (JSON_ESCAPED.test(s)) return at + b.write(JSON.stringify(s), at, 'utf8');
  b[at++] = QUOTE;
  at += b.write(s, at); // UTF-8, the default
  b[at++] = QUOTE;
  return at;
}

/** `n` as JSON (and a template string) writes it, at `at`; returns where it ends. */
function writeNumber(b: Buffer, at: number, n: number): number {
  if (!(Number.isSafeInteger(n) && n >= 0)) return at + b.write(String(n), at, 'latin1');
  if (n < 10) {
    b[at] = 0x30 + n;
    return at + 1;
  }
  let digits = 1;
  for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++;
  for (let i = at + digits - 1; i >= at; i--) {
    b[i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  return at + digits;
}

/**
 * POSIX pax extended headers: record encode and decode side by side, and the archive-wide
 * state of global ('g') records.
 *
 * A pax header's body is records `<len> <key>=<value>\n`, `len` counting the whole record in
 * bytes (its own digits included). Values are bytes, not text: SCHILY.xattr.* values are raw
 * xattr bytes (0xff and '\n' included). An 'x' header's records apply to the next entry only;
 * a 'g' header's to every later entry, under any 'x' records of the same key. `path`,
 * `linkpath`, `uid`, `gid`, `size`, `mtime`, `uname`, `gname` override the ustar fields.
 * Keys strata reads besides those: `SCHILY.xattr.<name>` (raw value), `LIBARCHIVE.xattr.<%-
 * escaped name>` (base64 value), `SCHILY.acl.access` / `SCHILY.acl.default` (text), and any
 * `GNU.sparse.*` (refused: sparse files).
 *
 * Global records are applied once, when their header is read (GlobalPax): an entry looks up
 * the few keys it needs and shares the global xattr map, so a large global header costs its
 * size once, not once per later entry.
 */
import { tarCorrupt, tarUnsupported, type Where } from './header.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Calls `record(key, value)` for each record of a pax header body, in order. Values are
 * copied out of `data`. Trailing NUL padding is tolerated.
 */
export function decodePaxRecords(data: Buffer, where: Where, record: (key: string, value: Buffer) => void): void {
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) {
      for (let j = i; j < data.length; j++) {
        if (data[j] !== 0) throw tarCorrupt(`malformed pax record in the pax header ${where}`);
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
      throw tarCorrupt(`malformed pax record at byte ${i} of the pax header ${where}`);
    }
    const end = i + len; // one past the record's '\n'
    if (data[end - 1] !== 0x0a) {
      throw tarCorrupt(`malformed pax record at byte ${i} of the pax header ${where} (no newline)`);
    }
    const eq = data.indexOf(0x3d, j + 1);
    if (eq < 0 || eq >= end - 1 || eq === j + 1) {
      throw tarCorrupt(`malformed pax record at byte ${i} of the pax header ${where} (no key=value)`);
    }
    let key: string;
    try {
      key = utf8.decode(data.subarray(j + 1, eq));
    } catch {
      throw tarUnsupported(`pax record key at byte ${i} of the pax header ${where} is not valid UTF-8`, 'repack the archive with UTF-8 names');
    }
    record(key, Buffer.from(data.subarray(eq + 1, end - 1)));
    i = end;
  }
}

/** `<len> <key>=<value>\n` records, sorted by key bytes; len counts the whole record. */
export function encodePaxRecords(records: ReadonlyArray<readonly [string, Buffer]>): Buffer {
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

export function paxInteger(v: Buffer, key: string, where: Where): number {
  const s = v.toString('latin1');
  if (!/^[0-9]{1,16}$/.test(s)) throw tarCorrupt(`malformed pax ${key} value ${JSON.stringify(s.slice(0, 40))} ${where}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw tarUnsupported(`pax ${key} of the entry ${where} is too large`, 'repack the archive');
  return n;
}

/** Floor of a pax decimal time `[-]digits[.digits]`. */
export function paxTime(v: Buffer, where: Where): number {
  const s = v.toString('latin1');
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]*))?$/.exec(s);
  if (m === null) throw tarCorrupt(`malformed pax mtime value ${JSON.stringify(s.slice(0, 40))} ${where}`);
  const whole = Number(m[2]);
  const frac = m[3] !== undefined && /[1-9]/.test(m[3]);
  if (m[1] === '-') return frac ? -whole - 1 : -whole === 0 ? 0 : -whole;
  return whole;
}

export function paxText(v: Buffer, key: string, where: Where): string {
  try {
    return utf8.decode(v);
  } catch {
    throw tarUnsupported(`pax ${key} of ${where} is not valid UTF-8`, 'repack the archive');
  }
}

const SCHILY_XATTR = 'SCHILY.xattr.';
const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.';

/** True for a key that names an xattr (either dialect). */
export function isXattrKey(k: string): boolean {
  return k.startsWith(SCHILY_XATTR) || k.startsWith(LIBARCHIVE_XATTR);
}

/**
 * Adds the xattrs named by `records` to `into`: `LIBARCHIVE.xattr.*` (base64) where `into`
 * has no value yet, then `SCHILY.xattr.*` (raw bytes) over anything (bsdtar writes both,
 * equal; the raw form is exact).
 */
export function addXattrs(records: ReadonlyMap<string, Buffer>, into: Map<string, Buffer>, where: Where): void {
  for (const [k, v] of records) {
    if (!k.startsWith(LIBARCHIVE_XATTR)) continue;
    const name = decodeLibarchiveName(k.slice(LIBARCHIVE_XATTR.length), where);
    if (!into.has(name)) into.set(name, Buffer.from(v.toString('latin1'), 'base64'));
  }
  for (const [k, v] of records) if (k.startsWith(SCHILY_XATTR)) into.set(k.slice(SCHILY_XATTR.length), v);
}

/** libarchive writes xattr names in pax keys with '%XX' escapes for '%', '=' and
 *  non-printable bytes. */
function decodeLibarchiveName(s: string, where: Where): string {
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
    throw tarUnsupported(`an xattr name of ${where} is not valid UTF-8`, 'repack the archive');
  }
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** Bytes of global records an archive may hold in force at once (keys + values). */
export const MAX_GLOBAL_PAX = 64 * 1024 * 1024;
/**
 * Bytes of xattrs and ACL text the global records may give to entries, summed over the
 * entries: a global xattr is real data of every later entry (it lands in each one's manifest
 * entry), so one record must not multiply without bound.
 */
export const MAX_GLOBAL_XATTR_SPREAD = 256 * 1024 * 1024;

/**
 * The global records in force. `apply` merges one 'g' header (an empty value removes the key,
 * as POSIX says); lookups are O(1); the xattrs the globals define are resolved once per 'g'
 * header that touches one, into a map every entry without xattr records of its own shares.
 */
export class GlobalPax {
  private readonly records = new Map<string, Buffer>();
  private bytes = 0;
  private sparseKeys = 0;
  private xattrsDirty = false;
  private resolved: ReadonlyMap<string, Buffer> = new Map();
  private resolvedBytes = 0;
  private spread = 0;

  get size(): number {
    return this.records.size;
  }

  get(key: string): Buffer | undefined {
    return this.records.get(key);
  }

  /** True when a GNU.sparse.* record is in force. */
  get sparse(): boolean {
    return this.sparseKeys > 0;
  }

  /** Merges the records of one 'g' header body. */
  apply(data: Buffer, where: Where): void {
    decodePaxRecords(data, where, (key, value) => {
      const old = this.records.get(key);
      if (old !== undefined) {
        this.bytes -= key.length + old.length;
        if (key.startsWith('GNU.sparse.')) this.sparseKeys--;
      }
      if (value.length === 0) this.records.delete(key);
      else {
        this.records.set(key, value);
        this.bytes += key.length + value.length;
        if (key.startsWith('GNU.sparse.')) this.sparseKeys++;
      }
      if (isXattrKey(key) || key.startsWith('SCHILY.acl.')) this.xattrsDirty = true;
    });
    if (this.bytes > MAX_GLOBAL_PAX) {
      throw tarUnsupported(
        `the global pax headers ${where} hold ${this.bytes} bytes of records, more than strata accepts (${MAX_GLOBAL_PAX})`,
        'repack the archive without global (typeflag g) headers',
      );
    }
  }

  /**
   * The xattrs the global records give to one entry (shared, never to be modified). Their
   * bytes, and those of global ACL records, count against MAX_GLOBAL_XATTR_SPREAD.
   */
  xattrs(where: Where): ReadonlyMap<string, Buffer> {
    if (this.xattrsDirty) {
      const m = new Map<string, Buffer>();
      addXattrs(this.records, m, where);
      this.resolved = m;
      this.resolvedBytes = 0;
      for (const [k, v] of m) this.resolvedBytes += k.length + v.length;
      for (const k of ['SCHILY.acl.access', 'SCHILY.acl.default']) this.resolvedBytes += this.records.get(k)?.length ?? 0;
      this.xattrsDirty = false;
    }
    if (this.resolvedBytes > 0) {
      this.spread += this.resolvedBytes;
      if (this.spread > MAX_GLOBAL_XATTR_SPREAD) {
        throw tarUnsupported(
          `the global pax headers give ${this.resolvedBytes} bytes of xattrs and ACLs to every entry; at ${where} that passes ${MAX_GLOBAL_XATTR_SPREAD} bytes in all`,
          'repack the archive with the xattrs on the entries that carry them (no global xattr records)',
        );
      }
    }
    return this.resolved;
  }
}

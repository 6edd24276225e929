/**
 * LayerEntry as a spill record (store/spill.ts): a sorter moves entries through disk without
 * losing a byte of their metadata. Binary, little-endian, because a million-entry build
 * encodes and decodes every entry two or three times (as JSON that was a tenth of an import's
 * time at scale, and most of its garbage):
 *
 *   u8 type          index in TYPES
 *   u8 flags         1 linkname, 2 device numbers, 4 xattrs, 8 acl, 16 acl.access,
 *                    32 acl.default (a field that is null or undefined is absent)
 *   u16 mode
 *   f64 uid, gid, mtime, size
 *   str path
 *   [str linkname] [f64 devmajor, f64 devminor] [u32 n, n × (str name, bytes value)]
 *   [str access] [str default]
 *   value extra      (what the caller keeps beside the entry: a layer index, a content locator)
 *
 * `str` and `bytes` are a u32 length and that many bytes (strings as UTF-8). A `value` is a
 * tag byte, then: nothing (undefined, null), an f64 (number), a str (string), a u32 count and
 * that many values (array), a bytes (a Buffer: a caller's own binary form, read back as a
 * Buffer of its own), or a str of JSON (anything else). Strings must be well-formed
 * UTF-16 (every path here was decoded from UTF-8); a lone surrogate is refused rather than
 * turned into U+FFFD on the way back.
 */
import type { RecordCodec } from '../spill.js';
import type { EntryType, LayerEntry } from '../types.js';

const TYPES: EntryType[] = ['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'];
const TYPE_CODE = new Map(TYPES.map((t, i) => [t, i]));

const F_LINK = 1;
const F_DEV = 2;
const F_XATTRS = 4;
const F_ACL = 8;
const F_ACCESS = 16;
const F_DEFAULT = 32;

const V_UNDEFINED = 0;
const V_NULL = 1;
const V_NUMBER = 2;
const V_STRING = 3;
const V_ARRAY = 4;
const V_JSON = 5;
const V_BYTES = 6;

/**
 * The encoder's buffer, grown as needed: encodeEntry returns a view of it, valid until the
 * next call (SpillSorter copies it into its run at once).
 */
let out = Buffer.allocUnsafe(64 << 10);
let pos = 0;

function room(n: number): void {
  if (pos + n <= out.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, pos + n));
  out.copy(bigger, 0, 0, pos);
  out = bigger;
}

function putF64(v: number): void {
  room(8);
  out.writeDoubleLE(v, pos);
  pos += 8;
}

function putU32(v: number): void {
  room(4);
  out.writeUInt32LE(v, pos);
  pos += 4;
}

/** String.prototype.isWellFormed (Node 20; not in the ES2022 lib this project compiles with). */
const wellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

function putStr(s: string): void {
  if (!wellFormed(s)) throw new Error(`entry codec: string ${JSON.stringify(s)} is not well-formed UTF-16`);
  room(4 + s.length * 3);
  const n = out.write(s, pos + 4); // UTF-8, the default: no encoding lookup per string
  out.writeUInt32LE(n, pos);
  pos += 4 + n;
}

function putBytes(b: Buffer): void {
  room(4 + b.length);
  out.writeUInt32LE(b.length, pos);
  b.copy(out, pos + 4);
  pos += 4 + b.length;
}

function putValue(v: unknown): void {
  room(1);
  if (v === undefined) out[pos++] = V_UNDEFINED;
  else if (v === null) out[pos++] = V_NULL;
  else if (typeof v === 'number') {
    out[pos++] = V_NUMBER;
    putF64(v);
  } else if (typeof v === 'string') {
    out[pos++] = V_STRING;
    putStr(v);
  } else if (Buffer.isBuffer(v)) {
    out[pos++] = V_BYTES;
    putBytes(v);
  } else if (Array.isArray(v)) {
    out[pos++] = V_ARRAY;
    putU32(v.length);
    for (const x of v) putValue(x);
  } else {
    out[pos++] = V_JSON;
    putStr(JSON.stringify(v));
  }
}

/** The entry and `extra` as one record: a view of a shared buffer, valid until the next call. */
export function encodeEntry(e: LayerEntry, extra?: unknown): Buffer {
  pos = 0;
  room(36);
  const type = TYPE_CODE.get(e.type);
  if (type === undefined) throw new Error(`entry codec: unknown type ${String(e.type)}`);
  const xattrs = e.xattrs !== undefined && e.xattrs.size > 0 ? e.xattrs : undefined;
  const acl = e.acl;
  let flags = 0;
  if (e.linkname != null) flags |= F_LINK;
  if (e.devmajor != null) flags |= F_DEV;
  if (xattrs) flags |= F_XATTRS;
  if (acl) flags |= F_ACL | (acl.access != null ? F_ACCESS : 0) | (acl.default != null ? F_DEFAULT : 0);
  out[0] = type;
  out[1] = flags;
  out.writeUInt16LE(e.mode, 2);
  out.writeDoubleLE(e.uid, 4);
  out.writeDoubleLE(e.gid, 12);
  out.writeDoubleLE(e.mtime, 20);
  out.writeDoubleLE(e.size, 28);
  pos = 36;
  putStr(e.path);
  if (flags & F_LINK) putStr(e.linkname!);
  if (flags & F_DEV) {
    putF64(e.devmajor!);
    putF64(e.devminor ?? 0);
  }
  if (xattrs) {
    putU32(xattrs.size);
    for (const [k, v] of xattrs) {
      putStr(k);
      putBytes(v);
    }
  }
  if (flags & F_ACCESS) putStr(acl!.access!);
  if (flags & F_DEFAULT) putStr(acl!.default!);
  putValue(extra);
  return out.subarray(0, pos);
}

/** Reads one record; every string and buffer it returns is its own (not a view of `b`). */
export function decodeEntry(b: Buffer): { entry: LayerEntry; extra?: unknown } {
  const r = new Reader(b);
  const type = TYPES[b[0]!];
  if (type === undefined) throw new Error(`entry codec: unknown type code ${b[0]}`);
  const flags = b[1]!;
  r.at = 36;
  const entry: LayerEntry = { path: r.str(), type, mode: b.readUInt16LE(2), uid: b.readDoubleLE(4), gid: b.readDoubleLE(12), mtime: b.readDoubleLE(20), size: b.readDoubleLE(28) };
  if (flags & F_LINK) entry.linkname = r.str();
  if (flags & F_DEV) {
    entry.devmajor = r.f64();
    entry.devminor = r.f64();
  }
  if (flags & F_XATTRS) {
    const xattrs = new Map<string, Buffer>();
    for (let n = r.u32(); n > 0; n--) {
      const k = r.str();
      xattrs.set(k, r.bytes());
    }
    entry.xattrs = xattrs;
  }
  if (flags & F_ACL) {
    entry.acl = {};
    if (flags & F_ACCESS) entry.acl.access = r.str();
    if (flags & F_DEFAULT) entry.acl.default = r.str();
  }
  const extra = r.value();
  if (r.at !== b.length) throw new Error(`entry codec: record of ${b.length} bytes, ${r.at} read`);
  return extra === undefined ? { entry } : { entry, extra };
}

class Reader {
  at = 0;
  constructor(private readonly b: Buffer) {}

  f64(): number {
    const v = this.b.readDoubleLE(this.at);
    this.at += 8;
    return v;
  }

  u32(): number {
    const v = this.b.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }

  str(): string {
    const n = this.u32();
    const end = this.at + n;
    if (end > this.b.length) throw new RangeError('entry codec: string past the record');
    const s = this.b.toString(undefined, this.at, end); // UTF-8, the default: no encoding lookup per string
    this.at = end;
    return s;
  }

  bytes(): Buffer {
    const n = this.u32();
    const end = this.at + n;
    if (end > this.b.length) throw new RangeError('entry codec: bytes past the record');
    const v = Buffer.from(this.b.subarray(this.at, end));
    this.at = end;
    return v;
  }

  value(): unknown {
    const tag = this.b[this.at++];
    switch (tag) {
      case V_UNDEFINED:
        return undefined;
      case V_NULL:
        return null;
      case V_NUMBER:
        return this.f64();
      case V_STRING:
        return this.str();
      case V_ARRAY: {
        // Sized once: grown by push, a short array's first store reserves room for 17 elements.
        const n = this.u32();
        const a: unknown[] = new Array(n);
        for (let i = 0; i < n; i++) a[i] = this.value();
        return a;
      }
      case V_BYTES:
        return this.bytes();
      case V_JSON:
        return JSON.parse(this.str());
      default:
        throw new Error(`entry codec: unknown value tag ${tag}`);
    }
  }
}

/** Rough bytes an entry holds in memory, for a sorter's budget. */
export function entrySize(e: LayerEntry): number {
  let n = 120 + e.path.length * 2 + (e.linkname?.length ?? 0) * 2;
  for (const [k, v] of e.xattrs ?? []) n += k.length * 2 + v.length + 64;
  if (e.acl) n += ((e.acl.access?.length ?? 0) + (e.acl.default?.length ?? 0)) * 2 + 64;
  return n;
}

/** A RecordCodec for entries with an extra value of type X. */
export function entryCodec<X>(): RecordCodec<{ entry: LayerEntry; extra?: X }> {
  return {
    encode: (r) => encodeEntry(r.entry, r.extra),
    decode: (b) => decodeEntry(b) as { entry: LayerEntry; extra?: X },
    size: (r) => entrySize(r.entry) + 32,
  };
}

/**
 * The xattr table. Three parts, in this order:
 *
 * Key/value area (metadata blocks), per attribute:
 *   key:   u16 type (prefix id | XATTR_VALUE_OOL), u16 nameSize, u8[] name (without prefix)
 *   value: u32 valueSize, u8[] value — or, when the key has XATTR_VALUE_OOL, valueSize = 8
 *          and a u64 reference (relative to the area's start) to another value record
 *          (u32 size + bytes) holding the real value.
 * Id entries (16 bytes each, metadata blocks right after the area), one per attribute set:
 *   0 u64 reference to the set's first pair  8 u32 count (pairs)  12 u32 size (bytes of the
 *   pairs as stored, OOL pairs counting their 8-byte reference) — used by listxattr
 * Header (16, raw, at superblock.xattrIdTableStart):
 *   0 u64 kvStart (absolute)  8 u32 idCount  12 u32 unused (0), then u64[] id block locations.
 *
 * Inodes name a set by its index (extended inode types only). Prefix ids: 0 user., 1 trusted.,
 * 2 security.; the kernel's SquashFS driver reads no other namespace, so `system.*` (ACLs)
 * cannot be stored.
 *
 * strata's writer: pairs of a set sorted by full name bytes; identical sets share one id;
 * a value longer than 8 bytes that was already written is stored out of line (a reference to
 * the first copy); ids are assigned in inode-table order.
 */
import { createHash } from 'node:crypto';
import type { Codec } from '../shared/codecs.js';
import { encodeLocations, readLocations, tableBlocks, type TableSource } from './table.js';
import { MetaWriter, metaRef, METADATA_SIZE, type MetaReader, type Region } from './metadata.js';
import { INVALID_XATTR } from './inode.js';

export const XATTR = { user: 0, trusted: 1, security: 2 } as const;
export const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'] as const;
export const XATTR_VALUE_OOL = 0x0100;
export const XATTR_ID_ENTRY_SIZE = 16;
export const XATTR_ID_TABLE_HEADER_SIZE = 16;
/** Linux XATTR_NAME_MAX / XATTR_SIZE_MAX. */
export const MAX_XATTR_NAME = 255;
export const MAX_XATTR_VALUE = 65536;

/** Splits "trusted.foo" into its prefix id and the stored name; undefined if unsupported. */
export function splitXattrName(name: string): { type: number; rest: string } | undefined {
  for (let i = 0; i < XATTR_PREFIXES.length; i++) {
    const p = XATTR_PREFIXES[i]!;
    if (name.startsWith(p) && name.length > p.length) return { type: i, rest: name.slice(p.length) };
  }
  return undefined;
}

const u16 = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  return b;
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
};
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v, 0);
  return b;
};

/** One attribute to store: its prefix id, the name without prefix, the value. */
export interface XattrPair {
  full: Buffer;
  type: number;
  name: Buffer;
  value: Buffer;
}

/** Collects attribute sets while the inodes are written; encodes the table at the end. */
export class XattrTableWriter {
  private readonly kv: MetaWriter;
  private readonly ids: { ref: bigint; count: number; size: number }[] = [];
  private readonly sets = new Map<string, number>();
  private readonly values = new Map<string, bigint>();

  constructor(private readonly codec: Pick<Codec, 'compress'>) {
    this.kv = new MetaWriter(codec);
  }

  get count(): number {
    return this.ids.length;
  }

  /** The xattr index of a set of pairs (sorted here), stored once per distinct set. INVALID_XATTR for none. */
  add(pairs: XattrPair[]): number {
    if (pairs.length === 0) return INVALID_XATTR;
    const items = [...pairs].sort((a, b) => Buffer.compare(a.full, b.full));
    const h = createHash('sha256');
    for (const it of items) h.update(u32(it.full.length)).update(it.full).update(u32(it.value.length)).update(it.value);
    const setKey = h.digest('hex');
    const known = this.sets.get(setKey);
    if (known !== undefined) return known;
    const kv = this.kv;
    const ref = metaRef(kv.block, kv.offset);
    let size = 0;
    for (const it of items) {
      const vkey = it.value.length > 8 ? createHash('sha256').update(it.value).digest('hex') : undefined;
      const ool = vkey !== undefined ? this.values.get(vkey) : undefined;
      kv.write(u16(it.type | (ool !== undefined ? XATTR_VALUE_OOL : 0)));
      kv.write(u16(it.name.length));
      kv.write(it.name);
      size += 4 + it.name.length;
      if (ool !== undefined) {
        kv.write(u32(8));
        kv.write(u64(ool));
        size += 12;
      } else {
        if (vkey !== undefined) this.values.set(vkey, metaRef(kv.block, kv.offset));
        kv.write(u32(it.value.length));
        kv.write(it.value);
        size += 4 + it.value.length;
      }
    }
    const idx = this.ids.length;
    this.ids.push({ ref, count: items.length, size });
    this.sets.set(setKey, idx);
    return idx;
  }

  /**
   * The table's bytes when it starts at absolute `at`, and the absolute position of its
   * header (the superblock's xattrIdTableStart). Only for a table with at least one set.
   */
  encode(at: number): { bytes: Buffer; header: number } {
    const kvBytes = this.kv.end();
    const m = new MetaWriter(this.codec);
    for (const x of this.ids) {
      const b = Buffer.alloc(XATTR_ID_ENTRY_SIZE);
      b.writeBigUInt64LE(x.ref, 0);
      b.writeUInt32LE(x.count, 8);
      b.writeUInt32LE(x.size, 12);
      m.write(b);
    }
    const idBytes = m.end();
    const idsAt = at + kvBytes.length;
    const head = Buffer.alloc(XATTR_ID_TABLE_HEADER_SIZE);
    head.writeBigUInt64LE(BigInt(at), 0);
    head.writeUInt32LE(this.ids.length, 8);
    const header = idsAt + idBytes.length;
    return { bytes: Buffer.concat([kvBytes, idBytes, head, encodeLocations(m.starts.map((s) => idsAt + s))]), header };
  }
}

// ---------------------------------------------------------------------------------------
// Reading.

/** Where an image's xattr table is, read from its header. */
export interface XattrTableInfo {
  kvStart: number;
  /** End of the key/value area (the first id block). */
  kvEnd: number;
  count: number;
  /** Absolute positions of the id blocks. */
  idBlocks: number[];
  /** The header's position (superblock.xattrIdTableStart). */
  header: number;
}

/** Reads and checks the header at `at`; `bad(why)` makes the error for a broken one. */
export async function readXattrHeader(src: TableSource, at: number, directoryTableStart: number, bad: (why: string) => Error): Promise<XattrTableInfo> {
  const h = await src.readAt(at, XATTR_ID_TABLE_HEADER_SIZE, 'xattr table header');
  const kv = h.readBigUInt64LE(0);
  const count = h.readUInt32LE(8);
  if (kv >= BigInt(at) || kv <= BigInt(directoryTableStart)) throw bad(`xattr key/value area at byte ${kv} outside the image`);
  const kvStart = Number(kv);
  const idBlocks = await readLocations(src, 'xattr id', at + XATTR_ID_TABLE_HEADER_SIZE, tableBlocks(count, XATTR_ID_ENTRY_SIZE), directoryTableStart);
  for (const l of idBlocks) if (l < kvStart || l >= at) throw bad(`xattr id block at byte ${l} outside the xattr table`);
  return { kvStart, kvEnd: idBlocks[0] ?? at, count, idBlocks, header: at };
}

/**
 * The attributes of set `index`, by full name in byte order of names, every field checked.
 * `text` turns name bytes into a string (the reader refuses what is not UTF-8).
 */
export async function readXattrSet(
  meta: MetaReader,
  t: XattrTableInfo,
  index: number,
  text: (b: Uint8Array, what: string) => string,
): Promise<Map<string, Buffer>> {
  const corrupt = (why: string) => meta.src.corrupt(why);
  const idRegion: Region = { name: 'xattr id table', start: t.kvStart, end: t.header };
  const blk = Math.floor((index * XATTR_ID_ENTRY_SIZE) / METADATA_SIZE);
  const off = (index * XATTR_ID_ENTRY_SIZE) % METADATA_SIZE;
  const l = t.idBlocks[blk];
  if (l === undefined) throw corrupt(`xattr id index ${index} beyond the table`);
  const m = await meta.block(l, idRegion);
  if (off + XATTR_ID_ENTRY_SIZE > m.data.length) throw corrupt(`xattr id index ${index} beyond the table's block at byte ${l}`);
  const e = m.data.subarray(off, off + XATTR_ID_ENTRY_SIZE);
  const ref = e.readBigUInt64LE(0);
  const count = e.readUInt32LE(8);
  // e[12..16] is the size the kernel uses for listxattr; nothing here depends on it.
  const where = `xattr set ${index}`;
  const at = (r: bigint) => ({ block: t.kvStart + Number(r >> 16n), offset: Number(r & 0xffffn) });
  const kvRegion: Region = { name: 'xattr key/value area', start: t.kvStart, end: t.kvEnd };
  const start = at(ref);
  if (start.block >= t.kvEnd || start.offset >= METADATA_SIZE) throw corrupt(`${where}: reference ${ref} outside the xattr table`);
  const c = meta.cursor(kvRegion, start.block, start.offset);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const k = await c.read(4);
    const type = k.readUInt16LE(0);
    const nameLen = k.readUInt16LE(2);
    const prefix = XATTR_PREFIXES[type & ~XATTR_VALUE_OOL];
    if (prefix === undefined || (type & ~XATTR_VALUE_OOL) > 0xff) throw corrupt(`${where}: unknown name prefix id ${type}`);
    if (nameLen === 0 || nameLen + prefix.length > MAX_XATTR_NAME) throw corrupt(`${where}: name of ${nameLen} bytes`);
    const nameBytes = await c.read(nameLen);
    if (nameBytes.includes(0)) throw corrupt(`${where}: name contains a NUL byte`);
    const name = prefix + text(nameBytes, `an xattr name in ${where}`);
    const vlen = (await c.read(4)).readUInt32LE(0);
    let value: Buffer;
    if (type & XATTR_VALUE_OOL) {
      if (vlen !== 8) throw corrupt(`${where}: out-of-line value reference of ${vlen} bytes`);
      const vref = (await c.read(8)).readBigUInt64LE(0);
      const vp = at(vref);
      if (vp.block >= t.kvEnd || vp.offset >= METADATA_SIZE) throw corrupt(`${where}: value reference ${vref} outside the xattr table`);
      const vc = meta.cursor(kvRegion, vp.block, vp.offset);
      const n = (await vc.read(4)).readUInt32LE(0);
      if (n > MAX_XATTR_VALUE) throw corrupt(`${where}: value of ${n} bytes`);
      value = Buffer.from(await vc.read(n));
    } else {
      if (vlen > MAX_XATTR_VALUE) throw corrupt(`${where}: value of ${vlen} bytes`);
      value = Buffer.from(await c.read(vlen));
    }
    if (out.has(name)) throw corrupt(`${where}: attribute ${name} stored twice`);
    out.set(name, value);
  }
  return new Map([...out].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
}

/**
 * LayerEntry as a spill record (store/spill.ts): a JSON array, xattr values base64, so a
 * sorter can move entries through disk without losing a byte of their metadata.
 *
 *   [path, type, mode, uid, gid, mtime, size, linkname|null, devmajor|null, devminor|null,
 *    {xattr: base64}|null, {access?, default?}|null, extra?]
 *
 * `extra` carries what the caller keeps beside the entry (a layer index, a content locator).
 */
import type { RecordCodec } from '../spill.js';
import type { LayerEntry } from '../types.js';

type Row = [string, LayerEntry['type'], number, number, number, number, number, string | null, number | null, number | null, Record<string, string> | null, LayerEntry['acl'] | null, unknown?];

export function encodeEntry(e: LayerEntry, extra?: unknown): Buffer {
  const x = e.xattrs && e.xattrs.size > 0 ? Object.fromEntries([...e.xattrs].map(([k, v]) => [k, v.toString('base64')])) : null;
  const row: Row = [e.path, e.type, e.mode, e.uid, e.gid, e.mtime, e.size, e.linkname ?? null, e.devmajor ?? null, e.devminor ?? null, x, e.acl ?? null];
  if (extra !== undefined) row.push(extra);
  return Buffer.from(JSON.stringify(row));
}

export function decodeEntry(b: Buffer): { entry: LayerEntry; extra?: unknown } {
  const r = JSON.parse(b.toString('utf8')) as Row;
  const entry: LayerEntry = { path: r[0], type: r[1], mode: r[2], uid: r[3], gid: r[4], mtime: r[5], size: r[6] };
  if (r[7] !== null) entry.linkname = r[7];
  if (r[8] !== null) {
    entry.devmajor = r[8];
    entry.devminor = r[9] ?? 0;
  }
  if (r[10] !== null) entry.xattrs = new Map(Object.entries(r[10]).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  if (r[11] !== null) entry.acl = r[11];
  return r.length > 12 ? { entry, extra: r[12] } : { entry };
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

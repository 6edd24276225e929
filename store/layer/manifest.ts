/**
 * The sidecar manifest of a layer: per path, every xattr (base64) and the POSIX ACLs (canonical
 * text, numeric ids). It makes a layer's access policy readable and diffable without unpacking
 * its tar. Schema: spec/layer-manifest.schema.json.
 *
 *   { "manifestVersion": 1, "layer": "<layer CID>",
 *     "stats": { "entries": N, "bytes": N },
 *     "entries": { "<path>": { "xattrs": { "<name>": "<base64>" }, "acl": { "access": "…", "default": "…" } } } }
 */
import { LayerEntry, EntryAcl } from '../types.js';

export interface ManifestEntry {
  xattrs?: Record<string, string>;
  acl?: EntryAcl;
}

export interface LayerManifest {
  manifestVersion: 1;
  layer: string;
  stats: { entries: number; bytes: number };
  entries: Record<string, ManifestEntry>;
}

export function manifestEntry(e: LayerEntry): ManifestEntry | undefined {
  const out: ManifestEntry = {};
  if (e.xattrs && e.xattrs.size > 0) {
    out.xattrs = {};
    for (const name of [...e.xattrs.keys()].sort()) out.xattrs[name] = e.xattrs.get(name)!.toString('base64');
  }
  if (e.acl && (e.acl.access || e.acl.default)) {
    out.acl = {};
    if (e.acl.access) out.acl.access = e.acl.access;
    if (e.acl.default) out.acl.default = e.acl.default;
  }
  return out.xattrs || out.acl ? out : undefined;
}

/** A manifest's entry of one path. */
export type ManifestLookup = (path: string) => ManifestEntry | undefined;

/**
 * The manifest's entries by path, for a lookup per layer entry: a Map (a property lookup by a
 * path string freshly read must intern it first, and would find Object.prototype's names),
 * and no lookup at all for a manifest without entries (most layers' files have none).
 */
export function manifestLookup(m: LayerManifest): ManifestLookup {
  const entries = Object.entries(m.entries);
  if (entries.length === 0) return () => undefined;
  const byPath = new Map(entries);
  return (path) => byPath.get(path);
}

/** Puts a manifest entry's xattrs and ACLs back onto an entry read from the layer tar. */
export function applyManifestEntry(e: LayerEntry, m: ManifestEntry | undefined): LayerEntry {
  if (!m) return e;
  if (m.xattrs) e.xattrs = new Map(Object.entries(m.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  if (m.acl) e.acl = { ...m.acl };
  return e;
}

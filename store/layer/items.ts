/**
 * A canonical layer tar read back as the store's items: each header as a LayerEntry with its
 * xattrs and ACLs from the sidecar manifest, and the body of regular files. Shared by every
 * StoreReader (the local store, the in-memory one), which call it once per tar entry inside
 * their own read loop (a generator of its own here would cost each entry one more await).
 */
import type { LayerItem } from '../internals.js';
import type { TarEntry } from '../tar/reader.js';
import type { LayerEntry } from '../types.js';
import { applyManifestEntry, type ManifestLookup } from './manifest.js';
import { normalizeLayerPath } from './path.js';

export function layerItem({ header: h, body }: TarEntry, manifest: ManifestLookup): LayerItem {
  const p = normalizeLayerPath(h.path);
  const entry: LayerEntry = {
    path: p,
    type: h.type,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    mtime: h.mtime,
    size: h.type === 'file' ? h.size : 0,
  };
  if (h.type === 'symlink') entry.linkname = h.linkname;
  if (h.type === 'hardlink') entry.linkname = normalizeLayerPath(h.linkname);
  if (h.type === 'char' || h.type === 'block') {
    entry.devmajor = h.devmajor;
    entry.devminor = h.devminor;
  }
  return { entry: applyManifestEntry(entry, manifest(p)), body, offset: h.dataOffset };
}

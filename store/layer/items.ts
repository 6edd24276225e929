/**
 * A canonical layer tar read back as the store's items: each header as a LayerEntry with its
 * xattrs and ACLs from the sidecar manifest, and the body of regular files. Shared by every
 * StoreReader (the local store, the in-memory one).
 */
import type { LayerItem } from '../internals.js';
import type { readTar } from '../tar/reader.js';
import type { LayerEntry } from '../types.js';
import { applyManifestEntry, type LayerManifest } from './manifest.js';
import { normalizeLayerPath } from './path.js';

export async function* layerItems(tar: ReturnType<typeof readTar>, manifest: LayerManifest): AsyncGenerator<LayerItem> {
  for await (const { header: h, body } of tar) {
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
    yield { entry: applyManifestEntry(entry, manifest.entries[p]), body, offset: h.dataOffset };
  }
}

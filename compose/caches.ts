/**
 * The caches outputs leave behind (the block cache of compressed image blocks), collected
 * and measured beside the store's own parts: `store gc` drops the records of layers no module
 * names and, past a size cap, the least recently used packs; `store du` shows what each part
 * holds. The store cannot do this itself (the block cache is the image library's).
 */
import type { Store } from '../store/index.js';
import { blockCacheUsage, pruneBlockCache, type PruneResult } from './image/index.js';

/** The tag of the embedded metadata blocks every image has (compose/squash.ts). */
const METADATA_TAG = 'strata-metadata';

/** Drops block-cache records of layers no module on the store path names; then LRU packs past `maxBytes`. */
export async function collectBlockCache(store: Store, maxBytes?: number): Promise<PruneResult> {
  const live = new Set<string>();
  for (const m of await store.list()) {
    if (m.damaged) continue;
    live.add((await store.loadRecord(m.record, m.fullName)).layer);
  }
  if (live.size > 0) live.add(METADATA_TAG); // images of a store with no modules are gone too
  return pruneBlockCache(store.cacheDir, { liveTags: live, ...(maxBytes !== undefined ? { maxBytes } : {}) });
}

/** What the store and this user's caches hold, in bytes. */
export async function diskUsage(store: Store): Promise<Record<string, number>> {
  const u = await store.usage();
  return { blobs: u.blobs, index: u.index, tmp: u.tmp, entryCache: u.entryCache, blockCache: blockCacheUsage(store.cacheDir).bytes };
}

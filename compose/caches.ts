/**
 * The caches outputs leave behind (the block cache of compressed image blocks), collected
 * and measured beside the store's own parts: `store gc` drops the records of layers no module
 * names and, past a size cap, the least recently used packs; `store du` shows what each part
 * holds. The store cannot do this itself (the block cache is the image library's). And the
 * user's cache secret, which lets a build trust the cache records this user's builds wrote.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { userCacheDir, type Store } from '../store/index.js';
import { blockCacheUsage, pruneBlockCache, type PruneResult } from './image/index.js';

const SECRET_FILE = 'cache-secret';
const SECRET_BYTES = 32;

/** The tag of the blocks of what every image holds besides its layers: the embedded files and the tables (compose/squash.ts). */
export const METADATA_TAG = 'strata-metadata';

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

/**
 * This user's cache secret: 32 random bytes in `<user cache dir>/cache-secret`, mode 0600, made
 * on first use. Block-cache records written with it carry its seal, and a later build holding
 * it uses them without decompressing them first (compose/image/shared/block-cache.ts); records
 * anyone else could have written are still checked. Undefined (every hit checked) when the
 * file cannot be made, or when it or its directory is not this user's alone: a secret others
 * could read or replace would let them plant records the build trusts.
 */
export function cacheSecret(): Buffer | undefined {
  const uid = process.geteuid?.() ?? 0;
  const dir = userCacheDir();
  const file = path.join(dir, SECRET_FILE);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const d = fs.lstatSync(dir);
    if (!d.isDirectory() || d.uid !== uid || (d.mode & 0o022) !== 0) return undefined;
    if (!fs.existsSync(file)) {
      // Written whole under a private name, then linked into place: a racing build either
      // links first or finds the other's file, never a partial one.
      const tmp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}`;
      fs.writeFileSync(tmp, randomBytes(SECRET_BYTES), { mode: 0o600, flag: 'wx' });
      try {
        fs.linkSync(tmp, file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      } finally {
        fs.rmSync(tmp, { force: true });
      }
    }
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.uid !== uid || (st.mode & 0o077) !== 0 || st.size !== SECRET_BYTES) return undefined;
      const secret = Buffer.alloc(SECRET_BYTES);
      return fs.readSync(fd, secret, 0, SECRET_BYTES, 0) === SECRET_BYTES ? secret : undefined;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

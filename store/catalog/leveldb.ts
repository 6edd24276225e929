/**
 * The LevelDB index: names → record CIDs, defaults, collections, remotes.
 *
 * LevelDB admits one process at a time. strata holds the index only for short critical sections
 * (blobs are written before the lock is taken), and a second process waits for the lock with a
 * message after a short delay and a bounded timeout — it never dies on LevelDB's LOCK error.
 *
 * Keys (UTF-8):
 *   m/<fullName>     → record CID          (a module)
 *   d/<name>         → fullName            (marked default of a name)
 *   c/<collection>   → JSON                (saved collection, pinned records)
 *   r/<remote>       → JSON                (configured remote)
 *   x/<layer CID>    → group               (restricted content: the layer and its manifest
 *                                          stay group-only, whatever module names them)
 */
import type { Level } from 'level';
import * as path from 'node:path';
import { StrataError, STORE_ERR } from '../errors.js';
import { publishCatalog, readCatalog } from './snapshot.js';

export type { Batch, IndexView } from './view.js';
import type { IndexView } from './view.js';

export interface LockOptions {
  /** Seconds to wait for another process before giving up (default $STRATA_LOCK_TIMEOUT or 300). */
  timeoutSeconds?: number;
  /** Called once when the wait becomes noticeable. */
  onWait?(message: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type LevelClass = typeof import('level').Level;
let levelClass: Promise<LevelClass> | undefined;

/**
 * LevelDB's modules (a chunk of the bundle, or some 25 files from dist/), loaded on first use:
 * readers never open the index (they read the published catalog), so only writers pay for
 * them. A writer calls this as it starts so that the load overlaps its first I/O; a failure
 * surfaces where the index is opened. Node names a CommonJS module's exports; the bundle's
 * chunk of it has only a default export, module.exports.
 */
export function preloadIndex(): void {
  levelClass ??= import('level').then((m) => m.Level ?? (m as unknown as { default: typeof m }).default.Level);
  levelClass.catch(() => undefined);
}

/**
 * Opens the index, runs `fn` with it, and closes it again, waiting for the lock if needed.
 * When `fn` changed the index (or no catalog was ever published), the new state is published
 * as the store's catalog before the lock is released (store/catalog/snapshot.ts), so readers,
 * who never take the lock, see each batch whole.
 */
export async function withIndex<T>(storeRoot: string, fn: (ix: IndexView) => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const db = await openLocked(path.join(storeRoot, 'index'), opts);
  let changed = false;
  try {
    const result = await fn({
      get: (key) => db.get(key),
      range: async (prefix) => {
        const out: Array<[string, string]> = [];
        for await (const kv of db.iterator({ gte: prefix, lt: prefix + '\uffff' })) out.push(kv);
        return out;
      },
      // sync: the batch is on disk before the command reports success (power loss included).
      batch: async (ops) => {
        await db.batch(ops, { sync: true });
        changed = true;
      },
    });
    if (changed || (await readCatalog(storeRoot).catch(() => undefined)) === undefined) {
      const keys: Record<string, string> = {};
      for await (const [k, v] of db.iterator()) keys[k] = v;
      await publishCatalog(storeRoot, keys);
    }
    return result;
  } finally {
    await db.close();
  }
}

async function openLocked(dir: string, opts: LockOptions): Promise<Level<string, string>> {
  const timeout = (opts.timeoutSeconds ?? Number(process.env.STRATA_LOCK_TIMEOUT ?? 300)) * 1000;
  const start = Date.now();
  let told = false;
  let delay = 20;
  preloadIndex();
  const Level = await levelClass!;
  for (;;) {
    const db = new Level<string, string>(dir, { valueEncoding: 'utf8' });
    try {
      await db.open();
      return db;
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause;
      if (cause?.code !== 'LEVEL_LOCKED') {
        throw new StrataError(STORE_ERR.INDEX_UNAVAILABLE, `cannot open the store index at ${dir}: ${(cause as Error | undefined)?.message ?? (e as Error).message}`, { cause: e });
      }
    }
    const waited = Date.now() - start;
    if (waited > timeout) {
      throw new StrataError(STORE_ERR.LOCKED, `the store is still in use by another strata process after ${Math.round(waited / 1000)} s`, {
        hint: 'wait for it to finish, or raise STRATA_LOCK_TIMEOUT',
      });
    }
    if (!told && waited > 1000) {
      told = true;
      opts.onWait?.('waiting for another strata process to release the store…');
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 250);
  }
}

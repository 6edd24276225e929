/**
 * The published catalog: an immutable snapshot of the whole index that readers use without
 * taking LevelDB's lock (which only the store's writer may take, and only one process at once).
 *
 * After every index batch the writer, still holding the lock, serialises every key and value
 * into one canonical JSON document and publishes it:
 *
 *   <store>/snapshots/<seq>.json   each published state, kept for the gc grace period
 *                                  (renamed into place, not fsynced: see publishCatalog)
 *   <store>/catalog.json           the newest state (written to a temp file, fsynced, renamed)
 *
 * A reader reads `catalog.json` once per command: one read of one file that is only ever
 * replaced by rename, so it sees the state before or after a concurrent import, rm or gc,
 * never a mix. The snapshots are what gc keeps alive during the grace period (a build that read
 * an older state still finds every blob that state named), see store/local-store.ts gc.
 *
 * Document: { "catalogVersion": 1, "seq": <n>, "published": <ms since epoch>,
 *             "keys": { "<key>": "<value>", … } }   keys as in store/catalog/leveldb.ts.
 * Everything in it is names and CIDs: no layer content, so it is readable by every user.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { StrataError, STORE_ERR } from '../errors.js';
import { canonicalJson } from '../cid.js';
import type { Batch, IndexView } from './view.js';
import { fsyncDir } from '../blob-store.js';

export const CATALOG_FILE = 'catalog.json';
export const SNAPSHOT_DIR = 'snapshots';

export interface Catalog {
  catalogVersion: 1;
  seq: number;
  published: number;
  keys: Record<string, string>;
}

export function emptyCatalog(): Catalog {
  return { catalogVersion: 1, seq: 0, published: 0, keys: {} };
}

/**
 * The store's current catalog; undefined when none was published although the index holds
 * keys (a store written by an older strata). A store whose index was never created (no
 * LevelDB `CURRENT` file: created, nothing written yet) has the empty catalog without
 * publishing one: creating a store opens no LevelDB, and its first write publishes.
 */
export async function readCatalog(storeRoot: string): Promise<Catalog | undefined> {
  const file = path.join(storeRoot, CATALOG_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      const never = await fsp.stat(path.join(storeRoot, 'index', 'CURRENT')).then(() => false, (e2) => (e2 as NodeJS.ErrnoException).code === 'ENOENT');
      return never ? emptyCatalog() : undefined;
    }
    throw new StrataError(STORE_ERR.INDEX_UNAVAILABLE, `cannot read the store's catalog ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: 'the store directory must be readable by you; ask its owner',
    });
  }
  return parseCatalog(text, file);
}

function parseCatalog(text: string, file: string): Catalog {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = undefined;
  }
  const c = doc as Catalog | undefined;
  const ok =
    c !== null &&
    typeof c === 'object' &&
    c.catalogVersion === 1 &&
    Number.isSafeInteger(c.seq) &&
    Number.isSafeInteger(c.published) &&
    c.keys !== null &&
    typeof c.keys === 'object' &&
    Object.values(c.keys).every((v) => typeof v === 'string');
  if (!ok) {
    throw new StrataError(STORE_ERR.INDEX_UNAVAILABLE, `the store's catalog ${file} is damaged`, {
      hint: "the store's owner can publish it again with `strata store verify`",
    });
  }
  return c!;
}

/** An IndexView over a published catalog: reads only. */
export function catalogView(c: Catalog): IndexView {
  const keys = Object.keys(c.keys).sort();
  return {
    get: async (key) => c.keys[key],
    range: async (prefix) => keys.filter((k) => k.startsWith(prefix)).map((k) => [k, c.keys[k]] as [string, string]),
    batch: async (_ops: Batch) => {
      throw new StrataError(STORE_ERR.READ_ONLY, 'the published catalog is read-only');
    },
  };
}

/**
 * Publishes `keys` as the store's next catalog (the caller holds the index lock, so sequence
 * numbers are never reused). catalog.json is durable and atomic: fsynced before the rename
 * that makes it current, and its directory after. The snapshot is atomic only: it serves the
 * gc grace period of builds running now, and no build outlives a crash of the machine, while
 * a snapshot lost or torn by one keeps nothing alive (retainedSnapshots). Two fsyncs fewer per
 * index batch: a small import made 16 fsyncs, 7 before catalogs were published.
 */
export async function publishCatalog(storeRoot: string, keys: Record<string, string>): Promise<Catalog> {
  const before = await readCatalog(storeRoot).catch(() => undefined);
  const catalog: Catalog = { catalogVersion: 1, seq: (before?.seq ?? 0) + 1, published: Date.now(), keys };
  const bytes = canonicalJson(catalog);
  const dir = path.join(storeRoot, SNAPSHOT_DIR);
  await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
  await writeReplacing(path.join(dir, snapshotName(catalog.seq)), bytes, false);
  await writeReplacing(path.join(storeRoot, CATALOG_FILE), bytes, true);
  await fsyncDir(storeRoot);
  return catalog;
}

/**
 * Snapshots a reader may still be using: the newest, and every one that stopped being current
 * (its successor was published) less than `graceMs` ago. Oldest first.
 */
export async function retainedSnapshots(storeRoot: string, graceMs: number, now = Date.now()): Promise<Catalog[]> {
  const dir = path.join(storeRoot, SNAPSHOT_DIR);
  const names = (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => /^\d{12}\.json$/.test(n)).sort();
  const all: Catalog[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      all.push(parseCatalog(await fsp.readFile(file, 'utf8'), file));
    } catch {
      /* a torn or damaged old snapshot keeps nothing alive */
    }
  }
  return all.filter((c, i) => i === all.length - 1 || now - all[i + 1].published <= graceMs);
}

/** Removes snapshots older than the grace period (never the newest). */
export async function pruneSnapshots(storeRoot: string, graceMs: number, now = Date.now()): Promise<void> {
  const dir = path.join(storeRoot, SNAPSHOT_DIR);
  const keep = new Set((await retainedSnapshots(storeRoot, graceMs, now)).map((c) => snapshotName(c.seq)));
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (/^\d{12}\.json$/.test(name) && !keep.has(name)) await fsp.rm(path.join(dir, name), { force: true });
  }
}

function snapshotName(seq: number): string {
  return `${String(seq).padStart(12, '0')}.json`;
}

/** Writes `file` through a temp file and a rename (fsynced first when `durable`). */
async function writeReplacing(file: string, bytes: Uint8Array, durable: boolean): Promise<void> {
  const tmp = `${path.dirname(file)}/.${path.basename(file)}.${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await fsp.open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(bytes);
    await fh.chmod(0o644); // readable by every user whatever the writer's umask
    if (durable) await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await fsp.rename(tmp, file);
}

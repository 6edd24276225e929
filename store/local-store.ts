/**
 * The store: blobs + index + layer ingest. compose/ and cli/ use this interface only.
 *
 * Write ordering (crash safety): every blob an index update names is durable (tmp → fsync →
 * rename → fsync dir) before the index batch is written, and the batch is atomic. A crash at
 * any point leaves, at worst, unreferenced blobs (removed by gc) and stale temp files (removed
 * when the store next opens); `verify` is clean.
 */
import { createHash } from 'node:crypto';
import * as fsSync from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobStore, type PutResult } from './blob-store.js';
import { exportModule } from './layer/export.js';
import type { FetchMissing, PullOptions, PullResult, PushOptions, PushResult, Remote, TransferHooks } from './remote/remotes.js';
import type { ModuleDescription, VerifyReport } from './types.js';
import type { LayerItem, LoadedModule, ModuleSummary, ReadLayerOptions } from './internals.js';
export type { LayerItem, LoadedModule, ModuleSummary } from './internals.js';
import { canonicalJson, cidFromHex, isCid, JSON_CODEC, parseCid, RAW_CODEC } from './cid.js';
import { StrataError, STORE_ERR } from './errors.js';
import { IndexView, LockOptions, preloadIndex, withIndex } from './catalog/leveldb.js';
import { CATALOG_FILE, catalogView, pruneSnapshots, readCatalog, retainedSnapshots } from './catalog/snapshot.js';
import { LayerBuilder } from './layer/builder.js';
import { applyManifestEntry, ManifestIndex, summarizeManifest } from './layer/manifest.js';
import { checkCollectionName, parseCollection, serializeCollection, type Collection } from './collections.js';
import { checkFullName, envOpProblem, EnvOp, fullNameOf, ModuleRecord, recordExtras, RecordExtras, splitFullName, validateRecord } from './record.js';
import { addSource } from './sources/index.js';
import { lookupGroup } from '../native/ids.js';
import { printable } from '../native/errors.js';
import { readTar } from './tar/reader.js';
import { layerItem } from './layer/items.js';
import { LayerEntry, WHITEOUT_PREFIX } from './types.js';
import { NOT_CANONICAL, whiteoutOrLink } from './layer/path.js';
import { EntryListBytes } from './entry-rows.js';
import { flatItems } from './map-items.js';
import type { EntryListOptions, LayerBlob } from './reader.js';

export interface ImportOptions {
  requires?: string[];
  conflicts?: string[];
  family?: string;
  env?: EnvOp[];
  description?: string;
  restricted?: string;
  /**
   * Lift the restriction the layer's content has from an earlier restricted import (staff,
   * explicitly): without it, content already restricted stays restricted to its group.
   */
  unrestrict?: boolean;
  default?: boolean;
  overlay?: boolean;
  force?: boolean;
  labels?: Record<string, string>;
  /** The optional Lmod fields (whatis, keywords, hidden, sticky, parents, prereq, loadAny); unset ones stay out of the record. */
  extras?: RecordExtras;
  /** Accept requirements (requires, prereq, parents, load-any) that name nothing on the store path yet. */
  allowMissing?: boolean;
  /** Called while the canonical layer is written: bytes so far, and about how many in all. */
  onProgress?(done: number, total: number): void;
}

export interface ImportResult {
  fullName: string;
  /** `repaired`: the module was there, and a damaged blob of it was rewritten with the good bytes. */
  status: 'imported' | 'unchanged' | 'replaced' | 'repaired';
  record: string;
  layer: string;
  manifest: string;
  entries: number;
  bytes: number;
  skipped: string[];
}


export interface StoreUsage {
  blobs: number;
  /** LevelDB, the published catalog and the snapshots kept for gc's grace period. */
  index: number;
  tmp: number;
  entryCache: number;
}



export function defaultStoreRoot(): string {
  if (process.env.STRATA_STORE) return process.env.STRATA_STORE;
  const data = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'strata');
}

/** Where a user's caches and temp files go when they only read a store: ${XDG_CACHE_HOME:-~/.cache}/strata. */
export function userCacheDir(): string {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'strata');
}

export interface StoreOpenOptions extends LockOptions {
  /** Stores read after this one (the rest of the store path), never written. */
  lowers?: string[];
  /** Create the store when it is absent (default true; the CLI creates only to write). */
  create?: boolean;
  /** The store was not named by the user (the default): an absent one is empty, not an error. */
  implicit?: boolean;
}

/**
 * One store, or the head of a store path: `root` is the user's own store (written by imports,
 * pulls, saves) and `lowers` are read after it. Reads come from published catalogs
 * (store/catalog/snapshot.ts) and take no lock; writes take the LevelDB lock of `root` and
 * publish a new catalog. A store the user cannot write is opened read-only: every write is
 * ERR_STORE_READ_ONLY, and caches and temp files go to the user's cache directory.
 */
export class LocalStore {
  readonly blobs: BlobStore;
  lockOptions: LockOptions = {};
  private catalog: IndexView | undefined;
  /**
   * Entry lists handed out from the cache, by layer digest, as a digest of their rows in order:
   * readLayer checks the layer against it (constant memory whatever the number of entries).
   */
  private readonly handedOut = new Map<string, string>();
  /** Layers whose entry list was handed out from another store's cache (sharedListPaths). */
  private readonly fromShared = new Set<string>();

  private constructor(
    readonly root: string,
    /** True when this user may write `root` (its index, blobs and tmp/). */
    readonly writable: boolean,
    /** False when `root` holds no store (yet). */
    private present: boolean,
    private readonly opts: StoreOpenOptions,
  ) {
    const tmp = writable || !present ? path.join(root, 'tmp') : path.join(userCacheDir(), 'tmp');
    this.blobs = new BlobStore(root, tmp, (opts.lowers ?? []).map((l) => path.resolve(l)));
  }

  /**
   * Opens the store at `root` (creating it when absent and opts.create is not false), removing
   * temp files of dead processes when this user is its writer. Never takes the index lock
   * except to publish the first catalog of a store written by an older strata.
   */
  static async open(root = defaultStoreRoot(), opts: StoreOpenOptions = {}): Promise<LocalStore> {
    const abs = path.resolve(root);
    let present = isStore(abs);
    if (!present && opts.create !== false) {
      await createStore(abs);
      present = true;
    }
    const writable = present ? canWrite(abs) : true;
    const s = new LocalStore(abs, writable, present, opts);
    s.lockOptions = opts;
    for (const l of opts.lowers ?? []) {
      if (!isStore(path.resolve(l))) throw noStore(path.resolve(l));
    }
    if (present && writable) {
      await s.blobs.init();
      await fsp.mkdir(path.join(abs, 'cache'), { recursive: true });
      if ((await readCatalog(abs).catch(() => undefined)) === undefined) await s.index(async () => undefined);
    }
    return s;
  }

  /** Rebuildable caches: the store's cache/ for its writer, the user's cache directory otherwise. */
  get cacheDir(): string {
    return this.writable && this.present ? path.join(this.root, 'cache') : userCacheDir();
  }

  async close(): Promise<void> {
    await this.blobs.close();
    const state = await this.stateStore?.catch(() => undefined);
    if (state && state !== this) await state.close();
  }

  /**
   * Runs `fn` with the writable LevelDB index of the own store (creating the store if it is
   * absent), holding its lock; what `fn` changed is published as the new catalog.
   */
  async index<T>(fn: (ix: IndexView) => Promise<T>): Promise<T> {
    await this.ensureWritable();
    try {
      return await withIndex(this.root, fn, this.lockOptions);
    } finally {
      this.catalog = undefined;
    }
  }

  /** Creates the own store if it is absent; ERR_STORE_READ_ONLY when this user cannot write it. */
  async ensureWritable(): Promise<void> {
    preloadIndex(); // every write ends in the index
    if (!this.present) {
      await createStore(this.root);
      this.present = true;
      await this.blobs.init();
    }
    if (!this.writable) {
      throw new StrataError(STORE_ERR.READ_ONLY, `the store ${this.root} is read-only for you`, {
        hint: `ask its owner to make the change, or put a store of your own first on the path (STRATA_PATH=~/.local/share/strata:${this.root})`,
      });
    }
  }

  /**
   * The state readers see: the published catalogs of the own store and the stores below it,
   * read once and kept for the life of this object, so one command sees one state. A key of
   * the own store hides the same key below it (names resolve in path order, as Lmod's
   * MODULEPATH); collections (c/) are the own store's only.
   */
  async view(opts: { absentOk?: boolean } = {}): Promise<IndexView> {
    if (this.catalog) return this.catalog;
    const layers: Array<Record<string, string>> = [];
    if (this.present) {
      const own = await readCatalog(this.root);
      if (own === undefined) {
        throw new StrataError(STORE_ERR.INDEX_UNAVAILABLE, `the store ${this.root} has no published catalog`, {
          hint: "it was written by an older strata: its owner should run any `strata store` command in it once",
        });
      }
      layers.push(own.keys);
    } else if (!this.opts.implicit && !opts.absentOk) {
      throw noStore(this.root);
    }
    for (const l of this.opts.lowers ?? []) {
      const c = await readCatalog(path.resolve(l));
      if (c === undefined) throw noStore(path.resolve(l));
      layers.push(Object.fromEntries(Object.entries(c.keys).filter(([k]) => !k.startsWith('c/'))));
    }
    const merged: Record<string, string> = {};
    for (const keys of [...layers].reverse()) Object.assign(merged, keys);
    this.catalog = catalogView({ catalogVersion: 1, seq: 0, published: 0, keys: merged });
    return this.catalog;
  }

  /**
   * The group a layer's content is restricted to in any store on the path, or null. A layer is
   * restricted once a restricted module has named it, whatever module names it later.
   */
  async restrictionOf(layer: string): Promise<string | null> {
    return (await (await this.view()).get(`x/${layer}`)) ?? null;
  }

  /** The group a module's content is restricted to: its record's, else its layer's (restriction follows content). */
  async moduleRestriction(record: Pick<ModuleRecord, 'restricted' | 'layer'>): Promise<string | null> {
    return record.restricted ?? (await this.restrictionOf(record.layer));
  }

  /**
   * Makes content restricted to group `gid` the group's wherever this store keeps it: the layer
   * and manifest blobs, the layer's entry list, and each cache outputs keep of the layer
   * (`cache/<kind>/<layer CID>/`, spec/store.md). Content restricted only now may be here
   * already, open to everyone: an import or pull without --restricted wrote its blobs 0644, a
   * build cached its blocks in directories others may enter. Called before the mark is
   * published; what is the group's already is left as it is. Others lose access at the first
   * change (the mode), the group gains it at the second (the owner group).
   */
  async confine(layer: string, manifest: string, gid: number): Promise<void> {
    for (const cid of [layer, manifest]) await confineNode(this.blobs.blobPath(parseCid(cid).hex), gid, 'file');
    const cache = path.join(this.root, 'cache');
    await confineNode(path.join(cache, 'entries', `${parseCid(layer).hex}.rows`), gid, 'file');
    for (const kind of await fsp.readdir(cache).catch(() => [] as string[])) {
      if (kind !== 'entries') await confineNode(path.join(cache, kind, layer), gid, 'dir');
    }
  }

  /**
   * Keeps the blobs of `mods` (records, layers, manifests) open for this process, so an
   * output in progress is not broken by a concurrent rm + gc (see gc's grace period too).
   */
  async hold(mods: LoadedModule[]): Promise<void> {
    for (const m of mods) for (const cid of [m.cid, m.record.layer, m.record.manifest]) await this.blobs.hold(parseCid(cid).hex);
  }

  // ---- ingest ---------------------------------------------------------------------------

  /**
   * Builds the canonical layer and manifest of `source` — a tar (plain, gzip, zstd), a directory
   * (an overlay upperdir with `overlay`), `oci:DIR[:TAG]` or `docker-archive:FILE` — and stores
   * both. No index change. An image's config Env and Labels come back for the record. It
   * returns once both blobs are written and hashed; `durable` resolves once both are durable
   * (true when either was absent or damaged before, and is now repaired), and the index may
   * name them only then.
   */
  async importLayer(source: string, opts: { overlay?: boolean; restricted?: string; unrestrict?: boolean; onProgress?(done: number, total: number): void } = {}) {
    await this.ensureWritable();
    const gid = opts.restricted === undefined ? undefined : groupId(opts.restricted);
    // The blob's group is decided before it becomes visible: the module's group, else the
    // group the same content is already restricted to (restriction follows content).
    const groupOf = async (hex: string): Promise<number | undefined> => {
      const held = await this.restrictionOf(cidFromHex(RAW_CODEC, hex));
      if (held === null || held === opts.restricted || opts.unrestrict) return gid;
      throw new StrataError(STORE_ERR.ACCESS_DENIED, `this layer is restricted content (group ${held}) in the store`, {
        hint: `import it with --restricted ${held}; only staff may lift the restriction, with --unrestrict`,
      });
    };
    const builder = new LayerBuilder({ tmpDir: this.blobs.tmpDir });
    const spools: string[] = [];
    const spool = (tag: string) => {
      const p = this.blobs.tmpPath(tag);
      spools.push(p);
      return p;
    };
    // Blobs whose bytes are written and hashed, still being made durable (BlobStore.stage).
    const staged: Promise<PutResult>[] = [];
    try {
      const { skipped, image } = await addSource(builder, source, { overlay: opts.overlay }, spool);
      // The entry list goes to the cache as the canonical tar is written: no list in memory.
      const { built, put } = await builder.written(async (built) => {
        const file = this.entryIndexWriter();
        try {
          const rows = new EntryListBytes((b) => file.write(b));
          const put = await this.blobs.stage(counted(built.tar((e) => rows.add(e)), built.sizeHint, opts.onProgress), undefined, groupOf, built.sizeHint);
          staged.push(put.durable);
          rows.end();
          await file.commit(put.hex, put.gid);
          return { built, put };
        } finally {
          file.abort();
        }
      });
      const layer = cidFromHex(RAW_CODEC, put.hex);
      // The manifest is written while the layer's blob is flushed to the disk.
      const mput = await this.blobs.stage(built.manifest(layer), undefined, async () => put.gid);
      staged.push(mput.durable);
      const manifestCid = cidFromHex(JSON_CODEC, mput.hex);
      // repaired: a blob was absent or damaged before this put
      const durable = Promise.all([put.durable, mput.durable]).then((r) => r.some((p) => p.prior !== 'ok'));
      durable.catch(() => undefined); // awaited by the caller, also when it fails first
      return { layer, manifest: manifestCid, entries: built.entries, bytes: built.bytes, skipped, image, durable };
    } catch (e) {
      // Nothing is left being written behind a failed import.
      await Promise.allSettled(staged);
      throw e;
    } finally {
      builder.dispose();
      for (const p of spools) await fsp.rm(p, { force: true });
    }
  }

  /**
   * Imports `source` as module `fullName`, indexed under its store name (fullNameOf: behind its
   * hierarchy parents when it has some). Same name and same record: no-op. Other record: error
   * unless force.
   */
  async importModule(moduleName: string, source: string, opts: ImportOptions = {}): Promise<ImportResult> {
    checkFullName(moduleName);
    const extras = recordExtras(opts.extras ?? {});
    for (const m of [...(opts.requires ?? []), ...(opts.conflicts ?? []), ...(extras.parents ?? []), ...(extras.prereq ?? []), ...(extras.loadAny ?? []).flat()]) checkFullName(m);
    if (opts.restricted !== undefined) groupId(opts.restricted);
    for (const e of opts.env ?? []) {
      const why = envOpProblem(e);
      if (why) throw new StrataError(STORE_ERR.INVALID_ARGUMENT, why);
    }
    if (!opts.allowMissing) await this.checkRequirementsExist(moduleName, opts.requires ?? [], extras);
    const { image, durable, ...layer } = await this.importLayer(source, opts);
    const { name, version } = splitFullName(moduleName);
    const labels = { ...(image?.labels ?? {}), ...(opts.labels ?? {}) };
    const record: ModuleRecord = {
      recordVersion: 1,
      name,
      version,
      layer: layer.layer,
      manifest: layer.manifest,
      requires: opts.requires ?? [],
      conflicts: opts.conflicts ?? [],
      family: opts.family ?? null,
      env: [...(image?.env ?? []), ...(opts.env ?? [])],
      description: opts.description ?? '',
      restricted: opts.restricted ?? null,
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...extras,
    };
    const fullName = fullNameOf(record);
    // The record is written while the layer's blobs are made durable; the index waits for all three.
    const staged = await this.blobs.stage([canonicalJson(record)]).catch(async (e: unknown) => {
      await durable.catch(() => undefined);
      throw e;
    });
    await Promise.allSettled([durable, staged.durable]);
    const repaired = await durable;
    const rput = await staged.durable;
    const recordCid = cidFromHex(JSON_CODEC, rput.hex);
    // The same content may be here already, open: written before it was restricted (confine).
    if (opts.restricted !== undefined) await this.confine(layer.layer, layer.manifest, groupId(opts.restricted));
    // For a module already indexed with this record, a blob that was not intact before was missing
    // or damaged, and is now repaired.
    const same = repaired || rput.prior !== 'ok' ? ('repaired' as const) : ('unchanged' as const);
    const status = await this.index(async (ix) => {
      const existing = await ix.get(`m/${fullName}`);
      if (existing === recordCid && !opts.default) return same;
      if (existing !== undefined && existing !== recordCid && !opts.force) {
        throw new StrataError(STORE_ERR.EXISTS, `${fullName} is already in the store with other content`, {
          hint: 'use --force to replace it, or import under another version',
        });
      }
      await this.assertBlobs([recordCid, layer.layer, layer.manifest]);
      const ops: Parameters<IndexView['batch']>[0] = [{ type: 'put', key: `m/${fullName}`, value: recordCid }];
      if (opts.default) ops.push({ type: 'put', key: `d/${splitFullName(fullName).name}`, value: fullName });
      if (opts.restricted !== undefined) ops.push({ type: 'put', key: `x/${layer.layer}`, value: opts.restricted });
      else if (opts.unrestrict && (await ix.get(`x/${layer.layer}`)) !== undefined) ops.push({ type: 'del', key: `x/${layer.layer}` });
      await ix.batch(ops);
      return existing === undefined ? ('imported' as const) : existing === recordCid ? same : ('replaced' as const);
    });
    return { fullName, status, record: recordCid, ...layer };
  }

  /** A requirement that names nothing on the store path is a typo until proven otherwise (--allow-missing). */
  private async checkRequirementsExist(moduleName: string, requires: string[], extras: RecordExtras): Promise<void> {
    // The own store may not exist yet: this import creates it.
    const names = (await (await this.view({ absentOk: true })).range('m/')).map(([k]) => k.slice(2));
    const found = (spec: string) => names.some((n) => n === spec || n.startsWith(`${spec}/`) || n.startsWith(`${spec}.`));
    const groups = [...requires, ...(extras.prereq ?? []), ...(extras.parents ?? [])].map((r) => [r]).concat(extras.loadAny ?? []);
    const missing = groups.filter((g) => !g.some(found)).map((g) => g.join(' or '));
    if (missing.length > 0) {
      throw new StrataError(STORE_ERR.NOT_FOUND, `${moduleName} requires ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not on the store path`, {
        hint: 'import it first, check the spelling, or pass --allow-missing',
      });
    }
  }

  /** Stores a JSON document canonically; returns its CID (json codec). */
  async putJson(value: unknown): Promise<string> {
    return cidFromHex(JSON_CODEC, await this.blobs.putBytes(canonicalJson(value)));
  }

  async getJson<T>(cid: string, what: string): Promise<T> {
    const bytes = await this.blobs.readBytes(parseCid(cid).hex, what);
    return JSON.parse(bytes.toString('utf8')) as T;
  }

  /** Index updates must only name durable blobs; a concurrent gc may have removed a reused one. */
  private async assertBlobs(cids: string[]): Promise<void> {
    for (const cid of cids) {
      if (!(await this.blobs.has(parseCid(cid).hex))) {
        throw new StrataError(STORE_ERR.BLOB_MISSING, `blob ${cid} disappeared during the import (a concurrent gc?)`, { hint: 'run the import again' });
      }
    }
  }

  // ---- queries --------------------------------------------------------------------------

  async list(pattern?: string): Promise<ModuleSummary[]> {
    const ix = await this.view();
    const [mods, defaults] = [await ix.range('m/'), new Map(await ix.range('d/'))];
    const out: ModuleSummary[] = [];
    for (const [key, cid] of mods) {
      const fullName = key.slice(2);
      if (pattern && !matches(fullName, pattern)) continue;
      let record: ModuleRecord;
      try {
        record = await this.loadRecord(cid, fullName);
      } catch (e) {
        // One damaged record must not hide the rest of the store; it is listed as damaged.
        const { name, version } = splitFullName(fullName);
        out.push({ fullName, name, version, record: cid, isDefault: false, restricted: null, description: '', damaged: (e as Error).message });
        continue;
      }
      out.push({
        fullName,
        name: record.name,
        version: record.version,
        record: cid,
        isDefault: defaults.get(`d/${splitFullName(fullName).name}`) === fullName,
        restricted: await this.moduleRestriction(record),
        description: record.description,
      });
    }
    return out;
  }

  async loadRecord(cid: string, fullName?: string): Promise<ModuleRecord> {
    const what = fullName ? `record of ${fullName}` : `record ${cid}`;
    return validateRecord(await this.getJson(cid, what), fullName ?? cid);
  }

  /** A module by exact fullName or record CID. */
  async get(ref: string): Promise<LoadedModule> {
    if (isCid(ref)) {
      const record = await this.loadRecord(ref);
      return { fullName: fullNameOf(record), cid: ref, record };
    }
    const cid = await (await this.view()).get(`m/${ref}`);
    if (cid === undefined) {
      throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${ref} in the store`, { hint: 'see `strata store ls`' });
    }
    return { fullName: ref, cid, record: await this.loadRecord(cid, ref) };
  }

  /** A module's manifest, read as it streams (its digest checked at its end, before any use). */
  private async manifestIndex(mod: LoadedModule): Promise<ManifestIndex> {
    const tmp = await this.scratchDir();
    return this.readManifestBlob(mod, (chunks, what) => ManifestIndex.read(chunks, what, tmp));
  }

  async manifestSummary(mod: LoadedModule) {
    return this.readManifestBlob(mod, summarizeManifest);
  }

  /**
   * Runs `read` over the bytes of a module's manifest as they stream. A damaged manifest trips
   * the parser before the digest check at the end of the stream (asCorruption).
   */
  private async readManifestBlob<T>(mod: LoadedModule, read: (chunks: AsyncIterable<Uint8Array>, what: string) => Promise<T>): Promise<T> {
    const hex = parseCid(mod.record.manifest).hex;
    const what = `manifest of ${mod.fullName}`;
    try {
      return await read(this.blobs.read(hex, what), what);
    } catch (e) {
      throw e instanceof StrataError && e.code === STORE_ERR.RECORD_INVALID ? await this.asCorruption(e, hex, what) : e;
    }
  }

  /**
   * `e`, a failure met while blob `hex` streamed, as what it is when the blob no longer matches
   * its digest: a corrupt blob, named as `what`, as the digest check at the stream's end would.
   */
  private async asCorruption(e: unknown, hex: string, what: string): Promise<unknown> {
    return (await this.blobs.check(hex)) === 'corrupt' ? this.blobs.mismatch(hex, what, e) : e;
  }

  /**
   * Reads a module's layer as entries with their xattrs and ACLs, verifying the layer digest at
   * the end (a mismatch throws, naming the module).
   */
  async *readLayer(mod: LoadedModule, opts: ReadLayerOptions = {}): AsyncGenerator<LayerItem> {
    const index = await this.manifestIndex(mod);
    const manifest = index.lookup();
    const hex = parseCid(mod.record.layer).hex;
    const what = `layer of ${mod.fullName}`;
    const check = this.cacheCheck(hex, what);
    try {
      for await (const t of readTar(this.blobs.read(hex, what, opts))) {
        const item = layerItem(t, manifest);
        check?.(item.entry);
        yield item;
      }
      check?.(undefined);
    } catch (e) {
      // A damaged header trips the tar reader before the digest check at end of stream; say
      // what it really is (a corrupt blob) and name the module, as the digest check would.
      if (e instanceof StrataError && [STORE_ERR.DIGEST_MISMATCH, STORE_ERR.BLOB_MISSING, STORE_ERR.CACHE_INVALID, STORE_ERR.ACCESS_DENIED].includes(e.code as never)) throw e;
      throw await this.asCorruption(e, hex, what);
    } finally {
      index.dispose();
    }
  }

  /**
   * A layer's entries with their xattrs and ACLs, without reading file contents, streamed: from
   * the rebuildable entry index in cache/entries/ (written at import), else by reading the
   * layer once (verifying it) and writing that index as it goes. The cache is safe to delete.
   * A cache whose first line is not the list's is a miss; a row found bad further on drops the
   * cache and fails in one line (the caller has used the rows of the MiBs before it). The
   * entries of a MiB of rows read come without a promise each (`nextNow`, map-items.ts).
   */
  layerEntries(mod: LoadedModule, opts: EntryListOptions = {}): AsyncIterable<LayerEntry> {
    return flatItems(this.layerEntryBatches(mod, opts));
  }

  /** layerEntries' entries, a batch at a time: a cached list's rows as each MiB of it is read. */
  private async *layerEntryBatches(mod: LoadedModule, opts: EntryListOptions): AsyncGenerator<LayerEntry[]> {
    const hex = parseCid(mod.record.layer).hex;
    let file = this.entryCachePath(hex);
    // The list's digest is of the file's bytes as read (the rows and their framing).
    let h = createHash('sha256');
    let lines = await openLines(file, (b) => h.update(b));
    this.fromShared.delete(hex);
    if (lines === undefined && !fsSync.existsSync(this.distrustPath(hex))) {
      for (const shared of this.sharedListPaths(hex)) {
        h = createHash('sha256');
        lines = await openLines(shared, (b) => h.update(b));
        if (lines !== undefined) {
          file = shared;
          this.fromShared.add(hex);
          break;
        }
      }
    }
    if (lines === undefined) {
      const group = await this.moduleRestriction(mod.record);
      await this.scratchDir();
      // A cache that cannot be written (a full disk, a read-only cache) only costs the next read.
      const file = (() => {
        try {
          return this.entryIndexWriter();
        } catch {
          return undefined;
        }
      })();
      // The cache file's bytes, hashed as they are written (as if the file had been read).
      const list = new ListDigest(file && ((b) => file.write(b)));
      try {
        for await (const { entry } of this.readLayer(mod)) {
          list.add(entry);
          if (!opts.whiteoutsAndLinks || whiteoutOrLink(entry)) yield [entry];
        }
        this.handOut(hex, list.digest(), () => new StrataError(STORE_ERR.DIGEST_MISMATCH, `layer of ${mod.fullName} sha256:${hex} changed while it was read`, {
          hint: 'run `strata store verify`, then re-import or pull the module',
        }));
        await file?.commit(hex, group === null ? undefined : lookupGroup(group)).catch(() => undefined);
      } finally {
        file?.abort();
      }
      return;
    }
    // The cache is untrusted: readLayer checks the layer against exactly these rows.
    const bad = () => {
      this.forgetList(hex);
      return new StrataError(STORE_ERR.CACHE_INVALID, `the cached entry list of layer of ${mod.fullName} is damaged; the cache was dropped`, {
        hint: 'run the command again: the entry list is rebuilt from the layer',
      });
    };
    // A pass for whiteouts and links only needs no xattrs or ACLs.
    const index = opts.whiteoutsAndLinks ? undefined : await this.manifestIndex(mod);
    try {
      const manifest = index?.lookup() ?? (() => undefined);
      // The quick test can only let through more than it must: a row that hides a whiteout
      // from it (an escaped character) is not the row the layer gives, and fails its check.
      const quick = opts.whiteoutsAndLinks ? (text: string) => text.includes(WHITEOUT_PREFIX) || text.includes('"hardlink"') : undefined;
      const list = new CachedRows();
      for await (const batch of lines) {
        const entries: LayerEntry[] = [];
        for (const row of list.rows(batch, quick)) {
          const e = applyManifestEntry(fromRow(row), manifest(row[0]));
          if (!opts.whiteoutsAndLinks || whiteoutOrLink(e)) entries.push(e);
        }
        if (entries.length > 0) yield entries;
      }
      list.end();
    } catch (e) {
      throw e === BAD_ROWS ? bad() : e;
    } finally {
      index?.dispose();
    }
    this.handOut(hex, h.digest('hex'), bad);
  }

  /**
   * Records the digest of the entry list of layer `hex` just handed out. A plan reads a list
   * twice (store/layer/merge.ts): both reads must be the same list, byte for byte.
   */
  private handOut(hex: string, digest: string, differs: () => StrataError): void {
    const before = this.handedOut.get(hex);
    this.handedOut.set(hex, digest);
    if (before !== undefined && before !== digest) throw differs();
  }

  async openLayerBlob(mod: LoadedModule): Promise<LayerBlob> {
    const hex = parseCid(mod.record.layer).hex;
    const what = `layer of ${mod.fullName}`;
    const listed = this.handedOut.get(hex);
    if (listed === undefined) throw new Error(`openLayerBlob: the entry list of ${what} was not read before it`);
    const blob = await this.blobs.open(hex, what);
    return {
      fd: blob.fd,
      size: blob.size,
      close: blob.close,
      check: (read) => {
        if (read.error) throw read.error;
        if (read.blob !== hex) throw this.blobs.mismatch(hex, what);
        if (read.problem !== undefined) {
          throw new StrataError(STORE_ERR.TAR_UNSUPPORTED, `${what} sha256:${hex} is not a layer strata can read: ${read.problem}`, {
            hint: 'import it again',
          });
        }
        if (read.rows !== listed) throw this.dropList(hex, what);
      },
    };
  }

  entryListDigest(mod: LoadedModule): string | undefined {
    return this.handedOut.get(parseCid(mod.record.layer).hex);
  }

  async checkLayerAccess(mod: LoadedModule): Promise<void> {
    const blob = await this.blobs.open(parseCid(mod.record.layer).hex, `layer of ${mod.fullName}`);
    await blob.close();
  }

  async scratchDir(): Promise<string> {
    await fsp.mkdir(this.blobs.tmpDir, { recursive: true, mode: 0o700 });
    return this.blobs.tmpDir;
  }

  private entryCachePath(hex: string): string {
    return path.join(this.cacheDir, 'entries', `${hex}.rows`);
  }

  /**
   * Where the stores this one reads (its own root when this user only reads it, and the lowers
   * of its store path) keep the entry list of layer `hex`: the list their owner's import or
   * build wrote. A user of a site store uses it instead of reading the layer once more to make
   * a list of their own. It is untrusted like any cache: the layer is checked against it as it
   * is read. A restricted layer's list is readable by its group only, like the layer.
   */
  private sharedListPaths(hex: string): string[] {
    const own = path.join(this.root, 'cache');
    const roots = this.cacheDir === own ? [] : [this.root];
    return [...roots, ...(this.opts.lowers ?? []).map((l) => path.resolve(l))].map((r) => path.join(r, 'cache', 'entries', `${hex}.rows`));
  }

  /** Marks another store's entry list of layer `hex` as one this user no longer uses (found wrong). */
  private distrustPath(hex: string): string {
    return path.join(this.cacheDir, 'entries', `${hex}.distrust`);
  }

  /**
   * Forgets the entry list of layer `hex` handed out, found to disagree with the layer: the
   * user's own file is removed; another store's, which this user cannot remove, is marked not
   * to be used again, so the next run reads the layer and writes a list of the user's own.
   */
  private forgetList(hex: string): void {
    this.handedOut.delete(hex);
    if (!this.fromShared.delete(hex)) {
      fsSync.rmSync(this.entryCachePath(hex), { force: true });
      return;
    }
    try {
      fsSync.mkdirSync(path.dirname(this.distrustPath(hex)), { recursive: true, mode: 0o700 });
      fsSync.writeFileSync(this.distrustPath(hex), '', { mode: 0o600 });
    } catch {
      // A cache this user cannot write: the list is used again, and found wrong again.
    }
  }

  /**
   * Checks a layer, as it is read, against the cached entry list handed out for it: the rows
   * of the entries read, in order, must hash to what the list hashed to. A difference (a cache
   * edited or damaged after it was written: a mode, a setuid bit, an extra entry) fails at the
   * end of the layer, in one line, and drops the cache file. Outputs make their result visible
   * only after every layer was read to its end, so no output is made from a plan the layer
   * does not back.
   */
  private cacheCheck(hex: string, what: string): ((e: LayerEntry | undefined) => void) | undefined {
    const want = this.handedOut.get(hex);
    if (want === undefined) return undefined;
    // The bytes the cache file of these entries holds.
    const list = new ListDigest();
    return (e) => {
      if (e !== undefined) {
        list.add(e);
        return;
      }
      if (list.digest() !== want) throw this.dropList(hex, what);
    };
  }

  /** Drops the cached entry list of layer `hex`, which disagrees with the layer: the error to throw. */
  private dropList(hex: string, what: string): StrataError {
    this.forgetList(hex);
    return new StrataError(STORE_ERR.CACHE_INVALID, `the cached entry list of ${what} disagrees with the layer; the cache was dropped`, {
      hint: 'run the command again: the entry list is rebuilt from the layer',
    });
  }


  /**
   * A layer's entry list file, written into tmp/ (the bytes EntryListBytes gives: one JSON
   * array with a row per line, read a line at a time by openLines), then committed under the
   * layer's digest.
   */
  private entryIndexWriter(): { write(bytes: Buffer): void; commit(hex: string, gid?: number): Promise<void>; abort(): void } {
    const tmp = this.blobs.tmpPath('entries');
    const fd = fsSync.openSync(tmp, fsSync.constants.O_WRONLY | fsSync.constants.O_CREAT | fsSync.constants.O_EXCL | fsSync.constants.O_NOFOLLOW, 0o600);
    let open = true;
    const close = () => {
      if (open) fsSync.closeSync(fd);
      open = false;
    };
    return {
      write: (b) => {
        for (let off = 0; off < b.length; ) {
          const n = fsSync.writeSync(fd, b, off, b.length - off);
          if (n <= 0) throw new Error(`short write to ${tmp}`);
          off += n;
        }
      },
      commit: async (hex, gid) => {
        close();
        if (gid !== undefined) await BlobStore.restrict(tmp, gid);
        else fsSync.chmodSync(tmp, 0o644);
        const dir = path.join(this.cacheDir, 'entries');
        await fsp.mkdir(dir, { recursive: true });
        await fsp.rename(tmp, path.join(dir, `${hex}.rows`));
      },
      abort: () => {
        close();
        fsSync.rmSync(tmp, { force: true });
      },
    };
  }

  // ---- index changes --------------------------------------------------------------------

  /**
   * Removes a module's name (and its default mark). Refused (ERR_IN_USE, naming them) while
   * another module of the store needs it — a requirement, prereq, load-any group or hierarchy
   * parent that nothing else would satisfy — or a saved collection pins its record, unless
   * `force`. Atomic; the blobs go at the next gc.
   */
  async remove(fullName: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.index(async (ix) => {
      const cid = await ix.get(`m/${fullName}`);
      if (cid === undefined) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${fullName} in the store`);
      if (!opts.force) {
        const users = await this.usersOf(ix, fullName, cid);
        if (users.length > 0) {
          const shown = users.slice(0, 5).join(', ') + (users.length > 5 ? `, and ${users.length - 5} more` : '');
          throw new StrataError(STORE_ERR.IN_USE, `${fullName} is still needed: ${shown}`, {
            hint: 'remove those first, or use --force to remove it anyway',
          });
        }
      }
      const { name } = splitFullName(fullName);
      const ops: Parameters<IndexView['batch']>[0] = [{ type: 'del', key: `m/${fullName}` }];
      if ((await ix.get(`d/${name}`)) === fullName) ops.push({ type: 'del', key: `d/${name}` });
      await ix.batch(ops);
    });
  }

  /** Who would break if `fullName` went: modules needing it (by no other match) and collections pinning it. */
  private async usersOf(ix: IndexView, fullName: string, cid: string): Promise<string[]> {
    const mods = await ix.range('m/');
    const names = mods.map(([k]) => k.slice(2));
    const matchesSpec = (f: string, spec: string) => f === spec || f.startsWith(`${spec}/`) || f.startsWith(`${spec}.`);
    const out: string[] = [];
    for (const [key, other] of mods) {
      if (other === cid && key.slice(2) === fullName) continue;
      let r: ModuleRecord;
      try {
        r = await this.loadRecord(other, key.slice(2));
      } catch {
        continue; // a damaged record needs nothing; verify names it
      }
      const specs = [...r.requires, ...(r.prereq ?? []), ...(r.parents ?? []), ...(r.loadAny ?? []).map((g) => g.join('|'))];
      const needs = specs.some((spec) =>
        spec.split('|').every((alt) => !names.some((n) => n !== fullName && matchesSpec(n, alt))) && spec.split('|').some((alt) => matchesSpec(fullName, alt)),
      );
      if (needs) out.push(`${key.slice(2)} requires it`);
    }
    for (const [key, text] of await ix.range('c/')) {
      try {
        if (parseCollection(text, key.slice(2)).modules.some((m) => m.record === cid)) out.push(`collection ${key.slice(2)} pins it`);
      } catch {
        /* a damaged collection pins nothing */
      }
    }
    return out;
  }

  async setDefault(fullName: string): Promise<void> {
    await this.index(async (ix) => {
      if ((await ix.get(`m/${fullName}`)) === undefined) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${fullName} in the store`);
      await ix.batch([{ type: 'put', key: `d/${splitFullName(fullName).name}`, value: fullName }]);
    });
  }

  /** A module with its layer size and manifest counts. */
  async describe(ref: string): Promise<ModuleDescription> {
    const mod = await this.get(ref);
    const { head, aclPaths, xattrPaths } = await this.manifestSummary(mod);
    return {
      fullName: mod.fullName,
      cid: mod.cid,
      record: mod.record,
      layerBytes: await this.blobs.size(parseCid(mod.record.layer).hex),
      manifest: { stats: head.stats, aclPaths, xattrPaths },
    };
  }

  exportModule(mod: LoadedModule, out: string): Promise<{ entries: number; bytes: number }> {
    return exportModule(this, mod, out);
  }

  // ---- remotes ----------------------------------------------------------------------------

  // The registry client (HTTP, TLS, auth) is loaded when a remote is used, not by every command.
  async addRemote(name: string, url: string, opts: { siteInternal?: boolean } = {}): Promise<Remote> {
    return (await remotes()).addRemote(this, name, url, opts);
  }
  async listRemotes(): Promise<Remote[]> {
    return (await remotes()).listRemotes(this);
  }
  async removeRemote(name: string): Promise<void> {
    return (await remotes()).removeRemote(this, name);
  }
  async push(target: string, modules: string[], opts?: PushOptions): Promise<PushResult[]> {
    return (await remotes()).push(this, target, modules, opts);
  }
  async pull(source: string, refs: string[], opts?: PullOptions): Promise<PullResult[]> {
    return (await remotes()).pull(this, source, refs, opts);
  }
  async fetcher(hooks?: TransferHooks): Promise<FetchMissing | undefined> {
    return (await remotes()).remoteFetcher(this, hooks);
  }

  // ---- collections (saved stacks, pinned to records) ----------------------------------------
  //
  // Collections are the user's own state (Lmod keeps them in ~/.lmod.d): they live in the own
  // store, the first on the path. When the user cannot write that store (a site store named
  // alone), they live in the user's default store instead, which nobody else writes.

  private stateStore: Promise<LocalStore> | undefined;

  /** Where this user's collections are: this store when it is theirs to write, else their default store. */
  private collections(): Promise<LocalStore> {
    if (this.writable) return Promise.resolve(this);
    const own = path.resolve(process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share'), 'strata');
    if (own === this.root) return Promise.resolve(this);
    this.stateStore ??= LocalStore.open(own, { ...this.lockOptions, create: false, implicit: true });
    return this.stateStore;
  }

  /** Saves (or replaces) collection `name`. Atomic: a reader sees the old or the new one. */
  async saveCollection(name: string, c: Collection): Promise<void> {
    checkCollectionName(name);
    await (await this.collections()).index((ix) => ix.batch([{ type: 'put', key: `c/${name}`, value: serializeCollection(c) }]));
  }

  /** Collection `name`, validated; undefined when there is none. */
  async loadCollection(name: string): Promise<Collection | undefined> {
    checkCollectionName(name);
    const text = await (await (await this.collections()).view()).get(`c/${name}`);
    return text === undefined ? undefined : parseCollection(text, name);
  }

  /** Removes collection `name` (its pins go with it); false when there was none. */
  async removeCollection(name: string): Promise<boolean> {
    checkCollectionName(name);
    return (await this.collections()).index(async (ix) => {
      if ((await ix.get(`c/${name}`)) === undefined) return false;
      await ix.batch([{ type: 'del', key: `c/${name}` }]);
      return true;
    });
  }

  /** Names of the saved collections, sorted. */
  async listCollections(): Promise<string[]> {
    return (await (await (await this.collections()).view()).range('c/')).map(([k]) => k.slice(2));
  }

  // ---- maintenance ----------------------------------------------------------------------

  /** Blobs reachable from the index: module records, their layers and manifests, pinned collections. */
  private async liveBlobs(ix: IndexView): Promise<Set<string>> {
    const live = new Set<string>();
    const addRecord = async (cid: string) => {
      const hex = parseCid(cid).hex;
      live.add(hex);
      try {
        const r = await this.loadRecord(cid);
        live.add(parseCid(r.layer).hex);
        live.add(parseCid(r.manifest).hex);
      } catch {
        /* a damaged record keeps nothing else alive; verify reports it */
      }
    };
    for (const [, cid] of await ix.range('m/')) await addRecord(cid);
    for (const [key, text] of await ix.range('c/')) {
      let c: Collection;
      try {
        c = parseCollection(text, key.slice(2));
      } catch {
        continue; // a damaged collection pins nothing; `compose restore` names it
      }
      for (const m of c.modules) await addRecord(m.record);
    }
    return live;
  }

  /**
   * Removes blobs nothing references. Holds the index lock throughout, so no import commits
   * meanwhile. Live: what the index names, what a snapshot still in its grace period names (a
   * reader may be building from it), and the pins of running imports. Snapshots past the grace
   * period and restriction marks (x/) of removed layers go too.
   */
  async gc(opts: { dryRun?: boolean; graceSeconds?: number } = {}): Promise<{ removed: string[]; bytes: number; kept: number }> {
    const graceMs = 1000 * (opts.graceSeconds ?? gcGraceSeconds());
    return this.index(async (ix) => {
      const all: string[] = [];
      for await (const hex of this.blobs.list()) all.push(hex);
      const live = await this.liveBlobs(ix);
      const indexed = live.size;
      for (const snap of await retainedSnapshots(this.root, graceMs)) {
        for (const hex of await this.liveBlobs(catalogView(snap))) live.add(hex);
      }
      const kept = live.size - indexed;
      for (const hex of await this.blobs.livePins()) live.add(hex);
      const removed: string[] = [];
      let bytes = 0;
      for (const hex of all) {
        if (live.has(hex)) continue;
        bytes += await this.blobs.size(hex).catch(() => 0);
        removed.push(`sha256:${hex}`);
        if (!opts.dryRun) await this.blobs.remove(hex);
      }
      if (!opts.dryRun) {
        // Entry lists of layers the store no longer holds go with them, and so do lists in
        // a form this strata does not read (the `.json` of strata before lists streamed).
        for (const name of await fsp.readdir(path.join(this.cacheDir, 'entries')).catch(() => [] as string[])) {
          const hex = /^([0-9a-f]{64})\.rows$/.exec(name)?.[1];
          if (hex === undefined || !live.has(hex)) await fsp.rm(path.join(this.cacheDir, 'entries', name), { force: true });
        }
        const gone = new Set(removed.map((r) => r.slice(7)));
        const marks = (await ix.range('x/')).filter(([k]) => gone.has(parseCid(k.slice(2)).hex));
        if (marks.length > 0) await ix.batch(marks.map(([key]) => ({ type: 'del' as const, key })));
        await pruneSnapshots(this.root, graceMs);
      }
      return { removed, bytes, kept };
    });
  }

  /** Bytes on disk by part: blobs, snapshots, tmp/, and the entry-list cache (the block cache is compose's). */
  async usage(): Promise<StoreUsage> {
    const du = async (p: string): Promise<number> => {
      const st = await fsp.lstat(p).catch(() => undefined);
      if (!st) return 0;
      if (!st.isDirectory()) return st.size;
      let n = 0;
      for (const c of await fsp.readdir(p).catch(() => [] as string[])) n += await du(path.join(p, c));
      return n;
    };
    return {
      blobs: await du(path.join(this.root, 'blobs')),
      index: (await du(path.join(this.root, 'index'))) + (await du(path.join(this.root, CATALOG_FILE))) + (await du(path.join(this.root, 'snapshots'))),
      tmp: this.writable ? await du(this.blobs.tmpDir) : 0,
      entryCache: await du(path.join(this.cacheDir, 'entries')),
    };
  }

  /** Checks every blob of every module (or of `only`); each problem names its module. */
  async verify(only?: string): Promise<VerifyReport> {
    const mods = (await (await this.view()).range('m/')).map(([k, cid]) => ({ fullName: k.slice(2), cid }));
    const chosen = only ? mods.filter((m) => m.fullName === only || m.cid === only) : mods;
    if (only && chosen.length === 0) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${only} in the store`);
    const problems: Array<{ module: string; what: string; blob: string; status: string }> = [];
    const skipped = new Set<string>();
    const checked = new Map<string, string>();
    const check = async (cid: string) => {
      const hex = parseCid(cid).hex;
      if (!checked.has(hex)) checked.set(hex, await this.blobs.check(hex));
      return checked.get(hex)!;
    };
    for (const m of chosen) {
      const rs = await check(m.cid);
      if (rs !== 'ok') {
        problems.push({ module: m.fullName, what: 'record', blob: m.cid, status: rs });
        continue;
      }
      let record: ModuleRecord;
      try {
        record = await this.loadRecord(m.cid, m.fullName);
      } catch (e) {
        problems.push({ module: m.fullName, what: 'record', blob: m.cid, status: (e as Error).message });
        continue;
      }
      for (const [what, cid] of [['manifest', record.manifest], ['layer', record.layer]] as const) {
        const s = await check(cid);
        // Restricted content this user may not read is not a problem of the store: skipped.
        if (s === 'unreadable') skipped.add(m.fullName);
        else if (s !== 'ok') problems.push({ module: m.fullName, what, blob: cid, status: s });
      }
    }
    return { modules: chosen.length, problems, ...(skipped.size > 0 ? { skipped: [...skipped] } : {}) };
  }
}

/** How long gc keeps what a superseded catalog named: $STRATA_GC_GRACE seconds, default 3600. */
export function gcGraceSeconds(): number {
  const v = process.env.STRATA_GC_GRACE;
  const n = v === undefined || v === '' ? 3600 : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `STRATA_GC_GRACE=${v} is not a number of seconds`);
  return n;
}

const remotes = () => import('./remote/remotes.js');

/** A directory holds a store when it has an index or a published catalog. */
function isStore(dir: string): boolean {
  return fsSync.existsSync(path.join(dir, 'index')) || fsSync.existsSync(path.join(dir, CATALOG_FILE));
}

/** The writer may change the index and add blobs. */
function canWrite(dir: string): boolean {
  try {
    for (const d of [path.join(dir, 'index'), path.join(dir, 'blobs', 'sha256'), dir]) fsSync.accessSync(d, fsSync.constants.W_OK | fsSync.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function createStore(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, 'index'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'cache'), { recursive: true });
}

/**
 * Gives `p` (a file, or a directory: `kind`) to group `gid` with no access for others: 0640 or
 * 0750, its owner kept. Absent, a symbolic link, not of `kind`, or the group's already: left
 * as it is. Only the owner (or root) may: anyone else gets a one-line error naming the file.
 */
async function confineNode(p: string, gid: number, kind: 'file' | 'dir'): Promise<void> {
  const st = await fsp.lstat(p).catch(() => undefined);
  if (!st || (kind === 'dir' ? !st.isDirectory() : !st.isFile())) return;
  const mode = kind === 'dir' ? 0o750 : 0o640;
  if ((st.mode & 0o7777) === mode && st.gid === gid) return;
  try {
    await fsp.chmod(p, mode);
    await fsp.chown(p, st.uid, gid);
  } catch (e) {
    throw new StrataError(STORE_ERR.ACCESS_DENIED, `cannot give '${printable(p)}' to the licence group: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: 'the store holds this content open already; restrict it as the owner of its files (or root)',
    });
  }
}

/** The gid of a licence group; a group the host does not know is an error (no silent restriction to nobody). */
function groupId(group: string): number {
  const gid = lookupGroup(group);
  if (gid === undefined) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `--restricted ${group}: no such group on this host`, { hint: 'create the group first (groupadd), or check its name' });
  }
  return gid;
}

function noStore(dir: string): StrataError {
  return new StrataError(STORE_ERR.NO_STORE, `no store at ${dir}`, { hint: 'check --store / STRATA_PATH; `strata store import` creates a store' });
}

/** Lmod-style pattern: a substring of the fullName, or a glob with * and ?. */
export function matches(fullName: string, pattern: string): boolean {
  if (!/[*?]/.test(pattern)) return fullName.toLowerCase().includes(pattern.toLowerCase());
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(fullName);
}

/** Thrown by CachedRows: the list is not one strata writes. */
const BAD_ROWS = new Error('not an entry list');

/**
 * The rows of a cached entry list's lines (those after its `[`), each checked, given a batch of
 * lines at a time, up to its `]`, which must be its last line; throws BAD_ROWS otherwise.
 */
class CachedRows {
  private ended = false;

  /** The rows of `lines`; a line `keep` says no to is passed over unparsed. */
  *rows(lines: readonly string[], keep?: (text: string) => boolean): Generator<EntryRow> {
    for (const line of lines) {
      if (this.ended) throw BAD_ROWS;
      if (line === ']') {
        this.ended = true;
        continue;
      }
      const text = line.endsWith(',') ? line.slice(0, -1) : line;
      if (keep && !keep(text)) continue;
      let row: EntryRow | undefined;
      try {
        row = checkedRow(JSON.parse(text));
      } catch {
        row = undefined;
      }
      if (row === undefined) throw BAD_ROWS;
      yield row;
    }
  }

  /** Throws BAD_ROWS unless the list ended. */
  end(): void {
    if (!this.ended) throw BAD_ROWS;
  }
}

/** sha256 of the text of an entry list (EntryListBytes), its bytes handed to `also` too when given (the cache file). */
class ListDigest {
  private readonly h = createHash('sha256');
  private readonly list: EntryListBytes;

  constructor(also?: (bytes: Buffer) => void) {
    this.list = new EntryListBytes((b) => {
      this.h.update(b);
      also?.(b);
    });
  }

  add(e: LayerEntry): void {
    this.list.add(e);
  }

  digest(): string {
    this.list.end();
    return this.h.digest('hex');
  }
}

/**
 * A cached entry: [path, type, mode, uid, gid, mtime, size, linkname, devmajor, devminor];
 * linkname is there when the entry has one or device numbers, the device numbers when it has them.
 * The list's file holds these as JSON, written by entry-rows.ts.
 */
type EntryRow = [string, LayerEntry['type'], number, number, number, number, number, string?, number?, number?];

const ROW_TYPES = new Set(['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo']);
const isId = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;

/**
 * A row of a cached entry list, or undefined when it is not one strata could have written: a
 * path that is absolute, has a `..` or empty component or a NUL, an unknown type, a number out
 * of range. Such a cache is never a plan.
 */
function checkedRow(r: unknown): EntryRow | undefined {
  if (!Array.isArray(r) || r.length < 7 || r.length > 10) return undefined;
  const [p, type, mode, uid, gid, mtime, size] = r as unknown[];
  if (typeof p !== 'string' || !ROW_TYPES.has(type as string)) return undefined;
  if (p !== '.' && NOT_CANONICAL.test(p)) return undefined;
  if (!isId(mode) || (mode as number) > 0o7777 || !isId(uid) || !isId(gid) || !Number.isSafeInteger(mtime) || !isId(size)) return undefined;
  if (r.length > 7 && typeof r[7] !== 'string') return undefined;
  if (r.length > 8 && (!isId(r[8]) || !isId(r[9] ?? 0))) return undefined;
  return r as EntryRow;
}

/**
 * The lines of a cached entry list after its opening `[` line, read and given a MiB's worth at
 * a time; undefined when the file is absent, not a regular file, or does not open as one (a
 * miss). Never follows a symlink. `onBytes` sees every byte read, in order (the opening line too).
 */
async function openLines(file: string, onBytes: (b: Buffer) => void): Promise<AsyncIterable<string[]> | undefined> {
  let fh: fsp.FileHandle;
  try {
    // O_NONBLOCK: a FIFO put in the list's place (another store's cache is read too) must not
    // hang the open; only a regular file is a list.
    fh = await fsp.open(file, fsSync.constants.O_RDONLY | fsSync.constants.O_NOFOLLOW | fsSync.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  if (!(await fh.stat().then((st) => st.isFile(), () => false))) {
    await fh.close();
    return undefined;
  }
  const chunk = Buffer.allocUnsafe(1 << 20);
  /** Bytes at the chunk's start carried from the last read: the start of a line the next read ends. */
  let kept = 0;
  let eof = false;
  const lines: string[] = [];
  // Text is decoded up to the last newline read, which no UTF-8 sequence holds, by the buffer's
  // own decoder (a streaming TextDecoder, ICU's converter, took twice as long), and the rest
  // is moved to the chunk's start for the next read to end. A MiB without a newline holds no
  // row (a row is at most tens of KiB): it is handed on whole, as a line no row parses from.
  const fill = async (): Promise<boolean> => {
    while (lines.length === 0 && !eof) {
      const { bytesRead } = await fh.read(chunk, kept, chunk.length - kept, null);
      if (bytesRead === 0) {
        eof = true;
        if (kept > 0) lines.push(chunk.toString('utf8', 0, kept));
        break;
      }
      onBytes(chunk.subarray(kept, kept + bytesRead));
      const end = kept + bytesRead;
      const cut = chunk.lastIndexOf(0x0a, end - 1);
      if (cut < 0) {
        kept = end;
        if (kept === chunk.length) {
          lines.push(chunk.toString('utf8', 0, kept));
          kept = 0;
        }
        continue;
      }
      const text = chunk.toString('utf8', 0, cut);
      kept = chunk.copy(chunk, 0, cut + 1, end);
      for (const l of text.split('\n')) if (l !== '') lines.push(l);
    }
    return lines.length > 0;
  };
  const ok = (await fill().catch(() => false)) && lines.shift() === '[';
  if (!ok) {
    await fh.close();
    return undefined;
  }
  return {
    async *[Symbol.asyncIterator]() {
      try {
        while (await fill()) yield lines.splice(0);
      } finally {
        await fh.close();
      }
    },
  };
}

function fromRow(r: EntryRow): LayerEntry {
  const e: LayerEntry = { path: r[0], type: r[1], mode: r[2], uid: r[3], gid: r[4], mtime: r[5], size: r[6] };
  if (r[7]) e.linkname = r[7];
  if (r[8] !== undefined) {
    e.devmajor = r[8];
    e.devminor = r[9] ?? 0;
  }
  return e;
}

/** Passes `source` through, reporting how many bytes went by. */
export async function* counted(
  source: AsyncIterable<Uint8Array>,
  total: number | undefined,
  onProgress?: (done: number, total: number) => void,
): AsyncGenerator<Uint8Array> {
  let done = 0;
  for await (const chunk of source) {
    done += chunk.byteLength;
    onProgress?.(done, Math.max(total ?? 0, done));
    yield chunk;
  }
}

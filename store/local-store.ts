/**
 * The store: blobs + index + layer ingest. compose/ and cli/ use this interface only.
 *
 * Write ordering (crash safety): every blob an index update names is durable (tmp → fsync →
 * rename → fsync dir) before the index batch is written, and the batch is atomic. A crash at
 * any point leaves, at worst, unreferenced blobs (removed by gc) and stale temp files (removed
 * when the store next opens); `verify` is clean.
 */
import * as fsSync from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { BlobStore } from './blob-store.js';
import { exportModule } from './layer/export.js';
import { addRemote, listRemotes, pull, push, remoteFetcher, removeRemote } from './remote/remotes.js';
import type { FetchMissing, PullOptions, PullResult, PushOptions, PushResult, Remote, TransferHooks } from './remote/remotes.js';
import type { ModuleDescription, VerifyReport } from './index.js';
import { canonicalJson, cidFromHex, isCid, JSON_CODEC, parseCid, RAW_CODEC } from './cid.js';
import { StrataError, STORE_ERR } from './errors.js';
import { IndexView, LockOptions, withIndex } from './catalog/leveldb.js';
import { LayerBuilder } from './layer/builder.js';
import { normalizeLayerPath } from './layer/path.js';
import { applyManifestEntry, LayerManifest } from './layer/manifest.js';
import { checkCollectionName, parseCollection, serializeCollection, type Collection } from './collections.js';
import { checkFullName, EnvOp, fullNameOf, ModuleRecord, recordExtras, RecordExtras, splitFullName, validateRecord } from './record.js';
import { addSource } from './sources/index.js';
import { readTar } from './tar/reader.js';
import { LayerEntry } from './types.js';

export interface ImportOptions {
  requires?: string[];
  conflicts?: string[];
  family?: string;
  env?: EnvOp[];
  description?: string;
  restricted?: string;
  default?: boolean;
  overlay?: boolean;
  force?: boolean;
  labels?: Record<string, string>;
  /** The optional Lmod fields (whatis, keywords, hidden, sticky, parents, prereq, loadAny); unset ones stay out of the record. */
  extras?: RecordExtras;
  /** Called while the canonical layer is written: bytes so far, and about how many in all. */
  onProgress?(done: number, total: number): void;
}

export interface ImportResult {
  fullName: string;
  status: 'imported' | 'unchanged' | 'replaced';
  record: string;
  layer: string;
  manifest: string;
  entries: number;
  bytes: number;
  skipped: string[];
}

export interface ModuleSummary {
  fullName: string;
  name: string;
  version: string;
  record: string;
  isDefault: boolean;
  restricted: string | null;
  description: string;
  /** Set when the module's record cannot be read; `strata store verify` says more. */
  damaged?: string;
}

export interface LoadedModule {
  fullName: string;
  cid: string;
  record: ModuleRecord;
}

export interface LayerItem {
  entry: LayerEntry;
  /** Content of a regular file; must be consumed (or skipped) before the next item. */
  body: AsyncIterable<Buffer>;
}

export function defaultStoreRoot(): string {
  if (process.env.STRATA_STORE) return process.env.STRATA_STORE;
  const data = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'strata');
}

export class LocalStore {
  readonly blobs: BlobStore;
  lockOptions: LockOptions = {};

  private constructor(readonly root: string) {
    this.blobs = new BlobStore(root);
  }

  /** Opens (creating if needed) the store at `root`, removing temp files of dead processes. */
  static async open(root = defaultStoreRoot(), lockOptions: LockOptions = {}): Promise<LocalStore> {
    const s = new LocalStore(path.resolve(root));
    s.lockOptions = lockOptions;
    await fsp.mkdir(path.join(s.root, 'index'), { recursive: true });
    await fsp.mkdir(path.join(s.root, 'cache'), { recursive: true });
    await s.blobs.init();
    return s;
  }

  get cacheDir(): string {
    return path.join(this.root, 'cache');
  }

  async close(): Promise<void> {
    await this.blobs.close();
  }

  index<T>(fn: (ix: IndexView) => Promise<T>): Promise<T> {
    return withIndex(this.root, fn, this.lockOptions);
  }

  // ---- ingest ---------------------------------------------------------------------------

  /**
   * Builds the canonical layer and manifest of `source` — a tar (plain, gzip, zstd), a directory
   * (an overlay upperdir with `overlay`), `oci:DIR[:TAG]` or `docker-archive:FILE` — and stores
   * both. No index change. An image's config Env and Labels come back for the record.
   */
  async importLayer(source: string, opts: { overlay?: boolean; onProgress?(done: number, total: number): void } = {}) {
    const builder = new LayerBuilder({ tmpDir: this.blobs.tmpDir });
    const spools: string[] = [];
    const spool = (tag: string) => {
      const p = this.blobs.tmpPath(tag);
      spools.push(p);
      return p;
    };
    try {
      const { skipped, image } = await addSource(builder, source, { overlay: opts.overlay }, spool);
      const built = builder.build();
      // The entry list goes to the cache as the canonical tar is written: no list in memory.
      const rows = this.entryIndexWriter();
      let hex: string;
      try {
        hex = (await this.blobs.put(counted(built.tar((e) => rows.add(e)), built.bytes + 512 * built.entries, opts.onProgress))).hex;
        await rows.commit(hex);
      } finally {
        rows.abort();
      }
      const layer = cidFromHex(RAW_CODEC, hex);
      const manifest = built.manifest(layer);
      const manifestCid = cidFromHex(JSON_CODEC, await this.blobs.putBytes(canonicalJson(manifest)));
      return { layer, manifest: manifestCid, entries: built.entries, bytes: built.bytes, skipped, image };
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
    const { image, ...layer } = await this.importLayer(source, opts);
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
    const recordCid = await this.putJson(record);
    const status = await this.index(async (ix) => {
      const existing = await ix.get(`m/${fullName}`);
      if (existing === recordCid && !opts.default) return 'unchanged' as const;
      if (existing !== undefined && existing !== recordCid && !opts.force) {
        throw new StrataError(STORE_ERR.EXISTS, `${fullName} is already in the store with other content`, {
          hint: 'use --force to replace it, or import under another version',
        });
      }
      await this.assertBlobs([recordCid, layer.layer, layer.manifest]);
      const ops: Parameters<IndexView['batch']>[0] = [{ type: 'put', key: `m/${fullName}`, value: recordCid }];
      if (opts.default) ops.push({ type: 'put', key: `d/${splitFullName(fullName).name}`, value: fullName });
      await ix.batch(ops);
      return existing === undefined ? ('imported' as const) : existing === recordCid ? ('unchanged' as const) : ('replaced' as const);
    });
    return { fullName, status, record: recordCid, ...layer };
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
    const { mods, defaults } = await this.index(async (ix) => ({ mods: await ix.range('m/'), defaults: new Map(await ix.range('d/')) }));
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
        restricted: record.restricted,
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
    const cid = await this.index((ix) => ix.get(`m/${ref}`));
    if (cid === undefined) {
      throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${ref} in the store`, { hint: 'see `strata store ls`' });
    }
    return { fullName: ref, cid, record: await this.loadRecord(cid, ref) };
  }

  async manifestOf(mod: LoadedModule): Promise<LayerManifest> {
    return this.getJson<LayerManifest>(mod.record.manifest, `manifest of ${mod.fullName}`);
  }

  /**
   * Reads a module's layer as entries with their xattrs and ACLs, verifying the layer digest at
   * the end (a mismatch throws, naming the module).
   */
  async *readLayer(mod: LoadedModule): AsyncGenerator<LayerItem> {
    const manifest = await this.manifestOf(mod);
    const hex = parseCid(mod.record.layer).hex;
    const what = `layer of ${mod.fullName}`;
    try {
      yield* this.layerItems(readTar(this.blobs.read(hex, what)), manifest);
    } catch (e) {
      // A damaged header trips the tar reader before the digest check at end of stream; say
      // what it really is (a corrupt blob) and name the module, as the digest check would.
      if (e instanceof StrataError && (e.code === STORE_ERR.DIGEST_MISMATCH || e.code === STORE_ERR.BLOB_MISSING)) throw e;
      if ((await this.blobs.check(hex)) === 'corrupt') {
        throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} sha256:${hex} is corrupt (its content no longer matches its digest)`, {
          hint: 'run `strata store verify`, then re-import or pull the module',
          cause: e,
        });
      }
      throw e;
    }
  }

  private async *layerItems(tar: ReturnType<typeof readTar>, manifest: LayerManifest): AsyncGenerator<LayerItem> {
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
      yield { entry: applyManifestEntry(entry, manifest.entries[p]), body };
    }
  }

  /**
   * A layer's entries with their xattrs and ACLs, without reading file contents: from the
   * rebuildable entry index in cache/entries/ (written at import), else by reading the layer
   * once (verifying it) and writing that index. The cache is safe to delete.
   */
  async layerEntries(mod: LoadedModule): Promise<LayerEntry[]> {
    const hex = parseCid(mod.record.layer).hex;
    const manifest = await this.manifestOf(mod);
    const file = path.join(this.cacheDir, 'entries', `${hex}.json`);
    let rows: EntryRow[] | undefined;
    try {
      rows = JSON.parse(await fsp.readFile(file, 'utf8')) as EntryRow[];
    } catch {
      rows = undefined;
    }
    if (!Array.isArray(rows)) {
      const entries: LayerEntry[] = [];
      for await (const { entry } of this.readLayer(mod)) entries.push(entry);
      await this.writeEntryIndex(hex, entries);
      return entries;
    }
    return rows.map((r) => applyManifestEntry(fromRow(r), manifest.entries[r[0]]));
  }

  /** Writes a layer's entry list row by row into tmp/, then commits it under the layer's digest. */
  private entryIndexWriter(): { add(e: LayerEntry): void; commit(hex: string): Promise<void>; abort(): void } {
    const tmp = this.blobs.tmpPath('entries');
    const fd = fsSync.openSync(tmp, fsSync.constants.O_WRONLY | fsSync.constants.O_CREAT | fsSync.constants.O_EXCL, 0o644);
    let open = true;
    let first = true;
    let pending: string[] = [];
    let pendingBytes = 0;
    const flush = () => {
      if (pending.length === 0) return;
      fsSync.writeSync(fd, pending.join(''));
      pending = [];
      pendingBytes = 0;
    };
    const close = () => {
      if (open) fsSync.closeSync(fd);
      open = false;
    };
    pending.push('[');
    return {
      add: (e) => {
        const row = JSON.stringify(toRow(e));
        pending.push(first ? row : `,${row}`);
        first = false;
        pendingBytes += row.length;
        if (pendingBytes > 1 << 20) flush();
      },
      commit: async (hex) => {
        pending.push(']');
        flush();
        close();
        const dir = path.join(this.cacheDir, 'entries');
        await fsp.mkdir(dir, { recursive: true });
        await fsp.rename(tmp, path.join(dir, `${hex}.json`));
      },
      abort: () => {
        close();
        fsSync.rmSync(tmp, { force: true });
      },
    };
  }

  private async writeEntryIndex(hex: string, entries: LayerEntry[]): Promise<void> {
    const dir = path.join(this.cacheDir, 'entries');
    await fsp.mkdir(dir, { recursive: true });
    const tmp = this.blobs.tmpPath('entries');
    await fsp.writeFile(tmp, JSON.stringify(entries.map(toRow)));
    await fsp.rename(tmp, path.join(dir, `${hex}.json`));
  }

  // ---- index changes --------------------------------------------------------------------

  async remove(fullName: string): Promise<void> {
    await this.index(async (ix) => {
      if ((await ix.get(`m/${fullName}`)) === undefined) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${fullName} in the store`);
      const { name } = splitFullName(fullName);
      const ops: Parameters<IndexView['batch']>[0] = [{ type: 'del', key: `m/${fullName}` }];
      if ((await ix.get(`d/${name}`)) === fullName) ops.push({ type: 'del', key: `d/${name}` });
      await ix.batch(ops);
    });
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
    const manifest = await this.manifestOf(mod);
    const entries = Object.values(manifest.entries);
    return {
      fullName: mod.fullName,
      cid: mod.cid,
      record: mod.record,
      layerBytes: await this.blobs.size(parseCid(mod.record.layer).hex),
      manifest: { stats: manifest.stats, aclPaths: entries.filter((e) => e.acl).length, xattrPaths: entries.filter((e) => e.xattrs).length },
    };
  }

  exportModule(mod: LoadedModule, out: string): Promise<{ entries: number; bytes: number }> {
    return exportModule(this, mod, out);
  }

  // ---- remotes ----------------------------------------------------------------------------

  addRemote(name: string, url: string, opts: { siteInternal?: boolean } = {}): Promise<Remote> {
    return addRemote(this, name, url, opts);
  }
  listRemotes(): Promise<Remote[]> {
    return listRemotes(this);
  }
  removeRemote(name: string): Promise<void> {
    return removeRemote(this, name);
  }
  push(target: string, modules: string[], opts?: PushOptions): Promise<PushResult[]> {
    return push(this, target, modules, opts);
  }
  pull(source: string, refs: string[], opts?: PullOptions): Promise<PullResult[]> {
    return pull(this, source, refs, opts);
  }
  fetcher(hooks?: TransferHooks): Promise<FetchMissing | undefined> {
    return remoteFetcher(this, hooks);
  }

  // ---- collections (saved stacks, pinned to records) ----------------------------------------

  /** Saves (or replaces) collection `name`. Atomic: a reader sees the old or the new one. */
  async saveCollection(name: string, c: Collection): Promise<void> {
    checkCollectionName(name);
    await this.index((ix) => ix.batch([{ type: 'put', key: `c/${name}`, value: serializeCollection(c) }]));
  }

  /** Collection `name`, validated; undefined when there is none. */
  async loadCollection(name: string): Promise<Collection | undefined> {
    checkCollectionName(name);
    const text = await this.index((ix) => ix.get(`c/${name}`));
    return text === undefined ? undefined : parseCollection(text, name);
  }

  /** Removes collection `name` (its pins go with it); false when there was none. */
  async removeCollection(name: string): Promise<boolean> {
    checkCollectionName(name);
    return this.index(async (ix) => {
      if ((await ix.get(`c/${name}`)) === undefined) return false;
      await ix.batch([{ type: 'del', key: `c/${name}` }]);
      return true;
    });
  }

  /** Names of the saved collections, sorted. */
  async listCollections(): Promise<string[]> {
    return (await this.index((ix) => ix.range('c/'))).map(([k]) => k.slice(2));
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

  /** Removes blobs nothing references. Holds the index lock throughout, so no import commits meanwhile. */
  async gc(opts: { dryRun?: boolean } = {}): Promise<{ removed: string[]; bytes: number }> {
    return this.index(async (ix) => {
      const all: string[] = [];
      for await (const hex of this.blobs.list()) all.push(hex);
      const live = await this.liveBlobs(ix);
      for (const hex of await this.blobs.livePins()) live.add(hex);
      const removed: string[] = [];
      let bytes = 0;
      for (const hex of all) {
        if (live.has(hex)) continue;
        bytes += await this.blobs.size(hex).catch(() => 0);
        removed.push(`sha256:${hex}`);
        if (!opts.dryRun) await this.blobs.remove(hex);
      }
      return { removed, bytes };
    });
  }

  /** Checks every blob of every module (or of `only`); each problem names its module. */
  async verify(only?: string): Promise<VerifyReport> {
    const mods = (await this.index((ix) => ix.range('m/'))).map(([k, cid]) => ({ fullName: k.slice(2), cid }));
    const chosen = only ? mods.filter((m) => m.fullName === only || m.cid === only) : mods;
    if (only && chosen.length === 0) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${only} in the store`);
    const problems: Array<{ module: string; what: string; blob: string; status: string }> = [];
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
        if (s !== 'ok') problems.push({ module: m.fullName, what, blob: cid, status: s });
      }
    }
    return { modules: chosen.length, problems };
  }
}

/** Lmod-style pattern: a substring of the fullName, or a glob with * and ?. */
export function matches(fullName: string, pattern: string): boolean {
  if (!/[*?]/.test(pattern)) return fullName.toLowerCase().includes(pattern.toLowerCase());
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(fullName);
}

/** A cached entry: [path, type, mode, uid, gid, mtime, size, linkname, devmajor, devminor]. */
type EntryRow = [string, LayerEntry['type'], number, number, number, number, number, string?, number?, number?];

function toRow(e: LayerEntry): EntryRow {
  const row: EntryRow = [e.path, e.type, e.mode, e.uid, e.gid, e.mtime, e.size];
  if (e.linkname !== undefined || e.devmajor !== undefined) row.push(e.linkname ?? '');
  if (e.devmajor !== undefined) row.push(e.devmajor, e.devminor ?? 0);
  return row;
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
  total: number,
  onProgress?: (done: number, total: number) => void,
): AsyncGenerator<Uint8Array> {
  let done = 0;
  for await (const chunk of source) {
    done += chunk.byteLength;
    onProgress?.(done, Math.max(total, done));
    yield chunk;
  }
}

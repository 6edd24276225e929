/**
 * The store's interface: the only file of store/ that compose/ and cli/ import.
 *
 * A store is a directory of content-addressed blobs (layer tars, sidecar manifests, module
 * records) and an index naming them (modules, defaults, collections, remotes). What is on disk
 * and why: spec/store.md. Every method below states what it guarantees; "atomic" means a
 * concurrent reader sees the state before or after the call, never a mix.
 */
import type { LayerEntry, ModuleDescription, VerifyReport } from './types.js';
import type { ModuleRecord } from './record.js';
import type { LayerManifest } from './layer/manifest.js';
import type { Collection } from './collections.js';
import type { ImportOptions, ImportResult, ModuleSummary, LoadedModule, LayerItem, StoreUsage } from './local-store.js';
import type { PullOptions, PullResult, PushOptions, PushResult, Remote, TransferHooks, FetchMissing } from './remote/remotes.js';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { defaultStoreRoot, LocalStore } from './local-store.js';
import type { LockOptions } from './catalog/leveldb.js';
import type { StoreReader } from './reader.js';

export { STORE_ERR, StrataError, isStrataError } from './errors.js';
export { compareNames, comparePaths, OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from './types.js';
export { SpillSorter, defaultBudget, stringsCodec, textCodec, type RecordCodec } from './spill.js';
export { entryRecCodec, readEntriesDocument, type EntryRec } from './entries-document.js';
export { decodeEntry, encodeEntry, entrySize } from './layer/entry-codec.js';
export { baseName, isBelow, parentOf } from './layer/path.js';
export type { EntryAcl, EntryType, LayerEntry, ModuleDescription, VerifyReport } from './types.js';
export type { ModuleRecord, EnvOp, RecordExtras } from './record.js';
export { checkFullName, envOpProblem, fullNameOf, parseEnvOp, recordExtras, splitFullName } from './record.js';
export type { LayerManifest } from './layer/manifest.js';
export type { Collection, PinnedModule } from './collections.js';
export type { ImportOptions, ImportResult, ModuleSummary, LoadedModule, LayerItem, StoreUsage } from './local-store.js';
export type { PullOptions, PullResult, PushOptions, PushResult, Remote, TransferHooks, FetchMissing } from './remote/remotes.js';
export { canonicalJson, cidFromHex, isCid, parseCid, JSON_CODEC, RAW_CODEC } from './cid.js';
export { matches } from './local-store.js';
export { MemoryStore } from './memory-store.js';
export { LayerMerge } from './layer/merge.js';
export { fitHeapToPlan, LARGE_PLAN } from './heap.js';
export type { EntrySource, LayerFiles, MergePlan, PlannedEntry, PlannedFile } from './layer/merge.js';

export type { EntryListOptions, LayerBlob, StoreReader } from './reader.js';

/** The whole store, as cli/ and compose/ use it. */
export interface Store extends StoreReader {
  /** The store's directory (absolute). */
  readonly root: string;
  /** Where rebuildable caches go (safe to delete). */
  readonly cacheDir: string;

  /**
   * Imports `source` (tar, tar.gz, tar.zst, directory, overlay upperdir with opts.overlay,
   * `oci:DIR[:TAG]`, `docker-archive:FILE`) as module `fullName`. Idempotent: the same content
   * under the same name is `unchanged`. Other content under that name is ERR_EXISTS unless
   * opts.force. Atomic: every blob is durable before the index names it.
   */
  importModule(fullName: string, source: string, opts?: ImportOptions): Promise<ImportResult>;
  /** Modules whose fullName matches `pattern` (substring, or glob with * and ?), sorted by name. */
  list(pattern?: string): Promise<ModuleSummary[]>;
  /** A module with the sizes and counts `store show` prints. */
  describe(ref: string): Promise<ModuleDescription>;
  /**
   * Removes a module's name (and its default mark) atomically; blobs go at the next gc.
   * ERR_IN_USE (naming them) while other modules need it or collections pin it, unless `force`.
   */
  remove(fullName: string, opts?: { force?: boolean }): Promise<void>;
  /** Marks the default version of a name. Atomic. */
  setDefault(fullName: string): Promise<void>;
  /**
   * Removes blobs nothing references; `dryRun` only lists them. What a catalog superseded less
   * than `graceSeconds` ago (default $STRATA_GC_GRACE or 3600) named is kept (`kept` blobs), so
   * a build that started from it finishes.
   */
  gc(opts?: { dryRun?: boolean; graceSeconds?: number }): Promise<{ removed: string[]; bytes: number; kept: number }>;
  /** Hashes every blob of every module (or of `only`); each problem names its module. */
  verify(only?: string): Promise<VerifyReport>;
  /** Bytes on disk of the own store by part (and of this user's entry-list cache). */
  usage(): Promise<StoreUsage>;
  /** Writes the module's layer as a tar with SCHILY.xattr/acl records; OUT appears whole or not at all. */
  exportModule(mod: LoadedModule, out: string): Promise<{ entries: number; bytes: number }>;

  /** Saves (or replaces) collection `name`, atomically. */
  saveCollection(name: string, c: Collection): Promise<void>;
  /** Collection `name`, validated on read; undefined when there is none. */
  loadCollection(name: string): Promise<Collection | undefined>;
  /** Names of the saved collections, sorted. */
  listCollections(): Promise<string[]>;
  /** Removes collection `name` atomically (`compose disable`); false when there was none. */
  removeCollection(name: string): Promise<boolean>;

  /** Adds a remote (registry/repository) by name. */
  addRemote(name: string, url: string, opts?: { siteInternal?: boolean }): Promise<Remote>;
  listRemotes(): Promise<Remote[]>;
  removeRemote(name: string): Promise<void>;
  /** Pushes modules (all when none are named: what the remote may not receive is skipped) to a remote or REGISTRY/REPO. */
  push(target: string, modules: string[], opts?: PushOptions): Promise<PushResult[]>;
  /** Pulls modules (fullNames or record CIDs; every tag when none) into this store. */
  pull(source: string, refs: string[], opts?: PullOptions): Promise<PullResult[]>;
  /** A fetcher of missing blobs from the configured remotes, or undefined when there are none. */
  fetcher(hooks?: TransferHooks): Promise<FetchMissing | undefined>;

  /** Keeps the blobs of `mods` open for this process (an output in progress survives a concurrent gc). */
  hold(mods: LoadedModule[]): Promise<void>;
  /** True when this user may write the own store (false: a site store opened read-only). */
  readonly writable: boolean;

  /** Releases what the store holds open (pin file, held blobs). */
  close(): Promise<void>;
}

export interface OpenOptions extends LockOptions {}

/** The default store: $STRATA_STORE, else ${XDG_DATA_HOME:-~/.local/share}/strata. */
export { defaultStoreRoot, userCacheDir } from './local-store.js';

/**
 * The store path, like Lmod's MODULEPATH: `stores` given (`--store` once or more), else
 * $STRATA_PATH (DIR[:DIR…]), else $STRATA_STORE alone, else the user's own store
 * (${XDG_DATA_HOME:-~/.local/share}/strata) followed by the site stores ($STRATA_SITE_STORES,
 * else the lines of /etc/strata/stores). The first store is the user's own: it receives
 * imports, pulls and saved collections; the others are only read. `implicit` is true when
 * the user named no store, so an absent own store is empty rather than an error.
 */
export function storePath(stores: string[] = []): { dirs: string[]; implicit: boolean } {
  const split = (v: string) => v.split(':').filter((d) => d !== '');
  if (stores.length > 0) return { dirs: stores, implicit: false };
  if (process.env.STRATA_PATH) return { dirs: split(process.env.STRATA_PATH), implicit: false };
  if (process.env.STRATA_STORE) return { dirs: [process.env.STRATA_STORE], implicit: false };
  let site: string[] = [];
  if (process.env.STRATA_SITE_STORES !== undefined) site = split(process.env.STRATA_SITE_STORES);
  else {
    try {
      site = readFileSync('/etc/strata/stores', 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    } catch {
      /* no site configuration */
    }
  }
  return { dirs: [defaultStoreRoot(), ...site], implicit: true };
}

/**
 * Opens the store path `dirs` (see storePath): the first store, with the rest read after it.
 * Read verbs never create a store: a named store that is absent is "no store at DIR"; the
 * first store is created by the first write. A store the user cannot write is read-only.
 */
export async function openStore(dirs: string[], opts: OpenOptions & { implicit?: boolean } = {}): Promise<Store> {
  const [own, ...lowers] = dirs.map((d) => path.resolve(d));
  const unique = lowers.filter((d, i) => d !== own && lowers.indexOf(d) === i);
  return LocalStore.open(own, { ...opts, lowers: unique, create: false });
}

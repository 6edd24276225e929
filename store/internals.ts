/**
 * What the store's helpers (store/layer/export.ts, store/remote/remotes.ts) use of the store
 * they work on, and the module shapes they share with it. LocalStore implements it; the helpers
 * name this interface, not the class, so no import runs back up to local-store.ts.
 */
import type { BlobStore } from './blob-store.js';
import type { IndexView } from './catalog/view.js';
import type { ModuleRecord } from './record.js';
import type { LayerEntry } from './types.js';

export interface ModuleSummary {
  fullName: string;
  name: string;
  version: string;
  record: string;
  isDefault: boolean;
  /** The record's group, else the group its layer's content is restricted to (restriction follows content). */
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

export interface ReadLayerOptions {
  /** Body chunks are reused read buffers: each is valid until the next one is asked for. */
  transient?: boolean;
}

export interface LayerItem {
  entry: LayerEntry;
  /** Content of a regular file; must be consumed (or skipped) before the next item. */
  body: AsyncIterable<Buffer>;
  /**
   * Where the body starts in the layer's tar. With the layer's CID it names these bytes: the
   * layer is verified whole as it is read, so an output kept at the end was made from them.
   */
  offset: number;
}

export interface StoreInternals {
  readonly root: string;
  readonly blobs: BlobStore;
  /** The writable LevelDB index under its lock; what `fn` changes is published. */
  index<T>(fn: (ix: IndexView) => Promise<T>): Promise<T>;
  /** The published state readers see (no lock). */
  view(): Promise<IndexView>;
  ensureWritable(): Promise<void>;
  getJson<T>(cid: string, what: string): Promise<T>;
  loadRecord(cid: string, fullName?: string): Promise<ModuleRecord>;
  get(ref: string): Promise<LoadedModule>;
  list(pattern?: string): Promise<ModuleSummary[]>;
  setDefault(fullName: string): Promise<void>;
  readLayer(mod: LoadedModule, opts?: ReadLayerOptions): AsyncGenerator<LayerItem>;
  restrictionOf(layer: string): Promise<string | null>;
  moduleRestriction(record: Pick<ModuleRecord, 'restricted' | 'layer'>): Promise<string | null>;
  /** Makes a layer and its manifest, their entry list and caches, group `gid`'s only (content restricted now). */
  confine(layer: string, manifest: string, gid: number): Promise<void>;
}

/**
 * The narrow reader interface outputs use (sandbox, images, export): the local store and the
 * in-memory one both implement it, and test/store-contract holds them to the same contract.
 * Its own file so store/memory-store.ts implements it without importing store/index.ts.
 */
import type { LayerEntry } from './types.js';
import type { ModuleRecord } from './record.js';
import type { ManifestHead } from './layer/manifest.js';
import type { LayerItem, LoadedModule, ReadLayerOptions } from './internals.js';

export interface EntryListOptions {
  /** Only the whiteouts and hard links (what a merge needs before the rest): a cheaper read. */
  whiteoutsAndLinks?: boolean;
}

export interface StoreReader {
  /**
   * A module by exact fullName or record CID, its record read and validated. Throws
   * ERR_NOT_FOUND (no such name), ERR_BLOB_MISSING / ERR_DIGEST_MISMATCH (record damaged),
   * ERR_RECORD_INVALID (not a record).
   */
  get(ref: string): Promise<LoadedModule>;
  /** A record by CID, verified and validated (same errors as get). */
  loadRecord(cid: string, fullName?: string): Promise<ModuleRecord>;
  /**
   * The module's sidecar manifest, verified against its CID, streamed: its fields but its
   * entries, and how many of its paths carry ACLs and xattrs. (The entries themselves reach
   * outputs on the layer's entries, layerEntries and readLayer.)
   */
  manifestSummary(mod: LoadedModule): Promise<{ head: ManifestHead; aclPaths: number; xattrPaths: number }>;
  /**
   * The layer's entries in canonical order with their xattrs and ACLs, without file contents.
   * Comes from a rebuildable cache when there is one; the layer itself is authoritative.
   * Streamed: memory does not grow with the layer.
   */
  layerEntries(mod: LoadedModule, opts?: EntryListOptions): AsyncIterable<LayerEntry>;
  /** A private directory (0700) for this process's spill files (store/spill.ts). */
  scratchDir(): Promise<string>;
  /**
   * The layer's entries with their bodies, in canonical order. The caller drains (or skips) each
   * body before asking for the next item and must run the iterator to its end: the digest is
   * checked at the end, and a mismatch throws ERR_DIGEST_MISMATCH naming the module instead of
   * ending cleanly, so a consumer that commits only on a clean end never keeps bad bytes.
   *
   * With `transient`, the bodies' chunks are views of a few read buffers the store fills again:
   * a chunk is valid only until the chunk after it is asked for (copy or write each one first).
   * That keeps a long read from leaving a MiB of garbage per MiB read.
   */
  readLayer(mod: LoadedModule, opts?: ReadLayerOptions): AsyncIterable<LayerItem>;
  /**
   * The layer's blob opened, for a reader that reads all of it itself instead of readLayer
   * (the sandbox's native extraction, native/extract.ts), planning from the entries
   * layerEntries handed out for it in this process. Absent when the store keeps no files (the
   * in-memory store): read with readLayer. The reader must call `check` with what it found
   * over the whole blob before it makes anything of it visible.
   */
  openLayerBlob?(mod: LoadedModule): Promise<LayerBlob>;
  /**
   * The sha256 of the entry list layerEntries handed out for the layer in this process (the
   * list a plan was made from, as the store's cache holds it: see LayerBlob.check), or
   * undefined when none was. With checkLayerAccess, what lets an output take a layer's part
   * from a record of its user's own earlier build, made from a verified read of the same list.
   */
  entryListDigest?(mod: LoadedModule): string | undefined;
  /**
   * Throws as readLayer would when the layer's blob is missing or this user may not read it
   * (the kernel's answer: it is opened), and reads none of it. An output that does not read a
   * layer still asks this first: no one gets from a cache what they could not read.
   */
  checkLayerAccess?(mod: LoadedModule): Promise<void>;
  /**
   * The group a module's content is restricted to: its record's, else the mark its layer has in
   * any store on the path (restriction follows content). A store that keeps no marks
   * (MemoryStore) has none: the record decides.
   */
  moduleRestriction?(record: Pick<ModuleRecord, 'restricted' | 'layer'>): Promise<string | null>;
}

/** A layer's blob, open for one reader (StoreReader.openLayerBlob). */
export interface LayerBlob {
  /** A descriptor of the canonical tar, readable from its first byte; valid until close(). */
  readonly fd: number;
  /** The blob's length in bytes. */
  readonly size: number;
  /**
   * Throws as readLayer would when the layer is not what the plan was made from: `blob` is
   * the sha256 of all its bytes, `rows` that of the entry list its headers give, as the
   * store's cache holds it (`[`, a JSON row per entry on a line of its own, `]`: see
   * store/entry-rows.ts), `problem` what made the blob unreadable as a layer's tar, `error`
   * a failure to read it. A blob digest that differs is ERR_DIGEST_MISMATCH; an entry list that
   * differs from the one layerEntries handed out is ERR_CACHE_INVALID (the cached list is
   * dropped, as readLayer's check does).
   */
  check(read: { blob?: string; rows?: string; problem?: string; error?: Error }): void;
  close(): Promise<void>;
}

/**
 * A StoreReader over blobs held in memory: what outputs read (records, manifests, entry lists,
 * layer bodies) with the same contract as the local store — every blob verified against its
 * digest, a mismatch thrown at the end of the layer instead of a clean end — so compose's
 * outputs can be exercised without a store on disk, and the contract suite
 * (test/store-contract.test.ts) can hold both implementations to the same behaviour.
 */
import * as os from 'node:os';
import { StrataError, STORE_ERR } from './errors.js';
import { isCid, parseCid, sha256Hex } from './cid.js';
import type { LayerItem, LoadedModule } from './internals.js';
import { layerItem } from './layer/items.js';
import { ManifestIndex, summarizeManifest } from './layer/manifest.js';
import { fullNameOf, validateRecord, type ModuleRecord } from './record.js';
import { readTar } from './tar/reader.js';
import type { LayerEntry } from './types.js';
import type { EntryListOptions, StoreReader } from './reader.js';
import { whiteoutOrLink } from './layer/path.js';

export class MemoryStore implements StoreReader {
  /** Blobs by sha256 hex. */
  readonly blobs = new Map<string, Buffer>();
  /** Module names → record CIDs. */
  readonly names = new Map<string, string>();

  /** Adds a blob; returns its hex digest. */
  put(bytes: Buffer): string {
    const hex = sha256Hex(bytes);
    this.blobs.set(hex, bytes);
    return hex;
  }

  private blob(cid: string, what: string): Buffer {
    const hex = parseCid(cid).hex;
    const b = this.blobs.get(hex);
    if (!b) throw new StrataError(STORE_ERR.BLOB_MISSING, `${what} sha256:${hex} is missing from the store`);
    return b;
  }

  private verified(cid: string, what: string): Buffer {
    const b = this.blob(cid, what);
    const hex = parseCid(cid).hex;
    if (sha256Hex(b) !== hex) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} sha256:${hex} is corrupt (its content no longer matches its digest)`);
    }
    return b;
  }

  async get(ref: string): Promise<LoadedModule> {
    if (isCid(ref)) {
      const record = await this.loadRecord(ref);
      return { fullName: fullNameOf(record), cid: ref, record };
    }
    const cid = this.names.get(ref);
    if (cid === undefined) throw new StrataError(STORE_ERR.NOT_FOUND, `no module ${ref} in the store`);
    return { fullName: ref, cid, record: await this.loadRecord(cid, ref) };
  }

  async loadRecord(cid: string, fullName?: string): Promise<ModuleRecord> {
    const what = fullName ? `record of ${fullName}` : `record ${cid}`;
    return validateRecord(JSON.parse(this.verified(cid, what).toString('utf8')), fullName ?? cid);
  }

  async manifestSummary(mod: LoadedModule) {
    const what = `manifest of ${mod.fullName}`;
    return summarizeManifest([this.verified(mod.record.manifest, what)], what);
  }

  async *layerEntries(mod: LoadedModule, opts: EntryListOptions = {}): AsyncGenerator<LayerEntry> {
    for await (const { entry } of this.readLayer(mod)) if (!opts.whiteoutsAndLinks || whiteoutOrLink(entry)) yield entry;
  }

  async scratchDir(): Promise<string> {
    return os.tmpdir();
  }

  async *readLayer(mod: LoadedModule): AsyncGenerator<LayerItem> {
    const index = await ManifestIndex.read([this.verified(mod.record.manifest, `manifest of ${mod.fullName}`)], `manifest of ${mod.fullName}`, os.tmpdir());
    const manifest = index.lookup();
    const what = `layer of ${mod.fullName}`;
    const bytes = this.blob(mod.record.layer, what);
    const hex = parseCid(mod.record.layer).hex;
    const ok = sha256Hex(bytes) === hex;
    try {
      for await (const t of readTar(chunks(bytes))) yield layerItem(t, manifest);
    } catch (e) {
      if (ok) throw e;
    } finally {
      index.dispose();
    }
    // As the local store: the digest is checked when the stream ends, so a consumer that
    // commits only on a clean end never keeps bad bytes.
    if (!ok) throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} sha256:${hex} is corrupt (its content no longer matches its digest)`);
  }
}

async function* chunks(b: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < b.length; at += 1 << 20) yield b.subarray(at, at + (1 << 20));
}

/**
 * The sidecar manifest of a layer: per path, every xattr (base64) and the POSIX ACLs (canonical
 * text, numeric ids). It makes a layer's access policy readable and diffable without unpacking
 * its tar. Schema: spec/layer-manifest.schema.json.
 *
 *   { "manifestVersion": 1, "layer": "<layer CID>",
 *     "stats": { "entries": N, "bytes": N },
 *     "entries": { "<path>": { "xattrs": { "<name>": "<base64>" }, "acl": { "access": "…", "default": "…" } } } }
 */
import { StrataError, STORE_ERR } from '../errors.js';
import { entryRecCodec, readEntriesDocument, type EntryRec } from '../entries-document.js';
import { SpillSorter } from '../spill.js';
import { comparePaths, LayerEntry, EntryAcl } from '../types.js';

export interface ManifestEntry {
  xattrs?: Record<string, string>;
  acl?: EntryAcl;
}

export interface LayerManifest {
  manifestVersion: 1;
  layer: string;
  stats: { entries: number; bytes: number };
  entries: Record<string, ManifestEntry>;
}

export function manifestEntry(e: LayerEntry): ManifestEntry | undefined {
  const out: ManifestEntry = {};
  if (e.xattrs && e.xattrs.size > 0) {
    out.xattrs = {};
    for (const name of [...e.xattrs.keys()].sort()) out.xattrs[name] = e.xattrs.get(name)!.toString('base64');
  }
  if (e.acl && (e.acl.access || e.acl.default)) {
    out.acl = {};
    if (e.acl.access) out.acl.access = e.acl.access;
    if (e.acl.default) out.acl.default = e.acl.default;
  }
  return out.xattrs || out.acl ? out : undefined;
}

/** A manifest's entry of one path; asked in canonical path order (a layer's). */
export type ManifestLookup = (path: string) => ManifestEntry | undefined;

/**
 * A manifest's entries for a read of its layer, which asks for each of its paths in canonical
 * order: the entries are sorted into that order (the document keeps JSON's) through spill files
 * as the manifest streams, and a lookup moves a cursor over them. Memory is the sorter's
 * budget, whatever the number of entries: a licensed tree has an ACL on every file. Call
 * dispose() when done (the spill files).
 */
export class ManifestIndex {
  private constructor(
    readonly head: ManifestHead,
    private readonly sorter: SpillSorter<EntryRec>,
    private readonly what: string,
  ) {}

  /** The lookups' cursors: a pass that stops early leaves its spill file open until dispose. */
  private readonly cursors: Array<Generator<EntryRec>> = [];

  /** Reads the manifest from its bytes (`what` names it in errors); `tmpDir` takes the spill files. */
  static async read(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, what: string, tmpDir: string): Promise<ManifestIndex> {
    const sorter = new SpillSorter<EntryRec>({ compare: (a, b) => comparePaths(a[0], b[0]), codec: entryRecCodec, dir: tmpDir });
    try {
      const head = await readManifest(chunks, what, (path, _e, json) => sorter.push([path, json]));
      return new ManifestIndex(head, sorter, what);
    } catch (e) {
      sorter.dispose();
      throw e;
    }
  }

  /** A lookup for one pass over the layer; paths must come in canonical order, each once. */
  lookup(): ManifestLookup {
    if (this.sorter.count === 0) return () => undefined;
    const it = this.sorter.sorted();
    this.cursors.push(it);
    let cur = it.next();
    let last: string | undefined;
    return (path) => {
      if (last !== undefined && comparePaths(last, path) >= 0) {
        throw new StrataError(STORE_ERR.TAR_UNSUPPORTED, `the layer of ${this.what.replace(/^manifest of /, '')} is not in canonical order at '${path}'`, { hint: 'import it again' });
      }
      last = path;
      while (!cur.done && comparePaths(cur.value[0], path) < 0) cur = it.next();
      if (cur.done || cur.value[0] !== path) return undefined;
      const json = cur.value[1];
      cur = it.next();
      if (!cur.done && cur.value[0] === path) {
        throw new StrataError(STORE_ERR.RECORD_INVALID, `${this.what} names '${path}' twice`, { hint: 'run `strata store verify`' });
      }
      return JSON.parse(json) as ManifestEntry;
    };
  }

  dispose(): void {
    for (const it of this.cursors.splice(0)) it.return(undefined);
    this.sorter.dispose();
  }
}

/** A manifest's fields, and how many of its paths carry ACLs and xattrs (`strata store show`). */
export async function summarizeManifest(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, what: string): Promise<{ head: ManifestHead; aclPaths: number; xattrPaths: number }> {
  let aclPaths = 0;
  let xattrPaths = 0;
  const head = await readManifest(chunks, what, (_p, e) => {
    if (e.acl) aclPaths++;
    if (e.xattrs) xattrPaths++;
  });
  return { head, aclPaths, xattrPaths };
}

/** Puts a manifest entry's xattrs and ACLs back onto an entry read from the layer tar. */
export function applyManifestEntry(e: LayerEntry, m: ManifestEntry | undefined): LayerEntry {
  if (!m) return e;
  if (m.xattrs) e.xattrs = new Map(Object.entries(m.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  if (m.acl) e.acl = { ...m.acl };
  return e;
}

/** A manifest's fields but its entries. */
export interface ManifestHead {
  manifestVersion: 1;
  layer: string;
  stats: { entries: number; bytes: number };
}

/**
 * Reads a manifest document as its bytes stream, holding one entry at a time
 * (readEntriesDocument): `onEntry` gets each member of "entries" in the document's order, with
 * its JSON text; the other fields come back once the document has ended. The manifests strata
 * writes are canonical JSON, but a pulled one is only held to its digest: any layout is read.
 * Malformed input: ERR_RECORD_INVALID naming `what`.
 */
export async function readManifest(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  what: string,
  onEntry: (path: string, entry: ManifestEntry, json: string) => void,
): Promise<ManifestHead> {
  const bad = (why: string) => new StrataError(STORE_ERR.RECORD_INVALID, `${what} is not a layer manifest: ${why}`, { hint: 'run `strata store verify`' });
  const { head, hasEntries } = await readEntriesDocument(chunks, 'entries', bad, (path, entry, json) => onEntry(path, entry as ManifestEntry, json));
  const stats = head['stats'] as ManifestHead['stats'] | undefined;
  if (!hasEntries || head['manifestVersion'] !== 1 || typeof head['layer'] !== 'string' || typeof stats?.entries !== 'number' || typeof stats?.bytes !== 'number') {
    throw bad('it lacks manifestVersion 1, layer, stats or entries');
  }
  return { manifestVersion: 1, layer: head['layer'], stats: { entries: stats.entries, bytes: stats.bytes } };
}

/**
 * Canonical layers. Sources add entries in whatever order they have them; the builder checks
 * them, then writes the canonical tar and the sidecar manifest:
 *
 * - entries sorted by path, component by component (parents first), root `./` first if present;
 * - ustar headers with numeric ids only, no uname/gname, mtime in whole seconds, mode & 07777,
 *   PAX records only for what ustar cannot hold (long names, large ids/sizes), never xattrs;
 * - a hard-link group is written once: its first path in sorted order carries the content and
 *   the inode's metadata, every other member is a hard link to it;
 * - OCI whiteouts kept as entries, with their metadata zeroed (mode 0, uid/gid 0, mtime 0);
 * - xattrs and ACLs go to the manifest, never into the tar;
 * - nothing that no output can hold (limits.ts): such an entry is refused when added.
 *
 * So the same tree gives the same bytes whatever tool packed it and in whatever order.
 */
import { aclFromText, aclModeBits } from '../../native/acl.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { LayerEntry, comparePaths } from '../types.js';
import { isBelow, normalizeLayerPath, printable, whiteoutTarget } from './path.js';
import { encodeHeader, encodeHeaderInto, END_OF_ARCHIVE, type TarWriteHeader } from '../tar/writer.js';
import { BLOCK, padding } from '../tar/header.js';
import { entryRecCodec, type EntryRec } from '../entries-document.js';
import { manifestEntry, type ManifestHead } from './manifest.js';
import { canonicalJsonText } from '../cid.js';
import { checkOutputLimits } from './limits.js';
import { entryCodec } from './entry-codec.js';
import { mapItems, nextItem, nowIterator } from '../map-items.js';
import { SpillSorter, stringsCodec, type RecordCodec } from '../spill.js';
import * as os from 'node:os';

/**
 * A file's content as chunks, each valid until the next is asked for (a source may reuse its
 * buffers: the consumer copies what it keeps).
 */
export type ContentOpener = () => AsyncIterable<Uint8Array>;

/**
 * Where a file's content is, in a form that can go through a spill file: `src` is a reader
 * registered with contentSource(), `a`/`b` its arguments (an offset and a length, a path).
 */
export interface ContentRef {
  src: number;
  a: number | string;
  b?: number;
}

/**
 * One entry of a source that can give its entries again (LayerBuilder.addFrom): the entry, its
 * content by reference, and the same content as the source reaches it. The entry is the
 * builder's from then on (it is made canonical in place), as an entry given to add() is.
 */
export interface SourceItem {
  entry: LayerEntry;
  /** The content, readable at any time and in any order (it goes through the spill files). */
  content?: ContentRef;
  /** The content read in sequence, once, valid until the next item is asked for. */
  body?: AsyncIterable<Uint8Array>;
}

/**
 * A source's entries from its start, in the same order on every call. `pass.bodies`: whether
 * this pass reads every item's body, in sequence (the canonical tar written as the source is
 * read), or none (the entries sorted, or taken by reference): a source read from a file may
 * read ahead of the first kind only.
 */
export type SourceItems = (pass: { bodies: boolean }) => AsyncIterable<SourceItem>;

/** Where a record's content is: a content reference, or the id of an in-memory opener. */
type Content = [number, number | string, number?] | ['fn', number] | null;

/** What a record carries beside its entry: the order it was added in, and its content. */
type Extra = [number, Content];

interface Rec {
  entry: LayerEntry;
  extra: Extra;
}

/**
 * A layer ready to be read: once, by tar() or by refs(), inside LayerBuilder.written (which
 * runs the read again, sorted, when an ordered source turns out not to be in order).
 */
export interface BuiltLayer {
  /**
   * Streams the canonical tar, each chunk valid until the next is asked for; `onEntry` sees
   * each canonical entry as it is written. Call once.
   */
  tar(onEntry?: (e: LayerEntry) => void): AsyncGenerator<Uint8Array>;
  /**
   * The canonical entries in order, each file with where its content is (for a source that
   * gives contents by reference: contentReader reads them), to be read after the pass, in any
   * order: an OCI image's layers, merged before they become one layer.
   */
  refs(): AsyncGenerator<{ entry: LayerEntry; content?: ContentRef }>;
  /**
   * The manifest's bytes (its canonical JSON, manifest.ts), in chunks; after tar() has run (its
   * entries are collected while the tar is written, and sorted through spill files). Read once.
   */
  manifest(layerCid: string): Iterable<Buffer>;
  /** Entries and bytes of files; for a layer from an ordered source, after tar() has run. */
  readonly entries: number;
  readonly bytes: number;
  /** About the canonical tar's bytes (a hint for progress and hashing). */
  readonly sizeHint: number | undefined;
}

export interface BuilderOptions {
  /** Directory for spill runs (strata's tmp/); default the OS temp dir. */
  tmpDir?: string;
  /** Bytes of entries held in memory before they spill to disk (default store/spill.ts defaultBudget()). */
  budget?: number;
}

/**
 * Collects a layer's entries, in any order and any number (past the budget they are sorted
 * to disk: store/spill.ts), and builds its canonical form. Memory is bounded by the budgets
 * (the entries', the hard links', the manifest's), whatever the number of entries and links
 * (sortedRecords says what is held beside them). A source that can give its entries again (addFrom) and
 * gives them in canonical order is not sorted at all: its canonical tar is written as it is
 * read (`written`).
 */
export class LayerBuilder {
  private readonly sorter: SpillSorter<Rec>;
  private readonly cleanups: Array<() => void> = [];
  private readonly sources: Array<(a: number | string, b?: number) => AsyncIterable<Uint8Array>> = [];
  private readonly openers: ContentOpener[] = [];
  /** Hard links as added, by the path they name (spilled past the budget like the entries). */
  private links: SpillSorter<LinkRec>;
  private seq = 0;
  private bytes = 0;
  private built = false;
  /**
   * The source of every entry while it is taken to be in canonical order (addFrom): the built
   * layer reads it as its canonical tar is written, and the sorter holds nothing.
   */
  private ordered: SourceItems | undefined;
  private orderedSize: number | undefined;

  private readonly tmpDir: string;
  private readonly budget: number | undefined;

  constructor(opts: BuilderOptions = {}) {
    this.tmpDir = opts.tmpDir ?? os.tmpdir();
    this.budget = opts.budget;
    this.sorter = this.recSorter();
    this.links = this.linkSorter();
  }

  /** A sorter of hard links by the path they name, then their own (disposed with the builder). */
  private linkSorter(): SpillSorter<LinkRec> {
    const links = new SpillSorter<LinkRec>({ compare: byTarget, codec: stringsCodec<LinkRec>(), dir: this.tmpDir, budget: this.budget });
    this.cleanups.push(() => links.dispose());
    return links;
  }

  /** A sorter of records by path (disposed with the builder). */
  private recSorter(): SpillSorter<Rec> {
    const recs = new SpillSorter<Rec>({
      compare: (x, y) => comparePaths(x.entry.path, y.entry.path),
      codec: entryCodec<Extra>() as RecordCodec<Rec>,
      dir: this.tmpDir,
      budget: this.budget,
    });
    this.cleanups.push(() => recs.dispose());
    return recs;
  }

  /** Runs `fn` at dispose(): sources keep files open until the canonical tar is written. */
  defer(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Releases what the sources held open and the spill runs. Call once the tar has been written (or failed). */
  dispose(): void {
    for (const fn of this.cleanups.splice(0).reverse()) fn();
  }

  /** Registers a content reader; entries then name their content as { src, a, b }. */
  contentSource(read: (a: number | string, b?: number) => AsyncIterable<Uint8Array>): number {
    this.sources.push(read);
    return this.sources.length - 1;
  }

  /**
   * Adds one entry, which is the builder's from then on (made canonical in place). `entry.path`
   * may be raw (it is normalized here); hard-link names too.
   */
  add(entry: LayerEntry, content?: ContentOpener | ContentRef): void {
    if (this.built || this.ordered) throw new Error('LayerBuilder: add after build or after an ordered source');
    const e = this.canonicalEntry(entry);
    const r: Rec = { entry: e, extra: [this.seq++, keepsContent(entry, e) ? this.contentOf(content) : null] };
    this.note(r);
    this.sorter.push(r);
  }

  /**
   * Takes every entry from `items`, the builder's only source. Many archives come in canonical
   * order already (GNU tar --sort=name, the layers OCI tools write, strata's own): the canonical
   * tar is then written as the source is read, in one pass, with nothing held or spilled. A
   * source that is not in order is found out during that pass, which is then given up
   * (`written` runs it again from the sorter). `size`: about the bytes the source holds.
   */
  addFrom(items: SourceItems, opts: { size?: number } = {}): void {
    if (this.built || this.ordered || this.seq > 0) throw new Error('LayerBuilder: addFrom must be the only source');
    this.ordered = items;
    this.orderedSize = opts.size;
  }

  /**
   * Runs `use` with the built layer, which reads it (its tar or its items). When an ordered
   * source (addFrom) turns out not to be in order, `use` has thrown away what it made of it (it
   * must leave nothing behind when it throws); the entries are then sorted and `use` runs again.
   */
  async written<T>(use: (built: BuiltLayer) => Promise<T>): Promise<T> {
    try {
      return await use(this.build());
    } catch (e) {
      if (!(e instanceof Unordered)) throw e;
    }
    await this.sortAll();
    return use(this.build());
  }

  /** Every entry of the ordered source, read again into the sorter. */
  private async sortAll(): Promise<void> {
    const items = this.ordered!;
    this.ordered = undefined;
    this.built = false;
    this.forget();
    for await (const item of items({ bodies: false })) this.add(item.entry, item.content);
  }

  /** Forgets what note() kept, before the entries are taken again. */
  private forget(): void {
    if (this.links.count > 0) this.links = this.linkSorter();
    this.bytes = 0;
    this.seq = 0;
  }

  /**
   * `e` made canonical in place (its path normalized, its metadata canonical, within the
   * limits) and returned; for a whiteout, a new entry with its metadata zeroed. Made in place:
   * a copy per entry was a sixth of the garbage of a large import.
   */
  private canonicalEntry(e: LayerEntry): LayerEntry {
    const p = normalizeLayerPath(e.path);
    if (whiteoutTarget(p)) return { path: p, type: 'file', mode: 0, uid: 0, gid: 0, mtime: 0, size: 0 };
    e.mode = modeWithAcl(e);
    e.path = p;
    e.mtime = Math.floor(e.mtime);
    // An empty xattr map costs memory on every entry of a large layer: keep none.
    if (e.xattrs !== undefined && e.xattrs.size === 0) e.xattrs = undefined;
    checkOutputLimits(e);
    if (e.type === 'hardlink') {
      e.linkname = normalizeLayerPath(e.linkname ?? '', `hard link target of '${printable(p)}'`);
      e.size = 0;
      e.xattrs = undefined;
      e.acl = undefined;
    } else if (e.type !== 'file') e.size = 0;
    return e;
  }

  /** A content as a record carries it. */
  private contentOf(content: ContentOpener | ContentRef | undefined): Content {
    if (typeof content === 'function') {
      this.openers.push(content);
      return ['fn', this.openers.length - 1];
    }
    if (content === undefined) return null;
    return content.b === undefined ? [content.src, content.a] : [content.src, content.a, content.b];
  }

  /** What the builder keeps of every entry beside the sorter: its hard links, the bytes of its files. */
  private note(r: Rec): void {
    if (r.entry.type === 'hardlink') this.links.push([r.entry.linkname!, r.entry.path, String(r.extra[0])]);
    else this.bytes += r.entry.size;
  }

  /** The reader registered as content source `src` (contentSource). */
  contentReader(src: number): (a: number | string, b?: number) => AsyncIterable<Uint8Array> {
    return this.sources[src]!;
  }

  /** Where a record's content is, as a reference; a content given as an opener has none. */
  private refOf(extra: Extra): ContentRef | undefined {
    const c = extra[1];
    if (c === null) return undefined;
    if (c[0] === 'fn') throw new Error('LayerBuilder: a content given as an opener has no reference');
    const [src, a, b] = c as [number, number | string, number?];
    return b === undefined ? { src, a } : { src, a, b };
  }

  /** The content of a canonical entry, to be read once: as the source reads it, or by its reference. */
  private body(s: Canonical): AsyncIterable<Uint8Array> | undefined {
    if (s.body !== undefined) return s.body;
    if (s.ref !== undefined) return this.sources[s.ref.src]!(s.ref.a, s.ref.b);
    const c = s.from?.[1];
    if (c === undefined || c === null) return undefined;
    if (c[0] === 'fn') return this.openers[c[1] as number]!();
    const [src, a, b] = c as [number, number | string, number?];
    return this.sources[src]!(a, b);
  }

  /**
   * Checks the entries one after another in canonical order (one checker per pass): a path
   * twice, or an entry beneath a symlink or non-directory of the layer, is refused.
   */
  private checker(): (e: LayerEntry) => void {
    let prev: string | undefined;
    const ancestors: Array<{ path: string; type: LayerEntry['type'] }> = [];
    return (e) => {
      const p = e.path;
      if (p === prev) {
        throw new StrataError(STORE_ERR.LAYER_DUPLICATE, `the layer holds '${printable(p)}' twice`, { hint: 'repack it with each path once' });
      }
      prev = p;
      // The staged ancestors of p are exactly the stack's entries that are prefixes of p.
      while (ancestors.length > 0 && !isBelow(p, ancestors[ancestors.length - 1]!.path)) ancestors.pop();
      const bad = ancestors.find((a) => a.type !== 'dir');
      if (bad) {
        const how = bad.type === 'symlink' ? 'through the symlink' : 'beneath the non-directory';
        throw new StrataError(STORE_ERR.LAYER_UNSAFE_PATH, `entry '${printable(p)}' is written ${how} '${printable(bad.path)}'`, {
          hint: 'refusing a layer that could write outside its root',
        });
      }
      ancestors.push({ path: p, type: e.type });
    };
  }

  /**
   * The sorted entries' canonical form, checked now: one pass over the entries checks them
   * and joins the hard links (sorted by the path they name) with what they name; a second,
   * over the linked files only, gives each group its leader (its first path) and writes every
   * member's canonical entry to a sorter by path, which the tar's pass merges back in.
   * Memory: the sorters' budgets, plus the links that name another link (no archiver writes
   * those: GNU tar, bsdtar and OCI tools link every name to the first).
   */
  private sortedRecords(): () => Iterable<Canonical> {
    const sorter = this.sorter;
    const check = this.checker();
    if (this.links.count === 0) {
      for (const r of sorter.sorted()) check(r.entry);
      return function* () {
        for (const r of sorter.sorted()) yield { entry: r.entry, from: r.extra };
      };
    }
    // Pass 1. A link's fault is kept until the pass is over (the entries' own come first), and
    // of several, the one of the link added first.
    let fault: { seq: number; error: StrataError } | undefined;
    const blame = (link: LinkRec, why: string, hint?: string) => {
      const seq = Number(link[2]);
      if (fault && fault.seq < seq) return;
      fault = { seq, error: new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(link[1])}' points at '${printable(link[0])}', which ${why}`, hint ? { hint } : undefined) };
    };
    const notInLayer = (link: LinkRec) => blame(link, 'is not in the layer', 'a layer may only link to files it holds itself');
    /** Links that a link names: the path each names in turn. */
    const hops = new Map<string, string>();
    /** Links that name a link, and the link each names. */
    const chained: Array<[link: string, target: string]> = [];
    const linked = this.recSorter();
    const links = this.links.sorted()[Symbol.iterator]();
    let link = links.next();
    for (const r of sorter.sorted()) {
      const e = r.entry;
      check(e);
      for (; !link.done && comparePaths(link.value[0], e.path) < 0; link = links.next()) notInLayer(link.value);
      if (link.done || link.value[0] !== e.path) continue;
      if (e.type === 'file') linked.push(r);
      else if (e.type === 'hardlink') hops.set(e.path, e.linkname!);
      for (; !link.done && link.value[0] === e.path; link = links.next()) {
        const l = link.value;
        if (e.type === 'hardlink') chained.push([l[1], e.path]);
        else if (e.type !== 'file') blame(l, 'is not a regular file');
        if (r.extra[0] > Number(l[2])) blame(l, 'is not earlier in the layer', 'a layer may only link to files it holds itself, before the link');
      }
    }
    for (; !link.done; link = links.next()) notInLayer(link.value);
    // A link that names a link belongs to the group of the file at the end of the chain.
    const viaChain = new Map<string, string[]>();
    for (const [p, target] of chained) {
      let t = target;
      for (let n = 0; hops.has(t); n++) {
        if (n > hops.size) throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(p)}' is part of a loop of hard links`);
        t = hops.get(t)!;
      }
      const members = viaChain.get(t);
      if (members) members.push(p);
      else viaChain.set(t, [p]);
    }
    if (fault) throw fault.error;

    // Pass 2, over the linked files and their links: each member's canonical entry.
    const members = this.recSorter();
    const again = this.links.sorted()[Symbol.iterator]();
    let next = again.next();
    for (const file of linked.sorted()) {
      const f = file.entry;
      while (!next.done && comparePaths(next.value[0], f.path) < 0) next = again.next();
      const extra = viaChain.get(f.path) ?? [];
      let leader = f.path;
      if (!next.done && next.value[0] === f.path && comparePaths(next.value[1], leader) < 0) leader = next.value[1];
      for (const p of extra) if (comparePaths(p, leader) < 0) leader = p;
      const member = (p: string) => {
        if (p === leader) members.push({ entry: { ...f, path: leader, type: 'file', linkname: undefined }, extra: file.extra });
        else members.push({ entry: linkTo(f, p, leader), extra: [file.extra[0], null] });
      };
      if (leader !== f.path) member(f.path);
      for (; !next.done && next.value[0] === f.path; next = again.next()) member(next.value[1]);
      for (const p of extra) member(p);
    }
    linked.dispose();
    // The tar's pass: each member's entry in place of its record.
    return function* () {
      const canon = members.sorted()[Symbol.iterator]();
      let m = canon.next();
      for (const r of sorter.sorted()) {
        if (!m.done && m.value.entry.path === r.entry.path) {
          yield { entry: m.value.entry, from: m.value.extra[1] === null ? undefined : m.value.extra };
          m = canon.next();
        } else yield { entry: r.entry, from: r.extra };
      }
    };
  }

  /**
   * The entries of an ordered source in canonical order, checked as they come: one pass that
   * writes the tar as the source is read. A hard link needs its file's metadata, which came
   * earlier: the last FILE_RING files (and links) are kept for that (a link names a file
   * nearby in most layers). Anything else gives the pass up (Unordered), and the sorter
   * takes over: an entry out of order (or a path twice), a link to a later path, or to a
   * file no longer kept (or to anything but a file, which the sorter then refuses).
   */
  private orderedRecords(ordered: SourceItems): (bodies: boolean) => AsyncIterable<Canonical> {
    // Each item gives one record, so the pass is a map over the source (mapItems: not a
    // generator, whose every step costs promises of its own), set up as iteration starts.
    return (bodies) => ({
      [Symbol.asyncIterator]: () => {
        this.forget();
        const check = this.checker();
        const files = new Recent<LayerEntry>(FILE_RING);
        /** Recent hard links: the file each names in the end. */
        const links = new Recent<string>(FILE_RING);
        let last: string | undefined;
        return mapItems(ordered({ bodies }), (item): Canonical => {
          const e = this.canonicalEntry(item.entry);
          if (!follows(last, e)) throw new Unordered();
          if (e.type !== 'hardlink') this.bytes += e.size;
          check(e);
          last = e.path;
          this.seq++;
          if (e.type !== 'hardlink') {
            if (e.type === 'file') files.set(e.path, e);
            return keepsContent(item.entry, e) ? { entry: e, ref: item.content, body: item.body } : { entry: e };
          }
          // Every member of the group came before this one: the file leads it.
          const root = links.get(e.linkname!) ?? e.linkname!;
          const file = files.get(root);
          if (file === undefined) throw new Unordered();
          links.set(e.path, root);
          return { entry: linkTo(file, e.path, root) };
        })[Symbol.asyncIterator]();
      },
    });
  }

  /**
   * Validates the whole layer and fixes its canonical form. Refuses duplicates, entries beneath
   * a symlink or non-directory of the layer, and hard links to anything but a regular file of
   * the layer, earlier in it. Sorted entries are checked here, in one pass over them with no
   * content read; entries of an ordered source (addFrom) as they are read, so a refusal then
   * comes while the tar is written (the store discards it).
   */
  build(): BuiltLayer {
    this.built = true;
    const ordered = this.ordered;
    /** The canonical entries in order, each with where its content is. */
    const records = ordered === undefined ? this.sortedRecords() : this.orderedRecords(ordered);
    // The manifest's entries, in its order (JSON's, by UTF-16 code units: not the tar's), through
    // spill files: a licensed tree has an ACL on every file, and 200,000 of them held as
    // objects, then as one JSON string, took the import past 340 MiB.
    const manifestEntries = new SpillSorter<EntryRec>({ compare: byJsonKey, codec: entryRecCodec, dir: this.tmpDir, budget: this.budget });
    this.cleanups.push(() => manifestEntries.dispose());
    const builder = this;
    return {
      get entries() {
        return builder.seq;
      },
      get bytes() {
        return builder.bytes;
      },
      sizeHint: ordered === undefined ? this.bytes + 512 * this.seq : this.orderedSize,
      tar: (onEntry) =>
        canonicalTar(
          records(true),
          (e) => {
            const m = manifestEntry(e);
            if (m) manifestEntries.push([e.path, canonicalJsonText(m)]);
            onEntry?.(e);
          },
          (s) => this.body(s),
        ),
      refs: async function* () {
        // By reference: these contents are read after the pass, in any order.
        for await (const c of records(false)) yield { entry: c.entry, content: c.ref ?? (c.from && builder.refOf(c.from)) };
      },
      manifest: (layer) => manifestBytes(manifestEntries.sorted(), { manifestVersion: 1, layer, stats: { entries: builder.seq, bytes: builder.bytes } }),
    };
  }
}

/** The order of a JSON document's keys in canonical JSON (cid.ts): by UTF-16 code units. */
const byJsonKey = (a: EntryRec, b: EntryRec): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** Bytes of manifest text gathered into one chunk. */
const MANIFEST_CHUNK = 64 << 10;

/**
 * The bytes canonicalJson gives for `head` with `entries` added (manifest.ts's LayerManifest),
 * written as they come: the sorted entries go into "entries", the document's first key.
 */
function* manifestBytes(entries: Iterable<EntryRec>, head: ManifestHead): Generator<Buffer> {
  let text = '{"entries":{';
  let first = true;
  for (const [path, json] of entries) {
    text += `${first ? '' : ','}${JSON.stringify(path)}:${json}`;
    first = false;
    if (text.length >= MANIFEST_CHUNK) {
      yield Buffer.from(text);
      text = '';
    }
  }
  const rest = canonicalJsonText(head);
  yield Buffer.from(`${text}},${rest.slice(1)}`);
}

/** How many of the latest files (and links) a pass over an ordered source keeps for the hard links that follow. */
const FILE_RING = 4096;

/**
 * The latest `size` values set, by key, where each key set comes after the last in canonical
 * order (a pass over an ordered source sets paths as it meets them): a ring of keys searched by
 * bisection. A Map hashed every path set (4 % of a million-file import's main thread); a
 * lookup, which only a hard link makes, costs a dozen comparisons.
 */
class Recent<T> {
  private readonly keys: string[];
  private readonly values: T[];
  /** Where the next key goes, and how many are held. */
  private at = 0;
  private held = 0;

  constructor(private readonly size: number) {
    this.keys = new Array<string>(size).fill('');
    this.values = new Array<T>(size);
  }

  set(key: string, value: T): void {
    this.keys[this.at] = key;
    this.values[this.at] = value;
    this.at = this.at + 1 === this.size ? 0 : this.at + 1;
    if (this.held < this.size) this.held++;
  }

  get(key: string): T | undefined {
    // The i-th oldest key held is at (first + i) % size.
    const first = this.at - this.held + this.size;
    let lo = 0;
    let hi = this.held;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const slot = (first + mid) % this.size;
      const c = comparePaths(this.keys[slot]!, key);
      if (c === 0) return this.values[slot];
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return undefined;
  }
}

/** Thrown by a pass over an ordered source that finds it is not in order: LayerBuilder.written sorts it and runs again. */
class Unordered extends Error {
  constructor() {
    super('the source is not in canonical order');
  }
}

/**
 * An entry on its way to the canonical tar, in its canonical form, and where its content is:
 * for a sorted entry, its record's `from`; for one of an ordered source, the source's
 * reference `ref` and the same content as read in sequence (`body`), when it gives them.
 */
interface Canonical {
  entry: LayerEntry;
  from?: Extra;
  ref?: ContentRef;
  body?: AsyncIterable<Uint8Array>;
}

/** Whether an entry made canonical (`e`, from `given`) keeps the content given with it: whiteouts and hard links have none. */
const keepsContent = (given: LayerEntry, e: LayerEntry): boolean => e === given && e.type !== 'hardlink';

/** A hard link as added: the path it names, its own path, the order it was added in (decimal). */
type LinkRec = [target: string, path: string, seq: string];

/** Hard links by the path they name, then by their own. */
const byTarget = (a: LinkRec, b: LinkRec): number => comparePaths(a[0], b[0]) || comparePaths(a[1], b[1]);

/**
 * The entry of hard link `path` to `leader` in a group whose file (a regular file) is `file`:
 * the inode's metadata, no xattrs (the leader carries them). Written out field by field: a
 * rest-and-spread copy went through V8's slow path, and a large layer of hard links makes
 * one per link.
 */
function linkTo(file: LayerEntry, path: string, leader: string): LayerEntry {
  return { path, type: 'hardlink', mode: file.mode, uid: file.uid, gid: file.gid, mtime: file.mtime, size: 0, linkname: leader };
}

/** Whether `e` comes after `last` in canonical order and, a hard link, names a path before its own. */
function follows(last: string | undefined, e: LayerEntry): boolean {
  const p = e.path;
  if (last !== undefined && comparePaths(last, p) >= 0) return false;
  return e.type !== 'hardlink' || comparePaths(e.linkname!, p) < 0;
}

/**
 * With an access ACL the permission bits are the ACL's, as the kernel keeps them (group bits =
 * mask). Tools disagree here (bsdtar writes group:: into the mode), so the canonical form fixes it.
 */
function modeWithAcl(e: LayerEntry): number {
  const mode = e.mode & 0o7777;
  if (!e.acl?.access) return mode;
  const b = aclModeBits(aclFromText(e.acl.access));
  return (mode & 0o7000) | (b.user << 6) | (b.group << 3) | b.other;
}

export function tarPathOf(e: LayerEntry): string {
  if (e.path === '.') return './';
  return e.type === 'dir' ? `${e.path}/` : e.path;
}

/** The header of `e` in its canonical tar, as TarWriteHeader. */
function canonicalFields(e: LayerEntry): TarWriteHeader {
  return {
    path: tarPathOf(e),
    type: e.type,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime,
    size: e.size,
    linkname: e.linkname,
    devmajor: e.devmajor,
    devminor: e.devminor,
  };
}

/** The header block(s) of `e` in its canonical tar: everything of the entry but its body and padding. */
export function canonicalHeader(e: LayerEntry): Buffer {
  return encodeHeader(canonicalFields(e));
}

/** Zeros from `start` to `end` of `b`: the typed array's own fill, without Buffer.fill's checks (a block's padding per file). */
const zeroFill = (b: Uint8Array, start: number, end: number): void => void Uint8Array.prototype.fill.call(b, 0, start, end);

/** Bytes of small pieces (headers, small bodies, padding) gathered into one chunk of the canonical tar. */
const GATHER = 512 << 10;
/** A body chunk at least this long goes out as it is. */
const PASS = 128 << 10;

/**
 * The canonical tar of `records`, as chunks; `seen` is told of each entry as it is written,
 * `body` gives a file's content. A tree of small files is mostly headers, short bodies and
 * padding: each passed on alone cost more (a turn of every async loop downstream) than
 * copying it, so they are gathered into chunks of about GATHER bytes, in one buffer reused
 * once the consumer asks for more; large body chunks pass through as they come.
 */
async function* canonicalTar(
  records: Iterable<Canonical> | AsyncIterable<Canonical>,
  seen: (e: LayerEntry) => void,
  body: (s: Canonical) => AsyncIterable<Uint8Array> | undefined,
): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(GATHER);
  let used = 0;
  /** The gathered bytes, to yield: the buffer fills again once the consumer asks for more. */
  const cut = (): Buffer => {
    const out = buf.subarray(0, used);
    used = 0;
    return out;
  };
  // As `for await` reads them, but a record the source holds already is taken without a
  // promise (NowIterator): the entries of a plain tar mostly are.
  const items = nowIterator(records);
  let done = false;
  try {
    for (;;) {
      let s = nextItem(items);
      if (s instanceof Promise) s = await s;
      if (s === null) {
        done = true;
        break;
      }
      const e = s.entry;
      seen(e);
      // Most headers are one block, written in place; the others (pax) are encoded apart.
      const fields = canonicalFields(e);
      if (used + BLOCK > GATHER) yield cut();
      if (encodeHeaderInto(buf, used, fields)) used += BLOCK;
      else {
        const header = encodeHeader(fields);
        if (used + header.length > GATHER) yield cut();
        if (header.length > GATHER) yield header;
        else {
          buf.set(header, used);
          used += header.length;
        }
      }
      if (e.type !== 'file' || e.size === 0) continue;
      const content = body(s);
      if (!content) throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(e.path)}' has ${e.size} bytes but its source gave no content`, { hint: 'the source is damaged; import it again' });
      let n = 0;
      // As `for await` reads it, but a chunk the source holds already is taken without a promise
      // (NowIterator): a small file's body mostly is.
      const it = nowIterator(content);
      let ended = false;
      try {
        for (;;) {
          let chunk = nextItem(it);
          if (chunk instanceof Promise) chunk = await chunk;
          if (chunk === null) {
            ended = true;
            break;
          }
          n += chunk.byteLength;
          if (n > e.size) break;
          if (chunk.byteLength >= PASS) {
            if (used > 0) yield cut();
            yield chunk;
            continue;
          }
          // Copied now: a source may reuse its buffer for the next chunk.
          if (used + chunk.byteLength > GATHER) yield cut();
          buf.set(chunk, used);
          used += chunk.byteLength;
        }
      } finally {
        if (!ended) await it.return?.();
      }
      if (n !== e.size) {
        throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(e.path)}' changed while it was imported (expected ${e.size} bytes, read ${n})`, {
          hint: 'import again from a source that is not being written to',
        });
      }
      const pad = padding(e.size);
      if (used + pad > GATHER) yield cut();
      zeroFill(buf, used, used + pad);
      used += pad;
    }
  } finally {
    if (!done) await items.return?.();
  }
  if (used > 0) yield cut();
  yield END_OF_ARCHIVE;
}

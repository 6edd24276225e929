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
import { SpillSorter, type RecordCodec } from '../spill.js';
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
 * content by reference, and the same content as the source reaches it.
 */
export interface SourceItem {
  entry: LayerEntry;
  /** The content, readable at any time and in any order (it goes through the spill files). */
  content?: ContentRef;
  /** The content read in sequence, valid until the next item is asked for. */
  body?: ContentOpener;
}

/** A source's entries from its start, in the same order on every call. */
export type SourceItems = () => AsyncIterable<SourceItem>;

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
 * (the entries', the manifest's), plus the hard links of the layer (their groups are resolved
 * in memory). A source that can give its entries again (addFrom) and
 * gives them in canonical order is not sorted at all: its canonical tar is written as it is
 * read (`written`).
 */
export class LayerBuilder {
  private readonly sorter: SpillSorter<Rec>;
  private readonly cleanups: Array<() => void> = [];
  private readonly sources: Array<(a: number | string, b?: number) => AsyncIterable<Uint8Array>> = [];
  private readonly openers: ContentOpener[] = [];
  /** Hard links as added: path → target path (normalized). */
  private readonly links = new Map<string, string>();
  /** The order each hard link was added in: a link may only name an earlier entry. */
  private readonly linkSeq = new Map<string, number>();
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
    this.sorter = new SpillSorter<Rec>({
      compare: (x, y) => comparePaths(x.entry.path, y.entry.path),
      codec: entryCodec<Extra>() as RecordCodec<Rec>,
      dir: this.tmpDir,
      budget: this.budget,
    });
    this.cleanups.push(() => this.sorter.dispose());
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

  /** Adds one entry. `entry.path` may be raw (it is normalized here); hard-link names too. */
  add(entry: LayerEntry, content?: ContentOpener | ContentRef): void {
    if (this.built || this.ordered) throw new Error('LayerBuilder: add after build or after an ordered source');
    const r = this.record(entry, content, this.seq++);
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
    for await (const item of items()) this.add(item.entry, item.content);
  }

  /** Forgets what note() kept, before the entries are taken again. */
  private forget(): void {
    this.links.clear();
    this.linkSeq.clear();
    this.bytes = 0;
    this.seq = 0;
  }

  /** The record of the `n`th entry: its path normalized, its metadata canonical and within the limits. */
  private record(entry: LayerEntry, content: ContentOpener | ContentRef | undefined, n: number): Rec {
    const p = normalizeLayerPath(entry.path);
    if (whiteoutTarget(p)) {
      return { entry: { path: p, type: 'file', mode: 0, uid: 0, gid: 0, mtime: 0, size: 0 }, extra: [n, null] };
    }
    // An empty xattr map costs memory on every entry of a large layer: keep none.
    const e: LayerEntry = { ...entry, path: p, mode: modeWithAcl(entry), mtime: Math.floor(entry.mtime), xattrs: entry.xattrs?.size ? entry.xattrs : undefined };
    checkOutputLimits(e);
    if (e.type === 'hardlink') {
      const target = normalizeLayerPath(e.linkname ?? '', `hard link target of '${printable(p)}'`);
      return { entry: { ...e, linkname: target, size: 0, xattrs: undefined, acl: undefined }, extra: [n, null] };
    }
    if (e.type !== 'file') e.size = 0;
    let c: Content = null;
    if (typeof content === 'function') {
      this.openers.push(content);
      c = ['fn', this.openers.length - 1];
    } else if (content !== undefined) {
      c = content.b === undefined ? [content.src, content.a] : [content.src, content.a, content.b];
    }
    return { entry: e, extra: [n, c] };
  }

  /** What the builder keeps of every entry beside the sorter: its hard links, the bytes of its files. */
  private note(r: Rec): void {
    if (r.entry.type === 'hardlink') {
      this.links.set(r.entry.path, r.entry.linkname!);
      this.linkSeq.set(r.entry.path, r.extra[0]);
    } else this.bytes += r.entry.size;
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

  private opener(extra: Extra): ContentOpener | undefined {
    const c = extra[1];
    if (c === null) return undefined;
    if (c[0] === 'fn') return this.openers[c[1] as number];
    const [src, a, b] = c as [number, number | string, number?];
    const read = this.sources[src]!;
    return () => read(a, b);
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
    // Hard-link groups: a link's group is the file it finally names (links to links followed).
    const groupOf = (p: string): string => {
      let t = p;
      for (let hops = 0; this.links.has(t); hops++) {
        if (hops > this.links.size) {
          throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(p)}' is part of a loop of hard links`);
        }
        t = this.links.get(t)!;
      }
      return t;
    };
    const groups = new Map<string, { original?: Rec; leader?: string }>();
    for (const link of this.links.keys()) {
      const g = groupOf(link);
      if (!groups.has(g)) groups.set(g, {});
    }
    /** Checks each record against those before it, in canonical order; one per pass. */
    const checker = () => {
      let prev: string | undefined;
      const ancestors: Array<{ path: string; type: LayerEntry['type'] }> = [];
      return (r: Rec): void => {
        const p = r.entry.path;
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
        ancestors.push({ path: p, type: r.entry.type });
        const g = groups.get(this.links.has(p) ? groupOf(p) : p);
        if (g) {
          if (!this.links.has(p)) g.original = r;
          g.leader ??= p; // sorted order: the first member seen leads the group
        }
      };
    };
    /** Checks a hard link once its group's file has been seen (if the layer holds it). */
    const checkLink = (link: string): void => {
      const g = groups.get(groupOf(link))!;
      if (!g.original) {
        throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(link)}' points at '${printable(this.links.get(link)!)}', which is not in the layer`, {
          hint: 'a layer may only link to files it holds itself',
        });
      }
      if (g.original.entry.type !== 'file') {
        throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(link)}' points at '${printable(this.links.get(link)!)}', which is not a regular file`);
      }
      const target = this.links.get(link)!;
      const targetSeq = this.links.has(target) ? this.linkSeq.get(target)! : g.original.extra[0];
      if (targetSeq > this.linkSeq.get(link)!) {
        throw new StrataError(STORE_ERR.LAYER_BAD_LINK, `hard link '${printable(link)}' points at '${printable(target)}', which is not earlier in the layer`, {
          hint: 'a layer may only link to files it holds itself, before the link',
        });
      }
    };
    const ordered = this.ordered;
    /** The records in canonical order, each with its content as read in sequence when the source gives it. */
    let records: () => Iterable<Staged> | AsyncIterable<Staged>;
    if (ordered === undefined) {
      const check = checker();
      for (const r of this.sorter.sorted()) check(r);
      for (const link of this.links.keys()) checkLink(link);
      const sorter = this.sorter;
      records = function* () {
        for (const rec of sorter.sorted()) yield { rec };
      };
    } else {
      // One pass over the source, checked as it goes. A hard link needs its file's metadata,
      // which came earlier: the last FILE_RING files are kept for that (a link names a file
      // nearby in most layers). Anything else gives the pass up: an entry out of order (or a
      // path twice), a link to a later path, or to a file no longer kept.
      records = async function* (this: LayerBuilder) {
        this.forget();
        const check = checker();
        const files: Rec[] = [];
        let filesSeen = 0;
        let last: string | undefined;
        for await (const item of ordered()) {
          const rec = this.record(item.entry, item.content, this.seq);
          if (!follows(last, rec)) throw new Unordered();
          const p = rec.entry.path;
          this.note(rec);
          if (rec.entry.type === 'hardlink') {
            const root = groupOf(p);
            if (!groups.has(root)) {
              const original = files.find((f) => f.entry.path === root);
              if (original === undefined) throw new Unordered();
              groups.set(root, { original, leader: root });
            }
          } else if (rec.entry.type === 'file') files[filesSeen++ % FILE_RING] = rec;
          check(rec);
          if (rec.entry.type === 'hardlink') checkLink(p);
          last = p;
          this.seq++;
          yield { rec, body: item.body };
        }
      }.bind(this);
    }
    /**
     * The canonical record of `s` (a hard-link group's first path carries the file), and where
     * its content is: read in sequence (`body`), or the record `from`'s.
     */
    const canonicalOf = ({ rec: r, body }: Staged): { entry: LayerEntry; from?: Extra; body?: ContentOpener } => {
      const p = r.entry.path;
      const g = groups.get(this.links.has(p) ? groupOf(p) : p);
      if (!g) return { entry: r.entry, from: r.extra, body };
      const original = g.original!;
      if (g.leader === p) {
        if (original === r) return { entry: r.entry, from: r.extra, body };
        return { entry: { ...original.entry, path: p, type: 'file', linkname: undefined }, from: original.extra };
      }
      const { xattrs: _x, acl: _a, ...meta } = original.entry;
      return { entry: { ...meta, path: p, type: 'hardlink', size: 0, linkname: g.leader } };
    };
    const canonical = (s: Staged): { entry: LayerEntry; content?: ContentOpener } => {
      const c = canonicalOf(s);
      return { entry: c.entry, content: c.body ?? (c.from && this.opener(c.from)) };
    };
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
        canonicalTar(records(), (s) => {
          const c = canonical(s);
          const m = manifestEntry(c.entry);
          if (m) manifestEntries.push([c.entry.path, canonicalJsonText(m)]);
          onEntry?.(c.entry);
          return c;
        }),
      refs: async function* () {
        // By reference: these contents are read after the pass, in any order.
        for await (const { rec } of records()) {
          const c = canonicalOf({ rec });
          yield { entry: c.entry, content: c.from && builder.refOf(c.from) };
        }
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

/** How many of the latest files a pass over an ordered source keeps for the hard links that follow. */
const FILE_RING = 4096;

/** Thrown by a pass over an ordered source that finds it is not in order: LayerBuilder.written sorts it and runs again. */
class Unordered extends Error {
  constructor() {
    super('the source is not in canonical order');
  }
}

/** A record on its way to the canonical tar, with its content as read in sequence when there is one. */
interface Staged {
  rec: Rec;
  body?: ContentOpener;
}

/** Whether `r` comes after `last` in canonical order and, a hard link, names a path before its own. */
function follows(last: string | undefined, r: Rec): boolean {
  const p = r.entry.path;
  if (last !== undefined && comparePaths(last, p) >= 0) return false;
  return r.entry.type !== 'hardlink' || comparePaths(r.entry.linkname!, p) < 0;
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
 * The canonical tar of `records`, each made canonical by `canonical` as it comes, as chunks.
 * A tree of small files is mostly headers, short bodies and padding: each passed on alone
 * cost more (a turn of every async loop downstream) than copying it, so they are gathered
 * into chunks of about GATHER bytes, in one buffer reused once the consumer asks for more;
 * large body chunks pass through as they come.
 */
async function* canonicalTar(
  records: Iterable<Staged> | AsyncIterable<Staged>,
  canonical: (s: Staged) => { entry: LayerEntry; content?: ContentOpener },
): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(GATHER);
  let used = 0;
  /** The gathered bytes, to yield: the buffer fills again once the consumer asks for more. */
  const cut = (): Buffer => {
    const out = buf.subarray(0, used);
    used = 0;
    return out;
  };
  for await (const s of records) {
    const { entry: e, content } = canonical(s);
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
    if (!content) throw new StrataError(STORE_ERR.SOURCE_INVALID, `'${printable(e.path)}' has ${e.size} bytes but its source gave no content`, { hint: 'the source is damaged; import it again' });
    let n = 0;
    for await (const chunk of content()) {
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
  if (used > 0) yield cut();
  yield END_OF_ARCHIVE;
}

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
import { SpillSorter, type RecordCodec } from '../spill.js';
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
    private readonly sorter: SpillSorter<ManifestRec>,
    private readonly what: string,
  ) {}

  /** The lookups' cursors: a pass that stops early leaves its spill file open until dispose. */
  private readonly cursors: Array<Generator<ManifestRec>> = [];

  /** Reads the manifest from its bytes (`what` names it in errors); `tmpDir` takes the spill files. */
  static async read(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, what: string, tmpDir: string): Promise<ManifestIndex> {
    const sorter = new SpillSorter<ManifestRec>({ compare: (a, b) => comparePaths(a[0], b[0]), codec: manifestRecCodec, dir: tmpDir });
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

/** A manifest's entry on its way through spill files: its path, and the entry's JSON text. */
export type ManifestRec = [path: string, json: string];

/** A tar path holds no NUL, and JSON text none unescaped: one separates the two. */
export const manifestRecCodec: RecordCodec<ManifestRec> = {
  encode: ([path, json]) => Buffer.from(`${path}\0${json}`),
  decode: (b) => {
    const s = b.toString();
    const cut = s.indexOf('\0');
    return [s.slice(0, cut), s.slice(cut + 1)];
  },
  size: ([path, json]) => 2 * (path.length + json.length) + 64,
};

/** The largest single value a manifest may hold (an entry with every xattr a file can carry is far below). */
const MAX_VALUE = 16 << 20;

/**
 * Reads a manifest document as its bytes stream, holding one entry at a time: `onEntry` gets
 * each member of "entries" in the document's order, with its JSON text (the entry parsed and
 * checked to be an object); the other fields come back once the document has ended. A million
 * entries parsed as one document were a gigabyte of heap. Any JSON layout is read (the
 * manifests strata writes are canonical JSON, but a pulled one is only held to its digest).
 * Malformed input: ERR_RECORD_INVALID naming `what`.
 */
export async function readManifest(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  what: string,
  onEntry: (path: string, entry: ManifestEntry, json: string) => void,
): Promise<ManifestHead> {
  const bad = (why: string) => new StrataError(STORE_ERR.RECORD_INVALID, `${what} is not a layer manifest: ${why}`, { hint: 'run `strata store verify`' });
  const it: AsyncIterator<Uint8Array> | Iterator<Uint8Array> = Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let text = '';
  let at = 0;
  let ended = false;
  const more = async (): Promise<void> => {
    if (ended) throw bad('it ends before the document does');
    const r = await it.next();
    let piece: string;
    try {
      piece = r.done ? utf8.decode() : utf8.decode(r.value, { stream: true });
    } catch {
      throw bad('it is not UTF-8');
    }
    if (r.done) ended = true;
    text = text.slice(at) + piece;
    at = 0;
  };
  const ws = (i: number): number => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
      i++;
    }
  };
  /** The end of the string starting at i, or -1 when the text ends first. */
  const stringEnd = (i: number): number => {
    for (let j = i + 1; j < text.length; j++) {
      const c = text.charCodeAt(j);
      if (c === 0x5c) j++;
      else if (c === 0x22) return j + 1;
    }
    return -1;
  };
  /** The end of the value starting at i (its extent only: JSON.parse judges it), or -1. */
  const valueEnd = (i: number): number => {
    const c = text[i];
    if (c === '"') return stringEnd(i);
    if (c === '{' || c === '[') {
      let depth = 0;
      for (let j = i; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x22) {
          const e = stringEnd(j);
          if (e < 0) return -1;
          j = e - 1;
        } else if (d === 0x7b || d === 0x5b) depth++;
        else if (d === 0x7d || d === 0x5d) {
          if (--depth === 0) return j + 1;
        }
        if (j - i > MAX_VALUE) throw bad(`a value is larger than ${MAX_VALUE} bytes`);
      }
      return -1;
    }
    let j = i;
    while (j < text.length && !',}] \t\r\n'.includes(text[j]!)) j++;
    return j < text.length || ended ? j : -1;
  };
  /** The next token after white space, as scanned by `end` (-1: needs more text). */
  const next = async (end: (i: number) => number): Promise<string> => {
    for (;;) {
      const i = ws(at);
      if (i < text.length) {
        const e = end(i);
        if (e >= 0) {
          at = e;
          return text.slice(i, e);
        }
        if (text.length - i > MAX_VALUE) throw bad(`a value is larger than ${MAX_VALUE} bytes`);
      }
      await more();
    }
  };
  const char = (i: number) => i + 1;
  /** The next character after white space, not taken. */
  const peek = async (): Promise<string> => {
    for (;;) {
      const i = ws(at);
      if (i < text.length) {
        at = i;
        return text[i]!;
      }
      await more();
    }
  };
  const parse = (json: string): unknown => {
    try {
      return JSON.parse(json);
    } catch {
      throw bad(`malformed JSON near ${JSON.stringify(json.slice(0, 40))}`);
    }
  };
  const key = async (): Promise<string> => {
    const k = await next(stringEnd);
    if (k[0] !== '"') throw bad(`a key is expected, not ${JSON.stringify(k.slice(0, 20))}`);
    const s = parse(k) as string;
    if ((await next(char)) !== ':') throw bad(`':' is expected after ${k}`);
    return s;
  };
  /** Members of the object whose '{' was just read, until its '}'. */
  const members = async (member: (k: string) => Promise<void>): Promise<void> => {
    if ((await peek()) === '}') {
      at++;
      return;
    }
    for (;;) {
      await member(await key());
      const sep = await next(char);
      if (sep === '}') return;
      if (sep !== ',') throw bad(`',' or '}' is expected, not ${JSON.stringify(sep)}`);
    }
  };

  if ((await next(char)) !== '{') throw bad('it is not a JSON object');
  const head: Record<string, unknown> = {};
  let entries = false;
  await members(async (k) => {
    if (k === 'entries' && !entries) {
      entries = true;
      if ((await next(char)) !== '{') throw bad('"entries" is not an object');
      await members(async (path) => {
        const json = await next(valueEnd);
        const entry = parse(json);
        if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad(`the entry of ${JSON.stringify(path)} is not an object`);
        onEntry(path, entry as ManifestEntry, json);
      });
      return;
    }
    if (k === 'entries' || k in head) throw bad(`it has "${k}" twice`);
    head[k] = parse(await next(valueEnd));
  });
  for (;;) {
    if (ws(at) < text.length) throw bad('it goes on after the document');
    if (ended) break;
    await more();
  }
  const stats = head['stats'] as ManifestHead['stats'] | undefined;
  if (!entries || head['manifestVersion'] !== 1 || typeof head['layer'] !== 'string' || typeof stats?.entries !== 'number' || typeof stats?.bytes !== 'number') {
    throw bad('it lacks manifestVersion 1, layer, stats or entries');
  }
  return { manifestVersion: 1, layer: head['layer'], stats: { entries: stats.entries, bytes: stats.bytes } };
}

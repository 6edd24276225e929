/**
 * A cache of compressed blocks, shared by the image formats: re-building an
 * image after one layer changed recompresses only that layer's blocks.
 *
 * The cache knows nothing of a format. A caller names a *namespace* (a string fixing
 * everything that decides the compressed bytes besides the raw block: format, compressor,
 * library version, level, block size, any job parameter) and gets keys of one of two kinds:
 *
 *   by content:   key = sha256(namespace + sha256hex(raw))        (32 bytes, hex in the API)
 *   by position:  key = sha256(namespace + "\0at\0" + tag + "\0" + offset)
 *
 * A record filed by position is indexed under its content key too (its header holds the raw
 * block's digest, from which a lookup by content checks the key), so a block that moved (the
 * same bytes in the next version of a layer) is found once it is hashed.
 *
 * so a different library build never serves stale bytes. A key by position names the raw
 * block at a byte offset of the tagged content (a layer, which its reader verifies whole
 * against its CID before any output made from it is kept): it is looked up before the block
 * is hashed, and a sealed record gives the block's digest too, so a warm build hashes no
 * block it finds. Each record is filed under a *tag*
 * (the layer the block came from, by its CID) so that a layer's records can be dropped when
 * no module names it, and may be restricted to a group (blocks of a licensed layer).
 *
 * The cache is untrusted input: anyone who could write the directory could have put anything
 * there. `get` hands a record to the caller's `accept` check (the formats decompress the
 * payload and compare it with the raw block in hand); a rejected, torn, foreign or corrupt
 * record is a miss, dropped from this cache's view, and the block is compressed again and
 * appended anew (a later record of a key wins). What a cache can still do is choose among
 * encodings of the same content (a payload that decompresses to the right bytes but was made
 * otherwise): it lives where only its user writes (store.cacheDir).
 *
 * Sealed records skip that check. A cache opened with the user's secret (compose/caches.ts:
 * 32 random bytes only this user can read) seals what it writes with an HMAC of the record's
 * header, which holds the payload's digest; a record whose seal verifies under the secret was
 * written by this user's own build and is used as it is. Anything else (another user's
 * record in a shared cache, an edited one, a record from before seals) is checked as above.
 *
 * Storage, under `<cacheDir>/image-blocks/`:
 *
 *   <tag>/<namespace id>/<pid>-<thread>-<random>.pack     records, appended
 *   <tag>/<namespace id>/<pid>-<thread>-<random>.idx      48-byte index records, appended
 *
 * `namespace id` = the first 16 hex digits of sha256(namespace). Every writer (one per worker
 * thread per build and tag) appends to packs of its own, so concurrent builds need no lock, and
 * no pack is ever rewritten. A tag directory of a restricted tag is created 0750 and each of
 * its packs 0640, owned by the tag's group; any other pack is 0644 (less the umask). A layer's
 * tag is its CID: content restricted after it was cached open has its directory given to the
 * group by the store (LocalStore.confine, the `cache/<kind>/<layer CID>/` rule), which keeps
 * others out of every pack below it whatever their own modes.
 * A pack's mtime is its last use (writes, and hits at close), which `pruneBlockCache` uses.
 *
 * Pack record (little-endian):
 *    0  4   magic "SQB3"
 *    4  u32 flags          bit 0: stored raw (compression did not shrink the block); no payload
 *    8  u32 rawLength      length of the uncompressed block
 *   12  u32 payloadLength
 *   16  32  key
 *   48  32  sha256 of the payload
 *   80  32  sha256 of the raw block
 *  112  32  seal: HMAC-SHA256(secret, bytes 0..112), or zeros when written without a secret
 *  144  …   payload
 * (Records of earlier layouts, magic "SQBP" and "SQB2", read as misses.)
 *
 * Index record (48 bytes, appended after its pack record is written):
 *    0  32  key
 *   32  u64 offset of the pack record
 *   40  u32 payloadLength
 *   44  u32 reserved (0)
 *
 * Methods are synchronous: they run in worker threads, off the main event loop. Any failure to
 * read is a miss, any failure to write leaves the block uncached; nothing here throws.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

/** The cache's directory under a cache root. */
export const BLOCK_CACHE_DIR = 'image-blocks';
/** Directories of earlier layouts, removed by pruneBlockCache. */
const LEGACY_DIRS = ['squashfs-blocks'];
const MAGIC = Buffer.from('SQB3');
const HEADER = 144;
/** Where the raw block's digest is; bytes 0..SEALED are what the seal covers. */
const RAW_DIGEST = 80;
const SEALED = 112;
const INDEX_RECORD = 48;
const FLAG_RAW = 1;
/** A tag used as a directory name as it is; anything else is hashed. */
const SAFE_TAG = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface CachedBlock {
  /** True when the block is stored uncompressed in the image (no payload). */
  raw: boolean;
  /** The compressed bytes (empty when `raw`). */
  data: Buffer;
}

/** A record as `get` finds it. */
export interface FoundBlock extends CachedBlock {
  /**
   * True when the record carries this cache's seal (this user's own build wrote it): it was
   * used without `accept`, and `rawDigest` can be trusted.
   */
  sealed: boolean;
  /** The sha256 of the raw block, as the record gives it (trust it only when `sealed`). */
  rawDigest: Buffer;
  /** `data` views a buffer of its own (the record's), which the caller may transfer. */
}

/** Where a record is filed. */
export interface CachePlace {
  /** The layer (or other unit) the block belongs to; a layer's CID. */
  tag: string;
  /** Records readable only by this group (no access for others): blocks of restricted content. */
  gid?: number;
  /**
   * The block's byte offset in the tagged content (tag = a layer's CID, offset = where the
   * block starts in that layer's tar): the block is keyed by position (positionKey).
   */
  at?: number;
}

interface Location {
  pack: string;
  offset: number;
  payloadLength: number;
}

interface PackWriter {
  pack: string;
  fd: number;
  idx: number;
  offset: number;
}

function contentKey(namespace: string, rawDigestHex: string): string {
  return createHash('sha256').update(namespace + rawDigestHex).digest('hex');
}

/** The directory name of a tag. */
export function tagDir(tag: string): string {
  return SAFE_TAG.test(tag) ? tag : `h-${createHash('sha256').update(tag).digest('hex').slice(0, 32)}`;
}

export function namespaceId(namespace: string): string {
  return createHash('sha256').update(namespace).digest('hex').slice(0, 16);
}

export class BlockCache {
  private readonly root: string;
  private readonly ns: string;
  private index: RecordIndex | undefined;
  private readonly fds = new Map<string, number>();
  private readonly writers = new Map<string, PackWriter>();
  private readonly used = new Set<string>();

  /**
   * `cacheDir` is the cache root (the store's cacheDir); `namespace` as in the file comment;
   * `secret`, when given, seals what this cache writes and lets its sealed records skip `accept`.
   */
  constructor(
    cacheDir: string,
    private readonly namespace: string,
    private readonly secret?: Uint8Array,
  ) {
    this.root = path.join(cacheDir, BLOCK_CACHE_DIR);
    this.ns = namespaceId(namespace);
  }

  /**
   * Reads the index of every pack of the namespace now, not at the first lookup: a worker
   * thread does it as it starts, before it says it is ready (shared/worker-pool.ts), so that
   * its first answers are as quick as the rest.
   */
  preload(): void {
    this.load();
  }

  /** The key of a raw block, from the hex sha256 of its bytes. */
  key(rawDigestHex: string): string {
    return contentKey(this.namespace, rawDigestHex);
  }

  /** The key of the raw block at byte `at` of the content tagged `tag` (see the file comment). */
  positionKey(tag: string, at: number): string {
    return createHash('sha256').update(`${this.namespace}\0at\0${tag}\0${at}`).digest('hex');
  }

  /**
   * The record of `key` if one is stored, intact, for a raw block of `rawLength` bytes, and
   * `accept` takes it; else undefined (and a record `accept` refused is forgotten, so the next
   * put of the key replaces it).
   */
  get(key: string, rawLength: number, accept: (b: CachedBlock) => boolean): FoundBlock | undefined {
    const index = this.load();
    const k = Buffer.from(key, 'hex');
    // The latest record first; an earlier one of the same key may still be good.
    for (let r = index.latest(k); r >= 0; r = index.before(r, k)) {
      const pack = index.pack(r);
      const length = index.payloadLength(r);
      let block: FoundBlock | undefined;
      // A payload never as long as its raw block (decodeRecord): an index that says so is not
      // read, whatever it asks to be allocated.
      if (length < rawLength) {
        try {
          // A buffer of its own, so that the payload can be transferred to another thread.
          const buf = Buffer.allocUnsafeSlow(HEADER + length);
          const got = fs.readSync(this.fd(pack), buf, 0, buf.length, index.offset(r));
          const head = buf.subarray(0, HEADER);
          const found = got === buf.length ? decodeRecord(head, buf.subarray(HEADER), key, rawLength, this.namespace) : undefined;
          if (found) {
            const sealed = this.sealedBy(head);
            if (sealed || accept(found)) block = { ...found, sealed, rawDigest: head.subarray(RAW_DIGEST, SEALED) };
          }
        } catch {
          block = undefined;
        }
      }
      if (block) {
        this.used.add(pack);
        return block;
      }
      index.forget(r);
    }
    return undefined;
  }

  /** Appends a record (best effort: a full disk or a read-only cache only costs a later miss). */
  put(key: string, rawLength: number, block: CachedBlock, place: CachePlace, rawDigest: Uint8Array): void {
    const payload = block.raw ? Buffer.alloc(0) : block.data;
    const head = Buffer.alloc(HEADER);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(block.raw ? FLAG_RAW : 0, 4);
    head.writeUInt32LE(rawLength, 8);
    head.writeUInt32LE(payload.length, 12);
    Buffer.from(key, 'hex').copy(head, 16);
    createHash('sha256').update(payload).digest().copy(head, 48);
    head.set(rawDigest, RAW_DIGEST);
    if (this.secret) seal(this.secret, head).copy(head, SEALED);
    try {
      // Loaded before the record is written: a first load after it would read it in twice.
      const index = this.load();
      const w = this.writer(place);
      if (!w) return;
      const offset = w.offset;
      fs.writevSync(w.fd, [head, payload], offset);
      w.offset += HEADER + payload.length;
      // A block filed by position is indexed by its content too: a layer that holds the same
      // bytes at other offsets (the next version of a module) finds it once it hashed the block.
      const keys = place.at !== undefined ? [key, this.key(Buffer.from(rawDigest).toString('hex'))] : [key];
      const rec = Buffer.alloc(INDEX_RECORD * keys.length);
      keys.forEach((k, i) => {
        Buffer.from(k, 'hex').copy(rec, i * INDEX_RECORD);
        rec.writeBigUInt64LE(BigInt(offset), i * INDEX_RECORD + 32);
        rec.writeUInt32LE(payload.length, i * INDEX_RECORD + 40);
      });
      fs.writeSync(w.idx, rec);
      index.add(rec, w.pack);
    } catch {
      /* the block is simply not cached */
    }
  }

  /** True when the record in `buf` carries this cache's seal. */
  private sealedBy(buf: Buffer): boolean {
    return this.secret !== undefined && seal(this.secret, buf).equals(buf.subarray(SEALED, HEADER));
  }

  /** Closes every file, marks the packs hits came from as used now. Reopens on demand. */
  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
    for (const w of this.writers.values()) fs.closeSync(w.idx);
    this.writers.clear();
    const now = new Date();
    for (const p of this.used) {
      try {
        fs.utimesSync(p, now, now);
      } catch {
        /* someone else's pack, or pruned meanwhile */
      }
    }
    this.used.clear();
  }

  private load(): RecordIndex {
    if (this.index) return this.index;
    const files = readdirOrEmpty(this.root).flatMap((t) => indexFiles(path.join(this.root, t, this.ns)));
    const index = new RecordIndex(files.reduce((n, f) => n + Math.floor(f.bytes.length / INDEX_RECORD), 0));
    for (const { bytes, pack } of files) index.add(bytes, pack);
    this.index = index;
    return index;
  }

  private fd(pack: string): number {
    let fd = this.fds.get(pack);
    if (fd === undefined) {
      fd = fs.openSync(pack, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      this.fds.set(pack, fd);
    }
    return fd;
  }

  /** The open pack for `place`, created on first use; undefined when it cannot be made private enough. */
  private writer(place: CachePlace): PackWriter | undefined {
    const t = tagDir(place.tag);
    const k = `${t}\0${place.gid ?? ''}`;
    const open = this.writers.get(k);
    if (open) return open;
    const dir = namespaceDir(this.root, place.tag, this.ns, place.gid);
    const base = path.join(dir, `${process.pid}-${threadId}-${randomBytes(6).toString('hex')}`);
    const flags = fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
    const mode = place.gid === undefined ? 0o644 : 0o600;
    // Read and write: the pack is also where this cache reads back what it wrote (fd()).
    const fd = fs.openSync(`${base}.pack`, flags | fs.constants.O_RDWR, mode);
    let idx: number | undefined;
    try {
      idx = fs.openSync(`${base}.idx`, flags | fs.constants.O_WRONLY | fs.constants.O_APPEND, mode);
      if (place.gid !== undefined) {
        // Created 0600; group access only once the group is right (never a moment open to others).
        for (const f of [fd, idx]) {
          fs.fchownSync(f, -1, place.gid);
          fs.fchmodSync(f, 0o640);
        }
      }
    } catch {
      fs.closeSync(fd);
      if (idx !== undefined) fs.closeSync(idx);
      fs.rmSync(`${base}.pack`, { force: true });
      fs.rmSync(`${base}.idx`, { force: true });
      return undefined;
    }
    const w = { pack: `${base}.pack`, fd, idx, offset: 0 };
    this.writers.set(k, w);
    this.fds.set(w.pack, fd);
    return w;
  }
}

/**
 * The directory of `tag`'s records in namespace `ns` under the cache's `root`, made when
 * missing: 0755, or for a restricted tag (`gid`) 0750 with the tag directory owned by that
 * group (the files in it carry the restriction too). Throws when it cannot be made.
 */
export function namespaceDir(root: string, tag: string, ns: string, gid: number | undefined): string {
  const tdir = path.join(root, tagDir(tag));
  const dir = path.join(tdir, ns);
  fs.mkdirSync(root, { recursive: true });
  if (mkdirOnce(tdir, gid === undefined ? 0o755 : 0o750) && gid !== undefined) {
    try {
      fs.chownSync(tdir, -1, gid);
    } catch {
      /* the files themselves carry the restriction */
    }
  }
  mkdirOnce(dir, gid === undefined ? 0o755 : 0o750);
  return dir;
}

/** mkdir that reports whether it created the directory (an existing one is fine). */
function mkdirOnce(dir: string, mode: number): boolean {
  try {
    fs.mkdirSync(dir, { mode });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

/**
 * A record from its header and the payload its index entry gives the length of, found under
 * `key`: the record's own key, or (a record filed by position, indexed by content too) the
 * content key of the raw digest the record holds.
 */
function decodeRecord(head: Buffer, payload: Buffer, key: string, rawLength: number, namespace?: string): CachedBlock | undefined {
  if (head.length !== HEADER || !head.subarray(0, 4).equals(MAGIC)) return undefined;
  if (head.readUInt32LE(8) !== rawLength) return undefined;
  if (head.subarray(16, 48).toString('hex') !== key && (namespace === undefined || contentKey(namespace, head.subarray(RAW_DIGEST, SEALED).toString('hex')) !== key)) return undefined;
  if (payload.length !== head.readUInt32LE(12)) return undefined;
  if (!createHash('sha256').update(payload).digest().equals(head.subarray(48, RAW_DIGEST))) return undefined;
  const raw = (head.readUInt32LE(4) & FLAG_RAW) !== 0;
  if (raw ? payload.length !== 0 : payload.length === 0 || payload.length >= rawLength) return undefined;
  return { raw, data: payload };
}

/** The seal of a record: an HMAC of its header up to the seal (which holds the payload's digest). */
function seal(secret: Uint8Array, record: Buffer): Buffer {
  return createHmac('sha256', secret).update(record.subarray(0, SEALED)).digest();
}

/** The index files under `dir` (their bytes, and the pack each indexes), in file-name order. */
function indexFiles(dir: string): Array<{ bytes: Buffer; pack: string }> {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.idx')).sort();
  } catch {
    return [];
  }
  const out: Array<{ bytes: Buffer; pack: string }> = [];
  for (const name of names) {
    try {
      const fd = fs.openSync(path.join(dir, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        out.push({ bytes: fs.readFileSync(fd), pack: path.join(dir, `${name.slice(0, -4)}.pack`) });
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      continue;
    }
  }
  return out;
}

/** Every index record under `dir`, in file-name then append order (later ones win). */
function readIndexes(dir: string): Array<Location & { key: string }> {
  const out: Array<Location & { key: string }> = [];
  for (const { bytes, pack } of indexFiles(dir)) {
    for (let o = 0; o + INDEX_RECORD <= bytes.length; o += INDEX_RECORD) {
      out.push({ key: bytes.subarray(o, o + 32).toString('hex'), pack, offset: recordOffset(bytes, o), payloadLength: bytes.readUInt32LE(o + 40) });
    }
  }
  return out;
}

/** The pack offset of the index record at `o` of `bytes` (a u64, below 2^53 in any real pack). */
function recordOffset(bytes: Buffer, o: number): number {
  return bytes.readUInt32LE(o + 32) + bytes.readUInt32LE(o + 36) * 2 ** 32;
}

/**
 * The index records of a namespace, found by key, latest first. The records stay as the index
 * files hold them, one after another in one buffer; a table of 2^k chain heads, indexed by the
 * key's first four bytes (a sha256, so they spread evenly), and a chain per head (the record
 * before in the same slot; a walk compares whole keys) find them. Nothing per record but bytes
 * in typed arrays, and loading is a loop of element reads and writes with no call in it: a
 * worker loads the index as it starts, before its code is optimized. As a Map of hex keys to
 * lists of objects, the bench stack's EROFS cache (17,580 records) took 52 ms to load, and ten
 * times as many records 310–420 ms and 29 MiB, in every worker; as this, 7–10 ms, and 43–54 ms
 * and 13 MiB (about 76 bytes a record).
 */
class RecordIndex {
  private count = 0;
  /** The records, INDEX_RECORD bytes each, as in the index files. */
  private bytes = Buffer.alloc(0);
  private packIds = new Int32Array(0);
  /** The record before each one in its slot's chain, or -1. */
  private prev = new Int32Array(0);
  /** Records a lookup found unusable (torn, foreign, refused): skipped from then on. */
  private dead = new Uint8Array(0);
  /** The latest record of each slot, or -1: at most half full. */
  private heads = new Int32Array(0);
  private readonly packs: string[] = [];
  private readonly packIdOf = new Map<string, number>();

  /** An empty index with room for `records` (those of the files about to be added). */
  constructor(records: number) {
    this.reserve(records);
  }

  /** Adds the whole records of `bytes` (an index file, or records just written), all of `pack`. */
  add(bytes: Buffer, pack: string): void {
    const n = Math.floor(bytes.length / INDEX_RECORD);
    if (n === 0) return;
    let id = this.packIdOf.get(pack);
    if (id === undefined) {
      id = this.packs.push(pack) - 1;
      this.packIdOf.set(pack, id);
    }
    const first = this.count;
    this.reserve(first + n);
    bytes.copy(this.bytes, first * INDEX_RECORD, 0, n * INDEX_RECORD);
    this.packIds.fill(id, first, first + n);
    this.count = first + n;
    this.link(first, this.count);
  }

  /** The latest live record of `key` (32 bytes), or -1. */
  latest(key: Buffer): number {
    return this.count === 0 ? -1 : this.live(this.heads[slotOf(key, 0, this.heads.length - 1)]!, key);
  }

  /** The live record of `key` before record `r`, or -1. */
  before(r: number, key: Buffer): number {
    return this.live(this.prev[r]!, key);
  }

  pack(r: number): string {
    return this.packs[this.packIds[r]!]!;
  }

  offset(r: number): number {
    return recordOffset(this.bytes, r * INDEX_RECORD);
  }

  payloadLength(r: number): number {
    return this.bytes.readUInt32LE(r * INDEX_RECORD + 40);
  }

  /** Drops record `r` from lookups (a later put of its key is found instead). */
  forget(r: number): void {
    this.dead[r] = 1;
  }

  /** `r` or the first record after it along its chain that is live and of `key`, or -1. */
  private live(r: number, key: Buffer): number {
    while (r >= 0 && (this.dead[r] === 1 || key.compare(this.bytes, r * INDEX_RECORD, r * INDEX_RECORD + 32) !== 0)) r = this.prev[r]!;
    return r;
  }

  /** Puts records `from`..`to` at the heads of their slots' chains, in order (the later, the nearer the head). */
  private link(from: number, to: number): void {
    const { bytes, heads, prev } = this;
    const mask = heads.length - 1;
    for (let r = from; r < to; r++) {
      const slot = slotOf(bytes, r * INDEX_RECORD, mask);
      prev[r] = heads[slot]!;
      heads[slot] = r;
    }
  }

  /** Room for `n` records; past half the slots, twice as many slots and every record linked again. */
  private reserve(n: number): void {
    if (n > this.prev.length) {
      const cap = Math.max(n, this.prev.length * 2, 64);
      const bytes = Buffer.alloc(cap * INDEX_RECORD);
      this.bytes.copy(bytes, 0, 0, this.count * INDEX_RECORD);
      this.bytes = bytes;
      this.packIds = grown(this.packIds, new Int32Array(cap));
      this.prev = grown(this.prev, new Int32Array(cap));
      this.dead = grown(this.dead, new Uint8Array(cap));
    }
    if (2 * n > this.heads.length || this.heads.length === 0) {
      let size = 2048;
      while (size < 2 * n) size *= 2;
      this.heads = new Int32Array(size).fill(-1);
      this.link(0, this.count);
    }
  }
}

/** `into` holding `from`'s elements first. */
function grown<T extends Int32Array | Uint8Array>(from: T, into: T): T {
  into.set(from);
  return into;
}

/** A record's slot among `mask + 1`: the first four bytes of its key at `at`, little-endian, masked. */
function slotOf(b: Uint8Array, at: number, mask: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) & mask;
}

// ---------------------------------------------------------------------------------------
// Inspection and collection (tests, `store du`, `store gc`).

/** One record as stored. */
export interface CacheEntry {
  key: string;
  tag: string;
  pack: string;
  /** Offset of the record in its pack; its payload starts PACK_RECORD_HEADER bytes later. */
  offset: number;
  raw: boolean;
  rawLength: number;
  payload: Buffer;
}

export const PACK_RECORD_HEADER = HEADER;
/** Where a pack record's fields are (see the file comment), for tests that forge records. */
export const PACK_RECORD_LAYOUT = { magic: MAGIC.toString('latin1'), payloadDigest: 48, rawDigest: RAW_DIGEST, seal: SEALED, header: HEADER } as const;

/** Every intact record under `cacheDir` (all tags and namespaces), in index order. */
export function listCacheEntries(cacheDir: string): CacheEntry[] {
  const out: CacheEntry[] = [];
  for (const { tag, dir } of namespaceDirs(cacheDir)) {
    for (const loc of readIndexes(dir)) {
      let buf: Buffer;
      try {
        const fd = fs.openSync(loc.pack, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        try {
          buf = Buffer.alloc(HEADER + loc.payloadLength);
          if (fs.readSync(fd, buf, 0, buf.length, loc.offset) !== buf.length) continue;
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        continue;
      }
      const rawLength = buf.readUInt32LE(8);
      const block = decodeRecord(buf.subarray(0, HEADER), buf.subarray(HEADER), loc.key, rawLength);
      if (block) out.push({ key: loc.key, tag, pack: loc.pack, offset: loc.offset, raw: block.raw, rawLength, payload: block.data });
    }
  }
  return out;
}

function namespaceDirs(cacheDir: string): Array<{ tag: string; dir: string }> {
  const root = path.join(cacheDir, BLOCK_CACHE_DIR);
  const out: Array<{ tag: string; dir: string }> = [];
  for (const tag of readdirOrEmpty(root)) {
    for (const ns of readdirOrEmpty(path.join(root, tag))) out.push({ tag, dir: path.join(root, tag, ns) });
  }
  return out;
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/**
 * What pruning removes as one: a pack with its index (the index first), or a segment
 * (segment-cache.ts) or a segment's leftover temporary file. Its mtime is the pack's or the
 * segment's (its last use).
 */
interface PackFile {
  tag: string;
  /** Removed in this order. */
  files: string[];
  bytes: number;
  mtimeMs: number;
}

function packFiles(cacheDir: string): PackFile[] {
  const out: PackFile[] = [];
  for (const { tag, dir } of namespaceDirs(cacheDir)) {
    const names = readdirOrEmpty(dir);
    const units = new Map<string, string[]>();
    for (const n of names) {
      const pair = /^(.*)\.(pack|idx)$/.exec(n);
      if (pair) units.set(pair[1]!, [`${pair[1]}.idx`, `${pair[1]}.pack`]);
      else if (n.endsWith('.seg') || n.endsWith('.tmp')) units.set(n, [n]);
    }
    for (const files of units.values()) {
      let bytes = 0;
      let mtimeMs = 0;
      for (const f of files) {
        try {
          const st = fs.lstatSync(path.join(dir, f));
          bytes += st.size;
          if (!f.endsWith('.idx')) mtimeMs = st.mtimeMs;
        } catch {
          /* half a pair: still counted and collectable */
        }
      }
      out.push({ tag, files: files.map((f) => path.join(dir, f)), bytes, mtimeMs });
    }
  }
  return out;
}

export interface BlockCacheUsage {
  /** Bytes of packs, indexes and segments. */
  bytes: number;
  packs: number;
  /** Bytes by tag directory name (a layer's CID). */
  byTag: Record<string, number>;
}

/** How much the block cache under `cacheDir` holds (0 when there is none). */
export function blockCacheUsage(cacheDir: string): BlockCacheUsage {
  const byTag: Record<string, number> = {};
  let bytes = 0;
  const packs = packFiles(cacheDir);
  for (const p of packs) {
    bytes += p.bytes;
    byTag[p.tag] = (byTag[p.tag] ?? 0) + p.bytes;
  }
  for (const d of LEGACY_DIRS) bytes += duBytes(path.join(cacheDir, d));
  return { bytes, packs: packs.length, byTag };
}

function duBytes(p: string): number {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.size;
  return readdirOrEmpty(p).reduce((n, c) => n + duBytes(path.join(p, c)), 0);
}

export interface PruneOptions {
  /**
   * Tags still in use (the CIDs of every layer some module names). When given, every tag
   * directory not listed is removed.
   */
  liveTags?: Iterable<string>;
  /** Then remove least-recently-used packs until the cache holds at most this many bytes. */
  maxBytes?: number;
}

export interface PruneResult {
  removedPacks: number;
  freedBytes: number;
  /** What the cache holds afterwards. */
  bytes: number;
}

/**
 * Collects the block cache under `cacheDir`: drops the records of tags no longer live, then
 * least-recently-used packs past `maxBytes`, and directories of earlier cache layouts. Safe
 * while builds run: a build that loses a pack it indexed sees misses (or keeps reading a
 * pack it has open), never wrong bytes. Packs this process cannot remove are left and counted.
 */
export function pruneBlockCache(cacheDir: string, opts: PruneOptions): PruneResult {
  let removedPacks = 0;
  let freedBytes = 0;
  const remove = (p: PackFile): boolean => {
    try {
      // The index first: a build loading indexes meanwhile never finds a record without its pack.
      for (const f of p.files) fs.rmSync(f, { force: true });
    } catch {
      return false;
    }
    removedPacks++;
    freedBytes += p.bytes;
    return true;
  };
  for (const d of LEGACY_DIRS) {
    const p = path.join(cacheDir, d);
    const n = duBytes(p);
    try {
      fs.rmSync(p, { recursive: true, force: true });
      freedBytes += n;
    } catch {
      /* left */
    }
  }
  let packs = packFiles(cacheDir);
  if (opts.liveTags !== undefined) {
    const live = new Set([...opts.liveTags].map(tagDir));
    const kept: PackFile[] = [];
    for (const p of packs) if (live.has(p.tag) || !remove(p)) kept.push(p);
    packs = kept;
    const root = path.join(cacheDir, BLOCK_CACHE_DIR);
    for (const t of readdirOrEmpty(root)) {
      if (live.has(t)) continue;
      for (const ns of readdirOrEmpty(path.join(root, t))) rmdirQuiet(path.join(root, t, ns));
      rmdirQuiet(path.join(root, t));
    }
  }
  let bytes = packs.reduce((n, p) => n + p.bytes, 0);
  if (opts.maxBytes !== undefined && bytes > opts.maxBytes) {
    packs.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.files[0]! < b.files[0]! ? -1 : 1));
    for (const p of packs) {
      if (bytes <= opts.maxBytes) break;
      if (remove(p)) bytes -= p.bytes;
    }
  }
  return { removedPacks, freedBytes, bytes };
}

function rmdirQuiet(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    /* not empty (a build added to it) or not ours */
  }
}

/**
 * Parses a cache size limit: bytes, or a number with K, M, G or T (powers of 1024), e.g.
 * "500M", "2G". Undefined for anything else.
 */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) return undefined;
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const v = Math.floor(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : undefined;
}

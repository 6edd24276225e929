/**
 * strata's SquashFS 4.0 writer: streams file data into the image as it arrives, compresses
 * blocks in worker threads (output order fixed by call order), caches compressed blocks by
 * content, and writes the metadata tables at the end. No root needed, no wall-clock time.
 * What exactly is written (inode numbering, ordering, fragments, cache key) is specified in
 * spec/squashfs.md; format.ts holds the byte layouts.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import { StrataError, IMAGE_ERR } from '../image/errors.js';
import type { LayerEntry } from '../../store/index.js';
import { makeCodec, resolveCodecSpec, type Codec, type SquashCompressor } from './compressors.js';
import {
  DATA_UNCOMPRESSED,
  DEFAULT_BLOCK_SIZE,
  DIR_HEADER_MAX,
  DIR_ENTRY_SIZE,
  DIR_HEADER_SIZE,
  DIR_SIZE_BIAS,
  FLAG,
  INODE,
  INVALID_FRAG,
  INVALID_TABLE,
  INVALID_XATTR,
  MAX_BLOCK_SIZE,
  MAX_IDS,
  MAX_NAME,
  METADATA_SIZE,
  METADATA_UNCOMPRESSED,
  MIN_BLOCK_SIZE,
  PAD,
  SUPERBLOCK_SIZE,
  VERSION_MAJOR,
  VERSION_MINOR,
  XATTR_VALUE_OOL,
  basicType,
  encodeDevice,
  encodeSuperblock,
  metaRef,
  splitXattrName,
} from './format.js';
import { BlockPool, type BlockResult } from './worker.js';

export interface SquashOptions {
  compressor: SquashCompressor;
  /** Default per compressor: gzip 9 (1..9), zstd 15 (1..22); lz4 has none (must be absent). */
  level?: number;
  /** Power of two, 4096..1048576; default 131072. */
  blockSize?: number;
  /** Compression threads; default os.availableParallelism(). Does not change the bytes. */
  workers?: number;
  /** Root of the compressed-block cache (the store's cache/); absent = no cache. */
  cacheDir?: string;
  /** Superblock mkfs time, seconds; default 0. */
  mkfsTime?: number;
}

export interface SquashResult {
  /** Image size on disk (padded to 4096). */
  bytes: number;
  inodes: number;
  cacheHits: number;
  cacheMisses: number;
}

interface FileData {
  size: number;
  blocksStart: number;
  sizes: number[];
  sparse: number;
  fragIndex: number;
  fragOffset: number;
}

interface Node {
  entry: LayerEntry;
  name: Buffer;
  children?: Node[];
  file?: FileData;
  owner?: Node; // hardlink → the node whose inode it shares
  nlink: number;
  ino: number;
  ref: bigint;
  refBlock: number;
  refOffset: number;
  type: number; // inode type as written
  written: boolean;
}

/** Entries or calls the writer cannot store (ERR_IMAGE_INPUT). */
const usage = (msg: string, hint?: string) => new StrataError(IMAGE_ERR.INPUT, msg, hint ? { hint } : {});
/** Writer options out of range (ERR_IMAGE_OPTIONS). */
const badOption = (msg: string, hint: string) => new StrataError(IMAGE_ERR.OPTIONS, msg, { hint });

/** Packs a stream of bytes into 8 KiB metadata blocks, compressing each as it fills. */
class MetaWriter {
  private readonly blocks: Buffer[] = [];
  private cur = Buffer.alloc(METADATA_SIZE);
  private used = 0;
  /** On-disk bytes of the blocks flushed so far = relative start of the open block. */
  disk = 0;
  /** Relative on-disk start of every block, in order. */
  readonly starts: number[] = [];

  constructor(private readonly codec: Codec) {}

  get block(): number {
    return this.disk;
  }
  get offset(): number {
    return this.used;
  }

  write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      const n = Math.min(METADATA_SIZE - this.used, b.length - off);
      this.cur.set(b.subarray(off, off + n), this.used);
      this.used += n;
      off += n;
      if (this.used === METADATA_SIZE) this.flush();
    }
  }

  private flush(): void {
    const raw = this.cur.subarray(0, this.used);
    const c = this.codec.compress(raw);
    const head = Buffer.alloc(2);
    let payload: Buffer;
    if (c.length < raw.length) {
      head.writeUInt16LE(c.length, 0);
      payload = c;
    } else {
      head.writeUInt16LE(METADATA_UNCOMPRESSED | raw.length, 0);
      payload = Buffer.from(raw);
    }
    this.starts.push(this.disk);
    this.blocks.push(head, payload);
    this.disk += 2 + payload.length;
    this.cur = Buffer.alloc(METADATA_SIZE);
    this.used = 0;
  }

  /** Relative on-disk start of block number `i` (flushed, or the open one). */
  blockStart(i: number): number {
    return i < this.starts.length ? this.starts[i]! : this.disk;
  }

  /** Flushes the open block and returns the table's bytes. */
  end(): Buffer {
    if (this.used > 0) this.flush();
    return Buffer.concat(this.blocks);
  }
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}
function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v), 0);
  return b;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}
function baseOf(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

function clampTime(t: number): number {
  if (!Number.isFinite(t) || t < 0) return 0;
  return Math.min(Math.floor(t), 0xffffffff);
}

/** Validates writer options and fills in defaults. Throws ERR_IMAGE_OPTIONS with a hint. */
export function checkSquashOptions(opts: SquashOptions): { spec: ReturnType<typeof resolveCodecSpec>; blockSize: number; workers: number; mkfsTime: number } {
  const spec = resolveCodecSpec(opts.compressor, opts.level);
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw badOption(`SquashFS block size ${String(opts.blockSize)} is invalid`, 'use a power of two from 4096 to 1048576');
  }
  const workers = opts.workers ?? os.availableParallelism();
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw badOption(`worker count ${String(opts.workers)} is invalid`, 'use a whole number from 1 to 256');
  }
  const mkfsTime = opts.mkfsTime ?? 0;
  if (!Number.isInteger(mkfsTime) || mkfsTime < 0 || mkfsTime > 0xffffffff) {
    throw badOption(`mkfs time ${String(opts.mkfsTime)} is invalid`, 'use whole seconds since the epoch');
  }
  return { spec, blockSize, workers, mkfsTime };
}

export class SquashfsWriter {
  private readonly nodes = new Map<string, Node>();
  private readonly meta: Codec;
  private readonly pool: BlockPool;
  private readonly maxInFlight: number;
  private readonly queue: { p: Promise<BlockResult>; done: (start: number, word: number) => void }[] = [];
  private pos: number;
  private chain: Promise<void> = Promise.resolve();
  private failed: unknown;
  private closed = false;
  private finishing = false;
  private hits = 0;
  private misses = 0;
  private group: string | undefined;
  private frag: Buffer;
  private fragUsed = 0;
  private readonly frags: { start: number; word: number }[] = [];
  private fragCount = 0;
  /** Block buffers handed back by the workers, reused so memory stays flat on huge files. */
  private readonly spare: Buffer[] = [];

  private constructor(
    private readonly outPath: string,
    private readonly tmpPath: string,
    private readonly fh: fs.FileHandle,
    private readonly codec: Codec,
    private readonly blockSize: number,
    private readonly mkfsTime: number,
    private readonly options: Buffer | undefined,
    threads: number,
    cacheDir: string | undefined,
  ) {
    this.meta = codec;
    this.pool = new BlockPool({ codec: { name: codec.name, level: codec.level }, blockSize, cacheDir }, threads);
    this.maxInFlight = threads * 2 + 2;
    this.pos = SUPERBLOCK_SIZE + (options ? 2 + options.length : 0);
    this.frag = Buffer.alloc(blockSize);
  }

  /**
   * Opens `<outPath>.tmp-<pid>` for writing; finish() renames it to outPath, abort() removes
   * it. Throws ERR_IMAGE_OPTIONS for bad options (see checkSquashOptions).
   */
  static async create(outPath: string, opts: SquashOptions): Promise<SquashfsWriter> {
    const { spec, blockSize: bs, workers: threads, mkfsTime: mkfs } = checkSquashOptions(opts);
    const codec = makeCodec(spec);
    const tmp = `${outPath}.tmp-${process.pid}`;
    const fh = await fs.open(tmp, 'w');
    try {
      const w = new SquashfsWriter(outPath, tmp, fh, codec, bs, mkfs, codec.options(), threads, opts.cacheDir);
      return w;
    } catch (e) {
      await fh.close();
      await fs.rm(tmp, { force: true });
      throw e;
    }
  }

  private check(): void {
    if (this.failed) throw this.failed;
    if (this.closed || this.finishing) throw usage('the SquashFS writer is already finished or aborted');
  }

  /** Positional write of the whole buffer (a short write is retried, never left as a gap). */
  private async writeAll(b: Uint8Array, at: number): Promise<void> {
    for (let off = 0; off < b.length; ) {
      const { bytesWritten } = await this.fh.write(b, off, b.length - off, at + off);
      if (bytesWritten <= 0) throw new Error(`short write to ${this.tmpPath}`);
      off += bytesWritten;
    }
  }

  private register(entry: LayerEntry, file?: FileData): Node {
    if (this.nodes.has(entry.path)) throw usage(`duplicate path in SquashFS image: ${entry.path}`);
    const name = Buffer.from(entry.path === '.' ? '.' : baseOf(entry.path));
    if (name.length > MAX_NAME) throw usage(`name longer than ${MAX_NAME} bytes: ${entry.path}`);
    const node: Node = {
      entry,
      name,
      nlink: 1,
      ino: 0,
      ref: 0n,
      refBlock: 0,
      refOffset: 0,
      type: 0,
      written: false,
    };
    if (entry.type === 'dir') node.children = [];
    if (file) node.file = file;
    this.nodes.set(entry.path, node);
    return node;
  }

  /**
   * Streams a regular file's data into the image now, in call order (calls are serialized
   * even if the caller does not await). `content` must yield exactly entry.size bytes.
   * Full blocks go to the compression pool; the tail (< blockSize) is packed into the open
   * fragment block of `group`, which is flushed first when the group changes.
   */
  addFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string): Promise<void> {
    try {
      this.check();
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.chain.then(async () => {
      if (this.failed) throw this.failed;
      try {
        await this.streamFile(entry, content, group);
      } catch (e) {
        this.failed ??= e;
        throw e;
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async streamFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string): Promise<void> {
    if (entry.type !== 'file') throw usage(`addFile needs a regular file, got ${entry.type}: ${entry.path}`);
    if (entry.path === '.') throw usage('the image root must be a directory');
    const fd: FileData = { size: entry.size, blocksStart: 0, sizes: [], sparse: 0, fragIndex: INVALID_FRAG, fragOffset: 0 };
    this.register(entry, fd);
    if (group !== this.group) {
      if (this.fragUsed > 0) await this.flushFragment();
      this.group = group;
    }
    const bs = this.blockSize;
    let block = this.takeBlock();
    let fill = 0;
    let total = 0;
    let index = 0;
    for await (const chunk of content) {
      total += chunk.length;
      if (total > entry.size) throw usage(`${entry.path}: content is longer than its size ${entry.size}`);
      let off = 0;
      while (off < chunk.length) {
        const n = Math.min(bs - fill, chunk.length - off);
        block.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === bs) {
          const i = index++;
          await this.pushBlock(block, true, (start, word) => {
            if (i === 0) fd.blocksStart = start;
            fd.sizes[i] = word;
            if (word === 0) fd.sparse += bs;
          });
          block = this.takeBlock();
          fill = 0;
        }
      }
    }
    if (total !== entry.size) throw usage(`${entry.path}: content is ${total} bytes, its entry says ${entry.size}`);
    if (fill > 0) {
      if (this.fragUsed + fill > bs) await this.flushFragment();
      fd.fragIndex = this.fragCount;
      fd.fragOffset = this.fragUsed;
      this.frag.set(block.subarray(0, fill), this.fragUsed);
      this.fragUsed += fill;
    }
    this.spare.push(block);
  }

  private takeBlock(): Buffer {
    return this.spare.pop() ?? Buffer.alloc(this.blockSize);
  }

  private recycle(raw: Uint8Array | undefined): void {
    if (raw && raw.byteLength === this.blockSize && this.spare.length < this.maxInFlight) {
      this.spare.push(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength));
    }
  }

  private async flushFragment(): Promise<void> {
    const raw = Buffer.alloc(this.fragUsed);
    this.frag.copy(raw, 0, 0, this.fragUsed);
    this.fragUsed = 0;
    const index = this.fragCount++;
    await this.pushBlock(raw, false, (start, word) => {
      this.frags[index] = { start, word };
    });
  }

  private async pushBlock(raw: Buffer, allowSparse: boolean, done: (start: number, word: number) => void): Promise<void> {
    const p = this.pool.compress(raw, allowSparse);
    p.catch(() => undefined); // awaited in order by writeHead; avoid an early unhandled rejection
    this.queue.push({ p, done });
    while (this.queue.length > this.maxInFlight) await this.writeHead();
  }

  private async writeHead(): Promise<void> {
    const h = this.queue.shift()!;
    const r = await h.p;
    if (r.cache === 'hit') this.hits++;
    else if (r.cache === 'miss') this.misses++;
    if (r.kind === 'sparse') {
      h.done(this.pos, 0);
      this.recycle(r.raw);
      return;
    }
    const len = r.data.length;
    await this.writeAll(r.data, this.pos);
    h.done(this.pos, r.kind === 'raw' ? (len | DATA_UNCOMPRESSED) >>> 0 : len);
    this.pos += len;
    this.recycle(r.raw);
  }

  /**
   * Adds a non-file entry: dir, symlink, char, block, fifo, or hardlink (entry.linkname is
   * the path of another non-directory entry of the image). Order does not matter; parents
   * are checked in finish().
   */
  addEntry(entry: LayerEntry): void {
    this.check();
    switch (entry.type) {
      case 'dir':
      case 'symlink':
      case 'char':
      case 'block':
      case 'fifo':
      case 'hardlink':
        break;
      case 'file':
        throw usage(`regular files go through addFile: ${entry.path}`);
      default:
        throw usage(`unsupported entry type ${String(entry.type)}: ${entry.path}`);
    }
    if (entry.path === '.' && entry.type !== 'dir') throw usage('the image root must be a directory');
    if ((entry.type === 'symlink' || entry.type === 'hardlink') && !entry.linkname) {
      throw usage(`${entry.type} without a target: ${entry.path}`);
    }
    this.register(entry);
  }

  /** Writes inode, directory, fragment, export, id and xattr tables and the superblock. */
  async finish(): Promise<SquashResult> {
    this.check();
    this.finishing = true;
    await this.chain;
    try {
      if (this.failed) throw this.failed;
      if (this.fragUsed > 0) await this.flushFragment();
      while (this.queue.length) await this.writeHead();
      const r = await this.writeTables();
      this.closed = true;
      await this.pool.close();
      return r;
    } catch (e) {
      this.failed ??= e;
      await this.abort();
      throw e;
    }
  }

  /** Stops the workers and removes the partial output. Safe to call more than once. */
  async abort(): Promise<void> {
    this.closed = true;
    await this.pool.close();
    await this.fh.close().catch(() => undefined);
    await fs.rm(this.tmpPath, { force: true });
  }

  private buildTree(): Node {
    let root = this.nodes.get('.');
    if (!root) {
      root = this.register({ path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 });
    }
    for (const [p, n] of this.nodes) {
      if (p === '.') continue;
      const parent = this.nodes.get(parentOf(p));
      if (!parent) throw usage(`parent directory of ${p} is missing`, 'add every directory of the tree');
      if (!parent.children) throw usage(`parent of ${p} is a ${parent.entry.type}, not a directory`);
      parent.children.push(n);
    }
    for (const n of this.nodes.values()) {
      n.children?.sort((a, b) => Buffer.compare(a.name, b.name));
      if (n.entry.type !== 'hardlink') continue;
      let t: Node | undefined = n;
      for (let hops = 0; t && t.entry.type === 'hardlink'; hops++) {
        if (hops > this.nodes.size) throw usage(`hard link loop at ${n.entry.path}`);
        t = this.nodes.get(t.entry.linkname!);
      }
      if (!t) throw usage(`hard link ${n.entry.path} points at ${n.entry.linkname}, which is not in the image`);
      if (t.entry.type === 'dir') throw usage(`hard link ${n.entry.path} points at a directory`);
      n.owner = t;
      t.nlink++;
    }
    return root;
  }

  private async writeTables(): Promise<SquashResult> {
    const root = this.buildTree();
    const owner = (n: Node): Node => n.owner ?? n;

    // Inode numbers: post-order, children in name order, a shared inode numbered where it
    // is first met; this is also the order the inodes are written in.
    let count = 0;
    const number = (d: Node): void => {
      let subdirs = 0;
      for (const c of d.children!) {
        if (c.children) {
          subdirs++;
          number(c);
        } else {
          const o = owner(c);
          if (o.ino === 0) o.ino = ++count;
        }
      }
      d.nlink = 2 + subdirs;
      d.ino = ++count;
    };
    number(root);

    const idSet = new Set<number>();
    for (const n of this.nodes.values()) {
      if (n.owner) continue;
      for (const v of [n.entry.uid, n.entry.gid]) {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw usage(`${n.entry.path}: uid/gid ${v} out of range`);
        idSet.add(v);
      }
    }
    const ids = [...idSet].sort((a, b) => a - b);
    if (ids.length > MAX_IDS) throw usage(`more than ${MAX_IDS} distinct uids and gids`);
    const idIndex = new Map(ids.map((v, i) => [v, i]));

    const inodes = new MetaWriter(this.meta);
    const dirs = new MetaWriter(this.meta);
    const kv = new MetaWriter(this.meta);
    const xattrIds: { ref: bigint; count: number; size: number }[] = [];
    const xattrSets = new Map<string, number>();
    const values = new Map<string, bigint>();
    const exportRefs: bigint[] = new Array(count);

    const xattrIndex = (e: LayerEntry): number => {
      if (!e.xattrs || e.xattrs.size === 0) return INVALID_XATTR;
      const items: { full: Buffer; type: number; name: Buffer; value: Buffer }[] = [];
      for (const [name, value] of e.xattrs) {
        if (name.startsWith('system.')) continue;
        const s = splitXattrName(name);
        if (!s) throw usage(`${e.path}: xattr ${name} cannot be stored in SquashFS`, 'only user.*, trusted.* and security.* are supported');
        items.push({ full: Buffer.from(name), type: s.type, name: Buffer.from(s.rest), value: Buffer.from(value) });
      }
      if (items.length === 0) return INVALID_XATTR;
      items.sort((a, b) => Buffer.compare(a.full, b.full));
      const h = createHash('sha256');
      for (const it of items) h.update(u32(it.full.length)).update(it.full).update(u32(it.value.length)).update(it.value);
      const setKey = h.digest('hex');
      const known = xattrSets.get(setKey);
      if (known !== undefined) return known;
      const ref = metaRef(kv.block, kv.offset);
      let size = 0;
      for (const it of items) {
        const vkey = it.value.length > 8 ? createHash('sha256').update(it.value).digest('hex') : undefined;
        const ool = vkey !== undefined ? values.get(vkey) : undefined;
        kv.write(u16(it.type | (ool !== undefined ? XATTR_VALUE_OOL : 0)));
        kv.write(u16(it.name.length));
        kv.write(it.name);
        size += 4 + it.name.length;
        if (ool !== undefined) {
          kv.write(u32(8));
          kv.write(u64(ool));
          size += 12;
        } else {
          if (vkey !== undefined) values.set(vkey, metaRef(kv.block, kv.offset));
          kv.write(u32(it.value.length));
          kv.write(it.value);
          size += 4 + it.value.length;
        }
      }
      const idx = xattrIds.length;
      xattrIds.push({ ref, count: items.length, size });
      xattrSets.set(setKey, idx);
      return idx;
    };

    const header = (type: number, e: LayerEntry, ino: number): Buffer => {
      const b = Buffer.alloc(16);
      b.writeUInt16LE(type, 0);
      b.writeUInt16LE(e.mode & 0o7777, 2);
      b.writeUInt16LE(idIndex.get(e.uid)!, 4);
      b.writeUInt16LE(idIndex.get(e.gid)!, 6);
      b.writeUInt32LE(clampTime(e.mtime), 8);
      b.writeUInt32LE(ino, 12);
      return b;
    };

    const emit = (n: Node, type: number, body: Buffer[]): void => {
      n.refBlock = inodes.block;
      n.refOffset = inodes.offset;
      n.ref = metaRef(n.refBlock, n.refOffset);
      n.type = type;
      n.written = true;
      exportRefs[n.ino - 1] = n.ref;
      inodes.write(header(type, n.entry, n.ino));
      for (const b of body) inodes.write(b);
    };

    const writeLeaf = (n: Node): void => {
      const e = n.entry;
      const xi = xattrIndex(e);
      const ext = xi !== INVALID_XATTR;
      switch (e.type) {
        case 'file': {
          const f = n.file!;
          const words = Buffer.alloc(4 * f.sizes.length);
          f.sizes.forEach((w, i) => words.writeUInt32LE(w, 4 * i));
          if (ext || n.nlink > 1 || f.size > 0xffffffff || f.blocksStart > 0xffffffff) {
            const b = Buffer.alloc(40);
            b.writeBigUInt64LE(BigInt(f.blocksStart), 0);
            b.writeBigUInt64LE(BigInt(f.size), 8);
            b.writeBigUInt64LE(BigInt(f.sparse), 16);
            b.writeUInt32LE(n.nlink, 24);
            b.writeUInt32LE(f.fragIndex, 28);
            b.writeUInt32LE(f.fragOffset, 32);
            b.writeUInt32LE(xi, 36);
            emit(n, INODE.EXT_FILE, [b, words]);
          } else {
            const b = Buffer.alloc(16);
            b.writeUInt32LE(f.blocksStart, 0);
            b.writeUInt32LE(f.fragIndex, 4);
            b.writeUInt32LE(f.fragOffset, 8);
            b.writeUInt32LE(f.size, 12);
            emit(n, INODE.BASIC_FILE, [b, words]);
          }
          return;
        }
        case 'symlink': {
          const target = Buffer.from(e.linkname ?? '');
          const b = [u32(n.nlink), u32(target.length), target];
          if (ext) b.push(u32(xi));
          emit(n, ext ? INODE.EXT_SYMLINK : INODE.BASIC_SYMLINK, b);
          return;
        }
        case 'char':
        case 'block': {
          const major = e.devmajor ?? 0;
          const minor = e.devminor ?? 0;
          if (major < 0 || major > 0xfff || minor < 0 || minor > 0xfffff) {
            throw usage(`${e.path}: device ${major}:${minor} does not fit SquashFS's 12-bit major, 20-bit minor`);
          }
          const b = [u32(n.nlink), u32(encodeDevice(major, minor))];
          if (ext) b.push(u32(xi));
          const basic = e.type === 'char' ? INODE.BASIC_CHAR : INODE.BASIC_BLOCK;
          emit(n, ext ? basic + 7 : basic, b);
          return;
        }
        case 'fifo': {
          const b = [u32(n.nlink)];
          if (ext) b.push(u32(xi));
          emit(n, ext ? INODE.EXT_FIFO : INODE.BASIC_FIFO, b);
          return;
        }
        default:
          throw usage(`cannot write ${e.type} inode for ${e.path}`);
      }
    };

    const writeDir = (d: Node, parentIno: number): void => {
      for (const c of d.children!) {
        if (c.children) writeDir(c, d.ino);
        else {
          const o = owner(c);
          if (!o.written) writeLeaf(o);
        }
      }
      // Group entries into runs (see format.ts): ≤256 entries, one inode block, ±32767
      // from the run's reference number. Index: measured from the last indexed header (the
      // listing start at first), a run may not grow past 8 KiB of listing; a run started
      // more than 8 KiB after it gets an index entry. The same choices as mksquashfs, so
      // basic/extended directory inodes match its images (sqfsdiff compares inode types).
      const startBlock = dirs.block;
      const startOffset = dirs.offset;
      const startBlockNo = dirs.starts.length;
      type Run = { at: number; base: number; block: number; entries: Node[]; indexed: boolean };
      const runs: Run[] = [];
      let cur: Run | undefined;
      let size = 0;
      let lastIndexed = 0;
      for (const c of d.children!) {
        const o = owner(c);
        const n = c.name.length;
        if (
          !cur ||
          cur.entries.length === DIR_HEADER_MAX ||
          cur.block !== o.refBlock ||
          Math.abs(o.ino - cur.base) > 32767 ||
          size + n - lastIndexed > METADATA_SIZE
        ) {
          const indexed = cur !== undefined && size + DIR_ENTRY_SIZE + n - lastIndexed > METADATA_SIZE;
          if (indexed) lastIndexed = size;
          cur = { at: size, base: o.ino, block: o.refBlock, entries: [], indexed };
          runs.push(cur);
          size += DIR_HEADER_SIZE;
        }
        cur.entries.push(c);
        size += DIR_ENTRY_SIZE + n;
      }
      for (const r of runs) {
        dirs.write(u32(r.entries.length - 1));
        dirs.write(u32(r.block));
        dirs.write(u32(r.base));
        for (const c of r.entries) {
          const o = owner(c);
          const b = Buffer.alloc(8);
          b.writeUInt16LE(o.refOffset, 0);
          b.writeInt16LE(o.ino - r.base, 2);
          b.writeUInt16LE(basicType(o.type), 4);
          b.writeUInt16LE(c.name.length - 1, 6);
          dirs.write(b);
          dirs.write(c.name);
        }
      }
      const index: Buffer[] = [];
      for (const r of runs) {
        if (!r.indexed) continue;
        const first = r.entries[0]!.name;
        const block = dirs.blockStart(startBlockNo + Math.floor((startOffset + r.at) / METADATA_SIZE));
        index.push(u32(r.at), u32(block), u32(first.length - 1), first);
      }
      const fileSize = size + DIR_SIZE_BIAS;
      const xi = xattrIndex(d.entry);
      const indexCount = index.length / 4;
      // Extended when it must be (xattrs, index, size > u16) and, as mksquashfs decides,
      // for any directory of more than 256 entries or ≥ 8 KiB of entries without headers.
      const entryBytes = d.children!.reduce((t, c) => t + DIR_ENTRY_SIZE + c.name.length, 0);
      const large = d.children!.length > DIR_HEADER_MAX || entryBytes >= METADATA_SIZE;
      if (xi !== INVALID_XATTR || fileSize > 0xffff || indexCount > 0 || large) {
        const b = Buffer.alloc(24);
        b.writeUInt32LE(d.nlink, 0);
        b.writeUInt32LE(fileSize, 4);
        b.writeUInt32LE(startBlock, 8);
        b.writeUInt32LE(parentIno, 12);
        b.writeUInt16LE(indexCount, 16);
        b.writeUInt16LE(startOffset, 18);
        b.writeUInt32LE(xi, 20);
        emit(d, INODE.EXT_DIR, [b, ...index]);
      } else {
        const b = Buffer.alloc(16);
        b.writeUInt32LE(startBlock, 0);
        b.writeUInt32LE(d.nlink, 4);
        b.writeUInt16LE(fileSize, 8);
        b.writeUInt16LE(startOffset, 10);
        b.writeUInt32LE(parentIno, 12);
        emit(d, INODE.BASIC_DIR, [b]);
      }
    };
    writeDir(root, 0);

    // Tables, in the order the kernel expects.
    let p = this.pos;
    const out = async (b: Buffer): Promise<number> => {
      const at = p;
      await this.writeAll(b, at);
      p += b.length;
      return at;
    };
    const lookupTable = async (entries: Buffer[]): Promise<number> => {
      const m = new MetaWriter(this.meta);
      for (const e of entries) m.write(e);
      const at = await out(m.end());
      return out(Buffer.concat(m.starts.map((s) => u64(at + s))));
    };

    const inodeTableStart = await out(inodes.end());
    const directoryTableStart = await out(dirs.end());
    let fragmentTableStart = INVALID_TABLE;
    if (this.fragCount > 0) {
      const entries = this.frags.map((f) => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(BigInt(f.start), 0);
        b.writeUInt32LE(f.word, 8);
        return b;
      });
      fragmentTableStart = BigInt(await lookupTable(entries));
    }
    const exportTableStart = BigInt(await lookupTable(exportRefs.map((r) => u64(r))));
    const idTableStart = BigInt(await lookupTable(ids.map((v) => u32(v))));
    let xattrIdTableStart = INVALID_TABLE;
    if (xattrIds.length > 0) {
      const kvStart = await out(kv.end());
      const m = new MetaWriter(this.meta);
      for (const x of xattrIds) {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(x.ref, 0);
        b.writeUInt32LE(x.count, 8);
        b.writeUInt32LE(x.size, 12);
        m.write(b);
      }
      const idsAt = await out(m.end());
      const head = Buffer.alloc(16);
      head.writeBigUInt64LE(BigInt(kvStart), 0);
      head.writeUInt32LE(xattrIds.length, 8);
      xattrIdTableStart = BigInt(await out(Buffer.concat([head, ...m.starts.map((s) => u64(idsAt + s))])));
    }
    const bytesUsed = p;

    let flags = FLAG.EXPORTABLE;
    if (this.options) flags |= FLAG.COMPRESSOR_OPTIONS;
    if (this.options) {
      const ob = Buffer.concat([u16(METADATA_UNCOMPRESSED | this.options.length), this.options]);
      await this.writeAll(ob, SUPERBLOCK_SIZE);
    }
    const sb = encodeSuperblock({
      inodeCount: count,
      mkfsTime: this.mkfsTime,
      blockSize: this.blockSize,
      fragmentCount: this.fragCount,
      compressor: this.codec.id,
      blockLog: Math.log2(this.blockSize),
      flags,
      idCount: ids.length,
      versionMajor: VERSION_MAJOR,
      versionMinor: VERSION_MINOR,
      rootInode: root.ref,
      bytesUsed: BigInt(bytesUsed),
      idTableStart,
      xattrIdTableStart,
      inodeTableStart: BigInt(inodeTableStart),
      directoryTableStart: BigInt(directoryTableStart),
      fragmentTableStart,
      exportTableStart,
    });
    await this.writeAll(sb, 0);
    const padded = Math.ceil(bytesUsed / PAD) * PAD;
    await this.fh.truncate(padded);
    await this.fh.sync();
    await this.fh.close();
    await fs.rename(this.tmpPath, this.outPath);
    return { bytes: padded, inodes: count, cacheHits: this.hits, cacheMisses: this.misses };
  }
}

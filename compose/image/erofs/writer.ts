/**
 * strata's EROFS writer: streams file data into the image as it arrives (compressed extents
 * through the worker pool, output order fixed by call order), keeps per-file metadata, and
 * writes directories, shared xattrs, inodes and the superblock at finish(). No root needed,
 * no clock, no randomness: the image is a pure function of the entries, the order and
 * content of addFile calls, and the options (see spec/erofs.md for the exact rules).
 * Its public API mirrors SquashfsWriter (create / addFile / addEntry / finish / abort).
 */
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import { StrataError, IMAGE_ERR } from '../errors.js';
import type { LayerEntry } from '../../../store/index.js';
import { aclFromText, aclToXattr } from '../../../native/acl.js';
import { makeCodec, type Codec } from '../shared/codecs.js';
import { transferable, WorkerPool } from '../shared/worker-pool.js';
import type { BlockJob, BlockJobResult as BlockResult } from '../squashfs/block-job.js';
import type { CachePlace } from '../shared/block-cache.js';
import { configRecord, resolveErofsCodec, type ErofsCodec, type ErofsCompressor } from './codec.js';
import {
  ADVISE,
  BLOCK_BITS,
  BLOCK_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  COMPACT_SIZE,
  DIRENT_SIZE,
  EXTENDED_SIZE,
  FEATURE_INCOMPAT,
  FT,
  INODE_SLOT,
  LAYOUT,
  LCLUSTER,
  LCLUSTER_INDEX_SIZE,
  LI_D0_CBLKCNT,
  MAX_SHARED_PER_INODE,
  NAME_MAX,
  NULL_ADDR,
  PCLUSTER_MAX,
  S_IF,
  SUPERBLOCK_SIZE,
  SUPER_OFFSET,
  XATTR_BODY_HEADER,
  XATTR_VALUE_MAX,
  align,
  encodeDevice,
  encodeDirent,
  encodeHeadIndex,
  encodeInode,
  encodeMapHeader,
  encodeNonheadIndex,
  encodeSuperblock,
  encodeXattrEntry,
  fullIndexOffset,
  splitXattrName,
  xattrEntrySize,
} from './format.js';
import { Spill, type SpillRef } from './spill.js';
import { OutputFile, type OutputAccess } from '../shared/output-file.js';

export type { ErofsCompressor };

export interface ErofsOptions {
  /** 'none', 'lz4' (strata's own encoder) or 'zstd'. */
  compressor: ErofsCompressor;
  /** zstd only: 1..22, default 6. */
  level?: number;
  /**
   * Compressed images: bytes of a file compressed as one extent (the last one of a file may
   * be shorter). Power of two, 8192..1048576; default 131072.
   */
  extentSize?: number;
  /** Compression threads; default os.availableParallelism(). Does not change the bytes. */
  workers?: number;
  /** Root of the compressed-block cache (the store's cache/); absent = no cache. */
  cacheDir?: string;
  /** The user's cache secret (compose/caches.ts): records sealed with it are trusted as they are. */
  cacheSecret?: Uint8Array;
  /** Who may read the finished image (default: as the umask allows). */
  access?: OutputAccess;
}

/** Where a file's extents are cached: readable only by `cacheGid` for restricted content. */
export interface ErofsFileOptions {
  cacheGid?: number;
}

export interface ErofsResult {
  /** Image size on disk (a multiple of 4096). */
  bytes: number;
  /** sha256 (hex) of the image. */
  sha256: string;
  inodes: number;
  cacheHits: number;
  cacheMisses: number;
}

export const DEFAULT_EXTENT_SIZE = 131072;
const STAGE = 1 << 20;
const MIN_EXTENT = 8192;

/** Block runs of a flat file: `count` blocks from `addr` (NULL_ADDR = a hole). */
interface Run {
  addr: number;
  count: number;
}

/** One compressed extent: `lclusters` × 4096 bytes of the file (the last may be short). */
interface Extent {
  lclusters: number;
  /** true: stored raw, one PLAIN lcluster per block from pblk on (pblk NULL_ADDR: the zero block). */
  plain: boolean;
  pblk: number;
  /** Compressed extents: blocks of the pcluster. */
  blocks: number;
}

type FileData =
  | { kind: 'flat'; size: number; runs: Run[]; tail?: SpillRef; tailZero: boolean }
  | { kind: 'z'; size: number; extents: Extent[] };

/** A compressed file's extents on their way through the queue: settled when the last is placed. */
interface ExtentRun {
  data: Extract<FileData, { kind: 'z' }>;
  /** sha256 over the file size and the sha256 of each raw extent, in order: the file's identity. */
  digests: Hash;
  /** Extents pushed and not yet placed. */
  pending: number;
  /** All extents pushed (the content ended). */
  ended: boolean;
  /** Data-area position where the first extent was placed. */
  start: number;
  /** ErofsWriter.zeroWrites when the first extent was placed. */
  zeroWrites: number;
}

interface Node {
  entry: LayerEntry;
  name: Buffer;
  children?: Node[];
  data?: FileData;
  owner?: Node;
  nlink: number;
  parent?: Node;
  // assigned at finish()
  plan?: Plan;
  /** Inline part of a directory or symlink, between writeLateData and writeInodes. */
  inlineBytes?: Buffer;
  nid: number;
  ino: number;
}

interface XattrItem {
  index: number;
  suffix: Buffer;
  value: Buffer;
  key: string;
}

/** What finish() decided for one inode. */
interface Plan {
  extended: boolean;
  layout: number;
  xattrs: XattrItem[];
  shared: number[];
  inline: XattrItem[];
  xattrSize: number;
  /** Inode + xattr body. */
  fixed: number;
  /** Bytes after fixed: inline tail, chunk map or compressed index area. */
  extra: number;
  /** Inline data length (FLAT_INLINE). */
  inlineLen: number;
  size: number;
  /** raw_blkaddr / rdev / compressed blocks / chunk format. */
  u: number;
  chunkBits?: number;
  /** Chunk-based files: the block address of every chunk. */
  chunks?: number[];
}

/** Entries or calls the writer cannot store (ERR_IMAGE_INPUT). */
const usage = (msg: string, hint?: string) => new StrataError(IMAGE_ERR.INPUT, msg, hint ? { hint } : {});
const badOption = (msg: string, hint: string) => new StrataError(IMAGE_ERR.OPTIONS, msg, { hint });

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}
function baseOf(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

let zeros = Buffer.alloc(0);
function isZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = Buffer.alloc(Math.max(b.length, BLOCK_SIZE));
  return Buffer.from(b.buffer, b.byteOffset, b.length).equals(zeros.subarray(0, b.length));
}

const FILE_TYPE: Record<string, number> = { file: FT.REG, dir: FT.DIR, symlink: FT.LNK, char: FT.CHR, block: FT.BLK, fifo: FT.FIFO };
const MODE_TYPE: Record<string, number> = { file: S_IF.REG, dir: S_IF.DIR, symlink: S_IF.LNK, char: S_IF.CHR, block: S_IF.BLK, fifo: S_IF.FIFO };

/** Validates writer options and fills in defaults. Throws ERR_IMAGE_OPTIONS with a hint. */
export function checkErofsOptions(opts: ErofsOptions): { codec: ErofsCodec; extentSize: number; workers: number } {
  const codec = resolveErofsCodec(opts.compressor, opts.level);
  const extentSize = opts.extentSize ?? DEFAULT_EXTENT_SIZE;
  if (!Number.isInteger(extentSize) || extentSize < MIN_EXTENT || extentSize > PCLUSTER_MAX || (extentSize & (extentSize - 1)) !== 0) {
    throw badOption(`EROFS extent size ${String(opts.extentSize)} is invalid`, 'use a power of two from 8192 to 1048576');
  }
  const workers = opts.workers ?? os.availableParallelism();
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw badOption(`worker count ${String(opts.workers)} is invalid`, 'use a whole number from 1 to 256');
  }
  return { codec, extentSize, workers };
}

type Job = { p: Promise<BlockResult>; done: (r: BlockResult) => Promise<void> };

export class ErofsWriter {
  private readonly nodes = new Map<string, Node>();
  private readonly pool: WorkerPool<BlockJob, BlockResult> | undefined;
  /** The group (layer) of the file being written: where its extents are filed in the block cache. */
  private group = 'strata-metadata';
  private groupGid: number | undefined;
  private readonly maxInFlight: number;
  private readonly queue: Job[] = [];
  /** Next free byte of the data area (always a block boundary between writes). */
  private pos = BLOCK_SIZE;
  private chain: Promise<void> = Promise.resolve();
  private failed: unknown;
  private closed = false;
  private finishing = false;
  private hits = 0;
  private misses = 0;
  private readonly spill: Spill;
  /** Staging buffer of flat files (calls are serialized, so one is enough). */
  private readonly stage = Buffer.allocUnsafeSlow(STAGE);
  /** Extent buffers handed back by the workers, reused so memory and GC stay flat. */
  private readonly spareBuffers: Buffer[] = [];
  private mainCodec: Codec | undefined;
  /** Shared all-zero pclusters by decompressed length, and the shared zero block. */
  private readonly zeroPcluster = new Map<number, { pblk: number; blocks: number; plain: boolean }>();
  private zeroBlock = NULL_ADDR;
  /** How many times a shared zero pcluster or block was written (they must never be dropped). */
  private zeroWrites = 0;
  /** The first compressed file of each distinct content, by its identity (ExtentRun.digests). */
  private readonly firstFiles = new Map<string, Extract<FileData, { kind: 'z' }>>();
  private usedChunks = false;

  private readonly tmpPath: string;
  private readonly fh: fs.FileHandle;

  private constructor(
    private readonly out: OutputFile,
    private readonly codec: ErofsCodec,
    private readonly extentSize: number,
    threads: number,
    cacheDir: string | undefined,
    cacheSecret: Uint8Array | undefined,
  ) {
    this.pool = codec.spec
      ? new WorkerPool({
          module: new URL('../squashfs/block-job.js', import.meta.url).href,
          config: { codec: codec.spec, blockSize: extentSize, cacheDir, cacheSecret },
          threads,
          what: 'EROFS extent compression',
        })
      : undefined;
    // When full, the queue drains to half before more go out: extents reach the pool in
    // batches (shared/worker-pool.ts), as in the SquashFS writer.
    this.maxInFlight = codec.spec ? threads * 6 + 4 : 64;
    this.tmpPath = out.tmpPath;
    this.fh = out.fh;
    this.spill = new Spill(`${out.tmpPath}.tails`);
  }

  /**
   * Opens a temp file beside `outPath` (shared/output-file.ts: O_EXCL, never following a
   * planted name); finish() renames it to outPath, abort() removes it. Throws
   * ERR_IMAGE_OPTIONS for bad options (see checkErofsOptions).
   */
  static async create(outPath: string, opts: ErofsOptions): Promise<ErofsWriter> {
    const { codec, extentSize, workers } = checkErofsOptions(opts);
    const out = await OutputFile.create(outPath, opts.access ?? {});
    try {
      return new ErofsWriter(out, codec, extentSize, workers, opts.cacheDir, opts.cacheSecret);
    } catch (e) {
      await out.abort();
      throw e;
    }
  }

  private check(): void {
    if (this.failed) throw this.failed;
    if (this.closed || this.finishing) throw usage('the EROFS writer is already finished or aborted');
  }

  private async writeAll(b: Uint8Array, at: number): Promise<void> {
    for (let off = 0; off < b.length; ) {
      const { bytesWritten } = await this.fh.write(b, off, b.length - off, at + off);
      if (bytesWritten <= 0) throw new Error(`short write to ${this.tmpPath}`);
      off += bytesWritten;
    }
  }

  private register(entry: LayerEntry, data?: FileData): Node {
    if (this.nodes.has(entry.path)) throw usage(`duplicate path in EROFS image: ${entry.path}`);
    const name = Buffer.from(entry.path === '.' ? '.' : baseOf(entry.path));
    if (name.length > NAME_MAX) throw usage(`name longer than ${NAME_MAX} bytes: ${entry.path}`);
    const node: Node = { entry, name, nlink: 1, nid: -1, ino: 0 };
    if (entry.type === 'dir') node.children = [];
    if (data) node.data = data;
    this.nodes.set(entry.path, node);
    return node;
  }

  /**
   * Streams a regular file's data into the image now, in call order (calls are serialized
   * even if the caller does not await). `content` must yield exactly entry.size bytes.
   * `group` (the layer a file comes from) files its extents in the block cache; EROFS packs
   * no data of two files into one block, so it does not change the bytes. `origin`, when
   * given, is where `content` starts in the content `group` names (the file's offset in its
   * layer's tar): extents are then cached by position (shared/block-cache.ts).
   */
  addFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string, opts: ErofsFileOptions = {}, origin?: number): Promise<void> {
    try {
      this.check();
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.chain.then(async () => {
      if (this.failed) throw this.failed;
      this.group = group;
      this.groupGid = opts.cacheGid;
      try {
        await this.streamFile(entry, content, origin);
      } catch (e) {
        this.failed ??= e;
        throw e;
      }
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async streamFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, origin: number | undefined): Promise<void> {
    if (entry.type !== 'file') throw usage(`addFile needs a regular file, got ${entry.type}: ${entry.path}`);
    if (entry.path === '.') throw usage('the image root must be a directory');
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw usage(`${entry.path}: size ${entry.size} is invalid`);
    const compressed = this.pool !== undefined && entry.size >= BLOCK_SIZE;
    const data: FileData = compressed
      ? { kind: 'z', size: entry.size, extents: [] }
      : { kind: 'flat', size: entry.size, runs: [], tailZero: false };
    this.register(entry, data);
    // Compressed files are cut into extents (buffers handed to the pool); flat files go
    // through one reused staging buffer, written a run of non-zero blocks at a time.
    const unit = data.kind === 'z' ? Math.min(this.extentSize, align(entry.size, BLOCK_SIZE)) : STAGE;
    let buf = data.kind === 'z' ? this.takeExtentBuffer(unit) : this.stage;
    let fill = 0;
    let total = 0;
    let extents = 0;
    const run: ExtentRun | undefined =
      data.kind === 'z' ? { data, digests: createHash('sha256').update(`${entry.size}\0`), pending: 0, ended: false, start: 0, zeroWrites: 0 } : undefined;
    const flush = async (len: number): Promise<void> => {
      if (data.kind === 'z') {
        const at = origin === undefined ? undefined : origin + extents * unit;
        extents++;
        await this.pushExtent(run!, len === buf.length ? buf : buf.subarray(0, len), at);
        buf = this.takeExtentBuffer(unit);
      } else await this.writeFlat(data, buf.subarray(0, len - (len % BLOCK_SIZE)));
      fill = 0;
    };
    for await (const chunk of content) {
      total += chunk.length;
      if (total > entry.size) throw usage(`${entry.path}: content is longer than its size ${entry.size}`);
      let off = 0;
      while (off < chunk.length) {
        const n = Math.min(unit - fill, chunk.length - off);
        buf.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === unit) await flush(unit);
      }
    }
    if (total !== entry.size) throw usage(`${entry.path}: content is ${total} bytes, its entry says ${entry.size}`);
    if (data.kind === 'z') {
      if (fill > 0) await flush(fill);
      this.spareExtent(buf);
      run!.ended = true;
      if (run!.pending === 0) await this.settleExtents(run!);
      return;
    }
    const whole = fill - (fill % BLOCK_SIZE);
    if (whole > 0) await this.writeFlat(data, buf.subarray(0, whole));
    if (fill > whole) {
      const tail = buf.subarray(whole, fill);
      data.tailZero = isZero(tail);
      data.tail = await this.spill.append(tail);
    }
  }

  /** Whole blocks of a flat file: all-zero blocks become holes, runs of others are written. */
  private async writeFlat(data: Extract<FileData, { kind: 'flat' }>, blocks: Buffer): Promise<void> {
    let runStart = 0;
    const writeRun = async (end: number): Promise<void> => {
      if (end <= runStart) return;
      const at = this.pos;
      await this.writeAll(blocks.subarray(runStart, end), at);
      this.pos += end - runStart;
      addRun(data.runs, at / BLOCK_SIZE, (end - runStart) / BLOCK_SIZE);
    };
    for (let off = 0; off < blocks.length; off += BLOCK_SIZE) {
      if (!isZero(blocks.subarray(off, off + BLOCK_SIZE))) continue;
      await writeRun(off);
      addRun(data.runs, NULL_ADDR, 1);
      runStart = off + BLOCK_SIZE;
    }
    await writeRun(blocks.length);
  }

  private takeExtentBuffer(size: number): Buffer {
    if (size === this.extentSize) {
      const b = this.spareBuffers.pop();
      if (b) return b;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  private spareExtent(b: Uint8Array | undefined): void {
    if (b && b.byteLength === this.extentSize && b.byteOffset === 0 && this.spareBuffers.length < this.maxInFlight) {
      this.spareBuffers.push(Buffer.from(b.buffer, 0, b.byteLength));
    }
  }

  /** One extent of a compressed file: compressed in the pool, written in queue order. */
  private async pushExtent(run: ExtentRun, raw: Buffer, at: number | undefined): Promise<void> {
    const lclusters = Math.ceil(raw.length / BLOCK_SIZE);
    const len = raw.length;
    const first = run.pending === 0 && run.data.extents.length === 0;
    run.pending++;
    const place: CachePlace = { tag: this.group };
    if (this.groupGid !== undefined) place.gid = this.groupGid;
    if (at !== undefined) place.at = at;
    const p = this.pool!.run({ raw, allowSparse: true, place }, transferable(raw));
    p.catch(() => undefined); // awaited in order by writeHead
    await this.enqueue({
      p,
      done: async (r) => {
        if (r.cache === 'hit') this.hits++;
        else if (r.cache === 'miss') this.misses++;
        if (first) {
          run.start = this.pos;
          run.zeroWrites = this.zeroWrites;
        }
        try {
          await this.placeExtent(run.data, r, raw, len, lclusters);
        } finally {
          this.spareExtent(r.raw);
        }
        run.digests.update(r.digest);
        if (--run.pending === 0 && run.ended) await this.settleExtents(run);
      },
    });
  }

  /**
   * Called once all of a compressed file's extents are placed, before anything after them:
   * when an earlier file had the same size and extents, this file's pclusters (the last ones
   * written) are cut off the image and the file points at the earlier file's. Not when a
   * shared zero pcluster was written among them (later files need it).
   */
  private async settleExtents(run: ExtentRun): Promise<void> {
    const key = run.digests.digest('base64');
    const first = this.firstFiles.get(key);
    if (!first) {
      this.firstFiles.set(key, run.data);
      return;
    }
    if (this.zeroWrites !== run.zeroWrites) return;
    await this.fh.truncate(run.start);
    this.pos = run.start;
    run.data.extents = first.extents;
  }

  /** Where an extent's bytes go: a shared zero pcluster, one compressed pcluster, or plain blocks. */
  private async placeExtent(data: Extract<FileData, { kind: 'z' }>, r: BlockResult, raw: Buffer, len: number, lclusters: number): Promise<void> {
    if (r.kind === 'sparse') {
      data.extents.push({ lclusters, ...(await this.zeroExtent(len, lclusters)) });
      return;
    }
    const blocks = Math.ceil(r.data.length / BLOCK_SIZE);
    const at = this.pos;
    if (r.kind === 'compressed' && blocks < lclusters) {
      // Zero padding in front (ZERO_PADDING): the payload ends at the pcluster's end.
      await this.writeAll(r.data, at + blocks * BLOCK_SIZE - r.data.length);
      this.pos += blocks * BLOCK_SIZE;
      data.extents.push({ lclusters, plain: false, pblk: at / BLOCK_SIZE, blocks });
      return;
    }
    const back = r.raw ? Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength) : raw;
    await this.writeAll(r.kind === 'raw' ? r.data : back.subarray(0, len), at);
    this.pos += lclusters * BLOCK_SIZE;
    data.extents.push({ lclusters, plain: true, pblk: at / BLOCK_SIZE, blocks: lclusters });
  }

  /** The shared pcluster of `len` zero bytes (written the first time one is needed). */
  private async zeroExtent(len: number, lclusters: number): Promise<Omit<Extent, 'lclusters'>> {
    if (lclusters === 1) return { plain: true, pblk: await this.sharedZeroBlock(), blocks: 1 };
    let z = this.zeroPcluster.get(len);
    if (!z) {
      this.mainCodec ??= makeCodec(this.codec.spec!);
      const c = this.mainCodec.compress(Buffer.alloc(len));
      const blocks = Math.ceil(c.length / BLOCK_SIZE);
      if (blocks < lclusters) {
        const at = this.pos;
        await this.writeAll(c, at + blocks * BLOCK_SIZE - c.length);
        this.pos += blocks * BLOCK_SIZE;
        this.zeroWrites++;
        z = { pblk: at / BLOCK_SIZE, blocks, plain: false };
      } else {
        z = { pblk: await this.sharedZeroBlock(), blocks: 1, plain: true };
      }
      this.zeroPcluster.set(len, z);
    }
    return z.plain ? { plain: true, pblk: NULL_ADDR, blocks: lclusters } : { plain: false, pblk: z.pblk, blocks: z.blocks };
  }

  private async sharedZeroBlock(): Promise<number> {
    if (this.zeroBlock === NULL_ADDR) {
      this.zeroBlock = this.pos / BLOCK_SIZE;
      await this.writeAll(Buffer.alloc(BLOCK_SIZE), this.pos);
      this.pos += BLOCK_SIZE;
      this.zeroWrites++;
    }
    return this.zeroBlock;
  }

  private async enqueue(job: Job): Promise<void> {
    this.queue.push(job);
    if (this.queue.length > this.maxInFlight) while (this.queue.length > this.maxInFlight / 2) await this.writeHead();
  }

  private async writeHead(): Promise<void> {
    const h = this.queue.shift()!;
    const r = await h.p;
    await h.done(r);
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

  /** Writes directories, shared xattrs, inodes and the superblock; renames into place. */
  async finish(): Promise<ErofsResult> {
    this.check();
    this.finishing = true;
    try {
      await this.chain;
      if (this.failed) throw this.failed;
      while (this.queue.length > 0) await this.writeHead();
      await this.pool?.close();
      const r = await this.writeMetadata();
      this.closed = true;
      await this.spill.close();
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
    await this.pool?.close();
    await this.out.abort();
    await this.spill.close().catch(() => undefined);
  }

  private buildTree(): Node {
    let root = this.nodes.get('.');
    if (!root) root = this.register({ path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 });
    for (const [p, n] of this.nodes) {
      if (p === '.') continue;
      const parent = this.nodes.get(parentOf(p));
      if (!parent) throw usage(`parent directory of ${p} is missing`, 'add every directory of the tree');
      if (!parent.children) throw usage(`parent of ${p} is a ${parent.entry.type}, not a directory`);
      parent.children.push(n);
      n.parent = parent;
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

  /** Inode order: a directory, then its non-directory entries in name order, then its subdirectories (recursively). */
  private order(root: Node): Node[] {
    const out: Node[] = [];
    const seen = new Set<Node>();
    const stack: Node[] = [root];
    while (stack.length > 0) {
      const d = stack.pop()!;
      out.push(d);
      let subdirs = 0;
      for (const c of d.children!) {
        if (c.children) {
          subdirs++;
          continue;
        }
        const o = c.owner ?? c;
        if (!seen.has(o)) {
          seen.add(o);
          out.push(o);
        }
      }
      d.nlink = 2 + subdirs;
      for (let i = d.children!.length - 1; i >= 0; i--) if (d.children![i]!.children) stack.push(d.children![i]!);
    }
    return out;
  }

  private xattrItems(e: LayerEntry): XattrItem[] {
    const items: XattrItem[] = [];
    const add = (index: number, suffix: string, value: Buffer, name: string) => {
      if (value.length > XATTR_VALUE_MAX) throw usage(`${e.path}: xattr ${name} is ${value.length} bytes, EROFS holds at most ${XATTR_VALUE_MAX}`);
      const s = Buffer.from(suffix);
      if (s.length > NAME_MAX) throw usage(`${e.path}: xattr name ${name} is too long`);
      items.push({ index, suffix: s, value, key: `${index}\0${suffix}\0${value.toString('latin1')}` });
    };
    for (const [name, value] of e.xattrs ?? []) {
      if (name.startsWith('system.')) continue;
      const s = splitXattrName(name);
      if (!s) throw usage(`${e.path}: xattr ${name} cannot be stored in EROFS`, 'only user.*, trusted.* and security.* (and POSIX ACLs) are supported');
      add(s.index, s.suffix, Buffer.from(value), name);
    }
    const acl = e.acl;
    if (acl?.access) add(2, '', aclToXattr(aclFromText(acl.access)), 'system.posix_acl_access');
    if (acl?.default) add(3, '', aclToXattr(aclFromText(acl.default)), 'system.posix_acl_default');
    items.sort((a, b) => a.index - b.index || Buffer.compare(a.suffix, b.suffix));
    return items;
  }

  private async writeMetadata(): Promise<ErofsResult> {
    const root = this.buildTree();
    const inodes = this.order(root);

    // build_time: the most common mtime (ties: the smallest), so most inodes can be compact.
    const mtimes = new Map<number, number>();
    for (const n of inodes) {
      const t = clampTime(n.entry.mtime);
      mtimes.set(t, (mtimes.get(t) ?? 0) + 1);
    }
    let buildTime = 0;
    let best = -1;
    for (const [t, c] of mtimes) if (c > best || (c === best && t < buildTime)) [buildTime, best] = [t, c];

    // Xattrs: an (index, name, value) on two or more inodes goes to the shared area once.
    const counts = new Map<string, number>();
    const itemsOf = new Map<Node, XattrItem[]>();
    for (const n of inodes) {
      const items = this.xattrItems(n.entry);
      itemsOf.set(n, items);
      for (const it of items) counts.set(it.key, (counts.get(it.key) ?? 0) + 1);
    }
    const sharedItems: XattrItem[] = [];
    const seenShared = new Set<string>();
    for (const items of itemsOf.values()) {
      for (const it of items) {
        if ((counts.get(it.key) ?? 0) >= 2 && !seenShared.has(it.key)) {
          seenShared.add(it.key);
          sharedItems.push(it);
        }
      }
    }
    sharedItems.sort((a, b) => a.index - b.index || Buffer.compare(a.suffix, b.suffix) || Buffer.compare(a.value, b.value));
    const sharedId = new Map<string, number>();
    let sharedBytes = 0;
    for (const it of sharedItems) {
      sharedId.set(it.key, sharedBytes / 4);
      sharedBytes += xattrEntrySize(it.suffix.length, it.value.length);
    }

    // Plans: form, layout, sizes. Nothing here depends on where an inode lands.
    for (const n of inodes) n.plan = this.plan(n, itemsOf.get(n)!, sharedId, buildTime);

    // Placement (32-byte slots): an inode that fits in a block (with its xattrs and inline
    // data) is kept inside one, as the kernel reads inline data from the inode's block; it
    // goes to the first of the last OPEN_BLOCKS partly filled blocks with room, else to a
    // new block. Larger ones start a new block and may span several.
    const placer = new Placer();
    inodes.forEach((n, i) => {
      n.nid = placer.place(n.plan!.fixed + n.plan!.extra) / INODE_SLOT;
      n.ino = i;
    });
    const metaSize = placer.size;
    if (root.nid > 0xffff) throw usage('the root directory does not fit the superblock');

    // Data written now: directory blocks, symlink targets and file tails that are not inline.
    for (const n of inodes) await this.writeLateData(n);

    const xattrBlkaddr = sharedBytes > 0 ? this.pos / BLOCK_SIZE : 0;
    if (sharedBytes > 0) {
      const parts = sharedItems.map((it) => encodeXattrEntry(it.index, it.suffix, it.value));
      await this.writeAll(Buffer.concat(parts), this.pos);
      this.pos += align(sharedBytes, BLOCK_SIZE);
    }
    const metaBlkaddr = this.pos / BLOCK_SIZE;
    await this.writeInodes([...inodes].sort((a, b) => a.nid - b.nid), this.pos);
    const end = align(this.pos + metaSize, BLOCK_SIZE);

    let incompat = 0;
    let u1 = 0;
    let cfg: Buffer | undefined;
    if (this.codec.spec) {
      incompat |= FEATURE_INCOMPAT.ZERO_PADDING | FEATURE_INCOMPAT.COMPR_CFGS;
      u1 = 1 << this.codec.alg;
      cfg = configRecord(this.codec, this.extentSize);
    }
    if (this.usedChunks) incompat |= FEATURE_INCOMPAT.CHUNKED_FILE;
    const sb = encodeSuperblock({
      featureCompat: 0,
      blkszbits: BLOCK_BITS,
      extslots: 0,
      rootNid: root.nid,
      inos: BigInt(inodes.length),
      buildTime: BigInt(buildTime),
      buildTimeNsec: 0,
      blocks: end / BLOCK_SIZE,
      metaBlkaddr,
      xattrBlkaddr,
      uuid: Buffer.alloc(16),
      volumeName: Buffer.alloc(16),
      featureIncompat: incompat,
      u1,
      extraDevices: 0,
      dirblkbits: 0,
      xattrPrefixCount: 0,
      packedNid: 0n,
    });
    const head = [sb];
    if (cfg) {
      const len = Buffer.alloc(2);
      len.writeUInt16LE(cfg.length, 0);
      head.push(len, cfg);
    }
    await this.writeAll(Buffer.concat(head), SUPER_OFFSET);
    await this.fh.truncate(end);
    const sha256 = await this.out.sha256();
    await this.out.commit();
    return { bytes: end, sha256, inodes: inodes.length, cacheHits: this.hits, cacheMisses: this.misses };
  }

  private plan(n: Node, items: XattrItem[], sharedId: Map<string, number>, buildTime: number): Plan {
    const e = n.entry;
    const shared: number[] = [];
    const inline: XattrItem[] = [];
    for (const it of items) {
      const id = sharedId.get(it.key);
      if (id !== undefined && shared.length < MAX_SHARED_PER_INODE) shared.push(id);
      else inline.push(it);
    }
    let xattrSize = 0;
    if (items.length > 0) {
      xattrSize = XATTR_BODY_HEADER + 4 * shared.length;
      for (const it of inline) xattrSize += xattrEntrySize(it.suffix.length, it.value.length);
    }
    if (xattrSize > XATTR_BODY_HEADER + 4 * 0xfffe) throw usage(`${e.path}: xattrs too large for EROFS`);

    let size = 0;
    switch (e.type) {
      case 'file':
        size = n.data!.size;
        break;
      case 'symlink':
        size = Buffer.byteLength(e.linkname!);
        if (size >= BLOCK_SIZE) throw usage(`${e.path}: symlink target longer than ${BLOCK_SIZE - 1} bytes`);
        break;
      case 'dir':
        size = dirSize(n);
        break;
      case 'char':
      case 'block': {
        const major = e.devmajor ?? 0;
        const minor = e.devminor ?? 0;
        if (!Number.isInteger(major) || !Number.isInteger(minor) || major < 0 || major > 0xfff || minor < 0 || minor > 0xfffff) {
          throw usage(`${e.path}: device ${major}:${minor} does not fit a 12-bit major and 20-bit minor`);
        }
        break;
      }
    }
    for (const v of [e.uid, e.gid]) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw usage(`${e.path}: uid/gid ${v} out of range`);
    }
    const mtime = clampTime(e.mtime);
    const extended = mtime !== buildTime || e.uid > 0xffff || e.gid > 0xffff || n.nlink > 0xffff || size > 0xffffffff;
    const fixed = (extended ? EXTENDED_SIZE : COMPACT_SIZE) + xattrSize;
    const p: Plan = { extended, layout: LAYOUT.FLAT_PLAIN, xattrs: items, shared, inline, xattrSize, fixed, extra: 0, inlineLen: 0, size, u: 0 };

    const canInline = (len: number) => len > 0 && fixed + len <= BLOCK_SIZE;
    switch (e.type) {
      case 'char':
      case 'block':
        p.u = encodeDevice(e.devmajor ?? 0, e.devminor ?? 0);
        break;
      case 'fifo':
        break;
      case 'symlink':
      case 'dir': {
        const tail = size % BLOCK_SIZE;
        if (canInline(tail)) {
          p.layout = LAYOUT.FLAT_INLINE;
          p.inlineLen = tail;
          p.extra = tail;
          p.u = NULL_ADDR; // set to the first full block, when there are any, by writeLateData
        }
        break;
      }
      case 'file': {
        const d = n.data!;
        if (d.kind === 'z') {
          p.layout = LAYOUT.COMPRESSED_FULL;
          const lclusters = d.extents.reduce((s, x) => s + x.lclusters, 0);
          p.extra = fullIndexOffset(fixed) - fixed + LCLUSTER_INDEX_SIZE * lclusters;
          p.u = d.extents.reduce((s, x) => s + (x.plain ? x.lclusters : x.blocks), 0);
          break;
        }
        const tail = d.size % BLOCK_SIZE;
        const holes = d.runs.some((r) => r.addr === NULL_ADDR);
        if (!holes && (tail === 0 || canInline(tail))) {
          p.layout = tail === 0 ? LAYOUT.FLAT_PLAIN : LAYOUT.FLAT_INLINE;
          p.u = d.runs.length > 0 ? d.runs[0]!.addr : NULL_ADDR;
          p.inlineLen = tail;
          p.extra = tail;
        } else if (!holes && d.runs.length === 0) {
          p.layout = LAYOUT.FLAT_PLAIN; // a lone tail that cannot be inline: its own block (writeLateData)
        } else {
          // Holes, or a tail that must go to a block of its own: a chunk map. The tail block
          // is written by writeLateData (or is a hole when all zero).
          p.layout = LAYOUT.CHUNK_BASED;
          const blocks = Math.ceil(d.size / BLOCK_SIZE);
          const runs = [...d.runs];
          if (tail > 0) runs.push({ addr: d.tailZero ? NULL_ADDR : -2, count: 1 }); // -2: placeholder
          let bits = Math.min(Math.ceil(Math.log2(Math.max(blocks, 1))), 20);
          let at = 0;
          for (const r of runs) {
            if (at > 0) bits = Math.min(bits, ctz(at));
            at += r.count;
          }
          p.chunkBits = bits;
          const per = 2 ** bits;
          const chunks: number[] = [];
          at = 0;
          for (const r of runs) {
            for (let k = 0; k < r.count; k += per) chunks.push(r.addr === NULL_ADDR || r.addr === -2 ? r.addr : r.addr + k);
            at += r.count;
          }
          p.chunks = chunks;
          p.u = bits & CHUNK_FORMAT_BLKBITS_MASK;
          p.extra = 4 * chunks.length;
          this.usedChunks = true;
        }
        break;
      }
    }
    return p;
  }

  /** Blocks that could only be placed at finish: directory data, long symlinks, lone tails. */
  private async writeLateData(n: Node): Promise<void> {
    const p = n.plan!;
    const e = n.entry;
    let bytes: Buffer | undefined;
    if (e.type === 'dir') bytes = dirBytes(n);
    else if (e.type === 'symlink') bytes = Buffer.from(e.linkname!);
    if (bytes) {
      const full = p.layout === LAYOUT.FLAT_INLINE ? bytes.length - p.inlineLen : bytes.length;
      if (full > 0) {
        p.u = this.pos / BLOCK_SIZE;
        await this.writeAll(bytes.subarray(0, full), this.pos);
        this.pos += align(full, BLOCK_SIZE);
      }
      if (p.layout === LAYOUT.FLAT_INLINE) n.inlineBytes = bytes.subarray(full);
      return;
    }
    const d = n.data;
    if (!d || d.kind !== 'flat' || !d.tail) return;
    if (p.layout === LAYOUT.FLAT_PLAIN) {
      p.u = this.pos / BLOCK_SIZE;
      await this.writeAll(await this.spill.read(d.tail), this.pos);
      this.pos += BLOCK_SIZE;
    } else if (p.layout === LAYOUT.CHUNK_BASED) {
      const last = p.chunks!.length - 1;
      if (p.chunks![last] === -2) {
        p.chunks![last] = this.pos / BLOCK_SIZE;
        await this.writeAll(await this.spill.read(d.tail), this.pos);
        this.pos += BLOCK_SIZE;
      }
    }
  }

  /** Serializes every inode (in nid order) at its slot, streaming through a 1 MiB buffer. */
  private async writeInodes(inodes: Node[], base: number): Promise<void> {
    const LIMIT = 1 << 20;
    let parts: Buffer[] = [];
    let partsLen = 0;
    let flushed = 0; // meta bytes written so far
    const put = async (b: Buffer) => {
      parts.push(b);
      partsLen += b.length;
      if (partsLen >= LIMIT) {
        const all = Buffer.concat(parts, partsLen);
        await this.writeAll(all, base + flushed);
        flushed += all.length;
        parts = [];
        partsLen = 0;
      }
    };
    let off = 0;
    for (const n of inodes) {
      const p = n.plan!;
      const at = n.nid * INODE_SLOT;
      if (at > off) await put(Buffer.alloc(at - off));
      off = at;
      const e = n.entry;
      const ino = encodeInode({
        extended: p.extended,
        layout: p.layout,
        xattrIcount: p.xattrSize === 0 ? 0 : (p.xattrSize - XATTR_BODY_HEADER) / 4 + 1,
        mode: MODE_TYPE[e.type]! | (e.mode & 0o7777),
        nlink: n.nlink,
        size: BigInt(p.size),
        u: p.u,
        ino: n.ino,
        uid: e.uid,
        gid: e.gid,
        mtime: BigInt(clampTime(e.mtime)),
        mtimeNsec: 0,
      });
      const chunk: Buffer[] = [ino];
      if (p.xattrSize > 0) {
        const h = Buffer.alloc(XATTR_BODY_HEADER + 4 * p.shared.length);
        h.writeUInt8(p.shared.length, 4);
        p.shared.forEach((id, i) => h.writeUInt32LE(id, XATTR_BODY_HEADER + 4 * i));
        chunk.push(h, ...p.inline.map((it) => encodeXattrEntry(it.index, it.suffix, it.value)));
      }
      if (p.layout === LAYOUT.FLAT_INLINE) {
        if (n.inlineBytes) {
          chunk.push(n.inlineBytes);
          n.inlineBytes = undefined;
        } else {
          const d = n.data as Extract<FileData, { kind: 'flat' }>;
          chunk.push(await this.spill.read(d.tail!));
        }
      } else if (p.layout === LAYOUT.CHUNK_BASED) {
        const b = Buffer.alloc(4 * p.chunks!.length);
        p.chunks!.forEach((a, i) => b.writeUInt32LE(a >>> 0, 4 * i));
        chunk.push(b);
      } else if (p.layout === LAYOUT.COMPRESSED_FULL) {
        chunk.push(Buffer.alloc(fullIndexOffset(p.fixed) - p.fixed - 16));
        chunk.push(encodeMapHeader(ADVISE.BIG_PCLUSTER_1, this.codec.alg, 0), Buffer.alloc(8));
        chunk.push(compressedIndexes((n.data as Extract<FileData, { kind: 'z' }>).extents, this.zeroBlock));
      }
      for (const b of chunk) {
        await put(b);
        off += b.length;
      }
    }
    if (partsLen > 0) await this.writeAll(Buffer.concat(parts, partsLen), base + flushed);
  }
}

const OPEN_BLOCKS = 32;

/** Metadata space: first fit among the last OPEN_BLOCKS blocks with room, 32-byte aligned. */
class Placer {
  private readonly open: { blk: number; used: number }[] = [];
  private next = 0; // next unallocated block

  get size(): number {
    return this.next * BLOCK_SIZE;
  }

  place(bytes: number): number {
    const size = align(bytes, INODE_SLOT);
    if (size <= BLOCK_SIZE) {
      for (let i = 0; i < this.open.length; i++) {
        const o = this.open[i]!;
        if (o.used + size > BLOCK_SIZE) continue;
        const at = o.blk * BLOCK_SIZE + o.used;
        o.used += size;
        if (o.used === BLOCK_SIZE) this.open.splice(i, 1);
        return at;
      }
      const blk = this.next++;
      if (size < BLOCK_SIZE) this.keep({ blk, used: size });
      return blk * BLOCK_SIZE;
    }
    const at = this.next * BLOCK_SIZE;
    this.next += Math.ceil(size / BLOCK_SIZE);
    if (size % BLOCK_SIZE) this.keep({ blk: this.next - 1, used: size % BLOCK_SIZE });
    return at;
  }

  private keep(o: { blk: number; used: number }): void {
    this.open.push(o);
    if (this.open.length > OPEN_BLOCKS) this.open.shift();
  }
}

function clampTime(t: number): number {
  if (!Number.isFinite(t) || t < 0) return 0;
  return Math.min(Math.floor(t), Number.MAX_SAFE_INTEGER);
}

/** Appends `count` blocks from `addr` (NULL_ADDR: holes) to a run list, merging with the last run. */
function addRun(runs: Run[], addr: number, count: number): void {
  const last = runs[runs.length - 1];
  if (last && ((addr === NULL_ADDR && last.addr === NULL_ADDR) || (addr !== NULL_ADDR && last.addr !== NULL_ADDR && last.addr + last.count === addr))) {
    last.count += count;
  } else runs.push({ addr, count });
}

function ctz(n: number): number {
  let c = 0;
  while (n > 0 && n % 2 === 0) {
    n /= 2;
    c++;
  }
  return c;
}

/** Directory entries in stored order: ".", ".." and the children, by name bytes. */
function dirEntries(d: Node): { name: Buffer; node: Node }[] {
  const list = [
    { name: Buffer.from('.'), node: d },
    { name: Buffer.from('..'), node: d.parent ?? d },
    ...d.children!.map((c) => ({ name: c.name, node: c.owner ?? c })),
  ];
  list.sort((a, b) => Buffer.compare(a.name, b.name));
  return list;
}

/** Splits entries into 4096-byte blocks: dirents then names, as many as fit. */
function dirBlocks(list: { name: Buffer; node: Node }[]): { start: number; end: number; bytes: number }[] {
  const blocks: { start: number; end: number; bytes: number }[] = [];
  let start = 0;
  let used = 0;
  for (let i = 0; i < list.length; i++) {
    const need = DIRENT_SIZE + list[i]!.name.length;
    if (used + need > BLOCK_SIZE) {
      blocks.push({ start, end: i, bytes: used });
      start = i;
      used = 0;
    }
    used += need;
  }
  blocks.push({ start, end: list.length, bytes: used });
  return blocks;
}

function dirSize(d: Node): number {
  const blocks = dirBlocks(dirEntries(d));
  return (blocks.length - 1) * BLOCK_SIZE + blocks[blocks.length - 1]!.bytes;
}

function dirBytes(d: Node): Buffer {
  const list = dirEntries(d);
  const blocks = dirBlocks(list);
  const out = Buffer.alloc((blocks.length - 1) * BLOCK_SIZE + blocks[blocks.length - 1]!.bytes);
  blocks.forEach((b, bi) => {
    const base = bi * BLOCK_SIZE;
    let nameoff = (b.end - b.start) * DIRENT_SIZE;
    for (let i = b.start; i < b.end; i++) {
      const { name, node } = list[i]!;
      encodeDirent(BigInt(node.nid), nameoff, FILE_TYPE[node.entry.type]!).copy(out, base + (i - b.start) * DIRENT_SIZE);
      name.copy(out, base + nameoff);
      nameoff += name.length;
    }
  });
  return out;
}

/**
 * Full lcluster indexes of a compressed file. A compressed extent of n lclusters: HEAD1 at
 * its first (blkaddr = pcluster start), then NONHEAD with delta[0] = distance back to the
 * head (the first one instead carries CBLKCNT | pcluster blocks) and delta[1] = distance to
 * the next head. A plain extent: one PLAIN head per lcluster, each its own 4096-byte block.
 */
function compressedIndexes(extents: Extent[], zeroBlock: number): Buffer {
  const total = extents.reduce((s, x) => s + x.lclusters, 0);
  const out = Buffer.alloc(total * LCLUSTER_INDEX_SIZE);
  let at = 0;
  for (const x of extents) {
    if (x.plain) {
      for (let k = 0; k < x.lclusters; k++) {
        const blk = x.pblk === NULL_ADDR ? zeroBlock : x.pblk + k;
        encodeHeadIndex(LCLUSTER.PLAIN, 0, blk).copy(out, (at + k) * LCLUSTER_INDEX_SIZE);
      }
    } else {
      encodeHeadIndex(LCLUSTER.HEAD1, 0, x.pblk).copy(out, at * LCLUSTER_INDEX_SIZE);
      for (let k = 1; k < x.lclusters; k++) {
        const d0 = k === 1 ? LI_D0_CBLKCNT | x.blocks : k;
        encodeNonheadIndex(d0, x.lclusters - k).copy(out, (at + k) * LCLUSTER_INDEX_SIZE);
      }
    }
    at += x.lclusters;
  }
  return out;
}

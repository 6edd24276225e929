/**
 * strata's EROFS writer: streams file data into the image as it arrives (compressed extents
 * through the worker pool, output order fixed by call order), keeps per-file metadata, and
 * writes directories, shared xattrs, inodes and the superblock at finish(). No root needed,
 * no clock, no randomness: the image is a pure function of the entries, the order and
 * content of addFile calls, and the options (see spec/erofs.md for the exact rules).
 * Its public API mirrors SquashfsWriter (create / addFile / addEntry / finish / abort).
 */
import { createHash, type Hash } from 'node:crypto';
import os from 'node:os';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { baseName, SpillSorter, type LayerEntry } from '../../../store/index.js';
import { makeCodec, type Codec } from '../shared/codecs.js';
import { DigestTable } from '../shared/digest-table.js';
import { transferable, WorkerPool } from '../shared/worker-pool.js';
import type { BlockJob, BlockJobResult as BlockResult } from '../squashfs/block-job.js';
import type { CachePlace } from '../shared/block-cache.js';
import { configRecord, resolveErofsCodec, type ErofsCodec, type ErofsCompressor } from './codec.js';
import { BLOCK_BITS, BLOCK_SIZE, FEATURE_INCOMPAT, NAME_MAX, NULL_ADDR, PCLUSTER_MAX, SUPER_OFFSET, align, encodeSuperblock } from './format.js';
import { Spill } from './spill.js';
import { SerialCalls } from '../shared/serial.js';
import { OutputFile, type OutputAccess } from '../shared/output-file.js';
import { compareRecs, decodeExtents, encodeExtents, inodeKey, recCodec, usage, writeTree, type Extent, type FileData, type Rec, type Run } from './tree.js';

export type { ErofsCompressor };

export interface ErofsOptions {
  /** 'none', 'lz4' (the vendored liblz4) or 'zstd'. */
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
  /** Where the entry sorters spill past their budget (the store's tmp/); default the system's. */
  scratchDir?: string;
  /**
   * About how many files will be added (the plan's count): the dedup index is sized for them
   * once instead of growing as they come. Only memory depends on it, never the bytes.
   */
  expectedFiles?: number;
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
/** Queued between data writes that do not meet (queueData); never changed. */
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** A compressed file's extents on their way through the queue: settled when the last is placed. */
interface ExtentRun {
  entry: LayerEntry;
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

const badOption = (msg: string, hint: string) => new StrataError(IMAGE_ERR.OPTIONS, msg, { hint });

let zeros = Buffer.alloc(0);
function isZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = Buffer.alloc(Math.max(b.length, BLOCK_SIZE));
  return Buffer.from(b.buffer, b.byteOffset, b.length).equals(zeros.subarray(0, b.length));
}


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
  /** Every entry, files once their data is placed: read back in inode order at finish() (tree.ts). */
  private readonly records: SpillSorter<Rec>;
  /** Hard links as added: path → the path it names. */
  private readonly links = new Map<string, string>();
  private readonly pool: WorkerPool<BlockJob, BlockResult> | undefined;
  /** The group (layer) of the file being written: where its extents are filed in the block cache. */
  private group = 'strata-metadata';
  private groupGid: number | undefined;
  private readonly maxInFlight: number;
  private readonly queue: Job[] = [];
  /** Next free byte of the data area (always a block boundary between writes). */
  private pos = BLOCK_SIZE;
  private readonly calls = new SerialCalls(() => this.checkOpen());
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
  /** The first compressed file of each distinct content, by its identity (ExtentRun.digests): where its extents are in `extentStore`. */
  private readonly firstFiles: DigestTable;
  private readonly extentStore: Spill;
  private readonly scratchDir: string;

  /** Where the last queued data write ends (queueData). */
  private queuedEnd: number | undefined;

  private constructor(
    private readonly out: OutputFile,
    private readonly codec: ErofsCodec,
    private readonly extentSize: number,
    threads: number,
    cacheDir: string | undefined,
    cacheSecret: Uint8Array | undefined,
    scratchDir: string,
    expectedFiles: number,
  ) {
    this.firstFiles = new DigestTable(expectedFiles);
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
    this.spill = new Spill(`${out.tmpPath}.tails`, SPILL_MEMORY);
    this.extentStore = new Spill(`${out.tmpPath}.extents`, SPILL_MEMORY);
    this.scratchDir = scratchDir;
    this.records = new SpillSorter<Rec>({ compare: compareRecs, codec: recCodec, dir: scratchDir });
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
      return new ErofsWriter(out, codec, extentSize, workers, opts.cacheDir, opts.cacheSecret, opts.scratchDir ?? os.tmpdir(), opts.expectedFiles ?? 0);
    } catch (e) {
      await out.abort();
      throw e;
    }
  }

  private check(): void {
    this.calls.throwIfFailed();
    this.checkOpen();
  }

  private checkOpen(): void {
    if (this.closed || this.finishing) throw usage('the EROFS writer is already finished or aborted');
  }

  /**
   * Queues a write of the data area at `at`, at or past the end of the last one (`b` must not
   * change until it is written). The few bytes between the two (a compressed pcluster's zero
   * padding, the end of a plain one) are queued as zeros, so the data goes to the file in
   * runs of a megabyte (shared/output-file.ts) instead of a write per extent.
   */
  private async queueData(b: Uint8Array, at: number): Promise<void> {
    const end = this.queuedEnd;
    if (end !== undefined && at > end && at - end <= BLOCK_SIZE) await this.out.queueWrite(ZERO_BLOCK.subarray(0, at - end), end);
    await this.out.queueWrite(b, at);
    this.queuedEnd = at + b.length;
  }

  /** Checks what can be checked of one entry alone; the tree is checked at finish(). */
  private checkEntry(entry: LayerEntry): void {
    const name = entry.path === '.' ? '.' : baseName(entry.path);
    if (Buffer.byteLength(name) > NAME_MAX) throw usage(`name longer than ${NAME_MAX} bytes: ${entry.path}`);
  }

  private push(entry: LayerEntry, data?: FileData): void {
    const rec: Rec = { key: inodeKey(entry.path, entry.type === 'dir'), entry };
    if (data) rec.data = data;
    this.records.push(rec);
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
    return this.calls.run(async () => {
      this.group = group;
      this.groupGid = opts.cacheGid;
      await this.streamFile(entry, content, origin);
    });
  }

  private async streamFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, origin: number | undefined): Promise<void> {
    if (entry.type !== 'file') throw usage(`addFile needs a regular file, got ${entry.type}: ${entry.path}`);
    if (entry.path === '.') throw usage('the image root must be a directory');
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw usage(`${entry.path}: size ${entry.size} is invalid`);
    const compressed = this.pool !== undefined && entry.size >= BLOCK_SIZE;
    const data: FileData = compressed
      ? { kind: 'z', size: entry.size, extents: [] }
      : { kind: 'flat', size: entry.size, runs: [], tailZero: false };
    this.checkEntry(entry);
    // Compressed files are cut into extents (buffers handed to the pool); flat files go
    // through one reused staging buffer, written a run of non-zero blocks at a time.
    const unit = data.kind === 'z' ? Math.min(this.extentSize, align(entry.size, BLOCK_SIZE)) : STAGE;
    let buf = data.kind === 'z' ? this.takeExtentBuffer(unit) : this.stage;
    let fill = 0;
    let total = 0;
    let extents = 0;
    const run: ExtentRun | undefined =
      data.kind === 'z' ? { entry, data, digests: createHash('sha256').update(`${entry.size}\0`), pending: 0, ended: false, start: 0, zeroWrites: 0 } : undefined;
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
    this.push(entry, data);
  }

  /** Whole blocks of a flat file: all-zero blocks become holes, runs of others are written. */
  private async writeFlat(data: Extract<FileData, { kind: 'flat' }>, blocks: Buffer): Promise<void> {
    let runStart = 0;
    const writeRun = async (end: number): Promise<void> => {
      if (end <= runStart) return;
      const at = this.pos;
      await this.queueData(Buffer.from(blocks.subarray(runStart, end)), at); // a copy: the staging buffer is reused
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
        let queued = false;
        try {
          queued = await this.placeExtent(run.data, r, raw, len, lclusters);
        } finally {
          if (!queued) this.spareExtent(r.raw);
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
    const key = run.digests.digest();
    const first = this.firstFiles.get(key);
    if (!first) {
      const ref = await this.extentStore.append(encodeExtents(run.data.extents));
      if (ref.off + ref.len <= 0xffffffff) this.firstFiles.set(key, ref.off, ref.len);
    } else if (this.zeroWrites === run.zeroWrites) {
      this.out.discardFrom(run.start);
      await this.out.fh.truncate(run.start);
      this.pos = run.start;
      this.queuedEnd = undefined;
      run.data.extents = decodeExtents(await this.extentStore.read({ off: first[0], len: first[1] }));
    }
    this.push(run.entry, run.data);
  }

  /**
   * Where an extent's bytes go: a shared zero pcluster, one compressed pcluster, or plain
   * blocks. True when the raw block itself was queued to be written (it must not be reused).
   */
  private async placeExtent(data: Extract<FileData, { kind: 'z' }>, r: BlockResult, raw: Buffer, len: number, lclusters: number): Promise<boolean> {
    if (r.kind === 'sparse') {
      data.extents.push({ lclusters, ...(await this.zeroExtent(len, lclusters)) });
      return false;
    }
    const blocks = Math.ceil(r.data.length / BLOCK_SIZE);
    const at = this.pos;
    if (r.kind === 'compressed' && blocks < lclusters) {
      // Zero padding in front (ZERO_PADDING): the payload ends at the pcluster's end.
      await this.queueData(r.data, at + blocks * BLOCK_SIZE - r.data.length);
      this.pos += blocks * BLOCK_SIZE;
      data.extents.push({ lclusters, plain: false, pblk: at / BLOCK_SIZE, blocks });
      return false;
    }
    const back = r.raw ? Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength) : raw;
    await this.queueData(r.kind === 'raw' ? r.data : back.subarray(0, len), at);
    this.pos += lclusters * BLOCK_SIZE;
    data.extents.push({ lclusters, plain: true, pblk: at / BLOCK_SIZE, blocks: lclusters });
    return true;
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
        await this.queueData(c, at + blocks * BLOCK_SIZE - c.length);
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
      await this.queueData(Buffer.alloc(BLOCK_SIZE), this.pos);
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
    this.checkEntry(entry);
    if (entry.type === 'hardlink') this.links.set(entry.path, entry.linkname!);
    this.push(entry);
  }

  /** Writes directories, shared xattrs, inodes and the superblock; renames into place. */
  async finish(): Promise<ErofsResult> {
    this.check();
    this.finishing = true;
    try {
      await this.calls.settled();
      this.calls.throwIfFailed();
      while (this.queue.length > 0) await this.writeHead();
      await this.pool?.close();
      this.firstFiles.release(); // every file is placed: the metadata needs the memory more
      const r = await this.writeMetadata();
      this.closed = true;
      await this.release();
      return r;
    } catch (e) {
      this.calls.fail(e);
      await this.abort();
      throw e;
    }
  }

  /** Stops the workers and removes the partial output. Safe to call more than once. */
  async abort(): Promise<void> {
    this.closed = true;
    await this.pool?.close();
    await this.out.abort();
    await this.release().catch(() => undefined);
  }

  private async release(): Promise<void> {
    this.records.dispose();
    await this.spill.close();
    await this.extentStore.close();
  }

  /** Directories, shared xattrs and inodes after the data (tree.ts), then the superblock; renames into place. */
  private async writeMetadata(): Promise<ErofsResult> {
    const tree = await writeTree({
      records: this.records,
      links: this.links,
      tails: this.spill,
      scratchDir: this.scratchDir,
      pos: this.pos,
      alg: this.codec.alg,
      zeroBlock: this.zeroBlock,
      write: (b, at) => this.out.writeAll(b, at),
    });
    let incompat = 0;
    let u1 = 0;
    let cfg: Buffer | undefined;
    if (this.codec.spec) {
      incompat |= FEATURE_INCOMPAT.ZERO_PADDING | FEATURE_INCOMPAT.COMPR_CFGS;
      u1 = 1 << this.codec.alg;
      cfg = configRecord(this.codec, this.extentSize);
    }
    if (tree.usedChunks) incompat |= FEATURE_INCOMPAT.CHUNKED_FILE;
    const sb = encodeSuperblock({
      featureCompat: 0,
      blkszbits: BLOCK_BITS,
      extslots: 0,
      rootNid: tree.rootNid,
      inos: BigInt(tree.inodes),
      buildTime: BigInt(tree.buildTime),
      buildTimeNsec: 0,
      blocks: tree.end / BLOCK_SIZE,
      metaBlkaddr: tree.metaBlkaddr,
      xattrBlkaddr: tree.xattrBlkaddr,
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
    await this.out.writeAll(Buffer.concat(head), SUPER_OFFSET);
    await this.out.setLength(tree.end, tree.end);
    const sha256 = await this.out.commit();
    return { bytes: tree.end, sha256, inodes: tree.inodes, cacheHits: this.hits, cacheMisses: this.misses };
  }
}

/** Bytes of file tails and extent lists held in memory before they go to a temp file beside the image. */
const SPILL_MEMORY = 4 << 20;

/** Appends `count` blocks from `addr` (NULL_ADDR: holes) to a run list, merging with the last run. */
function addRun(runs: Run[], addr: number, count: number): void {
  const last = runs[runs.length - 1];
  if (last && ((addr === NULL_ADDR && last.addr === NULL_ADDR) || (addr !== NULL_ADDR && last.addr !== NULL_ADDR && last.addr + last.count === addr))) {
    last.count += count;
  } else runs.push({ addr, count });
}


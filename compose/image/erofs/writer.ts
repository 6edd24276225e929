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
import { SpillSorter, type LayerEntry } from '../../../store/index.js';
import { blocksInFlight, makeCodec, type Codec } from '../shared/codecs.js';
import { DigestTable } from '../shared/digest-table.js';
import { WorkerPool } from '../shared/worker-pool.js';
import { blockNamespace, type BlockJob, type BlockJobResult as BlockResult } from '../squashfs/block-job.js';
import { agrees, BuildSegments, MetaChunks, MetaCursor, SEGMENT_MAX_FILES, SegmentCache, type FoundSegment } from '../shared/segment-cache.js';
import type { CachePlace } from '../shared/block-cache.js';
import { configRecord, resolveErofsCodec, type ErofsCodec, type ErofsCompressor } from './codec.js';
import { BLOCK_BITS, BLOCK_SIZE, FEATURE_INCOMPAT, NAME_MAX, NULL_ADDR, PCLUSTER_MAX, SUPER_OFFSET, align, encodeSuperblock } from './format.js';
import { Spill } from './spill.js';
import { SerialCalls } from '../shared/serial.js';
import { checkFileEntry, checkName, checkOtherEntry, inputError as usage } from '../shared/entry-rules.js';
import { OutputFile, type OutputAccess } from '../shared/output-file.js';
import { compareLinks, compareRecs, decodeExtents, encodeExtents, inodeKey, linkCodec, recCodec, writeTree, type Extent, type FileData, type LinkRec, type Rec, type Run, type TreeResult } from './tree.js';

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
  /**
   * Use segments of earlier builds (default true; they are still recorded when false): a
   * build retried after a damaged segment passes false.
   */
  useSegments?: boolean;
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
  /** Groups placed whole from segments of an earlier build (beginGroup); their extents count as hits. */
  segmentHits: number;
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
  /** The file as its group's segment records it (when the group is being recorded). */
  rec?: SegmentFile;
}

/** What an extent's pblk is, for a segment: the group's own blocks, none, or a shared zero pcluster or block. */
const enum Tag {
  Own = 0,
  Null = 1,
  ZeroBlock = 2,
  ZeroPcluster = 3,
}

/**
 * A file of a recorded group, in addFile order: its data (positions still absolute), the
 * tags of its extents, its identity and what the dedup lookup of it answered (compressed
 * files). Flat files' tails go into the segment's extra part, in the same order.
 */
interface SegmentFile {
  data: FileData;
  tags?: number[];
  /** Zero pcluster lengths, for extents tagged ZeroPcluster, in order. */
  lens?: number[];
  key?: Buffer;
  /** own: the first with its content (its extents recorded for later files); cut: points at the first's extents; kept: found but kept (a shared zero pcluster was written among its extents). */
  first?: 'own' | 'cut' | 'kept';
  done: boolean;
}

/** The first use of a shared zero pcluster (by length) or of the zero block in a group: whether the group wrote it. */
interface ZeroUse {
  len: number | undefined;
  own: boolean;
  /** Written by the group: its block from the group's start, and (pcluster) its blocks, or plain: it is the zero block. */
  rel?: number;
  blocks?: number;
  plain?: boolean;
}

/** A group being recorded as a segment (SquashFS's Recording, with what EROFS shares between groups). */
interface Recording {
  key: Buffer;
  group: string;
  gid: number | undefined;
  start: number;
  /** Where the group's tails start in the tail store (they are appended in file order). */
  tailStart: number;
  blocksBefore: number;
  count: number;
  waiting: SegmentFile[];
  meta: MetaChunks;
  zeros: ZeroUse[];
  /** Zero objects (a length, or 'block') whose first use the group has recorded. */
  zeroSeen: Set<number | 'block'>;
  ownFirsts: number;
  ownExtentBytes: number;
}

/** A recorded group's meta is held until the group ends: past this the group is not recorded. */
const SEGMENT_META_MAX = 16 << 20;

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
  /** Hard links as added: grouped at finish() (tree.ts). */
  private readonly links: SpillSorter<LinkRec>;
  private readonly pool: WorkerPool<BlockJob, BlockResult> | undefined;
  /** The group (layer) of the file being written: where its extents are filed in the block cache ('' before the first). */
  private group = '';
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

  /** Segments of groups (shared/segment-cache.ts): only with a cache and this user's secret. */
  private readonly segments: BuildSegments | undefined;
  private recording: Recording | undefined;

  private constructor(
    private readonly out: OutputFile,
    private readonly codec: ErofsCodec,
    private readonly extentSize: number,
    threads: number,
    cacheDir: string | undefined,
    cacheSecret: Uint8Array | undefined,
    scratchDir: string,
    expectedFiles: number,
    useSegments: boolean,
  ) {
    this.firstFiles = new DigestTable(expectedFiles);
    if (cacheDir !== undefined && cacheSecret !== undefined) {
      // Beside the layer's cached extents (the same namespace), or a plain one for uncompressed images.
      const namespace = codec.spec ? blockNamespace(makeCodec(codec.spec), extentSize) : 'strata-erofs-plain-v1\0';
      const base = `strata-erofs-segment-v1\0${namespace}\0${extentSize}\0${codec.alg}\0${BLOCK_SIZE}\0`;
      this.segments = new BuildSegments(new SegmentCache(cacheDir, namespace, cacheSecret), base, useSegments);
    }
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
    this.maxInFlight = codec.spec ? blocksInFlight(codec.spec, threads, extentSize) : 64;
    // The tails are read back in sequence, by one reader at a time (a group's extra part, the metadata pass).
    this.spill = new Spill(`${out.tmpPath}.tails`, SPILL_MEMORY, true);
    this.extentStore = new Spill(`${out.tmpPath}.extents`, SPILL_MEMORY);
    this.scratchDir = scratchDir;
    this.records = new SpillSorter<Rec>({ compare: compareRecs, codec: recCodec, dir: scratchDir });
    this.links = new SpillSorter<LinkRec>({ compare: compareLinks, codec: linkCodec, dir: scratchDir });
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
      return new ErofsWriter(out, codec, extentSize, workers, opts.cacheDir, opts.cacheSecret, opts.scratchDir ?? os.tmpdir(), opts.expectedFiles ?? 0, opts.useSegments ?? true);
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

  /** Adds an entry's record (with its file data) to the records the tree is written from. */
  private push(entry: LayerEntry, data?: FileData): void {
    const rec: Rec = { key: inodeKey(entry.path, entry.type === 'dir'), entry };
    if (data) rec.data = data;
    this.records.push(rec);
  }

  /**
   * Streams a regular file's data into the image now, in call order (calls are serialized
   * even if the caller does not await). `content` must yield exactly entry.size bytes.
   * `group` (the layer a file comes from) files its extents in the block cache (`opts` of a
   * group's first file apply to it); EROFS packs no data of two files into one block, so it
   * does not change the bytes. `origin`, when
   * given, is where `content` starts in the content `group` names (the file's offset in its
   * layer's tar): extents are then cached by position (shared/block-cache.ts).
   */
  addFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string, opts: ErofsFileOptions = {}, origin?: number): Promise<void> {
    return this.calls.run(async () => {
      if (group !== this.group) await this.switchGroup(group, opts, undefined);
      await this.streamFile(entry, content, origin);
    });
  }

  /**
   * Starts group `group` (its files then come through addFile with the same group; `opts`
   * apply to all of them). `identity`: the caller's key for everything that decides what the
   * group adds to the image given what came before it (for a layer: its CID, its entry list,
   * and which of its files, in order, the image takes), or undefined when it has none. As
   * SquashfsWriter.beginGroup: groups with an identity are recorded as segments (with a cache
   * and the user's secret), and a later build places such a group from its segment wherever
   * it now starts, when everything the group shares with the groups before it (the contents
   * it deduplicated against, the shared zero pclusters and block) is as it was: then this
   * returns true, `files()` gives the group's entries as addFile would have had them, in the
   * same order, and none of the group's files may be added. False: add them as usual.
   */
  beginGroup(group: string, opts: ErofsFileOptions, identity: string | undefined, files: () => Iterable<LayerEntry>): Promise<boolean> {
    return this.calls.run(() => this.switchGroup(group, opts, identity, files));
  }

  /** Ends the open group's recording and opens `group`: from its segment when one fits (true). The same group again goes on, unrecorded. */
  private async switchGroup(group: string, opts: ErofsFileOptions, identity: string | undefined, files?: () => Iterable<LayerEntry>): Promise<boolean> {
    if (group === this.group) {
      this.recording = undefined;
      return false;
    }
    await this.endRecording();
    this.group = group;
    this.groupGid = opts.cacheGid;
    if (identity === undefined || this.segments === undefined) return false;
    // The group starts where everything before it ended.
    while (this.queue.length > 0) await this.writeHead();
    const { key, placed } = await this.segments.begin(identity, group, (found) => this.placeSegment(found, files!));
    if (placed) return true;
    this.recording = {
      key,
      group,
      gid: opts.cacheGid,
      start: this.pos,
      tailStart: this.spill.size,
      blocksBefore: this.hits + this.misses,
      count: 0,
      waiting: [],
      meta: new MetaChunks(),
      zeros: [],
      zeroSeen: new Set(),
      ownFirsts: 0,
      ownExtentBytes: 0,
    };
    return false;
  }

  /** Ends the group being recorded: once all of it is written, its segment is saved (in the background). */
  private async endRecording(): Promise<void> {
    const r = this.recording;
    if (!r) return;
    while (this.queue.length > 0) await this.writeHead();
    if (this.recording !== r) return; // given up while its last extents were placed
    this.recording = undefined;
    if (r.waiting.length > 0) throw new Error('EROFS writer: a recorded file was not placed by the end of its group');
    // The group's range ends at pos. Past its last write, the bytes are zeros in any build
    // (the next write fills the gap, or it stays a hole): written here so the range can be read.
    const end = this.queuedEnd;
    if (end !== undefined && end < this.pos) {
      if (this.pos - end > BLOCK_SIZE) return;
      await this.queueData(ZERO_BLOCK.subarray(0, this.pos - end), end);
    }
    await this.out.flush();
    if (this.pos > r.start && (await this.out.fh.stat()).size < this.pos) return; // a hole at the end (a dropped file's): not recorded
    const meta = encodeSegmentMeta(r, this.pos - r.start, this.hits + this.misses - r.blocksBefore);
    const seg = await this.segments!.create(r.group, r.gid, r.key);
    if (!seg) return;
    // The group's tails are its extra part: read from the tail store now, before anything more is appended to it.
    await this.spill.readRange(r.tailStart, this.spill.size - r.tailStart, (piece) => seg.appendExtra(piece)).catch(async (e: unknown) => {
      await seg.abandon();
      throw e;
    });
    this.segments!.saving(seg.finish(meta, this.out.fh, r.start, this.pos - r.start));
  }

  /** One file of the group being recorded is placed: files are encoded in addFile order as they are done. */
  private filePlaced(rec: SegmentFile | undefined): void {
    const r = this.recording;
    if (!rec || !r) return;
    rec.done = true;
    while (r.waiting.length > 0 && r.waiting[0]!.done) encodeSegmentFile(r.meta, r.waiting.shift()!, r.start / BLOCK_SIZE);
    if (r.meta.length > SEGMENT_META_MAX) this.recording = undefined;
  }

  /**
   * Places a group from its segment when it fits: its files are the group's, and every lookup
   * the group made of what groups before it left (a file's content among the first files, the
   * shared zero block and zero pclusters) answers now as it did when it was recorded. Then the
   * group's bytes are what a build of it here would write, only at another position: the
   * writer's state moves past the group at once (its own blocks relocated, what it found
   * taken from the writer's state), and the bytes are copied into the image while the writer
   * goes on (finish() waits for them, and fails with ERR_SEGMENT_DAMAGED if they were not the
   * sealed ones). False: nothing of the writer's state changed.
   */
  private async placeSegment(found: FoundSegment, files: () => Iterable<LayerEntry>): Promise<boolean> {
    const m = decodeSegmentMeta(found.meta);
    if (!m || m.length !== found.length) return false;
    // The tables take keys up to their limits; a group whose own keys would not fit is built.
    if (this.firstFiles.size + m.ownFirsts > DigestTable.MAX_KEYS || this.extentStore.size + m.ownExtentBytes > 0xffffffff) return false;
    for (const z of m.zeros) {
      const there = z.len === undefined ? this.zeroBlock !== NULL_ADDR : this.zeroPcluster.has(z.len);
      if (z.own === there) return false;
    }
    const entries: LayerEntry[] = [];
    const local = new DigestTable(m.ownFirsts);
    for (const entry of files()) {
      const f = m.files[entries.length];
      if (!f || entry.type !== 'file' || entry.size !== f.data.size) return false;
      if (f.key && !agrees(f.first === 'own', f.key, local, (d) => this.firstFiles.has(d))) return false;
      checkName(entry, NAME_MAX);
      entries.push(entry);
    }
    if (entries.length !== m.files.length) return false;
    let tails = 0;
    for (const f of m.files) if (f.data.kind === 'flat' && f.data.tail) tails += f.data.tail.len;
    if (tails !== found.extraLength) return false;
    // The tails go to the tail store first: if they are not the sealed ones, nothing refers to them.
    const tailBase = this.spill.size;
    if (!(await found.readExtra(async (piece) => void (await this.spill.append(piece))))) return false;
    const start = this.pos;
    const base = start / BLOCK_SIZE;
    this.segments!.place(found, this.out.fh.fd, start);
    for (const z of m.zeros) {
      if (!z.own) continue;
      if (z.len === undefined) {
        this.zeroBlock = base + z.rel!;
        this.zeroWrites++;
      } else if (z.plain) this.zeroPcluster.set(z.len, { pblk: this.zeroBlock, blocks: 1, plain: true });
      else {
        this.zeroPcluster.set(z.len, { pblk: base + z.rel!, blocks: z.blocks!, plain: false });
        this.zeroWrites++;
      }
    }
    let tailAt = tailBase;
    for (let i = 0; i < entries.length; i++) {
      const f = m.files[i]!;
      const d = f.data;
      if (d.kind === 'flat') {
        for (const run of d.runs) if (run.addr !== NULL_ADDR) run.addr += base;
        if (d.tail) {
          d.tail = { off: tailAt, len: d.tail.len };
          tailAt += d.tail.len;
        }
      } else if (f.first === 'cut') {
        const first = this.firstFiles.get(f.key!)!;
        d.extents = decodeExtents(await this.extentStore.read({ off: first[0], len: first[1] }));
      } else {
        let lens = 0;
        d.extents.forEach((x, k) => {
          const tag = f.tags![k];
          if (tag === Tag.Own) x.pblk += base;
          else if (tag === Tag.Null) x.pblk = NULL_ADDR;
          else if (tag === Tag.ZeroBlock) x.pblk = this.zeroBlock;
          else {
            const z = this.zeroPcluster.get(f.lens![lens++]!)!;
            x.pblk = z.pblk;
            x.blocks = z.blocks;
          }
        });
        if (f.first === 'own') {
          const ref = await this.extentStore.append(encodeExtents(d.extents));
          this.firstFiles.set(f.key!, ref.off, ref.len);
        }
      }
      this.push(entries[i]!, d);
    }
    this.pos = start + m.length;
    this.queuedEnd = undefined;
    this.hits += m.blocks;
    return true;
  }

  private async streamFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, origin: number | undefined): Promise<void> {
    checkFileEntry(entry, NAME_MAX);
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw usage(`${entry.path}: size ${entry.size} is invalid`);
    const compressed = this.pool !== undefined && entry.size >= BLOCK_SIZE;
    const data: FileData = compressed
      ? { kind: 'z', size: entry.size, extents: [] }
      : { kind: 'flat', size: entry.size, runs: [], tailZero: false };
    let rec: SegmentFile | undefined;
    const r = this.recording;
    if (r) {
      if (r.count++ >= SEGMENT_MAX_FILES) this.recording = undefined;
      else r.waiting.push((rec = data.kind === 'z' ? { data, tags: [], lens: [], done: false } : { data, done: false }));
    }
    // Compressed files are cut into extents (buffers handed to the pool, each taken when its
    // first byte comes); flat files go through one reused staging buffer, written a run of
    // non-zero blocks at a time.
    const unit = data.kind === 'z' ? Math.min(this.extentSize, align(entry.size, BLOCK_SIZE)) : STAGE;
    let buf: Buffer | undefined = data.kind === 'z' ? undefined : this.stage;
    let fill = 0;
    let total = 0;
    let extents = 0;
    const run: ExtentRun | undefined =
      data.kind === 'z' ? { entry, data, digests: createHash('sha256').update(`${entry.size}\0`), pending: 0, ended: false, start: 0, zeroWrites: 0, ...(rec ? { rec } : {}) } : undefined;
    const flush = async (len: number): Promise<void> => {
      if (data.kind === 'z') {
        const at = origin === undefined ? undefined : origin + extents * unit;
        extents++;
        const raw = buf!.subarray(0, len);
        buf = undefined;
        await this.pushExtent(run!, raw, at);
      } else await this.writeFlat(data, buf!.subarray(0, len - (len % BLOCK_SIZE)));
      fill = 0;
    };
    for await (const chunk of content) {
      total += chunk.length;
      if (total > entry.size) throw usage(`${entry.path}: content is longer than its size ${entry.size}`);
      let off = 0;
      while (off < chunk.length) {
        const n = Math.min(unit - fill, chunk.length - off);
        buf ??= this.takeExtentBuffer();
        buf.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === unit) await flush(unit);
      }
    }
    if (total !== entry.size) throw usage(`${entry.path}: content is ${total} bytes, its entry says ${entry.size}`);
    if (data.kind === 'z') {
      if (fill > 0) await flush(fill);
      run!.ended = true;
      if (run!.pending === 0) await this.settleExtents(run!);
      return;
    }
    const whole = fill - (fill % BLOCK_SIZE);
    if (whole > 0) await this.writeFlat(data, buf!.subarray(0, whole));
    if (fill > whole) {
      const tail = buf!.subarray(whole, fill);
      data.tailZero = isZero(tail);
      data.tail = await this.spill.append(tail);
    }
    this.push(entry, data);
    this.filePlaced(rec);
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

  /** A buffer of the extent size that owns its whole ArrayBuffer (it moves to a worker): a spare one if there is. */
  private takeExtentBuffer(): Buffer {
    return this.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(this.extentSize);
  }

  /** Keeps an extent's buffer (whole, also when `b` views only its first bytes) for reuse. */
  private spareExtent(b: Uint8Array | undefined): void {
    const ab = b?.buffer;
    if (ab instanceof ArrayBuffer && ab.byteLength === this.extentSize && this.spareBuffers.length < this.maxInFlight) {
      this.spareBuffers.push(Buffer.from(ab, 0, ab.byteLength));
    }
  }

  /**
   * One extent of a compressed file: compressed in the pool, written in queue order. `raw`
   * views the first bytes of a buffer of its own (takeExtentBuffer), which moves to the worker
   * with it, a file's last extent too: posted as a view of part of a buffer not transferred,
   * the whole buffer was copied to the worker and back, 128 KiB of fresh memory for each
   * compressed file's tail.
   */
  private async pushExtent(run: ExtentRun, raw: Buffer, at: number | undefined): Promise<void> {
    const lclusters = Math.ceil(raw.length / BLOCK_SIZE);
    const len = raw.length;
    const first = run.pending === 0 && run.data.extents.length === 0;
    run.pending++;
    const place: CachePlace = { tag: this.group };
    if (this.groupGid !== undefined) place.gid = this.groupGid;
    if (at !== undefined) place.at = at;
    const p = this.pool!.run({ raw, allowSparse: true, place }, [raw.buffer as ArrayBuffer]);
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
          queued = await this.placeExtent(run.data, r, raw, len, lclusters, run.rec);
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
    const rec = run.rec;
    if (rec) rec.key = key;
    if (!first) {
      const ref = await this.extentStore.append(encodeExtents(run.data.extents));
      const taken = ref.off + ref.len <= 0xffffffff && this.firstFiles.size < DigestTable.MAX_KEYS;
      if (taken) this.firstFiles.set(key, ref.off, ref.len);
      if (rec && this.recording) {
        // A content the table could not take: later files' answers depend on more than the contents before them.
        if (!taken) this.recording = undefined;
        else {
          rec.first = 'own';
          this.recording.ownFirsts++;
          this.recording.ownExtentBytes += ref.len;
        }
      }
    } else if (this.zeroWrites === run.zeroWrites) {
      this.out.discardFrom(run.start);
      await this.out.fh.truncate(run.start);
      this.pos = run.start;
      this.queuedEnd = undefined;
      run.data.extents = decodeExtents(await this.extentStore.read({ off: first[0], len: first[1] }));
      if (rec) rec.first = 'cut';
    } else if (rec) rec.first = 'kept';
    this.push(run.entry, run.data);
    this.filePlaced(rec);
  }

  /**
   * Where an extent's bytes go: a shared zero pcluster, one compressed pcluster, or plain
   * blocks. True when the raw block itself was queued to be written (it must not be reused).
   */
  private async placeExtent(data: Extract<FileData, { kind: 'z' }>, r: BlockResult, raw: Buffer, len: number, lclusters: number, rec: SegmentFile | undefined): Promise<boolean> {
    if (r.kind === 'sparse') {
      const x = await this.zeroExtent(len, lclusters);
      data.extents.push({ lclusters, ...x });
      if (rec) {
        const tag = lclusters === 1 ? Tag.ZeroBlock : x.pblk === NULL_ADDR ? Tag.Null : Tag.ZeroPcluster;
        rec.tags!.push(tag);
        if (tag === Tag.ZeroPcluster) rec.lens!.push(len);
      }
      return false;
    }
    rec?.tags!.push(Tag.Own);
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
    // The first use of this length in a recorded group: whether the group wrote it (placeSegment).
    const r = this.recording && !this.recording.zeroSeen.has(len) ? this.recording : undefined;
    r?.zeroSeen.add(len);
    if (z) r?.zeros.push({ len, own: false });
    else {
      this.mainCodec ??= makeCodec(this.codec.spec!);
      const c = this.mainCodec.compress(Buffer.alloc(len));
      const blocks = Math.ceil(c.length / BLOCK_SIZE);
      if (blocks < lclusters) {
        const at = this.pos;
        await this.queueData(c, at + blocks * BLOCK_SIZE - c.length);
        this.pos += blocks * BLOCK_SIZE;
        this.zeroWrites++;
        z = { pblk: at / BLOCK_SIZE, blocks, plain: false };
        r?.zeros.push({ len, own: true, rel: z.pblk - r.start / BLOCK_SIZE, blocks });
      } else {
        z = { pblk: await this.sharedZeroBlock(), blocks: 1, plain: true };
        r?.zeros.push({ len, own: true, plain: true });
      }
      this.zeroPcluster.set(len, z);
    }
    return z.plain ? { plain: true, pblk: NULL_ADDR, blocks: lclusters } : { plain: false, pblk: z.pblk, blocks: z.blocks };
  }

  private async sharedZeroBlock(): Promise<number> {
    const r = this.recording && !this.recording.zeroSeen.has('block') ? this.recording : undefined;
    r?.zeroSeen.add('block');
    if (this.zeroBlock === NULL_ADDR) {
      this.zeroBlock = this.pos / BLOCK_SIZE;
      await this.queueData(Buffer.alloc(BLOCK_SIZE), this.pos);
      this.pos += BLOCK_SIZE;
      this.zeroWrites++;
      r?.zeros.push({ len: undefined, own: true, rel: this.zeroBlock - r.start / BLOCK_SIZE });
    } else r?.zeros.push({ len: undefined, own: false });
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
    checkOtherEntry(entry, NAME_MAX);
    if (entry.type === 'hardlink') {
      this.links.push({ key: inodeKey(entry.linkname!, false), path: entry.path, target: entry.linkname!, seq: this.links.count });
    }
    this.push(entry);
  }

  /** Writes directories, shared xattrs, inodes and the superblock; renames into place. */
  async finish(): Promise<ErofsResult> {
    this.check();
    this.finishing = true;
    try {
      await this.calls.settled();
      this.calls.throwIfFailed();
      await this.endRecording();
      while (this.queue.length > 0) await this.writeHead();
      // Segments read the image back: they are written before it is committed.
      await this.segments?.settle();
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
    this.recording = undefined;
    await this.segments?.abandon();
    await this.pool?.close();
    await this.out.abort();
    await this.release().catch(() => undefined);
  }

  private async release(): Promise<void> {
    this.records.dispose();
    this.links.dispose();
    await this.spill.close();
    await this.extentStore.close();
  }

  /**
   * The superblock, then directories, shared xattrs and inodes after the data (tree.ts); renames
   * into place. The superblock needs only the layout, so it is written before the metadata, and
   * the image's sha256 reads back everything before the metadata (the superblock's block and
   * the file data, most of the image) while the metadata is written: commit reads only the rest.
   */
  private async writeMetadata(): Promise<ErofsResult> {
    const dataEnd = this.pos;
    const tree = await writeTree({
      records: this.records,
      links: this.links,
      tails: this.spill,
      scratchDir: this.scratchDir,
      pos: this.pos,
      alg: this.codec.alg,
      zeroBlock: this.zeroBlock,
      write: (b, at) => this.out.writeAll(b, at),
      placed: async (layout) => {
        await this.out.writeAll(this.superblock(layout), SUPER_OFFSET);
        await this.out.hashAhead(dataEnd);
      },
    });
    await this.out.setLength(tree.end, tree.end);
    const sha256 = await this.out.commit();
    return { bytes: tree.end, sha256, inodes: tree.inodes, cacheHits: this.hits, cacheMisses: this.misses, segmentHits: this.segments?.hits ?? 0 };
  }

  /** The superblock of the image `tree` lays out, with the compression configuration after it. */
  private superblock(tree: TreeResult): Buffer {
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
    return Buffer.concat(head);
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


// ---------------------------------------------------------------------------------------
// Segment meta (little-endian): positions in blocks from the group's start.

const META_VERSION = 1;

interface SegmentMeta {
  length: number;
  blocks: number;
  ownFirsts: number;
  ownExtentBytes: number;
  zeros: ZeroUse[];
  files: SegmentFile[];
}

/**
 * One file: flat (its runs, NULL_ADDR kept; its tail's length, the bytes being in the extra part) or compressed (how its
 * content was found, its identity, and unless it points at an earlier file's extents, its
 * extents with their tags).
 */
function encodeSegmentFile(out: MetaChunks, f: SegmentFile, base: number): void {
  const d = f.data;
  if (d.kind === 'flat') {
    const [b, at] = out.room(1 + 8 + 4 + d.runs.length * 8 + 1 + 1 + 4);
    let o = b.writeUInt8(0, at);
    o = b.writeDoubleLE(d.size, o);
    o = b.writeUInt32LE(d.runs.length, o);
    for (const run of d.runs) {
      o = b.writeUInt32LE(run.addr === NULL_ADDR ? NULL_ADDR : run.addr - base, o);
      o = b.writeUInt32LE(run.count, o);
    }
    o = b.writeUInt8(d.tailZero ? 1 : 0, o);
    o = b.writeUInt8(d.tail ? 1 : 0, o);
    b.writeUInt32LE(d.tail?.len ?? 0, o);
    return;
  }
  const extents = f.first === 'cut' ? [] : d.extents;
  const [b, at] = out.room(1 + 8 + 1 + 32 + 4 + extents.length * 14);
  let o = b.writeUInt8(1, at);
  o = b.writeDoubleLE(d.size, o);
  o = b.writeUInt8(f.first === 'own' ? 0 : f.first === 'cut' ? 1 : 2, o);
  o += f.key!.copy(b, o);
  o = b.writeUInt32LE(extents.length, o);
  let lens = 0;
  extents.forEach((x, k) => {
    const tag = f.tags![k]!;
    o = b.writeUInt32LE(x.lclusters, o);
    o = b.writeUInt8(x.plain ? 1 : 0, o);
    o = b.writeUInt8(tag, o);
    o = b.writeUInt32LE(tag === Tag.Own ? x.pblk - base : tag === Tag.ZeroPcluster ? f.lens![lens++]! : 0, o);
    o = b.writeUInt32LE(x.blocks, o);
  });
}

/** The meta: fixed fields, the group's first uses of shared zero data, then its files (encoded as they were placed). */
function encodeSegmentMeta(r: Recording, length: number, blocks: number): Buffer {
  const head = Buffer.alloc(4 + 8 * 2 + 4 + 8 + 4 + r.zeros.length * 15 + 4);
  let o = head.writeUInt32LE(META_VERSION, 0);
  o = head.writeDoubleLE(length, o);
  o = head.writeDoubleLE(blocks, o);
  o = head.writeUInt32LE(r.ownFirsts, o);
  o = head.writeDoubleLE(r.ownExtentBytes, o);
  o = head.writeUInt32LE(r.zeros.length, o);
  for (const z of r.zeros) {
    o = head.writeUInt8(z.len === undefined ? 0 : 1, o);
    o = head.writeUInt8((z.own ? 1 : 0) | (z.plain ? 2 : 0), o);
    o = head.writeUInt32LE(z.len ?? 0, o);
    o = head.writeUInt32LE(z.rel ?? 0, o);
    o = head.writeUInt8(0, o);
    o = head.writeUInt32LE(z.blocks ?? 0, o);
  }
  head.writeUInt32LE(r.count, o);
  return Buffer.concat([head, ...r.meta.all()]);
}

/** The meta as encodeSegmentMeta wrote it; undefined for anything else. */
function decodeSegmentMeta(b: Buffer): SegmentMeta | undefined {
  try {
    const c = new MetaCursor(b);
    if (c.u32() !== META_VERSION) return undefined;
    const length = c.f64();
    const blocks = c.f64();
    const ownFirsts = c.u32();
    const ownExtentBytes = c.f64();
    const zeros: ZeroUse[] = [];
    for (let i = c.u32(); i > 0; i--) {
      const kind = c.u8();
      const flags = c.u8();
      const len = c.u32();
      const rel = c.u32();
      c.u8();
      const zb = c.u32();
      const z: ZeroUse = { len: kind === 0 ? undefined : len, own: (flags & 1) !== 0 };
      if (z.own) Object.assign(z, (flags & 2) !== 0 ? { plain: true } : { rel, blocks: zb });
      zeros.push(z);
    }
    const files: SegmentFile[] = [];
    for (let i = c.u32(); i > 0; i--) {
      const kind = c.u8();
      const size = c.f64();
      if (kind === 0) {
        const runs: Run[] = [];
        for (let n = c.u32(); n > 0; n--) runs.push({ addr: c.u32(), count: c.u32() });
        const tailZero = c.u8() === 1;
        const hasTail = c.u8() === 1;
        const len = c.u32();
        files.push({ data: { kind: 'flat', size, runs, tailZero, ...(hasTail ? { tail: { off: 0, len } } : {}) }, done: true });
      } else if (kind === 1) {
        const first = (['own', 'cut', 'kept'] as const)[c.u8()];
        if (!first) return undefined;
        const key = c.bytes(32);
        const extents: Extent[] = [];
        const tags: number[] = [];
        const lens: number[] = [];
        for (let n = c.u32(); n > 0; n--) {
          const lclusters = c.u32();
          const plain = c.u8() === 1;
          const tag = c.u8();
          const v = c.u32();
          const blocks32 = c.u32();
          if (tag > Tag.ZeroPcluster) return undefined;
          if (tag === Tag.ZeroPcluster) lens.push(v);
          extents.push({ lclusters, plain, pblk: tag === Tag.Own ? v : 0, blocks: blocks32 });
          tags.push(tag);
        }
        files.push({ data: { kind: 'z', size, extents }, tags, lens, key, first, done: true });
      } else return undefined;
    }
    return c.atEnd ? { length, blocks, ownFirsts, ownExtentBytes, zeros, files } : undefined;
  } catch {
    return undefined;
  }
}

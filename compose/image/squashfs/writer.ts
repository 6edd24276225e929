/**
 * strata's SquashFS 4.0 writer: streams file data into the image as it arrives, compresses
 * blocks in worker threads (output order fixed by call order), caches compressed blocks by
 * content, stores identical file content once (by the sha256 of its bytes), and writes the
 * metadata tables at the end (their blocks through the cache too, when given a place for them).
 * No root needed, no wall-clock time.
 * What exactly is written (inode numbering, ordering, fragments, cache key) is specified in
 * spec/squashfs.md; each on-disk structure's layout is in its own file of this folder.
 */
import { createHash, type Hash } from 'node:crypto';
import { sha256Short } from '../../../native/sha256.js';
import os from 'node:os';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { baseName, comparePaths, isBelow, parentOf, decodeEntry, encodeEntry, entrySize, SpillSorter, type LayerEntry, type RecordCodec } from '../../../store/index.js';
import { blocksInFlight, codecVersion, makeCodec, type Codec, type CodecSpec } from '../shared/codecs.js';
import { DigestTable } from '../shared/digest-table.js';
import { OutputFile, type OutputAccess } from '../shared/output-file.js';
import { WorkerPool } from '../shared/worker-pool.js';
import { blockNamespace, type BlockJob, type BlockJobConfig, type BlockJobResult } from './block-job.js';
import { BlockCache, type CachePlace } from '../shared/block-cache.js';
import { compressCached } from '../shared/compress-block.js';
import { agrees, BuildSegments, MetaChunks, MetaCursor, SEGMENT_MAX_FILES, SegmentCache, type FoundSegment } from '../shared/segment-cache.js';
import { SerialCalls } from '../shared/serial.js';
// Entries or calls the writer cannot store: ERR_IMAGE_INPUT.
import { checkFileEntry, checkName, checkOtherEntry, inputError as usage } from '../shared/entry-rules.js';
import { COMPRESSOR, encodeCompressorOptions, squashCodecSpec, type SquashCompressor } from './compressor.js';
import { encodeSizeWord, FRAGMENT_STREAMS, fragmentStream } from './data.js';
import { encodeDirectory, DIR_ENTRY_SIZE, DIR_HEADER_MAX, MAX_NAME, type DirChild } from './directory.js';
import { WideList } from '../shared/wide-list.js';
import { encodeExportTable } from './export-table.js';
import { encodeFragmentTable, type FragmentEntry } from './fragment-table.js';
import { HardLinks, type Placed } from './hard-links.js';
import { IdTable, MAX_IDS } from './id-table.js';
import { basicType, encodeDevice, encodeInode, inodeType, INVALID_FRAG, INVALID_XATTR, type InodeBody } from './inode.js';
import { METADATA_SIZE, METADATA_UNCOMPRESSED, MetaWriter, metaRef } from './metadata.js';
import {
  DEFAULT_BLOCK_SIZE,
  FLAG,
  INVALID_TABLE,
  PAD,
  SUPERBLOCK_SIZE,
  VERSION_MAJOR,
  VERSION_MINOR,
  encodeSuperblock,
  validBlockSize,
} from './superblock.js';
import { splitXattrName, XattrTableWriter, type XattrPair } from './xattr-table.js';

export type { SquashCompressor };

export interface SquashOptions {
  compressor: SquashCompressor;
  /** Default per compressor: gzip 9 (1..9), zstd 15 (1..22); lz4 has none (must be absent). */
  level?: number;
  /** Power of two, 4096..1048576; default 131072. */
  blockSize?: number;
  /** Compression threads; default os.availableParallelism(). Does not change the bytes. */
  workers?: number;
  /** Root of the compressed-block cache (the store's cacheDir); absent = no cache. */
  cacheDir?: string;
  /** The user's cache secret (compose/caches.ts): records sealed with it are trusted as they are. */
  cacheSecret?: Uint8Array;
  /** Superblock mkfs time, seconds; default 0. */
  mkfsTime?: number;
  /** Who may read the finished image file (default: as the umask says). */
  access?: OutputAccess;
  /** A private directory for the entry list once it outgrows memory (default: the OS temp dir). */
  scratchDir?: string;
  /**
   * Use segments of earlier builds (default true; they are still recorded when false): a
   * build found ERR_SEGMENT_DAMAGED is done again with false.
   */
  useSegments?: boolean;
  /**
   * About how many files will be added (the plan's count): the dedup index is sized for them
   * once instead of growing as they come. Only memory depends on it, never the bytes.
   */
  expectedFiles?: number;
  /**
   * Where the blocks of the image's own tables (inodes, directories and the rest) are filed in
   * the block cache, by content; with `gid`, readable only by that group (the tables name every
   * path of the image). Absent, or without a cacheDir: compressed every time.
   */
  tables?: TablePlace;
}

/** Where a writer files its tables' blocks: a tag of the cache and, for restricted content, a group. */
export type TablePlace = Pick<CachePlace, 'tag' | 'gid'>;

/**
 * The namespace of table blocks in the block cache (shared/block-cache.ts): everything that
 * decides a metadata block's compressed bytes besides its raw bytes.
 */
export function tableNamespace(codec: Pick<Codec, 'name' | 'version' | 'level'>): string {
  return `strata-squashfs-table-v1\0${codec.name}\0${codec.version}\0${codec.level}\0`;
}

export interface SquashResult {
  /** Image size on disk (padded to 4096). */
  bytes: number;
  /** sha256 (hex) of the image file, read back from the file as it was synced, before it was renamed into place. */
  sha256: string;
  inodes: number;
  cacheHits: number;
  cacheMisses: number;
  /** Groups placed whole from segments of an earlier build (beginGroup); their blocks count as hits. */
  segmentHits: number;
}

/** How the blocks of a group's files are cached. */
export interface GroupOptions {
  /** Cache records of this group's blocks are readable only by this group (restricted content). */
  cacheGid?: number;
}

interface FileData {
  size: number;
  blocksStart: number;
  sizes: number[];
  sparse: number;
  fragIndex: number;
  fragOffset: number;
}

/** A file's data in flight: its record goes to the entry list when blocks and tail are both placed. */
interface PendingFile {
  entry: LayerEntry;
  fd: FileData;
  /** Parts not yet placed: the full blocks (settled) and the tail. */
  open: number;
  /** The file as its group's segment records it (when the group is being recorded). */
  rec?: SegmentFile;
}

/**
 * A file of a recorded group: where its data is, and the dedup keys it looked up, each with
 * whether the file stored that content itself (the first with it) or found it stored before.
 * A build placing the group needs the same answers for every key to write the same bytes.
 */
interface SegmentFile {
  fd: FileData;
  /** The identity of its run of full blocks (when it has one), and whether it stored the run. */
  run?: Buffer;
  ownRun?: boolean;
  /** The sha256 of its tail (when it has one), and whether it packed the tail. */
  tail?: Buffer;
  ownTail?: boolean;
  /** All of it placed (then it is encoded, in order, and let go). */
  done?: boolean;
}

/**
 * A group being recorded as a segment: where it started, and its files, encoded in order as
 * each is placed (files are placed in order but for a few small ones ahead of a large one's
 * blocks, which wait in `waiting`): memory is the meta's bytes, not an object per file.
 */
interface Recording {
  key: Buffer;
  group: string;
  gid: number | undefined;
  start: number;
  fragStart: number;
  /** hits + misses when the group began. */
  blocksBefore: number;
  /** Files added to the group so far. */
  count: number;
  /** Tails the group packed (keys it added to the tail table). */
  ownTails: number;
  waiting: SegmentFile[];
  meta: MetaChunks;
}

/** A file's full blocks on their way through the queue: settled when the last one is written. */
interface BlockRun {
  file: PendingFile;
  /** sha256 over the sha256 of each block, in order: the identity of the run. */
  digests: Hash;
  /** Blocks pushed and not yet written. */
  pending: number;
  /** All blocks pushed (the content ended). */
  ended: boolean;
}

/** A fragment block being filled: its index, taken when it opened, and its stream. */
interface OpenFragment {
  index: number;
  data: Buffer;
  used: number;
  stream: number;
}

/** One entry of the image as finish() reads it back, in path order. */
interface Rec {
  entry: LayerEntry;
  file?: FileData;
}

const recCodec: RecordCodec<Rec> = {
  encode: (r) => encodeEntry(r.entry, r.file ? [r.file.size, r.file.blocksStart, r.file.sizes, r.file.sparse, r.file.fragIndex, r.file.fragOffset] : undefined),
  decode: (b) => {
    const { entry, extra } = decodeEntry(b);
    if (extra === undefined) return { entry };
    const [size, blocksStart, sizes, sparse, fragIndex, fragOffset] = extra as [number, number, number[], number, number, number];
    return { entry, file: { size, blocksStart, sizes, sparse, fragIndex, fragOffset } };
  },
  size: (r) => entrySize(r.entry) + (r.file ? 64 + r.file.sizes.length * 8 : 0),
};

/** A child of an open directory in its queue (WideList): ino, inode block, offset, type, name. */
const dirChildCodec: RecordCodec<DirChild> = {
  encode: (c) => {
    const b = Buffer.allocUnsafe(12 + c.name.length);
    b.writeUInt32LE(c.ino, 0);
    b.writeUInt32LE(c.refBlock, 4);
    b.writeUInt16LE(c.refOffset, 8);
    b.writeUInt16LE(c.basicType, 10);
    c.name.copy(b, 12);
    return b;
  },
  decode: (b) => ({ ino: b.readUInt32LE(0), refBlock: b.readUInt32LE(4), refOffset: b.readUInt16LE(8), basicType: b.readUInt16LE(10), name: Buffer.from(b.subarray(12)) }),
  size: (c) => 96 + c.name.length,
};

const DEFAULT_ROOT: LayerEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };

/** Writer options out of range (ERR_IMAGE_OPTIONS). */
const badOption = (msg: string, hint: string) => new StrataError(IMAGE_ERR.OPTIONS, msg, { hint });

function nameOf(p: string): Buffer {
  return Buffer.from(baseName(p));
}

function clampTime(t: number): number {
  if (!Number.isFinite(t) || t < 0) return 0;
  return Math.min(Math.floor(t), 0xffffffff);
}

/** Validates writer options and fills in defaults. Throws ERR_IMAGE_OPTIONS with a hint. */
export function checkSquashOptions(opts: SquashOptions): { spec: CodecSpec; blockSize: number; workers: number; mkfsTime: number } {
  const spec = squashCodecSpec(opts.compressor, opts.level);
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!validBlockSize(blockSize)) {
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
  /** Every entry, files once placed: sorted by path at finish(), spilled past its budget. */
  private readonly records: SpillSorter<Rec>;
  /** Hard links as added (none: nothing of them is kept or read). */
  private links: HardLinks | undefined;
  private readonly pool: WorkerPool<BlockJob, BlockJobResult>;
  private readonly maxInFlight: number;
  private readonly queue: { p: Promise<BlockJobResult>; done: (start: number, word: number, digest: Uint8Array) => void }[] = [];
  private pos: number;
  private readonly calls = new SerialCalls(() => this.checkOpen());
  private closed = false;
  private finishing = false;
  private hits = 0;
  private misses = 0;
  private group: string | undefined;
  private groupOpts: GroupOptions = {};
  /** The open fragment block of each stream (data.ts, fragmentStream). */
  private readonly openFrags: (OpenFragment | undefined)[] = new Array(FRAGMENT_STREAMS).fill(undefined);
  /** By fragment index; an open block's entry is set once it is written. */
  private readonly frags: FragmentEntry[] = [];
  private fragCount = 0;
  /** Block buffers handed back by the workers, reused so memory stays flat on huge files. */
  private readonly spare: Buffer[] = [];
  /** Where each distinct run of full blocks is, by the run's identity (BlockRun.digests). */
  private readonly blockRuns = new Map<string, Pick<FileData, 'blocksStart' | 'sizes' | 'sparse'>>();
  /** Where each distinct tail is, by the tail's sha256. */
  private readonly tails: DigestTable;
  /** Segments of groups (shared/segment-cache.ts): only with a cache and this user's secret. */
  private readonly segments: BuildSegments | undefined;
  private recording: Recording | undefined;
  /** The block cache of the tables (SquashOptions.tables), opened on this thread, and where they are filed. */
  private readonly tableCache: { cache: BlockCache; place: TablePlace } | undefined;

  private constructor(
    private readonly file: OutputFile,
    private readonly codec: Codec,
    private readonly blockSize: number,
    private readonly mkfsTime: number,
    private readonly options: Buffer | undefined,
    threads: number,
    cacheDir: string | undefined,
    cacheSecret: Uint8Array | undefined,
    private readonly scratchDir: string,
    expectedFiles: number,
    useSegments: boolean,
    tables: TablePlace | undefined,
  ) {
    this.records = new SpillSorter<Rec>({ compare: (a, b) => comparePaths(a.entry.path, b.entry.path), codec: recCodec, dir: scratchDir });
    this.tails = new DigestTable(expectedFiles);
    const config: BlockJobConfig = { codec: { name: codec.name, level: codec.level }, blockSize, cacheDir, cacheSecret };
    this.pool = new WorkerPool({ module: new URL('./block-job.js', import.meta.url).href, config, threads, what: 'SquashFS block compression' });
    // Blocks in flight (memory: this many blocks). When full, the queue drains to half before
    // more go out, so blocks reach the pool in batches (shared/worker-pool.ts) and each worker
    // has work while the writer catches up.
    this.maxInFlight = blocksInFlight(codec, threads, blockSize);
    this.pos = SUPERBLOCK_SIZE + (options ? 2 + options.length : 0);
    if (cacheDir !== undefined && cacheSecret !== undefined) {
      const namespace = blockNamespace(codec, blockSize);
      // Besides its files and the contents before it, the options decide a group's bytes.
      const base = `strata-squashfs-segment-v3\0${namespace}\0${this.pos}\0${options?.toString('hex') ?? ''}\0`;
      this.segments = new BuildSegments(new SegmentCache(cacheDir, namespace, cacheSecret), base, useSegments);
    }
    if (cacheDir !== undefined && tables !== undefined) this.tableCache = { cache: new BlockCache(cacheDir, tableNamespace(codec), cacheSecret), place: tables };
  }

  /**
   * Creates the image's temp file beside `outPath` (shared/output-file.ts); finish() renames it
   * to outPath, abort() removes it. Throws ERR_IMAGE_OPTIONS for bad options (see
   * checkSquashOptions), and the open's error when the temp file cannot be created.
   */
  static async create(outPath: string, opts: SquashOptions): Promise<SquashfsWriter> {
    const { spec, blockSize: bs, workers: threads, mkfsTime: mkfs } = checkSquashOptions(opts);
    const codec = makeCodec(spec);
    codecVersion(spec); // a missing addon fails here, in the caller's thread
    const file = await OutputFile.create(outPath, opts.access);
    try {
      return new SquashfsWriter(file, codec, bs, mkfs, encodeCompressorOptions(spec), threads, opts.cacheDir, opts.cacheSecret, opts.scratchDir ?? os.tmpdir(), opts.expectedFiles ?? 0, opts.useSegments ?? true, opts.tables);
    } catch (e) {
      await file.abort();
      throw e;
    }
  }

  private check(): void {
    this.calls.throwIfFailed();
    this.checkOpen();
  }

  private checkOpen(): void {
    if (this.closed || this.finishing) throw usage('the SquashFS writer is already finished or aborted');
  }

  /** One part of a file placed; with the last, its record joins the entry list. */
  private placed(f: PendingFile): void {
    if (--f.open !== 0) return;
    this.records.push({ entry: f.entry, file: f.fd });
    const r = this.recording;
    if (f.rec && r) {
      f.rec.done = true;
      while (r.waiting.length > 0 && r.waiting[0]!.done) encodeSegmentFile(r.meta, r.waiting.shift()!, r);
    }
  }

  /**
   * Streams a regular file's data into the image now, in call order (calls are serialized
   * even if the caller does not await). `content` must yield exactly entry.size bytes.
   * Full blocks go to the compression pool; the tail (< blockSize) is packed into an open
   * fragment block of `group` (one per stream: data.ts, fragmentStream), all of which are
   * flushed first when the group changes. `group` also
   * files the blocks in the cache (a layer's CID); `opts` of a group's first file apply to it.
   * `origin`, when given, is where `content` starts in the content `group` names (the file's
   * offset in its layer's tar): full blocks are then cached by position (shared/block-cache.ts).
   * Full blocks or a tail equal to an earlier file's are not stored again (settleBlocks, placeTail).
   */
  addFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string, opts: GroupOptions = {}, origin?: number): Promise<void> {
    return this.calls.run(() => this.streamFile(entry, content, group, opts, origin));
  }

  private async streamFile(entry: LayerEntry, content: AsyncIterable<Uint8Array>, group: string, opts: GroupOptions, origin: number | undefined): Promise<void> {
    checkFileEntry(entry, MAX_NAME);
    const fd: FileData = { size: entry.size, blocksStart: 0, sizes: [], sparse: 0, fragIndex: INVALID_FRAG, fragOffset: 0 };
    const pending: PendingFile = { entry, fd, open: 2 };
    if (group !== this.group) await this.switchGroup(group, opts, undefined);
    if (this.recording) {
      if (this.recording.count++ >= SEGMENT_MAX_FILES) this.recording = undefined;
      else this.recording.waiting.push((pending.rec = { fd }));
    }
    const bs = this.blockSize;
    let block = this.takeBlock();
    let fill = 0;
    let total = 0;
    let index = 0;
    let run: BlockRun | undefined;
    let stream: number | undefined;
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
          const r = (run ??= { file: pending, digests: createHash('sha256'), pending: 0, ended: false });
          r.pending++;
          const at = origin === undefined ? undefined : origin + i * bs;
          stream ??= fragmentStream(block, true);
          await this.pushBlock(block, true, at, (start, word, digest) => {
            if (i === 0) fd.blocksStart = start;
            fd.sizes[i] = word;
            if (word === 0) fd.sparse += bs;
            r.digests.update(digest);
            if (--r.pending === 0 && r.ended) this.settleBlocks(r);
          });
          block = this.takeBlock();
          fill = 0;
        }
      }
    }
    if (total !== entry.size) throw usage(`${entry.path}: content is ${total} bytes, its entry says ${entry.size}`);
    if (run) {
      run.ended = true;
      if (run.pending === 0) this.settleBlocks(run);
    } else this.placed(pending);
    if (fill > 0) {
      const tail = block.subarray(0, fill);
      await this.placeTail(fd, tail, stream ?? fragmentStream(tail, false), pending.rec);
    }
    this.spare.push(block);
    this.placed(pending);
  }

  /**
   * Called once all of a file's full blocks are written, before anything after them: when an
   * earlier file had the same blocks, this file's (the last bytes written) are dropped by
   * moving the write position back to where they start, and the file points at the earlier ones.
   */
  private settleBlocks(run: BlockRun): void {
    const fd = run.file.fd;
    const digest = run.digests.digest();
    const key = digest.toString('base64');
    const first = this.blockRuns.get(key);
    if (run.file.rec) {
      run.file.rec.run = digest;
      run.file.rec.ownRun = !first;
    }
    if (!first) {
      this.blockRuns.set(key, { blocksStart: fd.blocksStart, sizes: fd.sizes, sparse: fd.sparse });
    } else {
      this.pos = fd.blocksStart;
      this.file.discardFrom(this.pos);
      fd.blocksStart = first.blocksStart;
      fd.sizes = first.sizes;
      fd.sparse = first.sparse;
    }
    this.placed(run.file);
  }

  /** Packs a tail into the open fragment block of `stream`, or points at an earlier copy of the same bytes. */
  private async placeTail(fd: FileData, tail: Buffer, stream: number, rec: SegmentFile | undefined): Promise<void> {
    // One tail per small file: the cheapest sha256 of a short buffer (native/sha256.ts).
    const key = sha256Short(tail);
    const first = this.tails.get(key);
    if (rec) {
      rec.tail = key;
      rec.ownTail = !first;
    }
    if (first) {
      [fd.fragIndex, fd.fragOffset] = first;
      return;
    }
    let open = this.openFrags[stream];
    if (open && open.used + tail.length > this.blockSize) {
      await this.flushFragment(open);
      open = undefined;
    }
    // A block takes its index when it opens: the index of every tail is known as it is packed.
    open ??= this.openFrags[stream] = { index: this.fragCount++, data: this.takeBlock(), used: 0, stream };
    fd.fragIndex = open.index;
    fd.fragOffset = open.used;
    open.data.set(tail, open.used);
    open.used += tail.length;
    if (this.recording && this.tails.size >= DigestTable.MAX_KEYS) {
      // The table no longer takes keys: what later files find depends on more than which
      // contents came before, so this group is not recorded (placeSegment's condition).
      this.recording = undefined;
    } else if (this.recording) this.recording.ownTails++;
    this.tails.set(key, fd.fragIndex, fd.fragOffset);
  }

  private takeBlock(): Buffer {
    return this.spare.pop() ?? Buffer.alloc(this.blockSize);
  }

  /** Keeps a block buffer back from the workers (a full block or a fragment's) for reuse. */
  private recycle(raw: Uint8Array): void {
    const ab = raw.buffer;
    if (ab instanceof ArrayBuffer && ab.byteLength === this.blockSize && this.spare.length < this.maxInFlight) this.spare.push(Buffer.from(ab));
  }

  /**
   * Writes an open fragment block. Its buffer goes to the worker (a view of its first `used`
   * bytes) and comes back to the spare list. Blocks are written as they fill, so the data area
   * holds them in that order, not by index; the fragment table maps each index to its block.
   */
  private async flushFragment(open: OpenFragment): Promise<void> {
    this.openFrags[open.stream] = undefined;
    const index = open.index;
    await this.pushBlock(open.data.subarray(0, open.used), false, undefined, (start, word) => {
      this.frags[index] = { start, word };
    });
  }

  /** Writes every open fragment block, in index order (the group ends, or the image). */
  private async flushFragments(): Promise<void> {
    const open = this.openFrags.filter((f) => f !== undefined).sort((a, b) => a.index - b.index);
    for (const f of open) await this.flushFragment(f);
  }

  private async pushBlock(raw: Buffer, allowSparse: boolean, at: number | undefined, done: (start: number, word: number, digest: Uint8Array) => void): Promise<void> {
    const place: CachePlace = { tag: this.group ?? '' };
    if (this.groupOpts.cacheGid !== undefined) place.gid = this.groupOpts.cacheGid;
    if (at !== undefined) place.at = at;
    // Every raw block here owns its whole buffer (takeBlock), a fragment's
    // included, which is a view of its first bytes.
    const p = this.pool.run({ raw, allowSparse, place }, [raw.buffer as ArrayBuffer]);
    p.catch(() => undefined); // awaited in order by writeHead; avoid an early unhandled rejection
    this.queue.push({ p, done });
    if (this.queue.length > this.maxInFlight) while (this.queue.length > this.maxInFlight / 2) await this.writeHead();
  }

  private async writeHead(): Promise<void> {
    const h = this.queue.shift()!;
    const r = await h.p;
    if (r.cache === 'hit') this.hits++;
    else if (r.cache === 'miss') this.misses++;
    const start = this.pos;
    let word = 0;
    if (r.kind !== 'sparse') {
      await this.file.queueWrite(r.data, start);
      this.pos += r.data.length;
      word = encodeSizeWord(r.data.length, r.kind === 'raw');
    }
    if (r.kind !== 'raw') this.recycle(r.raw); // a raw block is its own data, queued to be written
    h.done(start, word, r.digest); // may move pos back (settleBlocks)
  }

  /**
   * Starts group `group` (its files then come through addFile with the same group).
   * `identity`: the caller's key for everything that decides what the group adds to the image
   * given what came before it (for a layer: its CID, its entry list, and which of its files,
   * in order, the image takes; hex or any text), or undefined when it has none. Groups begun
   * with an identity are recorded as segments (with a cache and the user's secret), and a later
   * build that begins a group of the same identity places it from its segment, wherever the
   * group now starts, when the contents before it give every dedup lookup of the group the
   * same answer (placeSegment): then this returns true, `files()` gives the group's entries as
   * addFile would have had them, in the same order, and none of the group's files may be
   * added. False: add the group's files as usual.
   */
  beginGroup(group: string, opts: GroupOptions, identity: string | undefined, files: () => Iterable<LayerEntry>): Promise<boolean> {
    return this.calls.run(() => this.switchGroup(group, opts, identity, files));
  }

  /**
   * Ends the open group (its fragment block flushed, its recording finished) and opens `group`:
   * from its segment when the group has an identity and a segment of it fits (true), else to
   * be filled by addFile. The same group again goes on (its fragment block stays open), and is
   * then not recorded: its segment would hold only part of it.
   */
  private async switchGroup(group: string, opts: GroupOptions, identity: string | undefined, files?: () => Iterable<LayerEntry>): Promise<boolean> {
    if (group === this.group) {
      this.recording = undefined;
      return false;
    }
    await this.endRecording();
    await this.flushFragments();
    this.group = group;
    this.groupOpts = opts;
    if (identity === undefined || this.segments === undefined) return false;
    // The group starts where everything before it ended.
    while (this.queue.length) await this.writeHead();
    const { key, placed } = await this.segments.begin(identity, group, (found) => this.placeSegment(found, files!));
    if (placed) return true;
    this.recording = { key, group, gid: opts.cacheGid, start: this.pos, fragStart: this.fragCount, blocksBefore: this.hits + this.misses, count: 0, ownTails: 0, waiting: [], meta: new MetaChunks() };
    return false;
  }

  /** Ends the group being recorded: once all of it is written, its segment is saved (in the background). */
  private async endRecording(): Promise<void> {
    const r = this.recording;
    if (!r) return;
    // Still recording while the group's last blocks are written: its last files are placed now.
    await this.flushFragments();
    while (this.queue.length) await this.writeHead();
    this.recording = undefined;
    if (r.waiting.length > 0) throw new Error('SquashFS writer: a recorded file was not placed by the end of its group');
    const frags = this.frags.slice(r.fragStart).map((f) => ({ start: f.start - r.start, word: f.word }));
    const meta = encodeSegmentMeta({ length: this.pos - r.start, blocks: this.hits + this.misses - r.blocksBefore, ownTails: r.ownTails, frags, files: r.count }, r.meta);
    await this.file.flush();
    const [fh, length] = [this.file.fh, this.pos - r.start];
    this.segments!.saving(this.segments!.create(r.group, r.gid, r.key).then((seg) => seg?.finish(meta, fh, r.start, length)));
  }

  /**
   * Places a group from its segment when it fits: its files are the group's, and each of the
   * group's dedup lookups (a run of full blocks, a tail) finds an earlier copy now exactly when
   * it did when the segment was recorded. Then the group's bytes are what a build of it here
   * would write, only at another position: the writer's state moves past the group at once
   * (the segment's own contents relocated to here, the ones it found taken from the tables),
   * and the bytes are copied into the image while the writer goes on (finish() waits for them,
   * and fails with ERR_SEGMENT_DAMAGED if they were not the sealed ones). False: nothing of the
   * writer's state changed.
   */
  private placeSegment(found: FoundSegment, files: () => Iterable<LayerEntry>): boolean {
    const m = decodeSegmentMeta(found.meta);
    if (!m || m.length !== found.length || this.tails.size + m.ownTails > DigestTable.MAX_KEYS) return false;
    const recs: Rec[] = [];
    const runs = new DigestTable();
    const tails = new DigestTable(m.ownTails);
    for (const entry of files()) {
      const f = m.files[recs.length];
      if (!f || entry.type !== 'file' || entry.size !== f.fd.size) return false;
      if (f.run && !agrees(f.ownRun!, f.run, runs, (d) => this.blockRuns.has(d.toString('base64')))) return false;
      if (f.tail && !agrees(f.ownTail!, f.tail, tails, (d) => this.tails.has(d))) return false;
      checkName(entry, MAX_NAME);
      recs.push({ entry, file: f.fd });
    }
    if (recs.length !== m.files.length) return false;
    const start = this.pos;
    this.segments!.place(found, this.file.fh.fd, start);
    for (let i = 0; i < recs.length; i++) {
      const { fd, run, ownRun, tail, ownTail } = m.files[i]!;
      if (run) {
        const key = run.toString('base64');
        if (ownRun) {
          fd.blocksStart += start;
          this.blockRuns.set(key, { blocksStart: fd.blocksStart, sizes: fd.sizes, sparse: fd.sparse });
        } else Object.assign(fd, this.blockRuns.get(key)!);
      }
      if (tail) {
        if (ownTail) {
          fd.fragIndex += this.fragCount;
          this.tails.set(tail, fd.fragIndex, fd.fragOffset);
        } else [fd.fragIndex, fd.fragOffset] = this.tails.get(tail)!;
      }
      this.records.push(recs[i]!);
    }
    for (const f of m.frags) this.frags.push({ start: f.start + start, word: f.word });
    this.fragCount += m.frags.length;
    this.pos = start + m.length;
    this.hits += m.blocks;
    return true;
  }

  /**
   * Adds a non-file entry: dir, symlink, char, block, fifo, or hardlink (entry.linkname is
   * the path of another non-directory entry of the image). Order does not matter; parents,
   * duplicates and link targets are checked in finish().
   */
  addEntry(entry: LayerEntry): void {
    this.check();
    checkOtherEntry(entry, MAX_NAME);
    if (entry.type === 'hardlink') (this.links ??= new HardLinks(this.scratchDir)).add(entry.path, entry.linkname!);
    this.records.push({ entry });
  }

  /** Writes the tables and the superblock, then renames the image into place. */
  async finish(): Promise<SquashResult> {
    this.check();
    this.finishing = true;
    await this.calls.settled();
    try {
      this.calls.throwIfFailed();
      await this.endRecording();
      await this.flushFragments();
      while (this.queue.length) await this.writeHead();
      // Segments read the image back: they are written before it is committed.
      await this.segments?.settle();
      // Every file is placed: the tables need the memory more than the dedup indexes.
      this.tails.release();
      this.blockRuns.clear();
      const r = await this.writeTables();
      this.tableCache?.cache.close();
      this.records.dispose();
      this.links?.dispose();
      this.closed = true;
      const [sha256] = await Promise.all([this.file.commit(), this.pool.close()]);
      return { ...r, sha256 };
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
    this.records.dispose();
    this.links?.dispose();
    await this.segments?.abandon();
    this.tableCache?.cache.close();
    await this.pool.close();
    await this.file.abort();
  }

  /**
   * The entries in path order (a directory's children by name bytes, as the listing needs
   * them), the root first (a default one when none was added). Checks duplicates.
   */
  private *ordered(): Generator<Rec> {
    let prev: string | undefined;
    for (const r of this.records.sorted()) {
      const p = r.entry.path;
      if (p === prev) throw usage(`duplicate path in SquashFS image: ${p}`);
      if (prev === undefined && p !== '.') yield { entry: { ...DEFAULT_ROOT } };
      prev = p;
      yield r;
    }
    if (prev === undefined) yield { entry: { ...DEFAULT_ROOT } };
  }

  /**
   * The first of finish()'s two passes over the entries: checks the tree (every parent a
   * directory that is there, every link's target a non-directory that is there), and counts
   * what the second pass must know before it writes: the inode numbers of directories (they
   * come after their children, but a child directory's inode names its parent's), each
   * shared inode's links (hard-links.ts), the ids, and the records of link targets that sort
   * after a link to them (their inode is written where it is first met). Memory: the open
   * directories, the directories' numbers, and a slot per hard-link group.
   */
  private survey(): { count: number; dirInos: number[]; early: Map<number, Rec>; ids: IdTable } {
    const links = this.links;
    links?.resolve();
    const groupOf = links?.walk();
    /** Link targets that sort after a link to them, by group. */
    const early = new Map<number, Rec>();
    const ids = new Set<number>();
    const dirInos: number[] = [];
    const stack: Array<{ path: string; slot: number }> = [];
    let count = 0;
    let lastLeaf: { path: string; type: string } | undefined;
    const close = () => {
      dirInos[stack.pop()!.slot] = ++count;
    };
    for (const r of this.ordered()) {
      const e = r.entry;
      if (e.path !== '.') {
        const parent = parentOf(e.path);
        while (stack.length > 0 && stack[stack.length - 1]!.path !== parent && !isBelow(parent, stack[stack.length - 1]!.path)) close();
        if (stack[stack.length - 1]?.path !== parent) {
          if (lastLeaf?.path === parent) throw usage(`parent of ${e.path} is a ${lastLeaf.type}, not a directory`);
          throw usage(`parent directory of ${e.path} is missing`, 'add every directory of the tree');
        }
      }
      if (e.type !== 'hardlink') {
        for (const v of [e.uid, e.gid]) {
          if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw usage(`${e.path}: uid/gid ${v} out of range`);
          ids.add(v);
        }
      }
      if (e.type === 'dir') {
        stack.push({ path: e.path, slot: dirInos.length });
        dirInos.push(0);
        continue;
      }
      lastLeaf = { path: e.path, type: e.type };
      const group = groupOf ? groupOf(e.path, e.type === 'hardlink') : -1;
      if (links && group >= 0) {
        if (e.type !== 'hardlink') {
          links.meet(group);
          if (links.numberedAtLink(group)) early.set(group, r);
        }
        if (!links.number(group, e.type === 'hardlink')) continue;
      }
      count++;
    }
    while (stack.length > 0) close();
    links?.checkTargets();
    const idTable = new IdTable([...ids].sort((x, y) => x - y));
    if (idTable.ids.length > MAX_IDS) throw usage(`more than ${MAX_IDS} distinct uids and gids`);
    return { count, dirInos, early, ids: idTable };
  }

  /**
   * The codec of the tables' metadata blocks: the image's, through the block cache when the
   * writer has a place for them. The blocks are compressed here, on the main thread, as they
   * fill (a block's references hold where blocks of the other table start once compressed), so
   * a re-build whose tables are the same up to a point compresses none of the blocks before it:
   * at zstd's default level 15 an 8 KiB block takes about a millisecond.
   */
  private tableCodec(): Pick<Codec, 'compress'> {
    if (!this.tableCache) return this.codec;
    const { cache, place } = this.tableCache;
    return {
      compress: (raw) => {
        const c = compressCached(this.codec, cache, raw, place);
        return Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength);
      },
    };
  }

  private async writeTables(): Promise<Omit<SquashResult, 'sha256'>> {
    const { count, dirInos, early, ids } = this.survey();
    const codec = this.tableCodec();
    const inodes = new MetaWriter(codec);
    const dirs = new MetaWriter(codec);
    const xattrs = new XattrTableWriter(codec);
    const exportRefs = Buffer.alloc(count * 8);

    const xattrIndex = (e: LayerEntry): number => {
      if (!e.xattrs || e.xattrs.size === 0) return INVALID_XATTR;
      const pairs: XattrPair[] = [];
      for (const [name, value] of e.xattrs) {
        if (name.startsWith('system.')) continue;
        const s = splitXattrName(name);
        if (!s) throw usage(`${e.path}: xattr ${name} cannot be stored in SquashFS`, 'only user.*, trusted.* and security.* are supported');
        pairs.push({ full: Buffer.from(name), type: s.type, name: Buffer.from(s.rest), value: Buffer.from(value) });
      }
      return xattrs.add(pairs);
    };

    const emit = (e: LayerEntry, ino: number, body: InodeBody, extended = false): Placed => {
      const type = inodeType(body, extended);
      const at: Placed = { ino, refBlock: inodes.block, refOffset: inodes.offset, type };
      exportRefs.writeBigUInt64LE(metaRef(at.refBlock, at.refOffset), (ino - 1) * 8);
      inodes.write(encodeInode(type, { mode: e.mode, uidIndex: ids.indexOf(e.uid), gidIndex: ids.indexOf(e.gid), mtime: clampTime(e.mtime), number: ino }, body));
      return at;
    };

    let count2 = 0;
    const writeLeaf = (r: Rec, nlink: number): Placed => {
      const e = r.entry;
      const xattr = xattrIndex(e);
      const ino = ++count2;
      switch (e.type) {
        case 'file': {
          const f = r.file!;
          return emit(e, ino, { kind: 'file', nlink, blocksStart: f.blocksStart, fileSize: f.size, sparse: f.sparse, fragIndex: f.fragIndex, fragOffset: f.fragOffset, xattr, sizes: f.sizes });
        }
        case 'symlink':
          return emit(e, ino, { kind: 'symlink', nlink, target: Buffer.from(e.linkname ?? ''), xattr });
        case 'char':
        case 'block': {
          const major = e.devmajor ?? 0;
          const minor = e.devminor ?? 0;
          if (major < 0 || major > 0xfff || minor < 0 || minor > 0xfffff) {
            throw usage(`${e.path}: device ${major}:${minor} does not fit SquashFS's 12-bit major, 20-bit minor`);
          }
          return emit(e, ino, { kind: e.type, nlink, rdev: encodeDevice(major, minor), xattr });
        }
        case 'fifo':
          return emit(e, ino, { kind: 'fifo', nlink, xattr });
        default:
          throw usage(`cannot write ${e.type} inode for ${e.path}`);
      }
    };

    // The second pass: inodes in post-order (a directory after its children, children by
    // name), each shared inode where first met; a directory's listing as it closes.
    interface Open {
      entry: LayerEntry;
      ino: number;
      parentIno: number;
      /** In name order; a wide directory's go through a spilling queue (WideList). */
      children: WideList<DirChild>;
      /** The listing's entries without headers, in bytes (whether the inode is extended). */
      entryBytes: number;
      subdirs: number;
    }
    const stack: Open[] = [];
    const addChild = (dir: Open, path: string, at: Placed): void => {
      const name = nameOf(path);
      dir.children.push({ name, ino: at.ino, refBlock: at.refBlock, refOffset: at.refOffset, basicType: basicType(at.type) });
      dir.entryBytes += DIR_ENTRY_SIZE + name.length;
    };
    const links = this.links;
    const groupOf = links?.walk();
    let dirSlot = 0;
    let root: Placed | undefined;
    const closeDir = (): void => {
      const d = stack.pop()!;
      let listing: ReturnType<typeof encodeDirectory>;
      try {
        listing = encodeDirectory(d.children, dirs);
      } finally {
        d.children.dispose();
      }
      const xattr = xattrIndex(d.entry);
      // As mksquashfs decides: extended for any directory of more than 256 entries or ≥ 8 KiB
      // of entries without headers (besides what the basic form cannot hold).
      const large = d.children.length > DIR_HEADER_MAX || d.entryBytes >= METADATA_SIZE;
      if (++count2 !== d.ino) throw new Error(`SquashFS writer: directory ${d.entry.path} numbered ${count2}, surveyed ${d.ino}`);
      const at = emit(d.entry, d.ino, { kind: 'dir', nlink: 2 + d.subdirs, fileSize: listing.fileSize, blockIndex: listing.blockIndex, blockOffset: listing.blockOffset, parent: d.parentIno, xattr, index: listing.index }, large);
      const parent = stack[stack.length - 1];
      if (parent) {
        parent.subdirs++;
        addChild(parent, d.entry.path, at);
      } else root = at;
    };
    try {
      for (const r of this.ordered()) {
        const e = r.entry;
        if (e.path !== '.') {
          const parent = parentOf(e.path);
          while (stack[stack.length - 1]!.entry.path !== parent) closeDir();
        }
        if (e.type === 'dir') {
          stack.push({ entry: e, ino: dirInos[dirSlot++]!, parentIno: stack[stack.length - 1]?.ino ?? 0, children: new WideList(dirChildCodec, this.scratchDir), entryBytes: 0, subdirs: 0 });
          continue;
        }
        const group = groupOf ? groupOf(e.path, e.type === 'hardlink') : -1;
        let at: Placed;
        if (!links || group < 0) at = writeLeaf(r, 1);
        else {
          const done = links.placed(group);
          if (done) at = done;
          else {
            at = writeLeaf(e.type === 'hardlink' ? early.get(group)! : r, links.nlink(group));
            links.place(group, at);
          }
        }
        addChild(stack[stack.length - 1]!, e.path, at);
      }
      while (stack.length > 0) closeDir();
    } finally {
      // A failure leaves directories open: their queues' run files go.
      for (const d of stack) d.children.dispose();
    }

    // Tables, in the order the kernel expects.
    let p = this.pos;
    const out = async (b: Buffer): Promise<number> => {
      const at = p;
      await this.file.writeAll(b, at);
      p += b.length;
      return at;
    };
    const table = async (t: { bytes: Buffer; locations: number }): Promise<bigint> => {
      await out(t.bytes);
      return BigInt(t.locations);
    };
    const inodeTableStart = await out(inodes.end());
    const directoryTableStart = await out(dirs.end());
    const fragmentTableStart = this.fragCount > 0 ? await table(encodeFragmentTable(this.frags, codec, p)) : INVALID_TABLE;
    const exportTableStart = await table(encodeExportTable(exportRefs, codec, p));
    const idTableStart = await table(ids.encode(codec, p));
    let xattrIdTableStart = INVALID_TABLE;
    if (xattrs.count > 0) {
      const x = xattrs.encode(p);
      await out(x.bytes);
      xattrIdTableStart = BigInt(x.header);
    }
    const bytesUsed = p;

    let flags: number = FLAG.EXPORTABLE | FLAG.DUPLICATES;
    if (this.options) {
      flags |= FLAG.COMPRESSOR_OPTIONS;
      const ob = Buffer.alloc(2);
      ob.writeUInt16LE(METADATA_UNCOMPRESSED | this.options.length, 0);
      await this.file.writeAll(Buffer.concat([ob, this.options]), SUPERBLOCK_SIZE);
    }
    const sb = encodeSuperblock({
      inodeCount: count,
      mkfsTime: this.mkfsTime,
      blockSize: this.blockSize,
      fragmentCount: this.fragCount,
      compressor: COMPRESSOR[this.codec.name],
      blockLog: Math.log2(this.blockSize),
      flags,
      idCount: ids.ids.length,
      versionMajor: VERSION_MAJOR,
      versionMinor: VERSION_MINOR,
      rootInode: metaRef(root!.refBlock, root!.refOffset),
      bytesUsed: BigInt(bytesUsed),
      idTableStart,
      xattrIdTableStart,
      inodeTableStart: BigInt(inodeTableStart),
      directoryTableStart: BigInt(directoryTableStart),
      fragmentTableStart,
      exportTableStart,
    });
    await this.file.writeAll(sb, 0);
    const padded = Math.ceil(bytesUsed / PAD) * PAD;
    await this.file.setLength(bytesUsed, padded); // blocks of duplicates may have been written past the end
    return { bytes: padded, inodes: count, cacheHits: this.hits, cacheMisses: this.misses, segmentHits: this.segments?.hits ?? 0 };
  }
}

/**
 * A recorded group, as its segment's meta holds it: positions are from the group's start and
 * fragment numbers from its first fragment block, so the group can be placed anywhere.
 */
interface SegmentMeta {
  length: number;
  /** Blocks the group put through the cache (counted as hits when it is placed again). */
  blocks: number;
  /** Tails the group packed (keys it adds to the tail table). */
  ownTails: number;
  frags: FragmentEntry[];
  files: SegmentFile[];
}

const META_VERSION = 2;

/**
 * One file of a segment's meta: its FileData (numbers as f64, words as u32; its own blocks
 * from the group's start, its own tail's fragment from the group's first; a found run's
 * place and block sizes are not kept, the tables give them), then its dedup keys.
 */
function encodeSegmentFile(out: MetaChunks, f: SegmentFile, group: { start: number; fragStart: number }): void {
  const d = f.fd;
  const sizes = f.run && !f.ownRun ? [] : d.sizes;
  const [b, at] = out.room(8 * 3 + 4 * 3 + 1 + sizes.length * 4 + (f.run ? 32 : 0) + (f.tail ? 32 : 0));
  let o = at;
  o = b.writeDoubleLE(d.size, o);
  o = b.writeDoubleLE(f.run && f.ownRun ? d.blocksStart - group.start : f.run ? 0 : d.blocksStart, o);
  o = b.writeDoubleLE(f.run && !f.ownRun ? 0 : d.sparse, o);
  o = b.writeUInt32LE(f.tail && f.ownTail ? d.fragIndex - group.fragStart : f.tail ? 0 : d.fragIndex, o);
  o = b.writeUInt32LE(f.tail && !f.ownTail ? 0 : d.fragOffset, o);
  o = b.writeUInt32LE(sizes.length, o);
  for (const w of sizes) o = b.writeUInt32LE(w, o);
  o = b.writeUInt8((f.run ? 1 : 0) | (f.ownRun ? 2 : 0) | (f.tail ? 4 : 0) | (f.ownTail ? 8 : 0), o);
  if (f.run) o += f.run.copy(b, o);
  if (f.tail) f.tail.copy(b, o);
}

/** The meta of a segment: fixed fields, the fragment blocks, then the files `encoded` holds (little-endian). */
function encodeSegmentMeta(m: Omit<SegmentMeta, 'files'> & { files: number }, encoded: MetaChunks): Buffer {
  const head = Buffer.alloc(4 + 8 * 2 + 4 * 3 + m.frags.length * 12);
  let o = 0;
  o = head.writeUInt32LE(META_VERSION, o);
  o = head.writeDoubleLE(m.length, o);
  o = head.writeDoubleLE(m.blocks, o);
  o = head.writeUInt32LE(m.ownTails, o);
  o = head.writeUInt32LE(m.frags.length, o);
  o = head.writeUInt32LE(m.files, o);
  for (const fr of m.frags) {
    o = head.writeDoubleLE(fr.start, o);
    o = head.writeUInt32LE(fr.word, o);
  }
  return Buffer.concat([head, ...encoded.all()]);
}

/** The meta as encodeSegmentMeta wrote it (its keys are views of `b`); undefined for anything else (a sealed segment of another version). */
function decodeSegmentMeta(b: Buffer): SegmentMeta | undefined {
  try {
    const c = new MetaCursor(b);
    if (c.u32() !== META_VERSION) return undefined;
    const length = c.f64();
    const blocks = c.f64();
    const ownTails = c.u32();
    const nFrags = c.u32();
    const nFiles = c.u32();
    const frags: FragmentEntry[] = [];
    for (let i = 0; i < nFrags; i++) frags.push({ start: c.f64(), word: c.u32() });
    const files: SegmentFile[] = [];
    for (let i = 0; i < nFiles; i++) {
      const size = c.f64();
      const blocksStart = c.f64();
      const sparse = c.f64();
      const fragIndex = c.u32();
      const fragOffset = c.u32();
      const sizes: number[] = [];
      for (let k = c.u32(); k > 0; k--) sizes.push(c.u32());
      const flags = c.u8();
      const f: SegmentFile = { fd: { size, blocksStart, sizes, sparse, fragIndex, fragOffset } };
      if (flags & 1) [f.run, f.ownRun] = [c.bytes(32), (flags & 2) !== 0];
      if (flags & 4) [f.tail, f.ownTail] = [c.bytes(32), (flags & 8) !== 0];
      files.push(f);
    }
    return c.atEnd ? { length, blocks, ownTails, frags, files } : undefined;
  } catch {
    return undefined;
  }
}

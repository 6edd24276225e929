/**
 * The SquashFS writer's compression job, run in worker threads by the shared WorkerPool:
 * one data or fragment block in, what to write for it out.
 *
 *   kind 'sparse':     the block is all zeros and holes are allowed (full data blocks): the
 *                      size word is 0 and nothing is written;
 *   kind 'raw':        compression did not shrink it; `data` is the raw block;
 *   kind 'compressed': `data` is the compressed block.
 *
 * Blocks go through the shared block cache (namespace: compressor, library version, level,
 * block size), filed under the block's group (the layer it came from) and, for restricted
 * content, readable only by its group. A block whose place has a position (`at`) is looked up
 * by it, before it is hashed. The raw block travels back so the writer can reuse it, with its
 * sha256 (computed once, for a content key too, or given by a sealed record): the writer tells
 * identical files apart by these digests (spec/squashfs.md, "Identical content is stored once").
 */
import { createHash } from 'node:crypto';
import { BlockCache, type CachePlace } from '../shared/block-cache.js';
import { makeCodec, type CodecSpec } from '../shared/codecs.js';
import { compressCached } from '../shared/compress-block.js';
import { transferable, type JobHandler } from '../shared/worker-pool.js';

export interface BlockJobConfig {
  codec: CodecSpec;
  blockSize: number;
  cacheDir?: string;
  /** The user's cache secret: seals records written, trusts records sealed (shared/block-cache.ts). */
  cacheSecret?: Uint8Array;
}

export interface BlockJob {
  raw: Uint8Array;
  allowSparse: boolean;
  place: CachePlace;
}

export interface BlockJobResult {
  kind: 'sparse' | 'raw' | 'compressed';
  /** Bytes to write: the raw block itself for 'raw', empty for 'sparse'. */
  data: Uint8Array;
  cache: 'hit' | 'miss' | 'none';
  /** The submitted block, handed back so the caller can reuse its memory. */
  raw: Uint8Array;
  /** sha256 of the raw block (32 bytes). */
  digest: Uint8Array;
}

/** The cache namespace of SquashFS data blocks (see block-cache.ts). */
export function blockNamespace(codec: { name: string; version: string; level: number }, blockSize: number): string {
  return `strata-squashfs-block-v1\0${codec.name}\0${codec.version}\0${codec.level}\0${blockSize}\0`;
}

let zeros = new Uint8Array(0);
function isAllZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = new Uint8Array(b.length);
  return Buffer.from(b.buffer, b.byteOffset, b.length).equals(zeros.subarray(0, b.length));
}

/** sha256 of `length` zero bytes, computed once per length (holes of a huge file cost nothing). */
const zeroDigests = new Map<number, Uint8Array>();
function zeroDigest(length: number): Uint8Array {
  let d = zeroDigests.get(length);
  if (!d) zeroDigests.set(length, (d = new Uint8Array(createHash('sha256').update(new Uint8Array(length)).digest())));
  return d;
}

export function createJobHandler(config: unknown): JobHandler<BlockJob, BlockJobResult> {
  const c = config as BlockJobConfig;
  const codec = makeCodec(c.codec);
  const cache = c.cacheDir ? new BlockCache(c.cacheDir, blockNamespace(codec, c.blockSize), c.cacheSecret) : undefined;
  cache?.preload();
  return {
    run(job) {
      let result: BlockJobResult;
      // The block's buffer is this job's alone here (moved or copied to this thread), also
      // when the block is a view of part of it: it goes back whole, for the writer to reuse.
      const transfer: ArrayBuffer[] = job.raw.buffer instanceof ArrayBuffer ? [job.raw.buffer] : [];
      if (job.allowSparse && isAllZero(job.raw)) {
        result = { kind: 'sparse', data: new Uint8Array(0), cache: 'none', raw: job.raw, digest: zeroDigest(job.raw.length) };
      } else {
        const { owned, ...block } = compressCached(codec, cache, job.raw, job.place);
        result = { ...block, raw: job.raw };
        if (block.data.buffer !== job.raw.buffer) transfer.push(...(owned ? [block.data.buffer as ArrayBuffer] : transferable(block.data)));
      }
      return { result, transfer };
    },
    close() {
      cache?.close();
    },
  };
}

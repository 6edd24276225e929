/**
 * Block compressors and decompressors shared by the image formats. A `Codec` is one
 * (compressor, level): it compresses and decompresses whole blocks, deterministically for a
 * given library version, and says which version that is (`version`, part of every cache key,
 * so a different build never serves stale bytes). The same codec is built in the main thread
 * and in every worker thread from the plain `CodecSpec` that crosses the thread boundary.
 * Format facts (superblock ids, option blocks, default levels) belong to the formats.
 *
 * Routes:
 *   gzip  the vendored libdeflate (native/deflate.ts) with a zlib wrapper (RFC 1950), one
 *         whole block at a time, both ways; version "libdeflate-<version>"
 *   zstd  the `zstd-napi` package (Node 20's zlib has no zstd): one frame per block, no
 *         checksum; version "libzstd-<ZSTD_versionString()>"
 *   lz4   the vendored liblz4 (native/lz4.ts), one raw LZ4 block per block; version
 *         "liblz4-<version>-m<LZ4_MEMORY_USAGE>"; strata's own decoder (lz4.ts)
 *   xz    decode only (xz.ts): one .xz stream per block, LZMA2 alone or after x86 BCJ
 *
 * Every decompressor takes the largest size the block may expand to and never allocates
 * more; malformed input throws a plain Error (the caller names the block), valid input using
 * a feature strata does not decode throws `UnsupportedBlockError`.
 */
import { createRequire } from 'node:module';
import { libdeflateVersion, zlibCompress, zlibDecompress } from '../../../native/deflate.js';
import { NATIVE_ERR } from '../../../native/errors.js';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { lz4BlockVersion, lz4Compress, lz4Decompress } from './lz4.js';
import { xz, XzUnsupportedError } from './xz.js';

/** A well-formed block using a feature strata does not decode (e.g. an xz BCJ filter). */
export { XzUnsupportedError as UnsupportedBlockError };

export type CodecName = 'gzip' | 'zstd' | 'lz4';
/** Everything a reader can decode. */
export type DecoderName = CodecName | 'xz';

/** Plain data describing a codec; safe to post to a worker. */
export interface CodecSpec {
  name: CodecName;
  /** Compression level; 0 for lz4 (which has none). */
  level: number;
}

export type Decompress = (src: Uint8Array, maxOut: number) => Buffer;

export interface Codec extends CodecSpec {
  /** Library identity that decides the compressed bytes, e.g. "libdeflate-1.14" or "libzstd-1.5.7". */
  version: string;
  /** Compresses one block. Deterministic for a given `version`. */
  compress(raw: Uint8Array): Buffer;
  /** Decompresses one block; `maxOut` bounds the output. Throws on malformed input. */
  decompress: Decompress;
}

/** Levels each leveled compressor accepts. */
export const LEVEL_RANGE: Readonly<Record<'gzip' | 'zstd', { min: number; max: number }>> = {
  gzip: { min: 1, max: 9 },
  zstd: { min: 1, max: 22 },
};

/** What a format offers: its name for messages, its compressors, its default levels. */
export interface CodecChoice {
  format: string;
  /** Compressors the format's writer offers, in the order hints list them. */
  names: readonly CodecName[];
  defaultLevel: Readonly<Record<'gzip' | 'zstd', number>>;
  /** Compressors the format knows but strata's writer does not write (refused with a hint). */
  notWritten?: readonly string[];
}

/** What an image writer's blocks in flight may hold beyond its gzip or zstd depth (blocksInFlight). */
const IN_FLIGHT_BYTES = 16 << 20;

/**
 * How many blocks of `blockSize` bytes an image writer keeps in flight to its compression pool
 * (`threads` workers): enough that each worker still has blocks to compress while the writer
 * reads the next ones in, copies results out or collects its garbage. What that takes is
 * time, so a cheap codec needs more blocks: an lz4 block of 128 KiB compresses in a few tenths
 * of a millisecond, a gzip or zstd one in milliseconds. Measured on 2 cores (2026-11-30,
 * alternating runs): with 32 lz4 blocks a thread instead of 6 the bench stack's cold EROFS
 * lz4 image took 6.1–6.9 s against 7.0–7.5, its SquashFS lz4 image 5.4–5.7 s against 5.9,
 * with less CPU (larger batches, fewer wake-ups) and 20–30 MiB more peak RSS; gzip and zstd
 * images did not move, so they keep 6. lz4's extra depth is for speed alone, so it is bounded
 * in bytes (IN_FLIGHT_BYTES): many threads or large blocks do not add memory past that.
 */
export function blocksInFlight(codec: CodecSpec, threads: number, blockSize: number): number {
  const base = threads * 6 + 4;
  if (codec.name !== 'lz4') return base;
  return Math.max(base, Math.min(threads * 32 + 4, Math.floor(IN_FLIGHT_BYTES / blockSize)));
}

/** Validates a user's choice; throws StrataError(IMAGE_ERR.OPTIONS) with a hint when unusable. */
export function resolveCodecSpec(name: string, level: number | undefined, choice: CodecChoice): CodecSpec {
  const list = `${choice.names.slice(0, -1).join(', ')} or ${choice.names[choice.names.length - 1]}`;
  if (choice.notWritten?.includes(name)) {
    throw new StrataError(IMAGE_ERR.OPTIONS, `${choice.format} compressor ${name} is not supported by strata's writer`, {
      hint: `use --comp ${list}`,
    });
  }
  if (!(choice.names as readonly string[]).includes(name)) {
    throw new StrataError(IMAGE_ERR.OPTIONS, `unknown ${choice.format} compressor "${name}"`, { hint: `choose ${list}` });
  }
  if (name === 'lz4') {
    if (level !== undefined) {
      throw new StrataError(IMAGE_ERR.OPTIONS, 'lz4 has no compression levels', { hint: 'leave out --level with --comp lz4' });
    }
    return { name, level: 0 };
  }
  const n = name as 'gzip' | 'zstd';
  const r = LEVEL_RANGE[n];
  const lv = level ?? choice.defaultLevel[n];
  if (!Number.isInteger(lv) || lv < r.min || lv > r.max) {
    throw new StrataError(IMAGE_ERR.OPTIONS, `${n} compression level ${String(level)} is out of range`, {
      hint: `use a whole number from ${r.min} to ${r.max}`,
    });
  }
  return { name: n, level: lv };
}

/** The part of zstd-napi's native binding strata calls (its binding.d.ts). */
interface ZstdBinding {
  versionString(): string;
  decompress(dst: Uint8Array, src: Uint8Array): number;
  compressBound(srcSize: number): number;
  CParameter: { compressionLevel: number };
  CCtx: new () => ZstdCCtx;
}
interface ZstdCCtx {
  setParameter(param: number, value: number): void;
  /** ZSTD_compress2: one whole frame of `src` into `dst` (at least compressBound long); its length. */
  compress2(dst: Uint8Array, src: Uint8Array): number;
}

let zstdCache: { binding: ZstdBinding; version: string } | undefined;
function loadZstd(): NonNullable<typeof zstdCache> {
  if (zstdCache) return zstdCache;
  const require = createRequire(import.meta.url);
  try {
    const binding = require('zstd-napi/binding') as ZstdBinding;
    zstdCache = { binding, version: `libzstd-${binding.versionString()}` };
    return zstdCache;
  } catch (e) {
    throw new StrataError(NATIVE_ERR.UNAVAILABLE, 'the zstd-napi addon could not be loaded', {
      hint: 'reinstall strata (npm rebuild zstd-napi) or use --comp gzip',
      cause: e,
    });
  }
}

/** The library version string that goes into cache keys, without building a codec. */
export function codecVersion(spec: CodecSpec): string {
  if (spec.name === 'lz4') return lz4BlockVersion();
  return spec.name === 'gzip' ? `libdeflate-${libdeflateVersion()}` : loadZstd().version;
}

function gunzip(src: Uint8Array, maxOut: number): Buffer {
  const dst = Buffer.allocUnsafe(maxOut);
  return dst.subarray(0, zlibDecompress(dst, src));
}

function unzstd(src: Uint8Array, maxOut: number): Buffer {
  const dst = Buffer.allocUnsafe(maxOut);
  const n = loadZstd().binding.decompress(dst, src);
  return dst.subarray(0, n);
}

/** The decompressor for a compressor name, or undefined when strata has none (lzo, lzma). */
export function decompressor(name: string): Decompress | undefined {
  switch (name) {
    case 'gzip':
      return gunzip;
    case 'zstd':
      return unzstd;
    case 'lz4':
      return lz4Decompress;
    case 'xz':
      return xz;
    default:
      return undefined;
  }
}

export function makeCodec(spec: CodecSpec): Codec {
  const { name, level } = spec;
  if (name === 'lz4') return { name, level, version: lz4BlockVersion(), compress: lz4Compress, decompress: lz4Decompress };
  if (name === 'gzip') {
    return {
      name,
      level,
      version: codecVersion(spec),
      compress: (raw) => zlibCompress(raw, level),
      decompress: gunzip,
    };
  }
  const z = loadZstd();
  let cctx: ZstdCCtx | undefined;
  let scratch = new Uint8Array(0);
  return {
    name,
    level,
    version: z.version,
    // One context per codec (a codec lives in one thread), parameters set once: the same
    // bytes as a fresh context, without re-initialising it for every block. The frame is
    // written into a scratch buffer the codec keeps, then copied into a buffer of its exact
    // length, which owns its memory (so it can be transferred to another thread). zstd-napi's
    // Compressor allocated a destination of compressBound(block) for every block, over
    // glibc's mmap threshold for a 128 KiB block (its pages faulted in and unmapped again
    // each time), and returned poorly compressed blocks as views of it, copied again when
    // posted back to the writer.
    compress: (raw) => {
      if (!cctx) {
        cctx = new z.binding.CCtx();
        cctx.setParameter(z.binding.CParameter.compressionLevel, level);
      }
      const bound = z.binding.compressBound(raw.length);
      if (scratch.length < bound) scratch = new Uint8Array(bound);
      const n = cctx.compress2(scratch, raw);
      const out = Buffer.allocUnsafeSlow(n);
      out.set(scratch.subarray(0, n));
      return out;
    },
    decompress: unzstd,
  };
}

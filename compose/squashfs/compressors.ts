/**
 * Compressors for SquashFS blocks. One `Codec` per (compressor, level); the same object is
 * built in the main thread (metadata blocks) and in each worker thread (data blocks), from
 * the plain `CodecSpec` that crosses the thread boundary.
 *
 * Routes:
 * - gzip: node:zlib deflate with a zlib wrapper (SquashFS "gzip" is a zlib stream), window
 *   bits 15, default strategy. Output depends on the zlib build: its version is part of
 *   `Codec.version` and therefore of the block-cache key.
 * - zstd: the `zstd-napi` package (Node 20's zlib has no zstd). Its bundled libzstd version
 *   (ZSTD_versionString) is `Codec.version`. One-shot frames, no checksum.
 * - lz4: strata's own LZ4 block-format compressor below (greedy, 64 Ki-entry hash of 4-byte
 *   sequences), so its output is fixed by this file ("strata-lz4-1"), not by a library build.
 *   Options block always written (format rule): version 1, flags 0 (no HC). No levels.
 * - xz: refused with ERR_IMAGE_OPTIONS (no byte-stable xz encoder reachable from Node).
 */
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { NATIVE_ERR } from '../../native/errors.js';
import { StrataError, IMAGE_ERR } from '../image/errors.js';
import {
  COMPRESSOR,
  GZIP_DEFAULT_LEVEL,
  GZIP_WINDOW_BITS,
  ZSTD_DEFAULT_LEVEL,
  type CompressorName,
} from './format.js';

export type SquashCompressor = 'gzip' | 'zstd' | 'xz' | 'lz4';

/** Plain data describing a codec; safe to post to a worker. */
export interface CodecSpec {
  name: 'gzip' | 'zstd' | 'lz4';
  /** Compression level; 0 for lz4 (which has none). */
  level: number;
}

export interface Codec extends CodecSpec {
  /** Superblock compressor id. */
  id: number;
  /** Library identity that decides the compressed bytes, e.g. "zlib-1.3.1" or "libzstd-1.5.7". */
  version: string;
  /** Compresses one block (data, fragment or metadata). Deterministic for a given version. */
  compress(raw: Uint8Array): Buffer;
  /** Decompresses one block; `maxSize` bounds the output (block size or 8192). */
  decompress(data: Uint8Array, maxSize: number): Buffer;
  /**
   * Compressor options payload for the block after the superblock, or undefined when the
   * settings are the format's defaults (then no options block is written).
   */
  options(): Buffer | undefined;
}

const LEVELS: Record<'gzip' | 'zstd', { min: number; max: number; def: number }> = {
  gzip: { min: 1, max: 9, def: GZIP_DEFAULT_LEVEL },
  zstd: { min: 1, max: 22, def: ZSTD_DEFAULT_LEVEL },
};

/** Validates a user's choice; throws StrataError(IMAGE_ERR.OPTIONS) with a hint when unusable. */
export function resolveCodecSpec(name: string, level?: number): CodecSpec {
  if (name === 'xz') {
    throw new StrataError(IMAGE_ERR.OPTIONS, `SquashFS compressor ${name} is not supported by strata's writer`, {
      hint: 'use --comp zstd, gzip or lz4',
    });
  }
  if (name === 'lz4') {
    if (level !== undefined) {
      throw new StrataError(IMAGE_ERR.OPTIONS, 'lz4 has no compression levels', { hint: 'leave out --level with --comp lz4' });
    }
    return { name, level: 0 };
  }
  if (name !== 'gzip' && name !== 'zstd') {
    throw new StrataError(IMAGE_ERR.OPTIONS, `unknown SquashFS compressor "${name}"`, {
      hint: 'choose zstd, gzip or lz4',
    });
  }
  const r = LEVELS[name];
  const lv = level ?? r.def;
  if (!Number.isInteger(lv) || lv < r.min || lv > r.max) {
    throw new StrataError(IMAGE_ERR.OPTIONS, `${name} compression level ${String(level)} is out of range`, {
      hint: `use a whole number from ${r.min} to ${r.max}`,
    });
  }
  return { name, level: lv };
}

interface ZstdBinding {
  versionString(): string;
}
interface ZstdCompressor {
  setParameters(p: { compressionLevel?: number }): void;
  compress(data: Uint8Array): Buffer;
}

interface ZstdModule {
  Compressor: new () => ZstdCompressor;
  compress(data: Uint8Array, p?: { compressionLevel?: number }): Buffer;
  decompress(data: Uint8Array): Buffer;
}

let zstdCache: { mod: ZstdModule; version: string } | undefined;
function loadZstd(): { mod: ZstdModule; version: string } {
  if (zstdCache) return zstdCache;
  const require = createRequire(import.meta.url);
  try {
    const mod = require('zstd-napi') as ZstdModule;
    const binding = require('zstd-napi/binding') as ZstdBinding;
    zstdCache = { mod, version: `libzstd-${binding.versionString()}` };
    return zstdCache;
  } catch (e) {
    throw new StrataError(NATIVE_ERR.UNAVAILABLE, 'the zstd-napi addon could not be loaded', {
      hint: 'reinstall strata (npm rebuild zstd-napi) or use --comp gzip',
      cause: e,
    });
  }
}

/** The library version string that would go into cache keys, without building a codec. */
export function codecVersion(spec: CodecSpec): string {
  if (spec.name === 'lz4') return LZ4_VERSION;
  return spec.name === 'gzip' ? `zlib-${process.versions.zlib}` : loadZstd().version;
}

export function makeCodec(spec: CodecSpec): Codec {
  if (spec.name === 'lz4') {
    return {
      ...spec,
      id: COMPRESSOR.lz4,
      version: LZ4_VERSION,
      compress: lz4Compress,
      decompress: lz4Decompress,
      options() {
        const b = Buffer.alloc(8);
        b.writeUInt32LE(1, 0); // LZ4_LEGACY stream version, the only one SquashFS knows
        b.writeUInt32LE(0, 4);
        return b;
      },
    };
  }
  if (spec.name === 'gzip') {
    const level = spec.level;
    return {
      ...spec,
      id: COMPRESSOR.gzip,
      version: codecVersion(spec),
      compress: (raw) => zlib.deflateSync(raw, { level, windowBits: GZIP_WINDOW_BITS, memLevel: 8 }),
      decompress: (data, maxSize) => zlib.inflateSync(data, { maxOutputLength: maxSize }),
      options() {
        if (level === GZIP_DEFAULT_LEVEL) return undefined;
        const b = Buffer.alloc(8);
        b.writeUInt32LE(level, 0);
        b.writeUInt16LE(GZIP_WINDOW_BITS, 4);
        b.writeUInt16LE(0, 6);
        return b;
      },
    };
  }
  const z = loadZstd();
  const level = spec.level;
  let cctx: ZstdCompressor | undefined;
  return {
    ...spec,
    id: COMPRESSOR.zstd,
    version: z.version,
    // One context per codec (a codec lives in one worker thread), parameters set once:
    // the same bytes as a fresh context, without re-initialising it for every block.
    compress: (raw) => {
      if (!cctx) {
        cctx = new z.mod.Compressor();
        cctx.setParameters({ compressionLevel: level });
      }
      return cctx.compress(raw);
    },
    decompress: (data, maxSize) => {
      const out = z.mod.decompress(data);
      if (out.length > maxSize) throw new RangeError('zstd block decompresses past its bound');
      return out;
    },
    options() {
      if (level === ZSTD_DEFAULT_LEVEL) return undefined;
      const b = Buffer.alloc(4);
      b.writeUInt32LE(level, 0);
      return b;
    },
  };
}

export const COMPRESSOR_NAMES: readonly CompressorName[] = ['gzip', 'zstd', 'lz4'];

/*
 * LZ4 block format (what the kernel's LZ4_decompress_safe reads): a sequence of
 *   token (high nibble: literal count, low nibble: match length − 4; 15 = more bytes follow),
 *   [255…, n] extra literal count, literals, u16 LE offset (1..65535),
 *   [255…, n] extra match length
 * ending with a literals-only sequence. A match may not start in the last 12 bytes
 * (MFLIMIT) and the last 5 bytes are always literals (LASTLITERALS).
 */
const LZ4_VERSION = 'strata-lz4-1';
const MINMATCH = 4;
const MFLIMIT = 12;
const LASTLITERALS = 5;
const HASH_LOG = 16;

function lz4Compress(src: Uint8Array): Buffer {
  const n = src.length;
  const out = Buffer.alloc(n + Math.ceil(n / 255) + 16);
  const table = new Int32Array(1 << HASH_LOG).fill(-1);
  const read32 = (i: number) => src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16) | (src[i + 3]! << 24);
  let op = 0;
  const length = (v: number) => {
    for (; v >= 255; v -= 255) out[op++] = 255;
    out[op++] = v;
  };
  const sequence = (anchor: number, litEnd: number, offset: number, matchLen: number) => {
    const lit = litEnd - anchor;
    const ml = matchLen - MINMATCH;
    out[op++] = (Math.min(lit, 15) << 4) | (offset ? Math.min(ml, 15) : 0);
    if (lit >= 15) length(lit - 15);
    out.set(src.subarray(anchor, litEnd), op);
    op += lit;
    if (!offset) return;
    out[op++] = offset & 0xff;
    out[op++] = offset >>> 8;
    if (ml >= 15) length(ml - 15);
  };
  let anchor = 0;
  let ip = 0;
  const matchEnd = n - LASTLITERALS;
  while (ip + MFLIMIT <= n) {
    const seq = read32(ip);
    const h = Math.imul(seq, 2654435761) >>> (32 - HASH_LOG);
    const ref = table[h]!;
    table[h] = ip;
    if (ref >= 0 && ip - ref <= 0xffff && read32(ref) === seq) {
      let len = MINMATCH;
      while (ip + len < matchEnd && src[ref + len] === src[ip + len]) len++;
      sequence(anchor, ip, ip - ref, len);
      ip += len;
      anchor = ip;
    } else {
      ip++;
    }
  }
  sequence(anchor, n, 0, 0);
  return out.subarray(0, op);
}

function lz4Decompress(src: Uint8Array, maxSize: number): Buffer {
  const out = Buffer.alloc(maxSize);
  let ip = 0;
  let op = 0;
  const bad = () => new RangeError('corrupt LZ4 block');
  const more = (v: number) => {
    for (;;) {
      if (ip >= src.length) throw bad();
      const b = src[ip++]!;
      v += b;
      if (b !== 255) return v;
    }
  };
  while (ip < src.length) {
    const token = src[ip++]!;
    let lit = token >>> 4;
    if (lit === 15) lit = more(lit);
    if (ip + lit > src.length || op + lit > maxSize) throw bad();
    out.set(src.subarray(ip, ip + lit), op);
    ip += lit;
    op += lit;
    if (ip === src.length) break;
    if (ip + 2 > src.length) throw bad();
    const off = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    let ml = token & 15;
    if (ml === 15) ml = more(ml);
    ml += MINMATCH;
    if (off === 0 || off > op || op + ml > maxSize) throw bad();
    for (let k = 0; k < ml; k++, op++) out[op] = out[op - off]!;
  }
  return out.subarray(0, op);
}

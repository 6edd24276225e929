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
 * - xz, lz4: refused with ERR_USAGE (no implementation that is both cheap and byte-stable).
 */
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { ERR, StrataError } from '../../store/errors.js';
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
  name: 'gzip' | 'zstd';
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

const LEVELS: Record<CodecSpec['name'], { min: number; max: number; def: number }> = {
  gzip: { min: 1, max: 9, def: GZIP_DEFAULT_LEVEL },
  zstd: { min: 1, max: 22, def: ZSTD_DEFAULT_LEVEL },
};

/** Validates a user's choice; throws StrataError(ERR.USAGE) with a hint when unusable. */
export function resolveCodecSpec(name: string, level?: number): CodecSpec {
  if (name === 'xz' || name === 'lz4') {
    throw new StrataError(ERR.USAGE, `SquashFS compressor ${name} is not supported by strata's writer`, {
      hint: 'use --comp zstd or --comp gzip',
    });
  }
  if (name !== 'gzip' && name !== 'zstd') {
    throw new StrataError(ERR.USAGE, `unknown SquashFS compressor "${name}"`, {
      hint: 'choose gzip or zstd',
    });
  }
  const r = LEVELS[name];
  const lv = level ?? r.def;
  if (!Number.isInteger(lv) || lv < r.min || lv > r.max) {
    throw new StrataError(ERR.USAGE, `${name} compression level ${String(level)} is out of range`, {
      hint: `use a whole number from ${r.min} to ${r.max}`,
    });
  }
  return { name, level: lv };
}

interface ZstdBinding {
  versionString(): string;
}
interface ZstdModule {
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
    throw new StrataError(ERR.NATIVE_UNAVAILABLE, 'the zstd-napi addon could not be loaded', {
      hint: 'reinstall strata (npm rebuild zstd-napi) or use --comp gzip',
      cause: e,
    });
  }
}

/** The library version string that would go into cache keys, without building a codec. */
export function codecVersion(spec: CodecSpec): string {
  return spec.name === 'gzip' ? `zlib-${process.versions.zlib}` : loadZstd().version;
}

export function makeCodec(spec: CodecSpec): Codec {
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
  return {
    ...spec,
    id: COMPRESSOR.zstd,
    version: z.version,
    compress: (raw) => z.mod.compress(raw, { compressionLevel: level }),
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

export const COMPRESSOR_NAMES: readonly CompressorName[] = ['gzip', 'zstd'];

/**
 * SquashFS compressors: superblock ids, the compressor options block, and which shared codecs
 * (../shared/codecs.ts) strata writes and reads.
 *
 * Compressor options (the payload of the metadata block right after the superblock, stored
 * uncompressed, present when FLAG.COMPRESSOR_OPTIONS is set):
 *   gzip: u32 level (1..9, default 9), u16 windowBits (8..15, default 15), u16 strategies
 *         (bit field, 0 = zlib default)                                       — 8 bytes
 *   zstd: u32 level (1..22, default 15)                                         — 4 bytes
 *   xz:   u32 dictionary size, u32 filters                                      — 8 bytes
 *   lz4:  u32 version (must be 1), u32 flags (1 = HC)  — always present for lz4 — 8 bytes
 * "gzip" data is a zlib stream (RFC 1950 header + deflate + adler32), not a gzip file.
 *
 * strata writes options only where mksquashfs does: gzip and zstd at a non-default level, lz4
 * always (version 1, no HC). Writes gzip, zstd, lz4; reads those and xz; lzo and lzma: neither.
 */
import { resolveCodecSpec, type CodecChoice, type CodecSpec } from '../shared/codecs.js';

/** Superblock compressor ids. */
export const COMPRESSOR = { gzip: 1, lzma: 2, lzo: 3, xz: 4, lz4: 5, zstd: 6 } as const;
export type CompressorName = keyof typeof COMPRESSOR;
/** Compressor names by superblock id. */
export const COMPRESSOR_NAMES: Readonly<Record<number, CompressorName>> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

export const GZIP_DEFAULT_LEVEL = 9;
export const GZIP_WINDOW_BITS = 15;
export const ZSTD_DEFAULT_LEVEL = 15;
const LZ4_LEGACY = 1;

/** What the writer accepts for `--comp`. */
export type SquashCompressor = 'gzip' | 'zstd' | 'xz' | 'lz4';

export const SQUASHFS_CODECS: CodecChoice = {
  format: 'SquashFS',
  names: ['zstd', 'gzip', 'lz4'],
  defaultLevel: { gzip: GZIP_DEFAULT_LEVEL, zstd: ZSTD_DEFAULT_LEVEL },
  notWritten: ['xz'],
};

/** Validates a compressor and level for the writer (ERR_IMAGE_OPTIONS with a hint). */
export function squashCodecSpec(name: string, level?: number): CodecSpec {
  return resolveCodecSpec(name, level, SQUASHFS_CODECS);
}

/** The options payload for `spec`, or undefined when none is written. */
export function encodeCompressorOptions(spec: CodecSpec): Buffer | undefined {
  switch (spec.name) {
    case 'lz4': {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(LZ4_LEGACY, 0); // the only LZ4 stream version SquashFS knows
      b.writeUInt32LE(0, 4);
      return b;
    }
    case 'gzip': {
      if (spec.level === GZIP_DEFAULT_LEVEL) return undefined;
      const b = Buffer.alloc(8);
      b.writeUInt32LE(spec.level, 0);
      b.writeUInt16LE(GZIP_WINDOW_BITS, 4);
      b.writeUInt16LE(0, 6);
      return b;
    }
    case 'zstd': {
      if (spec.level === ZSTD_DEFAULT_LEVEL) return undefined;
      const b = Buffer.alloc(4);
      b.writeUInt32LE(spec.level, 0);
      return b;
    }
  }
}

/**
 * What the reader needs from an options payload: undefined when it can read the image, else
 * why not. Only lz4's version matters to decoding (gzip, zstd and xz options tune the encoder).
 */
export function unreadableOptions(compressor: string, payload: Buffer): string | undefined {
  if (compressor === 'lz4' && (payload.length < 8 || payload.readUInt32LE(0) !== LZ4_LEGACY)) return 'an LZ4 format version strata cannot read';
  return undefined;
}

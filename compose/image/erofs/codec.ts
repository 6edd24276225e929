/**
 * EROFS compression settings: which compressors strata writes, their levels, the
 * superblock configuration record of each, and the decompressors its reader uses.
 *
 * The compressors themselves are the shared ones (compose/image/shared/codecs.ts), because the
 * bytes an EROFS pcluster needs are the same: lz4 = one raw LZ4 block (the vendored liblz4,
 * "liblz4-1.9.4-m16"), zstd = one zstd frame (zstd-napi's
 * pinned libzstd). Extents go through the same worker pool and content-keyed block cache
 * (compose/image/shared/worker-pool.ts running compose/image/squashfs/block-job.ts, and
 * shared/block-cache.ts) with the extent size as "block size".
 *
 * deflate is not offered: erofs-utils 1.5 (Debian 12) could not check it (spec/erofs.md). lzma: no
 * byte-stable encoder reachable from Node.
 */
import { createRequire } from 'node:module';
import { StrataError, IMAGE_ERR } from '../errors.js';
import { resolveCodecSpec, type CodecChoice, type CodecSpec } from '../shared/codecs.js';
import { lz4Decompress } from '../shared/lz4.js';
import { ALG, PCLUSTER_MAX, BLOCK_SIZE } from './format.js';

export type ErofsCompressor = 'none' | 'lz4' | 'zstd';

export const ZSTD_DEFAULT_LEVEL = 6;
/** The compressor outputs should default to (spec/erofs.md: mounts on every kernel with EROFS). */
export const DEFAULT_EROFS_COMPRESSOR: ErofsCompressor = 'lz4';

const EROFS_CODECS: CodecChoice = {
  format: 'EROFS',
  names: ['lz4', 'zstd'],
  defaultLevel: { gzip: 9, zstd: ZSTD_DEFAULT_LEVEL },
};

export interface ErofsCodec {
  name: ErofsCompressor;
  /** Pool codec (absent for 'none'). */
  spec?: CodecSpec;
  /** Algorithm id in h_algorithmtype and the available_compr_algs bit. */
  alg: number;
}

/** Validates a compressor choice; ERR_IMAGE_OPTIONS with a hint when unusable. */
export function resolveErofsCodec(name: string, level?: number): ErofsCodec {
  switch (name) {
    case 'none':
      if (level !== undefined) throw new StrataError(IMAGE_ERR.OPTIONS, 'an uncompressed EROFS image has no level', { hint: 'leave out --level' });
      return { name, alg: -1 };
    case 'lz4':
      return { name, spec: resolveCodecSpec('lz4', level, EROFS_CODECS), alg: ALG.LZ4 };
    case 'zstd':
      return { name, spec: resolveCodecSpec('zstd', level ?? ZSTD_DEFAULT_LEVEL, EROFS_CODECS), alg: ALG.ZSTD };
    default:
      throw new StrataError(IMAGE_ERR.OPTIONS, `EROFS compressor "${name}" is not supported by strata's writer`, {
        hint: 'choose lz4, zstd or none',
      });
  }
}

/**
 * The configuration record that follows the superblock for `codec` (payload without the
 * le16 length): lz4 { le16 max_distance (0 = 64 KiB), le16 max_pclusterblks, 10 reserved },
 * zstd { u8 format (0), u8 windowlog − 10, 4 reserved }.
 */
export function configRecord(codec: ErofsCodec, extentSize: number): Buffer {
  if (codec.alg === ALG.LZ4) {
    const b = Buffer.alloc(14);
    b.writeUInt16LE(0, 0);
    b.writeUInt16LE(Math.min(extentSize, PCLUSTER_MAX) / BLOCK_SIZE, 2);
    return b;
  }
  const b = Buffer.alloc(6);
  b.writeUInt8(0, 0);
  b.writeUInt8(Math.max(Math.ceil(Math.log2(extentSize)), 10) - 10, 1);
  return b;
}

/** Decompresses one pcluster's payload (leading zero padding already skipped) to exactly `want` bytes at most `maxOut`. */
export type PclusterDecoder = (src: Buffer, maxOut: number) => Buffer;

interface ZstdBinding {
  decompress(dst: Uint8Array, src: Uint8Array): number;
}
let zstdBinding: ZstdBinding | undefined;

/** A pcluster's LZ4 stream, read until its output is whole (what follows may be padding). */
function lz4(src: Buffer, maxOut: number): Buffer {
  return lz4Decompress(src, maxOut, true);
}

function zstd(src: Buffer, maxOut: number): Buffer {
  zstdBinding ??= createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
  const dst = Buffer.allocUnsafe(maxOut);
  const n = zstdBinding.decompress(dst, src);
  return dst.subarray(0, n);
}

/** The decoder for an algorithm id, or undefined when strata cannot read it. */
export function decoderFor(alg: number): PclusterDecoder | undefined {
  if (alg === ALG.LZ4) return lz4;
  if (alg === ALG.ZSTD) return zstd;
  return undefined;
}

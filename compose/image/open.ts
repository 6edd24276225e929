/**
 * Opening an image of either format strata writes, by its magic (never by its name):
 * SquashFS ("hsqs" at offset 0) or EROFS (0xE0F5E1E2 little-endian at offset 1024).
 * Both readers have one shape, `ImageReader`: what extraction and `inspect` need.
 */
import { open } from 'node:fs/promises';
import { StrataError } from '../../native/errors.js';
import { IMAGE_ERR } from './errors.js';
import { SquashfsImage, type ImageEntry, type WalkOptions } from './squashfs/index.js';
import { ErofsImage } from './erofs/reader.js';
import type { Piece } from './shared/piece.js';

export type ImageFormat = 'squashfs' | 'erofs';

/** A read-only image: its entries in walk order (parents first) and its files' bytes. */
export interface ImageReader {
  readonly path: string;
  readonly superblock: { readonly blockSize: number; readonly inodes: number };
  /**
   * Every entry in canonical path order, parents first. A 'hardlink' entry's linkname is the
   * first name of its inode, an entry given earlier as its own type (not a directory).
   */
  walk(opts?: WalkOptions): AsyncGenerator<ImageEntry>;
  /** A regular file's bytes, holes as zeros, in chunks. */
  openFile(file: string | ImageEntry): AsyncGenerator<Buffer>;
  stat(path: string): Promise<ImageEntry | undefined>;
  readFile(path: string): Promise<Buffer>;
  close(): Promise<void>;
  /**
   * A regular file's content as pieces in file order: data, or a hole (no `data`) of `length`
   * zero bytes. Work grows with the pieces stored, not with the size of the holes.
   */
  contentPieces(file: string | ImageEntry): AsyncGenerator<Piece>;
}

export type { Piece };

const SQUASHFS_MAGIC = 0x73717368;
const EROFS_MAGIC = 0xe0f5e1e2;

/** The format of the image at `path` by its magic; ERR_IMAGE_CORRUPT when it is neither (or a directory). */
export async function imageFormat(path: string): Promise<ImageFormat> {
  const fh = await open(path, 'r');
  try {
    if ((await fh.stat()).isDirectory()) {
      throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is a directory, not an image file`, { hint: 'give the image file itself' });
    }
    const head = Buffer.alloc(1028);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead >= 4 && head.readUInt32LE(0) === SQUASHFS_MAGIC) return 'squashfs';
    if (bytesRead >= 1028 && head.readUInt32LE(1024) === EROFS_MAGIC) return 'erofs';
  } finally {
    await fh.close();
  }
  throw new StrataError(IMAGE_ERR.CORRUPT, `${path} is neither a SquashFS nor an EROFS image`, { hint: 'give an image written by strata (or mksquashfs / mkfs.erofs)' });
}

/** Opens the image at `path` with the reader of its format. The caller must close() it. */
export async function openImage(path: string): Promise<ImageReader & { format: ImageFormat }> {
  const format = await imageFormat(path);
  if (format === 'squashfs') {
    return Object.assign(await SquashfsImage.open(path), { format });
  }
  return Object.assign(await ErofsImage.open(path), { format });
}

/** The format an output name asks for: `.erofs` → EROFS, anything else SquashFS (unless given). */
export function formatOf(out: string, given?: string): ImageFormat {
  if (given !== undefined) {
    if (given !== 'squashfs' && given !== 'erofs') {
      throw new StrataError(IMAGE_ERR.OPTIONS, `unknown image format '${given}'`, { hint: 'use --format squashfs or --format erofs' });
    }
    return given;
  }
  return /\.erofs$/i.test(out) ? 'erofs' : 'squashfs';
}

/**
 * Opens tar sources that may be compressed, recognising the compression by its magic bytes
 * (never by file name):
 *
 *   1f 8b             gzip   → zlib gunzip (concatenated members are read as one stream)
 *   28 b5 2f fd       zstd   → libzstd's ZSTD_decompressStream through zstd-napi's binding,
 *                            pulled one output buffer at a time (several frames likewise)
 *   fd 37 7a 58 5a 00 xz, 42 5a 68 bzip2, 04 22 4d 18 lz4, 1f 9d compress, LZIP lzip
 *                            → refused with ERR_TAR_UNSUPPORTED and a hint to decompress first
 *   anything else     none   → passed through untouched (the tar reader judges it)
 *
 * Damaged compressed data gives one-line StrataErrors: ERR_TAR_CORRUPT, or ERR_TAR_TRUNCATED
 * when the compressed stream ends early. Errors of the source itself pass through unchanged.
 *
 * Memory is bounded whatever the ratio: output is produced only as the consumer asks for it
 * (a bomb of a few KB expanding to terabytes costs its output buffer, not its output), and a
 * zstd frame's window is held to libzstd's default limit (2^27 bytes); a frame asking for a
 * larger one (zstd --long=28 and up) is refused. Frame content sizes are never trusted for
 * allocation, so frames of any size stream.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Readable, Transform, pipeline } from 'node:stream';
import * as zlib from 'node:zlib';
import { printable } from '../../native/errors.js';
import { StrataError, STORE_ERR } from '../errors.js';

export type Compression = 'none' | 'gzip' | 'zstd';

export interface OpenedArchive {
  compression: Compression;
  /** Decompressed bytes. Iterate once; stopping early closes the underlying file/source. */
  stream: AsyncIterable<Buffer>;
}

/** Read size for archive files: large reads keep per-chunk overhead low on big layers. */
const READ_SIZE = 512 * 1024;
/** Output chunk size of the decompressors. */
const INFLATE_CHUNK = 256 * 1024;

const FOREIGN: Array<[magic: number[], name: string, tool: string]> = [
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz', 'xz -d'],
  [[0x42, 0x5a, 0x68], 'bzip2', 'bzip2 -d'],
  [[0x04, 0x22, 0x4d, 0x18], 'lz4', 'lz4 -d'],
  [[0x1f, 0x9d], 'compress (.Z)', 'uncompress'],
  [[0x4c, 0x5a, 0x49, 0x50], 'lzip', 'lzip -d'],
];

/**
 * Opens the file at `path` and sniffs its compression. The returned stream reads the file
 * lazily and closes it when iteration ends, fails or stops early.
 * Throws ERR_NOT_FOUND when the file does not exist, ERR_TAR_UNSUPPORTED for xz/bzip2/….
 */
export async function openArchive(path: string): Promise<OpenedArchive> {
  let fh;
  try {
    // O_NONBLOCK: a FIFO must not block the open; it is refused below like any non-file.
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new StrataError(STORE_ERR.NOT_FOUND, `${printable(path)}: no such file`, { hint: 'check the path', cause: e });
    }
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `${printable(path)} cannot be read (${code ?? (e as Error).message})`, { hint: 'check its permissions', cause: e });
  }
  const handle = fh;
  if (!(await handle.stat()).isFile()) {
    await handle.close();
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `${printable(path)} is not a regular file (a device, FIFO or socket)`, {
      hint: 'save the archive to a file first, then import the file',
    });
  }
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(READ_SIZE);
        const { bytesRead } = await handle.read(buf, 0, READ_SIZE, null);
        if (bytesRead === 0) return;
        yield bytesRead === READ_SIZE ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await handle.close();
    }
  }
  try {
    return await decompressStream(chunks(), path);
  } catch (e) {
    await handle.close().catch(() => {});
    throw e;
  }
}

/**
 * Same as openArchive for any byte source (a pipe, a blob read, an HTTP body). Reads just
 * enough of `source` to see the magic bytes; `name` only labels error messages.
 */
export async function decompressStream(source: AsyncIterable<Uint8Array>, name = 'archive'): Promise<OpenedArchive> {
  name = printable(name);
  const it = source[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  let ended = false;
  while (have < 6) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    const b = toBuffer(r.value);
    if (b.length === 0) continue;
    head.push(b);
    have += b.length;
  }
  const magic = head.length === 1 ? head[0]! : Buffer.concat(head);
  const starts = (m: number[]): boolean => magic.length >= m.length && m.every((c, i) => magic[i] === c);

  for (const [m, kind, tool] of FOREIGN) {
    if (starts(m)) {
      if (!ended) await it.return?.();
      throw new StrataError(STORE_ERR.TAR_UNSUPPORTED, `${name} is ${kind}-compressed; strata reads plain, gzip and zstd tars`, {
        hint: `decompress it first (${tool}) or recompress with gzip or zstd`,
      });
    }
  }

  // The sniffed chunks, then the rest of the source.
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      for (const b of head) yield b;
      if (ended) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield toBuffer(r.value);
      }
    } finally {
      // Early stop: close the source too. (A finished or failed iterator ignores this.)
      await it.return?.();
    }
  }

  if (starts([0x1f, 0x8b])) {
    return { compression: 'gzip', stream: inflate(replay(), zlib.createGunzip({ chunkSize: INFLATE_CHUNK }), 'gzip', name) };
  }
  if (starts([0x28, 0xb5, 0x2f, 0xfd])) {
    return { compression: 'zstd', stream: unzstd(replay(), name) };
  }
  return { compression: 'none', stream: replay() };
}

async function* inflate(src: AsyncIterable<Buffer>, t: Transform, kind: string, name: string): AsyncGenerator<Buffer> {
  // Errors raised by the source are marked so they pass through unchanged.
  let sourceError: unknown;
  async function* marked(): AsyncGenerator<Buffer> {
    try {
      yield* src;
    } catch (e) {
      sourceError = e;
      throw e;
    }
  }
  pipeline(Readable.from(marked(), { objectMode: false }), t, () => {});
  try {
    for await (const c of t) yield c as Buffer;
  } catch (e) {
    if (e === sourceError || e instanceof StrataError) throw e;
    throw compressionError(e, kind, name);
  } finally {
    t.destroy();
  }
}

/** The part of zstd-napi's low-level binding used here (wraps ZSTD_decompressStream). */
interface ZstdBinding {
  DCtx: new () => { decompressStream(dst: Uint8Array, src: Uint8Array): [ret: number, produced: number, consumed: number] };
  dStreamOutSize(): number;
}
let zstdBinding: ZstdBinding | undefined;

/**
 * zstd frames (one or several, skippable ones too) decoded as the consumer pulls: each step
 * fills at most one ZSTD_DStreamOutSize() buffer (128 KiB) and yields it before going on.
 */
async function* unzstd(src: AsyncIterable<Buffer>, name: string): AsyncGenerator<Buffer> {
  zstdBinding ??= createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
  const dctx = new zstdBinding.DCtx();
  const outSize = zstdBinding.dStreamOutSize();
  let inFrame = false;
  for await (const chunk of src) {
    let input = chunk;
    for (;;) {
      const out = Buffer.allocUnsafe(outSize);
      let step: [number, number, number];
      try {
        step = dctx.decompressStream(out, input);
      } catch (e) {
        throw compressionError(e, 'zstd', name);
      }
      const [ret, produced, consumed] = step;
      input = input.subarray(consumed);
      inFrame = ret !== 0;
      if (produced > 0) yield out.subarray(0, produced);
      // A full output buffer may leave more to flush; otherwise the input is what is needed.
      if (input.length === 0 && produced < outSize) break;
    }
  }
  if (inFrame) {
    throw new StrataError(STORE_ERR.TAR_TRUNCATED, `${name}: the zstd data ends early`, {
      hint: 'the archive is incomplete; download or copy it again',
    });
  }
}

function compressionError(e: unknown, kind: string, name: string): StrataError {
  const err = e as NodeJS.ErrnoException;
  const msg = String(err?.message ?? e);
  const early = err?.code === 'Z_BUF_ERROR' || /unexpected end|ended in middle|truncated/i.test(msg);
  if (/too much memory/i.test(msg)) {
    return new StrataError(STORE_ERR.TAR_UNSUPPORTED, `${name}: the ${kind} frame needs a window larger than 128 MiB to decode`, {
      hint: 'recompress with zstd --long=27 or less, or without --long',
      cause: e,
    });
  }
  if (early) {
    return new StrataError(STORE_ERR.TAR_TRUNCATED, `${name}: the ${kind} data ends early`, {
      hint: 'the archive is incomplete; download or copy it again',
      cause: e,
    });
  }
  return new StrataError(STORE_ERR.TAR_CORRUPT, `${name}: the ${kind} data is corrupt (${msg.split('\n')[0]})`, {
    hint: 'the archive is damaged; download or copy it again',
    cause: e,
  });
}

function toBuffer(v: Uint8Array): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

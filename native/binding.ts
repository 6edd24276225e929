/**
 * Loader for the strata_native addon (native/addon.c, built by `node-gyp rebuild`, which
 * `npm install` runs). Only modules under native/ import this; everything else uses
 * native/xattr.ts, native/fsops.ts, native/acl.ts and native/ids.ts.
 */
import { createRequire } from 'node:module';
import { NATIVE_ERR, StrataError } from './errors.js';

/** Raw addon surface; see native/addon.c for the exact semantics of each call. */
export interface NativeAddon {
  lgetxattr(path: string | Buffer, name: string): Buffer | undefined;
  lsetxattr(path: string | Buffer, name: string, value: Uint8Array, flags?: number): void;
  llistxattr(path: string | Buffer): string[];
  lremovexattr(path: string | Buffer, name: string): void;
  getpwnam(name: string): number | undefined;
  getgrnam(name: string): number | undefined;
  /** O_TMPFILE as the C headers define it on this architecture. */
  O_TMPFILE: number;
  openat(dirfd: number, path: string | Buffer, flags: number, mode: number): number;
  openBeneath(dirfd: number, path: string | Buffer, flags: number, mode: number): number;
  mkdirat(dirfd: number, name: string | Buffer, mode: number): void;
  mknodat(dirfd: number, name: string | Buffer, mode: number, major: number, minor: number): void;
  symlinkat(target: string | Buffer, dirfd: number, name: string | Buffer): void;
  linkat(olddirfd: number, oldname: string | Buffer, newdirfd: number, newname: string | Buffer): void;
  renameat2(olddirfd: number, oldname: string | Buffer, newdirfd: number, newname: string | Buffer, flags: number): void;
  unlinkat(dirfd: number, name: string | Buffer, flags: number): void;
  fchownat(dirfd: number, name: string | Buffer, uid: number, gid: number, flags: number): void;
  fchmodat(dirfd: number, name: string | Buffer, mode: number, flags: number): void;
  utimensat(dirfd: number, name: string | Buffer, seconds: number, flags: number): void;
  fstatat(dirfd: number, name: string | Buffer, flags: number): { dev: number; ino: number; mode: number; uid: number; gid: number; nlink: number };
  fsetxattr(fd: number, name: string, value: Uint8Array, flags?: number): void;
  fremovexattr(fd: number, name: string): void;
  readdirfd(fd: number): Buffer[];
  rmtreeat(dirfd: number, name: string | Buffer): void;
  /** `size` bytes, uninitialised, the first at a multiple of 4096 (O_DIRECT writes). */
  alignedBuffer(size: number): Buffer;
  zlibCompress(src: Uint8Array, level: number): Buffer;
  zlibDecompress(dst: Uint8Array, src: Uint8Array): number;
  libdeflateVersion: string;
  lz4Compress(src: Uint8Array): Buffer;
  lz4Version: string;
  extractAvailable(): boolean;
  extractOpen(blobFd: number, rootFd: number): unknown;
  extractRun(session: unknown, batch: Buffer, count: number, last: boolean): Promise<unknown>;
  extractClose(session: unknown): void;
  /** Creates, writes and finishes files beneath rootFd on libuv's pool (native/files.c). */
  writeFiles(rootFd: number, batch: Buffer, count: number, body: Buffer): Promise<unknown>;
  /** A sha256 stream (native/sha256.c): one update at a time, each on a thread of libuv's pool. */
  hashOpen(): unknown;
  /** Hashes `bytes` on the pool; they stay as they are, and the stream untouched, until it settles. */
  hashUpdate(stream: unknown, bytes: Uint8Array): Promise<void>;
  /** The stream's digest (hex), once. */
  hashDigest(stream: unknown): string;
  /**
   * sha256 (hex) of `length` bytes of `src` from `srcAt`, written to `dst` at `dstAt` as they
   * are read (dst -1: only hashed), on a thread of libuv's pool (native/sha256.c). `writeback`:
   * the writeback of what was written is started as it goes (sync_file_range, every 16 MiB).
   */
  hashCopy(src: number, srcAt: number, length: number, dst: number, dstAt: number, writeback?: boolean): Promise<string>;
  /**
   * Hashes `length` bytes of `fd` from `at` into a stream from hashOpen, on the pool, as
   * hashUpdate hashes bytes: one at a time, the stream untouched until it settles.
   */
  hashRead(stream: unknown, fd: number, at: number, length: number): Promise<void>;
  /** sha256 of `data` into out[0, 32), on the calling thread (native/sha256.c). */
  sha256Into(data: Uint8Array, out: Uint8Array): void;
  /** A file read in sequence into `slots` on a thread of its own (native/readahead.c). */
  readAheadOpen(fd: number, from: number, end: number, slots: Buffer[]): unknown;
  /** Bytes in the ring's next slot, once filled (0 at the end); the slot before it stays intact until the next take. */
  readAheadTake(handle: unknown): number;
  readAheadSeek(handle: unknown, pos: number): void;
  readAheadClose(handle: unknown): void;
}

// From source (native/*.ts under tsx) the build dir is one level up; from dist/native/*.js two.
const CANDIDATES = ['../build/Release/strata_native.node', '../../build/Release/strata_native.node'];

let loaded: NativeAddon | undefined;

/** The addon, loaded on first use. Throws StrataError NATIVE_UNAVAILABLE if it is not built. */
export function addon(): NativeAddon {
  if (loaded !== undefined) return loaded;
  const require = createRequire(import.meta.url);
  for (const rel of CANDIDATES) {
    try {
      loaded = require(rel) as NativeAddon;
      return loaded;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') continue;
      throw new StrataError(NATIVE_ERR.UNAVAILABLE, `cannot load the native addon ${rel}: ${(e as Error).message}`, {
        hint: 'rebuild it with `npm run install` (node-gyp rebuild) for this Node version',
        cause: e,
      });
    }
  }
  throw new StrataError(NATIVE_ERR.UNAVAILABLE, 'the native addon build/Release/strata_native.node is missing', {
    hint: 'build it with `npm run install` (node-gyp rebuild; needs python3, make and a C compiler)',
  });
}

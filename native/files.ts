/**
 * Files whose contents this thread holds, created, written and finished beneath a tree's root
 * by a thread of libuv's pool (native/files.c): `strata unsquash`'s files, read out of an
 * image here while the previous batch is written there. Also how a written file is finished
 * (`FileFinish`), which layer extraction (native/extract.ts) carries the same way.
 */
import * as util from 'node:util';
import { addon } from './binding.js';

/**
 * Owner, mode, access ACL and mtime of a written file, applied on the other thread, the file then closed.
 * The caller decides them (compose/tree/writer.ts, TreeWriter.plainFinish).
 */
export interface FileFinish {
  /**
   * fchown to (uid, gid) first; uid -1 leaves the owner. With `strict`, a refusal (EPERM)
   * fails the batch; without, EPERM and EINVAL are a refusal (`refused` in the result).
   */
  chown?: { uid: number; gid: number; strict: boolean };
  /** The mode when the chown was done or not asked for; `modeRefused` when it was refused. */
  mode: number;
  modeRefused: number;
  /** Seconds since the epoch, for atime and mtime. */
  mtime: number;
  /**
   * A system.posix_acl_access value, set after the mode. A file whose ACL is refused (EPERM,
   * EACCES, ENOTSUP, or EINVAL: an id this user namespace does not map), or whose chown is,
   * comes back open for the caller to finish: its mode must be narrowed instead.
   */
  acl?: Uint8Array;
}

/** What a batch of files came to. */
export interface BatchResult {
  /** Per file: its open descriptor when handed back, -1 finished, -2 not reached. */
  fds: Int32Array;
  /** Per file: 1 when its chown was refused. */
  refused: Uint8Array;
  /** The index of the file that failed (`error`), or -1. */
  failed: number;
  error?: NodeJS.ErrnoException;
}

/** A file to write, its content in memory. */
export interface HeldFile {
  /** Where the file goes, relative to the root (created there, never through a symlink). */
  path: string;
  /** Its bytes, by where they go; what lies between and after them is a hole. Increasing, not overlapping, none empty. */
  pieces: readonly { offset: number; data: Uint8Array }[];
  size: number;
  /** Undefined: the file comes back open, written, for the caller to finish (BatchResult.fds). */
  finish?: FileFinish;
}

/** Bytes of a finish record (native/files.c). */
export const FINISH_RECORD = 32;
const F_FINISH = 1;
const F_CHOWN = 2;
const F_STRICT = 4;
const HEAD = 48;

/** The finish record of `fin` (or of a file handed back) at `at`; its ACL value goes after the record's paths (packFinishAcl). */
export function packFinish(b: Buffer, at: number, fin: FileFinish | undefined): void {
  const flags = (fin ? F_FINISH : 0) | (fin?.chown ? F_CHOWN : 0) | (fin?.chown?.strict ? F_STRICT : 0);
  b.writeUInt32LE(flags, at);
  b.writeUInt32LE((fin?.chown?.uid ?? 0) >>> 0, at + 4);
  b.writeUInt32LE((fin?.chown?.gid ?? 0) >>> 0, at + 8);
  b.writeUInt32LE(fin?.mode ?? 0, at + 12);
  b.writeUInt32LE(fin?.modeRefused ?? 0, at + 16);
  b.writeUInt32LE(fin?.acl?.length ?? 0, at + 20);
  b.writeDoubleLE(fin?.mtime ?? 0, at + 24);
}

/** The bytes of `fin`'s ACL value, put at `at`: how many. */
export function packFinishAcl(b: Buffer, at: number, fin: FileFinish | undefined): number {
  if (!fin?.acl) return 0;
  b.set(fin.acl, at);
  return fin.acl.length;
}

/** A batch's result as native/files.c gives it. */
export interface RawBatchResult {
  fds: Int32Array;
  refused: Uint8Array;
  failed: number;
  errno?: number;
  syscall?: string;
}

/** A raw batch result with its failure as an fs error naming the file. */
export function batchResult(r: RawBatchResult, pathOf: (i: number) => string): BatchResult {
  const result: BatchResult = { fds: r.fds, refused: r.refused, failed: r.failed };
  if (r.errno !== undefined) result.error = errnoError(r.errno, r.syscall ?? 'read', r.failed >= 0 ? pathOf(r.failed) : undefined);
  return result;
}

/**
 * The memory one writer packs its batches into, batch after batch: a fresh body of megabytes
 * per batch cost a page fault for every 4 KiB copied into it (a fifth of a second of a
 * 200,000-file unsquash). For a writer that sends a batch only once the one before it has
 * settled (compose/tree/held.ts); grown as needed, never shrunk.
 */
export class BatchBuffers {
  private head = Buffer.alloc(0);
  private body = Buffer.alloc(0);

  /** Room for a batch's records and its body, exactly `size` and `bodySize` bytes long. */
  take(size: number, bodySize: number): { b: Buffer; body: Buffer } {
    if (this.head.length < size) this.head = Buffer.allocUnsafe(roundUp(size, 64 << 10));
    if (this.body.length < bodySize) this.body = Buffer.allocUnsafe(roundUp(bodySize, 1 << 20));
    return { b: this.head.subarray(0, size), body: this.body.subarray(0, bodySize) };
  }
}

const roundUp = (n: number, unit: number) => Math.ceil(n / unit) * unit;

/**
 * Creates, writes and (those with `finish`) finishes `files` beneath `rootFd`, in order, on a
 * thread of libuv's pool; stops at the first failure. `rootFd` and the pieces must stay as
 * they are until the promise settles. Batches may run at once (their paths apart), unless
 * they are packed into the same `into`.
 */
export async function writeFiles(rootFd: number, files: readonly HeldFile[], into?: BatchBuffers): Promise<BatchResult> {
  let size = 0;
  let bodySize = 0;
  for (const f of files) {
    size += HEAD + Buffer.byteLength(f.path) + (f.finish?.acl?.length ?? 0) + 16 * f.pieces.length;
    for (const p of f.pieces) bodySize += p.data.length;
  }
  const { b, body } = into ? into.take(size, bodySize) : { b: Buffer.allocUnsafe(size), body: Buffer.allocUnsafe(bodySize) };
  let at = 0;
  let bodyAt = 0;
  for (const f of files) {
    const pl = b.write(f.path, at + HEAD);
    b.writeUInt32LE(pl, at);
    b.writeUInt32LE(f.pieces.length, at + 4);
    packFinish(b, at + 8, f.finish);
    b.writeDoubleLE(f.size, at + 40);
    at += HEAD + pl;
    at += packFinishAcl(b, at, f.finish);
    for (const p of f.pieces) {
      b.writeDoubleLE(p.offset, at);
      b.writeDoubleLE(p.data.length, at + 8);
      body.set(p.data, bodyAt);
      bodyAt += p.data.length;
      at += 16;
    }
  }
  const r = (await addon().writeFiles(rootFd, b, files.length, body)) as RawBatchResult;
  return batchResult(r, (i) => files[i]!.path);
}

/** An error shaped as Node's fs errors are (code, errno, syscall, "CODE: description, syscall"). */
function errnoError(errno: number, syscall: string, path?: string): NodeJS.ErrnoException {
  const [code, description] = util.getSystemErrorMap().get(-errno) ?? [`E${errno}`, 'unknown error'];
  const e: NodeJS.ErrnoException = new Error(`${code}: ${description}, ${syscall}${path ? ` '${path}'` : ''}`);
  e.code = code;
  e.errno = -errno;
  e.syscall = syscall;
  if (path) e.path = path;
  return e;
}

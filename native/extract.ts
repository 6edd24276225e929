/**
 * Layer extraction on libuv's pool (native/extract.c): one pass over a canonical layer blob
 * that hashes all of it, hashes the entry list its headers give, and writes the files a plan
 * wants from it beneath a tree's root. The caller (compose/tree/layers.ts) decides everything about
 * each file (where it goes, which member's body it gets, its owner, mode and mtime); this
 * module only carries those decisions to the other thread and the outcome back.
 */
import * as util from 'node:util';
import { addon } from './binding.js';

/** A file to write from the layer, in the layer's order. */
export interface ExtractFile {
  /** The member whose body the file gets: its path in the layer's tar. */
  tarPath: string;
  /** Where the file goes, relative to the root (created there, never through a symlink). */
  path: string;
  /**
   * Owner, mode and mtime applied on the other thread, the file then closed. Undefined: the
   * file comes back open, written, for the caller to finish (ExtractResult.fds).
   */
  finish?: ExtractFinish;
}

export interface ExtractFinish {
  /**
   * fchown to (uid, gid) first; uid -1 leaves the owner. With `strict`, a refusal (EPERM)
   * fails the build; without, EPERM and EINVAL are a refusal (ExtractResult.refused).
   */
  chown?: { uid: number; gid: number; strict: boolean };
  /** The mode when the chown was done or not asked for; `modeRefused` when it was refused. */
  mode: number;
  modeRefused: number;
  /** Seconds since the epoch, for atime and mtime. */
  mtime: number;
}

export interface ExtractResult {
  /** Per file: its open descriptor when handed back, -1 finished, -2 not reached. */
  fds: Int32Array;
  /** Per file: 1 when its chown was refused. */
  refused: Uint8Array;
  /** The failure of one file (`failed` its index) or of reading the layer (`failed` -1). */
  failed: number;
  error?: NodeJS.ErrnoException;
  /** The blob is not a tar this reader follows, or lacks a file the batch names. */
  problem?: string;
  /**
   * After the last batch (or a problem): sha256 of the whole blob, and of the entry list its
   * headers give, as the store's cache holds it.
   */
  blob?: string;
  rows?: string;
}

const F_FINISH = 1;
const F_CHOWN = 2;
const F_STRICT = 4;
const HEAD = 40;

interface RawResult {
  fds: Int32Array;
  refused: Uint8Array;
  failed: number;
  errno?: number;
  syscall?: string;
  problem?: string;
  blob?: string;
  rows?: string;
}

/** True when native extraction can run in this process (its sha256 comes from Node's libcrypto). */
export function extractAvailable(): boolean {
  return addon().extractAvailable();
}

/** One layer blob read once by a native session; runs never overlap. */
export class LayerExtraction {
  private readonly session: unknown;

  /** `blobFd` and `rootFd` stay the caller's and must stay open until close(). */
  constructor(blobFd: number, rootFd: number) {
    this.session = addon().extractOpen(blobFd, rootFd);
  }

  /**
   * Writes `files` (the next ones of the layer, in its order), reading the blob as far as
   * they need; with `last`, on to the blob's end, for its digests. Wait for one run before
   * starting the next.
   */
  async run(files: readonly ExtractFile[], last: boolean): Promise<ExtractResult> {
    const r = (await addon().extractRun(this.session, pack(files), files.length, last)) as RawResult;
    const result: ExtractResult = { fds: r.fds, refused: r.refused, failed: r.failed, problem: r.problem, blob: r.blob, rows: r.rows };
    if (r.errno !== undefined) result.error = errnoError(r.errno, r.syscall ?? 'read', r.failed >= 0 ? files[r.failed]!.path : undefined);
    return result;
  }

  close(): void {
    addon().extractClose(this.session);
  }
}

/** The batch as extract.c reads it: a 40-byte head per file, then its two paths. */
function pack(files: readonly ExtractFile[]): Buffer {
  let size = 0;
  for (const f of files) size += HEAD + Buffer.byteLength(f.tarPath) + Buffer.byteLength(f.path);
  const b = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of files) {
    const fin = f.finish;
    const tl = b.write(f.tarPath, at + HEAD);
    const pl = b.write(f.path, at + HEAD + tl);
    const flags = (fin ? F_FINISH : 0) | (fin?.chown ? F_CHOWN : 0) | (fin?.chown?.strict ? F_STRICT : 0);
    b.writeUInt32LE(tl, at);
    b.writeUInt32LE(pl, at + 4);
    b.writeUInt32LE(flags, at + 8);
    b.writeUInt32LE((fin?.chown?.uid ?? 0) >>> 0, at + 12);
    b.writeUInt32LE((fin?.chown?.gid ?? 0) >>> 0, at + 16);
    b.writeUInt32LE(fin?.mode ?? 0, at + 20);
    b.writeUInt32LE(fin?.modeRefused ?? 0, at + 24);
    b.writeUInt32LE(0, at + 28);
    b.writeDoubleLE(fin?.mtime ?? 0, at + 32);
    at += HEAD + tl + pl;
  }
  return b;
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

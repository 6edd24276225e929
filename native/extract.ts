/**
 * Layer extraction on libuv's pool (native/extract.c): one pass over a canonical layer blob
 * that hashes all of it, hashes the entry list its headers give, and writes the files a plan
 * wants from it beneath a tree's root. The caller (compose/tree/layers.ts) decides everything about
 * each file (where it goes, which member's body it gets, its owner, mode, access ACL and mtime); this
 * module only carries those decisions to the other thread and the outcome back.
 */
import { addon } from './binding.js';
import { batchResult, FINISH_RECORD, packFinish, packFinishAcl, type BatchResult, type FileFinish, type RawBatchResult } from './files.js';

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
  finish?: FileFinish;
}

export interface ExtractResult extends BatchResult {
  /** The blob is not a tar this reader follows, or lacks a file the batch names. */
  problem?: string;
  /**
   * After the last batch (or a problem): sha256 of the whole blob, and of the entry list its
   * headers give, as the store's cache holds it.
   */
  blob?: string;
  rows?: string;
}

const HEAD = 8 + FINISH_RECORD;

interface RawResult extends RawBatchResult {
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
    return { ...batchResult(r, (i) => files[i]!.path), problem: r.problem, blob: r.blob, rows: r.rows };
  }

  close(): void {
    addon().extractClose(this.session);
  }
}

/** The batch as extract.c reads it: a 40-byte head per file, then its two paths and its finish's ACL value. */
function pack(files: readonly ExtractFile[]): Buffer {
  let size = 0;
  for (const f of files) size += HEAD + Buffer.byteLength(f.tarPath) + Buffer.byteLength(f.path) + (f.finish?.acl?.length ?? 0);
  const b = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of files) {
    const tl = b.write(f.tarPath, at + HEAD);
    const pl = b.write(f.path, at + HEAD + tl);
    b.writeUInt32LE(tl, at);
    b.writeUInt32LE(pl, at + 4);
    packFinish(b, at + 8, f.finish);
    at += HEAD + tl + pl;
    at += packFinishAcl(b, at, f.finish);
  }
  return b;
}

/**
 * Tar sources (plain, gzip, zstd). A compressed archive is first decompressed into the store's
 * tmp/ so that the canonical tar can read each body by offset, in sorted order, without holding
 * any of it in memory; a plain archive is read in place.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { aclFromTarText, splitAclXattrs } from './acl-ingest.js';
import { openArchive } from './decompress.js';
import { LayerBuilder } from '../layer/builder.js';
import { readTarFile } from '../tar/reader.js';
import type { EntryAcl } from '../types.js';

export interface TarSourceOptions {
  /** A temp path the decompressed archive may be written to (removed by the caller). */
  spoolPath: string;
}

export async function addTar(builder: LayerBuilder, file: string, opts: TarSourceOptions): Promise<{ spooled: boolean }> {
  const { compression, stream } = await openArchive(file);
  let plain = file;
  if (compression !== 'none') {
    await pipeline(Readable.from(stream), fs.createWriteStream(opts.spoolPath, { mode: 0o600 }));
    plain = opts.spoolPath;
  } else {
    // openArchive opened the file to sniff it; we read it again by offset below.
    for await (const _ of stream) break;
  }
  // One descriptor serves every member's content (positional reads): opening and closing
  // a stream per member costs more than reading a small file.
  const fd = fs.openSync(plain, 'r');
  builder.defer(() => fs.closeSync(fd));
  // Entries that inherit global pax xattrs share one map; split it once, not per entry.
  const split = new WeakMap<ReadonlyMap<string, Buffer>, { xattrs: Map<string, Buffer>; acl: EntryAcl | undefined }>();
  for await (const { header: h } of readTarFile(plain)) {
    let s = split.get(h.xattrs);
    if (s === undefined) {
      const xattrs = new Map(h.xattrs);
      s = { xattrs, acl: splitAclXattrs(xattrs, h.path) };
      split.set(h.xattrs, s);
    }
    const { xattrs } = s;
    const acl = aclFromTarText({ access: h.aclAccess, default: h.aclDefault }, s.acl, h.path);
    const start = h.dataOffset;
    const size = h.size;
    builder.add(
      {
        path: h.path,
        type: h.type,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        mtime: h.mtime,
        size: h.type === 'file' ? size : 0,
        linkname: h.type === 'symlink' || h.type === 'hardlink' ? h.linkname : undefined,
        devmajor: h.type === 'char' || h.type === 'block' ? h.devmajor : undefined,
        devminor: h.type === 'char' || h.type === 'block' ? h.devminor : undefined,
        xattrs,
        acl,
      },
      h.type === 'file' && size > 0 ? () => readRange(fd, start, size) : undefined,
    );
  }
  return { spooled: plain !== file };
}

export async function removeSpool(p: string): Promise<void> {
  await fsp.rm(p, { force: true });
}

/**
 * `size` bytes at `start` of `fd`, in chunks of up to 1 MiB. Synchronous reads from the page
 * cache are cheap, and the blob writes they feed run in the thread pool meanwhile.
 */
async function* readRange(fd: number, start: number, size: number): AsyncGenerator<Buffer> {
  let pos = start;
  let left = size;
  while (left > 0) {
    const buf = Buffer.allocUnsafe(Math.min(left, 1 << 20));
    const got = fs.readSync(fd, buf, 0, buf.length, pos);
    if (got === 0) return; // the builder reports the short member
    pos += got;
    left -= got;
    yield got === buf.length ? buf : buf.subarray(0, got);
  }
}

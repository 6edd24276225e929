/**
 * Tar sources (plain, gzip, zstd). A compressed archive is first decompressed into the store's
 * tmp/ so that the canonical tar can read each body by offset, in sorted order, without holding
 * any of it in memory; a plain archive is read in place.
 */
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { aclFromTarText, splitAclXattrs } from './acl-ingest.js';
import { openArchive } from './decompress.js';
import { LayerBuilder } from './layer-builder.js';
import { readTarFile } from './tar-reader.js';

export interface TarSourceOptions {
  /** A temp path the decompressed archive may be written to (removed by the caller). */
  spoolPath: string;
  onEntry?(bytes: number): void;
}

export async function addTar(builder: LayerBuilder, file: string, opts: TarSourceOptions): Promise<{ spooled: boolean }> {
  const { compression, stream } = await openArchive(file);
  let plain = file;
  if (compression !== 'none') {
    await pipeline(Readable.from(stream), createWriteStream(opts.spoolPath, { mode: 0o600 }));
    plain = opts.spoolPath;
  } else {
    // openArchive opened the file to sniff it; we read it again by offset below.
    for await (const _ of stream) break;
  }
  for await (const { header: h } of readTarFile(plain)) {
    const xattrs = new Map(h.xattrs);
    const acl = aclFromTarText({ access: h.aclAccess, default: h.aclDefault }, splitAclXattrs(xattrs, h.path), h.path);
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
      h.type === 'file' && size > 0 ? () => createReadStream(plain, { start, end: start + size - 1, highWaterMark: 1 << 20 }) : undefined,
    );
    opts.onEntry?.(size);
  }
  return { spooled: plain !== file };
}

export async function removeSpool(p: string): Promise<void> {
  await fsp.rm(p, { force: true });
}

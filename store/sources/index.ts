/**
 * One dispatch for every kind of source a layer is imported from. `addSource` recognises
 * what it was given and feeds it to the layer builder:
 *
 *   oci:DIR[:TAG]             an OCI image layout (all layers merged into one)
 *   docker-archive:FILE       `docker save` output
 *   DIR                       a directory (with `overlay`: an overlayfs upperdir); a directory
 *                             holding an OCI layout (`oci-layout` beside `index.json`) is read
 *                             as oci:DIR, giving the same layer as with the prefix
 *   FILE                      a tar, plain, gzip or zstd; one that is `docker save` output is
 *                             read as docker-archive:FILE, one that packs an OCI layout is
 *                             refused with a hint (extract it, give oci:DIR)
 *
 * A FILE must be a regular file: devices, FIFOs and sockets are refused (they may never end).
 * Temp files it needs (decompressed spools) are named by `spool` and removed by the caller.
 */
import * as fsp from 'node:fs/promises';
import { printable } from '../../native/errors.js';
import { StrataError, STORE_ERR } from '../errors.js';
import type { LayerBuilder } from '../layer/builder.js';
import { addDirectory } from './dir.js';
import { addDockerArchive, addOciLayout, isOciLayout, type ImageConfigInfo } from './oci.js';
import { addPlainTar, imageArchiveKind, plainTar } from './tar.js';

export type { ImageConfigInfo } from './oci.js';

export interface SourceOptions {
  /** The source directory is an overlayfs upperdir (char 0/0 whiteouts, opaque markers). */
  overlay?: boolean;
}

export interface SourceResult {
  /** Things the source held that a layer cannot (sockets), as printable paths. */
  skipped: string[];
  /** An OCI image's config Env and Labels, for the module record. */
  image?: ImageConfigInfo;
}

export async function addSource(builder: LayerBuilder, source: string, opts: SourceOptions, spool: (tag: string) => string): Promise<SourceResult> {
  if (source.startsWith('oci:')) return { skipped: [], image: await addOciLayout(builder, source, spool) };
  if (source.startsWith('docker-archive:')) return { skipped: [], image: await addDockerArchive(builder, source.slice('docker-archive:'.length), spool) };
  const st = await fsp.stat(source).catch(() => {
    throw new StrataError(STORE_ERR.NOT_FOUND, `source '${printable(source)}' does not exist`, { hint: 'give a tar file, a directory, oci:DIR[:TAG] or docker-archive:FILE' });
  });
  if (st.isDirectory()) {
    if (!opts.overlay && (await isOciLayout(source))) return { skipped: [], image: await addOciLayout(builder, `oci:${source}`, spool) };
    return { skipped: (await addDirectory(builder, source, { overlay: opts.overlay })).skipped };
  }
  if (opts.overlay) throw new StrataError(STORE_ERR.SOURCE_INVALID, '--overlay takes an upperdir directory, not a file', { hint: 'give the overlay upperdir' });
  const plain = await plainTar(source, { spoolPath: spool('spool') });
  switch (await imageArchiveKind(plain)) {
    case 'docker-archive':
      return { skipped: [], image: await addDockerArchive(builder, plain, spool, source) };
    case 'oci-archive':
      throw new StrataError(STORE_ERR.SOURCE_INVALID, `${printable(source)} is an OCI layout packed in a tar (oci-archive), not a layer`, {
        hint: 'extract it into a directory and import oci:DIR',
      });
    default:
      await addPlainTar(builder, plain);
      return { skipped: [] };
  }
}

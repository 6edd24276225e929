/**
 * One dispatch for every kind of source a layer is imported from. `addSource` recognises
 * what it was given and feeds it to the layer builder:
 *
 *   oci:DIR[:TAG]             an OCI image layout (all layers merged into one)
 *   docker-archive:FILE       `docker save` output
 *   DIR                       a directory (with `overlay`: an overlayfs upperdir)
 *   FILE                      a tar, plain, gzip or zstd
 *
 * Temp files it needs (decompressed spools) are named by `spool` and removed by the caller.
 */
import * as fsp from 'node:fs/promises';
import { StrataError, STORE_ERR } from '../errors.js';
import type { LayerBuilder } from '../layer/builder.js';
import { addDirectory } from './dir.js';
import { addDockerArchive, addOciLayout, type ImageConfigInfo } from './oci.js';
import { addTar } from './tar.js';

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
    throw new StrataError(STORE_ERR.NOT_FOUND, `source '${source}' does not exist`, { hint: 'give a tar file, a directory, oci:DIR[:TAG] or docker-archive:FILE' });
  });
  if (st.isDirectory()) return { skipped: (await addDirectory(builder, source, { overlay: opts.overlay })).skipped };
  if (opts.overlay) throw new StrataError(STORE_ERR.SOURCE_INVALID, '--overlay takes an upperdir directory, not a file');
  await addTar(builder, source, { spoolPath: spool('spool') });
  return { skipped: [] };
}

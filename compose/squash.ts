/**
 * The SquashFS output: the merge plan streamed from the store into strata's own writer — no
 * sandbox on disk, no root needed for root-owned files, devices or trusted/security xattrs.
 *
 * Data layout (what makes it deterministic and cache-friendly): files are laid out layer by
 * layer in lock order, within a layer in canonical path order; each layer is its own fragment
 * group, so a layer's blocks and fragments depend on that layer alone and are found in the
 * block cache when only another layer changed. The embedded metadata comes last.
 *
 * ACLs: SquashFS cannot store them. They stay in /.strata/acl.json (with each path's original
 * mode), and each inode with an access ACL gets the mode and owning group of native/acl.ts
 * narrowedNode(), preferring the licence group of the module the path comes from: nobody
 * gets more than the ACL gave them, and the licence group keeps what it was granted.
 *
 * Licensed stacks (outputLicence): the image file is created for the licence group only (no
 * access for others), and the compressed blocks of restricted modules (and of the embedded
 * metadata) are cached in packs of that group with no access for others.
 */
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { aclFromText, narrowedNode } from '../native/acl.js';
import { StrataError, COMPOSE_ERR, isStrataError } from './errors.js';
import type { LoadedModule, StoreReader, LayerEntry } from '../store/index.js';
import { embeddedPlanned, forEachPlannedFile, type MergePlan } from './merge.js';
import type { EmbeddedFiles } from './embedded.js';
import { outputLicence, planOutput, withContentRestrictions } from './outputs.js';
import { checkErofsOptions, checkSquashOptions, ErofsWriter, imageFormat, SEGMENT_MAX_FILES, SquashfsWriter, type ErofsCompressor, type ImageFormat, type SquashOptions } from './image/index.js';
import { cacheSecret as userCacheSecret, METADATA_TAG } from './caches.js';
import { IMAGE_ERR } from './image/errors.js';

export interface ImageOptions {
  /** squashfs (default) or erofs. */
  format?: ImageFormat;
  /** SquashFS: zstd (default), gzip, lz4; EROFS: lz4 (default), zstd, none. */
  compressor?: SquashOptions['compressor'] | ErofsCompressor;
  level?: number;
  blockSize?: number;
  workers?: number;
  /** false disables the block cache (benchmarks of cold runs delete it instead). */
  cache?: boolean;
  /** Replace an OUT that is not an image (without it, only an image is ever replaced). */
  force?: boolean;
  onProgress?(done: number, total: number): void;
}

export interface ImageResult {
  out: string;
  sha256: string;
  bytes: number;
  entries: number;
  /** Paths whose POSIX ACLs live only in /.strata/acl.json. */
  aclPaths: number;
  cacheHits: number;
  cacheMisses: number;
  /** Layers placed whole from segments of the user's earlier builds (not read; their blocks count as hits). */
  segmentHits: number;
}

/**
 * What an image stores for an entry with an access ACL (the ACL itself goes to
 * /.strata/acl.json): narrowedNode's mode and, when it moves the node to a group the ACL names
 * (`prefer`: the licence group's gid, for entries of a restricted module), that owning group.
 */
export function imageEntry(e: LayerEntry, prefer?: number): LayerEntry {
  if (!e.acl?.access) return e;
  const n = narrowedNode(e.mode, aclFromText(e.acl.access), prefer === undefined ? {} : { prefer });
  return { ...e, mode: n.mode, ...(n.gid !== undefined ? { gid: n.gid } : {}) };
}

/** Throws ERR_IMAGE_OPTIONS (with a hint) for options no image can be built with. */
export function checkImageOptions(opts: ImageOptions): void {
  if (opts.format === 'erofs') {
    checkErofsOptions({ compressor: (opts.compressor ?? 'lz4') as ErofsCompressor, level: opts.level, extentSize: opts.blockSize, workers: opts.workers });
  } else {
    checkSquashOptions({ compressor: (opts.compressor ?? 'zstd') as SquashOptions['compressor'], level: opts.level, blockSize: opts.blockSize, workers: opts.workers });
  }
}

/** What buildImage needs of a format's writer (SquashfsWriter and ErofsWriter both are one). */
interface ImageSink {
  addEntry(e: LayerEntry): void;
  addFile(e: LayerEntry, body: AsyncIterable<Uint8Array>, group: string, opts: { cacheGid?: number }, origin?: number): Promise<void>;
  /** Opens a group (a layer); true when the writer placed it whole from a segment (SquashfsWriter.beginGroup, ErofsWriter.beginGroup). */
  beginGroup(group: string, opts: { cacheGid?: number }, identity: string | undefined, files: () => Iterable<LayerEntry>): Promise<boolean>;
  finish(): Promise<{ sha256: string; bytes: number; cacheHits: number; cacheMisses: number; segmentHits?: number }>;
  abort(): Promise<void>;
}

async function createSink(out: string, store: StoreReader & { cacheDir?: string }, opts: ImageOptions, gid: number | undefined, expectedFiles: number, useSegments: boolean): Promise<ImageSink> {
  const cacheDir = opts.cache === false ? undefined : store.cacheDir;
  const scratchDir = await store.scratchDir();
  const cacheSecret = cacheDir === undefined ? undefined : userCacheSecret();
  const access = gid !== undefined ? { access: { gid } } : {};
  if (opts.format === 'erofs') {
    return ErofsWriter.create(out, { compressor: (opts.compressor ?? 'lz4') as ErofsCompressor, level: opts.level, extentSize: opts.blockSize, workers: opts.workers, cacheDir, cacheSecret, scratchDir, expectedFiles, useSegments, ...access });
  }
  return SquashfsWriter.create(out, {
    compressor: (opts.compressor ?? 'zstd') as SquashOptions['compressor'],
    level: opts.level,
    blockSize: opts.blockSize,
    workers: opts.workers,
    cacheDir,
    cacheSecret,
    scratchDir,
    expectedFiles,
    useSegments,
    mkfsTime: 0,
    // The tables name every path of the image: filed with its embedded files, and readable as the image is.
    tables: { tag: METADATA_TAG, ...(gid !== undefined ? { gid } : {}) },
    ...access,
  });
}

/**
 * Writes the stack as one image of `opts.format`. SquashFS cannot hold ACLs: paths with one
 * get the licence rule's narrowed mode and group (imageEntry). EROFS holds them: entries go in
 * as the layers have them, and the kernel enforces the ACLs on mount.
 */
/** `store` is any StoreReader; with a `cacheDir` the block cache is used (unless opts.cache is false). */
export async function buildImage(store: StoreReader & { cacheDir?: string }, mods: LoadedModule[], out: string, opts: ImageOptions = {}): Promise<ImageResult> {
  mods = await withContentRestrictions(store, mods);
  const licence = outputLicence(mods);
  await checkOutput(out, opts.force === true);
  // Layers a segment can hold are fingerprinted as the plan is made (layerIdentity).
  const { plan, embedded } = await planOutput(store, mods, { fingerprints: SEGMENT_MAX_FILES });
  try {
    return await writeImage(store, mods, out, opts, plan, embedded, true);
  } catch (e) {
    // A segment found damaged as it was copied (it is gone now): the same image, layers read.
    if (!isStrataError(e) || e.code !== IMAGE_ERR.SEGMENT_DAMAGED) throw e;
    return await writeImage(store, mods, out, opts, plan, embedded, false);
  } finally {
    plan.dispose();
    embedded.dispose();
  }
}

/** buildImage's writing, once (`useSegments`: place layers from segments of earlier builds). */
async function writeImage(
  store: StoreReader & { cacheDir?: string },
  mods: LoadedModule[],
  out: string,
  opts: ImageOptions,
  plan: MergePlan,
  embedded: EmbeddedFiles,
  useSegments: boolean,
): Promise<ImageResult> {
  const licence = outputLicence(mods);
  const writer = await createSink(out, store, opts, licence?.gid, plan.count, useSegments);
  const keepsAcls = opts.format === 'erofs';
  const restricted = (layer: number): boolean => mods[layer]?.record.restricted != null;
  // What the image stores of an entry of `layer`: as planned (EROFS), or with its ACL narrowed.
  const finalOf = (e: LayerEntry, layer: number) => (keepsAcls ? e : imageEntry(e, licence && restricted(layer) ? licence.gid : undefined));
  const cacheOf = (licensed: boolean) => (licence && licensed ? { cacheGid: licence.gid } : {});
  try {
    let aclPaths = 0;
    for (const { entry, layer } of plan.others()) {
      if (entry.acl) aclPaths++;
      writer.addEntry(finalOf(entry, layer));
    }
    let bytes = 0;
    // Each layer is a group of the writer's: one it may place from a segment of the user's own
    // earlier build, which then is not read (the user must still be allowed to read it).
    const placed = async (i: number): Promise<boolean> => {
      const mod = mods[i]!;
      const id = layerIdentity(store, mod, plan, i);
      if (id.files === 0) return false;
      if (id.identity !== undefined) await store.checkLayerAccess!(mod);
      const finals = function* () {
        for (const f of plan.files(i)) yield finalOf(f.entry, i);
      };
      if (!(await writer.beginGroup(mod.record.layer, cacheOf(restricted(i)), id.identity, finals))) return false;
      aclPaths += id.acls;
      bytes += id.bytes;
      opts.onProgress?.(bytes, plan.bytes);
      return true;
    };
    await forEachPlannedFile(
      store,
      mods,
      plan,
      async (entry, body, i, offset) => {
        if (entry.acl) aclPaths++;
        await writer.addFile(finalOf(entry, i), body, mods[i]!.record.layer, cacheOf(restricted(i)), offset);
        bytes += entry.size;
        opts.onProgress?.(bytes, plan.bytes);
      },
      undefined,
      placed,
    );
    for (const { entry, content } of embeddedPlanned(plan, mods.length, embedded)) {
      if (entry.acl) aclPaths++;
      await writer.addFile(finalOf(entry, mods.length), content.chunks(), METADATA_TAG, cacheOf(true));
    }
    const r = await writer.finish();
    return { out, sha256: r.sha256, bytes: r.bytes, entries: plan.count, aclPaths, cacheHits: r.cacheHits, cacheMisses: r.cacheMisses, segmentHits: r.segmentHits ?? 0 };
  } catch (e) {
    await writer.abort().catch(() => undefined);
    throw e;
  }
}

/** A layer's files in the plan: how many, their bytes and ACLs, and the identity of its group. */
interface LayerIdentity {
  files: number;
  bytes: number;
  acls: number;
  /**
   * What decides the layer's part of an image given the layers before it: the layer (CID), the
   * entry list the plan was made from (its digest, which a read of the layer checks), and the
   * planned files (path in the layer, size, in the plan's order: MergePlan.layerFiles). Undefined
   * when the store cannot say which list the plan came from, or for a layer of more files than a
   * segment holds (the plan does not fingerprint those).
   */
  identity?: string;
}

function layerIdentity(store: StoreReader, mod: LoadedModule, plan: MergePlan, i: number): LayerIdentity {
  const { count: files, bytes, acls, digest } = plan.layerFiles(i);
  const list = store.entryListDigest?.(mod);
  if (list === undefined || store.checkLayerAccess === undefined || digest === undefined) return { files, bytes, acls };
  const identity = createHash('sha256').update(`strata-layer-files-v2\0${mod.record.layer}\0${list}\0${digest}`).digest('hex');
  return { files, bytes, acls, identity };
}

/**
 * Refuses, before any work, an OUT the rename could not replace (errors would name the temp
 * file) and an existing file that is not an image (a lock, a source tar: `rebuild x.lock -o
 * x.lock`), unless `force`. An image (SquashFS or EROFS magic) is replaced: that is a rebuild.
 */
async function checkOutput(out: string, force: boolean): Promise<void> {
  const st = await fsp.stat(out).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${out} is a directory`, { hint: `give the image's file name, e.g. ${path.join(out, 'stack.sqfs')}` });
  }
  if (st && !force) {
    const image = st.isFile() && (await imageFormat(out).then(() => true, () => false));
    if (!image) {
      throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `${out} exists and is not an image`, { hint: 'give another file name, or --force to replace it' });
    }
  }
  const dir = path.dirname(path.resolve(out));
  const dst = await fsp.stat(dir).catch(() => undefined);
  if (!dst?.isDirectory()) throw new StrataError(COMPOSE_ERR.TARGET_INVALID, `directory ${path.dirname(out)} does not exist`, { hint: 'create it first' });
}


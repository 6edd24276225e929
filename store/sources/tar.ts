/**
 * Tar sources (plain, gzip, zstd). A compressed archive is first decompressed into the store's
 * tmp/ so that the canonical tar can read each body by offset, in sorted order, without holding
 * any of it in memory; a plain archive is read in place.
 *
 * A tar given as a layer may be an image archive instead: `docker save` output (manifest.json
 * naming its layer tars) or an OCI layout packed in a tar (oci-layout, index.json, blobs/).
 * imageArchiveKind tells them apart from a layer by the names at the archive's top level; its
 * header pass stops at the first name no image archive holds, so a layer costs one header.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { aclFromTarText, splitAclXattrs } from './acl-ingest.js';
import { openArchive } from './decompress.js';
import { LayerBuilder, type SourceItem } from '../layer/builder.js';
import { mapItems } from '../map-items.js';
import { readTarFile, type TarEntry } from '../tar/reader.js';
import type { EntryAcl } from '../types.js';

export interface TarSourceOptions {
  /** A temp path the decompressed archive may be written to (removed by the caller). */
  spoolPath: string;
}

export async function addTar(builder: LayerBuilder, file: string, opts: TarSourceOptions): Promise<{ spooled: boolean }> {
  const plain = await plainTar(file, opts);
  await addPlainTar(builder, plain);
  return { spooled: plain !== file };
}

/**
 * The path of `file` as a plain tar: `file` itself, or `opts.spoolPath` holding its
 * decompressed bytes. Refuses what is not a regular file (openArchive).
 */
export async function plainTar(file: string, opts: TarSourceOptions): Promise<string> {
  const { compression, stream } = await openArchive(file);
  if (compression !== 'none') {
    await pipeline(Readable.from(stream), fs.createWriteStream(opts.spoolPath, { mode: 0o600 }));
    return opts.spoolPath;
  }
  // openArchive opened the file to sniff it; it is read again by offset.
  for await (const _ of stream) break;
  return file;
}

/**
 * Gives the builder every entry of the plain tar at `plain`. An archive in canonical order is
 * read once, in sequence, as the canonical tar is written; one that is not is sorted first and
 * its bodies read by offset (LayerBuilder.addFrom).
 */
export async function addPlainTar(builder: LayerBuilder, plain: string): Promise<void> {
  // One descriptor serves every member's content (positional reads): opening and closing
  // a stream per member costs more than reading a small file.
  const fd = fs.openSync(plain, 'r');
  builder.defer(() => fs.closeSync(fd));
  const reader = new MemberReader(fd);
  const src = builder.contentSource((a, b) => reader.range(a as number, b!));
  // Entries that inherit global pax xattrs share one map; split it once, not per entry.
  const split = new WeakMap<ReadonlyMap<string, Buffer>, { xattrs: Map<string, Buffer>; acl: EntryAcl | undefined }>();
  // One item per tar entry: a map over the reader (mapItems), not a generator of its own.
  const item = ({ header: h, body }: TarEntry): SourceItem => {
    let s = split.get(h.xattrs);
    if (s === undefined) {
      const xattrs = new Map(h.xattrs);
      s = { xattrs, acl: splitAclXattrs(xattrs, h.path) };
      split.set(h.xattrs, s);
    }
    const { xattrs } = s;
    const acl = aclFromTarText(h.aclAccess, h.aclDefault, s.acl, h.path);
    const size = h.size;
    const hasBody = h.type === 'file' && size > 0;
    return {
      entry: {
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
      content: hasBody ? { src, a: h.dataOffset, b: size } : undefined,
      body: hasBody ? body : undefined,
    };
  };
  builder.addFrom(({ bodies }) => mapItems(readTarFile(plain, { sequential: bodies }), item), { size: fs.fstatSync(fd).size });
}

/** Top-level names an image archive holds: docker save (both formats), skopeo, OCI layouts. */
const IMAGE_ARCHIVE_TOP = /^(manifest\.json|repositories|index\.json|oci-layout|blobs|[0-9a-f]{64}(\.json|\.tar)?)$/;
const MAX_MANIFEST = 16 * 1024 * 1024;

/**
 * What a plain tar holds: 'docker-archive' (a manifest.json listing one or more images whose
 * Layers are members), 'oci-archive' (oci-layout and index.json at the top), else 'layer'.
 */
export async function imageArchiveKind(plain: string): Promise<'layer' | 'docker-archive' | 'oci-archive'> {
  const members = new Set<string>();
  let manifest: Buffer | undefined;
  let ociLayout = false;
  let index = false;
  try {
    for await (const { header: h, body } of readTarFile(plain)) {
      const name = h.path.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
      if (name === '' || name === '.') continue;
      if (!IMAGE_ARCHIVE_TOP.test(name.split('/')[0]!)) return 'layer';
      if (h.type !== 'file') continue;
      members.add(name);
      if (name === 'oci-layout') ociLayout = true;
      if (name === 'index.json') index = true;
      if (name === 'manifest.json' && h.size <= MAX_MANIFEST) {
        const chunks: Buffer[] = [];
        for await (const c of body) chunks.push(Buffer.from(c));
        manifest = Buffer.concat(chunks);
      }
    }
  } catch {
    return 'layer'; // the layer import reads it again and reports what is wrong
  }
  if (manifest !== undefined) {
    try {
      const m = JSON.parse(manifest.toString('utf8')) as unknown;
      const isImage = (x: unknown) => {
        const layers = (x as { Layers?: unknown })?.Layers;
        return Array.isArray(layers) && layers.every((l) => typeof l === 'string' && members.has(l.replace(/^(\.\/)+/, '')));
      };
      if (Array.isArray(m) && m.length > 0 && m.every(isImage)) return 'docker-archive';
    } catch {
      // not a docker manifest: a layer that happens to hold a manifest.json
    }
  }
  if (ociLayout && index) return 'oci-archive';
  return 'layer';
}

export async function removeSpool(p: string): Promise<void> {
  await fsp.rm(p, { force: true });
}

/** Bytes of a window: a read of the archive at a multiple of this, from which members are served. */
const WINDOW = 512 * 1024;
/** Windows kept, the least recently used one read over. */
const WINDOWS = 8;
/** A member larger than this is read alone, in chunks, never through a window. */
const WINDOWED_MAX = 64 * 1024;
/** A member read alone is read in chunks of at most this size. */
const CHUNK = 1 << 20;
/**
 * Windows stop once they read more than this many times the bytes they serve (past the
 * first WINDOWS of them): an archive whose members are wanted in no order near its own.
 */
const WINDOW_WASTE = 8;

/**
 * Member bodies of one plain tar, read by offset: an archive that had to be sorted, and an
 * image's layers (read into memory whole). An archive imported as a layer in canonical order
 * is read in one pass instead and never comes here.
 *
 * A sorted pass wants the small members in an order the archive mostly does not have, but
 * near each other: tar writes a directory's files together, in the order the filesystem lists
 * them (a hash, on ext4), and the sorted pass wants the same files by name. One read per
 * member cost a system call each from this thread: 0.64 s of a 1.8 s import of 100,000
 * files, a third of the whole. So a small member is served from windows of the archive, read
 * at multiples of WINDOW and kept a few at a time: a directory's files take a read or two.
 * When the windows read far more than they serve, members are read alone again, as a large
 * one always is.
 *
 * Chunks handed out are views of the reader's buffers (the windows, and one for a chunk read
 * alone): each is valid until the next chunk is asked for, and its consumer (the canonical
 * tar, then the blob put) copies it by then. Synchronous reads from the page cache are cheap,
 * and the blob writes they feed run in the thread pool meanwhile.
 */
class MemberReader {
  private readonly windows: Window[] = [];
  private tick = 0;
  /** Bytes the windows read, and the member bytes they served. */
  private loaded = 0;
  private served = 0;
  private chunkBuf: Buffer | undefined;

  constructor(private readonly fd: number) {}

  async *range(start: number, size: number): AsyncGenerator<Buffer> {
    if (size <= WINDOWED_MAX && (this.loaded <= WINDOWS * WINDOW || this.loaded <= WINDOW_WASTE * this.served)) {
      let pos = start;
      let left = size;
      while (left > 0) {
        const w = this.window(pos);
        const off = pos - w.at;
        const n = Math.min(left, w.length - off);
        if (n <= 0) return; // past the archive's end: the builder reports the short member
        this.served += n;
        pos += n;
        left -= n;
        yield w.buf.subarray(off, off + n);
      }
      return;
    }
    let pos = start;
    let left = size;
    while (left > 0) {
      const buf = (this.chunkBuf ??= Buffer.allocUnsafe(CHUNK)).subarray(0, Math.min(left, CHUNK));
      const got = fs.readSync(this.fd, buf, 0, buf.length, pos);
      if (got === 0) return; // the builder reports the short member
      pos += got;
      left -= got;
      yield got === buf.length ? buf : buf.subarray(0, got);
    }
  }

  /** The window that holds byte `pos`, read now unless kept. */
  private window(pos: number): Window {
    const at = pos - (pos % WINDOW);
    let w = this.windows.find((x) => x.at === at);
    if (w === undefined) {
      if (this.windows.length < WINDOWS) this.windows.push((w = { at, buf: Buffer.allocUnsafe(WINDOW), length: 0, used: 0 }));
      else w = this.windows.reduce((a, b) => (b.used < a.used ? b : a));
      w.at = at;
      w.length = fs.readSync(this.fd, w.buf, 0, WINDOW, at);
      this.loaded += WINDOW;
    }
    w.used = ++this.tick;
    return w;
  }
}

/** WINDOW bytes of the archive from `at` (`length` of them read: fewer at its end). */
interface Window {
  at: number;
  buf: Buffer;
  length: number;
  /** When it last served a member (the reader's tick). */
  used: number;
}

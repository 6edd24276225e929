/**
 * OCI image sources: `oci:DIR[:TAG]` (an OCI image layout, as umoci and skopeo write it) and
 * `docker-archive:FILE` (`docker save`, `skopeo copy … docker-archive:`). All of an image's
 * layers become one module layer: each layer is first made canonical (the same checks as any
 * tar import), then they are merged with OCI whiteout semantics (store/layer/merge.ts). The
 * image config's Env and Labels are returned for the module record.
 *
 * What a layout may hand us is judged before it is read:
 * - every blob is a regular file (never a FIFO, device or symlink: /dev/zero or a pipe would
 *   never end), of exactly the size its descriptor declares, and is checked against its
 *   digest; JSON documents (index, manifests, config) are at most MAX_JSON bytes;
 * - an index may name an index (`skopeo copy --all`, nested manifest lists): strata follows
 *   them, picking this machine's linux platform, at most MAX_INDEX_DEPTH deep; a document
 *   that is neither an index nor an image manifest is refused;
 * - a layer listed several times is read, verified and made canonical once, and applied at
 *   each place it is listed.
 */
import { createHash } from 'node:crypto';
import { constants as fsc, createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { printable, printableValue } from '../../native/errors.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { LayerBuilder, type ContentRef } from '../layer/builder.js';
import { entryCodec } from '../layer/entry-codec.js';
import { SpillSorter, type RecordCodec } from '../spill.js';
import { LayerMerge } from '../layer/merge.js';
import { fitHeapToPlan, LARGE_PLAN } from '../heap.js';
import { envOpProblem, type EnvOp } from '../record.js';
import { addTar } from './tar.js';
import { readTarFile } from '../tar/reader.js';
import { comparePaths, type LayerEntry } from '../types.js';

export interface ImageConfigInfo {
  env: EnvOp[];
  labels: Record<string, string>;
}

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
/** Largest index, manifest or config strata reads (registries cap manifests at 4 MiB). */
const MAX_JSON = 16 * 1024 * 1024;
/** Indexes within indexes strata follows. */
const MAX_INDEX_DEPTH = 4;

/** `oci:DIR[:TAG]` → DIR and TAG. A DIR that exists as written wins over a split at the last ':'. */
export async function parseOciRef(ref: string): Promise<{ dir: string; tag?: string }> {
  const rest = ref.slice('oci:'.length);
  if (await isDir(rest)) return { dir: rest };
  const i = rest.lastIndexOf(':');
  if (i > 0 && !rest.slice(i + 1).includes('/') && (await isDir(rest.slice(0, i)))) return { dir: rest.slice(0, i), tag: rest.slice(i + 1) };
  throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${printable(rest)} does not exist`, { hint: 'give oci:DIR or oci:DIR:TAG, DIR holding oci-layout and index.json' });
}

/** True when `dir` holds an OCI image layout (an `oci-layout` file beside `index.json`). */
export async function isOciLayout(dir: string): Promise<boolean> {
  const f = await fsp.lstat(path.join(dir, 'oci-layout')).catch(() => undefined);
  const i = await fsp.lstat(path.join(dir, 'index.json')).catch(() => undefined);
  return (f?.isFile() ?? false) && (i?.isFile() ?? false);
}

export async function addOciLayout(builder: LayerBuilder, ref: string, spool: (tag: string) => string): Promise<ImageConfigInfo & { spools: string[] }> {
  const { dir, tag } = await parseOciRef(ref);
  const shown = printable(dir);
  const blobFile = (d: OciDescriptor | undefined, what: string) => {
    const m = /^sha256:([0-9a-f]{64})$/.exec(typeof d?.digest === 'string' ? d.digest : '');
    if (!m) throw invalid(`${what} has digest ${printableValue(d?.digest)}, strata reads sha256 only`, 'the OCI layout is damaged or not one strata reads');
    if (!Number.isSafeInteger(d!.size) || d!.size! < 0) {
      throw invalid(`the descriptor of ${what} (sha256:${m[1]}) declares no valid size`, 'every OCI descriptor carries the blob size; the layout is damaged');
    }
    return { file: path.join(dir, 'blobs', 'sha256', m[1]!), hex: m[1]!, size: d!.size! };
  };
  const readBlobJson = async <T>(d: OciDescriptor | undefined, what: string): Promise<T> => {
    const b = blobFile(d, what);
    if (b.size > MAX_JSON) throw invalid(`${what} is ${b.size} bytes, more than strata reads (${MAX_JSON})`, 'the OCI layout is damaged');
    const bytes = await readBlob(b.file, what, b.size, b.hex);
    return parseJson<T>(bytes, what);
  };

  const index = parseJson<OciIndex>(await readRegular(path.join(dir, 'index.json'), `${shown}/index.json`, MAX_JSON), `${shown}/index.json`);
  let desc = pickManifest(descriptors(index, `${shown}/index.json`), tag, shown);
  let manifest: OciManifest & OciIndex = await readBlobJson(desc, 'the image manifest');
  for (let depth = 1; isIndex(desc, manifest); depth++) {
    if (depth > MAX_INDEX_DEPTH) {
      throw invalid(`OCI layout ${shown}: indexes nest more than ${MAX_INDEX_DEPTH} deep`, 'copy the one image you want into a layout of its own (skopeo copy without --all)');
    }
    desc = pickPlatform(descriptors(manifest, `the index ${printable(String(desc.digest))}`), shown);
    manifest = await readBlobJson(desc, 'the image manifest');
  }
  if (manifest === null || typeof manifest !== 'object' || !Array.isArray(manifest.layers)) {
    throw invalid(`OCI layout ${shown}: ${printable(String(desc.digest))} is not an image manifest (no layers)`, 'the OCI layout is damaged or holds something other than an image');
  }
  const config = manifest.config ? await readBlobJson<ImageConfig>(manifest.config, 'the image config') : {};
  const layers: ImageLayer[] = [];
  const verified = new Set<string>();
  for (const [i, l] of manifest.layers.entries()) {
    const b = blobFile(l, `layer ${i + 1}`);
    if (!verified.has(b.hex)) {
      await verifyBlob(b.file, `layer ${i + 1}`, b.size, b.hex);
      verified.add(b.hex);
    }
    layers.push({ key: b.hex, file: b.file });
  }
  const spools = await mergeImageLayers(builder, layers, spool);
  return { ...configInfo(config), spools };
}

/** `docker-archive:FILE`; `label` names FILE in messages when FILE is a decompressed spool. */
export async function addDockerArchive(builder: LayerBuilder, file: string, spool: (tag: string) => string, label = file): Promise<ImageConfigInfo & { spools: string[] }> {
  const shown = printable(label);
  const members = new Map<string, { offset: number; size: number }>();
  await assertRegular(file, `docker archive ${shown}`);
  try {
    for await (const { header: h } of readTarFile(file)) {
      const name = h.path.replace(/^(\.\/)+/, '');
      if (h.type === 'file') members.set(name, { offset: h.dataOffset, size: h.size });
    }
  } catch (e) {
    if (e instanceof StrataError) throw new StrataError(e.code, `docker archive ${shown}: ${e.message}`, { hint: e.hint, cause: e });
    throw e;
  }
  const member = async (name: string, what: string): Promise<Buffer> => {
    const m = members.get(name)!;
    if (m.size > MAX_JSON) throw invalid(`docker archive ${shown}: ${what} is ${m.size} bytes, more than strata reads (${MAX_JSON})`, 'the archive is damaged');
    const fh = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(m.size);
      const { bytesRead } = await fh.read(buf, 0, m.size, m.offset);
      if (bytesRead !== m.size) throw invalid(`docker archive ${shown}: ${what} is cut short`, 'the archive changed while it was read, or is damaged');
      return buf;
    } finally {
      await fh.close();
    }
  };
  if (!members.has('manifest.json')) {
    throw invalid(`${shown} is not a docker archive (no manifest.json)`, 'make it with `docker save` or `skopeo copy … docker-archive:FILE`');
  }
  const parsed = parseJson<Array<{ Config?: unknown; Layers?: unknown }>>(await member('manifest.json', 'manifest.json'), `docker archive ${shown}: manifest.json`);
  if (!Array.isArray(parsed) || parsed.length !== 1) {
    throw invalid(`${shown} holds ${Array.isArray(parsed) ? parsed.length : 0} images; strata imports one at a time`, 'save one image per archive (docker save IMAGE, skopeo copy … docker-archive:FILE:NAME)');
  }
  const image = (parsed[0] !== null && typeof parsed[0] === 'object' ? parsed[0] : {}) as { Config?: unknown; Layers?: unknown };
  if (!Array.isArray(image.Layers) || !image.Layers.every((l) => typeof l === 'string')) {
    throw invalid(`docker archive ${shown}: manifest.json lists no layers`, 'the archive is damaged');
  }
  const config = typeof image.Config === 'string' && members.has(image.Config)
    ? parseJson<ImageConfig>(await member(image.Config, 'the image config'), `docker archive ${shown}: the image config`)
    : {};
  const spools: string[] = [];
  const copied = new Map<string, string>();
  const layers: ImageLayer[] = [];
  for (const name of image.Layers as string[]) {
    const m = members.get(name.replace(/^(\.\/)+/, ''));
    if (!m) throw invalid(`docker archive ${shown}: layer ${printable(name)} named in manifest.json is missing`, 'the archive is damaged');
    let out = copied.get(name);
    if (out === undefined) {
      out = spool(`docker-layer-${copied.size}`);
      spools.push(out);
      if (m.size > 0) await pipeline(createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 }), createWriteStream(out, { mode: 0o600 }));
      else await fsp.writeFile(out, '', { mode: 0o600 });
      const st = await fsp.stat(out);
      if (st.size !== m.size) throw invalid(`docker archive ${shown}: layer ${printable(name)} is cut short`, 'the archive changed while it was read, or is damaged');
      copied.set(name, out);
    }
    layers.push({ key: name, file: out });
  }
  spools.push(...(await mergeImageLayers(builder, layers, spool)));
  return { ...configInfo(config), spools };
}

interface ImageLayer {
  /** Same key, same layer: made canonical once. */
  key: string;
  file: string;
}

/** A canonical entry of an image layer, with where the image's builder reads its content. */
type LayerRec = { entry: LayerEntry; extra?: RefTuple };
/** A ContentRef as a tuple: the builder's content source, then its arguments. */
type RefTuple = [src: number, a: number | string, b?: number];
const byPath = (x: { entry: LayerEntry }, y: { entry: LayerEntry }) => comparePaths(x.entry.path, y.entry.path);

/**
 * Canonicalises each distinct layer once, merges them in order, and adds the result to
 * `builder`. Returns the spool files to remove. Memory does not grow with the layers: each
 * layer's canonical entries go through spill files with where their contents are (the layer's
 * plain tar, by offset), the merge spills its own, and the plan's files are joined with their
 * contents through one more sorter in the plan's order. (Each layer's entries and contents
 * were held as objects and a Map before: 425 MiB for an image of 200,000 files.)
 */
async function mergeImageLayers(builder: LayerBuilder, layerFiles: ImageLayer[], spool: (tag: string) => string): Promise<string[]> {
  const spools: string[] = [];
  const tmpDir = path.dirname(spool('oci-merge'));
  const sorter = <T extends { entry: LayerEntry }>() => {
    const s = new SpillSorter<T>({ compare: byPath, codec: entryCodec() as unknown as RecordCodec<T>, dir: tmpDir });
    builder.defer(() => s.dispose());
    return s;
  };
  const done = new Map<string, SpillSorter<LayerRec>>();
  const layers: Array<SpillSorter<LayerRec>> = [];
  const merge = new LayerMerge({ tmpDir, large: { entries: LARGE_PLAN, reached: fitHeapToPlan } });
  builder.defer(() => merge.dispose());
  for (const [i, { key, file }] of layerFiles.entries()) {
    let layer = done.get(key);
    if (layer === undefined) {
      const sp = spool(`oci-layer-${done.size}`);
      const lb = new LayerBuilder({ tmpDir: path.dirname(sp) });
      spools.push(sp);
      builder.defer(() => lb.dispose());
      try {
        await addTar(lb, file, { spoolPath: sp });
        // The layer is read here (its tar, when in canonical order, only now): what is wrong
        // with it is named by its place in the image too.
        layer = await lb.written(async (built) => {
          const recs = sorter<LayerRec>();
          /** The image builder's content source for each of the layer builder's. */
          const sources = new Map<number, number>();
          try {
            for await (const { entry, content } of built.refs()) {
              if (content === undefined) recs.push({ entry });
              else {
                let src = sources.get(content.src);
                if (src === undefined) sources.set(content.src, (src = builder.contentSource(lb.contentReader(content.src))));
                recs.push({ entry, extra: content.b === undefined ? [src, content.a] : [src, content.a, content.b] });
              }
            }
          } catch (e) {
            recs.dispose();
            throw e;
          }
          return recs;
        });
      } catch (e) {
        if (e instanceof StrataError) throw new StrataError(e.code, `image layer ${i + 1}: ${e.message}`, { hint: e.hint, cause: e });
        throw e;
      }
      done.set(key, layer);
    }
    layers.push(layer);
    // Each read gets its own copies: the merge owns the entries it is given.
    const recs = layer;
    await merge.addLayer(function* () {
      for (const r of recs.sorted()) yield { ...r.entry };
    }, `image layer ${i + 1}`);
  }
  const plan = merge.plan();
  // Each planned file's content, found by joining the plan's files of each layer (in that
  // layer's order) with the layer, then sorted into the plan's order.
  const contents = sorter<{ entry: LayerEntry; extra?: RefTuple }>();
  for (const [i, recs] of layers.entries()) {
    const it = recs.sorted();
    let cur = it.next();
    for (const f of plan.files(i)) {
      while (!cur.done && comparePaths(cur.value.entry.path, f.contentPath) < 0) cur = it.next();
      if (!cur.done && cur.value.entry.path === f.contentPath && cur.value.extra) contents.push({ entry: { ...f.entry, xattrs: undefined, acl: undefined }, extra: cur.value.extra });
    }
    it.return(undefined);
  }
  const found = contents.sorted();
  let next = found.next();
  for (const pe of plan.entries()) {
    if (pe.entry.path === '.' && pe.layer >= layerFiles.length) continue; // no layer had a root entry
    let content: ContentRef | undefined;
    if (pe.entry.type === 'file') {
      while (!next.done && comparePaths(next.value.entry.path, pe.entry.path) < 0) next = found.next();
      if (!next.done && next.value.entry.path === pe.entry.path) {
        const [src, a, b] = next.value.extra!;
        content = b === undefined ? { src, a } : { src, a, b };
      }
    }
    builder.add(pe.entry, content);
  }
  found.return(undefined);
  return spools;
}

interface OciDescriptor {
  mediaType?: string;
  digest?: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}
interface OciIndex {
  mediaType?: string;
  manifests?: OciDescriptor[];
}
interface OciManifest {
  mediaType?: string;
  config?: OciDescriptor;
  layers?: OciDescriptor[];
}
interface ImageConfig {
  config?: { Env?: string[]; Labels?: Record<string, string> | null };
}

/** The `manifests` of an index, each an object. */
function descriptors(index: OciIndex, what: string): OciDescriptor[] {
  const list = (index as OciIndex | null)?.manifests;
  if (!Array.isArray(list) || !list.every((d) => d !== null && typeof d === 'object' && !Array.isArray(d))) {
    throw invalid(`${what} lists no manifests, or one that is not a descriptor`, 'the OCI layout is damaged');
  }
  return list;
}

function isIndex(desc: OciDescriptor, doc: OciManifest & OciIndex): boolean {
  if (doc === null || typeof doc !== 'object') return false;
  return INDEX_TYPES.has(desc.mediaType ?? '') || INDEX_TYPES.has(doc.mediaType ?? '') || (Array.isArray(doc.manifests) && !Array.isArray(doc.layers));
}

function pickManifest(manifests: OciDescriptor[], tag: string | undefined, dir: string): OciDescriptor {
  const tagOf = (m: OciDescriptor) => (typeof m.annotations === 'object' ? m.annotations?.['org.opencontainers.image.ref.name'] : undefined);
  const tags = manifests.map(tagOf).filter((t): t is string => typeof t === 'string' && t !== '').map((t) => printable(t));
  if (tag !== undefined) {
    const found = manifests.find((m) => {
      const t = tagOf(m);
      return t === tag || (typeof t === 'string' && t.endsWith(`:${tag}`));
    });
    if (!found) throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${dir} has no tag ${printable(tag)}`, { hint: `its tags: ${tags.join(', ') || 'none'}` });
    return found;
  }
  if (manifests.length !== 1) {
    throw invalid(`OCI layout ${dir} holds ${manifests.length} images`, `name one as oci:${dir}:TAG (tags: ${tags.join(', ') || 'none'})`);
  }
  return manifests[0]!;
}

function pickPlatform(manifests: OciDescriptor[], dir: string): OciDescriptor {
  const arch = ({ x64: 'amd64', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[process.arch] ?? process.arch;
  const m = manifests.find((d) => d.platform?.os === 'linux' && d.platform?.architecture === arch);
  if (m) return m;
  // An index of one entry that names no platform (an index wrapping one manifest or index).
  if (manifests.length === 1 && manifests[0]!.platform === undefined) return manifests[0]!;
  throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${dir} has no linux/${arch} image`, { hint: 'copy an image for this platform (skopeo copy --override-arch)' });
}

function configInfo(config: ImageConfig): ImageConfigInfo {
  const env: EnvOp[] = [];
  const list = config?.config?.Env;
  for (const kv of Array.isArray(list) ? list : []) {
    if (typeof kv !== 'string') continue;
    const eq = kv.indexOf('=');
    if (eq <= 0) continue;
    const op: EnvOp = { op: 'set', var: kv.slice(0, eq), value: kv.slice(eq + 1) };
    const why = envOpProblem(op);
    if (why) throw new StrataError(STORE_ERR.SOURCE_INVALID, `the image config's Env: ${why}`, { hint: 'an environment file made from it could run commands; fix the image' });
    env.push(op);
  }
  const labels: Record<string, string> = {};
  const l = config?.config?.Labels;
  if (l && typeof l === 'object') for (const [k, v] of Object.entries(l)) if (typeof v === 'string') labels[k] = v;
  return { env, labels };
}

function invalid(message: string, hint: string): StrataError {
  return new StrataError(STORE_ERR.SOURCE_INVALID, message, { hint });
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (e) {
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `${what} is not JSON`, { hint: 'the image is damaged', cause: e });
  }
}

/**
 * Opens `file` for reading only if it is a regular file: O_NOFOLLOW refuses a symlink and
 * O_NONBLOCK keeps a FIFO from blocking the open; the type is judged on the open descriptor.
 */
async function openRegular(file: string, what: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw invalid(`${what} is missing`, 'the image is incomplete');
    if (code === 'ELOOP') throw invalid(`${what} is a symlink; strata reads blobs that are regular files`, 'copy the image with skopeo or umoci so that its blobs are files');
    throw invalid(`${what} cannot be read (${code ?? (e as Error).message})`, 'check its permissions');
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw invalid(`${what} is not a regular file (a device, FIFO or directory)`, 'an image holds its blobs as regular files; this one is damaged or hostile');
  }
  return fh;
}

/** Refuses a path that is not a regular file, without blocking on a FIFO. */
export async function assertRegular(file: string, what: string): Promise<void> {
  await (await openRegular(file, what)).close();
}

/** The whole of a regular file of at most `max` bytes. */
async function readRegular(file: string, what: string, max: number): Promise<Buffer> {
  const fh = await openRegular(file, what);
  try {
    const size = (await fh.stat()).size;
    if (size > max) throw invalid(`${what} is ${size} bytes, more than strata reads (${max})`, 'the image is damaged');
    const buf = Buffer.alloc(size);
    const { bytesRead } = await fh.read(buf, 0, size, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Checks a blob: a regular file of exactly `size` bytes whose sha256 is `hex`. Reads at most
 * `size` bytes whatever the file does meanwhile. Returns the bytes when `keep`.
 */
async function checkBlob(file: string, what: string, size: number, hex: string, keep: boolean): Promise<Buffer | undefined> {
  const fh = await openRegular(file, `${what} (sha256:${hex})`);
  try {
    const actual = (await fh.stat()).size;
    if (actual !== size) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} (sha256:${hex}) is ${actual} bytes; its descriptor says ${size}`, { hint: 'the OCI layout is corrupt' });
    }
    const h = createHash('sha256');
    const kept = keep ? Buffer.alloc(size) : undefined;
    const buf = kept ?? Buffer.allocUnsafe(Math.min(size, 1 << 20) || 1);
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = kept ? await fh.read(kept, pos, size - pos, pos) : await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) break;
      h.update(kept ? kept.subarray(pos, pos + bytesRead) : buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    if (pos !== size || h.digest('hex') !== hex) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} does not match its digest sha256:${hex}`, { hint: 'the OCI layout is corrupt' });
    }
    return kept;
  } finally {
    await fh.close();
  }
}

async function verifyBlob(file: string, what: string, size: number, hex: string): Promise<void> {
  await checkBlob(file, what, size, hex, false);
}

async function readBlob(file: string, what: string, size: number, hex: string): Promise<Buffer> {
  return (await checkBlob(file, what, size, hex, true))!;
}

async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

/**
 * OCI image sources: `oci:DIR[:TAG]` (an OCI image layout, as umoci and skopeo write it) and
 * `docker-archive:FILE` (`docker save`, `skopeo copy … docker-archive:`). All of an image's
 * layers become one module layer: each layer is first made canonical (the same checks as any
 * tar import), then they are merged with OCI whiteout semantics (store/layer-merge.ts). The
 * image config's Env and Labels are returned for the module record.
 *
 * Every blob read from a layout is checked against its digest before use.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { StrataError, STORE_ERR } from '../errors.js';
import { ContentOpener, LayerBuilder } from '../layer/builder.js';
import { applyLayer, emptyTree, flatten, hardLinkTargets } from '../layer/merge.js';
import type { EnvOp } from '../record.js';
import { addTar } from './tar.js';
import { readTar } from '../tar/reader.js';
import type { LayerEntry } from '../types.js';

export interface ImageConfigInfo {
  env: EnvOp[];
  labels: Record<string, string>;
}

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);

/** `oci:DIR[:TAG]` → DIR and TAG. A DIR that exists as written wins over a split at the last ':'. */
export async function parseOciRef(ref: string): Promise<{ dir: string; tag?: string }> {
  const rest = ref.slice('oci:'.length);
  if (await isDir(rest)) return { dir: rest };
  const i = rest.lastIndexOf(':');
  if (i > 0 && !rest.slice(i + 1).includes('/') && (await isDir(rest.slice(0, i)))) return { dir: rest.slice(0, i), tag: rest.slice(i + 1) };
  throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${rest} does not exist`, { hint: 'give oci:DIR or oci:DIR:TAG, DIR holding oci-layout and index.json' });
}

export async function addOciLayout(builder: LayerBuilder, ref: string, spool: (tag: string) => string): Promise<ImageConfigInfo & { spools: string[] }> {
  const { dir, tag } = await parseOciRef(ref);
  const blob = async (digest: string, what: string) => {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest ?? '');
    if (!m) throw new StrataError(STORE_ERR.SOURCE_INVALID, `${what} has digest '${digest}', strata reads sha256 only`);
    const file = path.join(dir, 'blobs', 'sha256', m[1]!);
    await verifyFile(file, m[1]!, what);
    return file;
  };
  const readJson = async <T>(file: string, what: string): Promise<T> => {
    try {
      return JSON.parse(await fsp.readFile(file, 'utf8')) as T;
    } catch (e) {
      throw new StrataError(STORE_ERR.SOURCE_INVALID, `${what} is missing or not JSON`, { cause: e });
    }
  };
  const index = await readJson<OciIndex>(path.join(dir, 'index.json'), `${dir}/index.json`);
  let desc = pickManifest(index.manifests ?? [], tag, dir);
  let manifest = await readJson<OciManifest>(await blob(desc.digest, 'the image manifest'), 'the image manifest');
  if (INDEX_TYPES.has(desc.mediaType ?? '') || (manifest as unknown as OciIndex).manifests) {
    desc = pickPlatform((manifest as unknown as OciIndex).manifests ?? [], dir);
    manifest = await readJson<OciManifest>(await blob(desc.digest, 'the image manifest'), 'the image manifest');
  }
  const config = manifest.config ? await readJson<ImageConfig>(await blob(manifest.config.digest, 'the image config'), 'the image config') : {};
  const layers: string[] = [];
  for (const [i, l] of (manifest.layers ?? []).entries()) layers.push(await blob(l.digest, `layer ${i + 1}`));
  const spools = await mergeImageLayers(builder, layers, spool);
  return { ...configInfo(config), spools };
}

export async function addDockerArchive(builder: LayerBuilder, file: string, spool: (tag: string) => string): Promise<ImageConfigInfo & { spools: string[] }> {
  const members = new Map<string, { offset: number; size: number }>();
  const small = new Map<string, Buffer>();
  try {
    for await (const { header: h, body } of readTar(createReadStream(file, { highWaterMark: 1 << 20 }))) {
      const name = h.path.replace(/^\.\//, '');
      if (h.type === 'file') members.set(name, { offset: h.dataOffset, size: h.size });
      if (h.type === 'file' && (name === 'manifest.json' || (name.endsWith('.json') && h.size < 1 << 20))) {
        const chunks: Buffer[] = [];
        for await (const c of body) chunks.push(Buffer.from(c));
        small.set(name, Buffer.concat(chunks));
      }
    }
  } catch (e) {
    if (e instanceof StrataError) throw new StrataError(e.code, `docker archive ${file}: ${e.message}`, { hint: e.hint, cause: e });
    throw e;
  }
  const parsed = (() => {
    try {
      return JSON.parse(small.get('manifest.json')?.toString('utf8') ?? '') as Array<{ Config: string; Layers: string[] }>;
    } catch {
      throw new StrataError(STORE_ERR.SOURCE_INVALID, `${file} is not a docker archive (no manifest.json)`, { hint: 'make it with `docker save` or `skopeo copy … docker-archive:FILE`' });
    }
  })();
  if (!Array.isArray(parsed) || parsed.length !== 1) {
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `${file} holds ${Array.isArray(parsed) ? parsed.length : 0} images; strata imports one at a time`);
  }
  const image = parsed[0]!;
  const configText = small.get(image.Config);
  const config = configText ? (JSON.parse(configText.toString('utf8')) as ImageConfig) : {};
  const spools: string[] = [];
  const layers: string[] = [];
  for (const name of image.Layers ?? []) {
    const m = members.get(name);
    if (!m) throw new StrataError(STORE_ERR.SOURCE_INVALID, `${file}: layer ${name} named in manifest.json is missing`);
    const out = spool(`docker-layer-${layers.length}`);
    spools.push(out);
    await pipeline(createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 }), createWriteStream(out, { mode: 0o600 }));
    layers.push(out);
  }
  spools.push(...(await mergeImageLayers(builder, layers, spool)));
  return { ...configInfo(config), spools };
}

/** Canonicalises each layer, merges them in order, and adds the result to `builder`. Returns the spool files to remove. */
async function mergeImageLayers(builder: LayerBuilder, layerFiles: string[], spool: (tag: string) => string): Promise<string[]> {
  const root = emptyTree();
  const linkTargets: Array<Map<string, LayerEntry>> = [];
  const contents: Array<Map<string, ContentOpener | undefined>> = [];
  const spools: string[] = [];
  for (const [i, file] of layerFiles.entries()) {
    const lb = new LayerBuilder();
    const sp = spool(`oci-layer-${i}`);
    spools.push(sp);
    try {
      await addTar(lb, file, { spoolPath: sp });
    } catch (e) {
      if (e instanceof StrataError) throw new StrataError(e.code, `image layer ${i + 1}: ${e.message}`, { hint: e.hint, cause: e });
      throw e;
    }
    builder.defer(() => lb.dispose());
    const items = lb.build().items;
    const entries = items.map((x) => x.entry);
    contents.push(new Map(items.map((x) => [x.entry.path, x.content])));
    linkTargets.push(hardLinkTargets(entries));
    applyLayer(root, i, entries, `image layer ${i + 1}`);
  }
  const plan = flatten(root, linkTargets);
  for (const pe of plan.entries) {
    if (pe.entry.path === '.' && pe.layer >= layerFiles.length) continue; // no layer had a root entry
    const content = pe.entry.type === 'file' ? contents[pe.layer]!.get(pe.contentPath ?? pe.entry.path) : undefined;
    builder.add(pe.entry, content);
  }
  return spools;
}

interface OciDescriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}
interface OciIndex {
  manifests?: OciDescriptor[];
}
interface OciManifest {
  config?: OciDescriptor;
  layers?: OciDescriptor[];
}
interface ImageConfig {
  config?: { Env?: string[]; Labels?: Record<string, string> | null };
}

function pickManifest(manifests: OciDescriptor[], tag: string | undefined, dir: string): OciDescriptor {
  const tags = manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).filter((t): t is string => Boolean(t));
  if (tag !== undefined) {
    const found = manifests.find((m) => {
      const t = m.annotations?.['org.opencontainers.image.ref.name'];
      return t === tag || t?.endsWith(`:${tag}`);
    });
    if (!found) throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${dir} has no tag ${tag}`, { hint: `its tags: ${tags.join(', ') || 'none'}` });
    return found;
  }
  if (manifests.length !== 1) {
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `OCI layout ${dir} holds ${manifests.length} images`, { hint: `name one as oci:${dir}:TAG (tags: ${tags.join(', ') || 'none'})` });
  }
  return manifests[0]!;
}

function pickPlatform(manifests: OciDescriptor[], dir: string): OciDescriptor {
  const arch = ({ x64: 'amd64', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[process.arch] ?? process.arch;
  const m = manifests.find((d) => d.platform?.os === 'linux' && d.platform.architecture === arch);
  if (!m) throw new StrataError(STORE_ERR.NOT_FOUND, `OCI layout ${dir} has no linux/${arch} image`);
  return m;
}

function configInfo(config: ImageConfig): ImageConfigInfo {
  const env: EnvOp[] = [];
  for (const kv of config.config?.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.push({ op: 'set', var: kv.slice(0, eq), value: kv.slice(eq + 1) });
  }
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(config.config?.Labels ?? {})) if (typeof v === 'string') labels[k] = v;
  return { env, labels };
}

async function verifyFile(file: string, hex: string, what: string): Promise<void> {
  const h = createHash('sha256');
  try {
    for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  } catch {
    throw new StrataError(STORE_ERR.SOURCE_INVALID, `${what} (sha256:${hex}) is missing from the layout`);
  }
  if (h.digest('hex') !== hex) throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${what} does not match its digest sha256:${hex}`, { hint: 'the OCI layout is corrupt' });
}

async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => undefined))?.isDirectory() ?? false;
}


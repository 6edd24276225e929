/**
 * The store on an OCI registry: push, pull, configured remotes, and fetching the missing blobs
 * of a lock from the remotes. Format and rules: spec/registry.md.
 *
 * One module = one OCI image manifest, tagged tagFromFullName(fullName) and its record CID:
 *
 *   { "schemaVersion": 2,
 *     "mediaType": "application/vnd.oci.image.manifest.v1+json",
 *     "artifactType": "application/vnd.strata.module.v1",
 *     "config": { "mediaType": "application/vnd.strata.module.config.v1+json",
 *                 "digest": "sha256:<record>", "size": N },          the module record blob itself
 *     "layers": [
 *       { "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
 *         "digest": "sha256:<compressed>", "size": N,                the canonical layer tar, zstd
 *         "annotations": { "vnd.strata.layer.diff-id": "sha256:<layer>",
 *                          "vnd.strata.layer.diff-size": "<N>" } },  its uncompressed digest, size
 *       { "mediaType": "application/vnd.strata.layer-manifest.v1+json",
 *         "digest": "sha256:<manifest>", "size": N } ],              the sidecar manifest
 *     "annotations": { "org.opencontainers.image.title": "<fullName>",
 *                      "vnd.strata.module.record": "<record CID>",
 *                      "org.opencontainers.image.ref.name": "<tag>" } }
 *
 * The layer may also be `…tar+gzip` (same annotations) or `…tar` uncompressed (the first
 * form, no annotations: its digest is the layer CID's); pull reads all three. Whatever the
 * compression, the layer's identity is the uncompressed digest, named by the record (the
 * config, as an image config names its diff ids) and checked on pull as the tar is stored.
 * The manifest bytes are exactly this, keys in this order, no whitespace, no time.
 *
 * Default marks travel in one more artifact per repository, tag `strata-defaults` (a fullName
 * tag always holds a '_' and a CID never a '-', so no module's tag can be this one): config
 * `application/vnd.strata.defaults.v1+json` = canonical JSON {"defaults":{"<name>":"<fullName>"}},
 * no layers.
 *
 * Remotes live in the index at `r/<name>` as JSON {url, siteInternal}; no credential is ever
 * stored (the registry client finds them per host: credentials.ts).
 */
import { lookupGroup } from '../../native/ids.js';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { CompressStream, DecompressStream } from 'zstd-napi';
import { printable, printableValue } from '../../native/errors.js';
import { canonicalJson, cidFromHex, JSON_CODEC, parseCid, RAW_CODEC } from '../cid.js';
import { StrataError, STORE_ERR } from '../errors.js';
import { readManifest } from '../layer/manifest.js';
import { fullNameOf, splitFullName, validateRecord, type ModuleRecord } from '../record.js';
import { parseRepositoryRef, RegistryClient, MEDIA_TYPES, type RegistryClientOptions, type RegistryRef, type RetryInfo } from './client.js';
import { isValidTag, tagFromFullName } from './tag.js';
import type { StoreInternals, LoadedModule } from '../internals.js';

export const STRATA_MEDIA_TYPES = {
  ARTIFACT: 'application/vnd.strata.module.v1',
  CONFIG: 'application/vnd.strata.module.config.v1+json',
  LAYER: 'application/vnd.oci.image.layer.v1.tar',
  LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  LAYER_ZSTD: 'application/vnd.oci.image.layer.v1.tar+zstd',
  LAYER_MANIFEST: 'application/vnd.strata.layer-manifest.v1+json',
  DEFAULTS: 'application/vnd.strata.defaults.v1',
  DEFAULTS_CONFIG: 'application/vnd.strata.defaults.v1+json',
} as const;

export const RECORD_ANNOTATION = 'vnd.strata.module.record';
const TITLE_ANNOTATION = 'org.opencontainers.image.title';
const REF_ANNOTATION = 'org.opencontainers.image.ref.name';
const DIFF_ID_ANNOTATION = 'vnd.strata.layer.diff-id';
const DIFF_SIZE_ANNOTATION = 'vnd.strata.layer.diff-size';
export const DEFAULTS_TAG = 'strata-defaults';
const RECORD_LIMIT = 4 << 20;
const DEFAULTS_LIMIT = 1 << 20;
const REMOTE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

// ---- remotes ---------------------------------------------------------------------------------

export interface Remote {
  name: string;
  /** Normalized `scheme://host[:port]/repo`. */
  url: string;
  /** Restricted modules may be pushed here: the registry never leaves the site. */
  siteInternal: boolean;
}

/** Parses and normalizes a remote URL (`host[:port]/repo` or with http(s)://); refuses userinfo. */
export function normalizeRemoteUrl(text: string): { ref: RegistryRef; url: string } {
  const ref = parseRepositoryRef(text);
  let base: URL;
  try {
    base = new URL(ref.base);
  } catch {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a registry URL: ${JSON.stringify(text)}`);
  }
  if (base.username || base.password || ref.base.includes('@')) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, 'a remote URL must not carry credentials', {
      hint: 'set STRATA_REGISTRY_AUTH=user:password or run docker login instead',
    });
  }
  // The client checks the repository grammar; constructing one is the validation.
  new RegistryClient(ref, { auth: null }).close();
  return { ref, url: `${base.origin}/${ref.repo}` };
}

/** Adds (or, with replace, changes) remote `name`. Nothing but {url, siteInternal} is stored. */
export async function addRemote(store: StoreInternals, name: string, url: string,
                                opts: { siteInternal?: boolean; replace?: boolean } = {}): Promise<Remote> {
  if (!REMOTE_NAME.test(name)) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `'${name}' is not a remote name`, { hint: 'letters, digits, . _ - (no /), e.g. site or hub' });
  }
  const norm = normalizeRemoteUrl(url);
  const remote: Remote = { name, url: norm.url, siteInternal: Boolean(opts.siteInternal) };
  await store.index(async (ix) => {
    if ((await ix.get(`r/${name}`)) !== undefined && !opts.replace) {
      throw new StrataError(STORE_ERR.EXISTS, `remote ${name} already exists`, { hint: `remove it first with \`strata store remote rm ${name}\`` });
    }
    await ix.batch([{ type: 'put', key: `r/${name}`, value: JSON.stringify({ url: remote.url, siteInternal: remote.siteInternal }) }]);
  });
  return remote;
}

/** Configured remotes, in name order. */
export async function listRemotes(store: StoreInternals): Promise<Remote[]> {
  const rows = await (await store.view()).range('r/');
  return rows.map(([k, v]) => {
    const j = JSON.parse(v) as { url: string; siteInternal?: boolean };
    return { name: k.slice(2), url: j.url, siteInternal: Boolean(j.siteInternal) };
  });
}

export async function removeRemote(store: StoreInternals, name: string): Promise<void> {
  await store.index(async (ix) => {
    if ((await ix.get(`r/${name}`)) === undefined) {
      throw new StrataError(STORE_ERR.NOT_FOUND, `no remote ${name}`, { hint: 'see `strata store remote ls`' });
    }
    await ix.batch([{ type: 'del', key: `r/${name}` }]);
  });
}

export interface Destination {
  ref: RegistryRef;
  /** What messages call it: the remote's name, or REGISTRY/REPO as given. */
  label: string;
  /** The configured remote it is (by name, or by the same normalized URL). */
  remote: Remote | undefined;
}

/** A remote name, or REGISTRY/REPO (matched against the remotes' URLs, so their flags apply). */
export async function resolveDestination(store: StoreInternals, text: string): Promise<Destination> {
  const remotes = await listRemotes(store);
  const byName = remotes.find((r) => r.name === text);
  if (byName) return { ref: parseRepositoryRef(byName.url), label: byName.name, remote: byName };
  if (!text.includes('/')) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `no remote named ${text}`, {
      hint: 'give REGISTRY/REPO, or add the remote with `strata store remote add NAME URL`',
    });
  }
  const { ref, url } = normalizeRemoteUrl(text);
  return { ref, label: text, remote: remotes.find((r) => r.url === url) };
}

// ---- the artifact ----------------------------------------------------------------------------

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** How a layer travels: the canonical tar as it is, or compressed (OCI layer media types). */
export type LayerCompression = 'none' | 'gzip' | 'zstd';

const LAYER_TYPES: Record<string, LayerCompression> = {
  [STRATA_MEDIA_TYPES.LAYER]: 'none',
  [STRATA_MEDIA_TYPES.LAYER_GZIP]: 'gzip',
  [STRATA_MEDIA_TYPES.LAYER_ZSTD]: 'zstd',
};
const LAYER_TYPE_OF: Record<LayerCompression, string> = {
  none: STRATA_MEDIA_TYPES.LAYER,
  gzip: STRATA_MEDIA_TYPES.LAYER_GZIP,
  zstd: STRATA_MEDIA_TYPES.LAYER_ZSTD,
};

/** The layer descriptor of a compressed layer: the blob as sent, and the canonical tar it holds. */
function compressedLayerDescriptor(compression: Exclude<LayerCompression, 'none'>, digest: string, size: number,
                                   diffId: string, diffSize: number): Descriptor {
  return {
    mediaType: LAYER_TYPE_OF[compression], digest, size,
    annotations: { [DIFF_ID_ANNOTATION]: diffId, [DIFF_SIZE_ANNOTATION]: String(diffSize) },
  };
}

/** The OCI manifest of a module, as bytes (see the file comment for the exact form). */
export function artifactManifest(fullName: string, recordCid: string, record: Descriptor, layer: Descriptor,
                                 sidecar: Descriptor): Buffer {
  const desc = (d: Descriptor) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size,
    ...(d.annotations ? { annotations: d.annotations } : {}) });
  const doc = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.OCI_MANIFEST,
    artifactType: STRATA_MEDIA_TYPES.ARTIFACT,
    config: desc(record),
    layers: [desc(layer), desc(sidecar)],
    annotations: {
      [TITLE_ANNOTATION]: fullName,
      [RECORD_ANNOTATION]: recordCid,
      [REF_ANNOTATION]: tagFromFullName(fullName),
    },
  };
  return Buffer.from(JSON.stringify(doc), 'utf8');
}

interface LayerDescriptor extends Descriptor {
  compression: LayerCompression;
  /** `sha256:<hex>` of the canonical (uncompressed) tar: the layer CID's digest. */
  diffId: string;
  /** Size of the canonical tar; for an uncompressed layer, its size. */
  diffSize: number;
}

interface ParsedArtifact {
  digest: string;
  record: Descriptor;
  layer: LayerDescriptor;
  sidecar: Descriptor;
  recordCid: string;
  title: string | undefined;
}

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/** Checks that a registry manifest is a strata module artifact; undefined when it is another kind. */
function parseArtifact(bytes: Buffer, digest: string, where: string): ParsedArtifact | undefined {
  let m: {
    mediaType?: unknown; artifactType?: unknown; config?: Partial<Descriptor>;
    layers?: Partial<Descriptor>[]; annotations?: Record<string, unknown>;
  };
  try {
    m = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (m?.config?.mediaType !== STRATA_MEDIA_TYPES.CONFIG) return undefined;
  const bad = (why: string) => new StrataError(STORE_ERR.REGISTRY, `${where} is not a well-formed strata module (${why})`, {
    hint: 'push the module again from a good store',
  });
  const desc = (d: Partial<Descriptor> | undefined, types: string[], what: string): Descriptor => {
    if (!d || !types.includes(d.mediaType as string) || typeof d.digest !== 'string' || !DIGEST_RE.test(d.digest)
        || !Number.isSafeInteger(d.size) || (d.size as number) < 0) {
      throw bad(`${what} descriptor`);
    }
    return { mediaType: d.mediaType as string, digest: d.digest, size: d.size as number };
  };
  if (m.mediaType !== MEDIA_TYPES.OCI_MANIFEST) throw bad(`media type ${printableValue(m.mediaType)}`);
  if (!Array.isArray(m.layers) || m.layers.length !== 2) throw bad('it must have two layers');
  const record = desc(m.config, [STRATA_MEDIA_TYPES.CONFIG], 'config');
  const l = desc(m.layers[0], Object.keys(LAYER_TYPES), 'layer');
  const compression = LAYER_TYPES[l.mediaType]!;
  let layer: LayerDescriptor;
  if (compression === 'none') {
    layer = { ...l, compression, diffId: l.digest, diffSize: l.size };
  } else {
    const ann = (m.layers[0] as { annotations?: Record<string, unknown> }).annotations ?? {};
    const diffId = ann[DIFF_ID_ANNOTATION];
    const diffSize = Number(ann[DIFF_SIZE_ANNOTATION]);
    if (typeof diffId !== 'string' || !DIGEST_RE.test(diffId) || typeof ann[DIFF_SIZE_ANNOTATION] !== 'string'
        || !/^\d{1,16}$/.test(ann[DIFF_SIZE_ANNOTATION] as string) || !Number.isSafeInteger(diffSize)) {
      throw bad('a compressed layer must name its uncompressed digest and size');
    }
    layer = { ...l, annotations: { [DIFF_ID_ANNOTATION]: diffId, [DIFF_SIZE_ANNOTATION]: String(diffSize) }, compression, diffId, diffSize };
  }
  const sidecar = desc(m.layers[1], [STRATA_MEDIA_TYPES.LAYER_MANIFEST], 'layer manifest');
  const recordCid = cidFromHex(JSON_CODEC, record.digest.slice(7));
  const ann = m.annotations ?? {};
  if (ann[RECORD_ANNOTATION] !== undefined && ann[RECORD_ANNOTATION] !== recordCid) {
    throw bad(`its record annotation ${printableValue(ann[RECORD_ANNOTATION])} is not its config ${recordCid}`);
  }
  const title = typeof ann[TITLE_ANNOTATION] === 'string' ? ann[TITLE_ANNOTATION] as string : undefined;
  return { digest, record, layer, sidecar, recordCid, title };
}

// ---- layer compression -----------------------------------------------------------------------

/**
 * Compresses the canonical layer `hex` into a temp file of the store (hashed while written).
 * Deterministic for one zstd/zlib version: zstd level 3, gzip level 6 with no name and no time.
 * The caller removes `path`.
 */
async function compressLayer(store: StoreInternals, hex: string, compression: Exclude<LayerCompression, 'none'>):
    Promise<{ path: string; digest: string; size: number }> {
  const path = store.blobs.tmpPath('push');
  const hash = createHash('sha256');
  let size = 0;
  const z = compression === 'zstd' ? new CompressStream({ compressionLevel: 3 }) : createGzip({ level: 6 });
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  try {
    await pipelineAsync(createReadStream(store.blobs.readPath(hex), { highWaterMark: 1 << 20 }), z, count,
      createWriteStream(path, { flags: 'wx', mode: 0o600 }));
  } catch (e) {
    await rm(path, { force: true });
    throw e;
  }
  return { path, digest: `sha256:${hash.digest('hex')}`, size };
}

/**
 * The canonical tar out of a compressed layer blob, never more than `limit` bytes (the size
 * the manifest declares; the caller's digest check catches any other lie). Damaged compressed
 * data is ERR_REGISTRY. Stopping early closes the download.
 */
async function* decompressLayer(src: AsyncIterable<Buffer>, compression: Exclude<LayerCompression, 'none'>,
                                 limit: number, where: string): AsyncGenerator<Buffer> {
  const t = compression === 'zstd' ? new DecompressStream() : createGunzip();
  const done = pipelineAsync(Readable.from(src), t);
  done.catch(() => undefined);
  let n = 0;
  try {
    for await (const chunk of t as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) {
        throw new StrataError(STORE_ERR.REGISTRY, `${where}: the layer decompresses to more than the ${limit} bytes its manifest declares`, {
          hint: 'the registry copy is damaged or forged; push the module again from a good store',
        });
      }
      yield chunk;
    }
    await done;
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw new StrataError(STORE_ERR.REGISTRY, `${where}: the layer blob is not valid ${compression} data`, {
      hint: 'the registry copy is damaged; push the module again from a good store',
      cause: e,
    });
  } finally {
    t.destroy();
  }
}

// ---- default marks ---------------------------------------------------------------------------

/** `{"defaults":{"<name>":"<name>/<version>",…}}`, canonical JSON, at most DEFAULTS_LIMIT bytes. */
interface DefaultsDoc {
  defaults: Record<string, string>;
}

function defaultsManifest(config: Descriptor): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.OCI_MANIFEST,
    artifactType: STRATA_MEDIA_TYPES.DEFAULTS,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [],
    annotations: { [REF_ANNOTATION]: DEFAULTS_TAG },
  }), 'utf8');
}

/** The repository's default marks, or an empty document when it has none (or a foreign tag). */
async function readDefaults(s: Session, where: string): Promise<DefaultsDoc> {
  const got = await manifestByTag(s, DEFAULTS_TAG);
  if (!got) return { defaults: {} };
  let m: { config?: Partial<Descriptor> };
  try {
    m = JSON.parse(got.bytes.toString('utf8'));
  } catch {
    return { defaults: {} };
  }
  const c = m?.config;
  if (c?.mediaType !== STRATA_MEDIA_TYPES.DEFAULTS_CONFIG) return { defaults: {} };
  if (typeof c.digest !== 'string' || !DIGEST_RE.test(c.digest) || !Number.isSafeInteger(c.size) || (c.size as number) < 0
      || (c.size as number) > DEFAULTS_LIMIT) {
    throw new StrataError(STORE_ERR.REGISTRY, `${where}:${DEFAULTS_TAG} is not a well-formed defaults document`, {
      hint: 'push the modules again to rewrite it',
    });
  }
  const chunks: Buffer[] = [];
  for await (const b of s.client.getBlob(c.digest, c.size as number)) chunks.push(b);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch { /* checked below */ }
  const d = (doc as { defaults?: unknown } | undefined)?.defaults;
  if (!d || typeof d !== 'object' || Array.isArray(d)) {
    throw new StrataError(STORE_ERR.REGISTRY, `${where}:${DEFAULTS_TAG} is not a well-formed defaults document`, {
      hint: 'push the modules again to rewrite it',
    });
  }
  const defaults: Record<string, string> = {};
  for (const [name, fullName] of Object.entries(d as Record<string, unknown>)) {
    if (typeof fullName === 'string' && fullName.startsWith(`${name}/`)) defaults[name] = fullName;
  }
  return { defaults };
}

/** Writes the default marks of `marks` (name → fullName) over the repository's, when they change. */
async function writeDefaults(s: Session, where: string, marks: Map<string, string>): Promise<void> {
  if (marks.size === 0) return;
  const doc = await readDefaults(s, where);
  let changed = false;
  for (const [name, fullName] of marks) {
    if (doc.defaults[name] !== fullName) {
      doc.defaults[name] = fullName;
      changed = true;
    }
  }
  if (!changed) return;
  const bytes = canonicalJson(doc);
  const config: Descriptor = {
    mediaType: STRATA_MEDIA_TYPES.DEFAULTS_CONFIG,
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    size: bytes.length,
  };
  await s.client.putBlob(config.digest, config.size, () => (async function* () { yield bytes; })());
  await s.client.putManifest(DEFAULTS_TAG, MEDIA_TYPES.OCI_MANIFEST, defaultsManifest(config));
}

// ---- transfers -------------------------------------------------------------------------------

/** How a transfer reports itself; the CLI turns these into a progress bar and notes. */
export interface TransferHooks {
  /** A module's blobs start to move; `total` is the sum of its blob sizes. */
  onModule?(info: { fullName: string; action: 'push' | 'pull'; total: number }): void;
  /** Bytes of the current module done so far (blobs already there count as done). */
  onProgress?(done: number): void;
  /** The current module is finished. */
  onModuleDone?(): void;
  /** A request failed and is retried after a wait (no credentials in it). */
  onRetry?(info: RetryInfo): void;
  /** Registry client tuning (retries, backoff, chunk size); tests shorten the waits. */
  client?: Omit<RegistryClientOptions, 'onProgress' | 'onRetry'>;
}

/** A client whose progress feeds `hooks` with a per-module counter. */
class Session {
  readonly client: RegistryClient;
  done = 0;
  constructor(ref: RegistryRef, readonly hooks: TransferHooks) {
    this.client = new RegistryClient(ref, {
      ...hooks.client,
      onProgress: (n) => {
        this.done += n;
        hooks.onProgress?.(this.done);
      },
      onRetry: (i) => hooks.onRetry?.(i),
    });
  }
  begin(fullName: string, action: 'push' | 'pull', total: number): void {
    this.done = 0;
    this.hooks.onModule?.({ fullName, action, total });
  }
  skip(bytes: number): void {
    this.done += bytes;
    this.hooks.onProgress?.(this.done);
  }
  end(): void {
    this.hooks.onModuleDone?.();
  }
}

export interface PushResult {
  fullName: string;
  record: string;
  tag: string;
  /** Digest of the module's OCI manifest (absent when skipped). */
  digest?: string;
  /** Digests of the blobs that were sent; the others were already there. */
  uploaded: string[];
  /**
   * 'unchanged': every blob was there and the tag already named this manifest.
   * 'skipped': not sent, see `reason` (a push of every module skips what the remote may not
   * receive).
   */
  status: 'pushed' | 'unchanged' | 'skipped';
  reason?: string;
  /** How the layer travels. */
  compression?: LayerCompression;
  /** The module is its name's default here, and the remote's default marks now say so. */
  default?: boolean;
}

export interface PushOptions extends TransferHooks {
  /** Layer compression (default zstd); 'none' writes the first, uncompressed form. */
  compression?: LayerCompression;
}

function restrictedError(fullName: string, group: string, label: string): StrataError {
  return new StrataError(STORE_ERR.ACCESS_DENIED,
    `${fullName} is restricted to group ${group}: refusing to push it to ${label}, which is not marked site-internal`,
    { hint: 'add the remote with --site-internal if it never leaves the site' });
}

/**
 * Pushes modules (fullNames or record CIDs; none = every module in the store) to `target`
 * (a remote name or REGISTRY/REPO). A restricted module goes only to a configured remote
 * marked site-internal: when modules are named, one that may not go refuses the whole push
 * (ERR_ACCESS_DENIED) before anything is sent; a push of every module skips those and lists
 * them ('skipped'). Per module: the layer is compressed (unless the remote already holds this
 * layer in this compression), each blob is HEADed and sent only when missing — a restricted
 * module's uploads confined to the remote's origin — then the manifest is PUT under the
 * module's tag and record CID (skipped when the tag already names it). Last, the default
 * marks of the pushed modules are merged into the repository's `strata-defaults`.
 * Idempotent: a second push sends only HEAD and GET requests.
 */
export async function push(store: StoreInternals, target: string, modules: string[], opts: PushOptions = {}): Promise<PushResult[]> {
  const dest = await resolveDestination(store, target);
  const compression = opts.compression ?? 'zstd';
  const summaries = await store.list();
  const names = modules.length > 0 ? modules : summaries.map((m) => m.fullName);
  if (names.length === 0) throw new StrataError(STORE_ERR.NOT_FOUND, 'the store has no modules to push', { hint: 'import some with `strata store import`' });
  const defaultOf = new Map(summaries.filter((m) => m.isDefault).map((m) => [m.name, m.fullName]));
  const mods: LoadedModule[] = [];
  for (const n of names) mods.push(await store.get(n));
  const out: PushResult[] = [];
  const sending: LoadedModule[] = [];
  for (const m of mods) {
    // Its record's group, else its layer's: a module imported open cannot leave the site once its content is restricted.
    const group = await store.moduleRestriction(m.record);
    if (group !== null && !dest.remote?.siteInternal) {
      if (modules.length > 0) throw restrictedError(m.fullName, group, dest.label);
      out.push({ fullName: m.fullName, record: m.cid, tag: tagFromFullName(m.fullName), uploaded: [], status: 'skipped',
        reason: `restricted to group ${group}; ${dest.label} is not marked site-internal` });
    } else {
      sending.push(m);
    }
  }
  const s = new Session(dest.ref, opts);
  const marks = new Map<string, string>();
  try {
    for (const m of sending) {
      const r = await pushModule(store, s, dest.label, m, compression, (await store.moduleRestriction(m.record)) !== null);
      const { name } = splitFullName(m.fullName);
      if (defaultOf.get(name) === m.fullName) {
        marks.set(name, m.fullName);
        r.default = true;
      }
      out.push(r);
    }
    await writeDefaults(s, dest.label, marks);
  } finally {
    s.client.close();
  }
  const order = new Map(mods.map((m, i) => [m.fullName, i]));
  return out.sort((a, b) => order.get(a.fullName)! - order.get(b.fullName)!);
}

async function pushModule(store: StoreInternals, s: Session, label: string, m: LoadedModule, compression: LayerCompression,
                          confined: boolean): Promise<PushResult> {
  const recordHex = parseCid(m.cid).hex;
  const layerHex = parseCid(m.record.layer).hex;
  const sidecarHex = parseCid(m.record.manifest).hex;
  const tag = tagFromFullName(m.fullName);
  const where = `${label}:${tag}`;
  const there = await manifestByTag(s, tag);
  let thereArt: ParsedArtifact | undefined;
  try {
    thereArt = there && parseArtifact(there.bytes, there.digest, where);
  } catch { /* a malformed manifest under our tag is simply replaced */ }

  const diffId = `sha256:${layerHex}`;
  const diffSize = await blobSize(store, layerHex, `layer of ${m.fullName}`);
  const sidecar: Descriptor = { mediaType: STRATA_MEDIA_TYPES.LAYER_MANIFEST, digest: `sha256:${sidecarHex}`,
    size: await blobSize(store, sidecarHex, `manifest of ${m.fullName}`) };
  const record: Descriptor = { mediaType: STRATA_MEDIA_TYPES.CONFIG, digest: `sha256:${recordHex}`,
    size: await blobSize(store, recordHex, `record of ${m.fullName}`) };
  let layer: Descriptor;
  let layerPath: string | undefined = store.blobs.readPath(layerHex);
  let temp: string | undefined;
  try {
    if (compression === 'none') {
      layer = { mediaType: STRATA_MEDIA_TYPES.LAYER, digest: diffId, size: diffSize };
    } else {
      // The remote already holds this layer so compressed: reuse its blob rather than
      // compressing again (and a zstd of another version could give other bytes).
      const old = thereArt?.layer;
      if (old && old.compression === compression && old.diffId === diffId && old.diffSize === diffSize
          && (await s.client.hasBlob(old.digest))) {
        layer = compressedLayerDescriptor(compression, old.digest, old.size, diffId, diffSize);
        layerPath = undefined;
      } else {
        const c = await compressLayer(store, layerHex, compression);
        temp = c.path;
        layerPath = c.path;
        layer = compressedLayerDescriptor(compression, c.digest, c.size, diffId, diffSize);
      }
    }
    const manifest = artifactManifest(m.fullName, m.cid, record, layer, sidecar);
    s.begin(m.fullName, 'push', layer.size + sidecar.size + record.size);
    const uploaded: string[] = [];
    const blobs: Array<[Descriptor, string | undefined]> = [
      [layer, layerPath],
      [sidecar, store.blobs.readPath(sidecarHex)],
      [record, store.blobs.readPath(recordHex)],
    ];
    for (const [b, path] of blobs) {
      if (path === undefined) {
        s.skip(b.size);
        continue;
      }
      const r = await s.client.putBlob(b.digest, b.size, (offset) => createReadStream(path, { start: offset, highWaterMark: 1 << 20 }),
        { confined });
      if (r === 'uploaded') uploaded.push(b.digest);
      else s.skip(b.size);
    }
    const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
    if (there?.digest !== digest) await s.client.putManifest(tag, MEDIA_TYPES.OCI_MANIFEST, manifest);
    // A second tag, the record CID itself, keeps every pushed record reachable after the
    // fullName tag moves on, so old locks can still be rebuilt from the remote.
    if (there?.digest !== digest || !(await manifestByTag(s, m.cid))) await s.client.putManifest(m.cid, MEDIA_TYPES.OCI_MANIFEST, manifest);
    s.end();
    return { fullName: m.fullName, record: m.cid, tag, digest, uploaded, compression,
      status: uploaded.length === 0 && there?.digest === digest ? 'unchanged' : 'pushed' };
  } finally {
    if (temp) await rm(temp, { force: true });
  }
}

async function blobSize(store: StoreInternals, hex: string, what: string): Promise<number> {
  try {
    return await store.blobs.size(hex);
  } catch {
    throw new StrataError(STORE_ERR.BLOB_MISSING, `${what} sha256:${hex} is missing from the store`, {
      hint: 'run `strata store verify`; re-import or pull the module',
    });
  }
}

export interface PullResult {
  fullName: string;
  record: string;
  tag: string;
  /** Bytes received (blobs the store already had are not fetched). */
  bytes: number;
  /** 'fetched': blobs stored, index left alone (fetch-missing when the name is taken). */
  status: 'pulled' | 'unchanged' | 'replaced' | 'fetched';
  /** The remote marks this module as its name's default and the pull made it the default here. */
  default?: boolean;
}

export interface PullOptions extends TransferHooks {
  /** Replace a module of the same name with other content. */
  force?: boolean;
}

/**
 * Pulls modules from `source` (a remote name or REGISTRY/REPO). `refs`: fullNames (fetched by
 * their tag; the record the tag serves must be that module), record or layer CIDs (by their
 * CID tag, else found by scanning the tags), or none for every strata module in the
 * repository. Every blob is verified while it streams into the store (a compressed layer is
 * decompressed and its canonical tar checked against the layer CID); the record must name the
 * artifact's layer and manifest; the module's index entry is written only after all its blobs
 * are durable, so an interrupted pull leaves no partial module. The same module already in the
 * store is a no-op; another module of that name is ERR_EXISTS unless `force`. Last, the
 * remote's default mark for a pulled module's name is applied when this store has none.
 */
export async function pull(store: StoreInternals, source: string, refs: string[], opts: PullOptions = {}): Promise<PullResult[]> {
  await store.ensureWritable();
  const dest = await resolveDestination(store, source);
  const s = new Session(dest.ref, opts);
  try {
    const found: Array<{ tag: string; art: ParsedArtifact; expect?: string }> = [];
    const scanned = new Map<string, ParsedArtifact | undefined>();
    const scan = async () => {
      if (scanned.size > 0) return scanned;
      for (const tag of await s.client.listTags()) {
        if (!isValidTag(tag)) continue; // not a tag strata (or OCI) could have written
        const { bytes, digest } = await s.client.getManifest(tag);
        scanned.set(tag, parseArtifact(bytes, digest, `${dest.label}:${printable(tag)}`));
      }
      return scanned;
    };
    if (refs.length === 0) {
      // Each record is tagged twice (fullName tag and record CID): pull it once, by name.
      const byRecord = new Map<string, { tag: string; art: ParsedArtifact }>();
      for (const [tag, art] of await scan()) {
        if (!art) continue;
        const seen = byRecord.get(art.record.digest);
        if (!seen || isCidText(seen.tag)) byRecord.set(art.record.digest, { tag, art });
      }
      found.push(...byRecord.values());
      if (found.length === 0) throw new StrataError(STORE_ERR.NOT_FOUND, `${dest.label} holds no strata modules`, { hint: 'push some with `strata store push`' });
    }
    for (const ref of refs) {
      let hit: { tag: string; art: ParsedArtifact; expect?: string } | undefined;
      if (isCidText(ref)) {
        const { codec, hex } = parseCid(ref);
        const digest = `sha256:${hex}`;
        const direct = codec === RAW_CODEC ? undefined : await manifestByTag(s, ref);
        const art = direct && parseArtifact(direct.bytes, direct.digest, `${dest.label}:${ref}`);
        if (art && art.record.digest === digest) hit = { tag: ref, art };
        for (const [tag, art] of hit ? [] : await scan()) {
          if (art && (codec === RAW_CODEC ? art.layer.diffId === digest : art.record.digest === digest)) {
            hit = { tag, art };
            break;
          }
        }
        if (!hit) throw new StrataError(STORE_ERR.NOT_FOUND, `${dest.label} has no module with ${codec === RAW_CODEC ? 'layer' : 'record'} ${ref}`);
      } else {
        const tag = tagFromFullName(ref);
        const { bytes, digest } = await s.client.getManifest(tag);
        const art = parseArtifact(bytes, digest, `${dest.label}:${tag}`);
        if (!art) throw new StrataError(STORE_ERR.REGISTRY, `${dest.label}:${tag} is not a strata module`, { hint: 'it was not pushed by strata store push' });
        hit = { tag, art, expect: ref };
      }
      found.push(hit);
    }
    const out: PullResult[] = [];
    for (const { tag, art, expect } of found) {
      const r = await pullArtifact(store, s, art, tag, dest.label, { force: opts.force, index: 'always', expect });
      out.push(r);
    }
    await applyDefaults(store, s, dest.label, out);
    return out;
  } finally {
    s.client.close();
  }
}

/** Applies the remote's default marks to the pulled modules whose name has none in the store. */
async function applyDefaults(store: StoreInternals, s: Session, label: string, pulled: PullResult[]): Promise<void> {
  if (pulled.length === 0) return;
  const { defaults } = await readDefaults(s, label);
  const marked = new Set((await store.list()).filter((m) => m.isDefault).map((m) => m.name));
  for (const r of pulled) {
    const { name } = splitFullName(r.fullName);
    if (defaults[name] !== r.fullName || marked.has(name)) continue;
    await store.setDefault(r.fullName);
    marked.add(name);
    r.default = true;
  }
}

function isCidText(ref: string): boolean {
  if (ref.includes('/')) return false;
  try {
    parseCid(ref);
    return true;
  } catch {
    return false;
  }
}

/**
 * Brings one artifact's blobs into the store (verified) and, per `index`, its `m/` entry.
 * Order: record into memory (verified, checked), layer and sidecar streamed into blobs,
 * record blob, then the index batch — only once every blob it names is durable.
 * `expect`: the fullName that was asked for; a record of another module is refused.
 */
async function pullArtifact(store: StoreInternals, s: Session, art: ParsedArtifact, tag: string, label: string,
                            opts: { force?: boolean; index: 'always' | 'if-free'; expect?: string }): Promise<PullResult> {
  const where = `${label}:${printable(tag)}`;
  if (art.record.size > RECORD_LIMIT) throw new StrataError(STORE_ERR.REGISTRY, `${where}: record of ${art.record.size} bytes is too large`);
  const chunks: Buffer[] = [];
  for await (const c of s.client.getBlob(art.record.digest, art.record.size)) chunks.push(c);
  const recordBytes = Buffer.concat(chunks);
  let record: ModuleRecord;
  try {
    record = validateRecord(JSON.parse(recordBytes.toString('utf8')), `${where} (${art.recordCid})`);
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw new StrataError(STORE_ERR.REGISTRY, `${where}: the record is not JSON`);
  }
  const fullName = fullNameOf(record);
  const mismatch = (why: string) => new StrataError(STORE_ERR.DIGEST_MISMATCH, `${where}: ${why}`, { hint: 'the registry copy is damaged or forged; push the module again from a good store' });
  if (opts.expect !== undefined && opts.expect !== fullName) {
    throw new StrataError(STORE_ERR.REGISTRY, `${where} serves ${printable(fullName)}, not ${printable(opts.expect)}: refused`, {
      hint: 'the tag was moved or forged on the registry; push the module again from a good store',
    });
  }
  if (art.title !== undefined && art.title !== fullName) throw mismatch(`the manifest says ${printable(art.title)} but its record is ${printable(fullName)}`);
  const layer = parseCid(record.layer);
  const sidecar = parseCid(record.manifest);
  if (layer.codec !== RAW_CODEC || `sha256:${layer.hex}` !== art.layer.diffId) throw mismatch(`record names layer ${record.layer}, the manifest ${art.layer.diffId}`);
  if (sidecar.codec !== JSON_CODEC || `sha256:${sidecar.hex}` !== art.sidecar.digest) throw mismatch(`record names layer manifest ${record.manifest}, the manifest ${art.sidecar.digest}`);

  const recordHex = art.record.digest.slice(7);
  const existing = await store.index((ix) => ix.get(`m/${fullName}`));
  const present = async () => (await Promise.all([recordHex, layer.hex, sidecar.hex].map((h) => store.blobs.has(h)))).every(Boolean);
  if (existing === art.recordCid && (await present())) {
    return { fullName, record: art.recordCid, tag, bytes: 0, status: 'unchanged' };
  }
  if (existing !== undefined && existing !== art.recordCid && opts.index === 'always' && !opts.force) {
    throw new StrataError(STORE_ERR.EXISTS, `${fullName} is already in the store with other content (record ${existing}, ${where} has ${art.recordCid})`, {
      hint: 'use --force to replace it',
    });
  }

  // Restricted content lands group-only, as an import with --restricted makes it.
  let gid: number | undefined;
  if (record.restricted !== null) {
    gid = lookupGroup(record.restricted);
    if (gid === undefined) {
      throw new StrataError(STORE_ERR.ACCESS_DENIED, `${fullName} is restricted to group ${printable(record.restricted)}, which this host does not have`, {
        hint: 'create the group first, then pull again',
      });
    }
  }
  // Restriction follows content, as on import: content restricted here joins only a module of its group.
  const held = await store.restrictionOf(record.layer);
  if (held !== null && held !== record.restricted) {
    throw new StrataError(STORE_ERR.ACCESS_DENIED,
      `${fullName} names content restricted to group ${printable(held)} in this store, and ${where} has it ${record.restricted === null ? 'unrestricted' : `restricted to group ${printable(record.restricted)}`}`,
      { hint: 'only staff may lift the restriction here (store import --unrestrict), then pull again' });
  }
  const groupOf = async () => gid;
  s.begin(fullName, 'pull', art.layer.size + art.sidecar.size + art.record.size);
  let bytes = 0;
  if (await store.blobs.has(layer.hex)) {
    s.skip(art.layer.size);
  } else {
    const body = s.client.getBlob(art.layer.digest, art.layer.size);
    const c = art.layer.compression;
    try {
      await store.blobs.put(c === 'none' ? body : decompressLayer(body, c, art.layer.diffSize, where), layer.hex, groupOf, art.layer.diffSize);
    } catch (e) {
      // The blob itself was as named (getBlob checks it first); its tar is not the module's.
      if (c !== 'none' && e instanceof StrataError && e.code === STORE_ERR.DIGEST_MISMATCH && e.message.startsWith('content does not match')) {
        throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${where}: the ${c} layer does not hold layer ${record.layer}`, {
          hint: 'the registry copy is damaged or forged; push the module again from a good store', cause: e,
        });
      }
      throw e;
    }
    bytes += art.layer.size;
  }
  if (await store.blobs.has(sidecar.hex)) {
    s.skip(art.sidecar.size);
  } else {
    await store.blobs.put(s.client.getBlob(art.sidecar.digest, art.sidecar.size), sidecar.hex, groupOf, art.sidecar.size);
    bytes += art.sidecar.size;
  }
  // Streamed: the entries are only checked to be a manifest's, not held.
  const m = await readManifest(store.blobs.read(sidecar.hex, `manifest of ${fullName}`), `manifest of ${fullName}`, () => undefined);
  if (m.layer !== record.layer) throw mismatch(`layer manifest ${record.manifest} describes layer ${m.layer}, not ${record.layer}`);
  await store.blobs.put([recordBytes], recordHex);
  bytes += recordBytes.length;
  s.end();
  // Blobs that were here already kept their mode: the same content, pulled or imported open before.
  if (gid !== undefined) await store.confine(record.layer, record.manifest, gid);

  const mark = record.restricted !== null ? [{ type: 'put' as const, key: `x/${record.layer}`, value: record.restricted }] : [];
  const status = await store.index(async (ix) => {
    const now = await ix.get(`m/${fullName}`);
    if (now === art.recordCid) return 'unchanged' as const;
    if (now !== undefined && opts.index === 'if-free') {
      // Fetched for an output, its name another record's here: not indexed, still marked.
      if (mark.length > 0) await ix.batch(mark);
      return 'fetched' as const;
    }
    if (now !== undefined && !opts.force) {
      throw new StrataError(STORE_ERR.EXISTS, `${fullName} is already in the store with other content`, { hint: 'use --force to replace it' });
    }
    if (!(await present())) {
      throw new StrataError(STORE_ERR.BLOB_MISSING, `blobs of ${fullName} disappeared during the pull (a concurrent gc?)`, { hint: 'run the pull again' });
    }
    await ix.batch([{ type: 'put', key: `m/${fullName}`, value: art.recordCid }, ...mark]);
    return now === undefined ? ('pulled' as const) : ('replaced' as const);
  });
  return { fullName, record: art.recordCid, tag, bytes, status };
}

// ---- fetch-missing ---------------------------------------------------------------------------

/** Makes sure a record and its layer and manifest blobs are in the store. */
export type FetchMissing = (recordCid: string, fullName?: string) => Promise<void>;

/**
 * The fetch-missing hook for outputs, or undefined when no remote is configured (callers then
 * give their "not in this store" error). For a record whose record, layer or manifest blob is
 * missing, the remotes are tried in name order: the manifest is looked up by the fullName's
 * tag when known (and must have this record as config), else by scanning the tags. Blobs are
 * verified as they stream in; the module's `m/` entry is added when that name is free.
 */
export async function remoteFetcher(store: StoreInternals, hooks?: TransferHooks): Promise<FetchMissing | undefined> {
  const remotes = await listRemotes(store);
  if (remotes.length === 0) return undefined;
  const h = hooks ?? {};
  return async (recordCid: string, fullName?: string) => {
    const { codec, hex } = parseCid(recordCid);
    if (codec !== JSON_CODEC) return;
    if (await store.blobs.has(hex)) {
      try {
        const r = await store.loadRecord(recordCid, fullName);
        const ok = (await store.blobs.has(parseCid(r.layer).hex)) && (await store.blobs.has(parseCid(r.manifest).hex));
        if (ok) return;
      } catch { /* a damaged record is fetched again below */ }
    }
    const digest = `sha256:${hex}`;
    let firstError: unknown;
    for (const remote of remotes) {
      const s = new Session(parseRepositoryRef(remote.url), h);
      try {
        let hit: { tag: string; art: ParsedArtifact } | undefined;
        const direct = await manifestByTag(s, recordCid);
        const byCid = direct && parseArtifact(direct.bytes, direct.digest, `${remote.name}:${recordCid}`);
        if (byCid && byCid.record.digest === digest) hit = { tag: recordCid, art: byCid };
        if (!hit && fullName !== undefined) {
          const tag = tagFromFullName(fullName);
          const got = await s.client.getManifest(tag).catch((e: unknown) => {
            if (e instanceof StrataError && e.code === STORE_ERR.NOT_FOUND) return undefined;
            throw e;
          });
          const art = got && parseArtifact(got.bytes, got.digest, `${remote.name}:${tag}`);
          if (art && art.record.digest === digest) hit = { tag, art };
        }
        if (!hit) {
          for (const tag of await s.client.listTags()) {
            if (!isValidTag(tag)) continue;
            const got = await s.client.getManifest(tag);
            const art = parseArtifact(got.bytes, got.digest, `${remote.name}:${tag}`);
            if (art && art.record.digest === digest) {
              hit = { tag, art };
              break;
            }
          }
        }
        if (hit) {
          await pullArtifact(store, s, hit.art, hit.tag, remote.name, { index: 'if-free' });
          return;
        }
      } catch (e) {
        firstError ??= e;
      } finally {
        s.client.close();
      }
    }
    if (firstError) throw firstError;
    throw new StrataError(STORE_ERR.NOT_FOUND,
      `module ${fullName ?? ''}${fullName ? ' ' : ''}(record ${recordCid}) is not in this store nor on remote${remotes.length > 1 ? 's' : ''} ${remotes.map((r) => r.name).join(', ')}`,
      { hint: 'push it from a store that has it, or add the remote that holds it' });
  };
}

/** The manifest under `tag`, or undefined when the registry has no such tag. */
async function manifestByTag(s: Session, tag: string): Promise<{ bytes: Buffer; digest: string } | undefined> {
  return s.client.getManifest(tag).then(
    (x) => ({ bytes: x.bytes, digest: x.digest }),
    (e: unknown) => {
      if (e instanceof StrataError && e.code === STORE_ERR.NOT_FOUND) return undefined;
      throw e;
    },
  );
}

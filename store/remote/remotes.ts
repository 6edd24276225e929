/**
 * The store on an OCI registry: push, pull, configured remotes, and fetching the missing blobs
 * of a lock from the remotes. Format and rules: spec/registry.md.
 *
 * One module = one OCI image manifest, tagged tagFromFullName(fullName):
 *
 *   { "schemaVersion": 2,
 *     "mediaType": "application/vnd.oci.image.manifest.v1+json",
 *     "artifactType": "application/vnd.strata.module.v1",
 *     "config": { "mediaType": "application/vnd.strata.module.config.v1+json",
 *                 "digest": "sha256:<record>", "size": N },          the module record blob itself
 *     "layers": [
 *       { "mediaType": "application/vnd.oci.image.layer.v1.tar",
 *         "digest": "sha256:<layer>", "size": N },                   the canonical layer tar
 *       { "mediaType": "application/vnd.strata.layer-manifest.v1+json",
 *         "digest": "sha256:<manifest>", "size": N } ],              the sidecar manifest
 *     "annotations": { "org.opencontainers.image.title": "<fullName>",
 *                      "vnd.strata.module.record": "<record CID>",
 *                      "org.opencontainers.image.ref.name": "<tag>" } }
 *
 * The manifest bytes are exactly this, keys in this order, no whitespace, no time: the same
 * module always gives the same manifest digest.
 *
 * Remotes live in the index at `r/<name>` as JSON {url, siteInternal}; no credential is ever
 * stored (the registry client finds them in STRATA_REGISTRY_AUTH or ~/.docker/config.json).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { cidFromHex, JSON_CODEC, parseCid, RAW_CODEC } from '../cid.js';
import { StrataError, STORE_ERR } from '../errors.js';
import type { LayerManifest } from '../layer/manifest.js';
import { fullNameOf, validateRecord, type ModuleRecord } from '../record.js';
import { parseRepositoryRef, RegistryClient, MEDIA_TYPES, type RegistryClientOptions, type RegistryRef, type RetryInfo } from './client.js';
import { tagFromFullName } from './tag.js';
import type { LocalStore } from '../local-store.js';

export const STRATA_MEDIA_TYPES = {
  ARTIFACT: 'application/vnd.strata.module.v1',
  CONFIG: 'application/vnd.strata.module.config.v1+json',
  LAYER: 'application/vnd.oci.image.layer.v1.tar',
  LAYER_MANIFEST: 'application/vnd.strata.layer-manifest.v1+json',
} as const;

export const RECORD_ANNOTATION = 'vnd.strata.module.record';
const TITLE_ANNOTATION = 'org.opencontainers.image.title';
const REF_ANNOTATION = 'org.opencontainers.image.ref.name';
const RECORD_LIMIT = 4 << 20;
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
export async function addRemote(store: LocalStore, name: string, url: string,
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
export async function listRemotes(store: LocalStore): Promise<Remote[]> {
  const rows = await store.index((ix) => ix.range('r/'));
  return rows.map(([k, v]) => {
    const j = JSON.parse(v) as { url: string; siteInternal?: boolean };
    return { name: k.slice(2), url: j.url, siteInternal: Boolean(j.siteInternal) };
  });
}

export async function removeRemote(store: LocalStore, name: string): Promise<void> {
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
export async function resolveDestination(store: LocalStore, text: string): Promise<Destination> {
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
}

/** The OCI manifest of a module, as bytes (see the file comment for the exact form). */
export function artifactManifest(fullName: string, recordCid: string, record: Descriptor, layer: Descriptor,
                                 sidecar: Descriptor): Buffer {
  const desc = (d: Descriptor) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size });
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

interface ParsedArtifact {
  digest: string;
  record: Descriptor;
  layer: Descriptor;
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
  const desc = (d: Partial<Descriptor> | undefined, type: string, what: string): Descriptor => {
    if (!d || d.mediaType !== type || typeof d.digest !== 'string' || !DIGEST_RE.test(d.digest)
        || !Number.isSafeInteger(d.size) || (d.size as number) < 0) {
      throw bad(`${what} descriptor`);
    }
    return { mediaType: type, digest: d.digest, size: d.size as number };
  };
  if (m.mediaType !== MEDIA_TYPES.OCI_MANIFEST) throw bad(`media type ${String(m.mediaType)}`);
  if (!Array.isArray(m.layers) || m.layers.length !== 2) throw bad('it must have two layers');
  const record = desc(m.config, STRATA_MEDIA_TYPES.CONFIG, 'config');
  const layer = desc(m.layers[0], STRATA_MEDIA_TYPES.LAYER, 'layer');
  const sidecar = desc(m.layers[1], STRATA_MEDIA_TYPES.LAYER_MANIFEST, 'layer manifest');
  const recordCid = cidFromHex(JSON_CODEC, record.digest.slice(7));
  const ann = m.annotations ?? {};
  if (ann[RECORD_ANNOTATION] !== undefined && ann[RECORD_ANNOTATION] !== recordCid) {
    throw bad(`its record annotation ${String(ann[RECORD_ANNOTATION])} is not its config ${recordCid}`);
  }
  const title = typeof ann[TITLE_ANNOTATION] === 'string' ? ann[TITLE_ANNOTATION] as string : undefined;
  return { digest, record, layer, sidecar, recordCid, title };
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
  /** Digest of the module's OCI manifest. */
  digest: string;
  /** Digests of the blobs that were sent; the others were already there. */
  uploaded: string[];
  /** 'unchanged': every blob was there and the tag already named this manifest. */
  status: 'pushed' | 'unchanged';
}

function restrictedError(fullName: string, group: string, label: string): StrataError {
  return new StrataError(STORE_ERR.ACCESS_DENIED,
    `${fullName} is restricted to group ${group}: refusing to push it to ${label}, which is not marked site-internal`,
    { hint: 'add the remote with --site-internal if it never leaves the site' });
}

/**
 * Pushes modules (fullNames or record CIDs; none = every module in the store) to `target`
 * (a remote name or REGISTRY/REPO). Every restricted module is checked before anything is
 * sent: unless the destination is a configured remote marked site-internal, the whole push is
 * refused with ERR_ACCESS_DENIED. Per module: each blob is HEADed and sent only when missing,
 * then the manifest is PUT under the module's tag (skipped when the tag already names it).
 * Idempotent.
 */
export async function push(store: LocalStore, target: string, modules: string[], hooks: TransferHooks = {}): Promise<PushResult[]> {
  const dest = await resolveDestination(store, target);
  const names = modules.length > 0 ? modules : (await store.list()).map((m) => m.fullName);
  if (names.length === 0) throw new StrataError(STORE_ERR.NOT_FOUND, 'the store has no modules to push', { hint: 'import some with `strata store import`' });
  const mods = [];
  for (const n of names) mods.push(await store.get(n));
  for (const m of mods) {
    if (m.record.restricted && !dest.remote?.siteInternal) throw restrictedError(m.fullName, m.record.restricted, dest.label);
  }
  const s = new Session(dest.ref, hooks);
  const out: PushResult[] = [];
  try {
    for (const m of mods) {
      const recordHex = parseCid(m.cid).hex;
      const layerHex = parseCid(m.record.layer).hex;
      const sidecarHex = parseCid(m.record.manifest).hex;
      const blobs: Descriptor[] = [
        { mediaType: STRATA_MEDIA_TYPES.LAYER, digest: `sha256:${layerHex}`, size: await blobSize(store, layerHex, `layer of ${m.fullName}`) },
        { mediaType: STRATA_MEDIA_TYPES.LAYER_MANIFEST, digest: `sha256:${sidecarHex}`, size: await blobSize(store, sidecarHex, `manifest of ${m.fullName}`) },
        { mediaType: STRATA_MEDIA_TYPES.CONFIG, digest: `sha256:${recordHex}`, size: await blobSize(store, recordHex, `record of ${m.fullName}`) },
      ];
      const tag = tagFromFullName(m.fullName);
      const manifest = artifactManifest(m.fullName, m.cid, blobs[2]!, blobs[0]!, blobs[1]!);
      s.begin(m.fullName, 'push', blobs.reduce((a, b) => a + b.size, 0));
      const uploaded: string[] = [];
      for (const b of blobs) {
        const path = store.blobs.blobPath(b.digest.slice(7));
        const r = await s.client.putBlob(b.digest, b.size, (offset) => createReadStream(path, { start: offset, highWaterMark: 1 << 20 }));
        if (r === 'uploaded') uploaded.push(b.digest);
        else s.skip(b.size);
      }
      const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
      const there = await s.client.getManifest(tag).then((x) => x.digest, (e: unknown) => {
        if (e instanceof StrataError && e.code === STORE_ERR.NOT_FOUND) return undefined;
        throw e;
      });
      if (there !== digest) await s.client.putManifest(tag, MEDIA_TYPES.OCI_MANIFEST, manifest);
      // A second tag, the record CID itself, keeps every pushed record reachable after the
      // fullName tag moves on, so old locks can still be rebuilt from the remote.
      if (there !== digest || !(await manifestByTag(s, m.cid))) await s.client.putManifest(m.cid, MEDIA_TYPES.OCI_MANIFEST, manifest);
      s.end();
      out.push({ fullName: m.fullName, record: m.cid, tag, digest, uploaded,
        status: uploaded.length === 0 && there === digest ? 'unchanged' : 'pushed' });
    }
  } finally {
    s.client.close();
  }
  return out;
}

async function blobSize(store: LocalStore, hex: string, what: string): Promise<number> {
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
}

export interface PullOptions extends TransferHooks {
  /** Replace a module of the same name with other content. */
  force?: boolean;
}

/**
 * Pulls modules from `source` (a remote name or REGISTRY/REPO). `refs`: fullNames (fetched by
 * their tag), record or layer CIDs (found by scanning the tags), or none for every strata
 * module in the repository. Every blob is verified while it streams into the store; the record
 * must name the artifact's layer and manifest; the module's index entry is written only after
 * all its blobs are durable, so an interrupted pull leaves no partial module. The same module
 * already in the store is a no-op; another module of that name is ERR_EXISTS unless `force`.
 */
export async function pull(store: LocalStore, source: string, refs: string[], opts: PullOptions = {}): Promise<PullResult[]> {
  const dest = await resolveDestination(store, source);
  const s = new Session(dest.ref, opts);
  try {
    const found: Array<{ tag: string; art: ParsedArtifact }> = [];
    const scanned = new Map<string, ParsedArtifact | undefined>();
    const scan = async () => {
      if (scanned.size > 0) return scanned;
      for (const tag of await s.client.listTags()) {
        const { bytes, digest } = await s.client.getManifest(tag);
        scanned.set(tag, parseArtifact(bytes, digest, `${dest.label}:${tag}`));
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
      let hit: { tag: string; art: ParsedArtifact } | undefined;
      if (isCidText(ref)) {
        const { codec, hex } = parseCid(ref);
        const digest = `sha256:${hex}`;
        const direct = codec === RAW_CODEC ? undefined : await manifestByTag(s, ref);
        const art = direct && parseArtifact(direct.bytes, direct.digest, `${dest.label}:${ref}`);
        if (art && art.record.digest === digest) hit = { tag: ref, art };
        for (const [tag, art] of hit ? [] : await scan()) {
          if (art && (codec === RAW_CODEC ? art.layer.digest === digest : art.record.digest === digest)) {
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
        hit = { tag, art };
      }
      found.push(hit);
    }
    const out: PullResult[] = [];
    for (const { tag, art } of found) {
      const r = await pullArtifact(store, s, art, tag, dest.label, { force: opts.force, index: 'always' });
      out.push(r);
    }
    return out;
  } finally {
    s.client.close();
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
 */
async function pullArtifact(store: LocalStore, s: Session, art: ParsedArtifact, tag: string, label: string,
                            opts: { force?: boolean; index: 'always' | 'if-free' }): Promise<PullResult> {
  const where = `${label}:${tag}`;
  if (art.record.size > RECORD_LIMIT) throw new StrataError(STORE_ERR.REGISTRY, `${where}: record of ${art.record.size} bytes is too large`);
  const chunks: Buffer[] = [];
  let got = 0;
  for await (const c of s.client.getBlob(art.record.digest)) {
    got += c.length;
    if (got > Math.max(art.record.size, 0) || got > RECORD_LIMIT) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `${where}: the record blob is longer than its ${art.record.size} bytes`, {
        hint: 'the registry copy is damaged; push the module again from a good store',
      });
    }
    chunks.push(c);
  }
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
  if (art.title !== undefined && art.title !== fullName) throw mismatch(`the manifest says ${art.title} but its record is ${fullName}`);
  const layer = parseCid(record.layer);
  const sidecar = parseCid(record.manifest);
  if (layer.codec !== RAW_CODEC || `sha256:${layer.hex}` !== art.layer.digest) throw mismatch(`record names layer ${record.layer}, the manifest ${art.layer.digest}`);
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

  s.begin(fullName, 'pull', art.layer.size + art.sidecar.size + art.record.size);
  let bytes = 0;
  for (const d of [art.layer, art.sidecar]) {
    const hex = d.digest.slice(7);
    if (await store.blobs.has(hex)) {
      s.skip(d.size);
      continue;
    }
    await store.blobs.put(s.client.getBlob(d.digest), hex);
    bytes += d.size;
  }
  const m = await store.getJson<LayerManifest>(record.manifest, `manifest of ${fullName}`);
  if (m.layer !== record.layer) throw mismatch(`layer manifest ${record.manifest} describes layer ${m.layer}, not ${record.layer}`);
  await store.blobs.put([recordBytes], recordHex);
  bytes += recordBytes.length;
  s.end();

  const status = await store.index(async (ix) => {
    const now = await ix.get(`m/${fullName}`);
    if (now === art.recordCid) return 'unchanged' as const;
    if (now !== undefined && opts.index === 'if-free') return 'fetched' as const;
    if (now !== undefined && !opts.force) {
      throw new StrataError(STORE_ERR.EXISTS, `${fullName} is already in the store with other content`, { hint: 'use --force to replace it' });
    }
    if (!(await present())) {
      throw new StrataError(STORE_ERR.BLOB_MISSING, `blobs of ${fullName} disappeared during the pull (a concurrent gc?)`, { hint: 'run the pull again' });
    }
    await ix.batch([{ type: 'put', key: `m/${fullName}`, value: art.recordCid }]);
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
export async function remoteFetcher(store: LocalStore, hooks?: TransferHooks): Promise<FetchMissing | undefined> {
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

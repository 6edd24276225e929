/**
 * A client for one repository of an OCI distribution (v2) registry: CNCF Distribution, Harbor,
 * zot, GHCR and the like. Standalone: it moves blobs and manifests and knows nothing of the
 * store; the store's push/pull is built on it.
 *
 * Endpoints used (all under `<base>/v2/<repo>/`):
 *   HEAD blobs/<digest>                   hasBlob, and the first step of putBlob
 *   GET  blobs/<digest>  [Range: bytes=N-] getBlob (redirects to storage are followed)
 *   POST blobs/uploads/                   opens an upload session → 202, Location
 *   PUT  <session>?digest=<d>  (body)     one-request upload of a small blob → 201
 *   PATCH <session>  Content-Range: a-b   one chunk → 202, Location, Range: 0-<last byte>
 *   GET  <session>                        session status → 204, Range (used to resume)
 *   PUT  <session>?digest=<d>  (empty)    completes a chunked upload → 201
 *   GET|PUT manifests/<tag|digest>        getManifest / putManifest
 *   GET  tags/list?n=…  (Link: rel=next)  listTags
 *
 * Auth (per client): requests go out anonymous (or with a ready-made bearer token) until the
 * registry answers 401; its WWW-Authenticate challenge then decides:
 *   Basic   → the Basic credentials are sent from then on;
 *   Bearer realm=…,service=…,scope=… → GET realm?service=…&scope=… (with the Basic credentials
 *           when there are some, anonymous otherwise) → {token | access_token, expires_in};
 *           tokens are cached per scope (pull, pull+push) until shortly before they expire.
 * A 401 after credentials were sent, or 403, is StrataError(ERR_AUTH) with one line and a hint
 * naming STRATA_REGISTRY_AUTH and docker login. Credentials go only to the registry's own
 * origin and to the token realm; they never appear in an error, the progress or retry hooks.
 *
 * Retries: connection refused/reset, socket hang-up, idle timeout, HTTP 429, 502, 503, 504
 * (500 too, inside an upload) are retried with exponential backoff: `retryDelayMs`, doubled
 * each time, at most `maxRetryDelayMs`, `retries` tries in all (default 6 tries over ~30 s);
 * Retry-After is honoured within those bounds. Then StrataError(ERR_REGISTRY) says what failed
 * and why. Transfers that make progress between failures do not use up their tries.
 *
 * Only sha256 digests (`sha256:<64 lowercase hex>`) are supported.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { StrataError, STORE_ERR } from '../errors.js';
import { resolveCredentials, type Credentials } from './credentials.js';
import { drain, isNetError, describeNetError, makeAgents, readBody, send, type Body } from './http.js';
import { isValidTag } from './tag.js';

export const MEDIA_TYPES = {
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export interface RegistryRef {
  /** Scheme, host and port: `http://127.0.0.1:5000`, `https://registry.example.org`. */
  base: string;
  /** Repository name, e.g. `hpc/strata` (lowercase, `/`-separated, OCI name grammar). */
  repo: string;
}

export interface RetryInfo {
  /** What was being done, e.g. "upload of blob sha256:…". */
  what: string;
  /** The try that failed, from 1. */
  attempt: number;
  /** Wait before the next try. */
  delayMs: number;
  /** Why, without credentials: "ECONNREFUSED", "HTTP 503", "connection dropped (aborted)". */
  reason: string;
}

export interface RegistryClientOptions {
  /** Credentials; null forces anonymous; absent → resolveCredentials(host of base). */
  auth?: Credentials | null;
  /** Tries per request before giving up (default 6). */
  retries?: number;
  /** First backoff delay (default 1000 ms), doubled per retry. */
  retryDelayMs?: number;
  /** Longest backoff delay (default 15000 ms). */
  maxRetryDelayMs?: number;
  /** Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size
   *  (default 16 MiB). */
  chunkSize?: number;
  /** Idle time after which a silent connection counts as dropped (default 60 s). */
  timeoutMs?: number;
  /**
   * Called with the number of blob payload bytes that just moved (up or down). Bytes sent
   * again after a resume or restart are not counted twice, so the sum over a transfer is the
   * blob's size.
   */
  onProgress?(bytes: number): void;
  /** Called before each backoff wait. */
  onRetry?(info: RetryInfo): void;
  /** User-Agent header (default "strata"). */
  userAgent?: string;
}

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const REPO_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const RETRY_STATUS = new Set([429, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MANIFEST_LIMIT = 4 << 20;
const ERROR_BODY_LIMIT = 64 << 10;
const MANIFEST_ACCEPT = Object.values(MEDIA_TYPES).join(', ');

type Action = 'pull' | 'push';

interface Op {
  method: string;
  url: URL;
  action: Action;
  what: string;
  headers?: Record<string, string>;
  /** Replayable bodies only; streaming bodies go through #sendStream. */
  body?: Buffer;
}

/** Thrown inside an upload to go round its retry loop: keep the session or open a new one. */
class UploadRetry extends Error {
  constructor(readonly reason: string, readonly session: 'probe' | 'restart') {
    super(reason);
  }
}

/** Pulls exact byte counts out of a caller's iterable. */
class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #left: Uint8Array | undefined;
  pos: number;
  constructor(src: AsyncIterable<Uint8Array>, pos: number) {
    this.#it = src[Symbol.asyncIterator]();
    this.pos = pos;
  }
  async *take(n: number, tooShort: (pos: number) => Error): AsyncGenerator<Uint8Array> {
    let need = n;
    while (need > 0) {
      let b = this.#left;
      this.#left = undefined;
      if (!b) {
        const r = await this.#it.next();
        if (r.done) throw tooShort(this.pos);
        b = r.value;
      }
      if (b.length > need) {
        this.#left = b.subarray(need);
        b = b.subarray(0, need);
      }
      need -= b.length;
      this.pos += b.length;
      if (b.length > 0) yield b;
    }
  }
  async atEnd(): Promise<boolean> {
    if (this.#left && this.#left.length > 0) return false;
    for (;;) {
      const r = await this.#it.next();
      if (r.done) return true;
      if (r.value.length > 0) return false;
    }
  }
  async close(): Promise<void> {
    try {
      await this.#it.return?.();
    } catch { /* the source's own cleanup failure is not ours to report */ }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const oneLine = (s: string, max = 200) => {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
};

function parseChallenge(header: string | undefined): { scheme: string; params: Record<string, string> } | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/** Parses a `Range: 0-<last>` upload status into the next offset ("0-0" is taken as 0). */
function nextOffset(range: string | undefined): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec((range ?? '').trim());
  if (!m) return undefined;
  const last = Number(m[1]);
  return last === 0 ? 0 : last + 1;
}

/**
 * Splits "host[:port]/repo/path" (or a URL with scheme) into a RegistryRef. Without a scheme,
 * loopback hosts (localhost, 127.x.y.z, [::1]) get http, everything else https.
 */
export function parseRepositoryRef(text: string): RegistryRef {
  const withScheme = /^https?:\/\//i.test(text);
  const rest = text.replace(/^https?:\/\//i, '');
  const slash = rest.indexOf('/');
  if (slash <= 0 || slash === rest.length - 1) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a registry repository: ${JSON.stringify(text)}`, {
      hint: 'write REGISTRY/REPO, e.g. registry.example.org/hpc/strata or 127.0.0.1:5000/test',
    });
  }
  const host = rest.slice(0, slash);
  const repo = rest.slice(slash + 1).replace(/\/+$/, '');
  const loopback = /^(localhost|127(?:\.\d+){3}|\[::1\])(?::\d+)?$/i.test(host);
  const scheme = withScheme ? text.slice(0, text.indexOf(':')).toLowerCase() : loopback ? 'http' : 'https';
  return { base: `${scheme}://${host}`, repo };
}

/**
 * One repository on one registry. Methods may run concurrently (they share a keep-alive
 * connection pool, the learned auth scheme and the token cache); call close() when done so
 * idle sockets go away. Nothing is written to disk and nothing is logged: progress and retries
 * are reported only through the onProgress / onRetry hooks.
 */
export class RegistryClient {
  /** Origin of the registry, e.g. `http://127.0.0.1:5000`. */
  readonly base: URL;
  readonly repo: string;
  /** host[:port], as used in messages and credential lookup. */
  readonly host: string;
  readonly #creds: Credentials | null;
  #authMode: 'none' | 'basic' | 'bearer' = 'none';
  readonly #tokens = new Map<string, { token: string; expires: number }>();
  readonly #agents = makeAgents();
  readonly #retries: number;
  readonly #delay: number;
  readonly #maxDelay: number;
  readonly #chunk: number;
  readonly #timeout: number;
  readonly #onProgress: ((bytes: number) => void) | undefined;
  readonly #onRetry: ((info: RetryInfo) => void) | undefined;
  readonly #ua: string;

  constructor(ref: RegistryRef, opts: RegistryClientOptions = {}) {
    let base: URL;
    try {
      base = new URL(ref.base);
    } catch {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, 'registry base is not a URL', { hint: 'use http://host:port or https://host' });
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `registry base must be http or https, not ${base.protocol}`);
    }
    if (base.username || base.password) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `registry base for ${base.host} must not carry credentials`, {
        hint: 'set STRATA_REGISTRY_AUTH=user:password or run docker login instead',
      });
    }
    if (!REPO_RE.test(ref.repo)) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a valid repository name: ${JSON.stringify(ref.repo)}`, {
        hint: 'lowercase letters, digits and . _ - separators, components joined by /',
      });
    }
    base.pathname = base.pathname.replace(/\/+$/, '');
    base.search = '';
    base.hash = '';
    this.base = base;
    this.repo = ref.repo;
    this.host = base.host;
    this.#creds = opts.auth === undefined ? resolveCredentials(this.host) : opts.auth;
    this.#retries = Math.max(1, opts.retries ?? 6);
    this.#delay = opts.retryDelayMs ?? 1000;
    this.#maxDelay = opts.maxRetryDelayMs ?? 15_000;
    this.#chunk = Math.max(1, opts.chunkSize ?? 16 << 20);
    this.#timeout = opts.timeoutMs ?? 60_000;
    this.#onProgress = opts.onProgress;
    this.#onRetry = opts.onRetry;
    this.#ua = opts.userAgent ?? 'strata';
  }

  /** Closes idle keep-alive connections. The client stays usable (new ones open on demand). */
  close(): void {
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  /**
   * Whether the repository has the blob (HEAD). Read-only. A missing blob is `false`, not an
   * error; auth and registry failures throw.
   */
  async hasBlob(digest: string): Promise<boolean> {
    checkDigest(digest);
    const what = `HEAD blob ${digest}`;
    const res = await this.#call({ method: 'HEAD', url: this.#url(`blobs/${digest}`), action: 'pull', what });
    if (res.statusCode === 200) {
      await drain(res);
      return true;
    }
    if (res.statusCode === 404) {
      await drain(res);
      return false;
    }
    throw await this.#statusError(res, what);
  }

  /**
   * The blob's bytes, streamed. Each chunk is yielded once, in order; the sha256 of everything
   * yielded is checked when the registry's data ends, and a mismatch throws
   * StrataError(ERR_DIGEST_MISMATCH) *after* the last chunk, so the caller must write to a
   * temporary place and commit only once iteration finished without throwing.
   * A connection dropped mid-body is retried with `Range: bytes=<received>-`; a registry that
   * ignores Range (200) has the already-received prefix skipped. Breaking out of the loop
   * (return()) closes the connection. ERR_NOT_FOUND when the registry has no such blob.
   */
  async *getBlob(digest: string): AsyncGenerator<Buffer, void, undefined> {
    checkDigest(digest);
    const what = `download of blob ${digest}`;
    const url = this.#url(`blobs/${digest}`);
    const hash = createHash('sha256');
    const progress = this.#progressCounter();
    let pos = 0;
    let total: number | undefined;
    let failures = 0;
    for (;;) {
      const headers: Record<string, string> = pos > 0 ? { range: `bytes=${pos}-` } : {};
      const res = await this.#call({ method: 'GET', url, action: 'pull', what, headers });
      let skip = 0;
      if (res.statusCode === 200) {
        skip = pos;
        const len = Number(res.headers['content-length']);
        if (Number.isFinite(len)) total = len;
      } else if (res.statusCode === 206 && pos > 0) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
        const start = m ? Number(m[1]) : NaN;
        if (!m || start > pos) {
          res.destroy();
          throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} answered a resumed ${what} with a bad Content-Range`);
        }
        skip = pos - start;
        if (m[3] !== '*') total = Number(m[3]);
      } else if (res.statusCode === 404) {
        await drain(res);
        throw new StrataError(STORE_ERR.NOT_FOUND, `registry ${this.host} has no blob ${digest} in ${this.repo}`, {
          hint: 'push it again, or pull from the registry it was pushed to',
        });
      } else {
        throw await this.#statusError(res, what);
      }
      const before = pos;
      let dropped: string | undefined;
      try {
        for await (const chunk of res) {
          let b = chunk as Buffer;
          if (skip > 0) {
            if (b.length <= skip) {
              skip -= b.length;
              continue;
            }
            b = b.subarray(skip);
            skip = 0;
          }
          hash.update(b);
          pos += b.length;
          progress(pos);
          yield b;
        }
        if (total !== undefined && pos < total) dropped = `connection closed at byte ${pos} of ${total}`;
      } catch (e) {
        if (!isNetError(e) && (e as { message?: string }).message !== 'aborted') throw e;
        dropped = describeNetError(e);
      } finally {
        if (!res.complete) res.destroy();
      }
      if (dropped === undefined) break;
      if (pos > before) failures = 0;
      failures++;
      await this.#backoff(what, failures, dropped);
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== digest) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry sent wrong content for ${digest}`, {
        hint: `the registry's copy is damaged (it hashes to ${got}); push the blob again from a good store`,
      });
    }
  }

  /**
   * Makes sure the repository has the blob; idempotent. HEAD first: 'exists' when it is
   * already there (nothing is read). Otherwise the bytes are uploaded and 'uploaded' returned
   * once the registry has stored them under `digest` (the registry hashes them too; a
   * mismatch is ERR_DIGEST_MISMATCH and nothing is stored).
   *
   * `open(offset)` must return the blob's bytes from `offset` to the end. It may be called
   * several times: once per try, with the offset the upload resumes from (0 after a restart).
   * The client always ends each iterable it got, by reading it to the end or by calling its
   * iterator's return(); so a file stream opened in `open` is closed by the client.
   * `size` must be the exact byte count; a source that ends early or runs long is an error.
   *
   * Blobs up to `chunkSize` go in one PUT, larger ones in PATCH chunks. After a dropped
   * connection, 5xx or 429, the session's status is asked for and the upload resumes from the
   * registry's reported Range when the session survived, else starts again with a new session.
   */
  async putBlob(digest: string, size: number,
                open: (offset: number) => AsyncIterable<Uint8Array>): Promise<'exists' | 'uploaded'> {
    checkDigest(digest);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `bad size ${size} for blob ${digest}`);
    }
    if (await this.hasBlob(digest)) return 'exists';
    const what = `upload of blob ${digest}`;
    const progress = this.#progressCounter();
    const tooShort = (pos: number) => new StrataError(STORE_ERR.DIGEST_MISMATCH,
      `the content given for ${digest} ended at byte ${pos} of ${size}`, { hint: 'the local blob is damaged; run strata store verify' });
    let session: URL | undefined;
    let offset = 0;
    let needProbe = false;
    let resumed = false;
    let cleanRetryDone = false;
    let failures = 0;
    let reader: ByteReader | undefined;
    const readerAt = async (off: number): Promise<ByteReader> => {
      if (reader && reader.pos === off) return reader;
      await reader?.close();
      reader = new ByteReader(open(off), off);
      return reader;
    };
    const body = (r: ByteReader, n: number): AsyncIterable<Uint8Array> => {
      const it = r.take(n, tooShort);
      return (async function* () {
        for await (const b of it) {
          yield b;
          progress(r.pos);
        }
      })();
    };

    try {
      for (;;) {
        try {
          if (session && needProbe) {
            const st = await this.#uploadStatus(session, what);
            needProbe = false;
            if (st) {
              session = st.location;
              offset = st.offset;
              if (offset > 0) resumed = true;
            } else {
              session = undefined;
            }
          }
          if (!session) {
            await reader?.close();
            reader = undefined;
            if (failures > 0 && (await this.hasBlob(digest))) return 'uploaded';
            session = await this.#startUpload(what);
            offset = 0;
            resumed = false;
          }
          if (offset === 0 && size <= this.#chunk) {
            const r = await readerAt(0);
            const res = await this.#sendStream('PUT', withDigest(session, digest), {
              'content-type': 'application/octet-stream',
              'content-length': String(size),
            }, body(r, size));
            await this.#finishUpload(res, what, resumed, cleanRetryDone);
            // Stored and verified by the registry; a source running past `size` is still a bug.
            if (!(await r.atEnd())) throw longSource(digest, size);
            return 'uploaded';
          }
          while (offset < size) {
            const n = Math.min(this.#chunk, size - offset);
            const r = await readerAt(offset);
            const res = await this.#sendStream('PATCH', session, {
              'content-type': 'application/octet-stream',
              'content-length': String(n),
              'content-range': `${offset}-${offset + n - 1}`,
            }, body(r, n));
            if (res.statusCode !== 202) {
              throw await this.#uploadFailure(res, what);
            }
            await drain(res);
            session = this.#location(res, session);
            const next = nextOffset(res.headers.range as string | undefined) ?? offset + n;
            if (next !== offset + n) {
              // The registry kept a different amount than we sent: follow its word.
              await reader?.close();
              reader = undefined;
            }
            offset = next;
            failures = 0;
          }
          if (reader && reader.pos === size && !(await reader.atEnd())) throw longSource(digest, size);
          const res = await this.#sendStream('PUT', withDigest(session, digest), { 'content-length': '0' }, undefined);
          await this.#finishUpload(res, what, resumed, cleanRetryDone);
          return 'uploaded';
        } catch (e) {
          await reader?.close();
          reader = undefined;
          let reason: string;
          if (e instanceof UploadRetry) {
            reason = e.reason;
            if (e.session === 'restart') {
              if (e.reason.includes('DIGEST_INVALID')) cleanRetryDone = true;
              session = undefined;
            } else needProbe = true;
          } else if (isNetError(e)) {
            reason = describeNetError(e);
            needProbe = true;
          } else {
            throw e;
          }
          failures++;
          await this.#backoff(what, failures, reason);
        }
      }
    } finally {
      await reader?.close();
    }
  }

  /**
   * A manifest by tag or digest (GET). The digest returned is the sha256 of the bytes
   * received; when `ref` is a digest it must match, and so must the registry's
   * Docker-Content-Digest header when it sends one, else ERR_DIGEST_MISMATCH.
   * ERR_NOT_FOUND when the registry has no such manifest. Read-only.
   */
  async getManifest(ref: string): Promise<{ mediaType: string; digest: string; bytes: Buffer }> {
    const byDigest = DIGEST_RE.test(ref);
    if (!byDigest && !isValidTag(ref)) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a tag or sha256 digest: ${JSON.stringify(ref)}`);
    }
    const what = `manifest ${ref}`;
    const { res, bytes } = await this.#fetchSmall({
      method: 'GET', url: this.#url(`manifests/${ref}`), action: 'pull', what,
      headers: { accept: MANIFEST_ACCEPT },
    }, MANIFEST_LIMIT, [200]);
    if (res.statusCode === 404) {
      throw new StrataError(STORE_ERR.NOT_FOUND, `registry ${this.host} has no manifest ${ref} in ${this.repo}`, {
        hint: 'check the module name and the repository',
      });
    }
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const claimed = res.headers['docker-content-digest'];
    if ((byDigest && digest !== ref) || (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest)) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry sent wrong content for manifest ${ref}`, {
        hint: `it hashes to ${digest}; the registry's copy is damaged`,
      });
    }
    let mediaType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    if (mediaType === '' || mediaType === 'application/json' || mediaType === 'text/plain') {
      try {
        mediaType = String((JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType ?? mediaType);
      } catch { /* keep what the header said */ }
    }
    return { mediaType, digest, bytes };
  }

  /**
   * Stores `bytes` as a manifest of `mediaType` under `tag` (PUT) and returns its sha256
   * digest. Idempotent: the same bytes under the same tag are a no-op for the registry; a tag
   * already on other bytes is moved. Every blob the manifest references must already be in
   * the repository (the registry refuses otherwise: ERR_REGISTRY naming its error code).
   * `tag` may also be the manifest's own digest (push without a tag).
   */
  async putManifest(tag: string, mediaType: string, bytes: Buffer): Promise<string> {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (DIGEST_RE.test(tag) ? tag !== digest : !isValidTag(tag)) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a valid tag (or this manifest's digest): ${JSON.stringify(tag)}`);
    }
    if (bytes.length > MANIFEST_LIMIT) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `manifest of ${bytes.length} bytes is over the ${MANIFEST_LIMIT}-byte limit registries accept`);
    }
    const what = `manifest ${tag}`;
    const { res } = await this.#fetchSmall({
      method: 'PUT', url: this.#url(`manifests/${tag}`), action: 'push', what,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) }, body: bytes,
    }, ERROR_BODY_LIMIT, [201, 200, 204]);
    const claimed = res.headers['docker-content-digest'];
    if (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry ${this.host} stored manifest ${tag} as ${claimed}, expected ${digest}`);
    }
    return digest;
  }

  /** Every tag of the repository, in the registry's order (pages followed); [] when the
   *  repository does not exist yet. Read-only. */
  async listTags(): Promise<string[]> {
    const tags: string[] = [];
    let url: URL | undefined = this.#url('tags/list');
    url.searchParams.set('n', '1000');
    while (url) {
      const { res, bytes } = await this.#fetchSmall({ method: 'GET', url, action: 'pull', what: 'tag list' },
        MANIFEST_LIMIT, [200, 404]);
      if (res.statusCode === 404) {
        // NAME_UNKNOWN: nothing was ever pushed to this repository. Any other 404 is a wrong URL.
        if (bytes.includes('NAME_UNKNOWN')) return tags;
        throw new StrataError(STORE_ERR.NOT_FOUND, `registry ${this.host} has no tag list for ${this.repo} (HTTP 404)`, {
          hint: 'check the registry URL',
        });
      }
      let page: { tags?: unknown };
      try {
        page = JSON.parse(bytes.toString('utf8')) as { tags?: unknown };
      } catch {
        throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} sent a tag list that is not JSON`);
      }
      if (Array.isArray(page.tags)) tags.push(...page.tags.filter((t): t is string => typeof t === 'string'));
      const link = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(res.headers.link ?? ''));
      url = link ? new URL(link[1]!, url) : undefined;
    }
    return tags;
  }

  // ---- upload steps ------------------------------------------------------------------------

  async #startUpload(what: string): Promise<URL> {
    const res = await this.#call({ method: 'POST', url: this.#url('blobs/uploads/'), action: 'push', what,
      headers: { 'content-length': '0' } });
    if (res.statusCode !== 202) {
      if ((res.statusCode ?? 0) >= 500) {
        await drain(res);
        throw new UploadRetry(`HTTP ${res.statusCode}`, 'restart');
      }
      throw await this.#statusError(res, what);
    }
    await drain(res);
    const loc = res.headers.location;
    if (!loc) throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} opened an upload without a Location`);
    return new URL(loc, this.base);
  }

  /** Session status: where to resume, or undefined when the session is gone. */
  async #uploadStatus(session: URL, what: string): Promise<{ location: URL; offset: number } | undefined> {
    const res = await this.#call({ method: 'GET', url: session, action: 'push', what });
    await drain(res);
    if (res.statusCode === 204 || res.statusCode === 200) {
      const offset = nextOffset(res.headers.range as string | undefined);
      if (offset === undefined) return undefined;
      return { location: this.#location(res, session), offset };
    }
    if (res.statusCode === 401 || res.statusCode === 403) throw await this.#statusError(res, what);
    return undefined;
  }

  async #finishUpload(res: IncomingMessage, what: string, resumed: boolean, cleanRetryDone: boolean): Promise<void> {
    if (res.statusCode === 201 || res.statusCode === 204) {
      await drain(res);
      return;
    }
    const err = await this.#uploadFailure(res, what);
    if (err instanceof UploadRetry || !isDigestInvalid(err)) throw err;
    // A resumed session may have kept bytes of a dropped request: start once from scratch.
    if (resumed && !cleanRetryDone) throw new UploadRetry('registry computed another digest (DIGEST_INVALID)', 'restart');
    throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry ${this.host} refused ${what}: the content does not hash to the digest`, {
      hint: 'the local blob is damaged or changed while uploading; run strata store verify',
    });
  }

  /** Classifies a failed upload response: retry (same or new session) or a final error. */
  async #uploadFailure(res: IncomingMessage, what: string): Promise<Error> {
    const status = res.statusCode ?? 0;
    if (status >= 500 || status === 429) {
      await drain(res);
      return new UploadRetry(`HTTP ${status}`, 'probe');
    }
    if (status === 416) {
      await drain(res);
      return new UploadRetry('HTTP 416 (registry is at another offset)', 'restart');
    }
    const err = await this.#statusError(res, what);
    if (status === 404 || /BLOB_UPLOAD_(UNKNOWN|INVALID)/.test(err.message)) {
      return new UploadRetry(`upload session lost (${oneLine(err.message, 80)})`, 'restart');
    }
    return err;
  }

  /** One try of a request with a streaming body; a 401 drops the cached token and asks the
   *  upload loop to go round again (the body cannot be replayed here). */
  async #sendStream(method: string, url: URL, headers: Record<string, string>,
                    body: AsyncIterable<Uint8Array> | undefined): Promise<IncomingMessage> {
    const res = await this.#sendOnce(method, url, 'push', headers, body);
    if (res.statusCode === 401) {
      await drain(res);
      this.#tokens.clear();
      throw new UploadRetry('HTTP 401 (authorization expired)', 'probe');
    }
    return res;
  }

  // ---- request machinery -------------------------------------------------------------------

  #url(suffix: string): URL {
    return new URL(`${this.base.pathname.replace(/\/+$/, '')}/v2/${this.repo}/${suffix}`, this.base);
  }

  #location(res: IncomingMessage, fallback: URL): URL {
    const loc = res.headers.location;
    return loc ? new URL(loc, this.base) : fallback;
  }

  #progressCounter(): (pos: number) => void {
    let high = 0;
    return (pos: number) => {
      if (pos > high) {
        const d = pos - high;
        high = pos;
        this.#onProgress?.(d);
      }
    };
  }

  #scope(action: Action): string {
    return `repository:${this.repo}:${action === 'push' ? 'pull,push' : 'pull'}`;
  }

  #authHeader(action: Action): string | undefined {
    const c = this.#creds;
    if (c?.kind === 'bearer') return `Bearer ${c.token}`;
    if (this.#authMode === 'basic' && c?.kind === 'basic') {
      return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
    }
    if (this.#authMode === 'bearer') {
      const now = Date.now();
      for (const a of action === 'pull' ? (['pull', 'push'] as const) : (['push'] as const)) {
        const t = this.#tokens.get(this.#scope(a));
        if (t && t.expires > now) return `Bearer ${t.token}`;
      }
    }
    return undefined;
  }

  #authError(message: string): StrataError {
    return new StrataError(STORE_ERR.AUTH, message, {
      hint: `set STRATA_REGISTRY_AUTH=user:password (or bearer:TOKEN), or run docker login ${this.host}`,
    });
  }

  /** Reacts to a 401 challenge so that the next try carries the right Authorization. */
  async #authenticate(res: IncomingMessage, action: Action): Promise<void> {
    const challenge = parseChallenge(res.headers['www-authenticate'] as string | undefined);
    await drain(res);
    const c = this.#creds;
    if (c?.kind === 'bearer') throw this.#authError(`registry ${this.host} refused the token for ${this.repo}`);
    if (challenge?.scheme === 'basic') {
      if (!c) throw this.#authError(`registry ${this.host} requires credentials for ${this.repo}`);
      this.#authMode = 'basic';
      return;
    }
    if (challenge?.scheme === 'bearer' && challenge.params.realm) {
      this.#authMode = 'bearer';
      await this.#fetchToken(challenge.params.realm, challenge.params.service, challenge.params.scope ?? this.#scope(action), action);
      return;
    }
    throw this.#authError(`registry ${this.host} answered 401 without a usable WWW-Authenticate challenge`);
  }

  async #fetchToken(realm: string, service: string | undefined, scope: string, action: Action): Promise<void> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} named a token realm that is not a URL`);
    }
    if (service) url.searchParams.set('service', service);
    for (const s of scope.split(' ')) if (s) url.searchParams.append('scope', s);
    const c = this.#creds;
    const headers: Record<string, string> = { 'user-agent': this.#ua };
    if (c?.kind === 'basic') {
      headers.authorization = `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
    }
    const what = `token for ${this.repo}`;
    let body: Buffer;
    let status: number;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await send(url, { method: 'GET', headers, timeoutMs: this.#timeout, agents: this.#agents });
        status = res.statusCode ?? 0;
        if (RETRY_STATUS.has(status)) {
          await drain(res);
          await this.#backoff(what, attempt, `HTTP ${status}`);
          continue;
        }
        body = await readBody(res, ERROR_BODY_LIMIT);
        break;
      } catch (e) {
        if (!isNetError(e)) throw e;
        await this.#backoff(what, attempt, describeNetError(e));
      }
    }
    if (status === 401 || status === 403) {
      throw this.#authError(c
        ? `token service for ${this.host} refused the credentials for ${this.repo}`
        : `registry ${this.host} requires credentials for ${this.repo}`);
    }
    if (status !== 200) {
      throw new StrataError(STORE_ERR.REGISTRY, `token service for ${this.host} answered HTTP ${status}`);
    }
    let token: unknown;
    let expiresIn: unknown;
    try {
      const j = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
      token = j.token ?? j.access_token;
      expiresIn = j.expires_in;
    } catch { /* handled below */ }
    if (typeof token !== 'string' || token === '') {
      throw new StrataError(STORE_ERR.REGISTRY, `token service for ${this.host} sent no token`);
    }
    const life = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : 60;
    this.#tokens.set(this.#scope(action), { token, expires: Date.now() + Math.max(5, life - 10) * 1000 });
  }

  async #sendOnce(method: string, url: URL, action: Action, extra: Record<string, string> | undefined,
                  body: Body | undefined): Promise<IncomingMessage> {
    const headers: Record<string, string> = { 'user-agent': this.#ua, ...extra };
    if (url.origin === this.base.origin) {
      const a = this.#authHeader(action);
      if (a) headers.authorization = a;
    }
    return send(url, { method, headers, body, timeoutMs: this.#timeout, agents: this.#agents });
  }

  /**
   * A request with a replayable body: retried on network errors and retryable statuses,
   * authenticated on 401 (once), redirects followed for GET and HEAD. Returns the first other
   * response, body unread.
   */
  async #call(op: Op): Promise<IncomingMessage> {
    let url = op.url;
    let attempt = 0;
    let authRounds = 0;
    let redirects = 0;
    for (;;) {
      attempt++;
      let res: IncomingMessage;
      try {
        res = await this.#sendOnce(op.method, url, op.action, op.headers, op.body);
      } catch (e) {
        if (!isNetError(e)) throw e;
        await this.#backoff(op.what, attempt, describeNetError(e));
        continue;
      }
      const status = res.statusCode ?? 0;
      if (status === 401 && url.origin === this.base.origin) {
        if (authRounds++ > 0 || (this.#creds !== null && this.#authMode === 'basic')) {
          await drain(res);
          throw this.#authError(this.#creds
            ? `registry ${this.host} refused the credentials for ${this.repo}`
            : `registry ${this.host} requires credentials for ${this.repo}`);
        }
        await this.#authenticate(res, op.action);
        attempt--;
        continue;
      }
      if (RETRY_STATUS.has(status)) {
        const after = Number(res.headers['retry-after']);
        await drain(res);
        await this.#backoff(op.what, attempt, `HTTP ${status}`, Number.isFinite(after) ? after * 1000 : undefined);
        continue;
      }
      if (REDIRECT_STATUS.has(status) && (op.method === 'GET' || op.method === 'HEAD') && res.headers.location) {
        await drain(res);
        if (++redirects > 5) throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} redirected ${op.what} too often`);
        url = new URL(res.headers.location, url);
        continue;
      }
      return res;
    }
  }

  /** #call plus reading the (small) body, retried as a whole when the body is cut off. */
  async #fetchSmall(op: Op, limit: number, ok: number[]): Promise<{ res: IncomingMessage; bytes: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.#call(op);
      if (!ok.includes(res.statusCode ?? 0)) {
        if (res.statusCode === 404 && op.method === 'GET') {
          let bytes: Buffer = Buffer.alloc(0);
          try {
            bytes = await readBody(res, ERROR_BODY_LIMIT);
          } catch { /* the status says enough */ }
          return { res, bytes };
        }
        throw await this.#statusError(res, op.what);
      }
      try {
        return { res, bytes: await readBody(res, limit) };
      } catch (e) {
        if (!isNetError(e) && (e as { message?: string }).message !== 'aborted') {
          throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} sent a bad answer for ${op.what}: ${(e as Error).message}`);
        }
        await this.#backoff(op.what, attempt, describeNetError(e));
      }
    }
  }

  async #backoff(what: string, attempt: number, reason: string, retryAfterMs?: number): Promise<void> {
    if (attempt >= this.#retries) {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host}: ${what} failed after ${attempt} tries (${reason})`, {
        hint: 'check that the registry is running and reachable, then run the command again',
      });
    }
    let delay = Math.min(this.#maxDelay, this.#delay * 2 ** (attempt - 1));
    if (retryAfterMs !== undefined) delay = Math.min(this.#maxDelay, Math.max(delay, retryAfterMs));
    delay = Math.round(delay * (0.9 + Math.random() * 0.2));
    this.#onRetry?.({ what, attempt, delayMs: delay, reason });
    await sleep(delay);
  }

  /** A StrataError for an unexpected status, with the registry's OCI error code if any. */
  async #statusError(res: IncomingMessage, what: string): Promise<StrataError> {
    const status = res.statusCode ?? 0;
    let detail = '';
    try {
      const body = await readBody(res, ERROR_BODY_LIMIT);
      const j = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
      const e = j.errors?.[0];
      if (e) detail = [e.code, e.message].filter((x) => typeof x === 'string' && x !== '').join(': ');
    } catch { /* no or non-JSON body */ }
    const msg = `registry ${this.host} refused ${what} in ${this.repo}: HTTP ${status}${detail ? ` ${oneLine(detail)}` : ''}`;
    if (status === 401) return this.#authError(msg);
    if (status === 403) return this.#authError(`registry ${this.host} denied ${what} in ${this.repo} to these credentials`);
    if (status === 404) return new StrataError(STORE_ERR.NOT_FOUND, msg);
    return new StrataError(STORE_ERR.REGISTRY, msg);
  }
}

function checkDigest(digest: string): void {
  if (!DIGEST_RE.test(digest)) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a sha256 digest: ${JSON.stringify(digest)}`, {
      hint: 'digests are written sha256:<64 lowercase hex digits>',
    });
  }
}

function withDigest(session: URL, digest: string): URL {
  return new URL(`${session.href}${session.search ? '&' : '?'}digest=${encodeURIComponent(digest)}`);
}

function longSource(digest: string, size: number): StrataError {
  return new StrataError(STORE_ERR.DIGEST_MISMATCH, `the content given for ${digest} is longer than its size ${size}`, {
    hint: 'the local blob is damaged; run strata store verify',
  });
}

function isDigestInvalid(e: Error): boolean {
  return /DIGEST_INVALID|SIZE_INVALID/.test(e.message);
}


/**
 * A client for one repository of an OCI distribution (v2) registry: CNCF Distribution, Harbor,
 * zot, GHCR and the like. Standalone: it moves blobs and manifests and knows nothing of the
 * store; the store's push/pull (remotes.ts) is built on it.
 *
 * It composes the parts, each with its own contract:
 *   endpoints.ts   the repository's URLs and the URL rules (whose origin gets credentials)
 *   auth.ts        challenges, Basic, the token flow, where credentials may go
 *   retry.ts       tries, backoff, the progress floor and the deadline of one operation
 *   requests.ts    one request: auth header, retries, redirects, statuses → errors
 *   transfer.ts    blob download (bounded by its size, resumed) and upload (resumable)
 *   http.ts        the transport: one request, idle timeout, deadline, bounded reads
 *
 * Only sha256 digests (`sha256:<64 lowercase hex>`) are supported. Every answer is bounded:
 * manifests and tag pages by MANIFEST_LIMIT, blobs by their declared size, error bodies by
 * 64 KiB, tag paging by a seen-URL set and MAX_TAG_PAGES, every operation by its deadline.
 */
import { createHash } from 'node:crypto';
import { StrataError, STORE_ERR } from '../errors.js';
import { resolveCredentials, type Credentials } from './credentials.js';
import { checkDigest, checkSize, Endpoints, isDigest, MEDIA_TYPES, nextLink, type RegistryRef } from './endpoints.js';
import { drain } from './http.js';
import { ERROR_BODY_LIMIT, Requester } from './requests.js';
import type { RetryInfo, RetryPolicy } from './retry.js';
import { isValidTag } from './tag.js';
import { downloadBlob, uploadBlob } from './transfer.js';

export { MEDIA_TYPES, parseRepositoryRef, type RegistryRef } from './endpoints.js';
export type { RetryInfo } from './retry.js';

export interface RegistryClientOptions extends Omit<RetryPolicy, 'onRetry'> {
  /** Credentials; null forces anonymous; absent → resolveCredentials(host of base). */
  auth?: Credentials | null;
  /** Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size
   *  (default 16 MiB). */
  chunkSize?: number;
  /** Idle time after which a silent connection counts as dropped (default 60 s). */
  timeoutMs?: number;
  /** Tag-list pages followed at most (default 1000). */
  maxTagPages?: number;
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

/** The most a manifest or a tag-list page may weigh. */
export const MANIFEST_LIMIT = 4 << 20;
const MANIFEST_ACCEPT = Object.values(MEDIA_TYPES).join(', ');
const TAG_PAGE = 1000;

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
  readonly #ep: Endpoints;
  readonly #req: Requester;
  readonly #chunk: number;
  readonly #maxPages: number;
  readonly #onProgress: ((bytes: number) => void) | undefined;

  constructor(ref: RegistryRef, opts: RegistryClientOptions = {}) {
    this.#ep = new Endpoints(ref);
    this.base = this.#ep.base;
    this.repo = this.#ep.repo;
    this.host = this.#ep.host;
    const given = opts.auth;
    this.#req = new Requester(this.#ep, {
      credentials: given === undefined ? resolveCredentials(this.host) : given,
      // A client given explicit credentials (or none) looks up nothing else either.
      credentialsFor: (host) => (given === undefined ? resolveCredentials(host) : null),
      policy: {
        retries: opts.retries, retryDelayMs: opts.retryDelayMs, maxRetryDelayMs: opts.maxRetryDelayMs,
        deadlineMs: opts.deadlineMs, minRate: opts.minRate, progressFloor: opts.progressFloor, onRetry: opts.onRetry,
      },
      timeoutMs: opts.timeoutMs ?? 60_000,
      userAgent: opts.userAgent ?? 'strata',
    });
    this.#chunk = Math.max(1, opts.chunkSize ?? 16 << 20);
    this.#maxPages = Math.max(1, opts.maxTagPages ?? 1000);
    this.#onProgress = opts.onProgress;
  }

  /** Closes idle keep-alive connections. The client stays usable (new ones open on demand). */
  close(): void {
    this.#req.close();
  }

  /**
   * Whether the repository has the blob (HEAD). Read-only. A missing blob is `false`, not an
   * error; auth and registry failures throw.
   */
  async hasBlob(digest: string): Promise<boolean> {
    checkDigest(digest);
    const what = `HEAD blob ${digest}`;
    const res = await this.#req.call({ method: 'HEAD', url: this.#ep.blob(digest), action: 'pull', what });
    if (res.statusCode === 200 || res.statusCode === 404) {
      await drain(res);
      return res.statusCode === 200;
    }
    throw await this.#req.statusError(res, what);
  }

  /**
   * The blob's bytes, streamed, never more than `size` (the size its descriptor declares).
   * Each chunk is yielded once, in order; the sha256 of everything yielded is checked when
   * the data ends, and a mismatch throws ERR_DIGEST_MISMATCH *after* the last chunk, so the
   * caller must write to a temporary place and commit only once iteration finished without
   * throwing. A registry that sends more than `size` bytes is cut off (ERR_REGISTRY); a
   * dropped body is resumed with Range. Breaking out of the loop closes the connection.
   * ERR_NOT_FOUND when the registry has no such blob.
   */
  getBlob(digest: string, size: number): AsyncGenerator<Buffer, void, undefined> {
    checkDigest(digest);
    checkSize(size, digest);
    return downloadBlob(this.#req, this.#ep, digest, size, this.#onProgress);
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
   * `confined`: the bytes must not leave the registry's origin (restricted content): an
   * upload session the registry places on another host is refused (ERR_REGISTRY) before a
   * byte is sent there. Unconfined uploads may follow it, without credentials.
   */
  async putBlob(digest: string, size: number, open: (offset: number) => AsyncIterable<Uint8Array>,
                opts: { confined?: boolean } = {}): Promise<'exists' | 'uploaded'> {
    checkDigest(digest);
    checkSize(size, digest);
    return uploadBlob(this.#req, this.#ep, digest, size, open, {
      chunkSize: this.#chunk,
      confined: opts.confined ?? false,
      onProgress: this.#onProgress,
      has: (d) => this.hasBlob(d),
    });
  }

  /**
   * A manifest by tag or digest (GET), at most MANIFEST_LIMIT bytes. The digest returned is
   * the sha256 of the bytes received; when `ref` is a digest it must match, and so must the
   * registry's Docker-Content-Digest header when it sends one, else ERR_DIGEST_MISMATCH.
   * ERR_NOT_FOUND when the registry has no such manifest. Read-only.
   */
  async getManifest(ref: string): Promise<{ mediaType: string; digest: string; bytes: Buffer }> {
    const byDigest = isDigest(ref);
    if (!byDigest && !isValidTag(ref)) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a tag or sha256 digest: ${JSON.stringify(ref)}`);
    }
    const what = `manifest ${ref}`;
    const { res, bytes } = await this.#req.fetchSmall({
      method: 'GET', url: this.#ep.manifest(ref), action: 'pull', what,
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
    if (isDigest(tag) ? tag !== digest : !isValidTag(tag)) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a valid tag (or this manifest's digest): ${JSON.stringify(tag)}`);
    }
    if (bytes.length > MANIFEST_LIMIT) {
      throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `manifest of ${bytes.length} bytes is over the ${MANIFEST_LIMIT}-byte limit registries accept`);
    }
    const what = `manifest ${tag}`;
    const { res } = await this.#req.fetchSmall({
      method: 'PUT', url: this.#ep.manifest(tag), action: 'push', what,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) }, body: bytes,
    }, ERROR_BODY_LIMIT, [201, 200, 204]);
    const claimed = res.headers['docker-content-digest'];
    if (typeof claimed === 'string' && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new StrataError(STORE_ERR.DIGEST_MISMATCH, `registry ${this.host} stored manifest ${tag} as ${claimed}, expected ${digest}`);
    }
    return digest;
  }

  /**
   * Every tag of the repository, in the registry's order; [] when the repository does not
   * exist yet. Read-only. Pages (Link: rel="next") are followed on the registry's origin only,
   * each URL once, at most `maxTagPages` of them: a registry whose pages link in a circle or
   * never end gives ERR_REGISTRY instead of a loop.
   */
  async listTags(): Promise<string[]> {
    const tags: string[] = [];
    const seen = new Set<string>();
    let url: URL | undefined = this.#ep.tags(TAG_PAGE);
    while (url) {
      if (seen.has(url.href)) {
        throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} sent tag-list pages that link back to an earlier page`, {
          hint: 'the registry\'s tag paging is broken; report it to its operator',
        });
      }
      if (seen.size >= this.#maxPages) {
        throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} sent more than ${this.#maxPages} tag-list pages for ${this.repo}`, {
          hint: 'the registry\'s tag paging does not end; report it to its operator',
        });
      }
      seen.add(url.href);
      const { res, bytes } = await this.#req.fetchSmall({ method: 'GET', url, action: 'pull', what: 'tag list' },
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
      const link = nextLink(res.headers.link as string | undefined);
      url = link === undefined ? undefined : this.#ep.resolve(link, url, 'the tag list');
      if (url && !this.#ep.isOwn(url)) {
        throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} linked its tag list to another host`);
      }
    }
    return tags;
  }
}

/**
 * Where one repository's endpoints are, and the URL rules the client keeps. Pure: no I/O.
 *
 * Endpoints (all under `<base>/v2/<repo>/`):
 *   HEAD blobs/<digest>                   is the blob there?
 *   GET  blobs/<digest>  [Range: bytes=N-] the blob (a redirect to storage is followed)
 *   POST blobs/uploads/                   opens an upload session → 202, Location
 *   PUT  <session>?digest=<d>  (body)     one-request upload of a small blob → 201
 *   PATCH <session>  Content-Range: a-b   one chunk → 202, Location, Range: 0-<last byte>
 *   GET  <session>                        session status → 204, Range (used to resume)
 *   PUT  <session>?digest=<d>  (empty)    completes a chunked upload → 201
 *   GET|PUT manifests/<tag|digest>        a manifest
 *   GET  tags/list?n=…  (Link: rel=next)  a page of tags
 *
 * URL rules (who may be sent what):
 *   - Credentials go only to the registry's own origin (scheme, host and port of `base`), and
 *     never on a request that followed a redirect (auth.ts adds the token-realm rule).
 *   - Locations and Links are resolved against the URL that named them. An upload session on
 *     another origin is used without credentials; a *confined* upload (a restricted module)
 *     refuses it, so its bytes never leave the remote's origin.
 *   - Tag-list pages must stay on the registry's origin.
 */
import { StrataError, STORE_ERR } from '../errors.js';

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

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const REPO_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);

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

/** The URLs of one repository. Construction validates the base and the repository name. */
export class Endpoints {
  /** Origin of the registry, e.g. `http://127.0.0.1:5000` (no path, query or credentials). */
  readonly base: URL;
  readonly repo: string;
  /** host[:port], as used in messages and credential lookup. */
  readonly host: string;

  constructor(ref: RegistryRef) {
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
        hint: 'set STRATA_REGISTRY_AUTH=HOST=user:password or run docker login instead',
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
  }

  /** `<base>/v2/<repo>/<suffix>`. */
  url(suffix: string): URL {
    return new URL(`${this.base.pathname.replace(/\/+$/, '')}/v2/${this.repo}/${suffix}`, this.base);
  }

  blob(digest: string): URL {
    return this.url(`blobs/${digest}`);
  }

  uploads(): URL {
    return this.url('blobs/uploads/');
  }

  manifest(ref: string): URL {
    return this.url(`manifests/${ref}`);
  }

  tags(pageSize: number): URL {
    const u = this.url('tags/list');
    u.searchParams.set('n', String(pageSize));
    return u;
  }

  /** True when `url` is on the registry's own origin (scheme, host and port). */
  isOwn(url: URL): boolean {
    return url.origin === this.base.origin;
  }

  /**
   * A Location or Link value resolved against the URL that named it; ERR_REGISTRY when it is
   * not an http(s) URL or carries credentials.
   */
  resolve(location: string, from: URL, what: string): URL {
    let u: URL;
    try {
      u = new URL(location, from);
    } catch {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} answered ${what} with a Location that is not a URL`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username || u.password) {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.host} answered ${what} with an unusable Location (${u.protocol})`);
    }
    return u;
  }
}

export function isDigest(ref: string): boolean {
  return DIGEST_RE.test(ref);
}

export function checkDigest(digest: string): void {
  if (!DIGEST_RE.test(digest)) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `not a sha256 digest: ${JSON.stringify(digest)}`, {
      hint: 'digests are written sha256:<64 lowercase hex digits>',
    });
  }
}

export function checkSize(size: number, digest: string): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new StrataError(STORE_ERR.INVALID_ARGUMENT, `bad size ${size} for blob ${digest}`);
  }
}

/** The session URL with `digest=<d>` added to its query (kept as the registry wrote it). */
export function withDigest(session: URL, digest: string): URL {
  return new URL(`${session.href}${session.search ? '&' : '?'}digest=${encodeURIComponent(digest)}`);
}

/** Parses a `Range: 0-<last>` upload status into the next offset ("0-0" is taken as 0). */
export function nextOffset(range: string | undefined): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec((range ?? '').trim());
  if (!m) return undefined;
  const last = Number(m[1]);
  return last === 0 ? 0 : last + 1;
}

/** The `rel="next"` target of a Link header, unresolved. */
export function nextLink(link: string | undefined): string | undefined {
  return /<([^>]+)>\s*;\s*rel="?next"?/.exec(link ?? '')?.[1];
}

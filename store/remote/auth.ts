/**
 * Authorization for one repository: which header a request carries, and what a 401 challenge
 * changes. No I/O of its own: token requests go through the `fetchToken` given by the caller
 * (requests.ts, with its retries and deadline, never following a redirect).
 *
 * Requests go out anonymous (or with a ready-made bearer token) until the registry answers
 * 401; its WWW-Authenticate challenge then decides:
 *   Basic   → the Basic credentials are sent from then on;
 *   Bearer realm=…,service=…,scope=… → GET realm?service=…&scope=… → {token | access_token,
 *           expires_in}; tokens are cached per scope (pull, pull+push) until shortly before
 *           they expire.
 *
 * Where credentials may go (the rules that keep them from a hostile registry):
 *   - The registry's credentials (credentials.ts, looked up for its host[:port]) and its
 *     tokens are sent only to its own origin, never on a redirected request.
 *   - A token realm on the registry's hostname (any port) gets the registry's Basic
 *     credentials, unless that would downgrade an https registry to a plain-http realm.
 *   - A realm on another hostname must be https; it gets only the credentials configured for
 *     *its own* host (none: the token is asked for anonymously). A plain-http realm on another
 *     hostname is refused without a request.
 * A 401 after credentials were sent, or 403, is StrataError(ERR_AUTH): one line, a hint naming
 * STRATA_REGISTRY_AUTH and docker login. No secret is ever part of a message.
 */
import type { IncomingMessage } from 'node:http';
import { StrataError, STORE_ERR } from '../errors.js';
import type { Credentials } from './credentials.js';
import type { Endpoints } from './endpoints.js';
import { drain } from './http.js';

export type Action = 'pull' | 'push';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header: `Scheme k=v, k="quoted"`; undefined when absent. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
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

/** A token service's answer, status and (bounded) body. */
export type TokenFetch = (url: URL, headers: Record<string, string>, what: string) => Promise<{ status: number; body: Buffer }>;

export interface AuthOptions {
  /** Credentials for the registry's host; null: anonymous. */
  credentials: Credentials | null;
  /** Credentials configured for another host (a token realm's); null when there are none. */
  credentialsFor(host: string): Credentials | null;
  fetchToken: TokenFetch;
}

const basicHeader = (c: { username: string; password: string }) =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;

export class Authenticator {
  readonly #ep: Endpoints;
  readonly #creds: Credentials | null;
  readonly #opts: AuthOptions;
  #mode: 'none' | 'basic' | 'bearer' = 'none';
  readonly #tokens = new Map<string, { token: string; expires: number }>();

  constructor(endpoints: Endpoints, opts: AuthOptions) {
    this.#ep = endpoints;
    this.#creds = opts.credentials;
    this.#opts = opts;
  }

  /** Whether credentials are configured for the registry. */
  get hasCredentials(): boolean {
    return this.#creds !== null;
  }

  /** Whether a further 401 means the credentials were refused (no new challenge to answer). */
  get settled(): boolean {
    return this.#creds !== null && this.#mode === 'basic';
  }

  /**
   * The Authorization header for a request to `url`, or undefined. Only the registry's own
   * origin gets one, and only on a request that did not follow a redirect.
   */
  header(url: URL, action: Action, redirected: boolean): string | undefined {
    if (redirected || !this.#ep.isOwn(url)) return undefined;
    const c = this.#creds;
    if (c?.kind === 'bearer') return `Bearer ${c.token}`;
    if (this.#mode === 'basic' && c?.kind === 'basic') return basicHeader(c);
    if (this.#mode === 'bearer') {
      const now = Date.now();
      for (const a of action === 'pull' ? (['pull', 'push'] as const) : (['push'] as const)) {
        const t = this.#tokens.get(this.#scope(a));
        if (t && t.expires > now) return `Bearer ${t.token}`;
      }
    }
    return undefined;
  }

  /** Forgets cached tokens (an upload answered 401: its token expired mid-transfer). */
  clearTokens(): void {
    this.#tokens.clear();
  }

  error(message: string): StrataError {
    return new StrataError(STORE_ERR.AUTH, message, {
      hint: `set STRATA_REGISTRY_AUTH=${this.#ep.host}=user:password (or =bearer:TOKEN), or run docker login ${this.#ep.host}`,
    });
  }

  /** The ERR_AUTH for a 401 that no challenge can fix. */
  refused(): StrataError {
    return this.error(this.#creds
      ? `registry ${this.#ep.host} refused the credentials for ${this.#ep.repo}`
      : `registry ${this.#ep.host} requires credentials for ${this.#ep.repo}`);
  }

  /** Reacts to a 401 challenge (the body is drained) so the next try carries the right header. */
  async answer(res: IncomingMessage, action: Action): Promise<void> {
    const challenge = parseChallenge(res.headers['www-authenticate'] as string | undefined);
    await drain(res);
    const c = this.#creds;
    const host = this.#ep.host;
    if (c?.kind === 'bearer') throw this.error(`registry ${host} refused the token for ${this.#ep.repo}`);
    if (challenge?.scheme === 'basic') {
      if (!c) throw this.refused();
      this.#mode = 'basic';
      return;
    }
    if (challenge?.scheme === 'bearer' && challenge.params.realm) {
      this.#mode = 'bearer';
      await this.#token(challenge.params.realm, challenge.params.service, challenge.params.scope ?? this.#scope(action), action);
      return;
    }
    throw this.error(`registry ${host} answered 401 without a usable WWW-Authenticate challenge`);
  }

  #scope(action: Action): string {
    return `repository:${this.#ep.repo}:${action === 'push' ? 'pull,push' : 'pull'}`;
  }

  /** The credentials a token realm may be sent (see the file comment); throws for a refused realm. */
  #realmCredentials(realm: URL): Credentials | null {
    const base = this.#ep.base;
    if (realm.hostname === base.hostname) {
      if (base.protocol === 'https:' && realm.protocol !== 'https:') {
        throw this.error(`registry ${this.#ep.host} names a plain-http token service; refusing to send credentials there`);
      }
      return this.#creds?.kind === 'basic' ? this.#creds : null;
    }
    if (realm.protocol !== 'https:') {
      throw this.error(`registry ${this.#ep.host} names a token service on another host over plain http (${realm.host}); refused`);
    }
    const own = this.#opts.credentialsFor(realm.host);
    return own?.kind === 'basic' ? own : null;
  }

  async #token(realm: string, service: string | undefined, scope: string, action: Action): Promise<void> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.#ep.host} named a token realm that is not a URL`);
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) {
      throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.#ep.host} named an unusable token realm`);
    }
    const sendCreds = this.#realmCredentials(url);
    if (service) url.searchParams.set('service', service);
    for (const s of scope.split(' ')) if (s) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (sendCreds?.kind === 'basic') headers.authorization = basicHeader(sendCreds);
    const { status, body } = await this.#opts.fetchToken(url, headers, `token for ${this.#ep.repo}`);
    if (status === 401 || status === 403) {
      throw this.error(sendCreds
        ? `token service for ${this.#ep.host} refused the credentials for ${this.#ep.repo}`
        : `registry ${this.#ep.host} requires credentials for ${this.#ep.repo}`);
    }
    if (status !== 200) {
      throw new StrataError(STORE_ERR.REGISTRY, `token service for ${this.#ep.host} answered HTTP ${status}`);
    }
    let token: unknown;
    let expiresIn: unknown;
    try {
      const j = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
      token = j.token ?? j.access_token;
      expiresIn = j.expires_in;
    } catch { /* handled below */ }
    if (typeof token !== 'string' || token === '' || /[\r\n]/.test(token)) {
      throw new StrataError(STORE_ERR.REGISTRY, `token service for ${this.#ep.host} sent no usable token`);
    }
    const life = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : 60;
    this.#tokens.set(this.#scope(action), { token, expires: Date.now() + Math.max(5, life - 10) * 1000 });
  }
}

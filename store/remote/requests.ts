/**
 * One registry request as the client makes it: the Authorization header auth.ts allows, the
 * retries and deadline of retry.ts, the redirect rule, and the statuses turned into
 * StrataErrors. Bodies are not read here except small, bounded ones (fetchSmall, errors).
 *
 * - call(): a request with a replayable body. Network errors and 429/502/503/504 are retried
 *   (Retry-After honoured); a 401 on the registry's origin is answered once through the
 *   authenticator; GET and HEAD follow up to 5 redirects, and a redirected request carries
 *   no credentials. Other methods never follow a redirect. Resolves with the first other
 *   response, body unread (the caller reads or drains it).
 * - once(): a single try, for streaming bodies (uploads); the caller owns the retry.
 * - Token requests (for auth.ts) are retried the same way and never follow a redirect.
 */
import type { IncomingMessage } from 'node:http';
import { StrataError, STORE_ERR } from '../errors.js';
import { Authenticator, type Action } from './auth.js';
import type { Credentials } from './credentials.js';
import type { Endpoints } from './endpoints.js';
import { describeNetError, drain, isNetError, makeAgents, readBody, send, type Body } from './http.js';
import { Attempts, type RetryPolicy } from './retry.js';

export interface Op {
  method: string;
  url: URL;
  action: Action;
  what: string;
  headers?: Record<string, string>;
  /** Replayable bodies only; streaming bodies go through once(). */
  body?: Buffer;
}

export interface RequesterOptions {
  credentials: Credentials | null;
  credentialsFor(host: string): Credentials | null;
  policy: RetryPolicy;
  /** Idle time after which a silent connection counts as dropped. */
  timeoutMs: number;
  userAgent: string;
}

export const RETRY_STATUS = new Set([429, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
/** Error bodies and token answers are read up to this size. */
export const ERROR_BODY_LIMIT = 64 << 10;

export const oneLine = (s: string, max = 200) => {
  const t = s.replace(/[\s\p{Cc}]+/gu, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
};

const retryAfter = (res: IncomingMessage) => {
  const s = Number(res.headers['retry-after']);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : undefined;
};

export class Requester {
  readonly auth: Authenticator;
  readonly #ep: Endpoints;
  readonly #opts: RequesterOptions;
  readonly #agents = makeAgents();

  constructor(endpoints: Endpoints, opts: RequesterOptions) {
    this.#ep = endpoints;
    this.#opts = opts;
    this.auth = new Authenticator(endpoints, {
      credentials: opts.credentials,
      credentialsFor: opts.credentialsFor,
      fetchToken: (url, headers, what) => this.#fetchToken(url, headers, what),
    });
  }

  get policy(): RetryPolicy {
    return this.#opts.policy;
  }

  /** A fresh retry budget for one operation. */
  attempts(what: string, size = 0): Attempts {
    return new Attempts(this.#opts.policy, this.#ep.host, what, size);
  }

  /** Closes idle keep-alive connections; new ones open on demand. */
  close(): void {
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  /** One try, no retry; credentials only where auth.ts allows them. */
  once(method: string, url: URL, action: Action, extra: Record<string, string> | undefined, body: Body | undefined,
       deadline: number, redirected = false): Promise<IncomingMessage> {
    const headers: Record<string, string> = { 'user-agent': this.#opts.userAgent, ...extra };
    const a = this.auth.header(url, action, redirected);
    if (a) headers.authorization = a;
    return send(url, { method, headers, body, timeoutMs: this.#opts.timeoutMs, deadline, agents: this.#agents }).catch((e: unknown) => {
      throw tlsRefusal(url, e) ?? e;
    });
  }

  /** See the file comment. `attempts` lets a caller share one budget over several requests. */
  async call(op: Op, attempts = this.attempts(op.what)): Promise<IncomingMessage> {
    let url = op.url;
    let answered = false;
    let redirects = 0;
    for (;;) {
      let res: IncomingMessage;
      try {
        res = await this.once(op.method, url, op.action, op.headers, op.body, attempts.deadline, redirects > 0);
      } catch (e) {
        if (!isNetError(e)) throw e;
        await attempts.failed(describeNetError(e));
        continue;
      }
      const status = res.statusCode ?? 0;
      if (status === 401 && redirects === 0 && this.#ep.isOwn(url)) {
        if (answered || this.auth.settled) {
          await drain(res);
          throw this.auth.refused();
        }
        answered = true;
        await this.auth.answer(res, op.action);
        continue;
      }
      if (RETRY_STATUS.has(status)) {
        const after = retryAfter(res);
        await drain(res);
        await attempts.failed(`HTTP ${status}`, 0, after);
        continue;
      }
      if (REDIRECT_STATUS.has(status) && (op.method === 'GET' || op.method === 'HEAD') && res.headers.location) {
        await drain(res);
        if (++redirects > MAX_REDIRECTS) {
          throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.#ep.host} redirected ${op.what} too often`);
        }
        url = this.#ep.resolve(res.headers.location, url, op.what);
        continue;
      }
      return res;
    }
  }

  /**
   * call() plus reading the body (at most `limit` bytes), retried as a whole when the body is
   * cut off. A status outside `ok` is an error, except a GET's 404, returned with its (bounded)
   * body so the caller can tell NAME_UNKNOWN from a missing manifest.
   */
  async fetchSmall(op: Op, limit: number, ok: number[]): Promise<{ res: IncomingMessage; bytes: Buffer }> {
    const attempts = this.attempts(op.what);
    for (;;) {
      const res = await this.call(op, attempts);
      if (!ok.includes(res.statusCode ?? 0)) {
        if (res.statusCode === 404 && op.method === 'GET') {
          let bytes: Buffer = Buffer.alloc(0);
          try {
            bytes = await readBody(res, ERROR_BODY_LIMIT);
          } catch { /* the status says enough */ }
          return { res, bytes };
        }
        throw await this.statusError(res, op.what);
      }
      try {
        return { res, bytes: await readBody(res, limit) };
      } catch (e) {
        if (!isNetError(e) && (e as { message?: string }).message !== 'aborted') {
          throw new StrataError(STORE_ERR.REGISTRY, `registry ${this.#ep.host} sent a bad answer for ${op.what}: ${oneLine((e as Error).message)}`);
        }
        await attempts.failed(describeNetError(e));
      }
    }
  }

  /** A StrataError for an unexpected status, with the registry's OCI error code if any. */
  async statusError(res: IncomingMessage, what: string): Promise<StrataError> {
    const status = res.statusCode ?? 0;
    let detail = '';
    try {
      const body = await readBody(res, ERROR_BODY_LIMIT);
      const j = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
      const e = j.errors?.[0];
      if (e) detail = [e.code, e.message].filter((x) => typeof x === 'string' && x !== '').join(': ');
    } catch { /* no or non-JSON body */ }
    const host = this.#ep.host;
    const repo = this.#ep.repo;
    const msg = `registry ${host} refused ${what} in ${repo}: HTTP ${status}${detail ? ` ${oneLine(detail)}` : ''}`;
    if (status === 401) return this.auth.error(msg);
    if (status === 403) return this.auth.error(`registry ${host} denied ${what} in ${repo} to these credentials`);
    if (status === 404) return new StrataError(STORE_ERR.NOT_FOUND, msg);
    return new StrataError(STORE_ERR.REGISTRY, msg);
  }

  async #fetchToken(url: URL, headers: Record<string, string>, what: string): Promise<{ status: number; body: Buffer }> {
    const attempts = this.attempts(what);
    for (;;) {
      try {
        const res = await send(url, { method: 'GET', headers: { 'user-agent': this.#opts.userAgent, ...headers },
          timeoutMs: this.#opts.timeoutMs, deadline: attempts.deadline, agents: this.#agents });
        const status = res.statusCode ?? 0;
        if (RETRY_STATUS.has(status)) {
          const after = retryAfter(res);
          await drain(res);
          await attempts.failed(`HTTP ${status}`, 0, after);
          continue;
        }
        return { status, body: await readBody(res, ERROR_BODY_LIMIT) };
      } catch (e) {
        if (isNetError(e)) {
          await attempts.failed(describeNetError(e));
          continue;
        }
        if (e instanceof StrataError) throw e;
        throw new StrataError(STORE_ERR.REGISTRY, `token service for ${this.#ep.host} sent a bad answer: ${oneLine((e as Error).message)}`);
      }
    }
  }
}

/** OpenSSL's verdicts on a server's certificate, as Node gives them in `code`. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A TLS connection the client refused (the server's certificate) or could not make (no TLS at
 * that address), as the one-line error it is: retrying cannot help, and it is the user's to fix.
 * Undefined for any other failure.
 */
function tlsRefusal(url: URL, e: unknown): StrataError | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  if (UNTRUSTED.has(code)) {
    return new StrataError(STORE_ERR.REGISTRY, `registry ${url.host}: its TLS certificate is not trusted (${oneLine((e as Error).message)})`, {
      hint: 'a registry signed by a site CA needs that CA: set NODE_EXTRA_CA_CERTS to its PEM file',
    });
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO') {
    return new StrataError(STORE_ERR.REGISTRY, `registry ${url.host} does not answer in TLS at ${url.origin}`, {
      hint: `for a registry that speaks plain HTTP, write http://${url.host}`,
    });
  }
  return undefined;
}

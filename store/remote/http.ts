/**
 * The HTTP transport under the registry client: one request, no retry, no auth, no redirect.
 * node:http and node:https only.
 *
 * send() resolves with the response as soon as its head arrives; the caller owns the body and
 * must read it to the end (readBody, drain) or destroy it. A request body given as an
 * AsyncIterable is pulled while the request is written and is always ended: on success by being
 * read to the end, on failure by `return()` (Readable.from + pipeline destroy it).
 *
 * Bounds: a connection silent for `timeoutMs` fails with NetError ETIMEDOUT; at `deadline`
 * (epoch ms) the request and its response are cut with NetError EDEADLINE however fast bytes
 * still trickle, so no single connection outlives its operation. readBody() refuses a body
 * longer than its limit and drain() discards at most DRAIN_LIMIT bytes before cutting the
 * connection: an endless body costs a bounded amount of memory and time.
 */
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export type Body = Buffer | AsyncIterable<Uint8Array>;

export interface SendOptions {
  method: string;
  headers: Record<string, string>;
  body?: Body;
  /** Idle socket timeout; on expiry the request fails with a retryable NetError. */
  timeoutMs: number;
  /** Epoch ms at which the request and its response are cut (NetError EDEADLINE). */
  deadline?: number;
  agents: Agents;
}

export interface Agents {
  http: HttpAgent;
  https: HttpsAgent;
}

export function makeAgents(): Agents {
  return {
    http: new HttpAgent({ keepAlive: true, maxSockets: 8 }),
    https: new HttpsAgent({ keepAlive: true, maxSockets: 8, ...extraTrust(process.env['NODE_EXTRA_CA_CERTS']) }),
  };
}

/**
 * The TLS options that make a connection trust the certificates of NODE_EXTRA_CA_CERTS besides
 * Node's own roots, as Node does for every connection when it starts with the variable. strata's
 * launcher (cli/strata) keeps the variable from Node's start, which it slows for every command,
 * so the registry client adds them itself (for a process that started with it, adding them
 * again changes nothing). A file that cannot be read is ignored, as Node ignores it (with a
 * warning at start); a connection to a server it would have vouched for then fails on the
 * certificate.
 */
export function extraTrust(file: string | undefined): { secureContext?: SecureContext; ca?: string[] } {
  if (!file) return {};
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  // The default context holds the roots Node trusts (bundled, or the system's with
  // --use-openssl-ca); addCACert adds every certificate of the PEM text to it, as Node's own
  // loading of the file does. Where a Node lacks it: its bundled roots and the file's.
  const secureContext = createSecureContext();
  const native = (secureContext as unknown as { context?: { addCACert?: (pem: string) => void } }).context;
  if (typeof native?.addCACert !== 'function') return { ca: [...rootCertificates, pem] };
  native.addCACert(pem);
  return { secureContext };
}

/** A failure of the connection itself (refused, reset, hang-up, timeout): always retryable. */
export class NetError extends Error {
  readonly code: string;
  constructor(code: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NetError';
    this.code = code;
  }
}

const NET_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET',
  'ERR_HTTP_REQUEST_TIMEOUT', 'EDEADLINE',
]);

/** True for errors of the network rather than of the caller or the data. */
export function isNetError(e: unknown): boolean {
  if (e instanceof NetError) return true;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && NET_CODES.has(code);
}

/** A short, credential-free description of a network error: "ECONNREFUSED", "socket hang up". */
export function describeNetError(e: unknown): string {
  const err = e as { code?: string; message?: string };
  if (err?.message === 'socket hang up' || err?.message === 'aborted') return `connection dropped (${err.message})`;
  return err?.code ?? err?.message ?? String(e);
}

export function send(url: URL, opts: SendOptions): Promise<IncomingMessage> {
  const isHttps = url.protocol === 'https:';
  const fn = isHttps ? httpsRequest : httpRequest;
  if (opts.deadline !== undefined && Date.now() >= opts.deadline) {
    return Promise.reject(new NetError('EDEADLINE', 'deadline reached'));
  }
  return new Promise((resolve, reject) => {
    const req = fn(url, {
      method: opts.method,
      headers: opts.headers,
      agent: isHttps ? opts.agents.https : opts.agents.http,
    });
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    if (opts.deadline !== undefined) {
      const cut = () => {
        const e = new NetError('EDEADLINE', 'deadline reached');
        req.destroy(e);
        current?.destroy(e);
      };
      let current: IncomingMessage | undefined;
      timer = setTimeout(cut, Math.max(0, opts.deadline - Date.now()));
      timer.unref();
      req.on('response', (res) => {
        current = res;
        res.on('close', () => clearTimeout(timer));
      });
      req.on('error', () => { if (!current) clearTimeout(timer); });
    }
    req.setTimeout(opts.timeoutMs, () => {
      req.destroy(new NetError('ETIMEDOUT', `no answer for ${Math.round(opts.timeoutMs / 1000)} s`));
    });
    req.on('response', (res) => {
      settled = true;
      res.setTimeout(opts.timeoutMs, () => {
        res.destroy(new NetError('ETIMEDOUT', `no data for ${Math.round(opts.timeoutMs / 1000)} s`));
      });
      resolve(res);
    });
    req.on('error', (e) => {
      if (!settled) reject(e);
    });
    const body = opts.body;
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else {
      pipeline(Readable.from(body, { objectMode: false }), req).catch((e: unknown) => {
        // A source failure must not look like a network failure: it is not retryable.
        if (!req.destroyed) req.destroy(e as Error);
        if (!settled) { settled = true; reject(e); }
      });
    }
  });
}

/** Reads a whole (small) response body; more than `limit` bytes is an error. */
export async function readBody(res: IncomingMessage, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of res) {
    n += (chunk as Buffer).length;
    if (n > limit) {
      res.destroy();
      throw new Error(`response larger than ${limit} bytes`);
    }
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** The most drain() reads before it cuts the connection instead. */
export const DRAIN_LIMIT = 64 << 10;

/**
 * Discards a response body so the socket can be reused; errors are ignored. A body longer
 * than DRAIN_LIMIT is not read on: the connection is destroyed.
 */
export async function drain(res: IncomingMessage): Promise<void> {
  let n = 0;
  try {
    for await (const chunk of res) {
      n += (chunk as Buffer).length;
      if (n > DRAIN_LIMIT) {
        res.destroy();
        return;
      }
    }
  } catch { /* the connection is gone either way */ }
}

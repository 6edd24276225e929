/**
 * A real OCI registry for tests: Debian's `docker-registry` (CNCF Distribution 2.8) on
 * 127.0.0.1, with its storage in a fresh temp directory.
 *
 *   startRegistry()                      anonymous, push and pull open to everyone
 *   startRegistry({ auth: 'htpasswd' })  Basic auth; the htpasswd file is made with
 *                                        `htpasswd -B` (apache2-utils)
 *   startRegistry({ auth: 'token' })     Bearer token auth; a small token server in this
 *                                        process (also on 127.0.0.1) checks Basic credentials
 *                                        and signs ES256 JWTs with a throw-away key whose
 *                                        self-signed certificate (openssl) is the registry's
 *                                        rootcertbundle; the JWT carries it in `x5c`.
 *   startRegistry({ tls: true })         HTTPS, with a certificate for 127.0.0.1 signed by a
 *                                        throw-away CA (openssl) whose certificate is `caFile`.
 *
 * `http.secret` is fixed in the config, so upload sessions (whose `_state` is HMAC-signed
 * with it) survive restart() the way they do on a production registry.
 *
 * Storage layout (Distribution's filesystem driver), useful for tampering in tests:
 *   <storageDir>/docker/registry/v2/blobs/sha256/<hex[0:2]>/<hex>/data
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer as createHttpServer, get as httpGet, request as httpRequest, type Server } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { createPrivateKey, randomBytes, sign } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, removeDir, tempDir } from './tmp.js';

export interface RegistryServer {
  /** Base URL, `http://127.0.0.1:<port>` (`https://` with tls). */
  url: string;
  /** With tls: the PEM file of the CA that signed the registry's certificate. */
  caFile?: string;
  /** `127.0.0.1:<port>`, as skopeo and docker config want it. */
  host: string;
  port: number;
  /** The filesystem driver's root directory. */
  storageDir: string;
  /** Credentials accepted when auth is on (absent for an open registry). */
  username?: string;
  password?: string;
  /** Number of token requests served (token auth only), to check caching. */
  tokenRequests(): number;
  /** Path of a blob's data file inside storageDir. */
  blobDataPath(digest: string): string;
  /** SIGKILLs the registry (no graceful shutdown), starts it again on the same port and
   *  storage, and resolves once /v2/ answers. */
  restart(): Promise<void>;
  /** Kills the registry (and token server) and removes every temp file. Idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  auth?: 'htpasswd' | 'token';
  tls?: boolean;
}

/** A throw-away CA and a certificate for 127.0.0.1 it signed, in `dir`. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  mustRun('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', '/CN=strata-test-ca']);
  mustRun('openssl', ['req', ...ec, '-keyout', f('tls.key'), '-out', f('tls.csr'), '-subj', '/CN=127.0.0.1']);
  writeFileSync(f('tls.ext'), 'subjectAltName=IP:127.0.0.1\n');
  mustRun('openssl', ['x509', '-req', '-in', f('tls.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('tls.crt'), '-days', '2', '-extfile', f('tls.ext')]);
  return { ca: f('ca.crt'), cert: f('tls.crt'), key: f('tls.key') };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const req = get(url, { agent: false, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.setTimeout(1000, () => req.destroy());
  });
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** Token server for the Docker token flow; the access it grants is whatever was asked. */
function startTokenServer(dir: string, user: string, pass: string, service: string,
                          issuer: string): Promise<{ server: Server; port: number; count: () => number }> {
  const keyPem = join(dir, 'token.key');
  const certPem = join(dir, 'token.crt');
  mustRun('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', keyPem, '-out', certPem, '-days', '2', '-subj', '/CN=strata-test-token']);
  const key = createPrivateKey(readFileSync(keyPem));
  const certDer = Buffer.from(readFileSync(certPem, 'utf8').replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  let served = 0;
  const server = createHttpServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const authz = req.headers.authorization ?? '';
    const given = authz.startsWith('Basic ') ? Buffer.from(authz.slice(6), 'base64').toString() : '';
    if (u.pathname !== '/token' || given !== `${user}:${pass}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ details: 'wrong credentials' }));
      return;
    }
    served++;
    const access = u.searchParams.getAll('scope').map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop() ?? '';
      return { type, name: rest.join(':'), actions: actions.split(',').filter(Boolean) };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user, aud: u.searchParams.get('service') ?? service,
      exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: `${input}.${b64url(sig)}`, expires_in: 300 }));
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : 0, count: () => served });
    });
  });
}

export async function startRegistry(opts: StartOptions = {}): Promise<RegistryServer> {
  const dir = tempDir('strata-registry-');
  const storageDir = join(dir, 'storage');
  mkdirSync(storageDir);
  const port = await freePort();
  const username = opts.auth ? 'strata' : undefined;
  const password = opts.auth ? `pw-${randomBytes(6).toString('hex')}` : undefined;
  let token: Awaited<ReturnType<typeof startTokenServer>> | undefined;

  const cfg: string[] = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${storageDir}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
  ];
  const certs = opts.tls ? makeCertificates(dir) : undefined;
  if (certs) cfg.push('  tls:', `    certificate: ${certs.cert}`, `    key: ${certs.key}`);
  if (opts.auth === 'htpasswd') {
    const file = join(dir, 'htpasswd');
    mustRun('htpasswd', ['-B', '-b', '-c', file, username!, password!]);
    cfg.push('auth:', '  htpasswd:', '    realm: strata-test', `    path: ${file}`);
  } else if (opts.auth === 'token') {
    token = await startTokenServer(dir, username!, password!, 'strata-test', 'strata-test-issuer');
    cfg.push('auth:', '  token:', `    realm: http://127.0.0.1:${token.port}/token`,
      '    service: strata-test', '    issuer: strata-test-issuer',
      `    rootcertbundle: ${join(dir, 'token.crt')}`);
  }
  const cfgPath = join(dir, 'config.yml');
  writeFileSync(cfgPath, cfg.join('\n') + '\n');

  const url = `${certs ? 'https' : 'http'}://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let stderr = '';
  let stopped = false;

  const launch = async (): Promise<void> => {
    stderr = '';
    const c = spawn('docker-registry', ['serve', cfgPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    c.stderr!.setEncoding('utf8');
    c.stderr!.on('data', (s: string) => { stderr = (stderr + s).slice(-4000); });
    let exited = false;
    c.on('exit', () => { exited = true; });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const status = await probe(`${url}/v2/`);
      if (status === 200 || status === 401) return;
      if (exited) throw new Error(`docker-registry exited at start:\n${stderr}`);
      if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${url}:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };

  try {
    await launch();
  } catch (e) {
    await kill();
    token?.server.close();
    removeDir(dir);
    throw e;
  }
  return {
    url,
    caFile: certs?.ca,
    host: `127.0.0.1:${port}`,
    port,
    storageDir,
    username,
    password,
    tokenRequests: () => token?.count() ?? 0,
    blobDataPath: (digest: string) => {
      const hex = digest.replace(/^sha256:/, '');
      return join(storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    },
    restart: async () => {
      await kill();
      if (!stopped) await launch();
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await kill();
      if (token) await new Promise((r) => token!.server.close(r));
      removeDir(dir);
    },
  };
}

/**
 * What the fault proxy does with one request: pass it to the registry, answer it itself with a
 * status (the body is a Distribution-style error), or cut the connection (`reset`) before the
 * registry sees it.
 */
export type Fault = 'pass' | 'reset' | { status: number; headers?: Record<string, string> };

export interface FaultProxy {
  /** Base URL of the proxy, `http://127.0.0.1:<port>`. */
  url: string;
  /** Every request seen, as "METHOD /path" (query dropped), with the fault applied to it. */
  log: { request: string; fault: string }[];
  stop(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of a real registry that injects faults chosen per request by
 * `plan` (429/5xx answers, dropped connections). Location headers are rewritten so that the
 * client keeps talking to the proxy.
 */
export async function startFaultProxy(target: string, plan: (method: string, path: string) => Fault): Promise<FaultProxy> {
  const t = new URL(target);
  const log: FaultProxy['log'] = [];
  let self = '';
  const server = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const fault = plan(req.method ?? 'GET', path);
    log.push({ request: `${req.method} ${path}`, fault: typeof fault === 'string' ? fault : String(fault.status) });
    if (fault === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault !== 'pass') {
      req.resume();
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected fault' }] }));
      return;
    }
    const up = httpRequest({
      host: t.hostname, port: t.port, method: req.method, path: req.url,
      headers: { ...req.headers, host: t.host },
    }, (ur) => {
      const headers = { ...ur.headers };
      if (typeof headers.location === 'string') headers.location = headers.location.replace(t.origin, self);
      res.writeHead(ur.statusCode ?? 502, headers);
      ur.pipe(res);
    });
    up.on('error', () => req.socket.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  self = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return {
    url: self,
    log,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

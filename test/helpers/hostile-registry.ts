/**
 * A small OCI registry in this process, on loopback, that tests can turn hostile.
 *
 * Honest by default: blobs (HEAD, GET), uploads (POST → PATCH* → PUT ?digest=, GET of the
 * session), manifests by tag and digest (GET, PUT), tags/list — enough for strata's push and
 * pull, kept in memory. Tests then change its answers per request with `hook` (return true
 * when the hook answered), edit `blobs`, `manifests` and `tags`, or ask for Basic auth.
 *
 * Every request is logged with the Authorization header it carried, so a test can prove that
 * no credential went where it does not belong. `host` chooses the loopback address: 127.0.0.2
 * is "another host" for a registry on 127.0.0.1 (both reach the same machine on Linux).
 *
 * Nothing here is a real registry's behaviour; the real one (docker-registry) is in
 * registry-server.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

export interface Seen {
  method: string;
  /** Path and query. */
  url: string;
  authorization: string | undefined;
}

export type Hook = (req: IncomingMessage, res: ServerResponse, path: string) => boolean | Promise<boolean>;

export interface HostileRegistry {
  /** `http://<host>:<port>` */
  url: string;
  /** `<host>:<port>` */
  host: string;
  log: Seen[];
  blobs: Map<string, Buffer>;
  /** By tag and by digest. */
  manifests: Map<string, { type: string; bytes: Buffer }>;
  /** Tags in push order, per repository. */
  tags: Map<string, string[]>;
  /** Answers a request before the honest registry does when it returns true. */
  hook: Hook | undefined;
  /** Require these Basic credentials for every /v2/ request. */
  basic: { user: string; pass: string } | undefined;
  stop(): Promise<void>;
}

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function ociError(res: ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify({ errors: [{ code, message: code.toLowerCase() }] }));
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export async function startHostileRegistry(opts: { host?: string } = {}): Promise<HostileRegistry> {
  const uploads = new Map<string, Buffer[]>();
  const reg: HostileRegistry = {
    url: '', host: '', log: [], blobs: new Map(), manifests: new Map(), tags: new Map(),
    hook: undefined, basic: undefined, stop: async () => undefined,
  };

  const honest = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const method = req.method ?? 'GET';
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    const m = /^\/v2\/(.+?)\/(blobs\/uploads\/[^/]*|blobs\/[^/]+|manifests\/[^/]+|tags\/list)$/.exec(path);
    if (!m) return ociError(res, 404, 'NOT_FOUND');
    const [, repo, rest] = m as unknown as [string, string, string];
    if (rest.startsWith('blobs/uploads/')) {
      const id = rest.slice('blobs/uploads/'.length);
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      if (method === 'POST') {
        await body(req);
        const nid = randomBytes(8).toString('hex');
        uploads.set(nid, []);
        res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${nid}`, range: '0-0', 'content-length': '0' });
        res.end();
        return;
      }
      const parts = uploads.get(id);
      if (!parts) return ociError(res, 404, 'BLOB_UPLOAD_UNKNOWN');
      const have = () => parts.reduce((a, b) => a + b.length, 0);
      if (method === 'GET') {
        res.writeHead(204, { location: `/v2/${repo}/blobs/uploads/${id}`, range: `0-${Math.max(0, have() - 1)}` });
        res.end();
        return;
      }
      parts.push(await body(req));
      if (method === 'PATCH') {
        res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${id}`, range: `0-${have() - 1}`, 'content-length': '0' });
        res.end();
        return;
      }
      if (method === 'PUT') {
        const data = Buffer.concat(parts);
        uploads.delete(id);
        if (sha(data) !== q.get('digest')) return ociError(res, 400, 'DIGEST_INVALID');
        reg.blobs.set(sha(data), data);
        res.writeHead(201, { location: `/v2/${repo}/blobs/${sha(data)}`, 'content-length': '0' });
        res.end();
        return;
      }
      return ociError(res, 405, 'UNSUPPORTED');
    }
    if (rest.startsWith('blobs/')) {
      const data = reg.blobs.get(rest.slice('blobs/'.length));
      if (!data) return ociError(res, 404, 'BLOB_UNKNOWN');
      res.writeHead(200, { 'content-length': String(data.length), 'docker-content-digest': sha(data) });
      res.end(method === 'HEAD' ? undefined : data);
      return;
    }
    if (rest.startsWith('manifests/')) {
      const ref = rest.slice('manifests/'.length);
      if (method === 'PUT') {
        const bytes = await body(req);
        const entry = { type: String(req.headers['content-type'] ?? ''), bytes };
        reg.manifests.set(ref, entry);
        reg.manifests.set(sha(bytes), entry);
        if (!ref.startsWith('sha256:')) {
          const list = reg.tags.get(repo) ?? [];
          if (!list.includes(ref)) list.push(ref);
          reg.tags.set(repo, list);
        }
        res.writeHead(201, { 'docker-content-digest': sha(bytes), 'content-length': '0' });
        res.end();
        return;
      }
      const got = reg.manifests.get(ref);
      if (!got) return ociError(res, 404, 'MANIFEST_UNKNOWN');
      res.writeHead(200, { 'content-type': got.type, 'content-length': String(got.bytes.length) });
      res.end(method === 'HEAD' ? undefined : got.bytes);
      return;
    }
    const list = reg.tags.get(repo);
    if (!list) return ociError(res, 404, 'NAME_UNKNOWN');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: repo, tags: list }));
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    reg.log.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    void (async () => {
      try {
        if (reg.hook && (await reg.hook(req, res, path))) return;
        if (reg.basic) {
          const want = `Basic ${Buffer.from(`${reg.basic.user}:${reg.basic.pass}`).toString('base64')}`;
          if (req.headers.authorization !== want) {
            req.resume();
            return ociError(res, 401, 'UNAUTHORIZED', { 'www-authenticate': 'Basic realm="hostile"' });
          }
        }
        await honest(req, res, path);
      } catch {
        res.destroy();
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, opts.host ?? '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  reg.host = `${opts.host ?? '127.0.0.1'}:${port}`;
  reg.url = `http://${reg.host}`;
  reg.stop = () => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return reg;
}

/** Writes `chunk` forever (until the client goes away), never ending the response. */
export function endless(res: ServerResponse, chunk = Buffer.alloc(64 << 10, 0x41)): void {
  const write = () => {
    while (!res.destroyed && res.write(chunk)) { /* until the socket's buffer is full */ }
    if (!res.destroyed) res.once('drain', write);
  };
  res.on('close', () => res.removeAllListeners('drain'));
  write();
}

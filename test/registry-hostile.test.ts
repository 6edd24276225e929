/**
 * Issue 11, item 5: a hostile registry on loopback (test/helpers/hostile-registry.ts). Every
 * case ends by itself with one line, and no credential reaches a place it does not belong:
 *   - tag lists that link to themselves, never end, or leave the host;
 *   - endless and oversized bodies (blobs, manifests, errors), a layer that decompresses past
 *     its declared size;
 *   - one byte per connection, and a drip that keeps one connection alive;
 *   - a token realm on another host over http, an https realm elsewhere (no Basic for it);
 *   - redirects of downloads and uploads to another host, a restricted upload moved off-host;
 *   - STRATA_REGISTRY_AUTH sent only to its host, also while rebuild tries remotes in turn;
 *   - a tag serving another module than the one asked for.
 * Runs without docker-registry: the server is in this process, so the CLI runs asynchronously.
 */
import { suite } from 'uvu';
import { ensureGroup } from './helpers/users.js';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { STORE_ERR as ERR, isStrataError } from '../store/errors.js';
import { cidFromHex, JSON_CODEC } from '../store/cid.js';
import { Authenticator } from '../store/remote/auth.js';
import { RegistryClient, type RegistryClientOptions } from '../store/remote/client.js';
import { basicCredentials, type Credentials } from '../store/remote/credentials.js';
import { Endpoints } from '../store/remote/endpoints.js';
import { endless, startHostileRegistry, type HostileRegistry } from './helpers/hostile-registry.js';
import { noise } from './helpers/random.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strataAsync, strataJson } from './helpers/cli.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const REPO = 'hostile/strata';
const MB3 = 3 << 20;
const USER = 'site';
const PASS = 'pw-0f3c9a-secret';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;

interface Ctx {
  dir: string;
  servers: HostileRegistry[];
}

const test = suite<Ctx>('registry: a hostile server on loopback');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-hostile-');
  ctx.servers = [];
});
test.after.each(async (ctx) => {
  for (const s of ctx.servers) await s.stop();
  removeDir(ctx.dir);
});

async function server(ctx: Ctx, host?: string): Promise<HostileRegistry> {
  const s = await startHostileRegistry({ host });
  ctx.servers.push(s);
  return s;
}

const quick: RegistryClientOptions = { auth: null, retries: 6, retryDelayMs: 5, maxRetryDelayMs: 20 };
const client = (reg: HostileRegistry, extra: RegistryClientOptions = {}) =>
  new RegistryClient({ base: reg.url, repo: REPO }, { ...quick, ...extra });

/** The promise rejects with a one-line StrataError of `code` whose message matches. */
async function fails(p: Promise<unknown>, code: string, pattern: RegExp): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(isStrataError(e, code), `expected ${code}, got ${String(e)}`);
    assert.match((e as Error).message, pattern);
    assert.not.match((e as Error).message, /\n/);
    assert.not.ok((e as Error).message.includes(PASS), 'a secret in the message');
    return e as Error;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

async function drainAll(it: AsyncIterable<Buffer>, seen?: { bytes: number }): Promise<void> {
  for await (const b of it) if (seen) seen.bytes += b.length;
}

const requests = (reg: HostileRegistry, re: RegExp) => reg.log.filter((l) => re.test(`${l.method} ${l.url}`));
const noCredentials = (reg: HostileRegistry, what: string) =>
  assert.equal(reg.log.filter((l) => l.authorization !== undefined).map((l) => `${l.method} ${l.url}`), [], `${what}: credentials were sent`);

// ---- paging ----------------------------------------------------------------------------------

test('a tag list that links to itself, never ends, or leaves the host: ERR_REGISTRY, no loop', async (ctx) => {
  const reg = await server(ctx);
  const other = await server(ctx, '127.0.0.2');
  let mode: 'self' | 'endless' | 'away' = 'self';
  let page = 0;
  reg.hook = (req, res, path) => {
    if (!path.endsWith('/tags/list')) return false;
    const next = mode === 'self' ? req.url! : mode === 'endless' ? `${path}?n=1000&last=t${++page}` : `${other.url}${path}`;
    res.writeHead(200, { 'content-type': 'application/json', link: `<${next}>; rel="next"` });
    res.end(JSON.stringify({ name: REPO, tags: [`t${page}`] }));
    return true;
  };
  const c = client(reg, { maxTagPages: 40 });
  await fails(c.listTags(), ERR.REGISTRY, /tag-list pages that link back to an earlier page/);
  assert.is(requests(reg, /tags\/list/).length, 1);
  mode = 'endless';
  await fails(c.listTags(), ERR.REGISTRY, /more than 40 tag-list pages/);
  assert.is(requests(reg, /tags\/list/).length, 1 + 40);
  mode = 'away';
  await fails(c.listTags(), ERR.REGISTRY, /linked its tag list to another host/);
  assert.is(other.log.length, 0, 'nothing was asked of the other host');
  c.close();
});

// ---- bodies ----------------------------------------------------------------------------------

test('endless and oversized bodies are cut: blobs at their declared size, manifests and errors at their limits', async (ctx) => {
  const reg = await server(ctx);
  const digest = sha(Buffer.from('a 3 MB layer, says the manifest'));
  let mode = '';
  reg.hook = (_req, res, path) => {
    if (mode === 'chunked' && path.includes('/blobs/')) {
      res.writeHead(200);
      endless(res);
    } else if (mode === 'length' && path.includes('/blobs/')) {
      res.writeHead(200, { 'content-length': String(1.4e9) });
      endless(res);
    } else if (mode === 'manifest' && path.includes('/manifests/')) {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      endless(res, Buffer.alloc(64 << 10, 0x20));
    } else if (mode === 'error' && path.includes('/manifests/')) {
      res.writeHead(500, { 'content-type': 'application/json' });
      endless(res);
    } else if (mode === '404' && path.includes('/blobs/')) {
      res.writeHead(404);
      endless(res);
    } else if (mode === '503' && path.includes('/tags/')) {
      res.writeHead(503);
      endless(res);
    } else {
      return false;
    }
    return true;
  };
  const c = client(reg, { retries: 3 });
  const seen = { bytes: 0 };
  mode = 'chunked';
  await fails(drainAll(c.getBlob(digest, MB3), seen), ERR.REGISTRY, /sent more than 3145728 bytes for blob sha256:\w+ of 3145728 bytes/);
  assert.ok(seen.bytes <= MB3, `${seen.bytes} bytes came through`);
  seen.bytes = 0;
  mode = 'length';
  await fails(drainAll(c.getBlob(digest, MB3), seen), ERR.REGISTRY, /sent 1400000000 bytes for blob/);
  assert.is(seen.bytes, 0, 'refused before the body');
  mode = 'manifest';
  await fails(c.getManifest('t'), ERR.REGISTRY, /bad answer for manifest t: response larger than 4194304 bytes/);
  mode = 'error';
  await fails(c.getManifest('t'), ERR.REGISTRY, /refused manifest t in hostile\/strata: HTTP 500/);
  mode = '404';
  await fails(drainAll(c.getBlob(digest, MB3)), ERR.NOT_FOUND, /has no blob/);
  mode = '503';
  await fails(c.listTags(), ERR.REGISTRY, /tag list failed after 3 tries \(HTTP 503\)/);
  c.close();
});

test('one byte per connection uses the tries up; a drip on one connection ends at the deadline', async (ctx) => {
  const reg = await server(ctx);
  const data = noise(MB3, 1);
  const digest = sha(data);
  let mode: 'reset' | 'drip' = 'reset';
  reg.hook = (req, res, path) => {
    if (!path.endsWith(digest)) return false;
    const from = Number(/bytes=(\d+)-/.exec(String(req.headers.range ?? ''))?.[1] ?? 0);
    const headers: Record<string, string> = { 'content-length': String(data.length - from) };
    if (from > 0) headers['content-range'] = `bytes ${from}-${data.length - 1}/${data.length}`;
    res.writeHead(from > 0 ? 206 : 200, headers);
    if (mode === 'reset') {
      res.write(data.subarray(from, from + 1), () => setTimeout(() => res.destroy(), 5));
    } else {
      let at = from;
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(data.subarray(at, ++at))), 20);
    }
    return true;
  };
  const c = client(reg);
  await fails(drainAll(c.getBlob(digest, data.length)), ERR.REGISTRY, /download of blob sha256:\w+ failed after 6 tries/);
  assert.is(requests(reg, /GET .*\/blobs\//).length, 6, 'six connections, not one per byte');
  mode = 'drip';
  const slow = client(reg, { deadlineMs: 1000, minRate: 1e12 });
  await fails(drainAll(slow.getBlob(digest, data.length)), ERR.REGISTRY, /download of blob sha256:\w+ did not finish within 1 s/);
  c.close();
  slow.close();
});

// ---- where credentials go --------------------------------------------------------------------

test('a token realm on another host over http is refused without a request; on the same host it gets Basic', async (ctx) => {
  const reg = await server(ctx);
  const elsewhere = await server(ctx, '127.0.0.2');
  const sameHost = await server(ctx, '127.0.0.1');
  for (const t of [elsewhere, sameHost]) {
    t.hook = (req, res) => {
      res.writeHead(req.headers.authorization === BASIC ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'granted' }));
      return true;
    };
  }
  let realm = `${elsewhere.url}/token`;
  reg.hook = (req, res) => {
    if (req.headers.authorization === 'Bearer granted') return false;
    req.resume();
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="hostile"` });
    res.end();
    return true;
  };
  const creds = { auth: basicCredentials(USER, PASS) };
  await fails(client(reg, creds).listTags(), ERR.AUTH, /names a token service on another host over plain http \(127\.0\.0\.2:\d+\); refused/);
  await fails(client(reg).listTags(), ERR.AUTH, /another host over plain http/);
  assert.is(elsewhere.log.length, 0, 'the realm on another host was never asked');
  noCredentials(reg, 'registry before a token');

  realm = `${sameHost.url}/token`;
  const c = client(reg, creds);
  assert.equal(await c.listTags(), []);
  assert.equal(sameHost.log.map((l) => l.authorization), [BASIC]);
  c.close();
});

test('an https realm on another host is asked without the registry\'s Basic credentials', async () => {
  // The policy in auth.ts, driven directly: a TLS token service would need a trusted certificate.
  const asked: Array<{ url: string; authorization: string | undefined }> = [];
  const ep = new Endpoints({ base: 'http://127.0.0.1:5000', repo: REPO });
  const realmCreds: Record<string, Credentials> = { 'tokens.example.org': basicCredentials('realm-user', 'realm-pw') };
  const auth = (creds: Credentials | null) => new Authenticator(ep, {
    credentials: creds,
    credentialsFor: (host) => realmCreds[host] ?? null,
    fetchToken: async (url, headers) => {
      asked.push({ url: url.origin, authorization: headers.authorization });
      return { status: 200, body: Buffer.from('{"token":"t"}') };
    },
  });
  const challenge = (realm: string) => Object.assign(Readable.from([]), {
    headers: { 'www-authenticate': `Bearer realm="${realm}",service="s"` },
  }) as unknown as IncomingMessage;
  await auth(basicCredentials(USER, PASS)).answer(challenge('https://auth.example.org/token'), 'pull');
  await auth(basicCredentials(USER, PASS)).answer(challenge('https://tokens.example.org/token'), 'pull');
  assert.equal(asked, [
    { url: 'https://auth.example.org', authorization: undefined },
    { url: 'https://tokens.example.org', authorization: `Basic ${Buffer.from('realm-user:realm-pw').toString('base64')}` },
  ]);
  // An https registry never sends its credentials to a plain-http realm, even on its own host.
  const tls = new Authenticator(new Endpoints({ base: 'https://reg.example.org', repo: REPO }), {
    credentials: basicCredentials(USER, PASS), credentialsFor: () => null,
    fetchToken: async () => assert.unreachable('asked') as never,
  });
  await fails(tls.answer(challenge('http://reg.example.org/token'), 'pull'), ERR.AUTH, /plain-http token service/);
});

test('redirects carry no credentials; an upload moved off-host is refused when confined, sent bare otherwise', async (ctx) => {
  const reg = await server(ctx);
  const other = await server(ctx, '127.0.0.2');
  reg.basic = { user: USER, pass: PASS };
  const data = noise(100_000, 2);
  const digest = sha(data);
  other.blobs.set(digest, data);
  other.hook = (req, res) => {
    if (req.method !== 'PUT') return false;
    req.resume();
    res.writeHead(201);
    res.end();
    return true;
  };
  reg.hook = (req, res, path) => {
    if (req.headers.authorization !== BASIC) return false;
    if (req.method === 'GET' && path.endsWith(digest)) {
      res.writeHead(307, { location: `${other.url}${path}` });
    } else if (req.method === 'POST') {
      req.resume();
      res.writeHead(202, { location: `${other.url}/v2/${REPO}/blobs/uploads/elsewhere` });
    } else if (req.method === 'HEAD' && path.includes('/blobs/')) {
      res.writeHead(404);
    } else {
      return false;
    }
    res.end();
    return true;
  };
  const c = client(reg, { auth: basicCredentials(USER, PASS) });
  const got: Buffer[] = [];
  for await (const b of c.getBlob(digest, data.length)) got.push(b);
  assert.ok(Buffer.concat(got).equals(data), 'the redirected download arrived');
  const up = noise(5000, 3);
  const src = () => (async function* () { yield up; })();
  await fails(c.putBlob(sha(up), up.length, src, { confined: true }), ERR.REGISTRY,
    /moved the upload of blob sha256:\w+ to another host \(127\.0\.0\.2:\d+\); refused for restricted content/);
  assert.equal(other.log.map((l) => l.method), ['GET'], 'the confined upload sent nothing to the other host');
  assert.is(await c.putBlob(sha(up), up.length, src), 'uploaded');
  assert.equal(other.log.map((l) => l.method), ['GET', 'PUT']);
  noCredentials(other, 'other host');
  assert.ok(reg.log.some((l) => l.authorization === BASIC), 'the registry itself got the credentials');
  c.close();
});

// ---- through the CLI -------------------------------------------------------------------------

/** Store `name` with one module per [fullName, content, …extra import args]. */
function storeWith(ctx: Ctx, name: string, mods: Array<[string, string, ...string[]]>): { store: string; records: string[] } {
  const store = join(ctx.dir, name);
  const records: string[] = [];
  for (const [fullName, content, ...extra] of mods) {
    const tree = join(ctx.dir, `${name}-${fullName.replace('/', '-')}`);
    mkdirSync(tree, { recursive: true });
    writeFileSync(join(tree, 'f'), content);
    records.push(strataJson(['store', 'import', fullName, tree, ...extra], { store }).record);
  }
  return { store, records };
}

async function cli(store: string, args: string[], env: Record<string, string> = {}) {
  return strataAsync(args, { store, env: { STRATA_REGISTRY_AUTH: '', DOCKER_CONFIG: '/nonexistent', ...env } }).done;
}

test('STRATA_REGISTRY_AUTH goes only to its host, also to the second remote a rebuild tries', async (ctx) => {
  const holder = await server(ctx);
  const evil = await server(ctx);
  holder.basic = { user: USER, pass: PASS };
  evil.basic = { user: 'someone', pass: 'else' };
  const auth = { STRATA_REGISTRY_AUTH: `${holder.host}=${USER}:${PASS}` };
  const { store: A, records } = storeWith(ctx, 'A', [['tool/1', 'tool\n']]);
  const pushed = await cli(A, ['store', 'push', `${holder.host}/${REPO}`], auth);
  assert.is(pushed.code, 0, pushed.stderr);

  const C = join(ctx.dir, 'C');
  strataJson(['store', 'remote', 'add', 'a-evil', `${evil.host}/${REPO}`], { store: C });
  strataJson(['store', 'remote', 'add', 'b-site', `${holder.host}/${REPO}`], { store: C });
  const list = join(ctx.dir, 'stack.cids');
  writeFileSync(list, `${records[0]}\n`);
  const r = await cli(C, ['rebuild', list, '-o', join(ctx.dir, 'out.sqfs')], auth);
  assert.is(r.code, 0, r.stderr);
  assert.ok(evil.log.length > 0, 'the first remote was tried');
  noCredentials(evil, 'the remote without credentials');
  assert.ok(holder.log.some((l) => l.authorization === BASIC));
  // The unscoped form is refused with one line, before any request.
  const before = evil.log.length;
  assertOneLineError(await cli(C, ['store', 'pull', 'a-evil'], { STRATA_REGISTRY_AUTH: `${USER}:${PASS}` }), 'unscoped credentials',
    /STRATA_REGISTRY_AUTH \(entry 1\) names no registry host/);
  assert.is(evil.log.length, before);
});

test('pull of foo/1 from a tag serving bar/1 is refused, with --force too; the store is unchanged', async (ctx) => {
  const reg = await server(ctx);
  const { store: A } = storeWith(ctx, 'A', [['foo/1', 'foo\n'], ['bar/1', 'bar\n']]);
  const pushed = await cli(A, ['store', 'push', `${reg.host}/${REPO}`]);
  assert.is(pushed.code, 0, pushed.stderr);
  reg.manifests.set('foo_1', reg.manifests.get('bar_1')!);
  const { store: B, records } = storeWith(ctx, 'B', [['foo/1', 'local foo\n']]);
  for (const extra of [[], ['--force']]) {
    assertOneLineError(await cli(B, ['store', 'pull', `${reg.host}/${REPO}`, 'foo/1', ...extra]), `pull foo/1 ${extra.join(' ')}`,
      /hostile\/strata:foo_1 serves bar\/1, not foo\/1: refused/);
  }
  assert.equal(strataJson(['store', 'ls'], { store: B }).map((m: { fullName: string; record: string }) => [m.fullName, m.record]), [['foo/1', records[0]]]);
});

test('a pulled record whose environment variable name is a command, or missing, is refused; the store is unchanged', async (ctx) => {
  const reg = await server(ctx);
  const { store: A } = storeWith(ctx, 'A', [['foo/1', 'foo\n', '--setenv', 'X=1']]);
  assert.is((await cli(A, ['store', 'push', `${reg.host}/${REPO}`])).code, 0);
  const pushed = reg.manifests.get('foo_1')!;
  const cases: Array<[string, string | undefined, RegExp]> = [
    ['a command', 'X;touch /tmp/pwned;Y', /environment variable name .*X;touch \/tmp\/pwned;Y.* is not a POSIX name/],
    ['missing', undefined, /environment variable name \(none\) is not a POSIX name/],
  ];
  for (const [what, name, refusal] of cases) {
    // Rewrite the record (the manifest's config), digests made consistent.
    const m = JSON.parse(pushed.bytes.toString()) as { config: { digest: string; size: number } };
    const record = JSON.parse(reg.blobs.get(m.config.digest)!.toString()) as { env: Array<{ var?: string }> };
    if (name === undefined) delete record.env[0]!.var;
    else record.env[0]!.var = name;
    const bytes = Buffer.from(JSON.stringify(record));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    reg.blobs.set(digest, bytes);
    const [oldCid, newCid] = [m.config.digest, digest].map((d) => cidFromHex(JSON_CODEC, d.slice(7)));
    m.config = { ...m.config, digest, size: bytes.length };
    const text = JSON.stringify(m).split(oldCid!).join(newCid!); // the record annotation names it too
    reg.manifests.set('foo_1', { type: pushed.type, bytes: Buffer.from(text) });
    const B = join(ctx.dir, `B-${what.replace(/ /g, '-')}`);
    strataJson(['store', 'gc'], { store: B }); // creates the store
    assertOneLineError(await cli(B, ['store', 'pull', `${reg.host}/${REPO}`, 'foo/1']), `pull of a record whose variable name is ${what}`, refusal);
    assert.equal(strataJson(['store', 'ls'], { store: B }), []);
  }
});

test('a pulled manifest with no media type of its own is refused in one line, naming it missing', async (ctx) => {
  const reg = await server(ctx);
  const { store: A } = storeWith(ctx, 'A', [['foo/1', 'foo\n']]);
  assert.is((await cli(A, ['store', 'push', `${reg.host}/${REPO}`])).code, 0);
  const pushed = reg.manifests.get('foo_1')!;
  const m = JSON.parse(pushed.bytes.toString()) as { mediaType?: string };
  delete m.mediaType;
  reg.manifests.set('foo_1', { type: pushed.type, bytes: Buffer.from(JSON.stringify(m)) });
  const B = join(ctx.dir, 'B');
  strataJson(['store', 'gc'], { store: B }); // creates the store
  assertOneLineError(await cli(B, ['store', 'pull', `${reg.host}/${REPO}`, 'foo/1']), 'pull of a manifest with no media type', /is not a well-formed strata module \(media type \(none\)\)/);
  assert.equal(strataJson(['store', 'ls'], { store: B }), []);
});

test('a pull whose layer never ends, or decompresses past its declared size, stops there and leaves no module, blob or temp file', async (ctx) => {
  const reg = await server(ctx);
  const content = noise(MB3, 4).toString('base64');
  const { store: A } = storeWith(ctx, 'A', [['big/1', content]]);
  const target = `${reg.host}/${REPO}`;
  const pushed = await cli(A, ['--json', 'store', 'push', target, '--compression', 'none']);
  assert.is(pushed.code, 0, pushed.stderr);
  const manifest = () => JSON.parse(reg.manifests.get('big_1')!.bytes.toString()) as { layers: Array<{ digest: string; size: number; annotations?: Record<string, string> }> };
  const layer = manifest().layers[0]!;
  let served = 0;
  reg.hook = (req, res, path) => {
    if (req.method !== 'GET' || !path.endsWith(layer.digest)) return false;
    res.writeHead(200);
    res.on('close', () => undefined);
    const chunk = Buffer.alloc(64 << 10);
    const write = () => {
      while (!res.destroyed && res.write(chunk)) served += chunk.length;
      if (!res.destroyed) res.once('drain', write);
    };
    write();
    return true;
  };
  const B = join(ctx.dir, 'B');
  strataJson(['store', 'gc'], { store: B }); // creates the store
  const clean = () => {
    assert.equal(strataJson(['store', 'ls'], { store: B }), []);
    assert.equal(readdirSync(join(B, 'tmp')).filter((n) => !n.startsWith('pins-')), [], 'no temp file left');
    assert.equal(readdirSync(join(B, 'blobs', 'sha256')), [], 'no blob left');
  };
  assertOneLineError(await cli(B, ['store', 'pull', target, 'big/1']), 'endless layer', new RegExp(`sent more than ${layer.size} bytes for blob`));
  assert.ok(served < 64 * layer.size, `the server wrote ${served} bytes for a ${layer.size}-byte layer`);
  clean();

  // zstd this time; then the manifest (under the same tag) claims a smaller uncompressed size.
  reg.hook = undefined;
  const again = await cli(A, ['store', 'push', target]);
  assert.is(again.code, 0, again.stderr);
  const m = manifest();
  assert.is(m.layers[0]!.annotations!['vnd.strata.layer.diff-size'], String(layer.size));
  m.layers[0]!.annotations!['vnd.strata.layer.diff-size'] = '100000';
  reg.manifests.set('big_1', { type: 'application/vnd.oci.image.manifest.v1+json', bytes: Buffer.from(JSON.stringify(m)) });
  assertOneLineError(await cli(B, ['store', 'pull', target, 'big/1']), 'layer bigger than declared',
    /the layer decompresses to more than the 100000 bytes its manifest declares/);
  clean();
});

test('a restricted module pushed to a site-internal remote that moves its upload off-host: refused, nothing sent there', async (ctx) => {
  const reg = await server(ctx);
  const other = await server(ctx, '127.0.0.2');
  reg.hook = (req, res) => {
    if (req.method !== 'POST') return false;
    req.resume();
    res.writeHead(202, { location: `${other.url}/v2/${REPO}/blobs/uploads/x` });
    res.end();
    return true;
  };
  ensureGroup('vasp'); // --restricted names a group the host has
  const { store: S } = storeWith(ctx, 'S', [['lic/vasp-6', 'licensed\n', '--restricted', 'vasp']]);
  strataJson(['store', 'remote', 'add', 'site', `${reg.host}/${REPO}`, '--site-internal'], { store: S });
  assertOneLineError(await cli(S, ['store', 'push', 'site']), 'restricted upload moved',
    /moved the upload of blob sha256:\w+ to another host \(127\.0\.0\.2:\d+\); refused for restricted content/);
  assert.is(other.log.length, 0, 'not one request reached the other host');
  assert.equal(requests(reg, /^(PATCH|PUT) /), [], 'no bytes of the module were sent');
});

test('a compressed layer that holds another tar than the record names is refused after decompression', async (ctx) => {
  const reg = await server(ctx);
  const { store: A } = storeWith(ctx, 'A', [['foo/1', 'foo\n'], ['bar/1', 'bar\n']]);
  const target = `${reg.host}/${REPO}`;
  const pushed = await cli(A, ['store', 'push', target]);
  assert.is(pushed.code, 0, pushed.stderr);
  type M = { layers: Array<{ mediaType: string; digest: string; size: number; annotations: Record<string, string> }> };
  const read = (tag: string) => JSON.parse(reg.manifests.get(tag)!.bytes.toString()) as M;
  const foo = read('foo_1');
  const bar = read('bar_1');
  assert.is(foo.layers[0]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  // foo's manifest now points at bar's compressed blob, a valid blob under its own digest.
  foo.layers[0] = { ...bar.layers[0]!, annotations: { ...foo.layers[0]!.annotations, 'vnd.strata.layer.diff-size': bar.layers[0]!.annotations['vnd.strata.layer.diff-size']! } };
  reg.manifests.set('foo_1', { type: 'application/vnd.oci.image.manifest.v1+json', bytes: Buffer.from(JSON.stringify(foo)) });
  const B = join(ctx.dir, 'B');
  assertOneLineError(await cli(B, ['store', 'pull', target, 'foo/1']), 'forged layer', /foo_1: the zstd layer does not hold layer bafkrei\w+/);
  assert.equal(strataJson(['store', 'ls'], { store: B }), []);
  assert.equal(readdirSync(join(B, 'blobs', 'sha256')), [], 'no blob kept');
});

test.run();

/**
 * Registry credentials: where they come from, Basic auth against docker-registry with an
 * htpasswd file, the Bearer token flow against docker-registry with token auth (token server
 * in test/helpers/registry-server.ts), and that secrets never show in errors or dumps.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { RegistryClient, MEDIA_TYPES } from '../store/remote/client.js';
import { basicCredentials, bearerCredentials, parseAuthValue, resolveCredentials,
  type Credentials } from '../store/remote/credentials.js';
import { STORE_ERR as ERR, isStrataError } from '../store/errors.js';
import { missing, skipSuite } from './helpers/probe.js';
import { startRegistry, type RegistryServer } from './helpers/registry-server.js';
import { removeDir, tempDir } from './helpers/tmp.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const once = (data: Buffer) => () => (async function* () { yield data; })();

/** Push a blob and a manifest, list tags, pull both back: the whole API under one auth. */
async function exercise(c: RegistryClient): Promise<void> {
  const blob = randomBytes(20_000);
  assert.is(await c.putBlob(sha(blob), blob.length, once(blob)), 'uploaded');
  assert.is(await c.hasBlob(sha(blob)), true);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MEDIA_TYPES.OCI_MANIFEST,
    config: { mediaType: 'application/vnd.strata.module.config.v1+json', digest: sha(blob), size: blob.length },
    layers: [],
  }));
  const digest = await c.putManifest('t1', MEDIA_TYPES.OCI_MANIFEST, manifest);
  assert.equal(await c.listTags(), ['t1']);
  assert.is((await c.getManifest('t1')).digest, digest);
  const parts: Buffer[] = [];
  for await (const b of c.getBlob(sha(blob), blob.length)) parts.push(b);
  assert.ok(Buffer.concat(parts).equals(blob));
}

/** The call fails with ERR_AUTH, one line, a hint, and no trace of `secret` anywhere. */
async function authFails(p: Promise<unknown>, secret: string | undefined, pattern: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(isStrataError(e, ERR.AUTH), `expected ERR_AUTH, got ${String(e)}`);
    assert.match(e.message, pattern);
    assert.not.match(e.message, /\n/);
    assert.match(e.hint ?? '', /STRATA_REGISTRY_AUTH/);
    if (secret) {
      for (const text of [e.message, e.hint ?? '', inspect(e, { depth: 5 }), JSON.stringify(e)]) {
        assert.not.ok(text.includes(secret), 'the secret leaked into the error');
      }
    }
    return;
  }
  assert.unreachable('expected ERR_AUTH');
}

const opts = (auth: Credentials | null) => ({ auth, retries: 3, retryDelayMs: 20 });

// ---- where credentials come from -------------------------------------------------------------

const creds = suite('registry credentials');
let home: string;
creds.before.each(() => { home = tempDir('strata-auth-'); });
creds.after.each(() => removeDir(home));

creds('STRATA_REGISTRY_AUTH: HOST=user:password and HOST=bearer:TOKEN, each for its own host only', () => {
  const env = { STRATA_REGISTRY_AUTH: 'any.host:5000=alice:pa:ss  X=bearer:abc.def\nany.host:5000=later:ignored' };
  const b = resolveCredentials('any.host:5000', { env, home });
  assert.equal({ ...b }, { kind: 'basic', username: 'alice' });
  assert.is((b as { password: string }).password, 'pa:ss');
  const t = resolveCredentials('x', { env, home });
  assert.is(t?.kind, 'bearer');
  assert.is((t as { token: string }).token, 'abc.def');
  // Another host, or the same host on another port, gets nothing.
  assert.is(resolveCredentials('any.host', { env, home }), null);
  assert.is(resolveCredentials('any.host:5001', { env, home }), null);
  assert.is(resolveCredentials('evil.example.org', { env, home }), null);
});

creds('STRATA_REGISTRY_AUTH_FILE: one HOST=SECRET per line, spaces in secrets, comments; the variable wins', () => {
  const file = join(home, 'auth');
  writeFileSync(file, '# site registries\n\nreg.example.org=bob:pass with spaces\r\n127.0.0.1:5000=bearer:tok\n');
  const env = { STRATA_REGISTRY_AUTH_FILE: file };
  const b = resolveCredentials('reg.example.org', { env, home });
  assert.is(b?.kind === 'basic' && `${b.username}:${b.password}`, 'bob:pass with spaces');
  assert.is(resolveCredentials('127.0.0.1:5000', { env, home })?.kind, 'bearer');
  assert.is(resolveCredentials('127.0.0.1:5001', { env, home }), null);
  const both = resolveCredentials('reg.example.org', { env: { ...env, STRATA_REGISTRY_AUTH: 'reg.example.org=env:pw' }, home });
  assert.is(both?.kind === 'basic' && both.username, 'env');
  assert.throws(() => resolveCredentials('x', { env: { STRATA_REGISTRY_AUTH_FILE: join(home, 'none') }, home }),
    (e: unknown) => isStrataError(e, ERR.REGISTRY_CONFIG) && /STRATA_REGISTRY_AUTH_FILE/.test((e as Error).message));
});

creds('a malformed or unscoped STRATA_REGISTRY_AUTH is ERR_REGISTRY_CONFIG without echoing it', () => {
  for (const v of ['no-colon-secret', ':nouser-secret', 'bearer:']) {
    try {
      parseAuthValue(v);
      assert.unreachable(v);
    } catch (e) {
      assert.ok(isStrataError(e, ERR.REGISTRY_CONFIG));
      assert.not.ok((e as Error).message.includes('secret'));
      assert.match((e as { hint?: string }).hint ?? '', /HOST=user:password or HOST=bearer:TOKEN/);
    }
  }
  // The old, unscoped form would go to any registry that asks: refused, for every host.
  for (const v of ['alice:secret', 'bearer:secret-token', 'h:1=bob:pw alice:secret', 'bad host=u:secret']) {
    try {
      resolveCredentials('h:1', { env: { STRATA_REGISTRY_AUTH: v }, home });
      assert.unreachable(v);
    } catch (e) {
      assert.ok(isStrataError(e, ERR.REGISTRY_CONFIG), String(e));
      assert.match((e as Error).message, /names no registry host/);
      assert.not.ok((e as Error).message.includes('secret'));
      assert.match((e as { hint?: string }).hint ?? '', /HOST=user:password/);
    }
  }
});

creds('~/.docker/config.json auths: base64 auth, scheme/path in keys, Docker Hub aliases, DOCKER_CONFIG', () => {
  mkdirSync(join(home, '.docker'));
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  writeFileSync(join(home, '.docker', 'config.json'), JSON.stringify({
    auths: {
      '127.0.0.1:5000': { auth: b64('local:pw1') },
      'https://reg.example.org/v1/': { auth: b64('remote:pw2') },
      'https://index.docker.io/v1/': { auth: b64('hub:pw3') },
      'plain.example.org': { username: 'u4', password: 'pw4' },
    },
  }));
  const pw = (host: string) => {
    const c = resolveCredentials(host, { env: {}, home });
    return c?.kind === 'basic' ? `${c.username}:${c.password}` : c;
  };
  assert.is(pw('127.0.0.1:5000'), 'local:pw1');
  assert.is(pw('reg.example.org'), 'remote:pw2');
  assert.is(pw('registry-1.docker.io'), 'hub:pw3');
  assert.is(pw('plain.example.org'), 'u4:pw4');
  assert.is(pw('127.0.0.1:5001'), null);
  // The variable wins over the file.
  const c = resolveCredentials('127.0.0.1:5000', { env: { STRATA_REGISTRY_AUTH: '127.0.0.1:5000=env:pw' }, home });
  assert.is(c?.kind === 'basic' && c.username, 'env');
  // DOCKER_CONFIG moves the file.
  const other = join(home, 'elsewhere');
  mkdirSync(other);
  writeFileSync(join(other, 'config.json'), JSON.stringify({ auths: { 'h:1': { auth: b64('dc:pw5') } } }));
  const d = resolveCredentials('h:1', { env: { DOCKER_CONFIG: other }, home });
  assert.is(d?.kind === 'basic' && d.password, 'pw5');
  // No file: anonymous. A broken file: ERR_REGISTRY_CONFIG naming the file.
  assert.is(resolveCredentials('h:1', { env: {}, home: join(home, 'none') }), null);
  writeFileSync(join(other, 'config.json'), '{ not json');
  assert.throws(() => resolveCredentials('h:1', { env: { DOCKER_CONFIG: other }, home }),
    (e: unknown) => isStrataError(e, ERR.REGISTRY_CONFIG) && (e as Error).message.includes('config.json'));
});

creds('secrets do not show in JSON or inspect output', () => {
  for (const c of [basicCredentials('bob', 'hunter2-secret'), bearerCredentials('tok-secret')]) {
    assert.not.ok(JSON.stringify(c).includes('secret'));
    assert.not.ok(inspect(c, { showHidden: false }).includes('secret'));
    assert.not.ok(inspect({ nested: c }).includes('secret'));
  }
});

creds.run();

// ---- Basic auth (htpasswd) -------------------------------------------------------------------

const basic = suite('registry basic auth');
let reg: RegistryServer;
basic.before.each(async () => { reg = await startRegistry({ auth: 'htpasswd' }); });
basic.after.each(async () => { await reg.stop(); });

basic('right credentials: push, pull, tags, manifests', async () => {
  const c = new RegistryClient({ base: reg.url, repo: 'sec/app' }, opts(basicCredentials(reg.username!, reg.password!)));
  await exercise(c);
  c.close();
});

basic('wrong password, no credentials: one-line ERR_AUTH that says what to set', async () => {
  const wrong = `${reg.password}-wrong-secret`;
  const c = new RegistryClient({ base: reg.url, repo: 'sec/app' }, opts(basicCredentials(reg.username!, wrong)));
  await authFails(c.hasBlob(sha(Buffer.from('a'))), wrong, /refused the credentials for sec\/app/);
  const data = randomBytes(100);
  await authFails(c.putBlob(sha(data), data.length, once(data)), wrong, /refused the credentials/);
  const anon = new RegistryClient({ base: reg.url, repo: 'sec/app' }, opts(null));
  await authFails(anon.listTags(), undefined, /requires credentials for sec\/app/);
  c.close();
  anon.close();
});

basic('credentials found through DOCKER_CONFIG when none are given', async () => {
  const dir = tempDir('strata-dockercfg-');
  const saved = { DOCKER_CONFIG: process.env.DOCKER_CONFIG, STRATA_REGISTRY_AUTH: process.env.STRATA_REGISTRY_AUTH };
  try {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({
      auths: { [`http://${reg.host}`]: { auth: Buffer.from(`${reg.username}:${reg.password}`).toString('base64') } },
    }));
    process.env.DOCKER_CONFIG = dir;
    delete process.env.STRATA_REGISTRY_AUTH;
    const c = new RegistryClient({ base: reg.url, repo: 'sec/app' }, { retries: 2, retryDelayMs: 10 });
    assert.equal(await c.listTags(), []);
    c.close();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    removeDir(dir);
  }
});

const noBasic = missing({ tools: ['docker-registry', 'htpasswd'] });
if (noBasic) skipSuite('registry basic auth', noBasic);
else basic.run();

// ---- Bearer token flow -----------------------------------------------------------------------

const bearer = suite('registry bearer token auth');
bearer.before.each(async () => { reg = await startRegistry({ auth: 'token' }); });
bearer.after.each(async () => { await reg.stop(); });

bearer('Basic credentials are exchanged for tokens, cached per scope', async () => {
  const c = new RegistryClient({ base: reg.url, repo: 'sec/tok' }, opts(basicCredentials(reg.username!, reg.password!)));
  await exercise(c);
  await exercise(new RegistryClient({ base: reg.url, repo: 'sec/tok2' }, opts(basicCredentials(reg.username!, reg.password!))));
  // Each client needs at most a pull token and a pull+push token.
  assert.ok(reg.tokenRequests() >= 2 && reg.tokenRequests() <= 4, `token requests: ${reg.tokenRequests()}`);
  c.close();
});

bearer('wrong password and anonymous are ERR_AUTH; a ready-made token works, a bogus one does not', async () => {
  const wrong = 'not-the-password-secret';
  const c = new RegistryClient({ base: reg.url, repo: 'sec/tok' }, opts(basicCredentials(reg.username!, wrong)));
  await authFails(c.listTags(), wrong, /token service for .* refused the credentials for sec\/tok/);
  const anon = new RegistryClient({ base: reg.url, repo: 'sec/tok' }, opts(null));
  await authFails(anon.listTags(), undefined, /requires credentials for sec\/tok/);

  const challenge = (await fetch(`${reg.url}/v2/`)).headers.get('www-authenticate') ?? '';
  const realm = /realm="([^"]+)"/.exec(challenge)![1];
  const res = await fetch(`${realm}?service=strata-test&scope=repository:sec/tok:pull,push`, {
    headers: { authorization: `Basic ${Buffer.from(`${reg.username}:${reg.password}`).toString('base64')}` },
  });
  const { token } = (await res.json()) as { token: string };
  const ready = new RegistryClient({ base: reg.url, repo: 'sec/tok' }, opts(bearerCredentials(token)));
  await exercise(ready);
  const bogus = 'bogus-token-secret';
  const bad = new RegistryClient({ base: reg.url, repo: 'sec/tok' }, opts(bearerCredentials(bogus)));
  await authFails(bad.listTags(), bogus, /refused the token/);
  for (const x of [c, anon, ready, bad]) x.close();
});

const noBearer = missing({ tools: ['docker-registry', 'openssl'] });
if (noBearer) skipSuite('registry bearer token auth', noBearer);
else bearer.run();

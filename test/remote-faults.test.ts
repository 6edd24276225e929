/**
 * Issue 6, items 4 and 6: store push/pull when things go wrong, against the real docker-registry.
 *   - the registry SIGKILLed and restarted during a push and during a pull of a module with a
 *     30 MB layer: both complete on retry, the bytes are right, and the pulling store never
 *     lists the module before its blobs are all there;
 *   - a pull cut off for good leaves no partial module and no stray blob;
 *   - a tampered blob in the registry's storage is refused at pull, the store unchanged;
 *   - wrong credentials: one line, exit 1, the password never printed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STORE_ERR as ERR, isStrataError } from '../store/errors.js';
import { RegistryClient, type RetryInfo } from '../store/remote/client.js';
import { basicCredentials } from '../store/remote/credentials.js';
import { pull, push, type TransferHooks } from '../store/remote/remotes.js';
import { LocalStore } from '../store/local-store.js';
import { missing, skipSuite } from './helpers/probe.js';
import { startFaultProxy, startRegistry, type RegistryServer } from './helpers/registry-server.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobListing, cidHex, fileListing } from './store-harness.js';

interface Ctx {
  dir: string;
  reg: RegistryServer;
  stores: LocalStore[];
}

const BIG = 30 << 20;
const REPO = 'faults/strata';
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** 30 MB of seeded pseudo-random bytes (AES-CTR keystream of a fixed key): the same every run. */
function seededBytes(n: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

const test = suite<Ctx>('remote: faults, tampering, credentials');
test.before.each(async (ctx) => {
  ctx.dir = tempDir('strata-remote-faults-');
  ctx.reg = await startRegistry();
  ctx.stores = [];
});
test.after.each(async (ctx) => {
  for (const s of ctx.stores) await s.close();
  await ctx.reg.stop();
  removeDir(ctx.dir);
});

async function openStore(ctx: Ctx, name: string): Promise<LocalStore> {
  const s = await LocalStore.open(join(ctx.dir, name));
  ctx.stores.push(s);
  return s;
}

/** LocalStore A with big/1: one 30 MB file plus a small one. */
async function bigModule(ctx: Ctx): Promise<{ A: LocalStore; layer: string; data: Buffer }> {
  const tree = join(ctx.dir, 'big-tree');
  mkdirSync(join(tree, 'data'), { recursive: true });
  const data = seededBytes(BIG, 'strata remote faults');
  writeFileSync(join(tree, 'data/blob.bin'), data);
  writeFileSync(join(tree, 'data/README'), 'thirty megabytes\n');
  const A = await openStore(ctx, 'A');
  const r = await A.importModule('big/1', tree);
  return { A, layer: r.layer, data };
}

/** Short waits so a restart is retried within a second or two (default tries). */
function hooks(retries: RetryInfo[], onProgress?: (done: number) => void): TransferHooks {
  return { client: { auth: null, retryDelayMs: 100, maxRetryDelayMs: 1000 }, onRetry: (i) => retries.push(i), ...inLayer(onProgress) };
}

/**
 * Progress callbacks from the module's blob phase only (onModule has fired): a pull reads the
 * small record first, and a fault injected then would not hit the layer download.
 */
function inLayer(onProgress?: (done: number) => void): Pick<TransferHooks, 'onModule' | 'onProgress'> {
  let started = false;
  return {
    onModule: () => { started = true; },
    onProgress: (done) => { if (started) onProgress?.(done); },
  };
}

test('registry killed during a push of a 30 MB layer: the push completes, the registry holds the right bytes', async (ctx) => {
  const { A, layer } = await bigModule(ctx);
  const retries: RetryInfo[] = [];
  let restarting: Promise<void> | undefined;
  const r = await push(A, `${ctx.reg.host}/${REPO}`, ['big/1'], hooks(retries, (done) => {
    // Past the first 16 MiB chunk: the second PATCH is on the wire.
    if (!restarting && done > 20 << 20) restarting = ctx.reg.restart();
  }));
  await restarting;
  assert.ok(restarting, 'the registry was restarted');
  assert.ok(retries.some((i) => i.what.startsWith('upload')), `the upload was retried: ${JSON.stringify(retries)}`);
  assert.equal(r.map((p) => [p.fullName, p.status, p.uploaded.length]), [['big/1', 'pushed', 3]]);
  // The registry holds the compressed layer, whole, naming the layer CID as its diff id.
  const c = new RegistryClient({ base: ctx.reg.url, repo: REPO }, { auth: null });
  const m = JSON.parse((await c.getManifest('big_1')).bytes.toString()) as { layers: Array<{ digest: string; annotations: Record<string, string> }> };
  c.close();
  assert.is(m.layers[0]!.annotations['vnd.strata.layer.diff-id'], `sha256:${cidHex(layer)}`);
  assert.is(`sha256:${sha(readFileSync(ctx.reg.blobDataPath(m.layers[0]!.digest)))}`, m.layers[0]!.digest);

  const B = await openStore(ctx, 'B');
  await pull(B, `${ctx.reg.host}/${REPO}`, [], hooks([]));
  assert.equal((await B.list()).map((m) => m.fullName), ['big/1']);
  assert.equal((await B.verify()).problems, []);
});

test('registry killed during a pull of a 30 MB layer: the pull completes; B never lists a half module', async (ctx) => {
  const { A, layer, data } = await bigModule(ctx);
  await push(A, `${ctx.reg.host}/${REPO}`, ['big/1'], hooks([]));
  const B = await openStore(ctx, 'B');
  const retries: RetryInfo[] = [];
  let restarting: Promise<void> | undefined;
  let listedMeanwhile: Promise<string[]> | undefined;
  const r = await pull(B, `${ctx.reg.host}/${REPO}`, ['big/1'], hooks(retries, (done) => {
    if (!restarting && done > 0 && done < BIG) {
      restarting = ctx.reg.restart();
      listedMeanwhile = B.list().then((l) => l.map((m) => m.fullName));
    }
  }));
  await restarting;
  assert.ok(restarting, 'the registry was restarted mid-download');
  assert.equal(await listedMeanwhile, [], 'B lists nothing while the layer is in flight');
  assert.ok(retries.some((i) => i.what.startsWith('download')), `the download was retried: ${JSON.stringify(retries)}`);
  assert.equal(r.map((p) => [p.fullName, p.status]), [['big/1', 'pulled']]);
  assert.equal((await B.verify()).problems, []);
  // The file came through whole.
  const mod = await B.get('big/1');
  assert.is(mod.record.layer, layer);
  let found = false;
  for await (const { entry, body } of B.readLayer(mod)) {
    const parts: Buffer[] = [];
    for await (const b of body) parts.push(b);
    if (entry.path === 'data/blob.bin') {
      found = true;
      assert.ok(Buffer.concat(parts).equals(data), 'data/blob.bin is byte for byte the imported file');
    }
  }
  assert.ok(found);
});

test('a pull cut off for good leaves no partial module, no blob and no temp file; a later pull completes', async (ctx) => {
  const { A } = await bigModule(ctx);
  await push(A, `${ctx.reg.host}/${REPO}`, ['big/1'], hooks([]));
  const proxy = await startFaultProxy(ctx.reg.url, () => 'pass');
  const B = await openStore(ctx, 'B');
  let stopping: Promise<void> | undefined;
  try {
    await pull(B, `${proxy.url.replace('http://', '')}/${REPO}`, ['big/1'], {
      client: { auth: null, retries: 3, retryDelayMs: 20 },
      ...inLayer((done) => {
        if (!stopping && done > 0 && done < BIG) stopping = proxy.stop();
      }),
    });
    assert.unreachable('the pull succeeded with the registry gone');
  } catch (e) {
    assert.ok(isStrataError(e, ERR.REGISTRY), String(e));
  }
  await stopping;
  assert.ok(stopping, 'the connection was cut mid-download');
  assert.equal(await B.list(), []);
  assert.equal((await B.verify()).problems, []);
  assert.equal(blobListing(B.root), [], 'no blob of the half-pulled module');
  assert.equal(readdirSync(join(B.root, 'tmp')).filter((n) => !n.startsWith('pins-')), [], 'no temp file left');

  const r = await pull(B, `${ctx.reg.host}/${REPO}`, ['big/1'], hooks([]));
  assert.equal(r.map((p) => p.status), ['pulled']);
  assert.equal((await B.verify()).problems, []);
});

test('a tampered blob in the registry is refused at pull; the store is unchanged', async (ctx) => {
  const tree = join(ctx.dir, 'tree');
  mkdirSync(tree);
  writeFileSync(join(tree, 'file'), 'the real content\n');
  const A = join(ctx.dir, 'A');
  const imp = strataJson(['store', 'import', 'small/1', tree], { store: A });
  strataJson(['store', 'push', `${ctx.reg.host}/${REPO}`, '--compression', 'none'], { store: A });
  // Flip bytes of the layer tar in the registry's storage, keeping its size.
  const path = ctx.reg.blobDataPath(`sha256:${cidHex(imp.layer)}`);
  const bytes = readFileSync(path);
  const at = bytes.indexOf('the real content');
  assert.ok(at > 0);
  bytes.write('the fake content', at);
  writeFileSync(path, bytes);

  const B = join(ctx.dir, 'B');
  strataJson(['store', 'gc'], { store: B }); // creates the store
  const before = fileListing(B).filter((f) => !f.startsWith('index/'));
  const line = assertOneLineError(strata(['store', 'pull', `${ctx.reg.host}/${REPO}`, 'small/1'], { store: B }), 'pull of a tampered layer', /wrong content/);
  assert.match(line, new RegExp(`sha256:${cidHex(imp.layer)}`));
  assert.equal(strataJson(['store', 'ls'], { store: B }), []);
  assert.equal(fileListing(B).filter((f) => !f.startsWith('index/')), before);
  assert.equal(blobListing(B), []);
});

test('wrong credentials: one line, exit 1, the password never printed; right ones work', async (ctx) => {
  const reg = await startRegistry({ auth: 'htpasswd' });
  try {
    const tree = join(ctx.dir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'file'), 'x\n');
    const A = join(ctx.dir, 'A');
    strataJson(['store', 'import', 'small/1', tree], { store: A });
    const dockerConfig = join(ctx.dir, 'docker');
    mkdirSync(dockerConfig);
    const wrong = 'Wr0ng-pass-5e1f9a';
    const env = { STRATA_REGISTRY_AUTH: `${reg.host}=${reg.username}:${wrong}`, DOCKER_CONFIG: dockerConfig };
    const target = `${reg.host}/${REPO}`;
    for (const args of [['store', 'push', target], ['store', 'pull', target, 'small/1'], ['-v', 'store', 'push', target]]) {
      const r = strata(args, { store: A, env });
      const all = r.stdout.toString() + r.stderr;
      assert.not.ok(all.includes(wrong), `the password is printed by ${args.join(' ')}: ${all}`);
      assert.not.ok(all.includes(Buffer.from(`${reg.username}:${wrong}`).toString('base64')), 'no encoded password either');
      if (args[0] !== '-v') assertOneLineError(r, args.join(' '), /refused the credentials.*STRATA_REGISTRY_AUTH/);
      else assert.is(r.code, 1);
    }
    // Anonymous: a clear "requires credentials".
    assertOneLineError(strata(['store', 'push', target], { store: A, env: { STRATA_REGISTRY_AUTH: '', DOCKER_CONFIG: dockerConfig } }),
      'anonymous push', /requires credentials/);
    const ok = strata(['--json', 'store', 'push', target], { store: A, env: { STRATA_REGISTRY_AUTH: `${reg.host}=${reg.username}:${reg.password}`, DOCKER_CONFIG: dockerConfig } });
    assert.is(ok.code, 0, ok.stderr);
    assert.not.ok((ok.stdout.toString() + ok.stderr).includes(reg.password!));
    // Nothing of the credentials is stored.
    const stored = fileListing(A).map((f) => f);
    for (const f of stored) {
      let text: Buffer;
      try {
        text = readFileSync(join(A, f));
      } catch {
        continue;
      }
      assert.not.ok(text.includes(reg.password!) || text.includes(wrong), `credentials written to ${f}`);
    }
  } finally {
    await reg.stop();
  }
});

test('Bearer token registry: push and pull with credentials; tokens are reused across a transfer', async (ctx) => {
  const reg = await startRegistry({ auth: 'token' });
  try {
    const tree = join(ctx.dir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'file'), 'token\n');
    const A = await openStore(ctx, 'A');
    await A.importModule('tok/1', tree);
    const auth = basicCredentials(reg.username!, reg.password!);
    const client = { auth, retryDelayMs: 50 };
    const pushed = await push(A, `${reg.host}/${REPO}`, [], { client });
    assert.equal(pushed.map((p) => p.status), ['pushed']);
    const B = await openStore(ctx, 'B');
    const pulled = await pull(B, `${reg.host}/${REPO}`, [], { client });
    assert.equal(pulled.map((p) => [p.fullName, p.status]), [['tok/1', 'pulled']]);
    // Push: a pull token (first HEAD), then a pull,push one (first upload); pull: one. Not one per request.
    assert.ok(reg.tokenRequests() >= 1 && reg.tokenRequests() <= 3, `token requests: ${reg.tokenRequests()}`);
    try {
      await pull(await openStore(ctx, 'C'), `${reg.host}/${REPO}`, [], { client: { auth: null } });
      assert.unreachable('anonymous pull from a token registry succeeded');
    } catch (e) {
      assert.ok(isStrataError(e, ERR.AUTH), String(e));
    }
  } finally {
    await reg.stop();
  }
});

const why = missing({ tools: ['docker-registry', 'htpasswd', 'openssl'] });
if (why) skipSuite('remote: faults, tampering, credentials', why);
else test.run();

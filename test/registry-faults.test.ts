/**
 * RegistryClient when the registry goes away: the real docker-registry is SIGKILLed and
 * started again (same port, same storage) in the middle of transfers.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { RegistryClient, type RetryInfo } from '../store/remote/client.js';
import { STORE_ERR as ERR, isStrataError } from '../store/errors.js';
import { missing, skipSuite } from './helpers/probe.js';
import { startFaultProxy, startRegistry, type Fault, type RegistryServer } from './helpers/registry-server.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const BIG = 30 << 20;
const CHUNK = 4 << 20;

const test = suite('registry faults');
let reg: RegistryServer;
let retries: RetryInfo[];

const clientFor = (extra: { onProgress?: (n: number) => void } = {}) =>
  new RegistryClient({ base: reg.url, repo: 'faults/test' }, {
    auth: null, chunkSize: CHUNK, retries: 8, retryDelayMs: 50, maxRetryDelayMs: 1000,
    onRetry: (i) => retries.push(i), ...extra,
  });

test.before.each(async () => {
  reg = await startRegistry();
  retries = [];
});
test.after.each(async () => {
  await reg.stop();
});

test('registry killed mid-upload of 30 MB: putBlob retries and completes', async () => {
  const data = randomBytes(BIG);
  const d = sha(data);
  let sent = 0;
  let restarting: Promise<void> | undefined;
  const opened: number[] = [];
  let closed = 0;
  const c = clientFor({
    onProgress: (n) => {
      sent += n;
      if (!restarting && sent > 10 << 20) restarting = reg.restart();
    },
  });
  const result = await c.putBlob(d, data.length, (offset) => {
    opened.push(offset);
    return (async function* () {
      try {
        for (let i = offset; i < data.length; i += 256 << 10) yield data.subarray(i, i + (256 << 10));
      } finally {
        closed++;
      }
    })();
  });
  await restarting;
  assert.is(result, 'uploaded');
  assert.ok(restarting, 'the registry was restarted');
  assert.ok(retries.length >= 1, 'at least one retry happened');
  assert.ok(opened.length >= 2, `source reopened after the failure (offsets ${opened.join(',')})`);
  assert.is(closed, opened.length, 'every iterable the client opened was ended');
  assert.is(sha(readFileSync(reg.blobDataPath(d))), d, 'registry storage holds the right bytes');
  c.close();
});

test('registry killed between chunks: the upload resumes at the registry\'s offset, not from 0', async () => {
  const data = randomBytes(3 * CHUNK + 1234);
  const d = sha(data);
  const opened: number[] = [];
  let killed = false;
  const c = clientFor();
  const result = await c.putBlob(d, data.length, (offset) => {
    opened.push(offset);
    return (async function* () {
      for (let i = offset; i < data.length; i += 64 << 10) {
        // The PATCH of the second chunk is on the wire (headers sent, no byte yet): kill now.
        if (i === CHUNK && !killed) {
          killed = true;
          await reg.restart();
        }
        yield data.subarray(i, i + (64 << 10));
      }
    })();
  });
  assert.is(result, 'uploaded');
  assert.ok(killed);
  assert.equal(opened, [0, CHUNK], `resumed from the first chunk's end (offsets ${opened.join(',')})`);
  assert.is(sha(readFileSync(reg.blobDataPath(d))), d);
  c.close();
});

test('registry killed mid-download of 30 MB: getBlob resumes and the bytes are right', async () => {
  const data = randomBytes(BIG);
  const d = sha(data);
  const c = clientFor();
  await c.putBlob(d, data.length, (o) => (async function* () { yield data.subarray(o); })());
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of c.getBlob(d, data.length)) {
    if (n === 0) await reg.restart();
    parts.push(b);
    n += b.length;
  }
  assert.is(n, data.length);
  assert.ok(Buffer.concat(parts).equals(data));
  assert.ok(retries.some((r) => r.what.startsWith('download')), `download was retried: ${JSON.stringify(retries)}`);
  c.close();
});

test('a registry that stays down gives one clear ERR_REGISTRY after the configured tries', async () => {
  const c = new RegistryClient({ base: reg.url, repo: 'faults/test' }, {
    auth: null, retries: 3, retryDelayMs: 10, onRetry: (i) => retries.push(i),
  });
  await reg.stop();
  try {
    await c.hasBlob(sha(Buffer.from('x')));
    assert.unreachable('hasBlob succeeded with the registry down');
  } catch (e) {
    assert.ok(isStrataError(e, ERR.REGISTRY), String(e));
    assert.match((e as Error).message, /failed after 3 tries \(ECONNREFUSED\)/);
    assert.not.match((e as Error).message, /\n/);
  }
  assert.is(retries.length, 2);
  assert.equal(retries.map((r) => r.attempt), [1, 2]);
  c.close();
});

test('429 and 503 (with Retry-After), 500 inside an upload and a reset are retried; other 4xx are not', async () => {
  const data = randomBytes(2 * CHUNK + 99);
  const d = sha(data);
  const seen = new Map<string, number>();
  const plan = (method: string, path: string): Fault => {
    const kind = path.includes('/blobs/uploads/') ? `${method} upload` : `${method} ${path.split('/')[4]}`;
    const n = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, n);
    if (kind === 'HEAD blobs' && n <= 2) return { status: 503, headers: { 'retry-after': '0' } };
    if (kind === 'POST upload' && n === 1) return { status: 429 };
    if (kind === 'PATCH upload' && n === 2) return { status: 502 };
    if (kind === 'PUT upload' && n === 1) return { status: 500 };
    if (kind === 'PUT manifests' && n === 1) return 'reset';
    if (kind === 'GET manifests' && n === 1) return { status: 504 };
    return 'pass';
  };
  const proxy = await startFaultProxy(reg.url, plan);
  try {
    const c = new RegistryClient({ base: proxy.url, repo: 'faults/test' }, {
      auth: null, chunkSize: CHUNK, retries: 4, retryDelayMs: 10, onRetry: (i) => retries.push(i),
    });
    assert.is(await c.putBlob(d, data.length, (o) => (async function* () { yield data.subarray(o); })()), 'uploaded');
    assert.is(sha(readFileSync(reg.blobDataPath(d))), d);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.strata.module.config.v1+json', digest: d, size: data.length }, layers: [] }));
    const md = await c.putManifest('t', 'application/vnd.oci.image.manifest.v1+json', manifest);
    assert.is((await c.getManifest('t')).digest, md);
    const reasons = retries.map((r) => r.reason);
    for (const want of ['HTTP 503', 'HTTP 429', 'HTTP 502', 'HTTP 500', 'HTTP 504']) assert.ok(reasons.includes(want), `${want} in ${reasons}`);
    assert.ok(reasons.some((r) => /dropped|ECONNRESET/.test(r)), `a reset in ${reasons}`);
    c.close();

    // A 4xx that is not 429 is final, not retried.
    retries = [];
    const c2 = new RegistryClient({ base: proxy.url, repo: 'faults/test' }, {
      auth: null, retries: 4, retryDelayMs: 10, onRetry: (i) => retries.push(i),
    });
    try {
      await c2.getManifest(md.replace(/.$/, (x) => (x === '0' ? '1' : '0')));
      assert.unreachable('found a manifest that does not exist');
    } catch (e) {
      assert.ok(isStrataError(e, ERR.NOT_FOUND), String(e));
    }
    assert.is(retries.length, 0);
    c2.close();
  } finally {
    await proxy.stop();
  }
});

test('a registry that keeps answering 503 gives ERR_REGISTRY naming the status', async () => {
  const proxy = await startFaultProxy(reg.url, () => ({ status: 503 }));
  try {
    const c = new RegistryClient({ base: proxy.url, repo: 'faults/test' }, { auth: null, retries: 3, retryDelayMs: 10 });
    try {
      await c.listTags();
      assert.unreachable('listTags succeeded');
    } catch (e) {
      assert.ok(isStrataError(e, ERR.REGISTRY), String(e));
      assert.match((e as Error).message, /tag list failed after 3 tries \(HTTP 503\)/);
    }
    assert.is(proxy.log.length, 3);
    c.close();
  } finally {
    await proxy.stop();
  }
});

const why = missing({ tools: ['docker-registry'] });
if (why) skipSuite('registry faults', why);
else test.run();

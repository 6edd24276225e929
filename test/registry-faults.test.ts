/**
 * RegistryClient when the registry goes away: the real docker-registry is SIGKILLed and
 * started again (same port, same storage) in the middle of transfers.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { RegistryClient, type RetryInfo } from '../store/registry/client.js';
import { ERR, isStrataError } from '../store/errors.js';
import { startRegistry, type RegistryServer } from './helpers/registry-server.js';

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
  for await (const b of c.getBlob(d)) {
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
  const t0 = Date.now();
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
  assert.ok(Date.now() - t0 < 2000);
  c.close();
});

test.run();

/**
 * RegistryClient against a real CNCF Distribution 2.8 (`docker-registry`) on 127.0.0.1; the
 * pushed manifest is read back with skopeo, and blobs are checked against the registry's own
 * storage files.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { RegistryClient, MEDIA_TYPES, parseRepositoryRef } from '../store/remote/client.js';
import { STORE_ERR as ERR, isStrataError } from '../store/errors.js';
import { missing, skipSuite } from './helpers/probe.js';
import { startRegistry, type RegistryServer } from './helpers/registry-server.js';
import { mustRun } from './helpers/tmp.js';

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const source = (data: Buffer, opened?: number[]) => (offset: number) => {
  opened?.push(offset);
  return (async function* () {
    for (let i = offset; i < data.length; i += 65536) yield data.subarray(i, Math.min(data.length, i + 65536));
  })();
};
async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of it) parts.push(b);
  return Buffer.concat(parts);
}
async function rejects(p: Promise<unknown>, code: string): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(isStrataError(e, code), `expected ${code}, got ${String(e)}`);
    return e as Error;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

const CONFIG_TYPE = 'application/vnd.strata.module.config.v1+json';

/** Pushes config + one layer + a sidecar blob and an OCI image manifest shaped like strata's. */
async function pushModule(c: RegistryClient, tag: string) {
  const layer = randomBytes(200_000);
  const sidecar = Buffer.from(JSON.stringify({ tag, paths: { 'bin/x': { xattrs: {} } } }));
  const config = Buffer.from(JSON.stringify({ fullName: tag, layer: sha(layer) }));
  for (const b of [layer, sidecar, config]) assert.is(await c.putBlob(sha(b), b.length, source(b)), 'uploaded');
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.OCI_MANIFEST,
    artifactType: CONFIG_TYPE,
    config: { mediaType: CONFIG_TYPE, digest: sha(config), size: config.length },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length },
      { mediaType: 'application/vnd.strata.layer.manifest.v1+json', digest: sha(sidecar), size: sidecar.length },
    ],
    annotations: { 'org.opencontainers.image.title': 'mpi/openmpi-2' },
  }));
  const digest = await c.putManifest(tag, MEDIA_TYPES.OCI_MANIFEST, manifest);
  return { layer, sidecar, config, manifest, digest };
}

const pure = suite('registry client: names and URLs');

pure('parseRepositoryRef: loopback is http, anything else https', () => {
  assert.equal(parseRepositoryRef('127.0.0.1:5000/hpc/strata'), { base: 'http://127.0.0.1:5000', repo: 'hpc/strata' });
  assert.equal(parseRepositoryRef('localhost/x'), { base: 'http://localhost', repo: 'x' });
  assert.equal(parseRepositoryRef('registry.example.org/site/stack'), { base: 'https://registry.example.org', repo: 'site/stack' });
  assert.equal(parseRepositoryRef('http://reg.lan:5000/a'), { base: 'http://reg.lan:5000', repo: 'a' });
  assert.throws(() => parseRepositoryRef('justahost'), (e: unknown) => isStrataError(e, ERR.INVALID_ARGUMENT));
});

pure('bad arguments are ERR_INVALID_ARGUMENT before any request', async () => {
  // Nothing listens on port 1: any request would fail with ECONNREFUSED instead.
  const client = new RegistryClient({ base: 'http://127.0.0.1:1', repo: 'hpc/strata' }, { auth: null, retries: 1 });
  await rejects(client.hasBlob('sha256:xyz'), ERR.INVALID_ARGUMENT);
  await rejects(client.getManifest('bad tag'), ERR.INVALID_ARGUMENT);
  await rejects(client.putManifest(sha(Buffer.from('other')), MEDIA_TYPES.OCI_MANIFEST, Buffer.from('{}')), ERR.INVALID_ARGUMENT);
  await rejects(client.putManifest('-x', MEDIA_TYPES.OCI_MANIFEST, Buffer.from('{}')), ERR.INVALID_ARGUMENT);
  assert.throws(() => client.getBlob(sha(Buffer.from('x')), -1), (e: unknown) => isStrataError(e, ERR.INVALID_ARGUMENT));
  assert.throws(() => new RegistryClient({ base: 'http://127.0.0.1:1', repo: 'Upper/Case' }, { auth: null }),
    (e: unknown) => isStrataError(e, ERR.INVALID_ARGUMENT));
  assert.throws(() => new RegistryClient({ base: 'http://u:secret@127.0.0.1:1', repo: 'a' }, { auth: null }),
    (e: unknown) => isStrataError(e, ERR.INVALID_ARGUMENT) && !String((e as Error).message).includes('secret'));
  client.close();
});

pure.run();

// The rest needs the real registry (and skopeo to read back what was pushed).
const test = suite('registry client');
let reg: RegistryServer;
let client: RegistryClient;

test.before.each(async () => {
  reg = await startRegistry();
  client = new RegistryClient({ base: reg.url, repo: 'hpc/strata' }, { auth: null, chunkSize: 1 << 20, retries: 3, retryDelayMs: 20 });
});
test.after.each(async () => {
  client.close();
  await reg.stop();
});

test('blob round trip: small (one PUT), chunked (PATCH) and empty; registry stores the same bytes', async () => {
  for (const data of [randomBytes(1000), randomBytes((5 << 20) + 17), Buffer.alloc(0)]) {
    const d = sha(data);
    assert.is(await client.hasBlob(d), false);
    let progressed = 0;
    const c = new RegistryClient({ base: reg.url, repo: 'hpc/strata' }, {
      auth: null, chunkSize: 1 << 20, onProgress: (n) => { progressed += n; },
    });
    assert.is(await c.putBlob(d, data.length, source(data)), 'uploaded');
    assert.is(progressed, data.length);
    assert.is(await client.hasBlob(d), true);
    assert.ok(readFileSync(reg.blobDataPath(d)).equals(data), 'registry storage holds the exact bytes');
    assert.ok((await collect(client.getBlob(d, data.length))).equals(data));
    c.close();
  }
});

test('putBlob HEADs first and never reads the source of a blob the registry has', async () => {
  const data = randomBytes(3000);
  await client.putBlob(sha(data), data.length, source(data));
  const opened: number[] = [];
  assert.is(await client.putBlob(sha(data), data.length, source(data, opened)), 'exists');
  assert.equal(opened, []);
});

test('putBlob refuses a source that does not match its digest or size, and stores nothing', async () => {
  const data = randomBytes(5000);
  const other = randomBytes(5000);
  const e = await rejects(client.putBlob(sha(data), other.length, source(other)), ERR.DIGEST_MISMATCH);
  assert.not.match(e.message, /\n/);
  assert.is(await client.hasBlob(sha(data)), false);
  await rejects(client.putBlob(sha(data), data.length + 10, source(data)), ERR.DIGEST_MISMATCH);
  await rejects(client.putBlob(sha(data), data.length - 10, source(data)), ERR.DIGEST_MISMATCH);
  assert.is(await client.hasBlob(sha(data)), false);
});

test('OCI manifest with strata config media type: put, get by tag and digest, tags list, skopeo sees it', async () => {
  const m = await pushModule(client, 'mpi_openmpi-2');
  assert.is(m.digest, sha(m.manifest));
  const byTag = await client.getManifest('mpi_openmpi-2');
  assert.is(byTag.mediaType, MEDIA_TYPES.OCI_MANIFEST);
  assert.is(byTag.digest, m.digest);
  assert.ok(byTag.bytes.equals(m.manifest));
  const byDigest = await client.getManifest(m.digest);
  assert.ok(byDigest.bytes.equals(m.manifest));
  assert.is(await client.putManifest('mpi_openmpi-2', MEDIA_TYPES.OCI_MANIFEST, m.manifest), m.digest, 'idempotent');
  await pushModule(client, 'gcc_12.2.0');
  assert.equal((await client.listTags()).sort(), ['gcc_12.2.0', 'mpi_openmpi-2']);

  const raw = mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/hpc/strata:mpi_openmpi-2`]).stdout;
  assert.ok(raw.equals(m.manifest), 'skopeo reads the exact manifest bytes');
  const viaSkopeo = JSON.parse(raw.toString()) as { config: { mediaType: string } };
  assert.is(viaSkopeo.config.mediaType, CONFIG_TYPE);
});

test('tags list of a repository never pushed to is empty; missing manifest and blob are ERR_NOT_FOUND', async () => {
  assert.equal(await client.listTags(), []);
  await rejects(client.getManifest('nope'), ERR.NOT_FOUND);
  await rejects(collect(client.getBlob(sha(Buffer.from('nothing')), 7)), ERR.NOT_FOUND);
});

test('a manifest naming a blob the registry lacks is refused with the registry error code', async () => {
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MEDIA_TYPES.OCI_MANIFEST,
    config: { mediaType: CONFIG_TYPE, digest: sha(Buffer.from('absent')), size: 6 }, layers: [],
  }));
  const e = await rejects(client.putManifest('broken', MEDIA_TYPES.OCI_MANIFEST, manifest), ERR.REGISTRY);
  assert.match(e.message, /MANIFEST_BLOB_UNKNOWN/);
});

test('a tampered blob in the registry storage is refused at the end of getBlob', async () => {
  const data = randomBytes(300_000);
  const d = sha(data);
  await client.putBlob(d, data.length, source(data));
  writeFileSync(reg.blobDataPath(d), randomBytes(data.length));
  const e = await rejects(collect(client.getBlob(d, data.length)), ERR.DIGEST_MISMATCH);
  assert.is(e.message, `registry sent wrong content for ${d}`);
});

test('a tampered manifest is refused by digest and by tag', async () => {
  const m = await pushModule(client, 'v1');
  const bad = Buffer.from(m.manifest.toString().replace('mpi/openmpi-2', 'mpi/openmpi-X'));
  assert.is(bad.length, m.manifest.length);
  writeFileSync(reg.blobDataPath(m.digest), bad);
  await rejects(client.getManifest(m.digest), ERR.DIGEST_MISMATCH);
  await rejects(client.getManifest('v1'), ERR.DIGEST_MISMATCH);
});

const why = missing({ tools: ['docker-registry', 'skopeo'] });
if (why) skipSuite('registry client', why);
else test.run();

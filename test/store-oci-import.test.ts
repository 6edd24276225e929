/**
 * Issue 6, item 1: `strata store import NAME oci:DIR[:TAG]` of an OCI image layout written by
 * umoci (four layers: whiteouts, an opaque directory done umoci's way, ACLs, xattrs,
 * security.capability, hard links, devices) gives a module whose sandbox equals
 * `umoci unpack` of the same image, xattrs and ACLs included; the image config's Env and
 * Labels land in the record. The same image re-compressed with zstd by skopeo, and written
 * as a docker archive by skopeo, import to the same layer CID. Root only (the fixture).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildOciLayout, makeStack, ociLayerBlobs, umociUnpack } from './fixtures/stack.js';
import { diffTrees } from './helpers/tree.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { missing, skipSuite, testIf } from './helpers/probe.js';

interface Ctx {
  dir: string;
  layout: string;
  store: string;
}

const NAME = 'store import oci:DIR (umoci layout)';
const test = suite<Ctx>(NAME);
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-oci-import-');
  ctx.store = join(ctx.dir, 'store');
  ctx.layout = buildOciLayout(makeStack(join(ctx.dir, 'stack')), join(ctx.dir, 'oci'), 'v1');
  mustRun('umoci', ['config', '--image', `${ctx.layout}:v1`, '--config.env', 'APP_HOME=/opt/app',
    '--config.label', 'org.example.site=hpc', '--tag', 'v1']);
});
test.after.each((ctx) => removeDir(ctx.dir));

test('sandbox of the imported image equals umoci unpack; Env and Labels in the record', ({ dir, layout, store }) => {
  const blobs = ociLayerBlobs(layout, 'v1');
  assert.is(blobs.length, 4, 'umoci wrote four layers');
  const imp = strataJson(['store', 'import', 'img/v1', `oci:${layout}:v1`], { store });
  assert.is(imp.status, 'imported');
  const rec = strataJson(['store', 'show', 'img/v1'], { store }).record;
  assert.ok(rec.env.some((e: { op: string; var: string; value: string }) => e.op === 'set' && e.var === 'APP_HOME' && e.value === '/opt/app'),
    `APP_HOME in ${JSON.stringify(rec.env)}`);
  assert.is(rec.labels?.['org.example.site'], 'hpc');

  const work = join(dir, 'work');
  mkdirSync(work);
  strataJson(['compose', 'add', 'img/v1'], { store, cwd: work });
  const sb = join(dir, 'sandbox');
  strataJson(['compose', 'sandbox', sb], { store, cwd: work });
  const rootfs = umociUnpack(layout, 'v1', join(dir, 'bundle'));
  assert.equal(diffTrees(sb, rootfs, { ignoreStrataPaths: true }), []);
});

testIf(test, { tools: ['skopeo'] }, 'zstd layers (skopeo) and a docker archive (skopeo) give the same layer CID', ({ dir, layout, store }) => {
  const gz = strataJson(['store', 'import', 'img/gz', `oci:${layout}:v1`], { store });
  const zst = join(dir, 'oci-zstd');
  mustRun('skopeo', ['copy', '--dest-compress-format', 'zstd', `oci:${layout}:v1`, `oci:${zst}:v1`]);
  assert.ok(ociLayerBlobs(zst, 'v1').every((b) => b.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd'), 'skopeo wrote zstd layers');
  const archive = join(dir, 'img.tar');
  mustRun('skopeo', ['copy', `oci:${layout}:v1`, `docker-archive:${archive}:img:v1`]);
  const z = strataJson(['store', 'import', 'img/zstd', `oci:${zst}`], { store });
  const d = strataJson(['store', 'import', 'img/docker', `docker-archive:${archive}`], { store });
  assert.is(z.layer, gz.layer);
  assert.is(d.layer, gz.layer);
  assert.is(z.manifest, gz.manifest);
  assert.is(d.manifest, gz.manifest);
});

test('a missing tag and a damaged blob are one-line errors', ({ layout, store }) => {
  assertOneLineError(strata(['store', 'import', 'img/x', `oci:${layout}:nope`], { store }), 'missing tag', /has no tag nope.*v1/);
  const [first] = ociLayerBlobs(layout, 'v1');
  mustRun('truncate', ['-s', '-1', first!.path]);
  assertOneLineError(strata(['store', 'import', 'img/y', `oci:${layout}:v1`], { store }), 'damaged layer', /does not match its digest|is \d+ bytes; its descriptor says/);
  assert.equal(strataJson(['store', 'ls'], { store }), []);
});

const why = missing({ tools: ['umoci'], root: true });
if (why) skipSuite(NAME, why);
else test.run();

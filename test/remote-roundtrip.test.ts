/**
 * Issue 6, items 2, 3 and 5: modules through a real OCI registry (Debian's docker-registry on
 * 127.0.0.1), driven through the CLI as a user would.
 *   - push from store A, pull into an empty store B, squash the same lock in both: same sha256;
 *     skopeo sees the pushed manifest and its config is the module record;
 *   - a second push sends nothing (only HEAD/GET reach the registry, seen through a proxy);
 *   - a fresh store with only a remote configured rebuilds the image from the lock alone;
 *   - a restricted module is refused to a remote not marked site-internal, allowed to one that is;
 *   - issue 13: layers go zstd (or gzip), the first uncompressed form is still read; default
 *     marks travel unless the pulling store has its own; push of everything skips what the
 *     remote may not receive.
 */
import { suite } from 'uvu';
import { ensureGroup } from './helpers/users.js';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeSmallTree } from './fixtures/small-tree.js';
import { missing, skipSuite } from './helpers/probe.js';
import { startFaultProxy, startRegistry, type RegistryServer } from './helpers/registry-server.js';
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';
import { assertOneLineError, strata, strataArgv, strataAsync, strataJson } from './helpers/cli.js';
import { cidHex } from './store-harness.js';

interface Ctx {
  dir: string;
  reg: RegistryServer;
}

const REPO = 'hpc/strata';
const fileSha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

const test = suite<Ctx>('remote: push, pull, remotes, fetch-missing');
test.before.each(async (ctx) => {
  ctx.dir = tempDir('strata-remote-');
  ctx.reg = await startRegistry();
});
test.after.each(async (ctx) => {
  await ctx.reg.stop();
  removeDir(ctx.dir);
});

/** Store A with base/1 (the small tree: ACLs, xattrs) and app/1.0 (requires base/1), and a lock of both. */
function storeWithStack(dir: string): { store: string; lock: string } {
  const store = join(dir, 'A');
  const base = join(dir, 'base-tree');
  makeSmallTree(base);
  const app = join(dir, 'app-tree');
  mkdirSync(join(app, 'opt/app/bin'), { recursive: true });
  writeFileSync(join(app, 'opt/app/bin/run'), '#!/bin/sh\necho app\n', { mode: 0o755 });
  strataJson(['store', 'import', 'base/1', base, '--default'], { store });
  strataJson(['store', 'import', 'app/1.0', app, '--requires', 'base/1', '--prepend', 'PATH=/opt/app/bin'], { store });
  const work = join(dir, 'work');
  mkdirSync(work);
  strataJson(['compose', 'add', 'app/1.0'], { store, cwd: work });
  const lock = join(dir, 'stack.lock');
  strataJson(['compose', 'lock', '-o', lock], { store, cwd: work });
  return { store, lock };
}

test('push A, pull into empty B: same squash sha256; skopeo sees the manifest, config = record', async ({ dir, reg }) => {
  const { store: A, lock } = storeWithStack(dir);
  const target = `${reg.host}/${REPO}`;
  const first = strata(['--json', 'store', 'push', target], { store: A });
  assert.is(first.code, 0, first.stderr);
  assert.is(first.stderr, '', 'no progress or notes when not on a terminal');
  const pushed = JSON.parse(first.stdout.toString()) as Array<{ fullName: string; record: string; tag: string; uploaded: string[]; status: string }>;
  assert.equal(pushed.map((p) => [p.fullName, p.tag, p.status, p.uploaded.length]), [['app/1.0', 'app_1.0', 'pushed', 3], ['base/1', 'base_1', 'pushed', 3]]);

  const raw = JSON.parse(mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${target}:base_1`]).stdout.toString());
  const baseRecord = pushed.find((p) => p.fullName === 'base/1')!.record;
  assert.is(raw.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.is(raw.artifactType, 'application/vnd.strata.module.v1');
  assert.is(raw.config.mediaType, 'application/vnd.strata.module.config.v1+json');
  assert.is(raw.config.digest, `sha256:${cidHex(baseRecord)}`);
  assert.is(raw.annotations['org.opencontainers.image.title'], 'base/1');
  const shown = strataJson(['store', 'show', 'base/1'], { store: A });
  // The layer travels zstd-compressed; its uncompressed digest (the layer CID) is kept as the
  // diff id, and zstd itself restores the canonical tar from the registry's copy.
  assert.is(raw.layers[0].mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  assert.is(raw.layers[0].annotations['vnd.strata.layer.diff-id'], `sha256:${cidHex(shown.record.layer)}`);
  const tar = mustRun('zstd', ['-dc', reg.blobDataPath(raw.layers[0].digest)]).stdout;
  assert.is(createHash('sha256').update(tar).digest('hex'), cidHex(shown.record.layer));
  assert.is(raw.layers[0].annotations['vnd.strata.layer.diff-size'], String(tar.length));
  assert.ok(raw.layers[0].size < tar.length, 'the layer went compressed');
  assert.is(raw.layers[1].digest, `sha256:${cidHex(shown.record.manifest)}`);
  // skopeo's config is the record, byte for byte.
  const config = mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', '--config', `docker://${target}:base_1`]).stdout;
  assert.is(createHash('sha256').update(config).digest('hex'), cidHex(baseRecord));

  const B = join(dir, 'B');
  const pulled = strataJson<Array<{ fullName: string; record: string; status: string }>>(['store', 'pull', target], { store: B });
  assert.equal(pulled.map((p) => [p.fullName, p.status]).sort(), [['app/1.0', 'pulled'], ['base/1', 'pulled']]);
  assert.equal(strataJson(['store', 'ls'], { store: B }).map((m: { fullName: string; record: string }) => [m.fullName, m.record]),
    strataJson(['store', 'ls'], { store: A }).map((m: { fullName: string; record: string }) => [m.fullName, m.record]));
  assert.is(strataJson(['store', 'verify'], { store: B }).problems.length, 0);

  const outA = join(dir, 'a.sqfs');
  const outB = join(dir, 'b.sqfs');
  const ra = strataJson(['compose', 'squash', outA, '--lock', lock], { store: A });
  const rb = strataJson(['compose', 'squash', outB, '--lock', lock], { store: B });
  assert.is(fileSha(outA), fileSha(outB));
  assert.is(ra.sha256, rb.sha256);

  // Pulling again is a no-op; pulling by record CID finds the module by scanning the tags.
  const again = strataJson<Array<{ status: string }>>(['store', 'pull', target, 'base/1', baseRecord], { store: B });
  assert.equal(again.map((p) => p.status), ['unchanged', 'unchanged']);
});

test('a second push uploads nothing: only HEAD and GET reach the registry', async ({ dir, reg }) => {
  const { store: A } = storeWithStack(dir);
  const proxy = await startFaultProxy(reg.url, () => 'pass');
  try {
    // The proxy lives in this process: the CLI must run without blocking it (no spawnSync).
    const pushVia = async (target: string) => {
      const r = await strataAsync(['--json', 'store', 'push', target], { store: A }).done;
      assert.is(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.toString()) as Array<{ status: string; uploaded: string[] }>;
    };
    const target = `${proxy.url.replace('http://', '')}/${REPO}`;
    await pushVia(target);
    const first = proxy.log.map((l) => l.request.split(' ')[0]);
    assert.ok(first.includes('PUT') && first.includes('POST'), `first push uploads: ${first.join(',')}`);
    proxy.log.length = 0;
    const second = await pushVia(target);
    assert.equal(second.map((p) => [p.status, p.uploaded.length]), [['unchanged', 0], ['unchanged', 0]]);
    const methods = new Set(proxy.log.map((l) => l.request.split(' ')[0]));
    assert.equal([...methods].sort(), ['GET', 'HEAD'], `second push sent: ${proxy.log.map((l) => l.request).join(', ')}`);
  } finally {
    await proxy.stop();
  }
});

test('a fresh store with only a remote rebuilds the image from the lock alone', async ({ dir, reg }) => {
  const { store: A, lock } = storeWithStack(dir);
  const outA = join(dir, 'a.sqfs');
  strataJson(['rebuild', lock, '-o', outA], { store: A });
  strataJson(['store', 'remote', 'add', 'site', `${reg.host}/${REPO}`], { store: A });
  strataJson(['store', 'push', 'site'], { store: A });

  // No remote: today's clear error.
  const D = join(dir, 'D');
  assertOneLineError(strata(['rebuild', lock, '-o', join(dir, 'd.sqfs')], { store: D }), 'rebuild without remote', /no store at /);

  const C = join(dir, 'C');
  const added = strataJson(['store', 'remote', 'add', 'site', `${reg.host}/${REPO}`], { store: C });
  assert.equal(added, { name: 'site', url: `http://${reg.host}/${REPO}`, siteInternal: false });
  assert.equal(strataJson(['store', 'ls'], { store: C }), []);
  const outC = join(dir, 'c.sqfs');
  const r = strata(['rebuild', lock, '-o', outC], { store: C });
  assert.is(r.code, 0, r.stderr);
  assert.is(fileSha(outC), fileSha(outA));
  // The fetched modules are in C now, whole.
  assert.equal(strataJson(['store', 'ls'], { store: C }).map((m: { fullName: string }) => m.fullName), ['app/1.0', 'base/1']);
  assert.is(strataJson(['store', 'verify'], { store: C }).problems.length, 0);

  // A hash list (record CIDs only): the remote's tags are scanned for the records.
  const F = join(dir, 'F');
  const list = join(dir, 'stack.cids');
  writeFileSync(list, `${JSON.parse(readFileSync(lock, 'utf8')).modules.map((m: { record: string }) => m.record).join('\n')}\n`);
  strataJson(['store', 'remote', 'add', 'site', `${reg.host}/${REPO}`], { store: F });
  const outF = join(dir, 'f.sqfs');
  const rf = strata(['rebuild', list, '-o', outF], { store: F });
  assert.is(rf.code, 0, rf.stderr);
  assert.is(fileSha(outF), fileSha(outA));

  // A remote that does not hold the module: the error says which remotes were asked.
  const E = join(dir, 'E');
  strataJson(['store', 'remote', 'add', 'empty', `${reg.host}/other/repo`], { store: E });
  assertOneLineError(strata(['rebuild', lock, '-o', join(dir, 'e.sqfs')], { store: E }), 'rebuild from a remote without it', /not in this store nor on remote empty/);
});

test('on a terminal, push, pull and fetch-missing show a progress bar per module', async ({ dir, reg }) => {
  const S = join(dir, 'S');
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  writeFileSync(join(tree, 'f'), 'x'.repeat(100_000));
  const imp = strataJson(['store', 'import', 'tiny/1', tree], { store: S });
  // script(1) gives the CLI a pseudo-terminal for stdout and stderr.
  const tty = (store: string, args: string[]) =>
    mustRun('script', ['-qec', strataArgv(args, store).join(' '), '/dev/null']).stdout.toString();
  assert.match(tty(S, ['store', 'push', `${reg.host}/${REPO}`]), /pushing tiny\/1 .*\d+%/);
  assert.match(tty(join(dir, 'T'), ['store', 'pull', `${reg.host}/${REPO}`]), /pulling tiny\/1 .*\d+%/);
  // Fetch-missing during a rebuild shows its bar too.
  const U = join(dir, 'U');
  strataJson(['store', 'remote', 'add', 'site', `${reg.host}/${REPO}`], { store: U });
  const list = join(dir, 'tiny.cids');
  writeFileSync(list, `${imp.record}\n`);
  assert.match(tty(U, ['rebuild', list, '-o', join(dir, 'tiny.sqfs')]), /pulling tiny\/1 .*\d+%[^]*wrote /);
});

test('pull over another module of the same name is refused; --force replaces it', async ({ dir, reg }) => {
  const one = join(dir, 'one');
  const two = join(dir, 'two');
  mkdirSync(one);
  mkdirSync(two);
  writeFileSync(join(one, 'f'), 'one\n');
  writeFileSync(join(two, 'f'), 'two\n');
  const A = join(dir, 'A');
  const B = join(dir, 'B');
  const a = strataJson(['store', 'import', 'tool/1', one], { store: A });
  const b = strataJson(['store', 'import', 'tool/1', two], { store: B });
  strataJson(['store', 'push', `${reg.host}/${REPO}`], { store: A });
  assertOneLineError(strata(['store', 'pull', `${reg.host}/${REPO}`, 'tool/1'], { store: B }), 'pull over other content', /tool\/1 is already in the store with other content.*--force/);
  assert.is(strataJson(['store', 'show', 'tool/1'], { store: B }).cid, b.record);
  const r = strataJson(['store', 'pull', `${reg.host}/${REPO}`, 'tool/1', '--force'], { store: B });
  assert.equal(r.map((x: { status: string }) => x.status), ['replaced']);
  assert.is(strataJson(['store', 'show', 'tool/1'], { store: B }).cid, a.record);
});

test('remote add/ls/rm: stored without credentials; a URL with credentials is refused', async ({ dir, reg }) => {
  const S = join(dir, 'S');
  strataJson(['store', 'remote', 'add', 'b-site', `${reg.host}/${REPO}`, '--site-internal'], { store: S });
  strataJson(['store', 'remote', 'add', 'a-hub', 'registry.example.org/hpc/strata'], { store: S });
  assert.equal(strataJson(['store', 'remote', 'ls'], { store: S }), [
    { name: 'a-hub', url: 'https://registry.example.org/hpc/strata', siteInternal: false },
    { name: 'b-site', url: `http://${reg.host}/${REPO}`, siteInternal: true },
  ]);
  const r = strata(['store', 'remote', 'add', 'x', 'https://user:s3cret@registry.example.org/hpc/strata'], { store: S });
  assert.is(r.code, 1, r.stderr);
  assert.not.ok(r.stderr.includes('s3cret'), r.stderr);
  assertOneLineError(strata(['store', 'remote', 'add', 'a-hub', 'other.example.org/x'], { store: S }), 'duplicate remote', /already exists/);
  strataJson(['store', 'remote', 'rm', 'a-hub'], { store: S });
  assert.equal(strataJson(['store', 'remote', 'ls'], { store: S }).map((x: { name: string }) => x.name), ['b-site']);
  assertOneLineError(strata(['store', 'remote', 'rm', 'a-hub'], { store: S }), 'rm of a missing remote', /no remote a-hub/);
});

test('a restricted module is refused to a remote not marked site-internal, allowed to one that is', async ({ dir, reg }) => {
  const S = join(dir, 'S');
  const tree = join(dir, 'vasp');
  mkdirSync(join(tree, 'opt/vasp'), { recursive: true });
  writeFileSync(join(tree, 'opt/vasp/LICENSE'), 'site licence\n');
  ensureGroup('vasp'); // --restricted names a group the host has
  strataJson(['store', 'import', 'lic/vasp-6', tree, '--restricted', 'vasp'], { store: S });
  const free = join(dir, 'free');
  mkdirSync(join(free, 'opt/free'), { recursive: true });
  writeFileSync(join(free, 'opt/free/README'), 'free\n');
  strataJson(['store', 'import', 'free/1', free], { store: S });
  strataJson(['store', 'remote', 'add', 'hub', `${reg.host}/public`], { store: S });
  strataJson(['store', 'remote', 'add', 'site', `${reg.host}/internal`, '--site-internal'], { store: S });

  // Named, it refuses the whole push before anything is sent, free/1 included.
  const line = assertOneLineError(strata(['store', 'push', 'hub', 'lic/vasp-6', 'free/1'], { store: S }), 'restricted push to hub');
  assert.is(line, 'strata: lic/vasp-6 is restricted to group vasp: refusing to push it to hub, which is not marked site-internal (add the remote with --site-internal if it never leaves the site)');
  assert.is.not(run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/public:free_1`]).code, 0, 'nothing was sent');
  // A REGISTRY/REPO that is no site-internal remote is refused too.
  assertOneLineError(strata(['store', 'push', `${reg.host}/elsewhere`, 'lic/vasp-6'], { store: S }), 'restricted push by URL', /refusing to push it to 127\.0\.0\.1:\d+\/elsewhere/);
  // Pushing everything sends what the remote may receive and lists what it skipped (exit 0).
  const text = strata(['store', 'push', 'hub'], { store: S });
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout.toString(), /^pushed free\/1 as hub:free_1 /m);
  assert.match(text.stdout.toString(), /^skipped lic\/vasp-6: restricted to group vasp; hub is not marked site-internal$/m);
  const tags = (repo: string) => JSON.parse(mustRun('skopeo', ['list-tags', '--tls-verify=false', `docker://${reg.host}/${repo}`], {}).stdout.toString() || '{}');
  const pushed = strataJson<Array<{ fullName: string; record: string; status: string; reason?: string }>>(['store', 'push', 'hub'], { store: S });
  assert.equal(pushed.map((p) => [p.fullName, p.status]), [['free/1', 'unchanged'], ['lic/vasp-6', 'skipped']]);
  // Only free/1 went out: its fullName tag and its record-CID tag, nothing of lic/vasp-6.
  assert.equal([...tags('public').Tags].sort(), [pushed[0]!.record, 'free_1'].sort());

  const ok = strataJson<Array<{ fullName: string; status: string; record: string }>>(['store', 'push', 'site', 'lic/vasp-6'], { store: S });
  assert.equal(ok.map((p) => [p.fullName, p.status]), [['lic/vasp-6', 'pushed']]);
  // The site-internal remote's URL given directly counts as that remote.
  assert.is(strata(['store', 'push', `${reg.host}/internal`, 'lic/vasp-6'], { store: S }).code, 0);
  assert.equal([...tags('internal').Tags].sort(), [ok[0]!.record, 'lic_vasp-6'].sort());
});

test('a restricted module pulled onto the same content held open: blobs and entry list become the group\'s; held for another group: refused', async ({ dir, reg }) => {
  const tree = join(dir, 'vasp');
  mkdirSync(join(tree, 'opt/vasp'), { recursive: true });
  writeFileSync(join(tree, 'opt/vasp/LICENSE'), 'site licence\n');
  const vasp = ensureGroup('vasp');
  const other = ensureGroup('vasp-other');
  const A = join(dir, 'A');
  const target = `${reg.host}/internal`;
  const { layer, manifest } = strataJson<{ layer: string; manifest: string }>(['store', 'import', 'lic/vasp-6', tree, '--restricted', 'vasp'], { store: A });
  strataJson(['store', 'remote', 'add', 'site', target, '--site-internal'], { store: A });
  strataJson(['store', 'push', 'site', 'lic/vasp-6'], { store: A });
  const copies = (S: string) => [join(S, 'blobs/sha256', cidHex(layer)), join(S, 'blobs/sha256', cidHex(manifest)), join(S, 'cache/entries', `${cidHex(layer)}.rows`)];

  // B imported the same content open; the pull gives every copy the group, in place.
  const B = join(dir, 'B');
  strataJson(['store', 'import', 'open/1', tree], { store: B });
  for (const f of copies(B)) assert.is(statSync(f).mode & 0o777, 0o644, `before: ${f} is open`);
  strataJson(['store', 'pull', target, 'lic/vasp-6'], { store: B });
  for (const f of copies(B)) {
    assert.is(statSync(f).gid, vasp, `${f}: group`);
    assert.is(statSync(f).mode & 0o777, 0o640, `${f}: mode`);
  }

  // C holds it restricted to another group: refused before anything is fetched.
  const C = join(dir, 'C');
  strataJson(['store', 'import', 'lic/other-1', tree, '--restricted', 'vasp-other'], { store: C });
  const held = () => [strataJson<Array<{ fullName: string }>>(['store', 'ls'], { store: C }).map((m) => m.fullName), readdirSync(join(C, 'blobs/sha256')).sort()];
  const before = held();
  const line = assertOneLineError(strata(['store', 'pull', target, 'lic/vasp-6'], { store: C }), 'pull onto content of another group');
  assert.match(line, /lic\/vasp-6 names content restricted to group vasp-other in this store, and .* has it restricted to group vasp \(only staff may lift the restriction here/);
  assert.equal(held(), before, 'C holds what it held');
  for (const f of copies(C)) assert.is(statSync(f).gid, other, `${f} stays the other group's`);
});

test('a restricted module fetched for a rebuild, its name another record\'s here: its content is restricted here all the same', async ({ dir, reg }) => {
  const tree = join(dir, 'vasp');
  mkdirSync(join(tree, 'opt/vasp'), { recursive: true });
  writeFileSync(join(tree, 'opt/vasp/LICENSE'), 'site licence\n');
  const vasp = ensureGroup('vasp');
  const A = join(dir, 'A');
  const target = `${reg.host}/internal`;
  const { layer } = strataJson<{ layer: string }>(['store', 'import', 'lic/vasp-6', tree, '--restricted', 'vasp'], { store: A });
  strataJson(['store', 'remote', 'add', 'site', target, '--site-internal'], { store: A });
  strataJson(['store', 'push', 'site', 'lic/vasp-6'], { store: A });
  const work = join(dir, 'work');
  mkdirSync(work);
  strataJson(['compose', 'add', 'lic/vasp-6'], { store: A, cwd: work });
  const lock = join(dir, 'lic.lock');
  strataJson(['compose', 'lock', '-o', lock], { store: A, cwd: work });

  // G's lic/vasp-6 is another record (other content): the rebuild fetches A's without indexing it.
  const G = join(dir, 'G');
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'README'), 'not the licensed tree\n');
  strataJson(['store', 'import', 'lic/vasp-6', other], { store: G });
  strataJson(['store', 'remote', 'add', 'site', target, '--site-internal'], { store: G });
  const out = join(dir, 'g.sqfs');
  const r = strata(['rebuild', lock, '-o', out], { store: G });
  assert.is(r.code, 0, r.stderr);
  assert.is(statSync(out).gid, vasp, 'the image is the group\'s');
  assert.is(statSync(join(G, 'blobs/sha256', cidHex(layer))).mode & 0o777, 0o640, 'the fetched layer is the group\'s');
  // The content is marked: an open import of the same tree is refused, the blob stays closed.
  assertOneLineError(strata(['store', 'import', 'copy/1', tree], { store: G }), 'open import of fetched restricted content',
    /this layer is restricted content \(group vasp\) in the store/);
  assert.is(statSync(join(G, 'blobs/sha256', cidHex(layer))).mode & 0o777, 0o640, 'and stays so');
});

test("default marks travel: pull applies the remote's mark unless the store has its own", async ({ dir, reg }) => {
  const target = `${reg.host}/${REPO}`;
  const A = join(dir, 'A');
  const trees = ['one', 'two', 'zero'].map((n) => {
    const t = join(dir, n);
    mkdirSync(t);
    writeFileSync(join(t, 'f'), `${n}\n`);
    return t;
  });
  strataJson(['store', 'import', 'tool/1', trees[0]!], { store: A });
  strataJson(['store', 'import', 'tool/2', trees[1]!, '--default'], { store: A });
  const pushed = strataJson<Array<{ fullName: string; default?: boolean }>>(['store', 'push', target], { store: A });
  assert.equal(pushed.map((p) => [p.fullName, p.default ?? false]), [['tool/1', false], ['tool/2', true]]);
  // The marks are an artifact of their own, readable by skopeo.
  const config = JSON.parse(mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', '--config', `docker://${target}:strata-defaults`]).stdout.toString());
  assert.equal(config, { defaults: { tool: 'tool/2' } });

  const defaults = (store: string) => strataJson<Array<{ fullName: string; isDefault: boolean }>>(['store', 'ls'], { store })
    .filter((m) => m.isDefault).map((m) => m.fullName);
  const B = join(dir, 'B');
  const pulled = strataJson<Array<{ fullName: string; default?: boolean }>>(['store', 'pull', target], { store: B });
  assert.equal(pulled.map((p) => [p.fullName, p.default ?? false]).sort(), [['tool/1', false], ['tool/2', true]]);
  assert.equal(defaults(B), ['tool/2']);
  // A store with its own mark keeps it; one that pulls only tool/1 gets no mark for it.
  const C = join(dir, 'C');
  strataJson(['store', 'import', 'tool/0', trees[2]!, '--default'], { store: C });
  strataJson(['store', 'pull', target], { store: C });
  assert.equal(defaults(C), ['tool/0']);
  const D = join(dir, 'D');
  strataJson(['store', 'pull', target, 'tool/1'], { store: D });
  assert.equal(defaults(D), []);
  // Moving the mark in A and pushing again moves it on the remote.
  strataJson(['store', 'default', 'tool/1'], { store: A });
  strataJson(['store', 'push', target], { store: A });
  const E = join(dir, 'E');
  strataJson(['store', 'pull', target], { store: E });
  assert.equal(defaults(E), ['tool/1']);
});

test('gzip and the first, uncompressed form: pushed as asked, pulled to the same modules', async ({ dir, reg }) => {
  const A = join(dir, 'A');
  const tree = join(dir, 'base-tree');
  makeSmallTree(tree);
  strataJson(['store', 'import', 'base/1', tree], { store: A });
  const layerOf = (fullName: string) => cidHex(strataJson(['store', 'show', fullName], { store: A }).record.layer);
  for (const [compression, type, tool] of [['gzip', 'application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
    ['none', 'application/vnd.oci.image.layer.v1.tar', undefined]] as const) {
    const target = `${reg.host}/form/${compression}`;
    strataJson(['store', 'push', target, '--compression', compression], { store: A });
    const raw = JSON.parse(mustRun('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${target}:base_1`]).stdout.toString());
    assert.is(raw.layers[0].mediaType, type);
    if (tool) {
      const tar = mustRun(tool, ['-dc', reg.blobDataPath(raw.layers[0].digest)]).stdout;
      assert.is(createHash('sha256').update(tar).digest('hex'), layerOf('base/1'));
    } else {
      assert.is(raw.layers[0].digest, `sha256:${layerOf('base/1')}`);
      assert.is(raw.layers[0].annotations, undefined, 'the first form, byte for byte');
    }
    const B = join(dir, `B-${compression}`);
    strataJson(['store', 'pull', target], { store: B });
    assert.equal(strataJson(['store', 'ls'], { store: B }).map((m: { fullName: string; record: string }) => [m.fullName, m.record]),
      strataJson(['store', 'ls'], { store: A }).map((m: { fullName: string; record: string }) => [m.fullName, m.record]));
    assert.is(strataJson(['store', 'verify'], { store: B }).problems.length, 0);
  }
  const bad = strata(['store', 'push', `${reg.host}/x`, '--compression', 'xz'], { store: A });
  assert.is(bad.code, 2, 'a usage error');
  assert.match(bad.stderr, /^strata: --compression takes zstd, gzip or none, not 'xz'/);
});

const why = missing({ tools: ['docker-registry', 'skopeo', 'script'] });
if (why) skipSuite('remote: push, pull, remotes, fetch-missing', why);
else test.run();

/**
 * Issue 13, "sources are recognised", through the CLI as a user would:
 * - a directory holding an OCI layout, given without `oci:`, gives the same layer (and
 *   manifest, and Env) as with the prefix; a directory with a stray `oci-layout` file but no
 *   index is still a plain directory;
 * - a docker archive (skopeo's, and a docker-save-shaped one, also gzip'd) given without
 *   `docker-archive:` gives the same layer as with it; an OCI layout packed in a tar is
 *   refused with a hint; a layer that merely holds a manifest.json stays a layer;
 * - overlay upperdirs: a rootless (`userxattr`) upperdir — user.overlay.opaque=y, char 0/0
 *   whiteouts, xattr whiteouts in an opaque=x directory, an escaped overlay xattr — imports
 *   to the same layer as root and as a real non-root user; a trusted.overlay upperdir is
 *   refused for the non-root user with a hint, and read by root (its opaque directory kept).
 * Root (mknod, trusted.* xattrs, switching users); skopeo for real archives (that test alone
 * is skipped without it).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeTar } from './fixtures/hostile.js';
import { dockerArchive, gz, MT, OciLayout } from './fixtures/oci.js';
import { missing, skipSuite, testIf } from './helpers/probe.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { ensureUser, type TestUser } from './helpers/users.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';
import { blobPath } from './store-harness.js';

interface Ctx {
  dir: string;
  store: string;
}

const why = missing({ tools: ['setfattr', 'setpriv'], root: true });
if (why) skipSuite('store import: sources recognised', why);
else {
  const test = suite<Ctx>('store import: sources recognised');
  test.before.each((ctx) => {
    ctx.dir = tempDir('strata-sources-');
    chmodSync(ctx.dir, 0o755);
    ctx.store = join(ctx.dir, 'store');
  });
  test.after.each((ctx) => removeDir(ctx.dir));

  const layerTar = (dir: string, name: string, seed: string) =>
    readFileSync(writeTar(join(dir, `${name}.tar`), [{ name: 'opt', type: 'dir' }, { name: `opt/${name}`, data: `${seed}\n`.repeat(100) }]));

  test('an OCI layout directory without oci: is imported as one, same layer as with the prefix', ({ dir, store }) => {
    const o = new OciLayout(join(dir, 'layout'));
    o.top([o.image([o.blob(gz(layerTar(dir, 'a', 'one')), MT.layerGzip), o.blob(layerTar(dir, 'b', 'two'), MT.layer)], ['APP=/opt'])], 'v1');
    const withPrefix = strataJson(['store', 'import', 'img/prefix', `oci:${o.dir}`], { store });
    const bare = strataJson(['store', 'import', 'img/bare', o.dir], { store });
    assert.is(bare.layer, withPrefix.layer);
    assert.is(bare.manifest, withPrefix.manifest);
    assert.equal(strataJson(['store', 'show', 'img/bare'], { store }).record.env, [{ op: 'set', var: 'APP', value: '/opt' }]);
    const names = mustRun('tar', ['-tf', blobPath(store, bare.layer)]).stdout.toString();
    assert.match(names, /opt\/a\n/);
    assert.not.match(names, /blobs|index\.json/, 'not a directory of blobs');

    // A tree that merely has a file called oci-layout is a tree.
    const tree = join(dir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const plain = strataJson(['store', 'import', 'tree/1', tree], { store });
    assert.match(mustRun('tar', ['-tf', blobPath(store, plain.layer)]).stdout.toString(), /^oci-layout$/m);
  });

  testIf(test, { tools: ['skopeo'] }, 'a docker archive without docker-archive: is imported as one (skopeo, docker save shape, gzip); an oci-archive is refused', ({ dir, store }) => {
    const o = new OciLayout(join(dir, 'layout'));
    o.top([o.image([o.blob(gz(layerTar(dir, 'a', 'one')), MT.layerGzip), o.blob(gz(layerTar(dir, 'b', 'two')), MT.layerGzip)], ['X=1'])], 'v1');
    const want = strataJson(['store', 'import', 'img/oci', `oci:${o.dir}`], { store });

    const sk = join(dir, 'skopeo.tar');
    mustRun('skopeo', ['copy', '-q', `oci:${o.dir}:v1`, `docker-archive:${sk}:img:v1`]);
    assert.is(strataJson(['store', 'import', 'img/sk-prefix', `docker-archive:${sk}`], { store }).layer, want.layer);
    const skBare = strataJson(['store', 'import', 'img/sk-bare', sk], { store });
    assert.is(skBare.layer, want.layer);
    assert.equal(strataJson(['store', 'show', 'img/sk-bare'], { store }).record.env, [{ op: 'set', var: 'X', value: '1' }]);

    const ds = dockerArchive(join(dir, 'save.tar'), [layerTar(dir, 'a', 'one'), layerTar(dir, 'b', 'two')]);
    assert.is(strataJson(['store', 'import', 'img/ds', ds], { store }).layer, want.layer);
    const dsgz = join(dir, 'save.tar.gz');
    writeFileSync(dsgz, gzipSync(readFileSync(ds)));
    assert.is(strataJson(['store', 'import', 'img/dsgz', dsgz], { store }).layer, want.layer);

    const oa = join(dir, 'oci-archive.tar');
    mustRun('skopeo', ['copy', '-q', `oci:${o.dir}:v1`, `oci-archive:${oa}:v1`]);
    assertOneLineError(strata(['store', 'import', 'img/oa', oa], { store }), 'oci-archive', /OCI layout packed in a tar.*extract it.*oci:DIR/);

    // A layer whose top level looks like an image archive's but whose manifest.json is not one.
    const fake = writeTar(join(dir, 'fake.tar'), [
      { name: 'manifest.json', data: '[{"Config":"c.json","Layers":["missing/layer.tar"]}]' },
      { name: 'repositories', data: '{}' },
    ]);
    const f = strataJson(['store', 'import', 'fake/1', fake], { store });
    assert.is(f.entries, 2);
  });

  /** A rootless-overlay upperdir (userxattr), made by root and given to `owner`. */
  function rootlessUpper(root: string, owner: TestUser): string {
    const p = (rel: string) => join(root, rel);
    mkdirSync(p('opq/sub'), { recursive: true });
    writeFileSync(p('opq/new'), 'replaces the lower directory\n');
    mustRun('setfattr', ['-n', 'user.overlay.opaque', '-v', 'y', p('opq')]);
    mkdirSync(p('xw'));
    writeFileSync(p('xw/xgone'), '');
    mustRun('setfattr', ['-n', 'user.overlay.whiteout', '-v', '', p('xw/xgone')]);
    mustRun('setfattr', ['-n', 'user.overlay.opaque', '-v', 'x', p('xw')]);
    writeFileSync(p('xw/kept'), 'kept\n');
    mustRun('mknod', [p('gone'), 'c', '0', '0']);
    writeFileSync(p('file'), 'with an escaped overlay xattr\n');
    mustRun('setfattr', ['-n', 'user.overlay.overlay.opaque', '-v', 'y', p('file')]);
    mustRun('setfattr', ['-n', 'user.note', '-v', 'kept', p('file')]);
    mustRun('chown', ['-R', `${owner.uid}:${owner.gid}`, root]);
    mustRun('find', [root, '-exec', 'touch', '-h', '-d', '@1650000000', '{}', '+']);
    return root;
  }

  test('a rootless (userxattr) overlay upperdir: the same layer as root and as a user; trusted.overlay refused for the user', ({ dir, store }) => {
    const user = ensureUser('st-src-user');
    const upper = rootlessUpper(join(dir, 'upper'), user);
    const asRoot = strataJson(['store', 'import', 'ov/root', upper, '--overlay'], { store });
    const names = mustRun('tar', ['-tf', blobPath(store, asRoot.layer)]).stdout.toString().split('\n').filter(Boolean);
    for (const n of ['opq/.wh..wh..opq', '.wh.gone', 'xw/.wh.xgone', 'xw/kept', 'opq/new']) assert.ok(names.includes(n), `${n} in ${names.join(' ')}`);
    assert.not.ok(names.includes('xw/.wh..wh..opq'), "opaque=x is not opaque");
    const m = JSON.parse(readFileSync(blobPath(store, asRoot.manifest), 'utf8'));
    assert.equal(Object.keys(m.entries.file.xattrs).sort(), ['user.note', 'user.overlay.opaque'], 'overlay xattrs dropped, the escaped one unescaped');
    assert.not.ok(m.entries.opq?.xattrs, 'no overlay xattr left on the opaque directory');

    const ustore = join(dir, 'ustore');
    mkdirSync(ustore);
    mustRun('chown', [`${user.uid}:${user.gid}`, ustore]);
    const r = strata(['--json', 'store', 'import', 'ov/user', upper, '--overlay'], { store: ustore, as: user });
    assert.is(r.code, 0, r.stderr);
    const asUser = JSON.parse(r.stdout.toString());
    assert.is(asUser.layer, asRoot.layer, 'non-root import gives root\'s layer');
    assert.is(asUser.manifest, asRoot.manifest);

    // A privileged upperdir: its opaque marker is invisible to the user.
    const priv = join(dir, 'priv');
    mkdirSync(join(priv, 'd'), { recursive: true });
    writeFileSync(join(priv, 'd', 'f'), 'x\n');
    mustRun('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(priv, 'd')]);
    mustRun('chown', ['-R', `${user.uid}:${user.gid}`, priv]);
    const rootPriv = strataJson(['store', 'import', 'ov/priv', priv, '--overlay'], { store });
    assert.match(mustRun('tar', ['-tf', blobPath(store, rootPriv.layer)]).stdout.toString(), /^d\/\.wh\.\.wh\.\.opq$/m);
    const refused = strata(['store', 'import', 'ov/priv', priv, '--overlay'], { store: ustore, as: user });
    assertOneLineError(refused, 'non-root trusted overlay', /without the right to read trusted\.overlay.*run the import as root.*userxattr/);
  });

  test.run();
}

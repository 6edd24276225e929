/**
 * The site deployment (spec/store.md "Site stores"): staff (root) own a store; users compose
 * from it read-only, each in their own working directory, with their own caches and
 * collections; licensed content is kept from users outside its group by the kernel (file
 * modes and groups), not only by strata's checks. Run with real users and groups (setpriv).
 *
 *  1. a member and an outsider: avail, add, sandbox, squash, save/restore, ls/show/verify from
 *     the read-only store succeed; the store's files are byte-for-byte unchanged afterwards
 *  2. the outsider: add, export, show of the licensed module, rebuild of a lock naming it are
 *     refused in one line; grep over the whole store finds no licensed byte
 *  3. the member's SquashFS image under a kernel mount: the member reads and runs the licensed
 *     files, the outsider cannot, and cannot read the image file either
 *  4. a user's store stacked on the site store (STRATA_PATH): a module requiring a site module,
 *     compose, sandbox, squash, lock, rebuild in a fresh shell: the same bytes
 *  5. three users rebuild while staff import, rm and gc: every build gives the quiet bytes
 *  6. edited entry-list caches (a `..` entry, a setuid bit, a changed mode) never change an
 *     output: the same image bytes as with no cache, or one line; nothing outside changes
 *  7. a user's first build uses the entry lists the site store's import wrote (the user makes
 *     none); a site list edited to disagree with its layer is refused in one line, not used
 *     again, and the next build gives the first build's bytes; a FIFO in a list's place is a
 *     miss, not a hang
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { assertOneLineError, strata, strataAsync, strataJson, strataOk, type StrataOptions } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { ensureGroup, ensureUser, runAs, type TestUser } from './helpers/users.js';

const SECRET = 'LICENSED-BYTES-5e1f0c';
const LIC_GROUP = 'st-site-lic';

interface Ctx {
  dir: string;
  site: string;
  member: TestUser;
  outsider: TestUser;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Every path under `root` with its type, mode, owner and content digest: what "unchanged" means. */
function fingerprint(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const what = st.isFile() ? sha(readFileSync(p)) : st.isSymbolicLink() ? 'link' : '';
      out.push(`${rel}${name} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${what}`);
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
    }
  };
  walk(root, '');
  return out;
}

/** strata as user `u`, in `cwd`, with its own data and cache directories under `home`. */
function inHome(u: TestUser, home: string, cwd: string, env: Record<string, string> = {}): StrataOptions {
  return { as: u, cwd, env: { HOME: home, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache'), STRATA_SITE_STORES: '', ...env } };
}

/** A directory owned by `u` (its working directory or home). */
function userDir(u: TestUser, p: string): string {
  mkdirSync(p, { recursive: true });
  chownSync(p, u.uid, u.gid);
  return p;
}

function makeLayers(dir: string): { base: string; lic: string; app: string; extra: (n: number) => string } {
  const base = join(dir, 'src-base');
  mkdirSync(join(base, 'etc'), { recursive: true });
  mkdirSync(join(base, 'usr/bin'), { recursive: true });
  writeFileSync(join(base, 'etc/os-release'), 'NAME=site-base\n');
  writeFileSync(join(base, 'usr/bin/hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });

  // The licensed application: the directory and files are closed to others; the licence group
  // gets in through named-group ACL entries, as a site would set them.
  const lic = join(dir, 'src-lic');
  mkdirSync(join(lic, 'opt/lic/bin'), { recursive: true });
  writeFileSync(join(lic, 'opt/lic/bin/app'), `#!/bin/sh\necho ${SECRET}-ran\n`, { mode: 0o750 });
  writeFileSync(join(lic, 'opt/lic/data'), `${SECRET}\n`, { mode: 0o640 });
  chmodSync(join(lic, 'opt/lic'), 0o750);
  chmodSync(join(lic, 'opt/lic/bin'), 0o750);
  for (const [p, perms] of [['opt/lic', 'r-x'], ['opt/lic/bin', 'r-x'], ['opt/lic/bin/app', 'r-x'], ['opt/lic/data', 'r--']] as const) {
    mustRun('setfacl', ['-m', `g:${LIC_GROUP}:${perms}`, join(lic, p)]);
  }

  const app = join(dir, 'src-app');
  mkdirSync(join(app, 'opt/mine'), { recursive: true });
  writeFileSync(join(app, 'opt/mine/README'), 'a user module\n');

  const extra = (n: number) => {
    const d = join(dir, `src-extra-${n}`);
    mkdirSync(join(d, 'opt/extra'), { recursive: true });
    writeFileSync(join(d, 'opt/extra/n'), `${n}\n${'x'.repeat(200_000 + n)}`);
    return d;
  };
  return { base, lic, app, extra };
}

const why = missing({ tools: ['setfacl', 'setpriv', 'useradd', 'grep', 'mkfifo'], root: true });
if (why) skipSuite('site store', why);
else {
  const test = suite<Ctx>('site store');

  test.before((ctx) => {
    ctx.dir = tempDir('strata-site-');
    chmodSync(ctx.dir, 0o755);
    ensureGroup(LIC_GROUP);
    ctx.member = ensureUser('st-site-mem', [LIC_GROUP]);
    ctx.outsider = ensureUser('st-site-out');
    const layers = makeLayers(ctx.dir);
    ctx.site = join(ctx.dir, 'site');
    const S = ['--store', ctx.site, '-q', 'store', 'import'];
    strataOk([...S, 'base/1', layers.base]);
    strataOk([...S, 'lic/1', layers.lic, '--restricted', LIC_GROUP, '--requires', 'base/1']);
    strataOk([...S, 'tools/1', layers.extra(0)]);
  });
  test.after((ctx) => removeDir(ctx.dir));

  test('1. two users compose from the read-only store; its files are unchanged', ({ dir, site, member, outsider }) => {
    const before = fingerprint(site);
    for (const [u, mods] of [[member, ['base/1', 'lic/1']], [outsider, ['base/1']]] as const) {
      const home = userDir(u, join(dir, `home1-${u.name}`));
      const work = userDir(u, join(home, 'work'));
      const st = ['--store', site];
      const avail = strataOk([...st, 'compose', 'avail'], inHome(u, home, work));
      assert.match(avail, 'base/1');
      for (const m of mods) strataOk([...st, 'compose', 'add', m], inHome(u, home, work));
      strataOk([...st, 'compose', 'list'], inHome(u, home, work));
      strataOk([...st, 'compose', 'lock'], inHome(u, home, work));
      strataOk([...st, 'compose', 'save', 'mine'], inHome(u, home, work));
      strataOk([...st, 'compose', 'restore', 'mine'], inHome(u, home, work));
      strataOk([...st, 'compose', 'sandbox', join(work, 'sb')], inHome(u, home, work));
      strataOk([...st, 'compose', 'squash', join(work, 'img.sqfs')], inHome(u, home, work));
      assert.ok(existsSync(join(work, 'sb/etc/os-release')), `${u.name}: the sandbox holds the base`);
      strataOk([...st, 'store', 'ls'], inHome(u, home, work));
      strataOk([...st, 'store', 'show', 'base/1'], inHome(u, home, work));
      const verify = strataJson([...st, 'store', 'verify'], inHome(u, home, work));
      assert.equal(verify.problems, [], `${u.name}: verify is clean`);
      // Per-user state is the user's own: the collection is in their data directory.
      assert.ok(existsSync(join(home, 'data', 'strata', 'catalog.json')), `${u.name}: the collection went to the user's own store`);
    }
    assert.equal(fingerprint(site), before, 'the site store is byte-for-byte unchanged');
    // The two users' collections do not meet: each restores its own 'mine'.
    assertOneLineError(strata(['--store', site, 'store', 'import', 'x/1', dir], inHome(member, join(dir, `home1-${member.name}`), dir)), 'import into the site store', /read-only for you/);
    assert.equal(fingerprint(site), before, 'a refused import leaves it unchanged');
  });

  test('2. the outsider gets no byte of licensed content by any path', ({ dir, site, member, outsider }) => {
    const mhome = userDir(member, join(dir, 'home2-mem'));
    const mwork = userDir(member, join(mhome, 'work'));
    strataOk(['--store', site, 'compose', 'add', 'lic/1'], inHome(member, mhome, mwork));
    strataOk(['--store', site, 'compose', 'lock'], inHome(member, mhome, mwork));
    const lock = readFileSync(join(mwork, 'strata.lock'));

    const home = userDir(outsider, join(dir, 'home2-out'));
    const work = userDir(outsider, join(home, 'work'));
    writeFileSync(join(work, 'their.lock'), lock);
    const st = ['--store', site];
    assertOneLineError(strata([...st, 'compose', 'add', 'lic/1'], inHome(outsider, home, work)), 'add', /denied/);
    assertOneLineError(strata([...st, 'store', 'export', 'lic/1', join(work, 'lic.tar')], inHome(outsider, home, work)), 'export');
    assert.not.ok(existsSync(join(work, 'lic.tar')), 'no export file');
    assertOneLineError(strata([...st, 'store', 'show', 'lic/1'], inHome(outsider, home, work)), 'show');
    assertOneLineError(strata([...st, 'rebuild', join(work, 'their.lock'), '-o', join(work, 'x.sqfs')], inHome(outsider, home, work)), 'rebuild', /denied/);
    assertOneLineError(strata([...st, 'compose', 'sandbox', join(work, 'sb'), '--lock', join(work, 'their.lock')], inHome(outsider, home, work)), 'sandbox --lock', /denied/);
    assertOneLineError(strata([...st, 'compose', 'squash', join(work, 'y.sqfs'), '--lock', join(work, 'their.lock')], inHome(outsider, home, work)), 'squash --lock', /denied/);
    assert.not.ok(existsSync(join(work, 'x.sqfs')) || existsSync(join(work, 'y.sqfs')) || existsSync(join(work, 'sb')), 'no output');
    // The files themselves: grep as the outsider over everything in the store.
    const g = runAs(outsider, 'grep', ['-r', '-l', '-a', SECRET, site]);
    assert.is(g.stdout.toString(), '', `grep found licensed bytes: ${g.stdout}`);
    // The member can read them (the test would pass vacuously otherwise).
    const gm = runAs(member, 'grep', ['-r', '-l', '-a', SECRET, join(site, 'blobs')]);
    assert.ok(gm.stdout.toString().trim() !== '', 'the member reads the licensed layer');
    // Group-only on disk: no access for others on any file holding the licence's content.
    const restricted = gm.stdout.toString().trim().split('\n');
    for (const f of restricted) assert.is(lstatSync(f).mode & 0o007, 0, `${f} gives others nothing`);
  });

  test('3. the member runs the licensed files from a kernel-mounted image; the outsider cannot', ({ dir, site, member, outsider }) => {
    const home = userDir(member, join(dir, 'home3-mem'));
    const work = userDir(member, join(home, 'work'));
    strataOk(['--store', site, 'compose', 'add', 'lic/1'], inHome(member, home, work));
    const img = join(work, 'lic.sqfs');
    strataOk(['--store', site, 'compose', 'squash', img], inHome(member, home, work));
    const st = lstatSync(img);
    assert.is(st.mode & 0o007, 0, 'the image file gives others nothing');
    assert.is.not(runAs(outsider, 'cat', [img]).code, 0, 'the outsider cannot read the image file');
    const mnt = join(dir, 'mnt3');
    mkdirSync(mnt);
    const m = run('mount', ['-t', 'squashfs', '-o', 'ro,loop', img, mnt]);
    if (m.code !== 0) {
      console.log(`  skip kernel mount: ${m.stderr.toString().trim()}`);
      return;
    }
    try {
      console.log('  mounted the member\'s image with the kernel');
      const data = runAs(member, 'cat', [join(mnt, 'opt/lic/data')]);
      assert.is(data.stdout.toString(), `${SECRET}\n`, `member reads: ${data.stderr}`);
      const ran = runAs(member, join(mnt, 'opt/lic/bin/app'), []);
      assert.is(ran.stdout.toString(), `${SECRET}-ran\n`, `member runs: ${ran.stderr}`);
      assert.is.not(runAs(outsider, 'cat', [join(mnt, 'opt/lic/data')]).code, 0, 'outsider cannot read');
      assert.is.not(runAs(outsider, join(mnt, 'opt/lic/bin/app'), []).code, 0, 'outsider cannot run');
      assert.is.not(runAs(outsider, 'ls', [join(mnt, 'opt/lic')]).code, 0, 'outsider cannot list');
    } finally {
      unmount(mnt);
    }
  });

  test('4. a user store on the site store: a module requiring a site module, built and rebuilt', ({ dir, site, member }) => {
    const home = userDir(member, join(dir, 'home4-mem'));
    const work = userDir(member, join(home, 'work'));
    const own = join(home, 'mystore');
    const src = join(dir, 'src-app');
    const env = { STRATA_PATH: `${own}:${site}` };
    strataOk(['-q', 'store', 'import', 'mine/1', src, '--requires', 'base/1'], inHome(member, home, work, env));
    const listed = strataJson<Array<{ fullName: string }>>(['store', 'ls'], inHome(member, home, work, env));
    assert.equal(listed.map((m) => m.fullName), ['base/1', 'lic/1', 'mine/1', 'tools/1'], 'both stores, in name order');
    strataOk(['compose', 'add', 'mine/1'], inHome(member, home, work, env));
    strataOk(['compose', 'sandbox', join(work, 'sb')], inHome(member, home, work, env));
    assert.ok(existsSync(join(work, 'sb/opt/mine/README')) && existsSync(join(work, 'sb/etc/os-release')), 'own and site layers in the sandbox');
    strataOk(['compose', 'squash', join(work, 'a.sqfs')], inHome(member, home, work, env));
    // A fresh shell: nothing but the lock and the path.
    const fresh = userDir(member, join(home, 'fresh'));
    const r = strata(['rebuild', join(work, 'strata.lock'), '-o', join(fresh, 'b.sqfs')], {
      as: member,
      cwd: fresh,
      env: { HOME: home, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache2'), STRATA_PATH: `${own}:${site}` },
    });
    assert.is(r.code, 0, r.stderr.toString());
    assert.is(sha(readFileSync(join(fresh, 'b.sqfs'))), sha(readFileSync(join(work, 'a.sqfs'))), 'rebuild gives the same bytes');
  });

  test('5. three users rebuild while staff import, rm and gc: every build gives the quiet bytes', async ({ dir, site, member, outsider }) => {
    const layers = makeLayers(join(dir, 'five'));
    const users = [member, outsider, ensureUser('st-site-3')];
    const homes = users.map((u, i) => userDir(u, join(dir, `home5-${i}`)));
    const works = users.map((u, i) => userDir(u, join(homes[i]!, 'work')));
    // The lock names base/1 and tools/1 by CID; staff remove and re-import tools/1 meanwhile.
    for (const [i, u] of users.entries()) {
      strataOk(['--store', site, 'compose', 'add', 'base/1', 'tools/1'], inHome(u, homes[i]!, works[i]!));
      strataOk(['--store', site, 'compose', 'lock'], inHome(u, homes[i]!, works[i]!));
    }
    strataOk(['--store', site, 'rebuild', join(works[0]!, 'strata.lock'), '-o', join(works[0]!, 'quiet.sqfs')], inHome(member, homes[0]!, works[0]!));
    const quiet = sha(readFileSync(join(works[0]!, 'quiet.sqfs')));

    let stop = false;
    const staff = (async () => {
      let n = 1;
      while (!stop) {
        const S = ['--store', site, '-q', 'store'];
        await strataAsync([...S, 'import', `churn/${n}`, layers.extra(n)]).done;
        await strataAsync([...S, 'rm', 'tools/1']).done;
        await strataAsync([...S, 'gc']).done;
        if (n > 1) await strataAsync([...S, 'rm', `churn/${n - 1}`]).done;
        await strataAsync([...S, 'import', 'tools/1', layers.extra(0)]).done;
        n++;
      }
    })();
    const builds = users.map(async (u, i) => {
      const results: string[] = [];
      for (let round = 0; round < 4; round++) {
        const out = join(works[i]!, `r${round}.sqfs`);
        const r = await strataAsync(['--store', site, 'rebuild', join(works[i]!, 'strata.lock'), '-o', out], inHome(u, homes[i]!, works[i]!)).done;
        assert.is(r.code, 0, `${u.name} round ${round}: ${r.stderr}`);
        results.push(sha(readFileSync(out)));
      }
      return results;
    });
    const all = await Promise.all(builds).finally(() => (stop = true));
    await staff;
    for (const r of all) for (const h of r) assert.is(h, quiet, 'a build during staff work gives the quiet bytes');
    const v = strataJson(['store', 'verify'], { store: site });
    assert.equal(v.problems, [], 'verify is clean');
  });

  test('6. edited entry-list caches never change an output', ({ dir, site }) => {
    // Root is the site's writer: its cache is the store's cache/entries.
    const work = join(dir, 'six');
    mkdirSync(work);
    const at = { store: site, cwd: work };
    assert.is(strata(['compose', 'add', 'base/1'], at).code, 0);
    const clean = join(work, 'clean.sqfs');
    const r0 = strata(['compose', 'squash', clean], at);
    assert.is(r0.code, 0, r0.stderr.toString());
    const cleanSha = sha(readFileSync(clean));
    // The store's writer keeps entry lists in cache/entries/<layer sha256>.rows: one JSON
    // array, a row per line.
    const entriesDir = join(site, 'cache', 'entries');
    const layerFile = readdirSync(entriesDir).find((f) => readFileSync(join(entriesDir, f), 'utf8').includes('os-release'));
    assert.ok(layerFile, 'an entry list for base/1');
    const file = join(entriesDir, layerFile!);
    const original = readFileSync(file, 'utf8');
    const outside = fingerprint(dir).filter((l) => !l.startsWith('six/') && !l.startsWith('site/'));
    const rows = JSON.parse(original) as unknown[][];
    const edits: Array<[string, unknown[][]]> = [
      ['an extra .. entry', [...rows, ['..', 'dir', 0o777, 0, 0, 0, 0]]],
      ['a setuid bit', rows.map((r) => (r[0] === 'usr/bin/hello' ? [r[0], r[1], 0o4755, ...r.slice(3)] : r))],
      ['a changed mode', rows.map((r) => (r[0] === 'etc/os-release' ? [r[0], r[1], 0o666, ...r.slice(3)] : r))],
    ];
    const rowsText = (rs: unknown[][]) => `[\n${rs.map((r) => JSON.stringify(r)).join(',\n')}\n]\n`;
    for (const [what, edited] of edits) {
      writeFileSync(file, rowsText(edited));
      const out = join(work, 'edited.sqfs');
      const r = strata(['compose', 'squash', out], at);
      console.log(`  ${what}: squash ${r.code === 0 ? 'succeeded' : `refused: ${r.stderr.toString().trim()}`}`);
      if (r.code === 0) assert.is(sha(readFileSync(out)), cleanSha, `${what}: the same bytes as with a clean cache`);
      else assertOneLineError(r, what, /cache/);
      const sb = join(work, `sb-${what.replace(/\W+/g, '-')}`);
      writeFileSync(file, rowsText(edited));
      const s = strata(['compose', 'sandbox', sb], at);
      console.log(`  ${what}: sandbox ${s.code === 0 ? 'succeeded' : `refused: ${s.stderr.toString().trim()}`}`);
      if (s.code === 0) {
        assert.is((lstatSync(join(sb, 'usr/bin/hello')).mode & 0o7777).toString(8), '755', `${what}: no setuid bit in the sandbox`);
        assert.is((lstatSync(join(sb, 'etc/os-release')).mode & 0o7777).toString(8), '644', `${what}: the layer's mode`);
      } else {
        assertOneLineError(s, what, /cache/);
        assert.ok(!existsSync(sb) || readdirSync(sb).length === 0, `${what}: a failed sandbox leaves the target as it was`);
      }
      assert.equal(fingerprint(dir).filter((l) => !l.startsWith('six/') && !l.startsWith('site/')), outside, `${what}: nothing outside changed`);
    }
    writeFileSync(file, original);
  });

  test("7. a user's first build uses the site store's entry lists; one found wrong is not used again", ({ dir, site, member }) => {
    const home = userDir(member, join(dir, 'home7'));
    const work = userDir(member, join(home, 'work'));
    const at = inHome(member, home, work);
    const st = ['--store', site];
    for (const m of ['base/1', 'lic/1']) strataOk([...st, 'compose', 'add', m], at);
    const siteLists = join(site, 'cache', 'entries');
    const own = join(home, 'cache', 'strata', 'entries');
    const ownLists = () => (existsSync(own) ? readdirSync(own).filter((f) => f.endsWith('.rows')) : []);
    const img1 = join(work, 'one.sqfs');
    strataOk([...st, 'compose', 'squash', img1], at);
    strataOk([...st, 'compose', 'sandbox', join(work, 'sb1')], at);
    assert.equal(ownLists(), [], "the site's lists were used: the user made none of their own");

    // The staff's list of base/1 edited (a changed mode): the member's build is refused in one
    // line and leaves the site's file as it is (the member cannot write it) ...
    const baseList = readdirSync(siteLists).find((f) => readFileSync(join(siteLists, f), 'utf8').includes('os-release'))!;
    const file = join(siteLists, baseList);
    const original = readFileSync(file, 'utf8');
    try {
      const rows = JSON.parse(original) as unknown[][];
      const edited = rows.map((r) => (r[0] === 'etc/os-release' ? [r[0], r[1], 0o666, ...r.slice(3)] : r));
      writeFileSync(file, `[\n${edited.map((r) => JSON.stringify(r)).join(',\n')}\n]\n`);
      const before = fingerprint(site);
      const img2 = join(work, 'two.sqfs');
      assertOneLineError(strata([...st, 'compose', 'squash', img2], at), 'an edited site list', /cached entry list .* disagrees|is damaged/);
      assert.ok(!existsSync(img2), 'no image from a list the layer does not back');
      assert.equal(fingerprint(site), before, "the site's files are unchanged");
      // ... and the next build reads the layer instead, makes the user's own list, and gives
      // the first build's bytes.
      strataOk([...st, 'compose', 'squash', img2], at);
      assert.is(sha(readFileSync(img2)), sha(readFileSync(img1)), 'the same image as with the clean site list');
      assert.equal(ownLists(), [baseList], "the user's own list of base/1, and only that");
    } finally {
      writeFileSync(file, original);
    }

    // A FIFO in place of the site's list of lic/1 is a miss, not a hang: the build reads the layer.
    const licList = readdirSync(siteLists).find((f) => readFileSync(join(siteLists, f), 'utf8').includes('opt/lic/data'))!;
    const licFile = join(siteLists, licList);
    const licOriginal = readFileSync(licFile);
    const licStat = lstatSync(licFile);
    try {
      rmSync(licFile);
      mustRun('mkfifo', ['-m', '0644', licFile]);
      const img3 = join(work, 'three.sqfs');
      const r = strata([...st, 'compose', 'squash', img3], { ...at, timeout: 60_000 });
      assert.is(r.code, 0, `a FIFO for a list: ${r.stderr.toString()}`);
      assert.is(sha(readFileSync(img3)), sha(readFileSync(img1)), 'the same image');
    } finally {
      rmSync(licFile, { force: true });
      writeFileSync(licFile, licOriginal, { mode: licStat.mode & 0o777 });
      chownSync(licFile, licStat.uid, licStat.gid);
      chmodSync(licFile, licStat.mode & 0o777);
    }
  });

  test.run();
}

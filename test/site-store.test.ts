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
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { CLI } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir, type RunResult, unmount } from './helpers/tmp.js';
import { asUser, ensureGroup, ensureUser, runAs, type TestUser } from './helpers/users.js';

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

function root(args: readonly string[], env: Record<string, string> = {}): RunResult {
  return run(process.execPath, [CLI, ...args], { env });
}

function rootOk(args: readonly string[], env: Record<string, string> = {}): RunResult {
  const r = root(args, env);
  assert.is(r.code, 0, `strata ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** strata as user `u`, in `cwd`, with its own data and cache directories under `home`. */
function as(u: TestUser, home: string, cwd: string, args: readonly string[], env: Record<string, string> = {}): RunResult {
  return runAs(u, process.execPath, [CLI, ...args], {
    cwd,
    env: { HOME: home, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache'), STRATA_SITE_STORES: '', ...env },
  });
}

function asOk(u: TestUser, home: string, cwd: string, args: readonly string[], env: Record<string, string> = {}): RunResult {
  const r = as(u, home, cwd, args, env);
  assert.is(r.code, 0, `${u.name}: strata ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** Exit 1 and exactly one line on stderr. */
function refused(r: RunResult, what: string, re?: RegExp): void {
  const err = r.stderr.toString();
  assert.is(r.code, 1, `${what}: exit ${r.code}, stderr ${err}`);
  assert.is(err.trimEnd().split('\n').length, 1, `${what}: one line, got ${err}`);
  if (re) assert.match(err, re, what);
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

const why = missing({ tools: ['setfacl', 'setpriv', 'useradd', 'grep'], root: true });
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
    rootOk([...S, 'base/1', layers.base]);
    rootOk([...S, 'lic/1', layers.lic, '--restricted', LIC_GROUP, '--requires', 'base/1']);
    rootOk([...S, 'tools/1', layers.extra(0)]);
  });
  test.after((ctx) => removeDir(ctx.dir));

  test('1. two users compose from the read-only store; its files are unchanged', ({ dir, site, member, outsider }) => {
    const before = fingerprint(site);
    for (const [u, mods] of [[member, ['base/1', 'lic/1']], [outsider, ['base/1']]] as const) {
      const home = userDir(u, join(dir, `home1-${u.name}`));
      const work = userDir(u, join(home, 'work'));
      const st = ['--store', site];
      const avail = asOk(u, home, work, [...st, 'compose', 'avail']).stdout.toString();
      assert.match(avail, 'base/1');
      for (const m of mods) asOk(u, home, work, [...st, 'compose', 'add', m]);
      asOk(u, home, work, [...st, 'compose', 'list']);
      asOk(u, home, work, [...st, 'compose', 'lock']);
      asOk(u, home, work, [...st, 'compose', 'save', 'mine']);
      asOk(u, home, work, [...st, 'compose', 'restore', 'mine']);
      asOk(u, home, work, [...st, 'compose', 'sandbox', join(work, 'sb')]);
      asOk(u, home, work, [...st, 'compose', 'squash', join(work, 'img.sqfs')]);
      assert.ok(existsSync(join(work, 'sb/etc/os-release')), `${u.name}: the sandbox holds the base`);
      asOk(u, home, work, [...st, 'store', 'ls']);
      asOk(u, home, work, [...st, 'store', 'show', 'base/1']);
      const verify = asOk(u, home, work, [...st, '--json', 'store', 'verify']);
      assert.equal(JSON.parse(verify.stdout.toString()).problems, [], `${u.name}: verify is clean`);
      // Per-user state is the user's own: the collection is in their data directory.
      assert.ok(existsSync(join(home, 'data', 'strata', 'catalog.json')), `${u.name}: the collection went to the user's own store`);
    }
    assert.equal(fingerprint(site), before, 'the site store is byte-for-byte unchanged');
    // The two users' collections do not meet: each restores its own 'mine'.
    refused(as(member, join(dir, `home1-${member.name}`), dir, ['--store', site, 'store', 'import', 'x/1', dir]), 'import into the site store', /read-only for you/);
    assert.equal(fingerprint(site), before, 'a refused import leaves it unchanged');
  });

  test('2. the outsider gets no byte of licensed content by any path', ({ dir, site, member, outsider }) => {
    const mhome = userDir(member, join(dir, 'home2-mem'));
    const mwork = userDir(member, join(mhome, 'work'));
    asOk(member, mhome, mwork, ['--store', site, 'compose', 'add', 'lic/1']);
    asOk(member, mhome, mwork, ['--store', site, 'compose', 'lock']);
    const lock = readFileSync(join(mwork, 'strata.lock'));

    const home = userDir(outsider, join(dir, 'home2-out'));
    const work = userDir(outsider, join(home, 'work'));
    writeFileSync(join(work, 'their.lock'), lock);
    const st = ['--store', site];
    refused(as(outsider, home, work, [...st, 'compose', 'add', 'lic/1']), 'add', /denied/);
    refused(as(outsider, home, work, [...st, 'store', 'export', 'lic/1', join(work, 'lic.tar')]), 'export');
    assert.not.ok(existsSync(join(work, 'lic.tar')), 'no export file');
    refused(as(outsider, home, work, [...st, 'store', 'show', 'lic/1']), 'show');
    refused(as(outsider, home, work, [...st, 'rebuild', join(work, 'their.lock'), '-o', join(work, 'x.sqfs')]), 'rebuild', /denied/);
    refused(as(outsider, home, work, [...st, 'compose', 'sandbox', join(work, 'sb'), '--lock', join(work, 'their.lock')]), 'sandbox --lock', /denied/);
    refused(as(outsider, home, work, [...st, 'compose', 'squash', join(work, 'y.sqfs'), '--lock', join(work, 'their.lock')]), 'squash --lock', /denied/);
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
    asOk(member, home, work, ['--store', site, 'compose', 'add', 'lic/1']);
    const img = join(work, 'lic.sqfs');
    asOk(member, home, work, ['--store', site, 'compose', 'squash', img]);
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
    asOk(member, home, work, ['-q', 'store', 'import', 'mine/1', src, '--requires', 'base/1'], env);
    const listed = JSON.parse(asOk(member, home, work, ['--json', 'store', 'ls'], env).stdout.toString()) as Array<{ fullName: string }>;
    assert.equal(listed.map((m) => m.fullName), ['base/1', 'lic/1', 'mine/1', 'tools/1'], 'both stores, in name order');
    asOk(member, home, work, ['compose', 'add', 'mine/1'], env);
    asOk(member, home, work, ['compose', 'sandbox', join(work, 'sb')], env);
    assert.ok(existsSync(join(work, 'sb/opt/mine/README')) && existsSync(join(work, 'sb/etc/os-release')), 'own and site layers in the sandbox');
    asOk(member, home, work, ['compose', 'squash', join(work, 'a.sqfs')], env);
    // A fresh shell: nothing but the lock and the path.
    const fresh = userDir(member, join(home, 'fresh'));
    const r = runAs(member, 'sh', ['-c', `cd "${fresh}" && STRATA_PATH="${own}:${site}" "${process.execPath}" "${CLI}" rebuild "${join(work, 'strata.lock')}" -o "${join(fresh, 'b.sqfs')}"`], {
      env: { HOME: home, XDG_DATA_HOME: join(home, 'data'), XDG_CACHE_HOME: join(home, 'cache2') },
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
      asOk(u, homes[i]!, works[i]!, ['--store', site, 'compose', 'add', 'base/1', 'tools/1']);
      asOk(u, homes[i]!, works[i]!, ['--store', site, 'compose', 'lock']);
    }
    asOk(member, homes[0]!, works[0]!, ['--store', site, 'rebuild', join(works[0]!, 'strata.lock'), '-o', join(works[0]!, 'quiet.sqfs')]);
    const quiet = sha(readFileSync(join(works[0]!, 'quiet.sqfs')));

    let stop = false;
    const staff = (async () => {
      let n = 1;
      while (!stop) {
        const S = ['--store', site, '-q', 'store'];
        await runAsync([process.execPath, CLI, ...S, 'import', `churn/${n}`, layers.extra(n)]);
        await runAsync([process.execPath, CLI, ...S, 'rm', 'tools/1']);
        await runAsync([process.execPath, CLI, ...S, 'gc']);
        if (n > 1) await runAsync([process.execPath, CLI, ...S, 'rm', `churn/${n - 1}`]);
        await runAsync([process.execPath, CLI, ...S, 'import', 'tools/1', layers.extra(0)]);
        n++;
      }
    })();
    const builds = users.map(async (u, i) => {
      const results: string[] = [];
      for (let round = 0; round < 4; round++) {
        const out = join(works[i]!, `r${round}.sqfs`);
        const r = await runAsync([...asUser(u), process.execPath, CLI, '--store', site, 'rebuild', join(works[i]!, 'strata.lock'), '-o', out], {
          cwd: works[i]!,
          env: { ...process.env, HOME: homes[i]!, XDG_DATA_HOME: join(homes[i]!, 'data'), XDG_CACHE_HOME: join(homes[i]!, 'cache'), STRATA_SITE_STORES: '' },
        });
        assert.is(r.code, 0, `${u.name} round ${round}: ${r.stderr}`);
        results.push(sha(readFileSync(out)));
      }
      return results;
    });
    const all = await Promise.all(builds).finally(() => (stop = true));
    await staff;
    for (const r of all) for (const h of r) assert.is(h, quiet, 'a build during staff work gives the quiet bytes');
    const v = JSON.parse(rootOk(['--store', site, '--json', 'store', 'verify']).stdout.toString());
    assert.equal(v.problems, [], 'verify is clean');
  });

  test('6. edited entry-list caches never change an output', ({ dir, site }) => {
    // Root is the site's writer: its cache is the store's cache/entries.
    const work = join(dir, 'six');
    mkdirSync(work);
    const st = ['--store', site];
    assert.is(run(process.execPath, [CLI, ...st, 'compose', 'add', 'base/1'], { cwd: work }).code, 0);
    const clean = join(work, 'clean.sqfs');
    const r0 = run(process.execPath, [CLI, ...st, 'compose', 'squash', clean], { cwd: work });
    assert.is(r0.code, 0, r0.stderr.toString());
    const cleanSha = sha(readFileSync(clean));
    // The store's writer keeps entry lists in cache/entries/<layer sha256>.json.
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
    for (const [what, edited] of edits) {
      writeFileSync(file, JSON.stringify(edited));
      const out = join(work, 'edited.sqfs');
      const r = run(process.execPath, [CLI, ...st, 'compose', 'squash', out], { cwd: work });
      console.log(`  ${what}: squash ${r.code === 0 ? 'succeeded' : `refused: ${r.stderr.toString().trim()}`}`);
      if (r.code === 0) assert.is(sha(readFileSync(out)), cleanSha, `${what}: the same bytes as with a clean cache`);
      else refused(r, what, /cache/);
      const sb = join(work, `sb-${what.replace(/\W+/g, '-')}`);
      writeFileSync(file, JSON.stringify(edited));
      const s = run(process.execPath, [CLI, ...st, 'compose', 'sandbox', sb], { cwd: work });
      console.log(`  ${what}: sandbox ${s.code === 0 ? 'succeeded' : `refused: ${s.stderr.toString().trim()}`}`);
      if (s.code === 0) {
        assert.is((lstatSync(join(sb, 'usr/bin/hello')).mode & 0o7777).toString(8), '755', `${what}: no setuid bit in the sandbox`);
        assert.is((lstatSync(join(sb, 'etc/os-release')).mode & 0o7777).toString(8), '644', `${what}: the layer's mode`);
      } else {
        refused(s, what, /cache/);
        assert.ok(!existsSync(sb) || readdirSync(sb).length === 0, `${what}: a failed sandbox leaves the target as it was`);
      }
      assert.equal(fingerprint(dir).filter((l) => !l.startsWith('six/') && !l.startsWith('site/')), outside, `${what}: nothing outside changed`);
    }
    writeFileSync(file, original);
  });

  test.run();
}

function runAsync(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd!, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

/**
 * Modes never wider than the layers allow, whoever builds and wherever (spec/compose.md, "Tree
 * writer"): a non-root sandbox cannot give files the layer's group, so the builder's primary
 * group gets no group bits the layer gave another group; on a filesystem without ACL support
 * (ext4 mounted noacl) the ACL cannot be set, so the mode is narrowed as SquashFS's is (the
 * mask never becomes group bits), and strata says so once. Both as the kernel sees them.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { strata } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { ensureGroup, ensureUser, type TestUser } from './helpers/users.js';

interface Ctx {
  dir: string;
  store: string;
  user: TestUser;
  lic: number;
}

/** The command prefix that runs as root of a new user namespace mapping only root; undefined (said) where none can be made. */
function rootOfUserNamespace(): string[] | undefined {
  const ns = ['unshare', '--user', '--map-root-user'];
  const probe = run(ns[0]!, [...ns.slice(1), 'true']);
  if (probe.code === 0) return ns;
  console.log(`  skip: no user namespace here: ${probe.stderr.toString().trim().split('\n')[0]}`);
  return undefined;
}

/** Imports `src` as module `name` and makes `work` a stack of it alone. */
function stackOf(store: string, name: string, src: string, work: string): void {
  assert.is(strata(['-q', 'store', 'import', name, src], { store }).code, 0);
  mkdirSync(work);
  assert.is(strata(['-q', 'compose', 'add', name], { store, cwd: work }).code, 0);
}

/** Every group that may read `file` by its mode and ACL, as getfacl shows them. */
function acl(file: string): string[] {
  return mustRun('getfacl', ['-pn', '--omit-header', file]).stdout.toString().trim().split('\n');
}

const why = missing({ tools: ['setfacl', 'getfacl', 'setpriv', 'mkfs.ext4', 'mount'], root: true });
if (why) skipSuite('modes never wider than the layers', why);
else {
  const test = suite<Ctx>('modes never wider than the layers');
  test.before((ctx) => {
    ctx.dir = tempDir('strata-narrow-');
    chmodSync(ctx.dir, 0o755);
    ctx.lic = ensureGroup('st-narrow-lic');
    ctx.user = ensureUser('st-narrow-user');
    const src = join(ctx.dir, 'src');
    mkdirSync(join(src, 'd'), { recursive: true });
    // Group bits for root's group only, and an ACL that gives a licence group read, others nothing.
    writeFileSync(join(src, 'd', 'grouponly'), 'g\n', { mode: 0o640 });
    writeFileSync(join(src, 'd', 'licensed'), 'l\n', { mode: 0o640 });
    mustRun('setfacl', ['-m', `g:${ctx.lic}:r`, join(src, 'd', 'licensed')]);
    mustRun('setfacl', ['-m', 'g::-', join(src, 'd', 'licensed')]);
    ctx.store = join(ctx.dir, 'store');
    const r = strata(['-q', 'store', 'import', 'n/1', src], { store: ctx.store });
    assert.is(r.code, 0, r.stderr.toString());
  });
  test.after((ctx) => removeDir(ctx.dir));

  test('a non-root sandbox gives the builder\'s group nothing the layer gave another group', ({ dir, store, user }) => {
    const work = join(dir, 'work-user');
    mkdirSync(work);
    chownSync(work, user.uid, user.gid);
    for (const args of [['compose', 'add', 'n/1'], ['compose', 'sandbox', 'sb']]) {
      const r = strata(['-q', ...args], { store, cwd: work, as: user, env: { XDG_CACHE_HOME: join(work, '.cache') } });
      assert.is(r.code, 0, r.stderr.toString());
    }
    const g = lstatSync(join(work, 'sb/d/grouponly'));
    assert.is(g.gid, user.gid, 'owned by the builder\'s group (no chown without root)');
    assert.is(g.mode & 0o070, 0, 'which gets none of the bits the layer gave root\'s group');
    const l = acl(join(work, 'sb/d/licensed'));
    assert.ok(l.includes('group::---'), `the owning group gets nothing: ${l.join(' ')}`);
    assert.ok(l.some((x) => /^group:\d+:r--$/.test(x)), 'the licence group keeps its entry');
  });

  test('root of a user namespace without the layer\'s ids: the owning group entry narrowed as a user\'s is', ({ dir, store, user }) => {
    // Root there (only uid 0 mapped) cannot give a file the layer's owner (EINVAL): the file
    // keeps root's group, which then gets no more than others, in its mode and in its ACL.
    // The ACL names only ids mapped there (group 0 beside the owning group): one naming
    // another cannot be set at all (the next test).
    const ns = rootOfUserNamespace();
    if (!ns) return;
    const src = join(dir, 'src-ns');
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'd', 'foreign'), 'f\n', { mode: 0o640 });
    mustRun('setfacl', ['-m', 'g:0:r', join(src, 'd', 'foreign')]);
    chownSync(join(src, 'd', 'foreign'), user.uid, user.gid);
    const work = join(dir, 'work-ns');
    stackOf(store, 'ns/1', src, work);
    const r = strata(['compose', 'sandbox', 'sb'], { store, cwd: work, prefix: ns });
    assert.is(r.code, 0, r.stderr.toString());
    assert.match(r.stderr.toString(), /some metadata could not be applied: ownership \(\d+\)/);
    const f = lstatSync(join(work, 'sb/d/foreign'));
    assert.is.not(f.uid, user.uid, 'the owner could not be given');
    const l = acl(join(work, 'sb/d/foreign'));
    assert.ok(l.includes('group::---'), `the group kept gets no more than others: ${l.join(' ')}`);
    assert.ok(l.includes('group:0:r--'), `the named group keeps its entry: ${l.join(' ')}`);
    assert.is(f.mode & 0o070, 0o040, 'the mask (the named group\'s read) is the group bits');
  });

  test('root of a user namespace that does not map an ACL\'s group: the mode narrowed instead, in the sandbox and from images', ({ dir, store, lic }) => {
    // The kernel refuses an ACL naming an id the namespace does not map (EINVAL), as it refuses
    // a chown to one. The build goes on, and the node gets a mode granting no more than its
    // ACL did, never the mask as group bits: the owning group had nothing, the licence group
    // the read the mask shows. A directory's named group shared what everyone has.
    const ns = rootOfUserNamespace();
    if (!ns) return;
    const src = join(dir, 'src-unmapped');
    mkdirSync(join(src, 'd', 'shared'), { recursive: true });
    writeFileSync(join(src, 'd', 'licensed'), 'l\n', { mode: 0o640 });
    mustRun('setfacl', ['-m', `g:${lic}:r,g::-`, join(src, 'd', 'licensed')]);
    mustRun('setfacl', ['-m', `g:${lic}:rx,d:g:${lic}:rx`, join(src, 'd', 'shared')]);
    const work = join(dir, 'work-unmapped');
    stackOf(store, 'unmapped/1', src, work);
    for (const image of ['img.erofs', 'img.sqfs']) assert.is(strata(['-q', 'compose', 'squash', image], { store, cwd: work }).code, 0);
    const builds: [string, string[]][] = [
      ['sb', ['compose', 'sandbox', 'sb']],
      ['from-erofs', ['unsquash', 'img.erofs', 'from-erofs']],
      ['from-sqfs', ['unsquash', 'img.sqfs', 'from-sqfs']],
    ];
    for (const [out, args] of builds) {
      const r = strata(args, { store, cwd: work, prefix: ns });
      assert.is(r.code, 0, `${out}: ${r.stderr.toString()}`);
      assert.match(r.stderr.toString(), /this user namespace does not map every user and group the ACLs name: 2 paths have a mode/, out);
      if (out !== 'sb') assert.match(r.stdout.toString(), /restored ACLs on 0 paths/, out);
      const file = join(work, out, 'd/licensed');
      assert.equal(acl(file), ['user::rw-', 'group::---', 'other::---'], `${out}: no ACL on the file`);
      assert.is(lstatSync(file).mode & 0o777, 0o600, `${out}: nobody but the owner reads it`);
      assert.equal(acl(join(work, out, 'd/shared')), ['user::rwx', 'group::r-x', 'other::r-x'], `${out}: no ACL, default or access, on the directory`);
    }
  });

  test('on a filesystem mounted noacl: no mask as group bits; narrowed and said once', ({ dir, store }) => {
    const img = join(dir, 'fs.img');
    mustRun('truncate', ['-s', '32M', img]);
    mustRun('mkfs.ext4', ['-q', '-F', img]);
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    const m = run('mount', ['-o', 'loop,noacl', img, mnt]);
    if (m.code !== 0) {
      console.log(`  skip: this kernel's ext4 has no noacl mount option (ACLs are always on), so no ACL-less filesystem to build on: ${m.stderr.toString().trim().split('\n')[0]}`);
      return;
    }
    try {
      const work = join(mnt, 'work');
      mkdirSync(work);
      assert.is(strata(['-q', 'compose', 'add', 'n/1'], { store, cwd: work }).code, 0);
      const r = strata(['compose', 'sandbox', 'sb'], { store, cwd: work });
      assert.is(r.code, 0, r.stderr.toString());
      const lic = lstatSync(join(work, 'sb/d/licensed'));
      assert.is(lic.mode & 0o077, 0, `no group or other bits without the ACL (mode ${(lic.mode & 0o777).toString(8)})`);
      assert.is(lstatSync(join(work, 'sb/d/grouponly')).mode & 0o777, 0o640, 'a file without an ACL keeps its mode');
      const said = r.stderr.toString().split('\n').filter((l) => /ACL/i.test(l));
      assert.is(said.length, 1, `said once: ${r.stderr}`);
    } finally {
      unmount(mnt);
    }
  });

  test.run();
}

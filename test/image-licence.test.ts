/**
 * A licensed module in a SquashFS image, with real users and a kernel mount: a member of the
 * licence group builds the image of a restricted module; mounted by the kernel (root, loop,
 * ro), the member reads and runs the licensed files as the layer's ACL allows and the outsider
 * cannot; the image file itself and the cached compressed blocks of the restricted layer are
 * the licence group's, with no access for others.
 */
import * as assert from 'uvu/assert';
import { chmodSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import { CLI } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { canSwitchUsers, ensureGroup, ensureUser, runAs, type TestUser } from './helpers/users.js';

const NAME = 'image: a licensed module in a kernel-mounted image, for its group only';
const why = missing({ tools: ['setfacl', 'mksquashfs', 'unsquashfs', 'setpriv'], root: true, check: () => (canSwitchUsers() ? undefined : 'cannot switch users') });

if (why) skipSuite(NAME, why);
else {
  const Lic = suite(NAME);
  let tmp = '';
  let mnt = '';
  let lic = 0;
  let member: TestUser;
  let outsider: TestUser;

  Lic.before.each(() => {
    tmp = tempDir('strata-image-lic-');
    chmodSync(tmp, 0o755); // both users must reach the mount point below it
    lic = ensureGroup('st-img-lic');
    member = ensureUser('st-img-member', ['st-img-lic']);
    outsider = ensureUser('st-img-outsider');
  });

  Lic.after.each(() => {
    if (mnt) unmount(mnt);
    mnt = '';
    removeDir(tmp);
  });

  /** The licensed layer: directories and files whose ACLs open them to the licence group. */
  function layer(dir: string): void {
    mkdirSync(join(dir, 'opt/lic/bin'), { recursive: true });
    mkdirSync(join(dir, 'opt/pub'), { recursive: true });
    writeFileSync(join(dir, 'opt/lic/LICENSE'), 'licence text\n');
    writeFileSync(join(dir, 'opt/lic/bin/tool'), '#!/bin/sh\necho licensed-ok\n');
    writeFileSync(join(dir, 'opt/pub/readme'), 'public\n');
    chmodSync(join(dir, 'opt/lic'), 0o700);
    chmodSync(join(dir, 'opt/lic/bin'), 0o700);
    chmodSync(join(dir, 'opt/lic/bin/tool'), 0o700);
    chmodSync(join(dir, 'opt/lic/LICENSE'), 0o600);
    chmodSync(join(dir, 'opt/pub/readme'), 0o644);
    for (const [p, perm] of [['opt/lic', 'r-x'], ['opt/lic/bin', 'r-x'], ['opt/lic/bin/tool', 'r-x'], ['opt/lic/LICENSE', 'r--']] as const) {
      mustRun('setfacl', ['-m', `g:${lic}:${perm},m::${perm}`, join(dir, p)]);
    }
  }

  Lic('the member reads and runs what the ACL grants, the outsider gets nothing; image and cached blocks are the group\'s', () => {
    const src = join(tmp, 'src');
    layer(src);
    const store = join(tmp, 'store');
    const work = join(tmp, 'work');
    mkdirSync(work);
    const as = (u: TestUser | undefined, ...args: string[]) => {
      const argv = [CLI, '--store', store, ...args];
      return u ? runAs(u, process.execPath, argv, { cwd: work }) : run(process.execPath, argv, { cwd: work });
    };
    const ok = (r: ReturnType<typeof as>, what: string) => assert.is(r.code, 0, `${what}: ${r.stderr}`);
    ok(as(undefined, '-q', 'store', 'import', 'licapp/1', src, '--restricted', 'st-img-lic'), 'import');
    // Until stores can be shared read-only (the site store), the member works in a store of
    // their own: hand them this one.
    mustRun('chown', ['-R', `${member.uid}:${member.gid}`, store, work]);
    ok(as(member, '-q', 'compose', 'add', 'licapp/1'), 'member: compose add');
    const image = join(work, 'lic.sqfs');
    ok(as(member, '-q', 'compose', 'squash', image), 'member: compose squash');

    // The image file: the licence group's, nothing for others; the outsider cannot read it.
    const st = lstatSync(image);
    assert.ok(st.isFile());
    assert.is(st.gid, lic, 'image file group is the licence group');
    assert.is(st.mode & 0o007, 0, `image file mode ${(st.mode & 0o777).toString(8)}: no access for others`);
    assert.is(runAs(outsider, 'head', ['-c', '4', image]).code, 1, 'the outsider cannot read the image file');
    assert.is(runAs(member, 'head', ['-c', '4', image]).stdout.toString('latin1'), 'hsqs', 'the member can');

    // The restricted layer's cached blocks: packs of the licence group, no access for others.
    const packs = mustRun('find', [join(store, 'cache/image-blocks'), '-type', 'f', '-name', '*.pack']).stdout.toString().trim().split('\n');
    assert.ok(packs.length > 0 && packs[0] !== '', 'the build cached blocks');
    for (const p of packs) {
      const ps = lstatSync(p);
      assert.is(ps.gid, lic, `${p}: group`);
      assert.is(ps.mode & 0o007, 0, `${p}: mode ${(ps.mode & 0o777).toString(8)}`);
    }

    // The kernel mount.
    mnt = join(tmp, 'mnt');
    mkdirSync(mnt);
    mustRun('mount', ['-t', 'squashfs', '-o', 'loop,ro', image, mnt]);
    const tool = join(mnt, 'opt/lic/bin/tool');
    const licence = join(mnt, 'opt/lic/LICENSE');
    assert.is(runAs(member, tool, []).stdout.toString(), 'licensed-ok\n', 'the member runs the licensed tool');
    assert.is(runAs(member, 'cat', [licence]).stdout.toString(), 'licence text\n', 'the member reads the licence');
    assert.is(runAs(member, 'ls', [join(mnt, 'opt/lic')]).code, 0, 'the member lists the licensed directory');
    assert.is(runAs(member, 'sh', ['-c', `: > '${licence}'`]).code !== 0, true, 'nobody writes (read-only, and the ACL gave no w)');
    for (const [cmd, args] of [[tool, []], ['cat', [licence]], ['ls', [join(mnt, 'opt/lic')]]] as const) {
      const r = runAs(outsider, cmd, args);
      assert.is.not(r.code, 0, `the outsider: ${cmd} ${args.join(' ')} must fail`);
      assert.match(r.stderr, /Permission denied/, `the outsider: ${cmd}: ${r.stderr}`);
    }
    assert.is(runAs(outsider, 'cat', [join(mnt, 'opt/pub/readme')]).stdout.toString(), 'public\n', 'the outsider reads public files');
    assert.is(lstatSync(join(mnt, 'opt/lic/LICENSE')).gid, lic);
    assert.is(lstatSync(join(mnt, 'opt/lic/LICENSE')).mode & 0o777, 0o640);
    assert.is(lstatSync(join(mnt, 'opt/lic/bin/tool')).mode & 0o777, 0o750);
    assert.ok(readdirSync(join(mnt, '.strata')).includes('acl.json'));
  });

  Lic.run();
}

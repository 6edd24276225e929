/**
 * Licence ACLs enforced by the kernel inside a mounted strata EROFS image, seen by real users
 * (test/helpers/users.ts: setpriv with the user's uid, gid and groups):
 *   - a member of the ACL's named group and the named user read and execute what it grants;
 *   - a user outside gets EACCES (the directory's other:: is ---);
 *   - a member of the owning group gets exactly group:: (not the mask), so a named-group
 *     entry of --- shuts out that group's members even when group:: would let them in.
 * Needs root (users, mounts).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ErofsCompressor } from '../compose/image/erofs/writer.js';
import { ensureGroup, ensureUser, runAs, canSwitchUsers, type TestUser } from './helpers/users.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { missing, skipSuite } from './helpers/probe.js';
import { buildErofs, corpus } from './erofs-harness.js';

const why = missing({ tools: ['setpriv', 'useradd'], root: true, check: () => (canSwitchUsers() ? undefined : 'cannot switch users') });
if (why) skipSuite('erofs ACLs under a kernel mount', why);
else {
  const Access = suite('erofs ACLs under a kernel mount');
  let tmp = '';
  let named: TestUser;
  let member: TestUser;
  let owner: TestUser;
  let outsider: TestUser;
  const mounts: string[] = [];

  Access.before(() => {
    const lic = ensureGroup('st-erofs-lic');
    const own = ensureGroup('st-erofs-own');
    named = ensureUser('st-erofs-named');
    member = ensureUser('st-erofs-member', ['st-erofs-lic']);
    owner = ensureUser('st-erofs-owner', ['st-erofs-own']);
    outsider = ensureUser('st-erofs-out');
    void lic;
    void own;
  });

  Access.before.each(() => {
    tmp = tempDir('strata-erofs-acl-');
    mustRun('chmod', ['0755', tmp]);
  });
  Access.after.each(() => {
    for (const m of mounts.splice(0)) unmount(m);
    removeDir(tmp);
  });

  // A program is started through sh: setpriv's own exec of a script skips the permission
  // check that every later exec gets, which would hide a missing x bit.
  const may = (u: TestUser, cmd: string, args: string[]) => {
    const r = cmd.startsWith('/') ? runAs(u, 'sh', ['-c', '"$0" "$@"', cmd, ...args]) : runAs(u, cmd, args);
    return { ok: r.code === 0, out: r.stdout.toString(), err: r.stderr.toString() };
  };
  const denied = (u: TestUser, cmd: string, args: string[], what: string) => {
    const r = may(u, cmd, args);
    assert.not.ok(r.ok, `${u.name} must not: ${what}`);
    assert.match(r.err, /Permission denied/, `${u.name}: ${what}: ${r.err}`);
  };

  for (const comp of ['lz4', 'none'] as ErofsCompressor[]) {
    Access(`${comp}: named user, named group, owning group and others get what the ACLs say`, async () => {
      const ids = { user: named.uid, group: ensureGroup('st-erofs-lic'), owner: ensureGroup('st-erofs-own') };
      const items = corpus(ids).filter((i) => i.entry.path === '.' || i.entry.path === 'lic' || i.entry.path.startsWith('lic/'));
      const img = join(tmp, `acl-${comp}.erofs`);
      await buildErofs(items, img, { compressor: comp, workers: 1 });
      mustRun('chmod', ['0644', img]);
      const mnt = join(tmp, 'mnt');
      mkdirSync(mnt);
      mustRun('mount', ['-t', 'erofs', '-o', 'ro', img, mnt]);
      mounts.push(mnt);
      const p = (rel: string) => join(mnt, rel);

      // The named group (group:G:rwx on lic/, r-x on the tool, r-- on LICENSE).
      assert.ok(may(member, 'ls', [p('lic')]).ok, 'member lists lic/');
      assert.is(may(member, 'cat', [p('lic/LICENSE')]).out, 'Licensed to: site staff only\n');
      assert.is(may(member, p('lic/bin/tool'), []).out, 'licensed tool ran\n');
      denied(member, 'cat', [p('lic/data/table')], 'enter lic/data (mode 0770, no access ACL: other::---)');
      denied(member, 'cat', [p('lic/group-only')], 'read group-only (group:G:---)');

      // The named user (user:U:r-x on lic/ and the tool, r-- on LICENSE).
      assert.ok(may(named, 'ls', [p('lic')]).ok, 'named user lists lic/');
      assert.is(may(named, 'cat', [p('lic/LICENSE')]).out, 'Licensed to: site staff only\n');
      assert.is(may(named, p('lic/bin/tool'), []).out, 'licensed tool ran\n');
      denied(named, 'cat', [p('lic/group-only')], 'read group-only (other::---)');

      // The owning group: exactly group:: (r-x on lic/, --- on LICENSE, r-- on the tool).
      assert.ok(may(owner, 'ls', [p('lic')]).ok, 'owner group lists lic/ (group::r-x)');
      denied(owner, 'cat', [p('lic/LICENSE')], 'read LICENSE (group::---, though the mask is r--)');
      assert.is(may(owner, 'cat', [p('lic/group-only')]).out, 'only group::\n');
      assert.ok(may(owner, 'cat', [p('lic/bin/tool')]).ok, 'owner group reads the tool (group::r--)');
      denied(owner, p('lic/bin/tool'), [], 'execute the tool (group::r--, though the mask is r-x)');
      assert.ok(may(owner, 'cat', [p('lic/data/table')]).ok, 'owner group reads lic/data/table (group bits 0770, 0660)');

      // Everyone else: other::--- on lic/.
      denied(outsider, 'ls', [p('lic')], 'list lic/');
      denied(outsider, 'cat', [p('lic/LICENSE')], 'read LICENSE');
      denied(outsider, p('lic/bin/tool'), [], 'execute the tool');
      assert.ok(may(outsider, 'ls', [mnt]).ok, 'the root stays open');
    });
  }

  Access.run();
}

/**
 * A licensed module in an image, SquashFS and EROFS, with real users and a kernel mount: a
 * member of the licence group builds the image of a restricted module; mounted by the kernel
 * (root, loop, ro), the member reads and runs the licensed files as the layer's ACL allows and
 * the outsider cannot; the image file itself and the cached compressed blocks (and segments) of
 * the restricted layer are the licence group's, with no access for others.
 *
 * The formats differ in how: SquashFS cannot store the named-group ACL entry, so the image
 * narrows (the licence group becomes the owning group, its bits the mask); EROFS stores the
 * ACL and the kernel enforces it, so the owning group and mode stay the layer's.
 */
import * as assert from 'uvu/assert';
import { chmodSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import { assertOneLineError, strata, strataJson, strataOk } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, tempDir, unmount } from './helpers/tmp.js';
import { canSwitchUsers, ensureGroup, ensureUser, runAs, type TestUser } from './helpers/users.js';

const NAME = 'image: a licensed module in a kernel-mounted image, for its group only';
const why = missing({ tools: ['setfacl', 'getfacl', 'setpriv'], root: true, check: () => (canSwitchUsers() ? undefined : 'cannot switch users') });

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
    writeFileSync(join(dir, 'opt/lic/data'), 'licensed table row\n'.repeat(3000)); // compressed, so cached
    writeFileSync(join(dir, 'opt/lic/bin/tool'), '#!/bin/sh\necho licensed-ok\n');
    writeFileSync(join(dir, 'opt/pub/readme'), 'public\n');
    chmodSync(join(dir, 'opt/lic'), 0o700);
    chmodSync(join(dir, 'opt/lic/bin'), 0o700);
    chmodSync(join(dir, 'opt/lic/bin/tool'), 0o700);
    chmodSync(join(dir, 'opt/lic/LICENSE'), 0o600);
    chmodSync(join(dir, 'opt/lic/data'), 0o600);
    chmodSync(join(dir, 'opt/pub/readme'), 0o644);
    for (const [p, perm] of [['opt/lic', 'r-x'], ['opt/lic/bin', 'r-x'], ['opt/lic/bin/tool', 'r-x'], ['opt/lic/LICENSE', 'r--'], ['opt/lic/data', 'r--']] as const) {
      mustRun('setfacl', ['-m', `g:${lic}:${perm},m::${perm}`, join(dir, p)]);
    }
  }

  const FORMATS = [
    { format: 'squashfs', file: 'lic.sqfs', magic: (b: Buffer) => b.toString('latin1', 0, 4) === 'hsqs' },
    { format: 'erofs', file: 'lic.erofs', magic: (b: Buffer) => b.length >= 1028 && b.readUInt32LE(1024) === 0xe0f5e1e2 },
  ] as const;

  for (const { format, file, magic } of FORMATS) Lic(`${format}: the member reads and runs what the ACL grants, the outsider gets nothing; image and cached blocks are the group's`, () => {
    const src = join(tmp, 'src');
    layer(src);
    const store = join(tmp, 'store');
    const work = join(tmp, 'work');
    mkdirSync(work);
    strataOk(['-q', 'store', 'import', 'licapp/1', src, '--restricted', 'st-img-lic'], { store, cwd: work });
    // The member owns this store, so the build's block cache is the store's (a staff store read
    // by members, with caches in the member's home, is test/store-site's).
    mustRun('chown', ['-R', `${member.uid}:${member.gid}`, store, work]);
    strataOk(['-q', 'compose', 'add', 'licapp/1'], { store, cwd: work, as: member });
    const image = join(work, file);
    strataOk(['-q', 'compose', 'squash', image], { store, cwd: work, as: member });

    // The image file: the licence group's, nothing for others; the outsider cannot read it.
    const st = lstatSync(image);
    assert.ok(st.isFile());
    assert.is(st.gid, lic, 'image file group is the licence group');
    assert.is(st.mode & 0o007, 0, `image file mode ${(st.mode & 0o777).toString(8)}: no access for others`);
    assert.is(runAs(outsider, 'head', ['-c', '4', image]).code, 1, 'the outsider cannot read the image file');
    assert.ok(magic(runAs(member, 'head', ['-c', '1028', image]).stdout), 'the member can');

    // The restricted layer's cached blocks and its segment: the licence group's, no access for
    // others.
    const packs = mustRun('find', [join(store, 'cache/image-blocks'), '-type', 'f', '(', '-name', '*.pack', '-o', '-name', '*.seg', ')']).stdout.toString().trim().split('\n');
    assert.ok(packs.length > 0 && packs[0] !== '', 'the build cached blocks');
    assert.ok(packs.some((p) => p.endsWith('.seg')), 'and recorded the layer\'s segment');
    for (const p of packs) {
      const ps = lstatSync(p);
      assert.is(ps.gid, lic, `${p}: group`);
      assert.is(ps.mode & 0o007, 0, `${p}: mode ${(ps.mode & 0o777).toString(8)}`);
    }

    // The kernel mount.
    mnt = join(tmp, 'mnt');
    mkdirSync(mnt);
    mustRun('mount', ['-t', format, '-o', 'loop,ro', image, mnt]);
    const tool = join(mnt, 'opt/lic/bin/tool');
    const licence = join(mnt, 'opt/lic/LICENSE');
    assert.is(runAs(member, tool, []).stdout.toString(), 'licensed-ok\n', 'the member runs the licensed tool');
    assert.is(runAs(member, 'cat', [licence]).stdout.toString(), 'licence text\n', 'the member reads the licence');
    assert.is(runAs(member, 'cat', [join(mnt, 'opt/lic/data')]).stdout.toString(), 'licensed table row\n'.repeat(3000), 'and the compressed data');
    assert.is(runAs(member, 'ls', [join(mnt, 'opt/lic')]).code, 0, 'the member lists the licensed directory');
    assert.is(runAs(member, 'sh', ['-c', `: > '${licence}'`]).code !== 0, true, 'nobody writes (read-only, and the ACL gave no w)');
    for (const [cmd, args] of [[tool, []], ['cat', [licence]], ['cat', [join(mnt, 'opt/lic/data')]], ['ls', [join(mnt, 'opt/lic')]]] as const) {
      const r = runAs(outsider, cmd, args);
      assert.is.not(r.code, 0, `the outsider: ${cmd} ${args.join(' ')} must fail`);
      assert.match(r.stderr, /Permission denied/, `the outsider: ${cmd}: ${r.stderr}`);
    }
    assert.is(runAs(outsider, 'cat', [join(mnt, 'opt/pub/readme')]).stdout.toString(), 'public\n', 'the outsider reads public files');
    if (format === 'squashfs') {
      // Narrowed: the licence group owns what its ACL entry opened; the ACLs ride in acl.json.
      assert.is(lstatSync(licence).gid, lic);
      assert.is(lstatSync(licence).mode & 0o777, 0o640);
      assert.is(lstatSync(tool).mode & 0o777, 0o750);
      assert.ok(readdirSync(join(mnt, '.strata')).includes('acl.json'));
    } else {
      // Kept: the layer's owner, group and mode (group bits = the mask), the ACL itself.
      assert.is(lstatSync(licence).gid, 0);
      assert.is(lstatSync(licence).mode & 0o777, 0o640);
      assert.match(mustRun('getfacl', ['-c', '-n', licence]).stdout.toString(), new RegExp(`^group:${lic}:r--$`, 'm'));
    }
  });

  // The usual way a site finds out it forgot --restricted: the content was imported open and
  // built, and is imported again restricted. Every copy the store holds becomes the group's.
  /** The licensed layer imported open as pub/1 and built into open.sqfs (gzip): its blocks are cached. */
  function builtOpen(): { src: string; store: string; work: string; open: string } {
    const src = join(tmp, 'src');
    layer(src);
    const store = join(tmp, 'store');
    const work = join(tmp, 'work');
    mkdirSync(work);
    strataOk(['-q', 'store', 'import', 'pub/1', src], { store, cwd: work });
    strataOk(['-q', 'compose', 'add', 'pub/1'], { store, cwd: work });
    const open = join(work, 'open.sqfs');
    strataOk(['-q', 'compose', 'squash', open, '--comp', 'gzip'], { store, cwd: work });
    return { src, store, work, open };
  }

  Lic('content imported open and built, then restricted: the restricting import gives the group every copy the store holds', () => {
    const { src, store, work, open } = builtOpen();

    const blocks = join(store, 'cache/image-blocks');
    const tags = readdirSync(blocks).filter((t) => t !== 'strata-metadata');
    assert.is(tags.length, 1, `one layer's blocks cached: ${tags.join(', ')}`);
    const tagDir = join(blocks, tags[0]!);
    const cached = mustRun('find', [tagDir, '-type', 'f']).stdout.toString().trim().split('\n');
    assert.ok(cached.some((f) => f.endsWith('.pack')) && cached.some((f) => f.endsWith('.seg')), 'packs and a segment');
    const copies = [join(store, 'blobs'), join(store, 'cache/entries')];
    const outsiderReads = () => [
      ...cached.filter((f) => runAs(outsider, 'head', ['-c', '1', f]).code === 0),
      ...runAs(outsider, 'grep', ['-r', '-l', '-a', '-e', 'licensed table row', '-e', 'opt/lic/data', ...copies]).stdout.toString().trim().split('\n').filter(Boolean),
    ];
    // Open for now: the outsider reads the cached blocks, the layer and its entry list (so the
    // check after the restricting import can fail).
    const before = outsiderReads();
    assert.equal(before.filter((f) => f.startsWith(tagDir)).length, cached.length, 'before: every cached block file is readable');
    assert.ok(before.some((f) => f.startsWith(join(store, 'blobs'))) && before.some((f) => f.startsWith(join(store, 'cache/entries'))), `before: ${before.join(', ')}`);

    strataOk(['-q', 'store', 'import', 'lic/1', src, '--restricted', 'st-img-lic'], { store, cwd: work });
    assert.equal(outsiderReads(), [], 'after: the outsider reads none of them');
    assert.is(lstatSync(tagDir).gid, lic, 'the layer\'s cache directory is the group\'s');
    assert.is(lstatSync(tagDir).mode & 0o777, 0o750);
    for (const f of cached) assert.is(runAs(member, 'head', ['-c', '1', f]).code, 0, `the member still reads ${f}`);

    // The open module is listed as restricted, and the outsider may not load it (Lmod's words).
    const listed = strataJson<Array<{ fullName: string; restricted: string | null }>>(['store', 'ls'], { store });
    assert.equal(listed.map((m) => [m.fullName, m.restricted]), [['lic/1', 'st-img-lic'], ['pub/1', 'st-img-lic']]);
    const owork = join(tmp, 'outsider-work');
    mkdirSync(owork);
    mustRun('chown', [`${outsider.uid}:${outsider.gid}`, owork]);
    assertOneLineError(strata(['-q', 'compose', 'add', 'pub/1'], { store, cwd: owork, as: outsider }), 'the outsider loads pub/1', /Access to pub\/1 is denied/);
    strataOk(['-q', 'compose', 'lock', '-o', join(owork, 'pub.lock')], { store, cwd: work });
    assertOneLineError(strata(['-q', 'compose', 'squash', join(owork, 'x.sqfs'), '--lock', join(owork, 'pub.lock')], { store, cwd: owork, as: outsider }),
      'the outsider builds from a lock naming pub/1', /Access to pub\/1 is denied/);

    // The open module's outputs now carry the licence too: its content is restricted.
    const again = join(work, 'again.sqfs');
    strataOk(['-q', 'compose', 'squash', again, '--comp', 'gzip'], { store, cwd: work });
    assert.is(lstatSync(again).gid, lic, 'the image of pub/1 is the group\'s');
    assert.is(lstatSync(again).mode & 0o007, 0, 'no access for others');
    assert.is(lstatSync(open).mode & 0o007, 0o004, 'the image built before stays as it was (an output is its owner\'s)');
    const tar = join(work, 'pub.tar');
    strataOk(['-q', 'store', 'export', 'pub/1', tar], { store, cwd: work });
    assert.is(lstatSync(tar).gid, lic, 'and so is its export');
    assert.is(lstatSync(tar).mode & 0o007, 0);
  });

  Lic('a restricting import that cannot give a cached copy to the group (another owner\'s) says so in one line and publishes nothing', () => {
    const { src, store, work } = builtOpen();
    // The member runs the store now (as one of several staff); the cached blocks stay root's.
    mustRun('chown', ['-R', `${member.uid}:${member.gid}`, store, work]);
    const blocks = join(store, 'cache/image-blocks');
    const tag = readdirSync(blocks).find((t) => t !== 'strata-metadata')!;
    mustRun('chown', ['-R', '0:0', join(blocks, tag)]);
    const r = strata(['-q', 'store', 'import', 'lic/1', src, '--restricted', 'st-img-lic'], { store, cwd: work, as: member });
    const line = assertOneLineError(r, 'restricting import over root\'s cache');
    assert.match(line, new RegExp(`cannot give '.*/cache/image-blocks/${tag}' to the licence group: EPERM`));
    assert.equal(strataJson<Array<{ fullName: string }>>(['store', 'ls'], { store }).map((m) => m.fullName), ['pub/1'], 'lic/1 is not published');
  });

  Lic.run();
}

/**
 * End to end, through the CLI: the four-layer stack (test/fixtures/stack.ts) plus a small
 * layer with trusted.* xattrs is imported, composed, written as a sandbox (`compose sandbox`)
 * and as an image (`compose squash`, gzip and zstd), and the image is checked by the
 * reference tools only, never by strata's reader:
 *   - `unsquashfs -lls` / `-lln` listings against a listing rendered from the sandbox;
 *   - `unsquashfs -d` extraction against the sandbox (test/helpers/tree.ts);
 *   - `sqfsdiff` against `mksquashfs` of the sandbox (sqfsdiff 1.2 ignores xattrs, so both
 *     images are also extracted by unsquashfs and the trees compared);
 *   - a kernel mount (`mount -t squashfs -o loop,ro`), plus getfattr of trusted.* and
 *     security.capability.
 * Files whose content another file has (in the site layer, copies of app's files) must point
 * at the first file's blocks and tail, as squashfs-tools-ng's rdsquashfs reads the inodes.
 * ACL paths: SquashFS holds no ACLs; the image's mode keeps everything but the group bits,
 * which become group:: & mask as getfacl of the sandbox shows them. `strata unsquash` puts
 * every ACL back. Needs root (fixture, mounts, trusted.* xattrs).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeStack, STACK, type Stack } from './fixtures/stack.js';
import { diffTrees, snapshotTree, type TreeSnapshot } from './helpers/tree.js';
import { mustRun, removeDir, run, tempDir, unmount } from './helpers/tmp.js';
import { strataJson, strataOk, type Workspace } from './helpers/cli.js';
import { expectedListing, importStack, narrowedForImage, parseListing, type ListedEntry, type SquashJson } from './image-harness.js';
import { noise } from './helpers/random.js';

/**
 * A layer the stack fixture lacks: trusted.* xattrs on a file and a directory (root only), and
 * copies of app's files: big.dat (full blocks and a tail), big.dat with another last byte, a
 * small file.
 */
function makeSiteLayer(dir: string): void {
  mkdirSync(join(dir, 'opt/site'), { recursive: true });
  writeFileSync(join(dir, 'opt/site/policy'), 'site policy\n', { mode: 0o644 });
  const big = noise(STACK.bigFileSize, 4); // the bytes of STACK.bigFile
  writeFileSync(join(dir, 'opt/site/big.copy'), big);
  big[big.length - 1]! ^= 1;
  writeFileSync(join(dir, 'opt/site/big.near'), big);
  writeFileSync(join(dir, 'opt/site/f000.copy'), 'small file 000\n');
  symlinkSync('policy', join(dir, 'opt/site/current'));
  mustRun('setfattr', ['-n', 'trusted.site.label', '-v', '0x00ff10ab', join(dir, 'opt/site/policy')]);
  mustRun('setfattr', ['-n', 'trusted.site.zone', '-v', 'restricted', join(dir, 'opt/site')]);
  mustRun('setfattr', ['-n', 'user.site', '-v', 'x', join(dir, 'opt/site/policy')]);
  for (const p of ['opt/site/policy', 'opt/site/big.copy', 'opt/site/big.near', 'opt/site/f000.copy', 'opt/site', 'opt', '.']) mustRun('touch', ['-h', '-d', '@1640000000', join(dir, p)]);
}

const Ref = suite('image: the four-layer stack against unsquashfs, sqfsdiff, mksquashfs and a kernel mount');
let tmp = '';
let o: Workspace;
let stack: Stack;
const mounts: string[] = [];

Ref.before.each(() => {
  tmp = tempDir('strata-image-ref-');
  o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
  mkdirSync(o.cwd);
  stack = makeStack(join(tmp, 'stack'));
  makeSiteLayer(join(tmp, 'site'));
  strataOk(['-q', 'store', 'import', 'site/1', join(tmp, 'site')], o);
  importStack(o, stack, undefined, ['site/1']);
  strataOk(['-q', 'compose', 'sandbox', join(tmp, 'sandbox')], o);
});

Ref.after.each(() => {
  for (const m of mounts.splice(0)) unmount(m);
  removeDir(tmp);
});

function listing(image: string, flag: '-lls' | '-lln'): ListedEntry[] {
  const out = mustRun('unsquashfs', [flag, '-n', '-d', 'R', image], { env: { TZ: 'UTC' } }).stdout.toString('utf8');
  return parseListing(out).map((e) => (e.modeString[0] === 'd' ? { ...e, size: '' } : e));
}

function mount(image: string, at: string): void {
  mkdirSync(at);
  mustRun('mount', ['-t', 'squashfs', '-o', 'loop,ro', image, at]);
  mounts.push(at);
}

function getfattr(path: string, pattern: string): string {
  return mustRun('getfattr', ['-h', '--absolute-names', '-d', '-m', pattern, '-e', 'hex', path]).stdout.toString('utf8').split('\n').slice(1).join('\n').trim();
}

/** Every check of one image against the sandbox; `ref` is mksquashfs of the narrowed copy. */
function checkImage(image: string, sandbox: TreeSnapshot, ref: string, tag: string, blockSize = 131072): void {
  const { snap: want, aclPaths, changed } = narrowedForImage(sandbox);
  assert.ok(aclPaths.length >= 5, `${tag}: the fixture has ACL paths (${aclPaths.join(' ')})`);
  assert.ok(changed.includes('opt/lic/lib') && changed.includes('opt/lic/bin'), `${tag}: narrowing changes some modes and groups: ${changed.join(' ')}`);

  // Listings, numeric and with names.
  for (const flag of ['-lln', '-lls'] as const) {
    assert.equal(listing(image, flag), expectedListing(want, flag === '-lln'), `${tag}: unsquashfs ${flag}`);
  }

  // Extraction by unsquashfs: everything as in the sandbox, ACL paths narrowed, no ACLs at all.
  const ex = join(tmp, `ex-${tag}`);
  const u = run('unsquashfs', ['-no-progress', '-d', ex, image]);
  assert.is(u.code, 0, `${tag}: unsquashfs -d: ${u.stderr}`);
  const got = snapshotTree(ex);
  assert.equal(diffTrees(want, got), [], `${tag}: unsquashfs -d vs the sandbox (ACL group bits narrowed)`);
  assert.equal([...got.values()].filter((n) => n.acl.access || n.acl.default).map((n) => n.path), [], `${tag}: no ACLs in the extraction`);
  // The same tree without narrowing differs exactly in the modes and groups of the changed paths.
  const raw = diffTrees(sandbox, got, { ignoreAcls: true });
  const expected = changed.flatMap((p) => {
    const [x, y] = [sandbox.get(p)!, want.get(p)!];
    return [...(x.mode !== y.mode ? [`${p}: mode ${oct(x.mode)} != ${oct(y.mode)}`] : []), ...(x.gid !== y.gid ? [`${p}: gid ${x.gid} != ${y.gid}`] : [])];
  });
  assert.equal(raw, expected, `${tag}: only narrowed modes and groups differ`);
  for (const p of changed) assert.is(sandbox.get(p)!.mode & 0o700, got.get(p)!.mode & 0o700, `${tag}: ${p} owner bits`);

  // Identical content stored once: a copy's inode points at the first file's data; a file
  // differing in its last byte shares the full blocks, not the tail.
  const data = (p: string) => {
    const lines = mustRun('rdsquashfs', ['-s', `/${p}`, image]).stdout.toString().split('\n');
    const blocks = lines.filter((l) => /^(Blocks start|\s+Block #)/.test(l)).join('\n');
    return { blocks, tail: lines.filter((l) => l.startsWith('Fragment ')).join(' ') };
  };
  assert.equal(data('opt/site/big.copy'), data(STACK.bigFile), `${tag}: big.copy uses big.dat's data`);
  assert.equal(data('opt/site/f000.copy'), data('opt/app/share/data/f000'), `${tag}: f000.copy uses f000's tail`);
  assert.equal(data('opt/app/share/motd'), data('etc/motd'), `${tag}: app's motd uses mid's`);
  if (STACK.bigFileSize % blockSize !== 0) {
    const near = data('opt/site/big.near');
    assert.is(near.blocks, data(STACK.bigFile).blocks, `${tag}: big.near shares big.dat's full blocks`);
    assert.is.not(near.tail, data(STACK.bigFile).tail, `${tag}: and has a tail of its own`);
  }

  // sqfsdiff against mksquashfs of the same tree: contents, owners, permissions, timestamps.
  const d = run('sqfsdiff', ['-T', '-a', image, '-b', ref]);
  assert.is(d.code, 0, `${tag}: sqfsdiff found differences:\n${d.stdout.toString('utf8')}${d.stderr}`);
  const exRef = join(tmp, `ex-ref-${tag}`);
  mustRun('unsquashfs', ['-no-progress', '-d', exRef, ref]);
  assert.equal(diffTrees(exRef, got), [], `${tag}: unsquashfs of mksquashfs's image vs ours (xattrs included)`);

  // Kernel mount.
  const mnt = join(tmp, `mnt-${tag}`);
  mount(image, mnt);
  assert.equal(diffTrees(want, mnt, { ignoreAcls: true }), [], `${tag}: kernel mount vs the sandbox`);
  const sb = join(tmp, 'sandbox');
  for (const [p, pattern] of [[STACK.licCap, '^security\\.capability$'], ['opt/site/policy', '^trusted\\.'], ['opt/site', '^trusted\\.']] as const) {
    const inSandbox = getfattr(join(sb, p), pattern);
    assert.ok(inSandbox.length > 0, `${tag}: the sandbox has ${pattern} on ${p}`);
    assert.is(getfattr(join(mnt, p), pattern), inSandbox, `${tag}: getfattr ${pattern} ${p} on the mount`);
  }
  assert.is(getfattr(join(mnt, 'opt/site/policy'), '^trusted\\.'), 'trusted.site.label=0x00ff10ab');
  // The environment script Apptainer sources from the image (no apptainer here: plain sh).
  const env = mustRun('env', ['-i', 'PATH=/usr/bin:/bin', 'sh', '-c', `. '${mnt}/.singularity.d/env/90-strata.sh' && printf '%s|%s|%s' "$PATH" "$LD_LIBRARY_PATH" "$LM_LICENSE_FILE"`]);
  assert.is(env.stdout.toString(), '/opt/app/bin:/bin:/usr/bin:/bin|/opt/app/lib|/opt/lic/LICENSE', `${tag}: 90-strata.sh`);
}

const oct = (m: number) => m.toString(8).padStart(4, '0');

/**
 * mksquashfs's image of the sandbox as an image must hold it: a copy with ACLs removed
 * and each ACL path narrowed (mode and owning group) as spec/compose.md says.
 */
function referenceImage(sandbox: TreeSnapshot, blockSize: number): string {
  const copy = join(tmp, 'ref-tree');
  mustRun('cp', ['-a', '--', join(tmp, 'sandbox'), copy]); // owners, xattrs, ACLs, devices, times
  mustRun('setfacl', ['-R', '-P', '-b', '-k', copy]);
  const { snap } = narrowedForImage(sandbox);
  for (const [p, n] of snap) {
    if (!sandbox.get(p)!.acl.access) continue;
    const at = p === '.' ? copy : join(copy, p);
    mustRun('chgrp', ['-h', String(n.gid), at]); // before chmod: a group change may clear setgid
    mustRun('chmod', [n.mode.toString(8), at]);
    // chgrp drops file capabilities: put them back (the image keeps the layer's xattrs).
    for (const [name, hex] of Object.entries(n.xattrs)) if (name === 'security.capability') mustRun('setfattr', ['-h', '-n', name, '-v', `0x${hex}`, at]);
  }
  assert.equal(diffTrees(snap, copy), [], 'the reference copy is the narrowed sandbox');
  const ref = join(tmp, 'ref.sqfs');
  mustRun('mksquashfs', [copy, ref, '-comp', 'gzip', '-noappend', '-no-progress', '-quiet', '-xattrs', '-b', String(blockSize)]);
  return ref;
}

Ref('gzip and zstd images match the sandbox under every reference tool', () => {
  const sandbox = snapshotTree(join(tmp, 'sandbox'));
  assert.ok(sandbox.get(STACK.licHardLinks[0])?.links?.length === 2, 'the sandbox keeps the hard link');
  assert.is(sandbox.get(STACK.devices.loop0)?.gid, 6);
  const ref = referenceImage(sandbox, 131072);
  for (const comp of ['gzip', 'zstd']) {
    const img = join(tmp, `stack-${comp}.sqfs`);
    const r = strataJson<SquashJson>(['compose', 'squash', img, '--comp', comp], o);
    assert.is(r.aclPaths, narrowedForImage(sandbox).aclInodes.length, `${comp}: aclPaths (one per inode)`);
    assert.match(mustRun('unsquashfs', ['-s', img]).stdout.toString(), new RegExp(`Compression ${comp}\\b`));
    assert.match(mustRun('unsquashfs', ['-s', img]).stdout.toString(), /Block size 131072/);
    checkImage(img, sandbox, ref, comp);
  }
});

Ref('--block-size 4096 --level 1: same tree, and mksquashfs with -b 4096 agrees', () => {
  const sandbox = snapshotTree(join(tmp, 'sandbox'));
  const ref = referenceImage(sandbox, 4096);
  const img = join(tmp, 'small-blocks.sqfs');
  strataOk(['-q', 'compose', 'squash', img, '--comp', 'gzip', '--block-size', '4096', '--level', '1'], o);
  const s = mustRun('unsquashfs', ['-s', img]).stdout.toString();
  assert.match(s, /Block size 4096/);
  assert.match(s, /compression-level 1/);
  checkImage(img, sandbox, ref, 'gzip-4k', 4096);
});

Ref('ACL paths: no class of users gets more than the ACL gave it; unsquash restores every ACL', () => {
  const sbDir = join(tmp, 'sandbox');
  const sandbox = snapshotTree(sbDir);
  const img = join(tmp, 'acl.sqfs');
  const squash = strataOk(['compose', 'squash', img], { ...o });
  assert.match(squash, /sha256 [0-9a-f]{64}/);

  // Owning group and its bits, and other's bits, from unsquashfs's numeric listing, against
  // what getfacl of the sandbox says each kind of user may do.
  const listed = new Map(listing(img, '-lln').map((e) => [e.path, e]));
  const withAcl = [...sandbox.values()].filter((n) => n.acl.access);
  assert.ok(withAcl.length >= 5);
  const bits = (s: string) => (s[0] === 'r' ? 4 : 0) | (s[1] === 'w' ? 2 : 0) | ('xst'.includes(s[2]!) ? 1 : 0);
  for (const n of withAcl) {
    const l = listed.get(n.path)!;
    const gid = Number(l.group);
    const [g, oth] = [bits(l.modeString.slice(4, 7)), bits(l.modeString.slice(7, 10))];
    const acl = n.acl.access!.split(',');
    const perm = (prefix: string) => acl.filter((e) => e.startsWith(prefix)).map((e) => bits(e.slice(e.lastIndexOf(':') + 1)));
    const mask = perm('mask::')[0] ?? 7;
    // The listed group: what the ACL gives that group (its named entry, else group::), & mask.
    const named = perm(`group:${gid}:`);
    const grant = (named.length > 0 ? named[0]! : gid === n.gid ? perm('group::')[0]! : 0) & mask;
    assert.is(g & ~grant, 0, `${n.path}: group ${gid} gets ${g.toString(8)}, the ACL gives it ${grant.toString(8)} (${n.acl.access})`);
    // Named users may be members of that group or among others: neither class gets more than
    // any of them; others get no more than other:: and any other named group either.
    const namedUsers = acl.filter((e) => /^user:\d+:/.test(e)).map((e) => bits(e.slice(-3)) & mask);
    const otherGroups = acl.filter((e) => /^group:\d+:/.test(e) && !e.startsWith(`group:${gid}:`)).map((e) => bits(e.slice(-3)) & mask);
    for (const u of namedUsers) assert.is(g & ~u, 0, `${n.path}: group ${gid} gets ${g.toString(8)}, a named user only ${u.toString(8)}`);
    for (const p of [...perm('other::'), ...namedUsers, ...otherGroups]) {
      assert.is(oth & ~p, 0, `${n.path}: others get ${oth.toString(8)}, more than ${p.toString(8)} (${n.acl.access})`);
    }
    if (gid !== n.gid) assert.is(oth & ~(perm('group::')[0]! & mask), 0, `${n.path}: the old owning group ${n.gid} is among others now`);
  }
  // opt/lic/lib: the ACL names one group (2001, rwx) and a user (1001, r-x) under mask rwx:
  // the image gives the directory to group 2001 with r-x (a member may be user 1001), others nothing.
  const lib = sandbox.get('opt/lic/lib')!;
  assert.is((lib.mode >> 3) & 7, 7, 'sandbox: opt/lic/lib group bits show the mask rwx');
  assert.is(listed.get('opt/lic/lib')!.modeString, 'drwxr-x---');
  assert.is(listed.get('opt/lic/lib')!.group, '2001');

  // The image's acl.json, read by unsquashfs, holds the sandbox's ACLs and modes.
  const aclJson = JSON.parse(mustRun('unsquashfs', ['-cat', img, '.strata/acl.json']).stdout.toString('utf8')) as {
    entries: Record<string, { mode: number; gid?: number; access?: string; default?: string }>;
  };
  const { aclInodes } = narrowedForImage(sandbox);
  assert.equal(Object.keys(aclJson.entries).sort(), [...aclInodes].sort(), 'acl.json: one entry per inode with an ACL');
  for (const n of aclInodes.map((p) => sandbox.get(p)!)) {
    const e = aclJson.entries[n.path];
    assert.ok(e, `acl.json has ${n.path}`);
    assert.is(e!.mode, n.mode, `${n.path}: acl.json keeps the original mode`);
  }
  assert.equal(
    readFileSync(join(sbDir, '.strata/acl.json'), 'utf8'),
    mustRun('unsquashfs', ['-cat', img, '.strata/acl.json']).stdout.toString('utf8'),
    'acl.json is the same in sandbox and image',
  );

  // strata unsquash: modes and ACLs back. The owning groups the image switched are recorded
  // in acl.json (`gid`); putting them back is compose/unsquash.ts's part (the tree writer's
  // rework), so until then they are the only difference.
  const out = join(tmp, 'unsquashed');
  const text = strataOk(['unsquash', img, out], o);
  assert.match(text, new RegExp(`restored ACLs on ${aclInodes.length} paths?`));
  for (const p of aclInodes) assert.is(aclJson.entries[p]!.gid, sandbox.get(p)!.gid, `acl.json keeps ${p}'s owning group`);
  const switched = narrowedForImage(sandbox).changed.filter((p) => narrowedForImage(sandbox).snap.get(p)!.gid !== sandbox.get(p)!.gid);
  const restored = diffTrees(sandbox, out);
  assert.ok(restored.every((l) => switched.some((p) => l === `${p}: gid ${sandbox.get(p)!.gid} != ${narrowedForImage(sandbox).snap.get(p)!.gid}`)), `strata unsquash vs the sandbox, ACLs included:\n${restored.join('\n')}`);
  assert.ok(existsSync(join(out, '.strata/lock.json')));
});

Ref.run();

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
import { mustRun, removeDir, run, tempDir } from './helpers/tmp.js';
import {
  cliJson, cliOk, expectedListing, importStack, narrowedForImage, ownerGroupGrant, parseListing, type CliOptions, type ListedEntry,
  type SquashJson,
} from './image-harness.js';

/** A layer the stack fixture lacks: trusted.* xattrs on a file and a directory (root only). */
function makeSiteLayer(dir: string): void {
  mkdirSync(join(dir, 'opt/site'), { recursive: true });
  writeFileSync(join(dir, 'opt/site/policy'), 'site policy\n', { mode: 0o644 });
  symlinkSync('policy', join(dir, 'opt/site/current'));
  mustRun('setfattr', ['-n', 'trusted.site.label', '-v', '0x00ff10ab', join(dir, 'opt/site/policy')]);
  mustRun('setfattr', ['-n', 'trusted.site.zone', '-v', 'restricted', join(dir, 'opt/site')]);
  mustRun('setfattr', ['-n', 'user.site', '-v', 'x', join(dir, 'opt/site/policy')]);
  for (const p of ['opt/site/policy', 'opt/site', 'opt', '.']) mustRun('touch', ['-h', '-d', '@1640000000', join(dir, p)]);
}

const Ref = suite('image: the four-layer stack against unsquashfs, sqfsdiff, mksquashfs and a kernel mount');
let tmp = '';
let o: CliOptions;
let stack: Stack;
const mounts: string[] = [];

Ref.before.each(() => {
  tmp = tempDir('strata-image-ref-');
  o = { cwd: join(tmp, 'work'), store: join(tmp, 'store') };
  mkdirSync(o.cwd);
  stack = makeStack(join(tmp, 'stack'));
  makeSiteLayer(join(tmp, 'site'));
  cliOk(o, '-q', 'store', 'import', 'site/1', join(tmp, 'site'));
  importStack(o, stack, undefined, ['site/1']);
  cliOk(o, '-q', 'compose', 'sandbox', join(tmp, 'sandbox'));
});

Ref.after.each(() => {
  for (const m of mounts.splice(0)) run('umount', [m]);
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
function checkImage(image: string, sandbox: TreeSnapshot, ref: string, tag: string): void {
  const { snap: want, aclPaths, changed } = narrowedForImage(sandbox);
  assert.ok(aclPaths.length >= 5, `${tag}: the fixture has ACL paths (${aclPaths.join(' ')})`);
  assert.ok(changed.includes('opt/lic/lib') && changed.includes('opt/lic/bin'), `${tag}: narrowing changes some modes: ${changed.join(' ')}`);

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
  // The same tree without narrowing differs exactly in the group bits of the changed paths.
  const raw = diffTrees(sandbox, got, { ignoreAcls: true });
  assert.equal(raw, changed.map((p) => `${p}: mode ${oct(sandbox.get(p)!.mode)} != ${oct(want.get(p)!.mode)}`), `${tag}: only narrowed group bits differ`);
  for (const p of changed) assert.is(sandbox.get(p)!.mode & ~0o070, got.get(p)!.mode & ~0o070, `${tag}: ${p} non-group bits`);

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
 * and each ACL path's group bits set to group:: & mask.
 */
function referenceImage(sandbox: TreeSnapshot, blockSize: number): string {
  const copy = join(tmp, 'ref-tree');
  mustRun('cp', ['-a', '--', join(tmp, 'sandbox'), copy]); // owners, xattrs, ACLs, devices, times
  mustRun('setfacl', ['-R', '-P', '-b', '-k', copy]);
  const { snap } = narrowedForImage(sandbox);
  for (const [p, n] of snap) if (sandbox.get(p)!.acl.access) mustRun('chmod', [n.mode.toString(8), p === '.' ? copy : join(copy, p)]);
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
    const r = cliJson<SquashJson>(o, 'compose', 'squash', img, '--comp', comp);
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
  cliOk(o, '-q', 'compose', 'squash', img, '--comp', 'gzip', '--block-size', '4096', '--level', '1');
  const s = mustRun('unsquashfs', ['-s', img]).stdout.toString();
  assert.match(s, /Block size 4096/);
  assert.match(s, /compression-level 1/);
  checkImage(img, sandbox, ref, 'gzip-4k');
});

Ref('ACL files: image group bits never exceed group:: & mask; unsquash restores every ACL', () => {
  const sbDir = join(tmp, 'sandbox');
  const sandbox = snapshotTree(sbDir);
  const img = join(tmp, 'acl.sqfs');
  const squash = cliOk({ ...o }, 'compose', 'squash', img);
  assert.match(squash, /sha256 [0-9a-f]{64}/);

  // Group bits from unsquashfs's numeric listing, against getfacl of the sandbox.
  const listed = new Map(listing(img, '-lln').map((e) => [e.path, e]));
  const withAcl = [...sandbox.values()].filter((n) => n.acl.access);
  assert.ok(withAcl.length >= 5);
  for (const n of withAcl) {
    const l = listed.get(n.path)!;
    const g = (l.modeString[4] === 'r' ? 4 : 0) | (l.modeString[5] === 'w' ? 2 : 0) | ('xs'.includes(l.modeString[6]!) ? 1 : 0);
    const granted = ownerGroupGrant(n.acl.access!);
    assert.is(g & ~granted, 0, `${n.path}: group bits ${g.toString(8)} exceed the ACL's grant ${granted.toString(8)} (${n.acl.access})`);
    assert.is(g, granted, `${n.path}: group bits are exactly the grant`);
  }
  // Where the mask is wider than group::, the mode of the sandbox (the mask) is not what the image holds.
  const lib = sandbox.get('opt/lic/lib')!;
  assert.is((lib.mode >> 3) & 7, 7, 'sandbox: opt/lic/lib group bits show the mask rwx');
  assert.is(listed.get('opt/lic/lib')!.modeString, 'drwxr-x---');

  // The image's acl.json, read by unsquashfs, holds the sandbox's ACLs and modes.
  const aclJson = JSON.parse(mustRun('unsquashfs', ['-cat', img, '.strata/acl.json']).stdout.toString('utf8')) as {
    entries: Record<string, { mode: number; access?: string; default?: string }>;
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

  // strata unsquash: everything back, nothing ignored.
  const out = join(tmp, 'unsquashed');
  const text = cliOk(o, 'unsquash', img, out);
  assert.match(text, new RegExp(`restored ACLs on ${aclInodes.length} paths?`));
  assert.equal(diffTrees(sandbox, out), [], 'strata unsquash vs the sandbox, ACLs included');
  assert.ok(existsSync(join(out, '.strata/lock.json')));
});

Ref.run();

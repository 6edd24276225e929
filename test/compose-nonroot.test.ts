/**
 * `strata compose sandbox` run as an unprivileged user (uid/gid 65534, no supplementary
 * groups, via setpriv): the sandbox still carries the POSIX ACLs (access and default) and
 * user.* xattrs, as getfacl/getfattr read them, and stderr holds exactly one warning line
 * naming what could not be applied: ownership, security.* and trusted.* xattrs, device nodes.
 * The files keep the builder's group (65534), which the layers gave nothing: its class gets
 * no more than others (group bits, and an ACL's group:: entry, & other).
 * The stores and layers are prepared as root (the four-layer stack plus a layer with a
 * trusted.* xattr); only the sandbox runs unprivileged.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { ok, strata } from './helpers/cli.js';
import { nobody } from './helpers/users.js';
import { diffTrees, snapshotTree, type TreeSnapshot } from './helpers/tree.js';
import { makeStack, referenceExtract, STACK } from './fixtures/stack.js';
import { packGnu } from './fixtures/small-tree.js';

/**
 * The reference tree as a builder who cannot set the owning group must write it: the group
 * class never gets more than others (written here without strata's code).
 */
function groupAsOther(ref: TreeSnapshot): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  for (const [p, n] of ref) {
    const m = { ...n, acl: { ...n.acl } };
    if (n.type !== 'symlink') {
      if (n.acl.access) {
        const other = /other::([rwx-]{3})/.exec(n.acl.access)![1]!;
        m.acl.access = n.acl.access.replace(/group::([rwx-]{3})/, (_, g: string) => `group::${[...g].map((c, i) => (other[i] === '-' ? '-' : c)).join('')}`);
      } else {
        m.mode = (n.mode & ~0o070) | (n.mode & ((n.mode & 7) << 3));
      }
    }
    out.set(p, m);
  }
  return out;
}

interface Ctx {
  dir: string;
}

const nonroot = suite<Ctx>('compose sandbox as an unprivileged user');
nonroot.before.each((ctx) => {
  ctx.dir = tempDir('strata-compose-nonroot');
});
nonroot.after.each((ctx) => removeDir(ctx.dir));

nonroot('keeps ACLs and user.* xattrs, warns once about ownership, security/trusted xattrs and devices', ({ dir }) => {
  const stack = makeStack(join(dir, 'stack'));
  // A fifth layer with a trusted.* xattr (root can set it; an unprivileged writer cannot).
  const extra = join(dir, 'extra');
  mkdirSync(join(extra, 'opt/extra'), { recursive: true });
  writeFileSync(join(extra, 'opt/extra/marked'), 'marked\n');
  mustRun('setfattr', ['-n', 'trusted.strata-test', '-v', 'yes', join(extra, 'opt/extra/marked')]);
  mustRun('setfattr', ['-n', 'user.note', '-v', 'kept', join(extra, 'opt/extra/marked')]);
  mustRun('touch', ['-h', '-d', '@1640000000', join(extra, 'opt/extra/marked'), join(extra, 'opt/extra'), join(extra, 'opt'), extra]);
  const tars = [...stack.layers.map((l) => l.tar), packGnu(extra, join(dir, 'extra.tar'))];

  const store = join(dir, 'store');
  const work = join(dir, 'work');
  const home = join(dir, 'home');
  const out = join(dir, 'out');
  for (const d of [work, home, out]) mkdirSync(d);
  const names = ['base/1', 'mid/1', 'app/1', 'lic/1', 'extra/1'];
  tars.forEach((t, i) => ok(strata(['-q', 'store', 'import', names[i]!, t], { store, cwd: work }), `import ${names[i]}`));
  ok(strata(['compose', 'add', ...names], { store, cwd: work }), 'add');
  // The store readable and writable by the user (it opens LevelDB for writing), the temp dir
  // traversable.
  chmodSync(dir, 0o755);
  mustRun('chown', ['-R', '65534:65534', store, work, home, out]);

  const sb = join(out, 'sandbox');
  const r = ok(strata(['compose', 'sandbox', sb], { store, cwd: work, as: nobody(home) }), 'sandbox as uid 65534');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.is(lines.length, 1, `exactly one line on stderr:\n${r.stderr}`);
  const warning = lines[0]!;
  assert.match(warning, /^strata: warning: as uid 65534 some metadata could not be applied: /);
  // Every entry is owned by root in the layers; 3 device nodes (the fifo can be made); one
  // security.capability; one trusted.* xattr.
  assert.match(warning, /ownership \(\d+\)/);
  assert.match(warning, /device nodes \(3\)/);
  assert.match(warning, /security\.\* xattrs \(1\)/);
  assert.match(warning, /trusted\.\* xattrs \(1\)/);
  assert.not.match(warning, /user\.|system\.|acl/i, 'ACLs and user.* xattrs were applied');

  const snap = snapshotTree(sb);
  // Written by the unprivileged user, so owned by it.
  assert.is(snap.get('opt/lic')?.uid, 65534);
  // ACLs (access and default) and user.* xattrs, as getfacl/getfattr see them; the owning
  // group (now 65534's) gets what others get.
  assert.equal(snap.get(STACK.licDir)?.acl, { ...STACK.licAcl, access: STACK.licAcl.access.replace('group::rwx', 'group::---') });
  assert.is(snap.get(STACK.licFile)?.acl.access, STACK.licFileAcl.replace('group::r--', 'group::---'));
  assert.is(snap.get(STACK.licFile)?.xattrs['user.license'], Buffer.from('site-1234').toString('hex'));
  assert.is(snap.get('opt/extra/marked')?.xattrs['user.note'], Buffer.from('kept').toString('hex'));
  assert.is(snap.get('opt/extra/marked')?.xattrs['trusted.strata-test'], undefined);
  assert.is(snap.get(STACK.devices.fifo)?.type, 'fifo');
  // Everything else is as GNU tar extracts it as root, except exactly what the warning named:
  // owners, security.*/trusted.* xattrs and the three device nodes.
  const ref = groupAsOther(snapshotTree(referenceExtract(tars, join(dir, 'ref'))));
  assert.ok([...snap.values()].every((n) => n.type === 'symlink' || n.gid === 65534), 'every file has the builder\'s group');
  assert.equal(
    diffTrees(snap, ref, {
      ignoreStrataPaths: true,
      ignoreOwners: true,
      ignoreXattrPrefixes: ['security.', 'trusted.'],
      ignorePaths: [STACK.devices.null, STACK.devices.zero, STACK.devices.loop0],
    }),
    [],
  );
  // And those differences are real (the comparison above would otherwise hide a root run).
  const full = diffTrees(snap, ref, { ignoreStrataPaths: true });
  assert.ok(full.includes(`only in b: ${STACK.devices.null} (char)`), full.join('\n'));
  assert.ok(full.some((l) => l.startsWith(`${STACK.licCap}: xattr security.capability`)), full.join('\n'));
});

nonroot('--force replaces an earlier sandbox of the same user that has read-only directories', ({ dir }) => {
  const layer = join(dir, 'layer');
  mkdirSync(join(layer, 'proc'), { recursive: true });
  mkdirSync(join(layer, 'ro/deeper'), { recursive: true });
  writeFileSync(join(layer, 'ro/deeper/file'), 'x\n');
  chmodSync(join(layer, 'ro/deeper'), 0o500);
  chmodSync(join(layer, 'ro'), 0o555);
  chmodSync(join(layer, 'proc'), 0o555);
  const store = join(dir, 'store');
  const work = join(dir, 'work');
  const home = join(dir, 'home');
  const out = join(dir, 'out');
  for (const d of [work, home, out]) mkdirSync(d);
  ok(strata(['-q', 'store', 'import', 'ro/1', layer], { store, cwd: work }), 'import');
  ok(strata(['compose', 'add', 'ro'], { store, cwd: work }), 'add');
  chmodSync(dir, 0o755);
  mustRun('chown', ['-R', '65534:65534', store, work, home, out]);
  const sb = join(out, 'sandbox');
  ok(strata(['-q', 'compose', 'sandbox', sb], { store, cwd: work, as: nobody(home) }), 'sandbox');
  const first = snapshotTree(sb);
  assert.is(first.get('ro/deeper')?.mode, 0o500);
  const again = strata(['-q', 'compose', 'sandbox', sb], { store, cwd: work, as: nobody(home) });
  assert.is(again.code, 1, 'not empty: refused without --force');
  ok(strata(['-q', 'compose', 'sandbox', sb, '--force'], { store, cwd: work, as: nobody(home) }), 'sandbox --force');
  assert.equal(diffTrees(snapshotTree(sb), first), []);
});

nonroot.run();

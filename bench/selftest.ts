/**
 * Self-test of the benchmark's own machinery (not part of `npm test`; run as root with
 * `npx tsx bench/selftest.ts`): the comparator must see each kind of difference the gate
 * relies on, the image ACL rule must accept exactly the allowed group bits, the
 * overlay → OCI conversion must turn a real kernel upperdir into OCI whiteouts, and what is
 * set aside between runs must be gone at the end.
 */
import { createReadStream, existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { mkdtemp, mkdir, rm, symlink, writeFile, chmod, readdir, stat, link, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { dumpXattrs, overlayToOci } from './data.js';
import { diffTrees, emptyTrash, goalsNotMet, limiter, measure, measureInTurn, withMountedImage, setAside, snapshotImage, snapshotSquashfs, snapshotTree, snapshotTreeFast, renderReport, speedup, startEmptyingTrash, summarize, table, useTrash, type Machine, type Outcome, type Row, type TreeNode, type Why } from './harness.js';
import { describeScratch, dropScratch, mounts, prepareScratch } from './scratch.js';
import { listTar } from './tar-list.js';
import { tarDataEnd } from './peers.js';
import { scalePlot } from './plot.js';
import type { ScalePoint } from './scale.js';
import { coldCompression, fixedCost, pageFaults, perEntry } from './why.js';
import { GNU_TAR_SCALE_OPTIONS, writeScaleTar, writeScaleTree } from './scale-data.js';
import { run } from './proc.js';

/**
 * A listing as comparable text, node by node and field by field (`view` picks what is
 * compared): which optional fields a node spells out as undefined, and in what order, is no
 * difference between two listings.
 */
function listingText(m: Map<string, TreeNode>, view: (n: TreeNode) => TreeNode = (n) => n): string {
  const fields = (n: TreeNode) => Object.entries({ ...n, xattrs: [...n.xattrs] }).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
  return JSON.stringify([...m].map(([k, n]) => [k, fields(view(n))]).sort());
}

const Compare = suite<{ dir: string; a: string; b: string }>('compare');

Compare.before.each(async (ctx) => {
  ctx.dir = await mkdtemp('/tmp/strata-bench-selftest-');
  ctx.a = join(ctx.dir, 'a');
  await mkdir(join(ctx.a, 'd'), { recursive: true });
  await writeFile(join(ctx.a, 'd/f'), 'hello\n');
  await writeFile(join(ctx.a, 'lic'), 'secret\n');
  await chmod(join(ctx.a, 'lic'), 0o640);
  await run('setfacl', ['-m', 'g:50:r,m::r', join(ctx.a, 'lic')]);
  await symlink('d/f', join(ctx.a, 'l'));
  await run('setfattr', ['-n', 'user.k', '-v', 'v1', join(ctx.a, 'd/f')]);
  ctx.b = join(ctx.dir, 'b');
  await run('cp', ['-a', ctx.a, ctx.b]);
});
Compare.after.each(async (ctx) => {
  await rm(ctx.dir, { recursive: true, force: true });
});

Compare('identical copies compare equal, ACLs and xattrs included', async ({ a, b }) => {
  const sa = await snapshotTree(a);
  assert.equal(sa.get('lic')?.acl, 'user::rw-,group::r--,group:50:r--,mask::r--,other::---');
  assert.equal(sa.get('d/f')?.xattrs.get('user.k'), '0x7631');
  assert.equal(diffTrees(await snapshotTree(b), sa), []);
});

Compare('each kind of difference is reported', async ({ a, b }) => {
  await writeFile(join(b, 'd/f'), 'hellO\n');
  await run('touch', ['-h', '-d', '@1000000000', join(b, 'd/f')]);
  await run('setfattr', ['-n', 'user.k', '-v', 'v2', join(b, 'd/f')]);
  await run('setfacl', ['-m', 'g:51:r', join(b, 'lic')]);
  await rm(join(b, 'l'));
  await symlink('d/g', join(b, 'l'));
  await run('chown', ['1:1', join(b, 'd')]);
  await writeFile(join(b, 'extra'), '');
  const d = diffTrees(await snapshotTree(b), await snapshotTree(a));
  const has = (re: RegExp) => assert.ok(d.some((x) => re.test(x)), `${re} in ${JSON.stringify(d)}`);
  has(/^d\/f: content differs/);
  has(/^d\/f: mtime/);
  has(/^d\/f: xattr user\.k/);
  has(/^lic: ACL /);
  has(/^lic: xattr system\.posix_acl_access/);
  has(/^l: link target d\/g/);
  has(/^d: owner 1:1/);
  has(/^extra: unexpected/);
});

Compare('image rule: group bits within group:: ∧ mask pass, wider fail, ACL xattrs ignored', async ({ a, b }) => {
  const ref = await snapshotTree(a);
  await run('setfacl', ['-b', join(b, 'lic')]);
  await chmod(join(b, 'lic'), 0o600);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), []);
  await chmod(join(b, 'lic'), 0o660);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), ['lic: mode 0660, expected 0640']);
  await chmod(join(b, 'lic'), 0o644);
  assert.equal(diffTrees(await snapshotTree(b), ref, { image: true }), ['lic: mode 0644, expected 0640']);
});

Compare('snapshotTreeFast gives the same map as snapshotTree: devices, fifos, hard links, odd names, ignore', async ({ a }) => {
  await run('mknod', [join(a, 'null'), 'c', '1', '3']);
  await run('mknod', [join(a, 'big'), 'b', '259', '70000']);
  await run('mkfifo', [join(a, 'fifo')]);
  await link(join(a, 'd/f'), join(a, 'd/hard'));
  await writeFile(join(a, 'sp ace\ttab'), 'x');
  // find prints times as seconds with a fraction: one before 1970 (negative, floored down),
  // one with no fraction at all, and a link whose target has spaces.
  await writeFile(join(a, 'old'), 'x');
  await run('touch', ['-m', '-d', '1960-01-01 00:00:00.5 UTC', join(a, 'old')]);
  await run('touch', ['-m', '-d', '@0', join(a, 'd')]);
  await symlink('a target/with spaces', join(a, 'sp link'));
  await mkdir(join(a, '.strata/sub'), { recursive: true });
  await writeFile(join(a, '.strata/sub/lock'), '{}');
  await run('setfacl', ['-d', '-m', 'g:50:rx', join(a, 'd')]);
  // ACLs of every shape aclText reads from the xattrs: named users and groups with a mask,
  // a mask alone, access and default together, and a default over a mode of its own.
  await mkdir(join(a, 'both'));
  await writeFile(join(a, 'named'), 'x');
  await writeFile(join(a, 'masked'), 'x');
  await run('setfacl', ['-m', 'u:1000:rw,g:50:r,u:4294967294:x', join(a, 'named')]);
  await run('setfacl', ['-m', 'm::r', join(a, 'masked')]);
  await chmod(join(a, 'both'), 0o751);
  await run('setfacl', ['-m', 'u:0:r', '-d', '-m', 'g:50:rx,o::-', join(a, 'both')]);
  assert.equal(listingText(await snapshotTreeFast(a)), listingText(await snapshotTree(a)));
  const ignore = ['.strata'];
  const fast = await snapshotTreeFast(a, { ignore });
  assert.equal(listingText(fast), listingText(await snapshotTree(a, { ignore })));
  assert.equal(fast.get('null')?.rdev, (1 << 8) | 3);
  assert.ok(!fast.has('.strata'));
});

Compare('listTar of a GNU tar archive and snapshotSquashfs of its image give the JS walk\'s map: long names, hard links, devices, xattrs', async ({ dir, a }) => {
  await run('mknod', [join(a, 'null'), 'c', '1', '3']);
  await link(join(a, 'd/f'), join(a, 'd/hard'));
  const deep = join(a, 'x'.repeat(90), 'y'.repeat(90));
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'z'.repeat(120)), 'long\n');
  await symlink('t'.repeat(150), join(a, 'longlink'));
  await writeFile(join(a, 'big'), Buffer.alloc(3 << 20, 7));
  await run('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(a, 'big')]);
  await mkdir(join(a, '.strata'));
  await writeFile(join(a, '.strata/lock'), '{}');
  const norm = (m: Map<string, TreeNode>) => listingText(m, (v) => ({ ...v, acl: undefined, xattrs: new Map([...v.xattrs].filter(([n]) => !n.startsWith('system.posix_acl_'))) }));
  const want = await snapshotTree(a, { ignore: ['.strata'] });
  for (const format of ['gnu', 'pax']) {
    const tar = join(dir, `${format}.tar`);
    await run('tar', [...(format === 'pax' ? ['--xattrs', '--xattrs-include=user.*'] : []), '--numeric-owner', `--format=${format}`, '-C', a, '-cf', tar, '.']);
    const listed = await listTar(createReadStream(tar, { highWaterMark: 700 }), { ignore: ['.strata'] });
    // GNU tar keeps xattrs only in pax: the gnu archive is compared without them.
    const strip = (m: Map<string, TreeNode>) => new Map([...m].map(([k, v]) => [k, { ...v, xattrs: new Map() }]));
    assert.equal(norm(format === 'pax' ? listed : strip(listed)), norm(format === 'pax' ? want : strip(want)), format);
  }
  const image = join(dir, 'a.sqfs');
  await run('mksquashfs', [a, image, '-quiet', '-no-progress']);
  assert.equal(norm(await snapshotSquashfs(image, { ignore: ['.strata'] })), norm(await snapshotImage(image, { ignore: ['.strata'] })));
  assert.equal((await snapshotSquashfs(image)).get('d/hard')?.nlink, 2);
});

Compare('listTar refuses a damaged header and an archive cut inside an entry', async ({ dir, a }) => {
  const tar = join(dir, 'a.tar');
  await run('tar', ['-C', a, '-cf', tar, '.']);
  const bytes = await readFile(tar);
  const bad = Buffer.from(bytes);
  bad[600] = bad[600]! ^ 1;
  const failure = (input: Buffer) => listTar(Readable.from([input])).then(() => 'listed', (e: Error) => e.message);
  assert.match(await failure(bad), /wrong checksum/);
  assert.match(await failure(bytes.subarray(0, 512 + 100)), /ends inside an entry/);
});

Compare.run();

const Overlay = suite<{ dir: string }>('overlayToOci');

Overlay.before.each(async (ctx) => {
  ctx.dir = await mkdtemp('/tmp/strata-bench-selftest-');
});
Overlay.after.each(async (ctx) => {
  await run('umount', [join(ctx.dir, 'm')], { allowFail: true });
  await rm(ctx.dir, { recursive: true, force: true });
});

Overlay('a kernel upperdir becomes .wh. entries, an opaque marker and no trusted.overlay.*', async ({ dir }) => {
  const [l, u, w, m] = ['l', 'u', 'w', 'm'].map((x) => join(dir, x)) as [string, string, string, string];
  for (const d of [l, u, w, m]) await mkdir(d);
  await mkdir(join(l, 'gone'));
  await writeFile(join(l, 'gone/x'), 'x');
  await mkdir(join(l, 'redo'));
  await writeFile(join(l, 'redo/old'), 'o');
  await writeFile(join(l, 'del'), 'd');
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${l},upperdir=${u},workdir=${w}`, m]);
  await rm(join(m, 'gone'), { recursive: true });
  await rm(join(m, 'del'));
  await rm(join(m, 'redo'), { recursive: true });
  await mkdir(join(m, 'redo'));
  await writeFile(join(m, 'redo/new'), 'n');
  await run('umount', [m]);
  assert.ok((await stat(join(u, 'del'))).isCharacterDevice());

  const counts = await overlayToOci(u);
  assert.equal(counts, { whiteouts: 2, opaque: 1 });
  assert.equal((await readdir(u)).sort(), ['.wh.del', '.wh.gone', 'redo']);
  assert.equal((await readdir(join(u, 'redo'))).sort(), ['.wh..wh..opq', 'new']);
  assert.equal((await stat(join(u, '.wh.del'))).size, 0);
  const left = await dumpXattrs(u, '^trusted\\.overlay\\.');
  assert.equal([...left.values()].filter((x) => x.size > 0).length, 0);
});

Overlay.run();

/** A suite whose every test gets a scratch directory of its own, removed after it. */
function scratchSuite(name: string) {
  const s = suite<{ dir: string }>(name);
  s.before.each(async (ctx) => {
    ctx.dir = await mkdtemp('/tmp/strata-bench-selftest-');
  });
  s.after.each(async (ctx) => {
    await rm(ctx.dir, { recursive: true, force: true });
  });
  return s;
}

const Scale = scratchSuite('scale data');

/** A strata or peer side measured once at `median` seconds (with `faults` page faults when given). */
const measured = (median: number, faults?: number): Outcome => ({ kind: 'measured', m: summarize([median], 1024, faults === undefined ? [] : [faults]) });
/** One report section of `rows`. */
const section = (rows: Row[]) => [{ title: 't', intro: [], result: { rows, sizes: [], gate: [], crossChecks: [] } }];

/** A machine whose Node starts in 50 ms, for the reasons that use it. */
const MACHINE: Machine = { cpu: 'test', cores: 2, memoryGiB: 1, kernel: 'test', node: 'v20', scratch: 'test', start: { node: 0.05, c: 0.001 }, fresh: 0.1 };

Scale('writeScaleTar is byte for byte what GNU tar writes of writeScaleTree', async ({ dir }) => {
  for (const n of [1000, 257]) {
    const tree = join(dir, `tree-${n}`);
    await mkdir(tree);
    writeScaleTree(tree, n);
    await run('tar', [...GNU_TAR_SCALE_OPTIONS, '-C', tree, '-cf', join(dir, `gnu-${n}.tar`), '.']);
    writeScaleTar(join(dir, `js-${n}.tar`), n);
    const same = await run('cmp', [join(dir, `gnu-${n}.tar`), join(dir, `js-${n}.tar`)], { allowFail: true });
    assert.equal(same.code, 0, `${n}: ${same.stdout}`);
  }
  const list = (await run('tar', ['-tf', join(dir, 'js-257.tar')])).stdout.trim().split('\n');
  assert.equal(list.length, 1 + 1 + 2 + 257);
  assert.equal(list.slice(0, 3), ['./', './scale/', './scale/d0/']);
});

Scale('tarDataEnd: two tars cut and joined read as one archive', async ({ dir }) => {
  for (const [name, files] of [['a', ['x', 'y']], ['b', ['z']]] as const) {
    await mkdir(join(dir, name));
    for (const f of files) await writeFile(join(dir, name, f), f.repeat(700));
    await run('tar', ['--format=pax', '-C', join(dir, name), '-cf', join(dir, `${name}.tar`), ...files]);
  }
  const end = tarDataEnd(join(dir, 'a.tar'));
  assert.ok(end > 0 && end < (await stat(join(dir, 'a.tar'))).size);
  const joined = await run('bash', ['-c', `{ head -c ${end} "$1"; cat "$2"; } | tar -tf -`, 'j', join(dir, 'a.tar'), join(dir, 'b.tar')]);
  assert.equal(joined.stdout.trim().split('\n'), ['x', 'y', 'z']);
});

Scale('the plot: a line per series with two points, hollow markers for stopped runs, the RSS goal', () => {
  const m = (median: number, rssKiB: number): Outcome => ({ kind: 'measured', m: summarize([median], rssKiB) });
  const points: ScalePoint[] = [
    { n: 10000, stamp: undefined as never, series: { 'strata squash': m(2, 200 * 1024), mksquashfs: m(1, 100 * 1024) } },
    { n: 1000000, stamp: undefined as never, series: { 'strata squash': m(50, 900 * 1024), mksquashfs: { kind: 'timeout', seconds: 600, rssKiB: 400 * 1024, reason: '' } } },
  ];
  const svg = scalePlot(points, 'test');
  assert.ok(svg.startsWith('<svg') && svg.trimEnd().endsWith('</svg>'));
  assert.equal((svg.match(/<path /g) ?? []).length, 4, 'two series × two panels');
  assert.ok(svg.includes('fill="#fff"'), 'a hollow marker');
  assert.ok(svg.includes('goal 300 MiB'));
  assert.ok(svg.includes('>1M<') && svg.includes('>10k<'));
});

Scale('ratios against a stopped run are bounds, and goals are judged only when the bound decides', () => {
  const m = measured;
  const stopped: Outcome = { kind: 'timeout', seconds: 600, rssKiB: 500 * 1024, reason: '' };
  const row = (strata: Outcome, peer: Outcome): Row => ({ what: 'r', strata, peerName: 'p', peer, goal: { text: '≥ 1.0×', minSpeedup: 1 } });
  assert.equal(speedup(row(m(60), stopped)), { value: 10, bound: 'atLeast' });
  assert.equal(speedup(row(stopped, m(60))), { value: 0.1, bound: 'atMost' });
  const texts = (rows: Row[]) => goalsNotMet(section(rows), MACHINE).map((x) => x.text);
  assert.equal(texts([row(m(60), stopped)]), []);
  assert.equal(texts([row(stopped, m(60))]), ['r: 0.10× p, goal ≥ 1.0×', 'r: peak RSS 500 MiB, goal ≤ 300 MiB']);
  assert.equal(texts([row(m(2), m(1))]), ['r: 0.50× p, goal ≥ 1.0×']);
  // Just short of the goal: rounded down, in the list and in the table, never shown at the goal.
  assert.equal(texts([row(m(0.376), m(0.375))]), ['r: 0.99× p, goal ≥ 1.0×']);
  assert.match(table([row(m(0.376), m(0.375))]), /\| 0\.99× \|/);
  assert.match(table([row(m(0.375), m(0.376))]), /\| 1\.00× \|/, 'above the goal: rounded as usual');
});

Scale('a missed goal carries its reason, filled in from the same run; a met one shows none', () => {
  const row = (strata: number, peer: number, why: Why): Row => ({
    what: 'r',
    strata: measured(strata),
    peerName: 'p',
    peer: measured(peer),
    goal: { text: '≥ 1.0×', minSpeedup: 1, why },
  });
  const sec = section;
  const [small] = goalsNotMet(sec([row(0.2, 0.1, fixedCost)]), MACHINE);
  assert.match(small!.why!, /Node's start alone takes 50 ms \(25 % of strata's median here\)/);
  const [many] = goalsNotMet(sec([row(1.05, 0.5, perEntry(100_000))]), MACHINE);
  assert.match(many!.why!, /is 10\.0 µs an entry here, over 100,000 entries/);
  assert.equal(goalsNotMet(sec([row(0.1, 0.2, fixedCost)]), MACHINE), [], 'met: no line, no reason');
  // Page faults priced at the machine's 0.1 s for 65,536 pages (1.5 µs a page).
  const [tree] = goalsNotMet(sec([{ ...row(1.5, 1.3, pageFaults), strata: measured(1.5, 200_000), peer: measured(1.3, 30_000) }]), MACHINE);
  assert.match(tree!.why!, /strata's median run faulted 200,000 pages in, p 30,000, and on this machine a page costs 1\.5 µs \(Machine\), up to 0\.26 s of strata's 1\.50 s against the peer's 1\.30 s/);
  assert.not.match(tree!.why!, /That is not most of the gap/, 'one run: no spread to speak of');
  // Faults explain little and strata's own runs spread widely: the spread is said, with the fastest run's ratio.
  const spread: Outcome = { kind: 'measured', m: summarize([1.1, 2.8, 3.0], 1024, [20_000, 20_000, 20_000]) };
  const [wide] = goalsNotMet(sec([{ ...row(2.8, 1.3, pageFaults), strata: spread, peer: measured(1.3, 3_000) }]), MACHINE);
  assert.match(wide!.why!, /That is not most of the gap here: the same build's runs took 1\.10 to 3\.00 s \(the fastest 1\.18× the peer's median\)/);
  // Faults explain little and strata's runs agree: the work only strata does is said, with the CPU.
  const agree: Outcome = { kind: 'measured', m: summarize([0.87, 0.89, 0.9], 1024, [15_000, 15_000, 15_000], [2.4, 2.4, 2.4]) };
  const tar: Outcome = { kind: 'measured', m: summarize([0.76], 1024, [3_000], [1.37]) };
  const [busyTree] = goalsNotMet(sec([{ ...row(0.89, 0.76, pageFaults), strata: agree, peer: tar }]), MACHINE);
  assert.match(busyTree!.why!, /That is not most of the gap here: beside the kernel's work of creating and writing the same files, strata hashes every byte/);
  assert.match(busyTree!.why!, /This run: strata spent 2\.4 s of CPU \(user and system, every thread\), p 1\.4 s \(1\.8×\)\.$/);
  assert.not.match(tree!.why!, /strata hashes every byte/, 'faults that explain the gap: no more is said');
  const [unpriced] = goalsNotMet(sec([row(1.5, 1.3, pageFaults)]), MACHINE);
  assert.match(unpriced!.why!, /each page of it costs a page fault\.$/, 'no fault counts: the reason without numbers');
  // CPU: said where both sides were measured and strata spent more; the table shows it either way.
  const withCpu = (median: number, cpu: number): Outcome => ({ kind: 'measured', m: summarize([median], 1024, [], [cpu]) });
  const cold = { ...row(5.5, 4.0, coldCompression), strata: withCpu(5.5, 9.4), peer: withCpu(4.0, 5.3) };
  const [busy] = goalsNotMet(sec([cold]), MACHINE);
  assert.match(busy!.why!, /This run: strata spent 9\.4 s of CPU \(user and system, every thread\), p 5\.3 s \(1\.8×\)\.$/);
  const [idle] = goalsNotMet(sec([{ ...cold, strata: withCpu(5.5, 5.0) }]), MACHINE);
  assert.not.match(idle!.why!, /This run/, 'strata spent less: no CPU clause');
  const [unknown] = goalsNotMet(sec([row(5.5, 4.0, coldCompression)]), MACHINE);
  assert.not.match(unknown!.why!, /This run/, 'not measured: no CPU clause');
  assert.match(table([cold]), /\| 9\.40 \/ 5\.30 s \| 0\.73× \|/);
  assert.match(table([{ ...cold, peer: measured(4.0) }]), /\| 9\.40 \/ — s \| 0\.73× \|/);
  assert.match(table([row(5.5, 4.0, coldCompression)]), /\| — \| 0\.73× \|/);
  // The report prints it under the goal's line.
  const report = renderReport({ date: new Date(0), machine: MACHINE, tools: {}, settings: [], data: [], notRun: [], sections: sec([row(0.2, 0.1, fixedCost)]) });
  assert.match(report, /\n- r: 0\.50× p, goal ≥ 1\.0×\n  - why: a cost per run/);
});

Scale.run();

const Trash = scratchSuite('trees set aside');

Trash('setAside moves trees and files out of the way at once; emptyTrash deletes them all', async ({ dir }) => {
  const trash = join(dir, 'trash');
  useTrash(trash);
  for (const t of ['a', 'b']) {
    await mkdir(join(dir, t, 'sub'), { recursive: true });
    await writeFile(join(dir, t, 'sub', 'f'), t);
  }
  await writeFile(join(dir, 'img'), 'i');
  await setAside(join(dir, 'a'), join(dir, 'missing'), join(dir, 'img'));
  await setAside(join(dir, 'b'));
  assert.equal((await readdir(dir)).sort(), ['trash']);
  assert.equal((await readdir(trash)).sort(), ['0', '1', '2']);
  assert.equal(await readFile(join(trash, '2', 'sub', 'f'), 'utf8'), 'b');
  await emptyTrash();
  assert.equal(await readdir(dir), []);
  await emptyTrash(); // nothing set aside since: a no-op
});

Trash('after startEmptyingTrash, what is set aside is deleted in the background, later arrivals too', async ({ dir }) => {
  const trash = join(dir, 'trash');
  useTrash(trash);
  const tree = async (t: string) => {
    await mkdir(join(dir, t, 'sub'), { recursive: true });
    await writeFile(join(dir, t, 'sub', 'f'), t);
    return join(dir, t);
  };
  await setAside(await tree('a'));
  startEmptyingTrash();
  await setAside(await tree('b'), await tree('c'));
  const deadline = Date.now() + 10_000;
  while (existsSync(trash) && (await readdir(trash)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await readdir(trash), [], 'deleted without waiting for emptyTrash');
  const { waited, total } = await emptyTrash();
  assert.ok(waited <= total, `waited ${waited} s of ${total} s`);
  assert.equal(await readdir(dir), []);
});

/** A tree of `n` empty files in `dir`/t, set aside. */
async function trashOf(dir: string, n: number): Promise<string> {
  const trash = join(dir, 'trash');
  useTrash(trash);
  await mkdir(join(dir, 't'));
  for (let i = 0; i < n; i++) await writeFile(join(dir, 't', String(i)), '');
  await setAside(join(dir, 't'));
  return trash;
}

/** A timed run that counts the trash's files, waits, and counts again: the two counts. */
async function countsDuringARun(dir: string, trash: string, before?: () => Promise<void>): Promise<number[]> {
  const counts = join(dir, 'counts');
  await measure('sh', ['-c', 'c() { find "$1" -type f | wc -l; }; c "$1" > "$2"; sleep 0.5; c "$1" >> "$2"', 'count', trash, counts], { runs: 1, before });
  return (await readFile(counts, 'utf8')).split('\n').filter(Boolean).map(Number);
}

Trash('nothing set aside is deleted while a run is timed: a deletion begun during the run waits for its end', async ({ dir }) => {
  const trash = await trashOf(dir, 500);
  // Begun from the run's own set-up, once the run holds the trash.
  assert.equal(await countsDuringARun(dir, trash, async () => startEmptyingTrash()), [500, 500]);
  await emptyTrash();
  assert.equal((await readdir(dir)).sort(), ['counts']);
});

Trash('nothing set aside is deleted while a run is timed: a deletion under way is stopped for the run', async ({ dir }) => {
  const n = 20_000;
  const trash = await trashOf(dir, n);
  startEmptyingTrash();
  // Until rm has begun (its files start to go), then a timed run.
  const left = async () => Number((await run('sh', ['-c', 'find "$1" -type f | wc -l', 'count', trash])).stdout.trim());
  const deadline = Date.now() + 30_000;
  while ((await left()) === n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const [first, second] = await countsDuringARun(dir, trash);
  assert.ok(first! > 0 && first! < n, `rm was under way when the run began (${first} of ${n} left)`);
  assert.is(second, first, 'no file deleted during the run');
  await emptyTrash();
  assert.equal((await readdir(dir)).sort(), ['counts']);
});

Trash.run();

const Scratch = scratchSuite('scratch space');

Scratch('prepareScratch makes a filesystem of the run\'s own and drops the last run\'s whole; BENCH_SCRATCH=dir a directory', async ({ dir }) => {
  const mountsAt = (d: string) => mounts().filter((m) => m.mount === d).length;
  try {
    const first = await prepareScratch(dir);
    assert.equal(first.kind, 'filesystem');
    assert.match(describeScratch(first.dir), /^ext4 made for this run on \/dev\/loop\d+ \(over .*scratch\.ext4, direct I\/O\)/);
    await writeFile(join(first.dir, 'left'), 'x');
    const second = await prepareScratch(dir);
    assert.equal(await readdir(second.dir), ['lost+found']);
    assert.equal(mountsAt(second.dir), 1);
    const loops = (await run('losetup', ['-j', join(dir, 'scratch.ext4')])).stdout.trim().split('\n');
    assert.equal(loops.length, 1, loops.join('; '));
    process.env['BENCH_SCRATCH'] = 'dir';
    const plain = await prepareScratch(dir);
    assert.equal(plain.kind, 'directory');
    assert.equal(mountsAt(plain.dir), 0);
    assert.ok(!existsSync(join(dir, 'scratch.ext4')));
  } finally {
    delete process.env['BENCH_SCRATCH'];
    await dropScratch(dir);
  }
});

Scratch.run();

const Stats = suite('summarize');
Stats('median of odd and even counts, max RSS kept', () => {
  assert.equal(summarize([3, 1, 2], 5), { samples: [3, 1, 2], min: 1, median: 2, max: 3, rssKiB: 5 });
  assert.equal(summarize([4, 1, 2, 3], 0).median, 2.5);
  assert.is(summarize([1, 2, 3], 0, [900, 100, 500]).faults, 500, 'the median run\'s page faults');
  assert.is(summarize([1, 2, 3], 0, [], [0.9, 0.1, 0.5]).cpu, 0.5, 'the median run\'s CPU seconds');
});
Stats('a measured run carries its CPU seconds: a command that computes for half a second shows most of it, one that sleeps for it almost none', async () => {
  const busy = await measure(process.execPath, ['-e', 'const end = Date.now() + 500; while (Date.now() < end);'], { runs: 1 });
  const asleep = await measure('sleep', ['0.5'], { runs: 1 });
  assert.ok(busy.cpu! >= 0.4, `busy: ${busy.cpu} s of CPU`);
  assert.ok(asleep.cpu! < 0.1, `asleep: ${asleep.cpu} s of CPU`);
});
Stats('a measured run carries its page faults: a command that touches 64 MiB shows at least 16,000', async () => {
  const touch = await measure(process.execPath, ['-e', 'Buffer.alloc(64 << 20, 1)'], { runs: 1 });
  const idle = await measure(process.execPath, ['-e', '0'], { runs: 1 });
  assert.ok(touch.faults! - idle.faults! >= 16_000, `${touch.faults} against ${idle.faults}`);
});
Stats('commands of one comparison are timed in turn, run by run, every other turn in the opposite order; one that fails stops its own runs, not the others\'', async () => {
  const dir = await mkdtemp('/tmp/strata-bench-selftest-');
  try {
    const log = join(dir, 'log');
    const say = (word: string, code = 0) => ({ cmd: 'sh', args: ['-c', `echo ${word} >> "$1"; exit ${code}`, 'say', log], opts: { runs: 3 } });
    const [a, b, c] = await measureInTurn([say('a'), say('b', 1), say('c')]);
    assert.equal((await readFile(log, 'utf8')).split('\n').filter(Boolean), ['a', 'b', 'c', 'c', 'a', 'a', 'c']);
    assert.is(a!.status === 'fulfilled' && a!.value.samples.length, 3);
    assert.is(b!.status, 'rejected');
    assert.is(c!.status === 'fulfilled' && c!.value.samples.length, 3);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
Stats.run();

const Limit = suite('limiter');
Limit('at most n run at once, started in the order given; a failure frees its slot', async () => {
  const two = limiter(2);
  let running = 0;
  let most = 0;
  const started: number[] = [];
  const job = (i: number, fail = false) =>
    two(async () => {
      started.push(i);
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 5 + ((i * 7) % 11)));
      running--;
      if (fail) throw new Error(`job ${i}`);
      return i;
    });
  const results = await Promise.allSettled([0, 1, 2, 3, 4, 5, 6, 7].map((i) => job(i, i === 2)));
  assert.is(most, 2);
  assert.equal(started, [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(results.map((r) => (r.status === 'fulfilled' ? r.value : r.reason.message)), [0, 1, 'job 2', 3, 4, 5, 6, 7]);
});
Limit('images listed two at a time (each through a mount of its own) give the maps they give one at a time', async () => {
  if (process.getuid?.() !== 0) return console.log('  skipped: mounting images needs root');
  const dir = await mkdtemp('/tmp/strata-bench-limit-');
  try {
    const images: string[] = [];
    for (const k of [0, 1, 2]) {
      const src = join(dir, `t${k}`);
      await mkdir(join(src, 'd'), { recursive: true });
      for (let i = 0; i < 50; i++) await writeFile(join(src, 'd', `f${i}`), `${k}:${i}\n`);
      images.push(join(dir, `t${k}.${k === 1 ? 'erofs' : 'sqfs'}`));
      if (k === 1) await run('mkfs.erofs', [images[k]!, src]);
      else await run('mksquashfs', [src, images[k]!, '-quiet', '-no-progress']);
    }
    const alone: string[] = [];
    for (const img of images) alone.push(listingText(await snapshotImage(img)));
    const two = limiter(2);
    const together = await Promise.all(images.map((img) => two(() => snapshotImage(img))));
    assert.equal(together.map((m) => listingText(m)), alone);
    assert.not.equal(alone[0], alone[2], 'the images differ, so a mix-up would show');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
Limit.run();

const Mounts = suite('image mounts');
Mounts('an EROFS image is mounted from its file where the kernel can (no loop device), and lists as it does through one', async () => {
  if (process.getuid?.() !== 0) return console.log('  skipped: mounting images needs root');
  const dir = await mkdtemp('/tmp/strata-bench-mount-');
  try {
    const src = join(dir, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(src, 'd', `f${i}`), `${i}\n`.repeat(i * 100));
    await run('setfacl', ['-m', 'g:12345:r-x', join(src, 'd')]);
    const image = join(dir, 'a.erofs');
    await run('mkfs.erofs', [image, src]);
    const sourceOf = (mnt: string) => mounts().find((m) => m.mount === mnt)?.source;
    // Whether the kernel can mount an image file itself; undefined when its config cannot be read.
    const fileBacked = existsSync('/proc/config.gz')
      ? (await run('sh', ['-c', 'zcat /proc/config.gz | grep -qx CONFIG_EROFS_FS_BACKED_BY_FILE=y'], { allowFail: true })).code === 0
      : undefined;
    const seen = await withMountedImage(image, async (mnt) => ({ source: sourceOf(mnt), nodes: await snapshotTreeFast(mnt) }));
    if (fileBacked === true) assert.is(seen.source, image, 'mounted from the file itself');
    else if (fileBacked === false) assert.match(seen.source ?? '', /^\/dev\/loop/);
    process.env['BENCH_LOOP_MOUNT'] = '1';
    let viaLoop: Map<string, TreeNode>;
    try {
      viaLoop = await withMountedImage(image, async (mnt) => {
        assert.match(sourceOf(mnt) ?? '', /^\/dev\/loop/, 'BENCH_LOOP_MOUNT=1: through a loop device');
        return snapshotTreeFast(mnt);
      });
    } finally {
      delete process.env['BENCH_LOOP_MOUNT'];
    }
    assert.is(listingText(seen.nodes), listingText(viaLoop));
    assert.ok(seen.nodes.get('d')?.acl?.includes('group:12345:r-x'), 'the ACL is read through the mount');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
Mounts.run();

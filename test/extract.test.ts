/**
 * native/extract.ts: a layer blob read once on libuv's pool, verified and written into a tree.
 * Checked on canonical tars (strata's own header encoding), on GNU tar's and bsdtar's archives
 * (the reader follows a real tar), and on hostile plans and blobs: the digests are sha256sum's,
 * the header digest is the canonical encoding of the entries, nothing is written through a
 * symlink or above the root, and a blob that is not what the plan says is reported with the
 * digests of all its bytes.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIR_FLAGS } from '../native/fsops.js';
import { extractAvailable, LayerExtraction, type ExtractFile, type ExtractResult } from '../native/extract.js';
import { canonicalHeader } from '../store/layer/builder.js';
import { END_OF_ARCHIVE, encodePadding } from '../store/tar/writer.js';
import type { LayerEntry } from '../store/types.js';
import { strataOk } from './helpers/cli.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun } from './helpers/tmp.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Deterministic bytes: `n` of them, from `seed`. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 16;
  }
  return b;
}

interface Member {
  entry: LayerEntry;
  body?: Buffer;
}

/**
 * The text of an entry list as the store's cache holds it (`[`, a JSON row per entry on a
 * line of its own, `]`), restated here as the oracle the native reader is held to.
 */
function listText(entries: LayerEntry[]): string {
  const row = (e: LayerEntry) => {
    const r: unknown[] = [e.path, e.type, e.mode, e.uid, e.gid, e.mtime, e.size];
    if (e.linkname !== undefined || e.devmajor !== undefined) r.push(e.linkname ?? '');
    if (e.devmajor !== undefined) r.push(e.devmajor, e.devminor ?? 0);
    return JSON.stringify(r);
  };
  return `[${entries.map((e, i) => `${i === 0 ? '\n' : ',\n'}${row(e)}`).join('')}\n]\n`;
}

/** A canonical layer tar of `members` (in the given order), and the digest of its entry list. */
function canonicalTar(members: Member[]): { tar: Buffer; rows: string } {
  const parts: Buffer[] = [];
  for (const { entry, body } of members) {
    parts.push(canonicalHeader(entry));
    if (body) parts.push(body, encodePadding(body.length));
  }
  parts.push(END_OF_ARCHIVE);
  return { tar: Buffer.concat(parts), rows: sha(Buffer.from(listText(members.map((m) => m.entry)))) };
}

const file = (path: string, body: Buffer, mode = 0o644, extra: Partial<LayerEntry> = {}): Member => ({
  entry: { path, type: 'file', mode, uid: 0, gid: 0, mtime: 1_700_000_000, size: body.length, ...extra },
  body,
});
const dir_ = (path: string): Member => ({ entry: { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000, size: 0 } });

/** The reader's slot (native/extract.c SLOT). */
const SLOT = 256 << 10;
const LONG = `deep/${'n'.repeat(120)}/file.bin`;
const MEMBERS: Member[] = [
  dir_('.'),
  dir_('deep'),
  file('deep/a.txt', Buffer.from('alpha\n')),
  dir_(`deep/${'n'.repeat(120)}`),
  file(LONG, bytes(3 * (1 << 20) + 1234, 1), 0o4755, { uid: 1234, gid: 99, mtime: 1_600_000_000 }),
  file('deep/empty', Buffer.alloc(0), 0o600),
  file('deep/skipped', bytes(70_000, 2)),
  { entry: { path: 'deep/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1_700_000_000, size: 0, linkname: 'a.txt' } },
  file('zz', bytes(511, 3), 0o640, { uid: 7, gid: 8 }),
];

interface Ctx {
  dir: string;
  root: string;
  rootFd: number;
}

const fin = (e: LayerEntry) => ({ chown: { uid: e.uid, gid: e.gid, strict: true }, mode: e.mode, modeRefused: e.mode & ~0o070, mtime: e.mtime });

/** Runs `batches` (lists of member paths) against `blob`, the last with last=true. */
async function extract(blob: Buffer, rootFd: number, dir: string, batches: ExtractFile[][]): Promise<ExtractResult[]> {
  const path = join(dir, 'blob');
  writeFileSync(path, blob);
  const fd = openSync(path, 'r');
  const ex = new LayerExtraction(fd, rootFd);
  const out: ExtractResult[] = [];
  try {
    for (let i = 0; i < batches.length; i++) {
      const r = await ex.run(batches[i]!, i === batches.length - 1);
      out.push(r);
      if (r.error || r.problem) break;
    }
  } finally {
    ex.close();
    closeSync(fd);
  }
  return out;
}

/** A pax tar (python's tarfile) of names and values a row must escape or a pax record carry. */
const AWKWARD_TAR = `
import io, sys, tarfile
t = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT, encoding='utf-8')
def add(name, type=tarfile.REGTYPE, data=b'', **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type
    for k, v in kw.items(): setattr(ti, k, v)
    ti.size = len(data)
    t.addfile(ti, io.BytesIO(data) if data else None)
add('./', tarfile.DIRTYPE, mode=0o755, mtime=1700000000)
add('d', tarfile.DIRTYPE, mode=0o2775, mtime=5)
for i, n in enumerate(['q"uote', 'back\\\\slash', 'tab\\there', 'ctl\\x01\\x1f\\x7f', 'e\\u0301-\\u00fc', '\\U0001f600', 'line\\u2028sep', 'x' * 150]):
    add('d/' + n, data=bytes([i]) * (i * 100 + 1), mode=0o640 + i, uid=1000 + i, gid=2000 + i, mtime=1600000000 + i)
add('d/neg', data=b'n', mtime=-12345)
add('d/frac', data=b'f', mtime=1700000000.75)
add('d/big-ids', data=b'b', uid=3000000000, gid=4000000000)
add('d/link', tarfile.SYMTYPE, linkname='../' + 'y' * 140 + '/"\\\\target')
add('d/hard', tarfile.LNKTYPE, linkname='d/' + 'x' * 150)
add('d/char', tarfile.CHRTYPE, devmajor=4095, devminor=1048575)
add('d/fifo', tarfile.FIFOTYPE)
add('d/.wh.gone')
t.close()
`;

const why = missing({ root: true, tools: ['tar', 'bsdtar', 'sha256sum', 'python3'], check: () => (extractAvailable() ? undefined : 'no sha256 in this process') });
if (why) skipSuite('native layer extraction', why);
else {
  const t = suite<Ctx>('native layer extraction');
  t.before.each((ctx) => {
    ctx.dir = mkdtempSync(join(tmpdir(), 'strata-extract-'));
    ctx.root = join(ctx.dir, 'root');
    mkdirSync(join(ctx.root, 'deep', 'n'.repeat(120)), { recursive: true });
    ctx.rootFd = openSync(ctx.root, DIR_FLAGS);
  });
  t.after.each((ctx) => {
    closeSync(ctx.rootFd);
    rmSync(ctx.dir, { recursive: true, force: true });
  });

  t('a canonical layer: the planned files, byte for byte, with owner, mode and mtime; both digests', async ({ dir, root, rootFd }) => {
    const { tar, rows } = canonicalTar(MEMBERS);
    const want = MEMBERS.filter((m) => m.entry.type === 'file' && m.entry.path !== 'deep/skipped');
    // Three batches: the long file alone, the rest, and an empty last one.
    const plan = want.map((m) => ({ tarPath: m.entry.path, path: m.entry.path, finish: fin(m.entry) }));
    const rs = await extract(tar, rootFd, dir, [plan.slice(0, 2), plan.slice(2), []]);
    assert.is(rs.length, 3);
    for (const r of rs) assert.is(r.failed, -1);
    assert.equal([...rs[0]!.fds, ...rs[1]!.fds], want.map(() => -1), 'every file finished on the other thread');
    assert.is(rs[0]!.blob, undefined, 'digests only after the last batch');
    assert.is(rs[2]!.blob, sha(tar));
    assert.is(mustRun('sha256sum', [join(dir, 'blob')]).stdout.toString().slice(0, 64), sha(tar), "sha256sum's digest");
    assert.is(rs[2]!.rows, rows, 'the entry list its headers give');
    for (const m of want) {
      const p = join(root, m.entry.path);
      assert.ok(readFileSync(p).equals(m.body!), `${m.entry.path}: content`);
      const st = lstatSync(p);
      assert.is(st.mode & 0o7777, m.entry.mode, `${m.entry.path}: mode (setuid kept: set after the owner)`);
      assert.equal([st.uid, st.gid, Math.floor(st.mtimeMs / 1000)], [m.entry.uid, m.entry.gid, m.entry.mtime], `${m.entry.path}: owner, mtime`);
    }
    assert.equal(readdirSync(join(root, 'deep')).sort(), ['a.txt', 'empty', 'n'.repeat(120)], 'an unplanned member is not written');
  });

  t("the entry list a store's layer gives is its cached list, byte for byte, awkward names and numbers included", async ({ dir, rootFd }) => {
    const tar = join(dir, 'awkward.tar');
    mustRun('python3', ['-c', AWKWARD_TAR, tar]);
    const store = join(dir, 'store');
    strataOk(['store', 'import', 'awkward/1', tar], { store });
    const [rows] = readdirSync(join(store, 'cache', 'entries'));
    const hex = rows!.replace(/\.rows$/, '');
    const list = readFileSync(join(store, 'cache', 'entries', rows!));
    assert.match(list.toString(), /\\u0001\\u001f\x7f/, 'control characters escaped as JSON.stringify does');
    const rs = await extract(readFileSync(join(store, 'blobs', 'sha256', hex)), rootFd, dir, [[]]);
    assert.is(rs[0]!.problem, undefined);
    assert.is(rs[0]!.blob, hex, 'the blob is its name');
    assert.is(rs[0]!.rows, sha(list), 'the entry list the headers give is the cached one');
  });

  t('files larger than the ring between small ones: every file written, none waits forever', async ({ dir, root, rootFd }) => {
    // A writer waiting for bytes of a large file while the other waits for a job: each must
    // be woken by what it waits for (a hang here once, at a million files).
    const members: Member[] = [dir_('.'), dir_('big')];
    for (let i = 0; i < 24; i++) members.push(file(`big/${String(i).padStart(2, '0')}`, i % 2 === 0 ? bytes((9 << 20) + i, 10 + i) : bytes(1000 + i, 10 + i)));
    const { tar, rows } = canonicalTar(members);
    mkdirSync(join(root, 'big'));
    const plan = members.slice(2).map((m) => ({ tarPath: m.entry.path, path: m.entry.path, finish: fin(m.entry) }));
    const rs = await extract(tar, rootFd, dir, [plan.slice(0, 9), plan.slice(9), []]);
    assert.is(rs.at(-1)!.rows, rows);
    for (const m of members.slice(2)) assert.ok(readFileSync(join(root, m.entry.path)).equals(m.body!), m.entry.path);
  });

  t('many small batches of small files: the reader reads only what a writer needs, and never waits on itself', async ({ dir, root, rootFd }) => {
    // A writer woken by a read still counted as waiting until it ran: the reader read on for
    // it, ran the ring past its own position and waited for itself (a hang at a million files).
    const members: Member[] = [dir_('.'), dir_('many')];
    for (let i = 0; i < 12_000; i++) members.push(file(`many/${String(i).padStart(5, '0')}`, bytes(600 + (i % 900), i)));
    const { tar, rows } = canonicalTar(members);
    mkdirSync(join(root, 'many'));
    const plan = members.slice(2).map((m) => ({ tarPath: m.entry.path, path: m.entry.path, finish: fin(m.entry) }));
    // Each batch ends with the file whose body crosses a 256 KiB boundary of the blob (the
    // reader's slots): the batch ends with a writer waiting for the next slot.
    const batches: ExtractFile[][] = [];
    let at = 2 * 512; // the two directories' headers
    let from = 0;
    members.slice(2).forEach((m, i) => {
      const start = at + 512;
      at = start + m.body!.length + encodePadding(m.body!.length).length;
      if (Math.floor(start / SLOT) !== Math.floor((start + m.body!.length) / SLOT)) {
        batches.push(plan.slice(from, i + 1));
        from = i + 1;
      }
    });
    batches.push(plan.slice(from), []);
    const rs = await extract(tar, rootFd, dir, batches);
    assert.is(rs.length, batches.length, 'every batch ran');
    assert.is(rs.at(-1)!.rows, rows);
    assert.is(readdirSync(join(root, 'many')).length, 12_000);
    for (const i of [0, 1, 4321, 11_999]) assert.ok(readFileSync(join(root, members[i + 2]!.entry.path)).equals(members[i + 2]!.body!));
  });

  t('small files in many directories: writers that pass over a busy directory still write each file once, byte for byte', async ({ dir, root, rootFd }) => {
    // A writer takes files out of turn when the other writer is in the head's directory, so
    // the queue gets holes: each file must be taken once, and the reader must keep the bytes
    // of the first file not taken.
    const members: Member[] = [dir_('.')];
    const dirs = 60;
    for (let d = 0; d < dirs; d++) {
      const name = `d${String(d).padStart(2, '0')}`;
      members.push(dir_(name));
      mkdirSync(join(root, name));
      const n = d % 7 === 3 ? 400 : 20 + (d % 5) * 30;
      for (let i = 0; i < n; i++) members.push(file(`${name}/${String(i).padStart(3, '0')}`, bytes(d % 11 === 5 && i === 7 ? 700_000 : 300 + ((i * 37) % 2000), d * 1000 + i)));
    }
    const { tar, rows } = canonicalTar(members);
    const files = members.filter((m) => m.entry.type === 'file');
    const plan = files.map((m) => ({ tarPath: m.entry.path, path: m.entry.path, finish: fin(m.entry) }));
    const cut = Math.floor(plan.length / 3);
    const rs = await extract(tar, rootFd, dir, [plan.slice(0, cut), plan.slice(cut), []]);
    assert.is(rs.length, 3, 'every batch ran');
    for (const r of rs) assert.is(r.failed, -1, `no failure (${r.error?.message ?? ''})`);
    assert.equal([...rs[0]!.fds, ...rs[1]!.fds], plan.map(() => -1), 'every file finished');
    assert.is(rs[2]!.rows, rows);
    assert.is(rs[2]!.blob, sha(tar));
    for (const m of files) assert.ok(readFileSync(join(root, m.entry.path)).equals(m.body!), m.entry.path);
  });

  t('a file may come back open, written, and go elsewhere than its member', async ({ dir, root, rootFd }) => {
    const { tar } = canonicalTar(MEMBERS);
    const rs = await extract(tar, rootFd, dir, [[{ tarPath: 'zz', path: 'deep/renamed' }]]);
    const fd = rs[0]!.fds[0]!;
    assert.ok(fd >= 0, 'handed back');
    assert.is(fstatSync(fd).mode & 0o7777, 0o600, 'created 0600, nothing applied');
    closeSync(fd);
    assert.ok(readFileSync(join(root, 'deep/renamed')).equals(MEMBERS.at(-1)!.body!));
    assert.is(rs[0]!.blob, sha(tar));
  });

  t('GNU tar and bsdtar archives are followed: bodies right, the blob digest right', async ({ dir, root, rootFd }) => {
    const src = join(dir, 'src');
    mkdirSync(join(src, 'd', 'n'.repeat(150)), { recursive: true });
    const files: Array<[string, Buffer]> = [
      ['d/one', bytes(5000, 4)],
      [`d/${'n'.repeat(150)}/two`, bytes((1 << 20) + 7, 5)],
      ['d/three', bytes(0, 6)],
    ];
    for (const [p, b] of files) writeFileSync(join(src, p), b);
    for (const [tool, args] of [
      ['tar', ['--format=pax', '--sort=name', '-C', src, '-cf', '-', 'd']],
      ['bsdtar', ['--format=pax', '-C', src, '-cf', '-', 'd']],
    ] as const) {
      const tar = mustRun(tool, [...args]).stdout;
      const out = `${tool}-out`;
      mkdirSync(join(root, out, 'n'.repeat(150)), { recursive: true });
      // bsdtar's order is the directory's: plan in the archive's order.
      const names = mustRun('tar', ['-tf', '-'], { input: tar }).stdout.toString().split('\n').filter((n) => files.some(([p]) => p === n));
      const plan = names.map((n) => ({ tarPath: n, path: `${out}/${n.slice(2)}` }));
      const rs = await extract(tar, rootFd, dir, [plan]);
      assert.is(rs[0]!.problem, undefined, `${tool}: ${rs[0]!.problem}`);
      assert.is(rs[0]!.blob, sha(tar), `${tool}: blob digest`);
      for (const fd of rs[0]!.fds) closeSync(fd);
      for (const [p, b] of files) assert.ok(readFileSync(join(root, out, p.slice(2))).equals(b), `${tool}: ${p}`);
    }
  });

  t('a hostile plan: no write through a symlink, above the root or over a file; the rest not reached', async ({ dir, root, rootFd }) => {
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    symlinkSync(outside, join(root, 'out'));
    writeFileSync(join(root, 'there'), 'old\n');
    const { tar } = canonicalTar(MEMBERS);
    for (const [path, code] of [
      ['out/escape', 'ELOOP'],
      ['../outside/up', 'EXDEV'],
      ['/etc/strata-test', 'EXDEV'],
      ['there', 'EEXIST'],
    ] as const) {
      const rs = await extract(tar, rootFd, dir, [[{ tarPath: 'deep/a.txt', path }, { tarPath: 'zz', path: 'fine' }]]);
      const r = rs[0]!;
      assert.is(r.failed, 0, path);
      assert.is(r.error?.code, code, `${path}: ${r.error?.message}`);
      assert.is(r.error?.syscall, 'openat2');
      // Another writer may have taken the next file before the failure stopped the batch.
      if (r.fds[1]! >= 0) closeSync(r.fds[1]!);
      rmSync(join(root, 'fine'), { force: true });
    }
    assert.equal(readdirSync(outside), [], 'nothing outside');
    assert.is(readFileSync(join(root, 'there'), 'utf8'), 'old\n');
    assert.equal(readdirSync(root).sort(), ['deep', 'out', 'there']);
  });

  t('a blob that is not the plan\'s: every byte still hashed, the problem named', async ({ dir, rootFd }) => {
    const { tar } = canonicalTar(MEMBERS);
    const cases: Array<[string, Buffer, ExtractFile[], RegExp]> = [
      ['not a tar', bytes(100_000, 9), [], /header is damaged/],
      ['cut short', tar.subarray(0, 4096), [{ tarPath: LONG, path: 'x1' }], /ends in the middle/],
      ['no end-of-archive', tar.subarray(0, tar.length - 1024), [], /ends in the middle/],
      ['a planned file it lacks', tar, [{ tarPath: 'deep/nope', path: 'x2' }], /does not hold deep\/nope/],
      ['out of order', tar, [{ tarPath: 'zz', path: 'x3' }, { tarPath: 'deep/a.txt', path: 'x4' }], /does not hold deep\/a\.txt/],
      ['a damaged checksum', Buffer.concat([Buffer.from('x'), tar.subarray(1)]), [], /header is damaged/],
    ];
    for (const [what, blob, plan, problem] of cases) {
      const rs = await extract(blob, rootFd, dir, [plan]);
      const r = rs.at(-1)!;
      assert.match(r.problem ?? '', problem, what);
      assert.is(r.blob, sha(blob), `${what}: the whole blob hashed`);
      for (const fd of r.fds) if (fd >= 0) closeSync(fd);
    }
  });

  t('the session refuses a second run while one runs, and a malformed batch', async ({ dir, rootFd }) => {
    const { tar } = canonicalTar(MEMBERS);
    writeFileSync(join(dir, 'blob'), tar);
    const fd = openSync(join(dir, 'blob'), 'r');
    const ex = new LayerExtraction(fd, rootFd);
    try {
      const first = ex.run([], false);
      await ex.run([], false).then(
        () => assert.unreachable('a second run at once'),
        (e: NodeJS.ErrnoException) => assert.is(e.code, 'ERR_INVALID_STATE'),
      );
      await first;
      const r = await ex.run([{ tarPath: 'zz', path: 'a\0b' }], true).catch((e: Error) => e);
      assert.instance(r, Error, 'a NUL in a path is refused before anything runs');
    } finally {
      ex.close();
      closeSync(fd);
    }
  });

  t.run();
}

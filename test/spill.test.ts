/**
 * store/spill.ts: records sorted whatever their number, stably, with run files on disk past
 * the budget and none left afterwards; LayerEntry survives the record codec byte for byte.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, constants, fstatSync, readdirSync, readSync, statSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { AT_FDCWD, openat, tmpfileFlag } from '../native/fsops.js';
import { merge, openNamedUnlinked, SpillSorter, type RecordCodec } from '../store/spill.js';
import { decodeEntry, encodeEntry, entryCodec } from '../store/layer/entry-codec.js';
import { comparePaths, type LayerEntry } from '../store/types.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { seeded } from './helpers/random.js';
import { WideList } from '../compose/image/shared/wide-list.js';

const test = suite<{ dir: string }>('spill sorter');
test.before.each((ctx) => {
  ctx.dir = tempDir('strata-spill-');
});
test.after.each((ctx) => removeDir(ctx.dir));

const pairs: RecordCodec<[number, number]> = {
  encode: (t) => Buffer.from(JSON.stringify(t)),
  decode: (b) => JSON.parse(b.toString()) as [number, number],
  size: () => 16,
};

for (const [n, budget] of [[0, 1024], [5, 1 << 20], [20_000, 64 * 50], [20_000, 1 << 30]] as const) {
  test(`${n} records, budget ${budget}: sorted, stable, no run file left`, ({ dir }) => {
    const rnd = seeded(n + budget);
    const s = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget });
    const input: Array<[number, number]> = Array.from({ length: n }, (_, i) => [Math.floor(rnd() * 500), i]);
    for (const r of input) s.push(r);
    assert.is(s.spilled, n * 64 > budget);
    const out = [...s.sorted()];
    s.dispose();
    const want = [...input].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    assert.equal(out, want);
    assert.equal(readdirSync(dir), []);
  });
}

test('input that comes in ascending stretches (layers) merges one chain of runs per stretch, sorted and stable', ({ dir }) => {
  // Three stretches, each ascending with repeated keys (also across the runs' edges), the
  // second and third starting below where the one before ended.
  const input: Array<[number, number]> = [];
  for (const [from, n] of [[0, 3000], [100, 2000], [50, 2500]] as const) {
    for (let i = 0; i < n; i++) input.push([from + Math.floor(i / 7), input.length]);
  }
  const s = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget: 64 * 100 });
  for (const r of input) s.push(r);
  const out = [...s.sorted()];
  assert.is(s.chainCount, 3, 'one chain per ascending stretch');
  assert.equal(out, [...input].sort((a, b) => a[0] - b[0] || a[1] - b[1]));
  const shuffled = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget: 64 * 100 });
  for (let i = 0; i < input.length; i++) shuffled.push(input[(i * 7919) % input.length]!);
  assert.equal([...shuffled.sorted()].map((r) => r[0]), out.map((r) => r[0]));
  assert.ok(shuffled.chainCount > 10, `out-of-order runs are merged one by one (${shuffled.chainCount} chains)`);
  s.dispose();
  shuffled.dispose();
  assert.equal(readdirSync(dir), []);
});

test('merge: sorted sources in one stable order, whether they interleave record by record or come in long stretches', () => {
  const rnd = seeded(7);
  for (let round = 0; round < 200; round++) {
    const k = 1 + Math.floor(rnd() * 9);
    const stretch = 1 + Math.floor(rnd() * 50); // 1: interleaved; larger: long stretches from one source
    const sources: Array<Array<[number, number, number]>> = Array.from({ length: k }, () => []);
    let key = 0;
    for (let i = 0; i < 300; i++) {
      if (i % stretch === 0) key += Math.floor(rnd() * 3); // repeated keys, within and across sources
      const s = Math.floor(i / stretch) % k === 0 || rnd() < 0.3 ? Math.floor(rnd() * k) : Math.floor(i / stretch) % k;
      sources[s]!.push([key, s, sources[s]!.length]);
    }
    if (rnd() < 0.2) sources.push([]); // an empty source
    const out = [...merge(sources.map((x) => x[Symbol.iterator]()), (a, b) => a[0] - b[0])];
    // Stable: equal keys in source order, then in each source's own order.
    const want = sources.flat().sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    const at = want.findIndex((w, i) => String(w) !== String(out[i]));
    assert.ok(at < 0 && out.length === want.length, `round ${round}: ${k} sources, stretches of ${stretch}: record ${at} is ${out[at]}, want ${want[at]}`);
  }
  assert.equal([...merge<number>([], (a, b) => a - b)], []);
});

test('a sorter that spilled is read from disk alone: reading it leaves no record in memory', ({ dir }) => {
  const mk = (budget: number) => {
    const s = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget });
    for (let i = 0; i < 1000; i++) s.push([(i * 7919) % 1000, i]);
    return s;
  };
  const spilled = mk(64 * 300);
  const small = mk(1 << 20);
  assert.ok(spilled.spilled && spilled.held > 0, 'records past the last run are held while pushing');
  const first = [...spilled.sorted()];
  assert.is(spilled.held, 0, 'after reading, every record of a spilled sorter is in a run file');
  assert.equal([...spilled.sorted()], first, 'read again, the same order');
  spilled.push([-1, 1000]);
  assert.equal([...spilled.sorted()][0], [-1, 1000], 'pushes after a read still sort in');
  assert.is(small.held, 1000, 'a sorter that never spilled keeps its records in memory');
  assert.equal([...small.sorted()], first);
  assert.is(small.held, 1000);
  spilled.dispose();
  small.dispose();
  assert.equal(readdirSync(dir), []);
});

test('runs live in one nameless file per sorter, closed by dispose; a read left open throws after it', ({ dir }) => {
  const fds = () => readdirSync('/proc/self/fd').length;
  const before = fds();
  // Runs far larger than a merge's read buffers (16 KiB at least), so reading refills them.
  const s = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget: 64 * 2000 });
  for (let i = 0; i < 20_000; i++) s.push([(i * 7919) % 20_000, i]);
  assert.ok(s.spilled);
  assert.equal(readdirSync(dir), [], 'no run has a name');
  assert.is(fds(), before + 1, 'one descriptor for all the runs');
  const it = s.sorted();
  assert.equal(it.next().value, [0, 0]);
  s.dispose();
  assert.is(fds(), before, 'dispose closes it');
  assert.throws(() => [...it], /disposed while it was read/);
  assert.throws(() => s.sorted().next(), /already disposed/);
});

test('where the filesystem makes files without a name, the run file never has one: its directory is never written', ({ dir }) => {
  // A name made and removed changes the directory's mtime; a file made with O_TMPFILE does not.
  let probe: number;
  try {
    probe = openat(AT_FDCWD, dir, tmpfileFlag() | constants.O_RDWR | constants.O_EXCL, 0o600);
  } catch (e) {
    console.log(`skip: O_TMPFILE in ${dir}: ${(e as Error).message}`);
    return;
  }
  closeSync(probe);
  utimesSync(dir, 1_000_000, 1_000_000);
  const s = new SpillSorter<[number, number]>({ compare: (a, b) => a[0] - b[0], codec: pairs, dir, budget: 64 * 50 });
  for (let i = 0; i < 2000; i++) s.push([(i * 7919) % 2000, i]);
  assert.ok(s.spilled);
  assert.is([...s.sorted()].length, 2000);
  s.dispose();
  assert.is(statSync(dir).mtimeMs, 1_000_000_000, 'no name was made in the directory, not even for a moment');
});

test('elsewhere the run file is named O_EXCL, 0600, and unlinked before it is used; a planted symlink is refused', ({ dir }) => {
  const fd = openNamedUnlinked(dir);
  try {
    assert.equal(readdirSync(dir), [], 'the name is gone');
    assert.is(fstatSync(fd).mode & 0o777, 0o600);
    assert.is(fstatSync(fd).nlink, 0);
    writeSync(fd, Buffer.from('run'), 0, 3, 0);
    const back = Buffer.alloc(3);
    readSync(fd, back, 0, 3, 0);
    assert.is(back.toString(), 'run', 'read and written by position');
  } finally {
    closeSync(fd);
  }
  assert.throws(() => openNamedUnlinked(join(dir, 'missing')), /ENOENT/, 'a directory that is not there is an error, not a fallback');
});

test('a sorter read again without a push in between gives the same records, not sorted again', ({ dir }) => {
  let compared = 0;
  const s = new SpillSorter<[number, number]>({ compare: (a, b) => (compared++, a[0] - b[0]), codec: pairs, dir, budget: 1 << 20 });
  for (let i = 0; i < 1000; i++) s.push([(i * 7919) % 1000, i]);
  const first = [...s.sorted()];
  const after = compared;
  assert.equal([...s.sorted()], first);
  assert.is(compared, after, 'no comparison on the second read');
  s.push([-1, 1000]);
  assert.equal([...s.sorted()], [[-1, 1000], ...first], 'a push sorts again');
  s.dispose();
});

for (const [n, budget] of [[100, 1 << 20], [10_000, 1 << 20], [10_000, 4096]] as const) {
  test(`WideList: ${n} records, budget ${budget}: given back in push order, as often as read; no run file left`, ({ dir }) => {
    const before = process.env.STRATA_MEMORY_BUDGET;
    process.env.STRATA_MEMORY_BUDGET = String(budget);
    try {
      const list = new WideList<[number, number]>(pairs, dir);
      // Keys out of order: the queue keeps the order they came in, whatever they compare as.
      const input: Array<[number, number]> = Array.from({ length: n }, (_, i) => [(i * 7919) % 97, i]);
      for (const r of input) list.push(r);
      assert.is(list.length, n);
      assert.equal([...list], input);
      assert.equal([...list], input, 'read again');
      list.dispose();
      list.dispose();
      assert.equal(readdirSync(dir), []);
    } finally {
      if (before === undefined) delete process.env.STRATA_MEMORY_BUDGET;
      else process.env.STRATA_MEMORY_BUDGET = before;
    }
  });
}

test('comparePaths is the UTF-8 byte order of the components (parents first)', () => {
  // The reference: split into components and compare their UTF-8 bytes.
  const reference = (a: string, b: string): number => {
    if (a === b) return 0;
    if (a === '.') return -1;
    if (b === '.') return 1;
    const [pa, pb] = [a.split('/'), b.split('/')];
    for (let i = 0; i < Math.min(pa.length, pb.length); i++) if (pa[i] !== pb[i]) return Buffer.compare(Buffer.from(pa[i]!), Buffer.from(pb[i]!));
    return pa.length - pb.length;
  };
  const rnd = seeded(11);
  // '/', characters below and above it, two- and three-byte ones on each side of the
  // surrogates, and a four-byte one (a surrogate pair in UTF-16).
  const alphabet = ['a', 'b', '/', '-', '.', '0', '~', 'é', '\u{e000}', '\u{ffff}', '\u{1f600}'];
  const path = () => {
    const parts = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join('').split('/').filter(Boolean);
    return parts.length > 0 ? parts.join('/') : '.';
  };
  for (let i = 0; i < 50_000; i++) {
    const [a, b] = [path(), path()];
    assert.is(Math.sign(comparePaths(a, b)), Math.sign(reference(a, b)), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
});

test('entries keep every byte of their metadata through a spill', ({ dir }) => {
  const e = (p: string, extra: Partial<LayerEntry> = {}): LayerEntry => ({ path: p, type: 'file', mode: 0o644, uid: 3000000, gid: 7, mtime: 1600000000, size: 3, ...extra });
  const entries: LayerEntry[] = [
    e('b', { xattrs: new Map([['security.capability', Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0, 0, 0])]]) }),
    e('a/x', { type: 'char', size: 0, devmajor: 1, devminor: 3 }),
    e('a', { type: 'dir', size: 0, acl: { access: 'u::rwx,g::r-x,g:5:rwx,m::rwx,o::---', default: 'u::rwx,g::r-x,o::---' } }),
    e('a-b', { type: 'symlink', size: 0, linkname: 'a/x' }),
  ];
  const s = new SpillSorter({ compare: (x, y) => comparePaths(x.entry.path, y.entry.path), codec: entryCodec<number>(), dir, budget: 1 });
  entries.forEach((entry, i) => s.push({ entry, extra: i }));
  const out = [...s.sorted()];
  s.dispose();
  assert.equal(out.map((r) => r.entry.path), ['a', 'a/x', 'a-b', 'b']);
  assert.equal(out.map((r) => r.extra), [2, 1, 3, 0]);
  assert.equal(out[3]!.entry, entries[0]);
  assert.equal(out[0]!.entry, entries[2]);
});

test('the record codec keeps every extra value a caller gives, and refuses a lone surrogate', () => {
  const e: LayerEntry = { path: 'dir/naïve \u{1F600}', type: 'hardlink', mode: 0o7777, uid: 2 ** 40, gid: 0, mtime: -86400, size: 0, linkname: '' };
  const extras: unknown[] = [undefined, null, 0, -1.5, 2 ** 53 - 1, '', 'a/b', [7], [3, 'tar/path'], [12, [0, 4096, undefined]], ['fn', 3], [1, [2, [3, []]]], { kind: 'object' }, true];
  for (const extra of extras) {
    const back = decodeEntry(Buffer.from(encodeEntry(e, extra)));
    assert.equal(back.entry, e);
    assert.equal(back.extra, extra);
    assert.is('extra' in back, extra !== undefined);
  }
  // A Buffer comes back as bytes of its own, not a view of the record (nor JSON of a Buffer).
  const bytes = Buffer.from([0, 1, 2, 255]);
  const record = Buffer.from(encodeEntry(e, bytes));
  const got = decodeEntry(record).extra as Buffer;
  assert.ok(Buffer.isBuffer(got) && got.equals(bytes), String(got));
  record.fill(0);
  assert.ok(got.equals(bytes), 'a copy');
  // An encoded record is a view of the encoder's buffer: the next call reuses it.
  const a = encodeEntry(e, 1);
  const copy = Buffer.from(a);
  encodeEntry({ ...e, path: 'other' }, 2);
  assert.equal(decodeEntry(copy).extra, 1);
  assert.throws(() => encodeEntry({ ...e, path: 'bad\ud800' }), /not well-formed/);
  assert.throws(() => decodeEntry(copy.subarray(0, copy.length - 1)), (e: unknown) => e instanceof RangeError && /out of range|past the record/.test(e.message));
});

test.run();

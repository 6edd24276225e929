/**
 * The readers' walk (compose/image/shared/walk.ts) and hard links, for both formats, against
 * images mksquashfs and mkfs.erofs make of one tree: links across directories, a link sorting
 * before the name it shares an inode with, 300 links to one file, interleaved groups, a
 * linked fifo (not a linked symlink: mksquashfs does not always keep one an inode), the first
 * link in the middle of a 700-name directory. What the
 * walk must give comes from lstat of the tree, not from strata: every path in canonical
 * order, the first name of each inode of more than one name as its own type, the later ones
 * as hard links to it. Checked with the sorters in memory and spilled (a 256-byte budget),
 * that no spill file is left (a walk stopped early included), and that damage ahead of the
 * walk (a listing out of order, which the survey meets first) gives the same entries up to
 * the damage, then the one error.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErofsImage, SquashfsImage, type ImageEntry } from '../compose/image/index.js';
import { comparePaths } from '../store/index.js';
import { isStrataError } from '../store/errors.js';
import { IMAGE_ERR } from '../compose/image/errors.js';
import { missing, skipSuite } from './helpers/probe.js';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';

type Reader = SquashfsImage | ErofsImage;

/** The tree; its last top-level entry is zz-dir, whose listing the damage test breaks. */
function makeTree(root: string): void {
  const w = (p: string, data: string) => {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), data);
  };
  const ln = (from: string, to: string) => {
    mkdirSync(join(root, to, '..'), { recursive: true });
    linkSync(join(root, from), join(root, to));
  };
  // A wide directory first in walk order, its first link in the middle of a header's run
  // (SquashFS) and of a block (EROFS): the survey forks the walk's listings there.
  for (let i = 0; i < 700; i++) w(`0-wide/f${String(i).padStart(3, '0')}`, `w${i}\n`);
  ln('0-wide/f450', '0-wide/f650-link');
  w('m/f', 'one\n');
  for (const to of ['b/l', 'c/d/l2', 'zz', 'm/g', 'a-first']) ln('m/f', to);
  w('many/base', 'base\n');
  for (let i = 0; i < 300; i++) ln('many/base', `many/l${String(i).padStart(3, '0')}`);
  ln('many/base', 'other/x');
  for (let i = 0; i < 100; i++) w(`g/${i}`, `g${i}\n`);
  for (let i = 0; i < 100; i++) ln(`g/${99 - i}`, `h/${i}`);
  w('top/f', 'deep\n');
  ln('top/f', 'd1/d2/d3/f');
  mkdirSync(join(root, 's'));
  symlinkSync('../m/f', join(root, 's/sym'));
  mustRun('mkfifo', [join(root, 'p-fifo')]);
  linkSync(join(root, 'p-fifo'), join(root, 'p-fifo2'));
  w('solo', 'solo\n');
  w('zz-dir/yyy-first-name', 'first\n');
  w('zz-dir/yyy-second-name', 'second\n');
}

/** What the walk must give, from lstat: `path type [linkname]` in canonical order. */
function expected(root: string): string[] {
  const paths: string[] = [];
  const list = (rel: string) => {
    for (const n of readdirSync(join(root, rel))) {
      const p = rel === '.' ? n : `${rel}/${n}`;
      paths.push(p);
      if (lstatSync(join(root, p)).isDirectory()) list(p);
    }
  };
  list('.');
  paths.sort(comparePaths);
  const first = new Map<number, string>();
  const out = ['. dir'];
  for (const p of paths) {
    const st = lstatSync(join(root, p));
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'file';
    const f = type !== 'dir' && st.nlink > 1 ? first.get(st.ino) : undefined;
    if (f !== undefined) out.push(`${p} hardlink ${f}`);
    else {
      if (type !== 'dir' && st.nlink > 1) first.set(st.ino, p);
      out.push(`${p} ${type}`);
    }
  }
  return out;
}

const line = (e: ImageEntry) => (e.type === 'hardlink' ? `${e.path} hardlink ${e.linkname}` : `${e.path} ${e.type}`);

/**
 * The walk as lines, its error, and whether its read-ahead for hard links (the survey) worked;
 * with `budget`, the sorters spill past that many bytes.
 */
async function walk(img: Reader, opts: { budget?: number; scratchDir?: string } = {}): Promise<{ lines: string[]; error?: unknown; surveyed?: boolean }> {
  const lines: string[] = [];
  let surveyed: boolean | undefined;
  const before = process.env.STRATA_MEMORY_BUDGET;
  if (opts.budget !== undefined) process.env.STRATA_MEMORY_BUDGET = String(opts.budget);
  try {
    for await (const e of img.walk({ scratchDir: opts.scratchDir, onSurvey: (ok) => (surveyed = ok) })) lines.push(line(e));
    return { lines, surveyed };
  } catch (error) {
    return { lines, error, surveyed };
  } finally {
    if (before === undefined) delete process.env.STRATA_MEMORY_BUDGET;
    else process.env.STRATA_MEMORY_BUDGET = before;
  }
}

const why = missing({ tools: ['mksquashfs', 'mkfs.erofs', 'mkfifo'] });
if (why) skipSuite('image: the readers walk hard links', why);
else {
  const test = suite('image: the readers walk hard links');
  let dir = '';
  let want: string[] = [];
  const images: Record<string, { path: string; open: (p: string) => Promise<Reader> }> = {};

  test.before(() => {
    dir = tempDir('strata-walk-test-');
    makeTree(join(dir, 'tree'));
    want = expected(join(dir, 'tree'));
    const sq = (name: string, args: string[]) => {
      mustRun('mksquashfs', [join(dir, 'tree'), join(dir, name), '-noappend', '-quiet', '-no-progress', '-processors', '1', ...args]);
      images[name] = { path: join(dir, name), open: (p) => SquashfsImage.open(p) };
    };
    sq('gzip.sqfs', []);
    sq('plain.sqfs', ['-noI', '-noD', '-noF', '-noX']);
    mustRun('mkfs.erofs', ['--quiet', join(dir, 'plain.erofs'), join(dir, 'tree')]);
    images['plain.erofs'] = { path: join(dir, 'plain.erofs'), open: (p) => ErofsImage.open(p) };
  });
  test.after(() => removeDir(dir));

  test('each inode of more than one name: its first name in walk order, the others hard links to it', async () => {
    assert.ok(want.filter((l) => l.includes(' hardlink ')).length > 400, 'the tree has its links');
    for (const [name, { path, open }] of Object.entries(images)) {
      const img = await open(path);
      try {
        for (const budget of [undefined, 256]) {
          const scratch = join(dir, `scratch-${name}-${budget}`);
          mkdirSync(scratch);
          const r = await walk(img, { budget, scratchDir: scratch });
          assert.is(r.error, undefined, `${name}: ${String(r.error)}`);
          assert.is(r.surveyed, true, `${name}: the walk read ahead from its first link (0-wide/f450, in the middle of its listing)`);
          assert.equal(r.lines, want, `${name}, budget ${budget ?? 'default'}`);
          assert.equal(readdirSync(scratch), [], `${name}: the spill files are removed`);
        }
      } finally {
        await img.close();
      }
    }
  });

  test('without a scratch directory the spill files go to a private one under tmp, removed after; also when the walk stops early', async () => {
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp);
    const before = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      const img = await SquashfsImage.open(images['gzip.sqfs']!.path);
      try {
        assert.equal((await walk(img, { budget: 256 })).lines, want);
        assert.equal(readdirSync(tmp), []);
        process.env.STRATA_MEMORY_BUDGET = '256';
        for await (const e of img.walk()) if (e.type === 'hardlink') break;
        delete process.env.STRATA_MEMORY_BUDGET;
        assert.equal(readdirSync(tmp), [], 'a walk stopped at its first link');
      } finally {
        await img.close();
      }
    } finally {
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
    }
  });

  test('damage the survey meets first: the same entries as far as the damage, then its one error', async () => {
    // zz-dir's listing put out of order: the survey starts at the tree's first link and fails
    // there; the walk must still give every entry before the part of zz-dir's listing that holds
    // the damage, links included (listings are read as the walk goes, a header's run or a block
    // at a time, each checked whole before its entries are given; zz-dir's two names are one).
    const upto = want.indexOf('zz-dir dir') + 1;
    for (const name of ['plain.sqfs', 'plain.erofs']) {
      const bytes = readFileSync(images[name]!.path);
      const at = bytes.indexOf('yyy-second-name');
      assert.ok(at > 0 && bytes.indexOf('yyy-second-name', at + 1) < 0, `${name}: the name is stored once`);
      bytes.write('aaa', at);
      const bad = join(dir, `bad-${name}`);
      writeFileSync(bad, bytes);
      const img = await images[name]!.open(bad);
      try {
        for (const budget of [undefined, 256]) {
          const r = await walk(img, { budget });
          assert.equal(r.lines, want.slice(0, upto), `${name}, budget ${budget ?? 'default'}`);
          assert.is(r.surveyed, false, `${name}: the read-ahead met the damage first`);
          assert.ok(isStrataError(r.error) && r.error.code === IMAGE_ERR.CORRUPT, `${name}: ${String(r.error)}`);
          assert.match((r.error as Error).message, /zz-dir/);
          assert.not.match((r.error as Error).message, /\n/);
        }
      } finally {
        await img.close();
      }
    }
  });

  test.run();
}

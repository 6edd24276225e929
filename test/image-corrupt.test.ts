/**
 * `strata inspect` on damaged images, through the CLI: truncated at many offsets, bytes
 * flipped in the superblock, in each table and in the block that holds /.strata/lock.json,
 * and a sweep of flips across the whole image. Where inspect must read the damaged bytes it
 * exits 1 with exactly one line on stderr, `strata: …`, no stack trace and no "internal
 * error"; elsewhere it may also succeed, but then with exactly the intact image's output —
 * never a crash, a hang or a different lock. Images: zstd (the default) and gzip; inside
 * compressed metadata only gzip (zlib's Adler-32) must notice a flip, as zstd frames carry no
 * checksum.
 *
 * SquashFS 4.0 superblock (little endian), the fields used below:
 *    0 u32 magic "hsqs"        12 u32 block_size     20 u16 compressor   22 u16 block_log
 *   28 u16 version_major      32 u64 root_inode_ref 40 u64 bytes_used
 *   48 u64 id_table_start     56 u64 xattr_id_table_start
 *   64 u64 inode_table_start  72 u64 directory_table_start
 *   80 u64 fragment_table_start 88 u64 export_table_start
 * Data and fragment blocks come first, in the order strata adds files; the embedded metadata
 * (/.strata/*) is added last, so its fragment block ends right where the inode table starts.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeStack } from './fixtures/stack.js';
import { removeDir, tempDir } from './helpers/tmp.js';
import { assertNotACrash, strata, strataOk, type Workspace } from './helpers/cli.js';
import { importStack } from './image-harness.js';

const Corrupt = suite('image: inspect of corrupt and truncated images');
let fixture = '';
let tmp = '';
let o: Workspace;
/** The image under test and what inspect prints for it intact. */
let image: Buffer;
let intact = '';
const good: Record<'zstd' | 'gzip', { image: Buffer; intact: string }> = {} as never;

function use(comp: 'zstd' | 'gzip'): void {
  ({ image, intact } = good[comp]);
}

// The good images are read-only inputs of every test: built once, in their own directory.
Corrupt.before(() => {
  fixture = tempDir('strata-image-bad-fixture-');
  o = { cwd: join(fixture, 'work'), store: join(fixture, 'store') };
  mkdirSync(o.cwd);
  importStack(o, makeStack(join(fixture, 'stack')));
  for (const comp of ['zstd', 'gzip'] as const) {
    strataOk(['-q', 'compose', 'squash', `${comp}.sqfs`, '--comp', comp, '--block-size', '4096'], o);
    good[comp] = { image: readFileSync(join(o.cwd, `${comp}.sqfs`)), intact: strataOk(['inspect', `${comp}.sqfs`], o) };
    assert.match(good[comp].intact, /lic\/2024\.1/);
  }
  use('zstd');
});

Corrupt.after(() => {
  removeDir(fixture);
});

Corrupt.before.each(() => {
  tmp = tempDir('strata-image-bad-');
});

Corrupt.after.each(() => {
  removeDir(tmp);
});

const u64 = (off: number) => Number(image.readBigUInt64LE(off));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function inspect(bytes: Buffer, name: string): Outcome {
  const f = join(tmp, `${name}.sqfs`);
  writeFileSync(f, bytes);
  const r = strata(['inspect', f], o);
  return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr };
}

/** exit 1, one line `strata: …` on stderr, no stack trace, not an internal error, nothing on stdout. */
function assertCleanFailure(r: Outcome, what: string): void {
  assert.is(r.code, 1, `${what}: exit code ${r.code}, stderr:\n${r.stderr}stdout:\n${r.stdout}`);
  assert.match(r.stderr, /^strata: [^\n]+\n$/, `${what}: one line on stderr:\n${r.stderr}`);
  assertNotACrash(r.stderr, what);
  assert.is(r.stdout, '', `${what}: nothing on stdout`);
}

/** inspect's output without its first line, which names the file. */
const body = (stdout: string) => stdout.slice(stdout.indexOf('\n') + 1);

/** Either the clean failure above or success with exactly the intact image's output. */
function assertFailsOrIntact(r: Outcome, what: string): void {
  if (r.code === 0) assert.is(body(r.stdout), body(intact), `${what}: succeeded with other output than the intact image`);
  else assertCleanFailure(r, what);
}

function flipped(off: number, mask = 0xff): Buffer {
  const b = Buffer.from(image);
  b[off]! ^= mask;
  return b;
}

function withU64(off: number, v: bigint): Buffer {
  const b = Buffer.from(image);
  b.writeBigUInt64LE(v, off);
  return b;
}

Corrupt('truncated images: every cut before the end of the filesystem fails cleanly', () => {
  use('zstd');
  const used = u64(40);
  assert.ok(used <= image.length && image.length % 4096 === 0, 'bytes_used within the padded file');
  const cuts = [0, 3, 4, 95, 96, 4096, Math.floor(used / 2), u64(64) + 1, u64(72) + 7, u64(80), u64(48), used - 1];
  for (const cut of cuts) assertCleanFailure(inspect(image.subarray(0, cut), `cut-${cut}`), `truncated to ${cut} of ${used} bytes`);
  // Cutting only the zero padding after bytes_used loses nothing.
  if (image.length > used) assert.is(body(inspect(image.subarray(0, used), 'no-padding').stdout), body(intact));
});

/** Flips inside compressed metadata and inside the fragment block that holds lock.json. */
function compressedFlips(): Array<[string, Buffer]> {
  return [
    ['inode table: compressed bytes', flipped(u64(64) + 20)],
    ['directory table: compressed bytes', flipped(u64(72) + 20)],
    // The metadata group's fragment block, which holds lock.json.
    ['the lock\'s fragment block', flipped(u64(64) - 12)],
    ['the lock\'s fragment block, first byte', flipped(u64(64) - 40, 0x01)],
  ];
}

// Inside compressed metadata only zlib's checksum guarantees that a flip is noticed; strata
// writes zstd frames without a checksum, as mksquashfs does.
Corrupt('gzip: flips inside compressed metadata and the lock\'s block fail cleanly (Adler-32)', () => {
  use('gzip');
  for (const [what, bytes] of compressedFlips()) assertCleanFailure(inspect(bytes, what.replace(/\W+/g, '-')), what);
});

Corrupt('zstd: flipped bytes in the superblock and table headers fail cleanly', () => {
  use('zstd');
  const size = BigInt(image.length);
  const must: Array<[string, Buffer]> = [
    ['magic', flipped(0)],
    ['magic, one bit', flipped(3, 0x01)],
    ['block_size', flipped(13, 0x10)],
    ['block_size zero (and mod_time)', withU64(8, 0n)],
    ['compressor', flipped(20, 0x07)],
    ['block_log', flipped(22, 0x03)],
    ['version_major', flipped(28)],
    ['root inode block past the inode table', withU64(32, BigInt(u64(32)) + (1n << 40n))],
    ['root inode offset past its block', flipped(33, 0x7f)],
    ['bytes_used past the file', withU64(40, size + 4096n)],
    ['inode table start past the file', withU64(64, size * 2n)],
    ['directory table start past the file', withU64(72, size * 2n)],
    ['directory table start before the inode table', withU64(72, BigInt(u64(64)) - 100n)],
    ['fragment table start past the file', withU64(80, size * 2n)],
    ['fragment table start ~0', withU64(80, 0xffffffffffffffffn)],
    ['inode table start 0', withU64(64, 0n)],
    // Metadata block headers: the length word of the first inode / directory block.
    ['inode table: first block length', flipped(u64(64) + 1, 0x7f)],
    ['directory table: first block length', flipped(u64(72) + 1, 0x7f)],
    // The fragment table's pointer to its (only) metadata block.
    ['fragment table pointer', flipped(u64(80) + 2)],
  ];
  for (const [what, bytes] of must) assertCleanFailure(inspect(bytes, what.replace(/\W+/g, '-')), what);

  // Parts inspect need not read (id, xattr, export tables): a clean failure or the intact output.
  const maybe: Array<[string, Buffer]> = [
    ['id table pointer', flipped(u64(48) + 1)],
    ['xattr id table', flipped(u64(56) + 3)],
    ['export table pointer', flipped(u64(88) + 1)],
    ['mod_time', flipped(8)],
    ['inode_count', flipped(4)],
    ['flags', flipped(24, 0x02)],
    ...compressedFlips(),
  ];
  for (const [what, bytes] of maybe) assertFailsOrIntact(inspect(bytes, what.replace(/\W+/g, '-')), what);
});

Corrupt('a sweep of flipped bytes across the image: never a crash or a different lock', () => {
  use('zstd');
  const used = u64(40);
  const start = u64(64);
  // Denser over the metadata (inode table to the end), a few in the data blocks.
  const offsets = new Set<number>();
  for (let i = 0; i < 4; i++) offsets.add(96 + Math.floor(((start - 96) * i) / 4));
  for (let i = 0; i < 14; i++) offsets.add(start + Math.floor(((used - start) * i) / 14));
  let failed = 0;
  for (const off of offsets) {
    const r = inspect(flipped(off), `sweep-${off}`);
    assertFailsOrIntact(r, `byte ${off} flipped`);
    if (r.code !== 0) failed++;
  }
  assert.ok(failed > 0, 'some flips in the tables are noticed');
});

Corrupt('not an image at all: an empty file, text, a missing path, a directory', () => {
  assertCleanFailure(inspect(Buffer.alloc(0), 'empty'), 'empty file');
  assertCleanFailure(inspect(Buffer.from('hello, not squashfs\n'.repeat(10)), 'text'), 'text file');
  assertCleanFailure(inspect(Buffer.alloc(8192), 'zeros'), 'zeros');
  const r = strata(['inspect', join(tmp, 'missing.sqfs')], o);
  assertCleanFailure({ code: r.code, stdout: r.stdout.toString(), stderr: r.stderr }, 'missing file');
  // unsquash takes an image, never a directory: one line naming it, no target made.
  const d = strata(['unsquash', fixture, join(tmp, 'from-dir')], o);
  assertCleanFailure({ code: d.code, stdout: d.stdout.toString(), stderr: d.stderr }, 'a directory given as the image');
  assert.match(d.stderr, `${fixture} is a directory, not an image file`);
  assert.not.ok(existsSync(join(tmp, 'from-dir')), 'no target made');
});

Corrupt.run();

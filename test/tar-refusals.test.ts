/**
 * What store/tar-reader.ts and store/decompress.ts refuse, and how: real GNU tar sparse,
 * label and incremental archives, archives cut short at every kind of boundary, damaged
 * headers and pax records, random bytes, an empty file, damaged gzip and zstd streams,
 * xz/bzip2. Each must fail with its stable code and a one-line message naming the entry or
 * byte offset — never a silent truncation, never a raw zlib error.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { bytes, fileChunks, readAll, rejection } from './tar-fixtures.js';
import { openArchive } from '../store/sources/decompress.js';
import { readTar } from '../store/tar/reader.js';
import { plainTar } from '../store/sources/tar.js';
import { encodeHeader, END_OF_ARCHIVE } from '../store/tar/writer.js';
import { STORE_ERR as ERR } from '../store/errors.js';

/**
 * The plain archive every test starts from (GNU tar --format=ustar, sorted):
 *   0     t/     dir header
 *   512   t/a    header, body 1024..2024, padding to 2048
 *   2048  t/b    header, body 2560..5560, padding to 5632
 *   5632  end-of-archive zero blocks, then zeros up to the 10240-byte record
 */
interface Ctx {
  dir: string;
  raw: Buffer;
}

/** Rewrites a header's checksum after a deliberate edit. */
function fixChecksum(b: Buffer, off: number): void {
  b.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + 512; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', off + 148, 'latin1');
}

const read = (b: Buffer) => readAll(bytes(b, 1000));

const tr = suite<Ctx>('tar-reader: refusals');
tr.before.each((ctx) => {
  ctx.dir = tempDir('strata-tarx-');
  mkdirSync(join(ctx.dir, 't'));
  writeFileSync(join(ctx.dir, 't', 'a'), Buffer.alloc(1000, 0x61));
  writeFileSync(join(ctx.dir, 't', 'b'), Buffer.alloc(3000, 0x62));
  mustRun('tar', ['--format=ustar', '--sort=name', '-C', ctx.dir, '-cf', join(ctx.dir, 'p.tar'), 't']);
  ctx.raw = readFileSync(join(ctx.dir, 'p.tar'));
});
tr.after.each((ctx) => removeDir(ctx.dir));

tr('the base archive is what the offsets above say', async ({ raw }) => {
  const e = await read(raw);
  assert.equal(e.map((x) => [x.header.path, x.header.offset, x.data.length]), [['t/', 0, 0], ['t/a', 512, 1000], ['t/b', 2048, 3000]]);
  // A lone zero block before EOF ends the archive too (GNU tar accepts it with a warning).
  assert.is((await read(raw.subarray(0, 5632 + 512))).length, 3);
});

tr('GNU tar --sparse (old GNU type S and pax GNU.sparse.*) is refused, naming the file', async ({ dir }) => {
  const sp = join(dir, 't', 'sparse');
  writeFileSync(sp, '');
  truncateSync(sp, 4 << 20);
  mustRun('dd', ['if=/dev/urandom', `of=${sp}`, 'bs=4096', 'count=1', 'seek=256', 'conv=notrunc', 'status=none']);
  for (const format of ['gnu', 'pax']) {
    const out = join(dir, `sparse-${format}.tar`);
    mustRun('tar', ['--sparse', `--format=${format}`, '-C', dir, '-cf', out, 't/sparse']);
    const e = await rejection(readAll(fileChunks(out)), ERR.TAR_UNSUPPORTED);
    assert.match(e.message, /"t\/sparse" at byte \d+ is a sparse file \(GNU tar --sparse\); strata does not import sparse entries/);
    assert.is(e.hint, 'repack without --sparse');
  }
});

tr('GNU volume label, incremental dump directory, multi-volume and unknown types are refused', async ({ dir, raw }) => {
  const v = join(dir, 'v.tar');
  mustRun('tar', ['-V', 'backup 1', '-C', dir, '-cf', v, 't']);
  assert.match((await rejection(readAll(fileChunks(v)), ERR.TAR_UNSUPPORTED)).message, /volume label "backup 1"/);

  const d = join(dir, 'd.tar');
  mustRun('tar', ['--listed-incremental', join(dir, 'snar'), '-C', dir, '-cf', d, 't']);
  assert.match((await rejection(readAll(fileChunks(d)), ERR.TAR_UNSUPPORTED)).message, /"t\/" at byte 0 is an incremental-dump directory/);

  for (const [flag, re] of [['M', /"t\/b" at byte 2048 continues a file from another volume/], ['Q', /"t\/b" at byte 2048 has an entry type strata does not know \('Q'\)/]] as const) {
    const b = Buffer.from(raw);
    b.write(flag, 2048 + 156, 'latin1');
    fixChecksum(b, 2048);
    assert.match((await rejection(read(b), ERR.TAR_UNSUPPORTED)).message, re);
  }
});

tr('a name that is not UTF-8 is refused (real GNU tar archive)', async ({ dir }) => {
  writeFileSync(Buffer.concat([Buffer.from(join(dir, 't', 'bad-')), Buffer.from([0xff])]), '');
  const out = join(dir, 'n.tar');
  mustRun('tar', ['--format=pax', '--sort=name', '-C', dir, '-cf', out, 't']);
  const e = await rejection(readAll(fileChunks(out)), ERR.TAR_UNSUPPORTED);
  assert.match(e.message, /^entry name "t\/bad-\uFFFD" at byte \d+ is not valid UTF-8$/);
});

tr('archives cut short: mid-body, mid-header, mid-padding, no end marker, mid-pax', async ({ raw }) => {
  let e = await rejection(read(raw.subarray(0, 3000)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /archive ends inside the body of "t\/b" at byte 2048 \(2560 of 3000 bytes missing\)/);
  e = await rejection(read(raw.subarray(0, 2048 + 100)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /archive ends inside the header at byte 2048/);
  e = await rejection(read(raw.subarray(0, 5600)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /padding after "t\/b"/);
  e = await rejection(read(raw.subarray(0, 5632)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /archive ends at byte 5632 without an end-of-archive block/);

  // Unread bodies are drained, so a cut inside one still surfaces.
  const skipAll = async (b: Buffer) => {
    for await (const _ of readTar(bytes(b))) {
      // bodies left unread
    }
  };
  e = await rejection(skipAll(raw.subarray(0, 1500)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /"t\/a"/);

  const pax = Buffer.concat([encodeHeader({ path: 'p'.repeat(200), type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0 }), END_OF_ARCHIVE]);
  e = await rejection(read(pax.subarray(0, 600)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /inside the pax header at byte 0/);
});

tr('damaged headers: flipped byte, flipped checksum digit, first block with magic', async ({ raw }) => {
  for (const off of [2048 + 101, 2048 + 150]) {
    const b = Buffer.from(raw);
    b[off] ^= 0x01;
    const e = await rejection(read(b), ERR.TAR_CORRUPT);
    assert.is(e.message, 'bad header checksum at byte 2048');
  }
  const b = Buffer.from(raw);
  b[5] ^= 0x01; // inside the first name; ustar magic intact
  assert.is((await rejection(read(b), ERR.TAR_CORRUPT)).message, 'bad header checksum at byte 0');
});

tr('not a tar: random bytes, an empty file, a text file', async ({ dir }) => {
  const e = await rejection(read(randomBytes(4096)), ERR.TAR_CORRUPT);
  assert.is(e.message, 'not a tar archive');
  assert.match(e.hint!, /compressed with something other than gzip or zstd/);
  assert.is((await rejection(read(randomBytes(100)), ERR.TAR_CORRUPT)).message, 'not a tar archive');
  writeFileSync(join(dir, 'empty'), '');
  const empty = await openArchive(join(dir, 'empty'));
  assert.is(empty.compression, 'none');
  assert.match((await rejection(readAll(empty.stream), ERR.TAR_CORRUPT)).message, /not a tar archive: the input is empty/);
  writeFileSync(join(dir, 'text'), 'hello\n'.repeat(200));
  assert.is((await rejection(readAll((await openArchive(join(dir, 'text'))).stream), ERR.TAR_CORRUPT)).message, 'not a tar archive');
});

tr('malformed pax records', async () => {
  // encodeHeader writes "6 k=v\n"; each variant breaks one rule.
  const good = Buffer.concat([encodeHeader({ path: 'm', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: [['k', Buffer.from('v')]] }), END_OF_ARCHIVE]);
  assert.is((await read(good))[0]!.header.pax.get('k')!.toString(), 'v');
  for (const bad of ['7 k=v\n', '6 k=vx', '6 kvv\n', 'x k=v\n', '6 =vv\n', '2 k=v\n']) {
    const b = Buffer.from(good);
    b.write(bad, 512, 'latin1');
    const e = await rejection(read(b), ERR.TAR_CORRUPT);
    assert.match(e.message, /malformed pax record at byte 0 of the pax header at byte 0/, bad);
  }
  // A numeric record that is not a number: written as "xid", renamed "uid" in place.
  const num = Buffer.concat([encodeHeader({ path: 'm', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: [['xid', Buffer.from('12a')]] }), END_OF_ARCHIVE]);
  assert.is(num.toString('latin1', 512, 523), '11 xid=12a\n');
  num.write('u', 515, 'latin1');
  assert.match((await rejection(read(num), ERR.TAR_CORRUPT)).message, /^malformed pax uid value "12a" "m" at byte 1024$/);
});

tr('an extended header with no entry after it; hard-link size fields without data', async ({ raw }) => {
  const long = encodeHeader({ path: 'q'.repeat(150), type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0 });
  const orphan = Buffer.concat([long.subarray(0, 1024), END_OF_ARCHIVE]);
  assert.is(
    (await rejection(read(orphan), ERR.TAR_CORRUPT)).message,
    'the extended header at byte 0 is followed by the end of the archive, not by an entry',
  );
  // ustar hard link whose size field holds the target's size (Solaris tar, star): no body follows.
  const link = Buffer.from(encodeHeader({ path: 't/c', type: 'hardlink', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1000, linkname: 't/a' }));
  const b = Buffer.concat([raw.subarray(0, 2048), link, raw.subarray(2048)]);
  const e = await read(b);
  assert.equal(e.map((x) => [x.header.path, x.header.type, x.header.size, x.data.length]), [
    ['t/', 'dir', 0, 0], ['t/a', 'file', 1000, 1000], ['t/c', 'hardlink', 0, 0], ['t/b', 'file', 3000, 3000],
  ]);
});

tr.run();

const dz = suite<Ctx>('decompress: refusals');
dz.before.each((ctx) => {
  ctx.dir = tempDir('strata-tarz-');
  mkdirSync(join(ctx.dir, 't'));
  writeFileSync(join(ctx.dir, 't', 'a'), randomBytes(200_000));
  mustRun('tar', ['--format=pax', '-C', ctx.dir, '-cf', join(ctx.dir, 'p.tar'), 't']);
  ctx.raw = readFileSync(join(ctx.dir, 'p.tar'));
});
dz.after.each((ctx) => removeDir(ctx.dir));

async function openAndRead(path: string): Promise<unknown> {
  return readAll((await openArchive(path)).stream);
}

dz('a corrupt .tar.gz: damaged deflate data, damaged CRC trailer, cut short', async ({ dir }) => {
  mustRun('gzip', ['-k', join(dir, 'p.tar')]);
  const gz = readFileSync(join(dir, 'p.tar.gz'));
  const f = join(dir, 'x.tar.gz');

  const body = Buffer.from(gz);
  body.fill(0xff, 10, 40);
  writeFileSync(f, body);
  let e = await rejection(openAndRead(f), ERR.TAR_CORRUPT);
  assert.match(e.message, /^.*x\.tar\.gz: the gzip data is corrupt \(.+\)$/);
  assert.not.match(e.message, /\n|at /);

  const crc = Buffer.from(gz);
  crc[crc.length - 6] ^= 0xff; // CRC32: noticed only at the very end, after the tar's end marker
  writeFileSync(f, crc);
  e = await rejection(openAndRead(f), ERR.TAR_CORRUPT);
  assert.match(e.message, /gzip data is corrupt/);

  writeFileSync(f, gz.subarray(0, gz.length >> 1));
  e = await rejection(openAndRead(f), ERR.TAR_TRUNCATED);
  assert.match(e.message, /x\.tar\.gz: the gzip data ends early/);
});

dz('a corrupt or cut .tar.zst', async ({ dir }) => {
  mustRun('zstd', ['-q', '-k', join(dir, 'p.tar')]);
  const zst = readFileSync(join(dir, 'p.tar.zst'));
  const f = join(dir, 'x.tar.zst');
  const bad = Buffer.from(zst);
  bad.fill(0x55, 20, 200);
  writeFileSync(f, bad);
  // Streamed, the tar reader may meet the damaged bytes before zstd's checksum at the frame's
  // end does; either way it is ERR_TAR_CORRUPT. Imports spool the whole stream first, and so
  // name zstd.
  await rejection(openAndRead(f), ERR.TAR_CORRUPT);
  const e = await rejection(plainTar(f, { spoolPath: join(dir, 'spool') }), ERR.TAR_CORRUPT);
  assert.match(e.message, /x\.tar\.zst: the zstd data is corrupt \(.+\)$/);
  writeFileSync(f, zst.subarray(0, zst.length >> 1));
  assert.match((await rejection(openAndRead(f), ERR.TAR_TRUNCATED)).message, /zstd data ends early/);
});

dz('xz and bzip2 are refused with a hint to decompress first; a missing file is NOT_FOUND', async ({ dir }) => {
  for (const [tool, name] of [['xz', 'xz'], ['bzip2', 'bzip2']]) {
    mustRun(tool!, ['-k', join(dir, 'p.tar')]);
    const f = join(dir, `p.tar.${tool === 'xz' ? 'xz' : 'bz2'}`);
    const e = await rejection(openArchive(f), ERR.TAR_UNSUPPORTED);
    assert.match(e.message, new RegExp(`${name}-compressed; strata reads plain, gzip and zstd tars$`));
    assert.match(e.hint!, new RegExp(`${tool} -d`));
  }
  await rejection(openArchive(join(dir, 'absent.tar')), ERR.NOT_FOUND);
});

dz('a gzip of something that is not a tar', async ({ dir }) => {
  writeFileSync(join(dir, 'r.gz'), gzipSync(randomBytes(5000)));
  const a = await openArchive(join(dir, 'r.gz'));
  assert.is(a.compression, 'gzip');
  assert.is((await rejection(readAll(a.stream), ERR.TAR_CORRUPT)).message, 'not a tar archive');
});

dz.run();

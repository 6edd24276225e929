/**
 * store/tar-reader.ts and store/decompress.ts against archives written by the real GNU tar
 * 1.34 (pax and gnu formats) and bsdtar 3.6, plain, gzip, zstd: every header field and
 * every body byte is compared with the packed tree as lstat, getfattr -e hex and getfacl
 * see it (test/tar-fixtures.ts). Then the streaming contract: bodies drained when skipped,
 * chunk boundaries anywhere, early stop closes the source.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import {
  buildTree, bytes, fileChunks, readAll, relOf, rejection, BIN_XATTR, DEEP, LINK_TARGET, NAME100,
  NAME101, NAME255, type Fixture, type ReadEntry,
} from './tar-fixtures.js';
import { readTar, type TarEntries } from '../store/tar/reader.js';
import { encodeHeader, END_OF_ARCHIVE } from '../store/tar/writer.js';
import { openArchive, decompressStream } from '../store/sources/decompress.js';
import { STORE_ERR as ERR } from '../store/errors.js';

type Dialect = 'gnu-pax' | 'gnu' | 'bsdtar';

const FLAG: Record<string, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function aclLines(text: string | undefined, sep: string): string[] | undefined {
  return text === undefined ? undefined : text.split(sep).filter((l) => l !== '').sort();
}

/** Compares what the reader returned with the tree on disk, field by field. */
function checkAgainstTree(entries: ReadEntry[], fx: Fixture, raw: Buffer, d: Dialect): void {
  const seen = new Map<string, number>();
  let lastOffset = -1;
  for (const [i, { header: h, data }] of entries.entries()) {
    const rel = relOf(h.path);
    const node = fx.snap.get(rel);
    const at = `${d} ${JSON.stringify(h.path)}`;
    assert.ok(node, `${at}: not in the tree`);
    if (!node) return;
    assert.not.ok(seen.has(rel), `${at}: listed twice`);
    seen.set(rel, i);

    assert.is(h.path, rel === '.' ? 'tree/' : `tree/${rel}${node.type === 'dir' ? '/' : ''}`, at);
    // Offsets: increasing, block aligned, and the block there is this entry's own header.
    assert.ok(h.offset > lastOffset && h.offset % 512 === 0, `${at}: offset ${h.offset}`);
    lastOffset = h.offset;
    assert.is(String.fromCharCode(raw[h.offset + 156]!), FLAG[h.type], `${at}: typeflag at offset`);

    if (h.type === 'hardlink') {
      assert.ok(node.links, `${at}: hardlink entry for a file with one link`);
      const target = relOf(h.linkname);
      assert.ok(node.links!.includes(target) && target !== rel, `${at}: link to ${h.linkname}`);
      assert.ok((seen.get(target) ?? Infinity) < i, `${at}: link target must come earlier`);
      assert.is(h.size, 0, `${at}: size`);
      assert.is(data.length, 0, `${at}: body`);
    } else {
      assert.is(h.type, node.type, `${at}: type`);
      assert.is(h.linkname, node.type === 'symlink' ? node.target : '', `${at}: linkname`);
      assert.is(h.size, node.size, `${at}: size`);
      if (node.type === 'file') assert.ok(data.equals(fx.contents.get(rel)!), `${at}: body bytes`);
      else assert.is(data.length, 0, `${at}: body`);
    }
    assert.is(h.mode, node.type === 'symlink' ? 0o777 : node.mode, `${at}: mode ${h.mode.toString(8)}`);
    assert.is(h.uid, node.uid, `${at}: uid`);
    assert.is(h.gid, node.gid, `${at}: gid`);
    assert.is(h.mtime, node.mtime, `${at}: mtime`);
    assert.is(h.devmajor, node.rdev?.major ?? 0, `${at}: devmajor`);
    assert.is(h.devminor, node.rdev?.minor ?? 0, `${at}: devminor`);

    // xattrs, byte for byte against getfattr -e hex.
    const all = fx.allXattrs.get(rel)!;
    const want = new Map<string, string>();
    if (d === 'gnu-pax') for (const [k, v] of all) want.set(k, v);
    if (d === 'bsdtar') for (const [k, v] of all) if (!k.startsWith('system.posix_acl_')) want.set(k, v);
    if (h.type === 'hardlink') want.clear();
    const got = new Map([...h.xattrs].map(([k, v]) => [k, v.toString('hex')]));
    assert.equal(got, want, `${at}: xattrs`);

    // ACL text as each packer writes it: GNU newline separated, bsdtar comma separated.
    const sep = d === 'bsdtar' ? ',' : '\n';
    const wantAcl = d === 'gnu' || h.type === 'hardlink' ? {} : node.acl;
    assert.equal(aclLines(h.aclAccess, sep), aclLines(wantAcl.access, ','), `${at}: acl access`);
    assert.equal(aclLines(h.aclDefault, sep), aclLines(wantAcl.default, ','), `${at}: acl default`);
    if (d === 'gnu-pax' && h.aclAccess !== undefined) assert.ok(h.aclAccess.endsWith('\n') && h.aclAccess.includes('\n'));
    if (d === 'gnu') assert.is(h.pax.size, 0, `${at}: a gnu-format archive has no pax records`);
  }
  assert.equal([...seen.keys()].sort(), [...fx.snap.keys()].sort(), `${d}: every path exactly once`);
}

function pack(fx: Fixture, d: Dialect, out: string): Buffer {
  const args =
    d === 'gnu-pax' ? ['tar', '--xattrs', '--xattrs-include=*', '--acls', '--format=pax', '-C', fx.dir, '-cf', out, 'tree']
    : d === 'gnu' ? ['tar', '--format=gnu', '-C', fx.dir, '-cf', out, 'tree']
    : ['bsdtar', '--xattrs', '--acls', '-C', fx.dir, '-cf', out, 'tree'];
  mustRun(args[0]!, args.slice(1));
  return readFileSync(out);
}

const dialects = suite<{ dir: string; fx: Fixture }>('tar-reader: GNU tar and bsdtar archives');
dialects.before.each((ctx) => {
  ctx.dir = tempDir('strata-tar-');
  ctx.fx = buildTree(ctx.dir);
});
dialects.after.each((ctx) => removeDir(ctx.dir));

dialects('the fixture has what the tests claim', ({ fx }) => {
  assert.is(Buffer.byteLength(`tree/${NAME100}`), 100);
  assert.is(Buffer.byteLength(`tree/${NAME101}`), 101);
  assert.is(Buffer.byteLength(`tree/${DEEP}`), 300);
  assert.is(Buffer.byteLength(LINK_TARGET), 200);
  assert.is(fx.snap.get(NAME255)!.type, 'file');
  assert.is(fx.allXattrs.get('xattr')!.get('user.bin'), BIN_XATTR.toString('hex'));
  assert.ok(fx.allXattrs.get('xattr')!.get('security.capability')!.startsWith('01000002'));
  assert.ok(fx.snap.get('acl-dir')!.acl.default);
  assert.is(fx.snap.get('bigid')!.uid, 3000000);
  assert.is(fx.snap.get('old')!.mtime, -1000);
  assert.equal(fx.snap.get('blk')!.rdev, { major: 7, minor: 300 });
});

dialects('GNU tar --format=pax --xattrs --acls: every field, raw SCHILY.xattr bytes', async ({ fx, dir }) => {
  const file = join(dir, 'gnu-pax.tar');
  const raw = pack(fx, 'gnu-pax', file);
  const entries = await readAll(fileChunks(file));
  checkAgainstTree(entries, fx, raw, 'gnu-pax');
  const x = entries.find((e) => e.header.path === 'tree/xattr')!.header;
  assert.ok(x.pax.get('SCHILY.xattr.user.bin')!.equals(BIN_XATTR), 'pax map holds raw value bytes');
  assert.ok(x.xattrs.get('system.posix_acl_access')!.length > 0);
  const big = entries.find((e) => e.header.path === 'tree/bigid')!.header;
  assert.is(big.pax.get('uid')!.toString(), '3000000');
});

dialects('GNU tar --format=gnu: L/K long names, base-256 ids and negative mtime', async ({ fx, dir }) => {
  const file = join(dir, 'gnu.tar');
  const raw = pack(fx, 'gnu', file);
  const entries = await readAll(fileChunks(file));
  checkAgainstTree(entries, fx, raw, 'gnu');
  // The archive really uses the GNU encodings the test is about.
  const big = entries.find((e) => e.header.path === 'tree/bigid')!.header;
  assert.is(raw[big.offset + 108]! & 0x80, 0x80, 'uid in base-256');
  const old = entries.find((e) => e.header.path === 'tree/old')!.header;
  assert.is(raw[old.offset + 136], 0xff, 'negative mtime in base-256');
  const deep = entries.find((e) => e.header.path === `tree/${DEEP}`)!.header;
  assert.is(String.fromCharCode(raw[deep.offset - 1024 + 156]!), 'L', "long name in a preceding 'L' entry");
  const link = entries.find((e) => e.header.path === 'tree/longlink')!.header;
  assert.is(String.fromCharCode(raw[link.offset - 1024 + 156]!), 'K', "long link in a preceding 'K' entry");
});

dialects('bsdtar --xattrs --acls: LIBARCHIVE.xattr base64, comma-separated ACLs', async ({ fx, dir }) => {
  const file = join(dir, 'bsd.tar');
  const raw = pack(fx, 'bsdtar', file);
  const entries = await readAll(fileChunks(file));
  checkAgainstTree(entries, fx, raw, 'bsdtar');
  const x = entries.find((e) => e.header.path === 'tree/xattr')!.header;
  assert.ok(x.pax.has('LIBARCHIVE.xattr.user.bin'), 'bsdtar wrote LIBARCHIVE.xattr records');
});

dialects('LIBARCHIVE.xattr alone: base64 value and %-escaped name decoded', async ({ dir }) => {
  // bsdtar writes SCHILY.xattr beside LIBARCHIVE.xattr; strip the SCHILY ones (keeping the
  // pax header's size) so only the base64 form is left to decode.
  const t = join(dir, 't');
  mustRun('mkdir', [t]);
  writeFileSync(join(t, 'f'), 'x');
  mustRun('setfattr', ['-n', 'user.a=b é', '-v', '0x' + BIN_XATTR.toString('hex'), join(t, 'f')]);
  const file = join(dir, 'b.tar');
  mustRun('bsdtar', ['--xattrs', '-C', dir, '-cf', file, 't/f']);
  const raw = readFileSync(file);
  const text = raw.toString('latin1');
  assert.ok(text.includes('LIBARCHIVE.xattr.user.a%3Db%20%C3%A9='), 'libarchive escaped the name');
  const m = /\d+ SCHILY\.xattr\.[^=]*=/.exec(text)!;
  const len = parseInt(m[0]);
  raw.fill(0x23, m.index, m.index + len - 1); // "####…" then the record's '\n'
  raw.write(`${len} x`, m.index, 'latin1');
  raw.write('=', m.index + String(len).length + 2, 'latin1');
  const [e] = await readAll(bytes(raw));
  assert.is(e!.header.pax.has('SCHILY.xattr.user.a=b é'), false);
  assert.equal([...e!.header.xattrs.keys()], ['user.a=b é']);
  assert.ok(e!.header.xattrs.get('user.a=b é')!.equals(BIN_XATTR));
});

dialects('gzip (gzip, concatenated members) and zstd (zstd, bsdtar --zstd) give the same entries', async ({ fx, dir }) => {
  const file = join(dir, 'a.tar');
  const raw = pack(fx, 'gnu-pax', file);
  const plain = await readAll(fileChunks(file));

  mustRun('sh', ['-c', `gzip -c "$1" > "$1.gz" && zstd -q -c "$1" > "$1.zst"`, 'sh', file]);
  for (const [f, kind] of [[`${file}.gz`, 'gzip'], [`${file}.zst`, 'zstd']] as const) {
    const a = await openArchive(f);
    assert.is(a.compression, kind);
    assert.equal(await readAll(a.stream), plain, `${kind} gives the same entries`);
  }
  // Two gzip members cut mid-header.
  writeFileSync(`${file}.2.gz`, Buffer.concat([gzipSync(raw.subarray(0, 3000)), gzipSync(raw.subarray(3000))]));
  assert.equal(await readAll((await openArchive(`${file}.2.gz`)).stream), plain, 'concatenated gzip members');

  const zst = join(dir, 'b.tar.zst');
  mustRun('bsdtar', ['--xattrs', '--acls', '--zstd', '-C', fx.dir, '-cf', zst, 'tree']);
  const z = await openArchive(zst);
  assert.is(z.compression, 'zstd');
  const bsdRaw = mustRun('zstd', ['-q', '-d', '-c', zst]).stdout;
  checkAgainstTree(await readAll(z.stream), fx, bsdRaw, 'bsdtar');

  const none = await decompressStream(bytes(raw, 100));
  assert.is(none.compression, 'none');
  assert.equal(await readAll(none.stream), plain);
});

dialects('any chunking gives the same result (blocks straddling chunks)', async ({ fx, dir }) => {
  const file = join(dir, 'a.tar');
  pack(fx, 'gnu-pax', file);
  const whole = await readAll(fileChunks(file));
  for (const size of [1, 7, 511, 513, 4096]) {
    assert.equal(await readAll(fileChunks(file, size)), whole, `chunks of ${size}`);
  }
});

dialects.run();

const streaming = suite<{ dir: string; raw: Buffer }>('tar-reader: streaming contract');
streaming.before.each((ctx) => {
  ctx.dir = tempDir('strata-tar-');
  const t = join(ctx.dir, 't');
  mustRun('mkdir', [t]);
  for (let i = 0; i < 5; i++) writeFileSync(join(t, `f${i}`), Buffer.alloc(3000 + i * 700, 0x41 + i));
  mustRun('tar', ['--format=pax', '--sort=name', '-C', ctx.dir, '-cf', join(ctx.dir, 't.tar'), 't']);
  ctx.raw = readFileSync(join(ctx.dir, 't.tar'));
});
streaming.after.each((ctx) => removeDir(ctx.dir));

streaming('unread and half-read bodies are drained', async ({ raw }) => {
  const names: string[] = [];
  let i = 0;
  for await (const e of readTar(bytes(raw, 1000))) {
    names.push(e.header.path);
    if (i++ % 2 === 0) continue; // not read at all
    for await (const c of e.body) {
      assert.ok(c.length > 0);
      break; // read one chunk only
    }
  }
  assert.equal(names, ['t/', 't/f0', 't/f1', 't/f2', 't/f3', 't/f4']);
});

streaming('bodies are exact and a stale body cannot be read', async ({ raw }) => {
  for await (const e of readTar(bytes(raw, 999))) {
    if (e.header.type !== 'file') continue;
    const n = Number(e.header.path.slice(3));
    let len = 0;
    for await (const c of e.body) {
      assert.ok(c.every((b) => b === 0x41 + n));
      len += c.length;
    }
    assert.is(len, 3000 + n * 700);
  }
  for (const stop of [false, true]) {
    let stale: AsyncIterable<Buffer> | undefined;
    for await (const e of readTar(bytes(raw))) {
      if (e.header.path === 't/f0') stale = e.body;
      if (e.header.path === 't/f1' && stop) break;
    }
    try {
      for await (const _ of stale!) assert.unreachable('read a stale body');
      assert.unreachable('no error for a stale body');
    } catch (e) {
      assert.match(String(e), /after moving to the next entry/);
    }
  }
  // A body read in part, then left: the rest is not handed out after the reader moved on
  // (those input bytes are the next entry's).
  let partial: AsyncIterator<Buffer> | undefined;
  for await (const e of readTar(bytes(raw, 999))) {
    if (e.header.path !== 't/f0') continue;
    partial = e.body[Symbol.asyncIterator]();
    const first = await partial.next();
    assert.ok(!first.done && first.value.length < e.header.size);
  }
  const stale = await partial!.next().then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.match(String(stale), /after moving to the next entry/);
});

streaming('stopping early closes the source; finishing reads it to the end', async ({ raw }) => {
  let closed = false;
  let pulled = 0;
  async function* src(): AsyncGenerator<Buffer> {
    try {
      for (let i = 0; i < raw.length; i += 512) {
        pulled += 512;
        yield raw.subarray(i, i + 512);
      }
    } finally {
      closed = true;
    }
  }
  for await (const e of readTar(src())) if (e.header.path === 't/f0') break;
  assert.ok(closed, 'source closed');
  assert.ok(pulled < raw.length);

  closed = false;
  pulled = 0;
  const padded = Buffer.concat([raw, Buffer.alloc(8192)]);
  async function* src2(): AsyncGenerator<Buffer> {
    try {
      for (let i = 0; i < padded.length; i += 512) {
        pulled += 512;
        yield padded.subarray(i, i + 512);
      }
    } finally {
      closed = true;
    }
  }
  assert.is((await readAll(src2())).length, 6);
  assert.ok(closed);
  assert.is(pulled, padded.length, 'trailing blocks after the end marker are consumed');
});

/**
 * Every entry and body byte, asked for as the canonical tar asks (store/layer/builder.ts):
 * nextNow() first, next() when it has nothing. `now`: entries that came without a promise.
 */
async function readNowFirst(entries: TarEntries): Promise<{ list: string[]; now: number }> {
  const list: string[] = [];
  let now = 0;
  for (;;) {
    let e = entries.nextNow();
    if (e) now++;
    if (e === undefined) {
      const r = await entries.next();
      e = r.done === true ? null : r.value;
    }
    if (e === null) break;
    let sum = 0;
    let len = 0;
    for (;;) {
      let c = e.body.nextNow();
      if (c === undefined) {
        const r = await e.body.next();
        c = r.done === true ? null : r.value;
      }
      if (c === null) break;
      len += c.length;
      for (const b of c) sum = (sum * 31 + b) >>> 0;
    }
    list.push(`${e.header.path} ${e.header.offset} ${len} ${sum}`);
  }
  return { list, now };
}

streaming('nextNow and next() in turn give what for await gives, wherever the chunks end', async ({ raw }) => {
  const expected: string[] = [];
  for await (const e of readTar(bytes(raw))) {
    let sum = 0;
    let len = 0;
    for await (const c of e.body) {
      len += c.length;
      for (const b of c) sum = (sum * 31 + b) >>> 0;
    }
    expected.push(`${e.header.path} ${e.header.offset} ${len} ${sum}`);
  }
  assert.is(expected.length, 6);
  for (const size of [1, 100, 511, 512, 513, 999, 4096, raw.length]) {
    const { list, now } = await readNowFirst(readTar(bytes(raw, size)));
    assert.equal(list, expected, `chunks of ${size} bytes`);
    // One chunk: only the first entry waits (for the first fill).
    if (size === raw.length) assert.is(now, 5, 'entries after the first came without a promise');
  }
});

streaming('a damaged header met by nextNow is thrown by next(), and the source is closed', async ({ raw }) => {
  const f2 = (await readAll(bytes(raw))).find((e) => e.header.path === 't/f2')!.header;
  const bad = Buffer.from(raw);
  bad[f2.offset + 10] ^= 0x20; // the name changes, the stored checksum does not
  let closed = false;
  async function* src(): AsyncGenerator<Buffer> {
    try {
      yield bad;
    } finally {
      closed = true;
    }
  }
  const entries = readTar(src());
  const first = await entries.next();
  assert.is(first.value!.header.path, 't/');
  assert.is(entries.nextNow()!.header.path, 't/f0');
  assert.is(entries.nextNow()!.header.path, 't/f1');
  assert.is(entries.nextNow(), undefined, 'the damaged header is left to next()');
  const e = await rejection(entries.next(), ERR.TAR_CORRUPT);
  assert.match(e.message, new RegExp(`bad header checksum at byte ${f2.offset}`));
  assert.ok(closed, 'source closed');
  assert.is(entries.nextNow(), null);
  assert.equal(await entries.next(), { value: undefined, done: true });
});

streaming('an empty archive (only zero blocks) has no entries', async ({ dir }) => {
  mustRun('tar', ['-cf', join(dir, 'e.tar'), '-T', '/dev/null']);
  assert.equal(await readAll(fileChunks(join(dir, 'e.tar'))), []);
});

streaming('an error names the entry and is one line', async ({ raw }) => {
  const f0 = (await readAll(bytes(raw))).find((e) => e.header.path === 't/f0')!.header;
  const cut = raw.subarray(0, f0.offset + 512 + 1500);
  const e = await rejection(readAll(bytes(cut)), ERR.TAR_TRUNCATED);
  assert.match(e.message, /"t\/f0"/);
});

streaming.run();

/** Recomputes a header's checksum, summing bytes as signed chars when `signed`. */
function checksum(b: Buffer, off: number, signed: boolean): void {
  b.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + 512; i++) sum += signed && b[i]! >= 0x80 ? b[i]! - 256 : b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', off + 148, 'latin1');
}

const variants = suite('tar-reader: header variants');

variants('text fields: a ustar prefix joins the name, non-ASCII names are decoded strictly, owner names are not read', async () => {
  const h = encodeHeader({ path: 'n', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1, size: 0, linkname: 'tärget' });
  h.write('dïr/sub\0', 345, 'utf8'); // the prefix field
  h.write('ünï\0', 265, 'utf8'); // uname
  Buffer.from([0x67, 0xff, 0]).copy(h, 297); // gname: not UTF-8
  checksum(h, 0, false);
  const [e] = await readAll(bytes(Buffer.concat([h, END_OF_ARCHIVE])));
  assert.is(e!.header.path, 'dïr/sub/n');
  assert.is(e!.header.linkname, 'tärget');
  assert.not.ok('uname' in e!.header || 'gname' in e!.header, 'owner names, which may be any bytes, are not read');
  // A link target that is not UTF-8 is refused, naming the entry.
  Buffer.from([0x74, 0xc3, 0x28, 0]).copy(h, 157);
  checksum(h, 0, false);
  const err = await readAll(bytes(Buffer.concat([h, END_OF_ARCHIVE]))).then(
    () => undefined,
    (x: unknown) => x,
  );
  assert.match(String(err), /link target of "dïr\/sub\/n" at byte 0 is not valid UTF-8/);
});

variants('signed checksums (old writers) and unsigned ones are both accepted', async () => {
  const h = Buffer.concat([encodeHeader({ path: 'ünï', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, size: 0 }), END_OF_ARCHIVE]);
  for (const signed of [false, true]) {
    const b = Buffer.from(h);
    checksum(b, 0, signed);
    assert.is((await readAll(bytes(b)))[0]!.header.path, 'ünï');
  }
  const b = Buffer.from(h);
  checksum(b, 0, true);
  assert.not.equal(b.subarray(148, 156), h.subarray(148, 156), 'the signed sum differs for this name');
});

variants("pre-POSIX (v7) headers: no magic, type NUL, directory by trailing '/'", async () => {
  const mk = (path: string) => {
    const b = Buffer.from(encodeHeader({ path, type: 'file', mode: 0o755, uid: 5, gid: 6, mtime: 7, size: 0 }));
    b.fill(0, 156, 157);
    b.fill(0, 257, 512);
    checksum(b, 0, false);
    return b;
  };
  const e = await readAll(bytes(Buffer.concat([mk('v7/'), mk('v7/f'), END_OF_ARCHIVE])));
  assert.equal(e.map((x) => [x.header.path, x.header.type, x.header.mode, x.header.uid, x.header.gid, x.header.mtime]), [
    ['v7/', 'dir', 0o755, 5, 6, 7],
    ['v7/f', 'file', 0o755, 5, 6, 7],
  ]);
});

variants("global 'g' records apply to later entries, 'x' ones override them for one entry", async () => {
  const g = Buffer.from(encodeHeader({ path: 'g', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: [['uname', Buffer.from('alice')], ['SCHILY.xattr.user.g', Buffer.from('G')]] }));
  g[156] = 0x67; // 'g'
  checksum(g, 0, false);
  const pg = g.subarray(0, 1024); // the pax block and its records, now global
  const a = encodeHeader({ path: 'a', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0 });
  const b = encodeHeader({ path: 'b', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: [['SCHILY.xattr.user.g', Buffer.from('local')]] });
  const e = await readAll(bytes(Buffer.concat([pg, a, b, a, END_OF_ARCHIVE])));
  assert.equal(e.map((x) => [x.header.path, x.header.xattrs.get('user.g')?.toString()]), [
    ['a', 'G'], ['b', 'local'], ['a', 'G'],
  ]);
});

variants.run();

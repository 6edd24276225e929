/**
 * store/tar-writer.ts: archives it encodes are listed by GNU tar (`tar -tvv --numeric-owner`),
 * extracted by GNU tar and bsdtar with xattrs and ACLs, and the extracted trees compared with
 * what was encoded (lstat, getfattr, getfacl via test/helpers/tree.ts). readTar(encode(x))
 * gives x back. The byte layout is checked for determinism.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, removeDir, tempDir } from './helpers/tmp.js';
import { diffTrees, snapshotTree, type TreeNode } from './helpers/tree.js';
import { bytes, readAll, BIN_XATTR, UNICODE } from './tar-fixtures.js';
import { encodeHeader, encodeHeaderInto, encodePadding, END_OF_ARCHIVE, type TarWriteHeader } from '../store/tar/writer.js';
import { readTar } from '../store/tar/reader.js';

const T = 1600000000;
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_raw+ep
const GNU_ACL = 'user::rw-\nuser:1234:r--\ngroup::r--\nmask::r--\nother::---\n';
const DEFAULT_ACL = 'user::rwx\ngroup::r-x\ngroup:5678:r-x\nmask::r-x\nother::---\n';

interface Item {
  h: TarWriteHeader;
  data?: Buffer;
}

function items(): Item[] {
  const f = (path: string, data: string, extra: Partial<TarWriteHeader> = {}): Item => {
    const b = Buffer.from(data);
    return { h: { path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: b.length, ...extra }, data: b };
  };
  const n = (h: Partial<TarWriteHeader> & { path: string; type: TarWriteHeader['type'] }): Item => ({
    h: { mode: 0o755, uid: 0, gid: 0, mtime: T, size: 0, ...h },
  });
  return [
    n({ path: 'w/', type: 'dir' }),
    f('w/plain', 'plain\n'),
    f(`w/${'x'.repeat(98)}`, 'exactly 100\n'),
    f(`w/${'y'.repeat(99)}`, 'exactly 101\n'),
    f(`w/${'z'.repeat(255)}`, 'long name\n'),
    n({ path: `w/${'d'.repeat(150)}/`, type: 'dir', mode: 0o700 }),
    f(`w/${'d'.repeat(150)}/${'e'.repeat(146)}`, 'path of 300 bytes\n'),
    n({ path: 'w/sym', type: 'symlink', mode: 0o777, linkname: `../${'t'.repeat(197)}` }),
    n({ path: 'w/hl', type: 'hardlink', mode: 0o644, linkname: 'w/plain' }),
    n({ path: 'w/fifo', type: 'fifo', mode: 0o600 }),
    n({ path: 'w/chr', type: 'char', mode: 0o620, devmajor: 4, devminor: 67 }),
    n({ path: 'w/blk', type: 'block', mode: 0o660, devmajor: 7, devminor: 300 }),
    f('w/bigid', 'big ids\n', { uid: 3000000, gid: 3000001 }),
    f('w/old', 'before the epoch\n', { mtime: -1000 }),
    f('w/future', 'after 2242\n', { mtime: 2 ** 33 }),
    f('w/setuid', '#!/bin/sh\n', { mode: 0o4755 }),
    f(`w/${UNICODE}`, 'utf-8\n'),
    f('w/xattr', 'with attributes\n', {
      mode: 0o640,
      pax: [
        ['SCHILY.xattr.user.bin', BIN_XATTR],
        ['SCHILY.xattr.security.capability', CAP],
        ['SCHILY.xattr.trusted.blob', Buffer.from([0, 0xff, 0, 0xff])],
        ['SCHILY.xattr.user.empty', Buffer.alloc(0)],
        ['SCHILY.acl.access', Buffer.from(GNU_ACL)],
      ],
    }),
    n({ path: 'w/acl-dir/', type: 'dir', mode: 0o750, pax: [['SCHILY.acl.default', Buffer.from(DEFAULT_ACL)]] }),
  ];
}

function encodeAll(list: Item[]): Buffer {
  const parts: Buffer[] = [];
  for (const { h, data } of list) {
    parts.push(encodeHeader(h));
    if (data) parts.push(data, encodePadding(data.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

const rel = (p: string) => p.replace(/^w\/?/, '').replace(/\/$/, '') || '.';

/** The tree the items describe, in the shape of test/helpers/tree.ts snapshots. */
function expectedNodes(list: Item[]): Map<string, Partial<TreeNode>> {
  const m = new Map<string, Partial<TreeNode>>();
  for (const { h, data } of list) {
    const type = h.type === 'hardlink' ? 'file' : h.type;
    const node: Partial<TreeNode> = {
      type, mode: type === 'symlink' ? 0 : h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime,
      size: data?.length ?? 0, xattrs: {}, acl: {},
    };
    if (h.type === 'symlink') node.target = h.linkname!;
    if (h.type === 'char' || h.type === 'block') node.rdev = { major: h.devmajor!, minor: h.devminor! };
    for (const [k, v] of h.pax ?? []) {
      if (k.startsWith('SCHILY.xattr.')) node.xattrs![k.slice(13)] = v.toString('hex');
      if (k === 'SCHILY.acl.access') node.acl!.access = v.toString().trim().replace(/\n/g, ',');
      if (k === 'SCHILY.acl.default') node.acl!.default = v.toString().trim().replace(/\n/g, ',');
    }
    m.set(rel(h.path), node);
  }
  // The hard link shares the file it points at.
  const plain = m.get('plain')!;
  m.set('hl', { ...plain });
  return m;
}

function checkExtracted(dir: string, list: Item[], who: string): void {
  const snap = snapshotTree(dir);
  const want = expectedNodes(list);
  assert.equal([...snap.keys()].sort(), [...want.keys()].sort(), `${who}: paths`);
  for (const [p, w] of want) {
    const got = snap.get(p)!;
    for (const k of Object.keys(w) as Array<keyof TreeNode>) {
      assert.equal(got[k], w[k], `${who}: ${p} ${k}`);
    }
  }
  assert.equal(snap.get('plain')!.links, ['hl', 'plain'], `${who}: hard link`);
}

const writer = suite<{ dir: string }>('tar-writer');
writer.before.each((ctx) => {
  ctx.dir = tempDir('strata-tarw-');
});
writer.after.each((ctx) => removeDir(ctx.dir));

writer('readTar(encode(x)) gives x back', async () => {
  const list = items();
  const entries = await readAll(bytes(encodeAll(list), 4096));
  assert.is(entries.length, list.length);
  for (const [i, { h, data }] of list.entries()) {
    const got = entries[i]!.header;
    assert.is(got.path, h.path);
    assert.is(got.type, h.type);
    assert.is(got.mode, h.mode, `${h.path} mode`);
    assert.is(got.uid, h.uid);
    assert.is(got.gid, h.gid);
    assert.is(got.mtime, h.mtime, `${h.path} mtime`);
    assert.is(got.size, h.size);
    assert.is(got.linkname, h.linkname ?? '');
    assert.is(got.devmajor, h.devmajor ?? 0);
    assert.is(got.devminor, h.devminor ?? 0);
    for (const [k, v] of h.pax ?? []) assert.ok(got.pax.get(k)?.equals(v), `${h.path} pax ${k}`);
    const xattrs = new Map((h.pax ?? []).filter(([k]) => k.startsWith('SCHILY.xattr.')).map(([k, v]) => [k.slice(13), v]));
    assert.equal(got.xattrs, xattrs, `${h.path} xattrs`);
    assert.is(got.aclAccess, h.pax?.find(([k]) => k === 'SCHILY.acl.access')?.[1].toString());
    assert.is(got.aclDefault, h.pax?.find(([k]) => k === 'SCHILY.acl.default')?.[1].toString());
    assert.ok(entries[i]!.data.equals(data ?? Buffer.alloc(0)), `${h.path} body`);
  }
});

writer('GNU tar lists every entry exactly (tar -tvv --numeric-owner)', ({ dir }) => {
  const list = items();
  const file = join(dir, 'w.tar');
  writeFileSync(file, encodeAll(list));
  const r = mustRun('tar', ['-tvv', '--numeric-owner', '--full-time', '--quoting-style=literal', '-f', file], { env: { TZ: 'UTC' } });
  assert.is(r.stderr, '', 'no warnings');
  const lines = r.stdout.toString('utf8').split('\n').filter((l) => l !== '');
  assert.is(lines.length, list.length);
  const perm = (h: TarWriteHeader) => {
    const c = { file: '-', hardlink: 'h', symlink: 'l', char: 'c', block: 'b', dir: 'd', fifo: 'p' }[h.type];
    let s = c;
    for (let shift = 6; shift >= 0; shift -= 3) {
      const b = (h.mode >> shift) & 7;
      const special = shift === 6 ? h.mode & 0o4000 : shift === 3 ? h.mode & 0o2000 : h.mode & 0o1000;
      const x = shift === 0 ? ['t', 'T'] : ['s', 'S'];
      s += (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (special ? (b & 1 ? x[0] : x[1]) : b & 1 ? 'x' : '-');
    }
    return s;
  };
  for (const [i, { h }] of list.entries()) {
    const m = /^(\S+) (\d+)\/(\d+) +(\S+) (\S+) (\S+) (.*)$/.exec(lines[i]!);
    assert.ok(m, `unparsed: ${lines[i]}`);
    const [, p, uid, gid, size, day, time, rest] = m!;
    assert.is(p, perm(h), `${h.path} perms`);
    assert.is(Number(uid), h.uid);
    assert.is(Number(gid), h.gid);
    assert.is(size, h.type === 'char' || h.type === 'block' ? `${h.devmajor},${h.devminor}` : String(h.size));
    const iso = new Date(h.mtime * 1000).toISOString();
    assert.is(`${day} ${time}`, `${iso.slice(0, 10)} ${iso.slice(11, 19)}`, `${h.path} mtime`);
    const tail = h.type === 'symlink' ? ` -> ${h.linkname}` : h.type === 'hardlink' ? ` link to ${h.linkname}` : '';
    assert.is(rest, h.path + tail);
  }
});

writer('GNU tar and bsdtar extract the same tree: owners, devices, xattrs, ACLs', ({ dir }) => {
  const list = items();
  const file = join(dir, 'w.tar');
  writeFileSync(file, encodeAll(list));
  const gnu = join(dir, 'gnu');
  const bsd = join(dir, 'bsd');
  mkdirSync(gnu);
  mkdirSync(bsd);
  const g = mustRun('tar', ['--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-xpf', file, '-C', gnu]);
  // GNU tar remarks on the two deliberately odd timestamps; nothing else may be said.
  const said = g.stderr.split('\n').filter((l) => l !== '' && !/implausibly old time stamp|in the future$/.test(l));
  assert.equal(said, [], 'GNU tar: no warnings');
  checkExtracted(join(gnu, 'w'), list, 'GNU tar');
  const b = mustRun('bsdtar', ['--xattrs', '--acls', '--numeric-owner', '-xpf', file, '-C', bsd]);
  assert.is(b.stderr, '', 'bsdtar: no warnings');
  checkExtracted(join(bsd, 'w'), list, 'bsdtar');
  assert.equal(diffTrees(join(gnu, 'w'), join(bsd, 'w')), []);
});

writer('byte layout: ustar blocks, deterministic pax header, sorted records', () => {
  const plain = encodeHeader({ path: 'a', type: 'file', mode: 0o644, uid: 1, gid: 2, mtime: T, size: 5 });
  assert.is(plain.length, 512);
  assert.is(plain.toString('latin1', 257, 265), 'ustar\x0000');
  assert.is(plain.toString('latin1', 100, 108), '0000644\0');
  assert.is(plain.toString('latin1', 124, 136), '00000000005\0');
  assert.is(plain.toString('latin1', 329, 345), '0000000\x000000000\0', 'devmajor/devminor octal zero');
  assert.ok(plain.subarray(265, 329).every((b) => b === 0), 'empty uname/gname');
  assert.ok(plain.subarray(345, 512).every((b) => b === 0), 'empty prefix');
  assert.match(plain.toString('latin1', 148, 156), /^[0-7]{6}\0 $/);

  const h: TarWriteHeader = {
    path: `dir/${'q'.repeat(120)}`, type: 'file', mode: 0o600, uid: 3000000, gid: 7, mtime: -5, size: 1,
    pax: [['SCHILY.xattr.user.b', Buffer.from('2')], ['SCHILY.xattr.user.a', Buffer.from('1\n')]],
  };
  const a = encodeHeader(h);
  assert.ok(a.equals(encodeHeader({ ...h, pax: [...h.pax!] })), 'deterministic');
  assert.is(a.length, 3 * 512);
  assert.is(a.toString('latin1', 0, 10), 'PaxHeader\0');
  assert.is(a.toString('latin1', 100, 108), '0000644\0');
  assert.is(a.toString('latin1', 108, 124), '0000000\x000000000\0');
  assert.is(a.toString('latin1', 136, 148), '00000000000\0');
  assert.is(a[156], 0x78);
  const size = parseInt(a.toString('latin1', 124, 135), 8);
  const records = a.toString('latin1', 512, 512 + size);
  assert.is(
    records,
    '26 SCHILY.xattr.user.a=1\n\n' + '25 SCHILY.xattr.user.b=2\n' + '12 mtime=-5\n' +
      `134 path=dir/${'q'.repeat(120)}\n` + '15 uid=3000000\n',
    'records sorted by key bytes, lengths counting themselves',
  );
  const main = a.subarray(1024);
  assert.is(main.toString('latin1', 0, 100).replace(/\0+$/, ''), `dir/${'q'.repeat(96)}`, 'name field: first 100 bytes');
  assert.is(main.toString('latin1', 108, 116), '0000000\0', 'uid field when pax carries it');
});

writer('sizes beyond 8 GiB go to pax; bad values are refused', async () => {
  const size = 2 ** 33 + 5;
  const h = encodeHeader({ path: 'huge', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size });
  const it = readTar(bytes(h));
  const first = await it.next();
  assert.is(first.value!.header.size, size);
  assert.is(first.value!.header.pax.get('size')!.toString(), String(size));
  await it.return();

  const base = { path: 'x', type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 };
  assert.throws(() => encodeHeader({ ...base, pax: [['path', Buffer.from('y')]] }), /reserved/);
  assert.throws(() => encodeHeader({ ...base, pax: [['a=b', Buffer.from('y')]] }), /not valid/);
  assert.throws(() => encodeHeader({ ...base, pax: [['k', Buffer.from('1')], ['k', Buffer.from('2')]] }), /repeated/);
  assert.throws(() => encodeHeader({ ...base, mtime: 1.5 }), /not an integer/);
  assert.throws(() => encodeHeader({ ...base, uid: -1 }), /negative/);
  assert.throws(() => encodeHeader({ ...base, path: 'a\0b' }), /NUL/);
  assert.throws(() => encodeHeader({ ...base, type: 'char', devmajor: 2 ** 22 }), /does not fit/);
  assert.is(encodePadding(0).length, 0);
  assert.is(encodePadding(1).length, 511);
  assert.is(encodePadding(512).length, 0);
  assert.is(END_OF_ARCHIVE.length, 1024);
});

writer('encodeHeaderInto writes encodeHeader\'s block in place, and nothing for what needs more', () => {
  const list = items().map((i) => i.h);
  // Names at the field's edge in UTF-8: 100 bytes fit, 101 do not; NUL and bad values never do.
  list.push(
    { path: 'é'.repeat(50), type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 },
    { path: `x${'é'.repeat(50)}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 },
    { path: `${'a'.repeat(97)}😀`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 },
    { path: `${'a'.repeat(96)}😀`, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: T, size: 0, linkname: `${'b'.repeat(96)}😀` },
    { path: 'w/max', type: 'file', mode: 0o107777, uid: 0o7777777, gid: 0o7777777, mtime: 0o77777777777, size: 0o77777777777 },
    { path: 'w/nul\0', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 },
    { path: '', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: 0 },
    { path: 'w/frac', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T + 0.5, size: 0 },
    { path: 'w/neg', type: 'file', mode: 0o644, uid: -1, gid: 0, mtime: T, size: 0 },
  );
  let inPlace = 0;
  for (const h of list) {
    const out = Buffer.alloc(3 * 512, 0xaa);
    const wrote = encodeHeaderInto(out, 512, h);
    let whole: Buffer | undefined;
    try {
      whole = encodeHeader(h);
    } catch {
      // refused: encodeHeaderInto must leave it to encodeHeader
    }
    const one = whole !== undefined && whole.length === 512;
    assert.is(wrote, one, `${JSON.stringify(h.path)}: written in place exactly when it is one valid block`);
    if (wrote) {
      inPlace++;
      assert.ok(out.subarray(512, 1024).equals(whole!), `${JSON.stringify(h.path)}: the same bytes`);
    } else assert.ok(out.subarray(512, 1024).equals(Buffer.alloc(512, 0xaa)), `${JSON.stringify(h.path)}: nothing written`);
    assert.ok(out.subarray(0, 512).equals(Buffer.alloc(512, 0xaa)) && out.subarray(1024).equals(Buffer.alloc(512, 0xaa)), 'nothing outside its block');
  }
  assert.ok(inPlace >= 10, `most headers are one block (${inPlace})`);
});

writer.run();

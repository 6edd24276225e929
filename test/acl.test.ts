/**
 * native/acl.ts: the codec alone, then against the kernel and libacl (setfacl/getfacl on
 * real files), then against the text real GNU tar 1.34 and bsdtar 3.6 write into PAX
 * records and what both accept back on extraction.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ACL_XATTR_ACCESS,
  ACL_XATTR_DEFAULT,
  aclFromText,
  aclFromXattr,
  aclModeBits,
  aclToGnuText,
  aclToText,
  aclToXattr,
  aclXattrFromText,
  groupClassGrant,
  narrowedNode,
  isMinimalAcl,
  type Acl,
  type IdResolver,
} from '../native/acl.js';
import { hostResolver } from '../native/ids.js';
import { lgetxattr, llistxattr, lsetxattr } from '../native/xattr.js';
import { isStrataError,  } from '../store/errors.js';
import { NATIVE_ERR } from '../native/errors.js';

const run = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/** getfacl's entries for one ACL of `path`, numeric ids, no header/effective remarks, joined by ','. */
function getfacl(path: string, which: '--access' | '--default'): string {
  return run('getfacl', '--absolute-names', '--omit-header', '--numeric', '--no-effective', which, path)
    .split('\n')
    .filter((l) => l !== '')
    .join(',');
}

function expectInvalid(fn: () => unknown, message?: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isStrataError(e, NATIVE_ERR.ACL_INVALID), String(e));
    if (message) assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable('expected ERR_ACL_INVALID');
}

const uidOf = (name: string): number => Number(run('id', '-u', name).trim());
const gidOf = (name: string): number => Number(run('getent', 'group', name).split(':')[2]);

const permString = (p: number): string => (p & 4 ? 'r' : '-') + (p & 2 ? 'w' : '-') + (p & 1 ? 'x' : '-');

const nobody: IdResolver = { user: () => undefined, group: () => undefined };

// A full ACL used throughout, with its canonical text and kernel bytes written out by hand
// from include/uapi/linux/posix_acl_xattr.h.
const SAMPLE: Acl = [
  { tag: 'other', perm: 0 },
  { tag: 'mask', perm: 5 },
  { tag: 'group_obj', perm: 5 },
  { tag: 'user', id: 1001, perm: 4 },
  { tag: 'user_obj', perm: 6 },
];
const SAMPLE_TEXT = 'user::rw-,user:1001:r--,group::r-x,mask::r-x,other::---';
const SAMPLE_HEX = [
  '02000000',
  '0100' + '0600' + 'ffffffff',
  '0200' + '0400' + 'e9030000',
  '0400' + '0500' + 'ffffffff',
  '1000' + '0500' + 'ffffffff',
  '2000' + '0000' + 'ffffffff',
].join('');

// ---------------------------------------------------------------------------------------
const codec = suite('acl codec');

codec('binary form: version 2, le16 tag, le16 perm, le32 id, canonical order', () => {
  assert.is(aclToXattr(SAMPLE).toString('hex'), SAMPLE_HEX);
  const back = aclFromXattr(Buffer.from(SAMPLE_HEX, 'hex'));
  assert.equal(back, [
    { tag: 'user_obj', perm: 6 },
    { tag: 'user', id: 1001, perm: 4 },
    { tag: 'group_obj', perm: 5 },
    { tag: 'mask', perm: 5 },
    { tag: 'other', perm: 0 },
  ]);
  assert.is(aclToText(back), SAMPLE_TEXT);
  // Entries out of order (bsdtar's order) and ids by descending value come back sorted.
  const shuffled = Buffer.concat([
    Buffer.from('02000000', 'hex'),
    Buffer.from('0100060000000000', 'hex'), // an *_obj id that is not 0xffffffff is ignored
    Buffer.from('04000400ffffffff', 'hex'),
    Buffer.from('20000400ffffffff', 'hex'),
    Buffer.from('08000200d2070000', 'hex'),
    Buffer.from('0800050004000000', 'hex'),
    Buffer.from('10000700ffffffff', 'hex'),
  ]);
  assert.is(aclToText(aclFromXattr(shuffled)), 'user::rw-,group::r--,group:4:r-x,group:2002:-w-,mask::rwx,other::r--');
  // A subarray with a non-zero byteOffset decodes the same.
  const padded = Buffer.concat([Buffer.from([9, 9, 9]), Buffer.from(SAMPLE_HEX, 'hex')]);
  assert.is(aclToText(aclFromXattr(padded.subarray(3))), SAMPLE_TEXT);
  assert.equal(aclFromXattr(Buffer.from('02000000', 'hex')), []);
  assert.is(aclToXattr([]).toString('hex'), '02000000');
});

codec('binary form: bad input is ERR_ACL_INVALID', () => {
  const entry = (tag: number, perm: number, id = 0xffffffff): string => {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(tag, 0);
    b.writeUInt16LE(perm, 2);
    b.writeUInt32LE(id, 4);
    return b.toString('hex');
  };
  const minimal = entry(1, 6) + entry(4, 4) + entry(0x20, 4);
  assert.is(aclToText(aclFromXattr(Buffer.from('02000000' + minimal, 'hex'))), 'user::rw-,group::r--,other::r--');
  expectInvalid(() => aclFromXattr(new Uint8Array(0)), /length 0/);
  expectInvalid(() => aclFromXattr(Buffer.from('0200', 'hex')), /length/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + minimal + '00', 'hex')), /length/);
  expectInvalid(() => aclFromXattr(Buffer.from('01000000' + minimal, 'hex')), /version 1/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + minimal + entry(0x40, 4), 'hex')), /tag 0x40/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + entry(1, 8) + entry(4, 4) + entry(0x20, 4), 'hex')), /permission/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + entry(1, 6) + entry(4, 4), 'hex')), /no other::/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + minimal + entry(2, 4, 7), 'hex')), /no mask::/);
  expectInvalid(() => aclFromXattr(Buffer.from('02000000' + minimal + entry(2, 4), 'hex')), /undefined id/);
  expectInvalid(
    () => aclFromXattr(Buffer.from('02000000' + minimal + entry(0x10, 7) + entry(2, 4, 7) + entry(2, 1, 7), 'hex')),
    /duplicate ACL entry user:7:/,
  );
  expectInvalid(() => aclToXattr([{ tag: 'user_obj', perm: 9 }, { tag: 'group_obj', perm: 0 }, { tag: 'other', perm: 0 }]));
  expectInvalid(() => aclToXattr([...SAMPLE, { tag: 'user', perm: 1 }]), /invalid id/);
  expectInvalid(() => aclToXattr([...SAMPLE, { tag: 'user', id: 0xffffffff, perm: 1 }]), /invalid id/);
});

codec('every text form tar archives and setfacl use gives the same canonical ACL', () => {
  const users: Record<string, number> = { alice: 1001 };
  const groups: Record<string, number> = { staff: 50 };
  const resolve: IdResolver = { user: (n) => users[n], group: (n) => groups[n] };
  const want = 'user::rw-,user:1001:r--,group::r-x,group:50:rw-,mask::rwx,other::---';
  const forms = [
    // GNU tar 1.34 (acl_to_text): long form, names, newline separated, trailing newline
    'user::rw-\nuser:alice:r--\ngroup::r-x\ngroup:staff:rw-\nmask::rwx\nother::---\n',
    // the same with numeric ids, as our exporter writes it
    'user::rw-\nuser:1001:r--\ngroup::r-x\ngroup:50:rw-\nmask::rwx\nother::---\n',
    // getfacl output: header comments, effective remarks, blank lines
    '# file: x\n# owner: root\nuser::rw-\nuser:alice:r--\t#effective:r--\ngroup::r-x\n\ngroup:staff:rw-\t\t#effective:rw-\nmask::rwx\nother::---\n',
    // bsdtar/libarchive: comma separated, its own order, numeric id as 4th field
    'user::rw-,group::r-x,other::---,user:alice:r--:1001,group:staff:rw-:50,mask::rwx',
    // setfacl short forms, octal digits, mask/other without the empty qualifier, spaces
    'u::rw, u:alice:4 ,g::rx,g:staff:wr , m:7, o:-',
    ' u :: rw- , o::0 ,\tm::rwx ,g::5,g:50:6,u:1001:r\r\n',
  ];
  for (const text of forms) assert.is(aclToText(aclFromText(text, resolve)), want, JSON.stringify(text));
  assert.equal(aclFromText('', resolve), []);
  assert.equal(aclFromText(' \n# nothing\n', resolve), []);
});

codec('names: 4th numeric field wins, escapes decoded, unknown names refused by entry', () => {
  const seen: string[] = [];
  const resolve: IdResolver = {
    user: (n) => (seen.push(`u:${n}`), n === 'alice' ? 1001 : n === 'my user' ? 1500 : undefined),
    group: (n) => (seen.push(`g:${n}`), n === 'staff' ? 50 : undefined),
  };
  const acl = aclFromText('user::rwx,user:alice:r--:2002,group::r--,group:staff:r--:60,mask::r--,other::---', resolve);
  assert.is(aclToText(acl), 'user::rwx,user:2002:r--,group::r--,group:60:r--,mask::r--,other::---');
  assert.equal(seen, [], 'names with a numeric 4th field are not looked up');
  assert.is(
    aclToText(aclFromText('user::rwx\nuser:my\\040user:r--\ngroup::r--\nmask::r--\nother::---\n', resolve)),
    'user::rwx,user:1500:r--,group::r--,mask::r--,other::---',
  );
  expectInvalid(() => aclFromText('user::rw-\nuser:bob:r--\ngroup::r--\nmask::r--\nother::---\n', resolve), /"user:bob:r--".*unknown user "bob"/);
  expectInvalid(() => aclFromText('u::rw,g:wheel:r,g::r,m::r,o::-', resolve), /"g:wheel:r".*unknown group "wheel"/);
  expectInvalid(() => aclFromText('user::rw-,user:alice:r--,group::r--,mask::r--,other::---'), /unknown user "alice"/);
  try {
    aclFromText('u::rw,u:bob:r,g::r,m::r,o::-', resolve);
  } catch (e) {
    assert.ok((e as { hint?: string }).hint, 'an unknown name comes with a hint');
  }
});

codec('incomplete or malformed text is ERR_ACL_INVALID', () => {
  expectInvalid(() => aclFromText('user::rw-,group::r--'), /no other::/);
  expectInvalid(() => aclFromText('group::r--,other::---'), /no user::/);
  expectInvalid(() => aclFromText('user::rw-,other::---'), /no group::/);
  expectInvalid(() => aclFromText('u::rw,u:5:r,g::r,o::-'), /no mask::/);
  expectInvalid(() => aclFromText('u::rw,u::r,g::r,o::-'), /duplicate ACL entry user::/);
  expectInvalid(() => aclFromText('u::rw,u:5:r,u:5:w,g::r,m::rw,o::-'), /duplicate ACL entry user:5:/);
  expectInvalid(() => aclFromText('u::rwz,g::r,o::-'), /"u::rwz": invalid permissions/);
  expectInvalid(() => aclFromText('u::rrw,g::r,o::-'), /invalid permissions/);
  expectInvalid(() => aclFromText('u::,g::r,o::-'), /invalid permissions/);
  expectInvalid(() => aclFromText('u::8,g::r,o::-'), /invalid permissions/);
  expectInvalid(() => aclFromText('x::rw,g::r,o::-'), /unknown tag/);
  expectInvalid(() => aclFromText('default:user::rwx,g::r,o::-'), /default ACL/);
  expectInvalid(() => aclFromText('u::rw,g::r,o:5:r'), /no qualifier/);
  expectInvalid(() => aclFromText('u::rw,g::r,o::r,u:5'), /tag:qualifier:perms/);
  expectInvalid(() => aclFromText('u::rw,g::r,o::r,m::r,u:5:r:x'), /numeric id "x"/);
  expectInvalid(() => aclFromText('u::rw,g::r,o::r,m::r,u:4294967295:r'), /numeric id/);
});

codec('a text parsed again gives the caller its own ACL and xattr value (each text is parsed once)', () => {
  const first = aclFromText(SAMPLE_TEXT);
  const parsed = structuredClone(first);
  assert.is(aclToText(parsed), SAMPLE_TEXT);
  first[0]!.perm = 0;
  first.pop();
  assert.equal(aclFromText(SAMPLE_TEXT), parsed, 'a changed result leaves the next one as parsed');
  const value = aclXattrFromText(SAMPLE_TEXT);
  assert.equal(value, aclToXattr(SAMPLE));
  value.fill(0);
  assert.equal(aclXattrFromText(SAMPLE_TEXT), aclToXattr(SAMPLE), 'a changed value leaves the next one as made');
  assert.equal(aclFromText('u::rw,g::r,o::-'), [{ tag: 'user_obj', perm: 6 }, { tag: 'group_obj', perm: 4 }, { tag: 'other', perm: 0 }], 'another text, its own ACL');
  expectInvalid(() => aclXattrFromText('u::rw,g::r'), /no other::/);
  expectInvalid(() => aclXattrFromText('u::rw,g::r'), /no other::/);
});

codec('canonical and GNU text output', () => {
  assert.is(aclToText(SAMPLE), SAMPLE_TEXT);
  assert.is(aclToGnuText(SAMPLE), 'user::rw-\nuser:1001:r--\ngroup::r-x\nmask::r-x\nother::---\n');
  assert.is(aclToText([]), '');
  assert.is(aclToGnuText([]), '');
  assert.is(aclToText(aclFromText(aclToGnuText(SAMPLE))), SAMPLE_TEXT);
});

codec('minimal ACLs, mode bits and the owning group grant', () => {
  const minimal = aclFromText('u::rwx,g::r-x,o::r--');
  assert.ok(isMinimalAcl(minimal));
  assert.not.ok(isMinimalAcl(aclFromText('u::rwx,g::r-x,m::r-x,o::r--')), 'a mask makes it extended');
  assert.not.ok(isMinimalAcl(SAMPLE));
  assert.not.ok(isMinimalAcl([]));
  assert.equal(aclModeBits(minimal), { user: 7, group: 5, other: 4 });
  assert.is(groupClassGrant(minimal), 5);
  const widened = aclFromText('u::rw-,u:1001:rwx,g::r--,m::rwx,o::---');
  assert.equal(aclModeBits(widened), { user: 6, group: 7, other: 0 }, 'group bits show the mask');
  assert.is(groupClassGrant(widened), 4, 'the owning group only has r--');
  assert.is(groupClassGrant(aclFromText('u::rw-,g::rwx,m::r--,o::---')), 4, 'the mask limits group::');
  expectInvalid(() => aclModeBits([{ tag: 'user_obj', perm: 7 }]), /no group::|no other::/);
});

codec('hostResolver looks names up through NSS', () => {
  const r = hostResolver();
  assert.is(r.user('daemon'), uidOf('daemon'));
  assert.is(r.group('adm'), gidOf('adm'));
  assert.is(r.user('strata-no-such-user'), undefined);
  assert.is(r.group('strata-no-such-group'), undefined);
});

// ---------------------------------------------------------------------------------------
interface Ctx {
  dir: string;
}

codec('narrowedNode gives every class the least any of its members had', () => {
  const n = (mode: number, text: string | undefined, o?: { prefer?: number; switchGroup?: boolean; ownGroupKept?: boolean }) => {
    const r = narrowedNode(mode, text === undefined ? undefined : aclFromText(text), o);
    return `${r.mode.toString(8)}${r.gid === undefined ? '' : ` gid ${r.gid}`}`;
  };
  // The licence group becomes the owning group; the old owning group falls to other (---).
  assert.is(n(0o750, 'u::rwx,g::r-x,g:1234:r-x,m::r-x,o::---', { prefer: 1234 }), '750 gid 1234');
  // One named group: chosen without a preference; setgid never travels to it; group:: --- caps other.
  assert.is(n(0o2750, 'u::rwx,g::---,g:500:r-x,m::r-x,o::r--'), '750 gid 500');
  // The owning group kept where it is (the ACL refused after the chown): the named group is one of the others.
  assert.is(n(0o2750, 'u::rwx,g::---,g:500:r-x,m::r-x,o::r--', { switchGroup: false }), '2704');
  assert.is(n(0o750, 'u::rwx,g::r-x,g:1234:r-x,m::r-x,o::---', { prefer: 1234, switchGroup: false }), '750');
  // A named user with less than group:: or other:: caps both (she may be in either class).
  assert.is(n(0o770, 'u::rwx,g::rwx,u:1000:r--,m::rwx,o::r-x'), '744');
  // Two named groups and no preference: the owning group stays; each named group caps other.
  assert.is(n(0o640, 'u::rw-,g::r--,g:7:rw-,g:8:r--,m::rw-,o::---'), '640');
  assert.is(n(0o664, 'u::rw-,g::rw-,g:7:---,m::rw-,o::r--', { prefer: 9 }), '604 gid 7'); // a denied group stays denied
  // The mask applies to named entries and group::, never to user:: or other::.
  assert.is(n(0o774, 'u::rwx,g::rwx,g:7:rwx,m::r--,o::r--', { prefer: 7 }), '744 gid 7');
  // Without an ACL nothing changes, unless the owning group cannot be set: then group ≤ other.
  assert.is(n(0o4755, undefined), '4755');
  assert.is(n(0o770, undefined, { ownGroupKept: false }), '700');
  // ... and setgid goes with it (setuid is the owner's: the tree writer's rule).
  assert.is(n(0o6775, undefined, { ownGroupKept: false }), '4755');
  assert.is(n(0o750, 'u::rwx,g::r-x,g:7:r-x,m::r-x,o::---', { ownGroupKept: false }), '700');
});

const files = suite<Ctx>('acl against setfacl/getfacl');
files.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-acl-'));
});
files.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

const SPECS = [
  'u::rw-,u:1:rw-,u:1001:r--,g::r--,g:4:r-x,g:2002:-w-,m::rwx,o::r--',
  'u::rwx,u:65534:--x,g::rwx,m::r--,o::---',
  'u::r--,g::---,g:100:rwx,m::rw-,o::r-x',
];

files('xattrs written by setfacl decode to what getfacl prints', ({ dir }) => {
  for (const [i, spec] of SPECS.entries()) {
    const f = join(dir, `f${i}`);
    writeFileSync(f, '');
    run('setfacl', '--set', spec, f);
    const raw = lgetxattr(f, ACL_XATTR_ACCESS);
    assert.ok(raw, 'setfacl stored an access ACL xattr');
    assert.is(aclToText(aclFromXattr(raw!)), getfacl(f, '--access'));
    assert.equal(aclToXattr(aclFromXattr(raw!)), raw, 'our encoding is byte-identical to libacl/the kernel');
  }
  const d = join(dir, 'd');
  mkdirSync(d);
  run('setfacl', '-d', '--set', 'u::rwx,u:2:rwx,g::r-x,g:100:r--,m::rwx,o::r-x', d);
  assert.is(aclToText(aclFromXattr(lgetxattr(d, ACL_XATTR_DEFAULT)!)), getfacl(d, '--default'));
});

files('ACLs we encode are what getfacl reads, and the kernel sets the mode bits we predict', ({ dir }) => {
  for (const [i, spec] of SPECS.entries()) {
    const f = join(dir, `f${i}`);
    writeFileSync(f, '');
    const acl = aclFromText(spec);
    lsetxattr(f, ACL_XATTR_ACCESS, aclToXattr(acl));
    assert.is(getfacl(f, '--access'), aclToText(acl));
    const mode = lstatSync(f).mode;
    const bits = aclModeBits(acl);
    assert.is(mode & 0o777, (bits.user << 6) | (bits.group << 3) | bits.other, spec);
    // getfacl's "#effective:" remark on group:: is what the owning group really gets.
    const effective = run('getfacl', '--absolute-names', '--omit-header', '--numeric', f).match(/^group::(...)(?:\t+#effective:(...))?/m)!;
    assert.is(permString(groupClassGrant(acl)), effective[2] ?? effective[1]);
  }
  const d = join(dir, 'd');
  mkdirSync(d);
  const def = aclFromText('u::rwx,u:1001:r-x,g::r-x,m::r-x,o::---');
  lsetxattr(d, ACL_XATTR_DEFAULT, aclToXattr(def));
  assert.is(getfacl(d, '--default'), aclToText(def));
  // A child inherits it: the kernel accepted our default ACL as a real one.
  writeFileSync(join(d, 'child'), '');
  assert.match(getfacl(join(d, 'child'), '--access'), /user:1001:r-x/);
});

files('a minimal ACL is folded into the mode: no xattr is kept', ({ dir }) => {
  const f = join(dir, 'f');
  writeFileSync(f, '');
  const minimal = aclFromText('u::rwx,g::r--,o::--x');
  lsetxattr(f, ACL_XATTR_ACCESS, aclToXattr(minimal));
  assert.is(lstatSync(f).mode & 0o777, 0o741);
  assert.not.ok(llistxattr(f).includes(ACL_XATTR_ACCESS));
  assert.is(getfacl(f, '--access'), aclToText(minimal));
});

// ---------------------------------------------------------------------------------------
/** PAX extended records of each archive member, keyed by member path. Values stay bytes. */
function paxRecords(tar: Buffer): Map<string, Map<string, Buffer>> {
  const out = new Map<string, Map<string, Buffer>>();
  let pending = new Map<string, Buffer>();
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, n: number): string => h.subarray(a, a + n).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 12).trim() || '0', 8);
    const type = str(156, 1);
    const body = tar.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      for (let p = 0; p < body.length; ) {
        const sp = body.indexOf(0x20, p);
        const len = Number(body.subarray(p, sp).toString('latin1'));
        const rec = body.subarray(sp + 1, p + len - 1);
        const eq = rec.indexOf(0x3d);
        pending.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
        p += len;
      }
      continue;
    }
    if (type === 'g') continue;
    const prefix = str(345, 155);
    const name = pending.get('path')?.toString('utf8') ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    out.set(name.replace(/\/$/, ''), pending);
    pending = new Map();
  }
  return out;
}

/** A minimal ustar header (name, mode, size, type, magic, checksum): enough for tar -x. */
function ustarHeader(name: string, mode: number, size: number, type: string): Buffer {
  const h = Buffer.alloc(512);
  const oct = (v: number, a: number, n: number): void => void h.write(v.toString(8).padStart(n - 1, '0') + '\0', a, 'latin1');
  h.write(name, 0, 100, 'utf8');
  oct(mode, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(size, 124, 12);
  oct(1700000000, 136, 12);
  h.write(type, 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

function pad(b: Buffer): Buffer {
  return Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
}

/** A PAX archive of directory `d` and file `d/f`, each with its own PAX records. */
function paxArchive(members: { name: string; type: '0' | '5'; mode: number; pax: Record<string, string> }[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const recs = Object.entries(m.pax).map(([k, v]) => {
      const payload = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(payload) + 1;
      while (String(len).length + Buffer.byteLength(payload) !== len) len = String(len).length + Buffer.byteLength(payload);
      return Buffer.from(`${len}${payload}`);
    });
    const body = Buffer.concat(recs);
    parts.push(ustarHeader(`PaxHeaders/${m.name.replace(/\/$/, '')}`, 0o644, body.length, 'x'), pad(body));
    parts.push(ustarHeader(m.name, m.mode, 0, m.type));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const tars = suite<Ctx>('acl text from and to real tar archives');
tars.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'strata-acltar-'));
});
tars.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

/** Source tree: d (default ACL with names), d/f (access ACL with names, a bare id and a narrowing mask). */
function makeTree(dir: string): { access: string; def: string } {
  const d = join(dir, 'src', 'd');
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'f'), 'x');
  run('setfacl', '--set', 'u::rw-,u:daemon:rwx,u:1001:r--,g::r--,g:adm:r-x,g:2002:-w-,m::r-x,o::r--', join(d, 'f'));
  run('setfacl', '-d', '--set', 'u::rwx,u:bin:rwx,g::r-x,g:users:r--,m::rwx,o::r-x', d);
  return { access: getfacl(join(d, 'f'), '--access'), def: getfacl(d, '--default') };
}

tars('GNU tar 1.34: SCHILY.acl.* long form with names, agrees with its binary xattr record', ({ dir }) => {
  const want = makeTree(dir);
  const tar = join(dir, 'gnu.tar');
  run('tar', '-C', join(dir, 'src'), '--xattrs', '--xattrs-include=*', '--acls', '--format=pax', '-cf', tar, 'd');
  const recs = paxRecords(readFileSync(tar));
  const f = recs.get('d/f')!;
  const access = f.get('SCHILY.acl.access')!.toString('utf8');
  assert.match(access, /^user::rw-\nuser:daemon:rwx\n.*\n$/s, 'GNU tar writes names, one entry per line');
  assert.ok(access.includes('user:1001:r--\n'), 'an id without a name stays numeric');
  const r = hostResolver();
  assert.is(aclToText(aclFromText(access, r)), want.access);
  assert.is(aclToText(aclFromXattr(f.get(`SCHILY.xattr.${ACL_XATTR_ACCESS}`)!)), want.access);
  const dd = recs.get('d')!;
  assert.is(aclToText(aclFromText(dd.get('SCHILY.acl.default')!.toString('utf8'), r)), want.def);
  assert.is(aclToText(aclFromXattr(dd.get(`SCHILY.xattr.${ACL_XATTR_DEFAULT}`)!)), want.def);
  expectInvalid(() => aclFromText(access, nobody), /"user:daemon:rwx": unknown user "daemon"/);
});

tars('bsdtar 3.6: comma form in its own order with numeric 4th fields', ({ dir }) => {
  const want = makeTree(dir);
  const tar = join(dir, 'bsd.tar');
  run('bsdtar', '-C', join(dir, 'src'), '--acls', '-cf', tar, 'd');
  const recs = paxRecords(readFileSync(tar));
  const access = recs.get('d/f')!.get('SCHILY.acl.access')!.toString('utf8');
  assert.match(access, /^user::rw-,group::r--,other::r--,user:daemon:rwx:1,/, 'bsdtar order and 4th field');
  // The numeric fields make names irrelevant: a resolver that knows nobody still works.
  assert.is(aclToText(aclFromText(access, nobody)), want.access);
  assert.is(aclToText(aclFromText(recs.get('d')!.get('SCHILY.acl.default')!.toString('utf8'), nobody)), want.def);
});

tars('GNU tar and bsdtar apply the text we export', ({ dir }) => {
  const access = aclFromText('u::rw-,u:1001:rwx,u:65534:r--,g::r--,g:2002:-w-,m::r-x,o::---');
  const def = aclFromText('u::rwx,u:1001:r-x,g::r-x,m::r-x,o::---');
  for (const [tool, form] of [
    ['tar', 'gnu'],
    ['tar', 'canonical'],
    ['bsdtar', 'gnu'],
    ['bsdtar', 'canonical'],
  ] as const) {
    const enc = form === 'gnu' ? aclToGnuText : aclToText;
    const archive = paxArchive([
      { name: 'd/', type: '5', mode: 0o755, pax: { 'SCHILY.acl.default': enc(def) } },
      { name: 'd/f', type: '0', mode: 0o640, pax: { 'SCHILY.acl.access': enc(access) } },
    ]);
    const out = join(dir, `${tool}-${form}`);
    mkdirSync(out);
    writeFileSync(join(dir, 'in.tar'), archive);
    const r = spawnSync(tool, ['--acls', '-xpf', join(dir, 'in.tar'), '-C', out], { encoding: 'utf8' });
    assert.is(r.status, 0, `${tool}: ${r.stderr}`);
    assert.is(getfacl(join(out, 'd', 'f'), '--access'), aclToText(access), `${tool} extracting ${form} text`);
    assert.is(getfacl(join(out, 'd'), '--default'), aclToText(def), `${tool} extracting ${form} text`);
  }
});

codec.run();
files.run();
tars.run();

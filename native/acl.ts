/**
 * POSIX ACL codec: the kernel's binary xattr form, the canonical text strata stores in
 * sidecar manifests, and every text form tar archives carry. Pure functions, no I/O
 * (host name lookups live in native/ids.ts and come in through `IdResolver`).
 *
 * Binary form (system.posix_acl_access / system.posix_acl_default, Linux
 * include/uapi/linux/posix_acl_xattr.h and posix_acl.h), all little-endian:
 *
 *   offset 0   le32 a_version = 2
 *   offset 4   entries, 8 bytes each:
 *                le16 e_tag   0x01 USER_OBJ  0x02 USER  0x04 GROUP_OBJ  0x08 GROUP
 *                             0x10 MASK      0x20 OTHER
 *                le16 e_perm  r=4 w=2 x=1 (nothing else allowed)
 *                le32 e_id    uid/gid for USER/GROUP; 0xffffffff (ACL_UNDEFINED_ID) otherwise
 *
 * The kernel wants entries in tag order, USER and GROUP entries are written by ascending
 * id (as libacl does); this is the canonical order used everywhere here:
 *   user_obj, user (by id), group_obj, group (by id), mask, other.
 *
 * Canonical text (aclToText), what LayerEntry.acl holds:
 *   user::rw-,user:1001:r--,group::r-x,mask::r-x,other::---
 * numeric ids only, canonical order, three-letter perms, comma separated, no spaces.
 *
 * An ACL with no entries (`[]`) stands for "no ACL": a 4-byte version-only xattr and the
 * empty string map to it, as the kernel treats a zero-entry xattr as removal. Any
 * non-empty ACL must be complete: user_obj, group_obj and other, plus mask when a named
 * user or group entry exists; at most one entry per (tag, id).
 */
import { NATIVE_ERR, StrataError } from './errors.js';

export type AclTag = 'user_obj' | 'user' | 'group_obj' | 'group' | 'mask' | 'other';

export interface AclEntry {
  tag: AclTag;
  /** uid for 'user', gid for 'group' (0 .. 0xfffffffe); absent for every other tag. */
  id?: number;
  /** 0..7: r=4 w=2 x=1. */
  perm: number;
}

export type Acl = AclEntry[];

/** A node's POSIX ACLs in canonical text (numeric ids, comma separated); absent when it has none. */
export interface EntryAcl {
  access?: string;
  default?: string;
}

/** Maps names found in archive text to numeric ids; undefined when the name is unknown. */
export interface IdResolver {
  user(name: string): number | undefined;
  group(name: string): number | undefined;
}

export const ACL_XATTR_ACCESS = 'system.posix_acl_access';
export const ACL_XATTR_DEFAULT = 'system.posix_acl_default';

const XATTR_VERSION = 2;
const UNDEFINED_ID = 0xffffffff;
const MAX_ID = 0xfffffffe;

const TAG_CODE: Record<AclTag, number> = {
  user_obj: 0x01,
  user: 0x02,
  group_obj: 0x04,
  group: 0x08,
  mask: 0x10,
  other: 0x20,
};
const CODE_TAG = new Map<number, AclTag>(Object.entries(TAG_CODE).map(([t, c]) => [c, t as AclTag]));

const HINT = 'the ACL must have user::, group:: and other:: entries, and mask:: when named entries exist';

function invalid(message: string, hint = HINT): StrataError {
  return new StrataError(NATIVE_ERR.ACL_INVALID, message, { hint });
}

function isNamed(tag: AclTag): boolean {
  return tag === 'user' || tag === 'group';
}

function entryLabel(e: AclEntry): string {
  const base = e.tag.endsWith('_obj') ? e.tag.slice(0, -4) : e.tag;
  return `${base}:${isNamed(e.tag) ? String(e.id) : ''}`;
}

/**
 * Validates and returns a fresh ACL in canonical order with normalized entries (no `id`
 * on unnamed tags). Throws ACL_INVALID on a bad tag, perm or id, a duplicate, or a
 * missing required entry. `[]` is returned as is.
 */
export function canonicalAcl(acl: Acl): Acl {
  if (acl.length === 0) return [];
  const out: Acl = [];
  const seen = new Set<string>();
  for (const e of acl) {
    if (!Object.hasOwn(TAG_CODE, e.tag)) throw invalid(`invalid ACL tag ${JSON.stringify(e.tag)}`);
    if (!Number.isInteger(e.perm) || e.perm < 0 || e.perm > 7) {
      throw invalid(`invalid ACL permission ${String(e.perm)} in ${entryLabel(e)}`, 'permissions are 0..7 (r=4 w=2 x=1)');
    }
    let norm: AclEntry;
    if (isNamed(e.tag)) {
      if (e.id === undefined || !Number.isInteger(e.id) || e.id < 0 || e.id > MAX_ID) {
        throw invalid(`invalid id ${String(e.id)} in ACL ${e.tag} entry`, 'ids are integers 0..4294967294');
      }
      norm = { tag: e.tag, id: e.id, perm: e.perm };
    } else {
      norm = { tag: e.tag, perm: e.perm };
    }
    const key = entryLabel(norm);
    if (seen.has(key)) throw invalid(`duplicate ACL entry ${key}:`, 'each user, group and class may appear once');
    seen.add(key);
    out.push(norm);
  }
  out.sort((a, b) => TAG_CODE[a.tag] - TAG_CODE[b.tag] || (a.id ?? 0) - (b.id ?? 0));
  for (const tag of ['user_obj', 'group_obj', 'other'] as const) {
    if (!seen.has(entryLabel({ tag, perm: 0 }))) throw invalid(`ACL has no ${entryLabel({ tag, perm: 0 })}: entry`);
  }
  if (out.some((e) => isNamed(e.tag)) && !seen.has('mask:')) throw invalid('ACL has named entries but no mask:: entry');
  return out;
}

/**
 * Decodes a system.posix_acl_access/default value (layout above) into canonical order.
 * Ids of unnamed entries are ignored, as the kernel ignores them. Throws ACL_INVALID on a
 * wrong length or version, an unknown tag, perm bits beyond rwx, or an incomplete ACL.
 */
export function aclFromXattr(buf: Uint8Array): Acl {
  const hint = 'the value is not a Linux POSIX ACL xattr (version 2, 8-byte entries)';
  if (buf.length < 4 || (buf.length - 4) % 8 !== 0) throw invalid(`ACL xattr has invalid length ${buf.length}`, hint);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const version = view.getUint32(0, true);
  if (version !== XATTR_VERSION) throw invalid(`ACL xattr has unsupported version ${version}`, hint);
  const acl: Acl = [];
  for (let off = 4; off < buf.length; off += 8) {
    const code = view.getUint16(off, true);
    const perm = view.getUint16(off + 2, true);
    const id = view.getUint32(off + 4, true);
    const tag = CODE_TAG.get(code);
    if (tag === undefined) throw invalid(`ACL xattr has unknown tag 0x${code.toString(16)}`, hint);
    if (perm > 7) throw invalid(`ACL xattr has invalid permission bits 0x${perm.toString(16)}`, hint);
    if (isNamed(tag) && id === UNDEFINED_ID) throw invalid(`ACL xattr ${tag} entry has the undefined id`, hint);
    acl.push(isNamed(tag) ? { tag, id, perm } : { tag, perm });
  }
  return canonicalAcl(acl);
}

/** Encodes an ACL as a system.posix_acl_* value, canonical order. `[]` → the 4-byte header. */
export function aclToXattr(acl: Acl): Buffer {
  const entries = canonicalAcl(acl);
  const buf = Buffer.alloc(4 + 8 * entries.length);
  buf.writeUInt32LE(XATTR_VERSION, 0);
  entries.forEach((e, i) => {
    const off = 4 + 8 * i;
    buf.writeUInt16LE(TAG_CODE[e.tag], off);
    buf.writeUInt16LE(e.perm, off + 2);
    buf.writeUInt32LE(isNamed(e.tag) ? e.id! : UNDEFINED_ID, off + 4);
  });
  return buf;
}

/**
 * Parses ACL text in any form tar archives and admins use, into canonical order:
 *
 * - GNU tar SCHILY.acl.access/default (libacl acl_to_text): one entry per line, long tags,
 *   names or numeric ids: `user::rw-\nuser:alice:r--\ngroup::r-x\nmask::r-x\nother::---\n`;
 * - getfacl output fragments: `#` comments to end of line, including the tab-separated
 *   `#effective:r--` remarks (ignored: the mask is what the kernel applies);
 * - libarchive/bsdtar (and star): comma separated, any order, a named entry may carry the
 *   numeric id as a 4th field, `user:alice:rw-:1001`; that id wins over the name;
 * - setfacl short forms: `u::rw,g::r,o::-,m::rx`, `mask:rx` / `other:r` without the empty
 *   qualifier, perms as any of `rwx-` or one octal digit;
 * - whitespace around entries and fields; names escaped as `\ooo` octal (libacl).
 *
 * A numeric qualifier is taken as the id. A name without a numeric 4th field goes through
 * `resolve` (see native/ids.ts hostResolver); an unknown name, a `default:` prefix, or an
 * incomplete ACL throws ACL_INVALID naming the entry. Blank text gives `[]` (no ACL).
 */
export function aclFromText(text: string, resolve?: IdResolver): Acl {
  if (resolve !== undefined) return parseAclText(text, resolve);
  return remembered(parsedTexts, text, (t) => parseAclText(t, undefined)).map((e) => ({ ...e }));
}

/** aclToXattr(aclFromText(text)), for text with numeric ids only (as the store holds ACLs). */
export function aclXattrFromText(text: string): Buffer {
  return Buffer.from(remembered(xattrTexts, text, (t) => aclToXattr(parseAclText(t, undefined))));
}

/**
 * Without names to resolve, the same text always gives the same ACL, and a tree's entries
 * repeat a few texts (a licence group's ACL on every path): each is parsed once, and callers
 * get their own copy. A map is emptied when it holds this many texts.
 */
const REMEMBERED_TEXTS = 1024;
const parsedTexts = new Map<string, Acl>();
const xattrTexts = new Map<string, Buffer>();

function remembered<T>(memo: Map<string, T>, text: string, make: (text: string) => T): T {
  let v = memo.get(text);
  if (v === undefined) {
    v = make(text);
    if (memo.size >= REMEMBERED_TEXTS) memo.clear();
    memo.set(text, v);
  }
  return v;
}

function parseAclText(text: string, resolve: IdResolver | undefined): Acl {
  const acl: Acl = [];
  for (const rawLine of text.split('\n')) {
    const hash = rawLine.indexOf('#');
    const line = hash >= 0 ? rawLine.slice(0, hash) : rawLine;
    for (const piece of line.split(',')) {
      const entry = piece.trim();
      if (entry !== '') acl.push(parseEntry(entry, resolve));
    }
  }
  if (acl.length === 0) return [];
  return canonicalAcl(acl);
}

const TAG_WORDS: Record<string, 'user' | 'group' | 'mask' | 'other'> = {
  user: 'user',
  u: 'user',
  group: 'group',
  g: 'group',
  mask: 'mask',
  m: 'mask',
  other: 'other',
  o: 'other',
};

function parseEntry(entry: string, resolve: IdResolver | undefined): AclEntry {
  const fields = entry.split(':').map((f) => f.trim());
  const word = TAG_WORDS[fields[0]!];
  const bad = (why: string, hint?: string): StrataError => invalid(`invalid ACL entry "${entry}": ${why}`, hint);
  if (word === undefined) {
    if (fields[0] === 'default' || fields[0] === 'd') {
      throw bad('default: entries belong in the default ACL', 'pass the access and default ACLs separately');
    }
    throw bad('unknown tag', 'tags are user, group, mask and other (or u, g, m, o)');
  }
  if (word === 'mask' || word === 'other') {
    if (fields.length === 2) return { tag: word, perm: parsePerm(fields[1]!, bad) };
    if (fields.length === 3 && fields[1] === '') return { tag: word, perm: parsePerm(fields[2]!, bad) };
    throw bad(`${word} entries take no qualifier`);
  }
  if (fields.length !== 3 && fields.length !== 4) throw bad('expected tag:qualifier:perms');
  const perm = parsePerm(fields[2]!, bad);
  const qualifier = fields[1]!;
  if (qualifier === '') {
    if (fields.length === 4 && fields[3] !== '') throw bad('an owner entry takes no id');
    return { tag: word === 'user' ? 'user_obj' : 'group_obj', perm };
  }
  let id: number | undefined;
  if (fields.length === 4) {
    id = parseId(fields[3]!);
    if (id === undefined) throw bad(`invalid numeric id "${fields[3]}"`);
  } else if (/^[0-9]+$/.test(qualifier)) {
    id = parseId(qualifier);
    if (id === undefined) throw bad(`invalid numeric id "${qualifier}"`);
  } else {
    const name = unescapeName(qualifier);
    id = resolve === undefined ? undefined : word === 'user' ? resolve.user(name) : resolve.group(name);
    if (id === undefined || !Number.isInteger(id) || id < 0 || id > MAX_ID) {
      throw bad(
        `unknown ${word} "${name}"`,
        `create the ${word} on this host, or re-create the archive with bsdtar, which records numeric ids`,
      );
    }
  }
  return { tag: word, id, perm };
}

function parseId(s: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ID ? n : undefined;
}

function parsePerm(s: string, bad: (why: string, hint?: string) => StrataError): number {
  if (/^[0-7]$/.test(s)) return Number(s);
  if (s === '' || !/^[rwx-]+$/.test(s)) throw bad(`invalid permissions "${s}"`, 'use r, w, x and - (e.g. r-x) or one octal digit');
  let perm = 0;
  for (const c of s) {
    const bit = c === 'r' ? 4 : c === 'w' ? 2 : c === 'x' ? 1 : 0;
    if (perm & bit) throw bad(`invalid permissions "${s}"`, `"${c}" appears twice`);
    perm |= bit;
  }
  return perm;
}

/** libacl writes characters outside the portable set in names as a backslash and three octal digits. */
function unescapeName(s: string): string {
  if (!s.includes('\\')) return s;
  const bytes: number[] = [];
  const raw = Buffer.from(s, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && i + 3 < raw.length && /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString('latin1'))) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8) & 0xff);
      i += 3;
    } else if (raw[i] === 0x5c && raw[i + 1] === 0x5c) {
      bytes.push(0x5c);
      i += 1;
    } else {
      bytes.push(raw[i]!);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function permText(perm: number): string {
  return (perm & 4 ? 'r' : '-') + (perm & 2 ? 'w' : '-') + (perm & 1 ? 'x' : '-');
}

function entryText(e: AclEntry): string {
  return `${entryLabel(e)}:${permText(e.perm)}`;
}

/**
 * THE canonical text: numeric ids, canonical order, `rwx`/`-` perms, comma separated, no
 * spaces, e.g. `user::rw-,user:1001:r--,group::r-x,mask::r-x,other::---`. `[]` → ''.
 * Equal ACLs give equal strings, so sidecar manifests can be compared as text.
 */
export function aclToText(acl: Acl): string {
  return canonicalAcl(acl).map(entryText).join(',');
}

/**
 * GNU tar's SCHILY.acl.access/default form: one long-form entry per line, each line ended
 * by '\n' (as GNU tar 1.34 writes it), numeric ids. GNU tar hands it to acl_from_text on
 * extraction, which takes numeric qualifiers as ids. `[]` → ''.
 */
export function aclToGnuText(acl: Acl): string {
  return canonicalAcl(acl)
    .map((e) => `${entryText(e)}\n`)
    .join('');
}

/** True when the ACL says no more than the mode bits: exactly user::, group:: and other::. */
export function isMinimalAcl(acl: Acl): boolean {
  return acl.length === 3 && acl.every((e) => e.tag === 'user_obj' || e.tag === 'group_obj' || e.tag === 'other') &&
    new Set(acl.map((e) => e.tag)).size === 3;
}

function find(acl: Acl, tag: AclTag): AclEntry | undefined {
  return acl.find((e) => e.tag === tag);
}

function required(acl: Acl, tag: 'user_obj' | 'group_obj' | 'other'): number {
  const e = find(acl, tag);
  if (e === undefined) throw invalid(`ACL has no ${entryLabel({ tag, perm: 0 })}: entry`);
  return e.perm;
}

/**
 * What the owning group is really granted: group:: perm, limited by mask:: when there is
 * one. Where ACLs cannot be stored (SquashFS), the mode's group bits are set to this, so
 * dropping the ACL never widens access the way copying the mask would.
 */
export function groupClassGrant(acl: Acl): number {
  const group = required(acl, 'group_obj');
  const mask = find(acl, 'mask');
  return mask === undefined ? group : group & mask.perm;
}

/** What a node becomes where its access ACL cannot be kept: a mode, and maybe another owning group. */
export interface NarrowedNode {
  /** Permission bits (setuid, setgid and sticky included). */
  mode: number;
  /** The owning group the node must carry instead of its own; absent: keep it. */
  gid?: number;
}

/**
 * The mode (and owning group) that gives nobody more than `access` gave them, for a place
 * that cannot hold the ACL: a SquashFS image, a filesystem mounted without ACL support.
 *
 * POSIX ACL checks (acl(5)): the owner gets user::; a named user gets user:X: & mask, and
 * nothing else is consulted; a member of the owning group or a named group gets the union of
 * those entries & mask; everyone else other::. Without the ACL only three classes are left,
 * so each class gets the intersection of what every kind of user who falls into it had:
 *
 * - owner: user:: (unchanged).
 * - group class: when `prefer` (the gid of a module's licence group) is a named group of the
 *   ACL, or the ACL names exactly one group, that group becomes the owning group and gets its
 *   entry & mask; otherwise the owning group keeps group:: & mask. Named users may be members
 *   of that group, so it also gets no more than any named user's entry & mask.
 * - other: other:: & every named entry the node's "others" may hold (named users, named groups
 *   other than the chosen one, and group:: & mask when the owning group changed, since its
 *   members are others now), & mask where the mask applies.
 *
 * A group switch clears setgid: the node must not run with the licence group's privileges.
 * `switchGroup: false` says the node keeps the owning group it has (its ACL was refused after
 * the owner was set): no named group is chosen, as when the ACL names several.
 * `ownGroupKept: false` says the owning group cannot be set at all (a non-root build leaves the
 * builder's primary group): the group class then gets no more than other, and setgid goes (the
 * node must not run with the builder's group for everyone else).
 */
export function narrowedNode(
  mode: number,
  access: Acl | undefined,
  opts: { prefer?: number; switchGroup?: boolean; ownGroupKept?: boolean } = {},
): NarrowedNode {
  const special = mode & 0o7000;
  let user = (mode >> 6) & 7;
  let group = (mode >> 3) & 7;
  let other = mode & 7;
  let gid: number | undefined;
  if (access !== undefined) {
    const mask = find(access, 'mask')?.perm ?? 7;
    const groupObj = required(access, 'group_obj') & mask;
    const users = access.filter((e) => e.tag === 'user').map((e) => e.perm & mask);
    const groups = access.filter((e) => e.tag === 'group');
    const chosen =
      opts.switchGroup === false
        ? undefined
        : ((opts.prefer !== undefined ? groups.find((g) => g.id === opts.prefer) : undefined) ?? (groups.length === 1 ? groups[0] : undefined));
    const all = (perms: number[]) => perms.reduce((a, p) => a & p, 7);
    user = required(access, 'user_obj');
    if (chosen !== undefined && opts.ownGroupKept !== false) {
      gid = chosen.id;
      group = (chosen.perm & mask) & all(users);
      other = required(access, 'other') & groupObj & all(users) & all(groups.filter((g) => g !== chosen).map((g) => g.perm & mask));
    } else {
      group = groupObj & all(users);
      other = required(access, 'other') & all(users) & all(groups.map((g) => g.perm & mask));
    }
  }
  if (opts.ownGroupKept === false) group &= other;
  const sgid = gid !== undefined || opts.ownGroupKept === false ? 0o2000 : 0;
  return { mode: (special & ~sgid) | (user << 6) | (group << 3) | other, ...(gid !== undefined ? { gid } : {}) };
}

/**
 * The rwx triplets a file's mode carries while this access ACL is applied, as the kernel
 * keeps them in sync (posix_acl_equiv_mode / chmod): user = user::, group = mask:: when
 * present else group::, other = other::.
 */
export function aclModeBits(acl: Acl): { user: number; group: number; other: number } {
  const mask = find(acl, 'mask');
  return {
    user: required(acl, 'user_obj'),
    group: mask === undefined ? required(acl, 'group_obj') : mask.perm,
    other: required(acl, 'other'),
  };
}

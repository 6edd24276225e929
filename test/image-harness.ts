/**
 * Shared by the image end-to-end tests (test/image-*.test.ts), which run the strata CLI through
 * helpers/cli.ts: the four-layer stack imported into a store, and readers of what the
 * reference tools print (unsquashfs listings, getfacl text) that do not use strata's code.
 */
import { chownSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Stack, StackLayerName } from './fixtures/stack.js';
import type { TreeNode, TreeSnapshot } from './helpers/tree.js';
import { run } from './helpers/tmp.js';
import { strataOk, type Workspace } from './helpers/cli.js';
import { NOBODY } from './helpers/users.js';
import type { ImageResult } from '../compose/squash.js';

/** What `compose squash --json` prints. */
export type SquashJson = ImageResult;

/** Module names and import options of the stack layers; stack order is base, mid, app, lic. */
export const MODULES: Record<StackLayerName, { fullName: string; opts: string[] }> = {
  base: { fullName: 'base/1.0', opts: ['--description', 'base OS'] },
  mid: { fullName: 'mid/2.0', opts: ['--prepend', 'PATH=/bin'] },
  app: { fullName: 'app/3.1', opts: ['--prepend', 'PATH=/opt/app/bin', '--prepend', 'LD_LIBRARY_PATH=/opt/app/lib'] },
  lic: { fullName: 'lic/2024.1', opts: ['--setenv', 'LM_LICENSE_FILE=/opt/lic/LICENSE'] },
};
export const STACK_ORDER: StackLayerName[] = ['base', 'mid', 'app', 'lic'];

/**
 * Imports the stack's tars in `importOrder` into o.store, then adds the modules to the
 * stack in o.cwd in stack order (base, mid, app, lic), plus `extra` full names on top.
 */
export function importStack(o: Workspace, stack: Stack, importOrder: StackLayerName[] = STACK_ORDER, extra: string[] = []): void {
  for (const name of importOrder) {
    const layer = stack.layers.find((l) => l.name === name)!;
    strataOk(['-q', 'store', 'import', MODULES[name].fullName, layer.tar, ...MODULES[name].opts], o);
  }
  strataOk(['-q', 'compose', 'add', ...STACK_ORDER.map((n) => MODULES[n].fullName), ...extra], o);
}

/** Makes `dir` (and everything below) owned by nobody, and its ancestors traversable. */
export function giveToNobody(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const walk = (p: string) => {
    chownSync(p, NOBODY, NOBODY);
    if (statSync(p).isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
}

// ---------------------------------------------------------------------------------------
// ACLs as getfacl prints them (TreeNode.acl.access: "user::rwx,user:1001:r-x,group::r-x,…").

function perms(text: string): number {
  return (text[0] === 'r' ? 4 : 0) | (text[1] === 'w' ? 2 : 0) | (text[2] === 'x' ? 1 : 0);
}

/**
 * The mode and owning group an image gives a node with this access ACL (getfacl text, numeric
 * ids), written from the rule in spec/compose.md (not from strata's code): every class gets
 * the least any user falling into it had. When `prefer` is a named group, or the ACL names
 * exactly one group, that group owns the node and gets its entry & mask & every named user's
 * entry & mask; others get other:: & every other named entry & mask & group:: & mask. Else the
 * owning group keeps group:: & mask & named users', others other:: & every named entry & mask.
 * A switched group drops setgid.
 */
export function narrowedNode(mode: number, access: string, prefer?: number): { mode: number; gid?: number } {
  const entries = access.split(',').map((e) => {
    const [tag, id, p] = e.split(':');
    return { tag: tag!, id: id === '' ? undefined : Number(id), perm: perms(p!) };
  });
  const one = (tag: string) => entries.find((e) => e.tag === tag && e.id === undefined)!.perm;
  const mask = entries.find((e) => e.tag === 'mask')?.perm ?? 7;
  const users = entries.filter((e) => e.tag === 'user' && e.id !== undefined).map((e) => e.perm & mask);
  const groups = entries.filter((e) => e.tag === 'group' && e.id !== undefined);
  const and = (xs: number[]) => xs.reduce((a, b) => a & b, 7);
  const chosen = groups.find((g) => g.id === prefer) ?? (groups.length === 1 ? groups[0] : undefined);
  const user = one('user');
  let group: number;
  let other: number;
  if (chosen) {
    group = chosen.perm & mask & and(users);
    other = one('other') & one('group') & mask & and(users) & and(groups.filter((g) => g !== chosen).map((g) => g.perm & mask));
  } else {
    group = one('group') & mask & and(users);
    other = one('other') & and(users) & and(groups.map((g) => g.perm & mask));
  }
  const special = mode & 0o7000 & (chosen ? ~0o2000 : 0o7777);
  return { mode: special | (user << 6) | (group << 3) | other, ...(chosen ? { gid: chosen.id! } : {}) };
}

/**
 * The tree an image must hold, given the sandbox: every path with an access ACL gets the
 * narrowed mode and owning group (narrowedNode above), and no path keeps an ACL.
 * `aclPaths` lists every name with an ACL, `aclInodes` one name per inode (hard links share
 * their ACL; /.strata/acl.json names the first of the group); `changed` the paths whose mode
 * or group the image changes.
 */
export function narrowedForImage(sandbox: TreeSnapshot, prefer?: number): { snap: TreeSnapshot; aclPaths: string[]; aclInodes: string[]; changed: string[] } {
  const snap: TreeSnapshot = new Map();
  const aclPaths: string[] = [];
  const changed: string[] = [];
  for (const [p, n] of sandbox) {
    const copy: TreeNode = { ...n, xattrs: { ...n.xattrs }, acl: {} };
    if (n.acl.access) {
      aclPaths.push(p);
      const r = narrowedNode(n.mode, n.acl.access, prefer);
      copy.mode = r.mode;
      if (r.gid !== undefined) copy.gid = r.gid;
      if (copy.mode !== n.mode || copy.gid !== n.gid) changed.push(p);
    } else if (n.acl.default) {
      aclPaths.push(p);
    }
    snap.set(p, copy);
  }
  const aclInodes = aclPaths.filter((p) => (sandbox.get(p)!.links?.[0] ?? p) === p);
  return { snap, aclPaths, aclInodes, changed };
}

// ---------------------------------------------------------------------------------------
// unsquashfs -lls / -lln listings.

export interface ListedEntry {
  path: string;
  /** ls-style type + permission string, e.g. "drwxr-x---". */
  modeString: string;
  owner: string;
  group: string;
  /** File size, or "major,minor" for devices, or symlink target length (as unsquashfs prints it). */
  size: string;
  /** "YYYY-MM-DD HH:MM" in UTC (run unsquashfs with TZ=UTC). */
  time: string;
  target?: string;
}

/** Parses `unsquashfs -lls|-lln -d R IMAGE` output (paths without spaces or ' -> '). */
export function parseListing(text: string): ListedEntry[] {
  const out: ListedEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^([-dlcbps][-rwxsStT]{9}) ([^/\s]+)\/(\S+)\s+(\d+|\d+,\s*\d+) (\d{4}-\d\d-\d\d \d\d:\d\d) R(\/.*)?$/.exec(line);
    if (!m) continue;
    let rest = m[6] ?? '';
    let target: string | undefined;
    if (m[1]![0] === 'l') {
      const i = rest.indexOf(' -> ');
      target = rest.slice(i + 4);
      rest = rest.slice(0, i);
    }
    out.push({
      path: rest === '' ? '.' : rest.slice(1),
      modeString: m[1]!,
      owner: m[2]!,
      group: m[3]!,
      size: m[4]!.replace(/\s+/g, ''),
      time: m[5]!,
      target,
    });
  }
  return out;
}

/** `ls -l`-style mode string of a snapshot node. */
export function modeString(n: TreeNode): string {
  const t = { file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' }[n.type];
  const m = n.type === 'symlink' ? 0o777 : n.mode;
  const tri = (bits: number, special: boolean, s: string) =>
    `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? s : s.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return t + tri(m >> 6, Boolean(m & 0o4000), 's') + tri(m >> 3, Boolean(m & 0o2000), 's') + tri(m, Boolean(m & 0o1000), 't');
}

/** Name of a uid/gid as this host resolves it (getent), else the number — as unsquashfs -lls prints it. */
export function idName(db: 'passwd' | 'group', id: number): string {
  const r = run('getent', [db, String(id)]);
  return r.code === 0 ? r.stdout.toString('utf8').split(':')[0]! : String(id);
}

/** The listing unsquashfs must print for `snap`, directory sizes excepted (entries with size ''). */
export function expectedListing(snap: TreeSnapshot, numeric: boolean): ListedEntry[] {
  const names = new Map<string, string>();
  const name = (db: 'passwd' | 'group', id: number) => {
    if (numeric) return String(id);
    const k = `${db}:${id}`;
    if (!names.has(k)) names.set(k, idName(db, id));
    return names.get(k)!;
  };
  const out: ListedEntry[] = [];
  for (const n of snap.values()) {
    const size =
      n.type === 'dir' ? ''
      : n.type === 'char' || n.type === 'block' ? `${n.rdev!.major},${n.rdev!.minor}`
      : n.type === 'symlink' ? String(Buffer.byteLength(n.target!))
      : String(n.size);
    const time = new Date(n.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
    out.push({ path: n.path, modeString: modeString(n), owner: name('passwd', n.uid), group: name('group', n.gid), size, time, target: n.target });
  }
  return out;
}

/**
 * Real users and groups for access tests, and commands run as them, the way the kernel sees
 * them (setpriv with the user's uid, gid and supplementary groups; no sudo, no mocks).
 *
 * Users and groups are created once per machine with useradd/groupadd (root only) and kept:
 * suites running at the same time share them, so creation is serialized with flock and is
 * idempotent. Names start with `st-` so they are easy to find and remove by hand.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, run, type RunOptions, type RunResult } from './tmp.js';

const LOCK = '/run/lock/strata-test-users.lock';
/**
 * Test users and groups take ids from 61000..61999, clear of the ids the fixtures use as
 * nameless (1001, 2001, …: tar and getfacl print names for ids that have one).
 */
const RANGE_GROUP = '-K GID_MIN=61000 -K GID_MAX=61999';
const RANGE_USER = '-K UID_MIN=61000 -K UID_MAX=61999 -K GID_MIN=61000 -K GID_MAX=61999';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  /** Supplementary group ids (ensureUser puts the primary gid first); empty: none at all. */
  groups: number[];
  home: string;
}

function getent(db: 'passwd' | 'group', name: string): string[] | undefined {
  const r = spawnSync('getent', [db, name], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split(':') : undefined;
}

function locked(args: string[]): void {
  mustRun('flock', [LOCK, ...args]);
}

/** gid of group `name`, created if missing (root only). */
export function ensureGroup(name: string): number {
  let g = getent('group', name);
  if (!g) {
    locked(['sh', '-c', `getent group "$1" >/dev/null || groupadd ${RANGE_GROUP} "$1"`, 'sh', name]);
    g = getent('group', name);
  }
  if (!g) throw new Error(`cannot create group ${name}`);
  return Number(g[2]);
}

/**
 * User `name` with its own primary group and membership of `groups` (created as needed), a
 * home under /tmp. Membership is made to match `groups` exactly (so a suite can rely on who is
 * outside a group).
 */
export function ensureUser(name: string, groups: string[] = []): TestUser {
  const gids = groups.map(ensureGroup);
  if (!getent('passwd', name)) {
    locked(['sh', '-c', `getent passwd "$1" >/dev/null || useradd ${RANGE_USER} --user-group --no-create-home --home-dir "/tmp/$1" --shell /bin/sh "$1"`, 'sh', name]);
  }
  locked(['usermod', '--groups', groups.join(','), name]);
  const p = getent('passwd', name);
  if (!p) throw new Error(`cannot create user ${name}`);
  const home = join('/tmp', name);
  mkdirSync(home, { recursive: true });
  mustRun('chown', [`${p[2]}:${p[3]}`, home]);
  return { name, uid: Number(p[2]), gid: Number(p[3]), groups: [Number(p[3]), ...gids], home };
}

/** uid and gid of "nobody", the unprivileged user of the base system. */
export const NOBODY = 65534;

/**
 * An unprivileged identity that needs no passwd entry: uid and gid `uid` (65534, nobody, by
 * default), supplementary groups exactly `groups` (none by default), HOME `home` (give one: a
 * run as nobody must not fall back to root's).
 */
export function nobody(home: string, opts: { uid?: number; groups?: number[] } = {}): TestUser {
  const uid = opts.uid ?? NOBODY;
  return { name: 'nobody', uid, gid: uid, groups: opts.groups ?? [], home };
}

/**
 * The argv prefix that runs a command as `u`, with exactly the kernel credentials a login would
 * give (no groups at all when `u.groups` is empty). The one place a test switches users: runAs
 * and the CLI runner (helpers/cli.ts) both go through it.
 */
export function asUser(u: TestUser): string[] {
  const groups = u.groups.length > 0 ? `--groups=${u.groups.join(',')}` : '--clear-groups';
  return ['setpriv', `--reuid=${u.uid}`, `--regid=${u.gid}`, groups, '--'];
}

/** The environment a run as `u` starts from: u's HOME, USER and LOGNAME; no XDG directories of the caller's. */
export function userEnv(u: TestUser): Record<string, string> {
  return { HOME: u.home, USER: u.name, LOGNAME: u.name, XDG_DATA_HOME: '', XDG_CACHE_HOME: '' };
}

/** Runs `cmd args…` as `u` (userEnv, then opts.env over it), never throwing. */
export function runAs(u: TestUser, cmd: string, args: readonly string[], opts: RunOptions = {}): RunResult {
  const [c, ...rest] = [...asUser(u), cmd, ...args];
  return run(c!, rest, { ...opts, env: { ...userEnv(u), ...opts.env } });
}

/** True when this process may create users and switch to them (root). */
export function canSwitchUsers(): boolean {
  return process.getuid?.() === 0 && run('setpriv', ['--version']).code === 0;
}
